//! Decision tables: precedence, org scoping, ports, deny rules, `decide_in_policy`.

use super::matching::{allow, check, matching_set, resolved, Want};
use super::*;

#[test]
fn decide_table() {
    use RuleKind::*;
    let s = matching_set();
    let cases: Vec<(&str, &str, &str, u16, Want)> = vec![
        // Exact names.
        (
            "exact hit",
            "globex",
            "api.github.com",
            443,
            allow("saas", "github-exact", ExactHost),
        ),
        (
            "exact, any case and trailing dot",
            "globex",
            "API.GitHub.com.",
            443,
            allow("saas", "github-exact", ExactHost),
        ),
        (
            "exact beats suffix",
            "globex",
            "api.github.com",
            443,
            allow("saas", "github-exact", ExactHost),
        ),
        (
            "exact tie: earlier rule in the earlier file",
            "acme",
            "api.github.com",
            443,
            allow("saas", "github-exact", ExactHost),
        ),
        (
            "exact port refused, suffix fallback",
            "globex",
            "api.github.com",
            80,
            allow("saas", "github-suffix", SuffixHost),
        ),
        (
            "exact, port only in a later file",
            "globex",
            "api.github.com",
            8443,
            allow("later", "later-salesforce", ExactHost),
        ),
        // Suffixes.
        (
            "suffix one level",
            "globex",
            "uploads.github.com",
            443,
            allow("saas", "github-suffix", SuffixHost),
        ),
        (
            "suffix any depth",
            "globex",
            "a.b.c.github.com",
            80,
            allow("saas", "github-suffix", SuffixHost),
        ),
        (
            "suffix does not match itself",
            "globex",
            "github.com",
            443,
            resolved("saas", "test-nets"),
        ),
        (
            "suffix needs a label boundary",
            "globex",
            "evilgithub.com",
            443,
            resolved("saas", "test-nets"),
        ),
        (
            "longer suffix wins",
            "globex",
            "x.eu.salesforce.com",
            443,
            allow("saas", "eu-salesforce", SuffixHost),
        ),
        (
            "longer suffix, port range",
            "globex",
            "x.eu.salesforce.com",
            8050,
            allow("saas", "eu-salesforce", SuffixHost),
        ),
        (
            "range bounds inclusive",
            "globex",
            "x.eu.salesforce.com",
            8100,
            allow("saas", "eu-salesforce", SuffixHost),
        ),
        (
            "shorter suffix when the longer refuses the port",
            "globex",
            "x.eu.salesforce.com",
            8443,
            allow("later", "later-salesforce", SuffixHost),
        ),
        (
            "suffix tie: earlier file",
            "globex",
            "acme.my.salesforce.com",
            443,
            allow("saas", "github-exact", SuffixHost),
        ),
        (
            "short suffix in a later file",
            "globex",
            "www.example.net",
            8443,
            allow("later", "later-all-names", SuffixHost),
        ),
        (
            "idn pattern and host",
            "globex",
            "BÜCHER.example",
            443,
            allow("later", "later-idn", ExactHost),
        ),
        (
            "punycode host",
            "globex",
            "xn--bcher-kva.example",
            80,
            allow("later", "later-idn", ExactHost),
        ),
        // Ports.
        (
            "default ports: 80",
            "globex",
            "uploads.github.com",
            80,
            allow("saas", "github-suffix", SuffixHost),
        ),
        (
            "default ports: not 8080",
            "globex",
            "uploads.github.com",
            8080,
            resolved("saas", "test-net-upper"),
        ),
        (
            "port_not_allowed",
            "globex",
            "api.github.com",
            22,
            resolved("saas", "test-net-upper"),
        ),
        // Organizations.
        (
            "org-scoped policy, member",
            "acme",
            "git.corp.example",
            443,
            Want::Allow {
                policy: "onprem",
                rule: "corp-git",
                kind: ExactHost,
                route: "agent:onprem-1",
                private: true,
            },
        ),
        (
            "org-scoped policy, outsider",
            "globex",
            "git.corp.example",
            443,
            resolved("saas", "test-nets"),
        ),
        (
            "org-scoped port refusal is not leaked",
            "globex",
            "git.corp.example",
            22,
            resolved("saas", "test-net-upper"),
        ),
        (
            "org-scoped cidr",
            "acme",
            "10.20.3.4",
            22,
            Want::Allow {
                policy: "onprem",
                rule: "corp-net",
                kind: Cidr,
                route: "agent:onprem-1",
                private: true,
            },
        ),
        (
            "org-scoped cidr, outsider",
            "globex",
            "10.20.3.4",
            22,
            Want::Denied(DenyReason::NoMatchingRule),
        ),
        // CIDRs.
        (
            "cidr hit",
            "globex",
            "203.0.113.7",
            443,
            allow("saas", "test-nets", Cidr),
        ),
        (
            "longer prefix wins",
            "globex",
            "203.0.113.200",
            443,
            allow("saas", "test-net-upper", Cidr),
        ),
        (
            "longer prefix, its own ports",
            "globex",
            "203.0.113.200",
            22,
            allow("saas", "test-net-upper", Cidr),
        ),
        (
            "shorter prefix when the longer refuses the port",
            "globex",
            "203.0.113.7",
            80,
            allow("later", "later-net", Cidr),
        ),
        (
            "shorter prefix only",
            "globex",
            "203.0.1.1",
            443,
            allow("later", "later-net", Cidr),
        ),
        (
            "ipv6 cidr",
            "globex",
            "[2001:db8::5]",
            443,
            allow("saas", "test-nets", Cidr),
        ),
        (
            "ipv6 outside",
            "globex",
            "[2001:db9::5]",
            443,
            Want::Denied(DenyReason::NoMatchingRule),
        ),
        (
            "mapped ipv6 host matches ipv4 cidr",
            "globex",
            "[::ffff:203.0.113.7]",
            443,
            allow("saas", "test-nets", Cidr),
        ),
        (
            "mapped cidr folded to ipv4",
            "globex",
            "192.0.2.9",
            443,
            allow("later", "later-mapped", Cidr),
        ),
        (
            "ipv4 short form matches cidr",
            "globex",
            "203.0.28935",
            443,
            allow("saas", "test-nets", Cidr),
        ),
        (
            "ip literal never matches host patterns",
            "globex",
            "140.82.112.3",
            443,
            Want::Denied(DenyReason::NoMatchingRule),
        ),
        (
            "a name no host rule allows: the cidrs rules, if its addresses are inside",
            "globex",
            "203.0.113.7.nip.io",
            443,
            resolved("saas", "test-nets"),
        ),
        // Deny rules come first.
        (
            "deny suffix beats allow exact",
            "globex",
            "ads.tracker.example",
            443,
            Want::DenyRule("deny-main"),
        ),
        (
            "deny exact",
            "globex",
            "blocked.example",
            443,
            Want::DenyRule("deny-main"),
        ),
        (
            "deny cidr",
            "globex",
            "198.51.100.9",
            443,
            Want::DenyRule("deny-main"),
        ),
        (
            "deny metadata",
            "acme",
            "169.254.169.254",
            80,
            Want::DenyRule("deny-main"),
        ),
        (
            "deny metadata, decimal",
            "acme",
            "2852039166",
            80,
            Want::DenyRule("deny-main"),
        ),
        (
            "deny loopback, decimal",
            "globex",
            "2130706433",
            443,
            Want::DenyRule("deny-main"),
        ),
        (
            "deny loopback, hex",
            "globex",
            "0x7f.0.0.1",
            443,
            Want::DenyRule("deny-main"),
        ),
        (
            "deny loopback, hex short",
            "globex",
            "0x7f.1",
            443,
            Want::DenyRule("deny-main"),
        ),
        (
            "deny loopback, octal",
            "globex",
            "0177.0.0.1",
            443,
            Want::DenyRule("deny-main"),
        ),
        (
            "deny loopback, short",
            "globex",
            "127.1",
            443,
            Want::DenyRule("deny-main"),
        ),
        (
            "deny loopback, trailing dot",
            "globex",
            "127.0.0.1.",
            443,
            Want::DenyRule("deny-main"),
        ),
        (
            "deny loopback, mapped ipv6",
            "globex",
            "[::ffff:7f00:1]",
            443,
            Want::DenyRule("deny-main"),
        ),
        (
            "deny ipv6 ula",
            "globex",
            "[fd12::1]",
            443,
            Want::DenyRule("deny-main"),
        ),
        (
            "deny every port by default",
            "globex",
            "blocked.example",
            1,
            Want::DenyRule("deny-main"),
        ),
        (
            "deny with ports: matching port",
            "globex",
            "smtp.example",
            25,
            Want::DenyRule("deny-smtp"),
        ),
        (
            "deny with ports: other port falls to allow",
            "globex",
            "smtp.example",
            587,
            allow("saas", "smtp", ExactHost),
        ),
        // Nothing.
        (
            "no rule",
            "globex",
            "example.org",
            443,
            resolved("saas", "test-nets"),
        ),
        (
            "no rule for an ip",
            "globex",
            "192.0.3.1",
            443,
            Want::Denied(DenyReason::NoMatchingRule),
        ),
    ];
    for (case, org, target, port, want) in &cases {
        check(case, &s.decide(org, &host(target), *port), want);
    }
}

#[test]
fn decide_in_policy_table() {
    use RuleKind::*;
    let s = matching_set();
    let cases: Vec<(&str, &str, &str, &str, u16, Want)> = vec![
        (
            "only the named policy",
            "later",
            "globex",
            "api.github.com",
            443,
            allow("later", "later-salesforce", ExactHost),
        ),
        (
            "its ports only",
            "later",
            "globex",
            "api.github.com",
            80,
            resolved("later", "later-net"),
        ),
        (
            "other policies ignored",
            "later",
            "globex",
            "uploads.github.com",
            443,
            resolved("later", "later-net"),
        ),
        (
            "deny rules still first",
            "saas",
            "globex",
            "ads.tracker.example",
            443,
            Want::DenyRule("deny-main"),
        ),
        (
            "org scoping applies",
            "onprem",
            "globex",
            "git.corp.example",
            443,
            Want::Denied(DenyReason::NoMatchingRule),
        ),
        (
            "org scoping, member",
            "onprem",
            "acme",
            "api.github.com",
            443,
            Want::Allow {
                policy: "onprem",
                rule: "onprem-github",
                kind: ExactHost,
                route: "agent:onprem-1",
                private: false,
            },
        ),
        (
            "unknown policy",
            "nope",
            "globex",
            "api.github.com",
            443,
            Want::Denied(DenyReason::UnknownPolicy),
        ),
        (
            "unknown policy, deny first",
            "nope",
            "globex",
            "blocked.example",
            443,
            Want::DenyRule("deny-main"),
        ),
    ];
    for (case, policy, org, target, port, want) in &cases {
        check(
            case,
            &s.decide_in_policy(policy, org, &host(target), *port),
            want,
        );
    }
}

#[test]
fn many_labels_and_zero_length_prefixes() {
    let s = set(&[(
        "a.toml",
        r#"
[[policy]]
name = "wide"
route = "direct"
  [[policy.allow]]
  cidrs = ["0.0.0.0/0", "::/0"]
  [[policy.allow]]
  hosts = ["*.example"]
"#,
    )]);
    for target in ["1.2.3.4", "[2001:db8::1]", "255.255.255.255"] {
        let d = s.decide("acme", &host(target), 443);
        assert!(
            matches!(
                d,
                Decision::Allow {
                    kind: RuleKind::Cidr,
                    ..
                }
            ),
            "{target}: {d:?}"
        );
    }
    let deep = format!("{}example", "a.".repeat(120));
    let d = s.decide("acme", &host(&deep), 443);
    assert!(
        matches!(
            d,
            Decision::Allow {
                kind: RuleKind::SuffixHost,
                ..
            }
        ),
        "{d:?}"
    );
}
