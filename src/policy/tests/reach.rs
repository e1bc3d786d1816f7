//! What a decision says about reaching the destination: `upstream_proxy = false` per policy,
//! and names allowed through `cidrs` rules on the condition of their resolved addresses.

use std::net::IpAddr;

use super::*;

/// internal (acme, direct, no parent): 127.0.0.1/32 and 10.0.0.0/8 on 443 and 8000-8100,
/// GET only on 10.9.0.0/16 port 9090; edge (acme, agent): 192.168.0.0/16; other (globex): 172.16.0.0/12;
/// hosts (acme, direct): api.example.
const POLICIES: &str = r#"[[policy]]
name = "internal"
route = "direct"
orgs = ["acme"]
upstream_proxy = false

  [[policy.allow]]
  cidrs = ["127.0.0.1/32"]
  ports = [443, "8000-8100"]

  [[policy.allow]]
  cidrs = ["10.0.0.0/8"]
  ports = [443]

  [[policy.allow]]
  cidrs = ["10.9.0.0/16"]
  ports = [9090]
  methods = ["GET"]

[[policy]]
name = "edge"
route = "agent:edge-1"
orgs = ["acme"]

  [[policy.allow]]
  cidrs = ["192.168.0.0/16"]
  ports = [22]

[[policy]]
name = "other"
route = "direct"
orgs = ["globex"]

  [[policy.allow]]
  cidrs = ["172.16.0.0/12"]
  ports = [5432]

[[policy]]
name = "hosts"
route = "direct"
orgs = ["acme"]

  [[policy.allow]]
  hosts = ["api.example"]
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn at(line: usize) -> RuleRef {
    RuleRef {
        file: "10-p.toml".into(),
        line,
    }
}

#[test]
fn upstream_proxy_false_bypasses_the_parent_for_its_policy_only() {
    let s = set(&[("10-p.toml", POLICIES)]);
    let d = s.decide("acme", &host("127.0.0.1"), 443);
    assert_eq!(d.policy().map(|p| &**p), Some("internal"));
    assert!(d.reach().bypass_parent && d.reach().private, "{d:?}");
    assert!(!s.policy("internal").unwrap().upstream_proxy);
    let d = s.decide("acme", &host("api.example"), 443);
    assert_eq!(d.policy().map(|p| &**p), Some("hosts"));
    assert_eq!(d.reach(), Reach::default(), "{d:?}");
    assert!(s.policy("hosts").unwrap().upstream_proxy);
    // A denial reaches nothing, the strictest way.
    assert_eq!(
        s.decide("acme", &host("nowhere.example"), 25).reach(),
        Reach::default()
    );
}

#[test]
fn upstream_proxy_is_a_boolean_of_direct_policies() {
    let errors = |src: &str| {
        PolicySet::from_sources(&sources(&[("p.toml", src)]))
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    let agent = "[[policy]]\nname = \"a\"\nroute = \"agent:x\"\nupstream_proxy = false\n";
    assert_eq!(
        errors(agent),
        ["p.toml:4: `upstream_proxy` applies to direct routes only: an agent route never uses the parent proxy"]
    );
    let text = "[[policy]]\nname = \"a\"\nroute = \"direct\"\nupstream_proxy = \"no\"\n";
    let e = errors(text);
    assert!(e.len() == 1 && e[0].starts_with("p.toml:4:"), "{e:?}");
    // `true` is the default, written or not.
    let s = set(&[(
        "p.toml",
        "[[policy]]\nname = \"a\"\nroute = \"direct\"\nupstream_proxy = true\n",
    )]);
    assert!(s.policy("a").unwrap().upstream_proxy);
}

#[test]
fn a_name_is_allowed_through_cidrs_on_the_condition_of_its_addresses() {
    let s = set(&[("10-p.toml", POLICIES)]);
    let d = s.decide("acme", &host("localhost"), 443);
    let Decision::Allow {
        kind: RuleKind::ResolvedCidr,
        within: Some(within),
        route: Route::Direct,
        allow_private: true,
        ..
    } = &d
    else {
        panic!("{d:?}");
    };
    assert_eq!(
        (d.policy().map(|p| &**p), d.rule()),
        (Some("internal"), Some(&at(7)))
    );
    assert_eq!(within.rule, at(7));
    // Both rules for 443, in precedence order; no other org's, no agent route's.
    let nets: Vec<String> = within.nets.iter().map(ToString::to_string).collect();
    assert_eq!(nets, ["127.0.0.1/32", "10.0.0.0/8"]);
    assert!(within.contains(ip("127.0.0.1")) && within.contains(ip("::ffff:10.1.2.3")));
    assert!(!within.contains(ip("127.0.0.2")) && !within.contains(ip("::1")));
    assert_eq!(d.reach().within.as_ref(), Some(within));
    assert!(d.reach().bypass_parent, "the policy's route settings apply");

    // Only a rule for the port: 8001 has one network.
    let d = s.decide("acme", &host("localhost"), 8001);
    let nets: Vec<String> = d
        .reach()
        .within
        .unwrap()
        .nets
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(nets, ["127.0.0.1/32"]);
    // No visible direct policy has a cidrs rule for the port: denied, never resolved.
    for (org, port) in [
        ("acme", 80),
        ("acme", 22),
        ("globex", 443),
        ("initech", 443),
    ] {
        let d = s.decide(org, &host("localhost"), port);
        assert!(!d.is_allowed(), "{org} {port}: {d:?}");
    }
    assert!(s
        .decide("globex", &host("db.internal"), 5432)
        .reach()
        .within
        .is_some());
    // A host rule wins outright: no condition.
    let d = s.decide("acme", &host("api.example"), 443);
    assert_eq!(d.reach().within, None);
    // IP literals are matched against CIDRs as before.
    let d = s.decide("acme", &host("10.1.2.3"), 443);
    assert!(
        matches!(
            d,
            Decision::Allow {
                kind: RuleKind::Cidr,
                within: None,
                ..
            }
        ),
        "{d:?}"
    );
}

#[test]
fn a_cidrs_condition_respects_method_limits_and_the_egress_policy() {
    let s = set(&[("10-p.toml", POLICIES)]);
    let get = RequestInfo {
        method: "GET",
        path: Ok("/"),
    };
    let post = RequestInfo {
        method: "POST",
        ..get
    };
    let d = s.decide_request("acme", &host("svc.internal"), 9090, &get);
    assert_eq!(d.rule(), Some(&at(15)), "{d:?}");
    assert!(d.inspect(), "a limited rule intercepts");
    let d = s.decide_request("acme", &host("svc.internal"), 9090, &post);
    assert!(!d.is_allowed(), "{d:?}");
    // An app's egress policy: only that policy's rules.
    let d = s.decide_in_policy("internal", "acme", &host("idp.internal"), 443);
    assert_eq!(d.rule(), Some(&at(7)));
    let d = s.decide_in_policy("hosts", "acme", &host("idp.internal"), 443);
    assert!(!d.is_allowed(), "{d:?}");
}

#[test]
fn a_host_rule_that_refuses_the_request_is_not_widened_by_cidrs() {
    let s = set(&[(
        "10-p.toml",
        "[[policy]]\nname = \"p\"\nroute = \"direct\"\n  [[policy.allow]]\n  hosts = [\"api.example\"]\n  methods = [\"GET\"]\n  [[policy.allow]]\n  cidrs = [\"10.0.0.0/8\"]\n  ports = [443]\n",
    )]);
    let post = RequestInfo {
        method: "POST",
        path: Ok("/"),
    };
    let d = s.decide_request("acme", &host("api.example"), 443, &post);
    assert_eq!(d.reason(), "method_not_allowed", "{d:?}");
    let d = s.decide_request("acme", &host("other.example"), 443, &post);
    assert!(d.reach().within.is_some(), "{d:?}");
}
