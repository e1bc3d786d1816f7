//! The set's accessors and `denied_by`.

use super::matching::{matching_set, rule, saas};
use super::*;

#[test]
fn set_accessors() {
    let s = matching_set();
    assert_eq!(s.file_count(), 3);
    assert_eq!(s.policy_count(), 3);
    assert_eq!(s.deny_rule_count(), 2);
    assert_eq!(s.policy_route("saas"), Some(Route::Direct));
    assert_eq!(
        s.policy_route("onprem"),
        Some(Route::Agent("onprem-1".into()))
    );
    assert_eq!(s.policy_route("nope"), None);
    assert_eq!(
        s.policy("saas").unwrap().description.as_deref(),
        Some("SaaS APIs")
    );
    assert_eq!(s.policy("later").unwrap().description, None);
    let names: Vec<&str> = s.policies().iter().map(|p| &*p.name).collect();
    assert_eq!(names, ["saas", "onprem", "later"]);
    let onprem_header = saas()
        .lines()
        .position(|l| l == "name = \"onprem\"")
        .unwrap();
    assert_eq!(
        s.policy("onprem").unwrap().defined_at.to_string(),
        format!("10-saas.toml:{onprem_header}")
    );

    // A dialer checks resolved addresses against deny CIDRs.
    let ip = |s: &str| Host::Ip(s.parse().unwrap());
    assert_eq!(
        s.denied_by(&ip("127.0.0.53"), 53).map(ToString::to_string),
        Some(rule("deny-main"))
    );
    assert_eq!(
        s.denied_by(&ip("::ffff:169.254.169.254"), 80)
            .map(ToString::to_string),
        Some(rule("deny-main"))
    );
    assert_eq!(s.denied_by(&ip("140.82.112.3"), 443), None);
    assert_eq!(
        s.denied_by(&host("smtp.example"), 25)
            .map(ToString::to_string),
        Some(rule("deny-smtp"))
    );
    assert_eq!(s.denied_by(&host("smtp.example"), 587), None);

    let empty = PolicySet::empty();
    assert_eq!((empty.file_count(), empty.policy_count()), (0, 0));
    assert_eq!(
        empty.decide("acme", &host("127.0.0.1"), 80),
        Decision::denied(DenyReason::NoMatchingRule)
    );
}
