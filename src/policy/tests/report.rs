//! Report mode: a policy with `mode = "report"` relaxes its own rules for its orgs; deny
//! rules, other orgs and enforce policies' own refusals are untouched.

use super::*;

/// rollout (report, acme) allows GET on api.example (rule line 7); enforced (every org)
/// allows GET on strict.example (rule line 14); strict.example/admin is denied (line 19).
const REPORT: &str = r#"[[policy]]
name = "rollout"
route = "agent:edge-1"
orgs = ["acme"]
mode = "report"

  [[policy.allow]]
  hosts = ["api.example"]
  methods = ["GET"]

[[policy]]
name = "enforced"
route = "direct"

  [[policy.allow]]
  hosts = ["strict.example"]
  methods = ["GET"]

[[deny]]
hosts = ["blocked.example"]
"#;

fn req<'a>(method: &'a str) -> RequestInfo<'a> {
    RequestInfo {
        method,
        path: Ok("/"),
    }
}

#[test]
fn report_mode_allows_what_its_rules_would_deny_for_its_orgs() {
    let s = set(&[("10-r.toml", REPORT)]);
    // Its own rule refuses the method: allowed by that rule, flagged.
    let d = s.decide_request("acme", &host("api.example"), 443, &req("DELETE"));
    assert!(d.is_allowed(), "{d:?}");
    assert_eq!(d.would_deny(), Some(DenyReason::MethodNotAllowed));
    assert_eq!(d.reason(), "method_not_allowed");
    assert_eq!(d.rule().unwrap().line, 7);
    assert_eq!(d.route().unwrap().to_string(), "agent:edge-1");
    // What it allows is plainly allowed.
    let d = s.decide_request("acme", &host("api.example"), 443, &req("GET"));
    assert!(d.is_allowed() && d.would_deny().is_none(), "{d:?}");
    // A host no rule allows: allowed on the policy's route, without private addresses.
    let d = s.decide_request("acme", &host("elsewhere.example"), 443, &req("GET"));
    assert_eq!(d.would_deny(), Some(DenyReason::NoMatchingRule), "{d:?}");
    assert_eq!(d.policy().map(|p| &**p), Some("rollout"));
    assert_eq!(d.rule().unwrap().line, 1, "the policy's header");
    assert!(!d.allow_private());
    let d = s.decide("acme", &host("elsewhere.example"), 443);
    assert_eq!(d.would_deny(), Some(DenyReason::NoMatchingRule), "{d:?}");
    let d = s.decide("acme", &host("api.example"), 9999);
    assert_eq!(d.would_deny(), Some(DenyReason::PortNotAllowed), "{d:?}");
}

#[test]
fn deny_rules_other_orgs_and_enforced_rules_still_deny() {
    let s = set(&[("10-r.toml", REPORT)]);
    let d = s.decide_request("acme", &host("blocked.example"), 443, &req("GET"));
    assert_eq!(d.reason(), "deny_rule");
    let d = s.decide_request("beta", &host("api.example"), 443, &req("DELETE"));
    assert!(!d.is_allowed(), "{d:?}");
    let d = s.decide_request("beta", &host("elsewhere.example"), 443, &req("GET"));
    assert!(!d.is_allowed(), "{d:?}");
    // An enforce policy's own rule refuses: report mode does not relax other policies.
    let d = s.decide_request("acme", &host("strict.example"), 443, &req("POST"));
    assert_eq!(d.reason(), "method_not_allowed", "{d:?}");
    assert!(!d.is_allowed());
    // Nor an app's egress policy decision.
    let d = s.decide_in_policy("rollout", "acme", &host("elsewhere.example"), 443);
    assert!(!d.is_allowed(), "{d:?}");
    // An undecidable path stays refused.
    let bad = RequestInfo {
        method: "GET",
        path: Err(PathError::EncodedSeparator),
    };
    let s2 = set(&[(
        "a.toml",
        "[[policy]]\nname = \"r\"\nroute = \"direct\"\norgs = [\"acme\"]\nmode = \"report\"\n  [[policy.allow]]\n  hosts = [\"x.example\"]\n  paths = [\"/a\"]\n",
    )]);
    let d = s2.decide_request("acme", &host("x.example"), 443, &bad);
    assert_eq!(d.reason(), "undecidable_path", "{d:?}");
}

#[test]
fn enforce_is_the_default_and_may_be_written() {
    let src = "[[policy]]\nname = \"p\"\nroute = \"direct\"\norgs = [\"acme\"]\nmode = \"enforce\"\n  [[policy.allow]]\n  hosts = [\"x.example\"]\n";
    let s = set(&[("a.toml", src)]);
    assert!(!s.policies()[0].report);
    assert!(!s.decide("acme", &host("y.example"), 443).is_allowed());
}
