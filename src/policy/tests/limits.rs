//! Method and path limits in decisions: which rule wins, which one a denial names, and what a
//! `CONNECT` decision says about inspecting the tunnel.

use super::*;

/// Line numbers are part of the expectations: rule headers are on lines 5, 10, 14 and 18.
const LIMITED: &str = r#"[[policy]]
name = "github-ro"
route = "direct"

  [[policy.allow]]
  hosts = ["api.github.com"]
  read_only = true
  paths = ["/repos/*/*", "/user"]

  [[policy.allow]]
  hosts = ["api.github.com"]
  methods = ["POST"]
  paths = ["/repos/*/*/issues"]
  [[policy.allow]]
  hosts = ["*.github.com"]
  ports = [8443]

  [[policy.allow]]
  hosts = ["uploads.github.com"]
  methods = ["PUT"]
"#;

fn req<'a>(method: &'a str, path: &'a str) -> RequestInfo<'a> {
    RequestInfo {
        method,
        path: Ok(path),
    }
}

#[test]
fn any_matching_rule_may_allow_the_method_and_path() {
    let s = set(&[("10-gh.toml", LIMITED)]);
    let gh = host("api.github.com");
    /// (name, method, path, allowed by rule line or denied with reason and rule line)
    type Case<'a> = (&'a str, &'a str, &'a str, Result<usize, (&'a str, usize)>);
    let cases: &[Case] = &[
        ("read", "GET", "/repos/a/b", Ok(5)),
        ("head", "HEAD", "/user", Ok(5)),
        ("options", "OPTIONS", "/user", Ok(5)),
        ("issue by second rule", "POST", "/repos/a/b/issues", Ok(10)),
        (
            "post elsewhere",
            "POST",
            "/repos/a/b",
            Err(("path_not_allowed", 10)),
        ),
        (
            "delete",
            "DELETE",
            "/repos/a/b",
            Err(("method_not_allowed", 5)),
        ),
        (
            "get deeper",
            "GET",
            "/repos/a/b/c",
            Err(("path_not_allowed", 5)),
        ),
        ("get other", "GET", "/orgs/x", Err(("path_not_allowed", 5))),
        (
            "lower-case method",
            "get",
            "/user",
            Err(("method_not_allowed", 5)),
        ),
    ];
    for (name, method, path, want) in cases {
        let d = s.decide_request("acme", &gh, 443, &req(method, path));
        match want {
            Ok(line) => {
                assert!(d.is_allowed(), "{name}: {d:?}");
                assert_eq!(d.rule().unwrap().line, *line, "{name}");
                assert!(d.inspect(), "{name}");
            }
            Err((reason, line)) => {
                assert_eq!(d.reason(), *reason, "{name}: {d:?}");
                assert_eq!(d.rule().map(|r| r.line), Some(*line), "{name}");
                assert_eq!(d.policy().map(|p| &**p), Some("github-ro"), "{name}");
            }
        }
    }
    // A rule without limits allows every request on its port, and needs no inspection.
    let d = s.decide_request("acme", &gh, 8443, &req("DELETE", "/anything"));
    assert!(d.is_allowed() && !d.inspect(), "{d:?}");
    // Port checks come first: no rule for the port is still `port_not_allowed`.
    let d = s.decide_request("acme", &gh, 9000, &req("GET", "/user"));
    assert_eq!(d.reason(), "port_not_allowed");
}

#[test]
fn connect_decisions_say_whether_to_inspect() {
    let s = set(&[("10-gh.toml", LIMITED)]);
    let d = s.decide("acme", &host("api.github.com"), 443);
    assert!(d.is_allowed() && d.inspect(), "{d:?}");
    assert_eq!(d.rule().unwrap().line, 5);
    let d = s.decide("acme", &host("api.github.com"), 8443);
    assert!(d.is_allowed() && !d.inspect(), "{d:?}");
    let d = s.decide("acme", &host("uploads.github.com"), 443);
    assert!(d.is_allowed() && d.inspect(), "{d:?}");
    let plain = set(&[("a.toml", &allow_policy("p", "direct", &["x.example"]))]);
    assert!(!plain.decide("acme", &host("x.example"), 443).inspect());
}

#[test]
fn an_undecidable_path_is_refused_only_where_a_path_rule_decides() {
    let s = set(&[("10-gh.toml", LIMITED)]);
    let bad = RequestInfo {
        method: "GET",
        path: Err(PathError::EncodedSeparator),
    };
    let d = s.decide_request("acme", &host("api.github.com"), 443, &bad);
    assert_eq!(d.reason(), "undecidable_path", "{d:?}");
    // No path rule for uploads: its PUT rule allows any path, even one it cannot read.
    let put = RequestInfo {
        method: "PUT",
        ..bad
    };
    let d = s.decide_request("acme", &host("uploads.github.com"), 443, &put);
    assert!(d.is_allowed(), "{d:?}");
    // Nor on a port whose rule has no paths.
    let d = s.decide_request("acme", &host("api.github.com"), 8443, &bad);
    assert!(d.is_allowed(), "{d:?}");
}

#[test]
fn deny_rules_and_org_scoping_apply_before_limits() {
    let src = format!(
        "{LIMITED}\n[[policy]]\nname = \"beta\"\nroute = \"direct\"\norgs = [\"beta\"]\n  [[policy.allow]]\n  hosts = [\"api.github.com\"]\n  methods = [\"DELETE\"]\n\n[[deny]]\nhosts = [\"uploads.github.com\"]\n"
    );
    let s = set(&[("10-gh.toml", &src)]);
    let d = s.decide_request("acme", &host("api.github.com"), 443, &req("DELETE", "/x"));
    assert_eq!(d.reason(), "method_not_allowed");
    let d = s.decide_request("beta", &host("api.github.com"), 443, &req("DELETE", "/x"));
    assert!(d.is_allowed(), "{d:?}");
    let d = s.decide_request("acme", &host("uploads.github.com"), 443, &req("PUT", "/x"));
    assert_eq!(d.reason(), "deny_rule");
}

#[test]
fn limits_parse_into_rules() {
    let s = set(&[("10-gh.toml", LIMITED)]);
    let rule = &s.allow_rules[0];
    let limits = rule.limits.as_ref().unwrap();
    let methods: Vec<&str> = limits
        .methods
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| &**m)
        .collect();
    assert_eq!(methods, READ_ONLY_METHODS);
    assert_eq!(limits.paths.as_ref().unwrap().patterns.len(), 2);
    assert!(s.allow_rules[2].limits.is_none());
    // `read_only = false` is no limit at all.
    let src = "[[policy]]\nname = \"p\"\nroute = \"direct\"\n  [[policy.allow]]\n  hosts = [\"x.example\"]\n  read_only = false\n";
    let s = set(&[("a.toml", src)]);
    assert!(s.allow_rules[0].limits.is_none());
}
