//! The matching fixtures (rules are referred to by a `# @label` comment on their header
//! line) and the check of a decision against what a case expects.

use super::*;

pub(super) const DENY: &str = r#"
[[deny]]   # @deny-main
hosts = ["*.tracker.example", "blocked.example"]
cidrs = ["198.51.100.0/24", "127.0.0.0/8", "169.254.169.254/32", "fd00::/8"]

[[deny]]   # @deny-smtp
hosts = ["smtp.example"]
ports = [25]
"#;

pub(super) const SAAS: &str = r#"
[[policy]]
name = "saas"
description = "SaaS APIs"
route = "direct"

  [[policy.allow]]   # @github-exact
  hosts = ["api.github.com", "*.salesforce.com"]
  ports = [443]

  [[policy.allow]]   # @eu-salesforce
  hosts = ["*.eu.salesforce.com"]
  ports = [443, "8000-8100"]

  [[policy.allow]]   # @test-nets
  cidrs = ["203.0.113.0/24", "2001:db8::/32"]
  ports = [443]

  [[policy.allow]]   # @github-suffix
  hosts = ["*.github.com"]

  [[policy.allow]]   # @smtp
  hosts = ["smtp.example"]
  ports = [25, 587]

  [[policy.allow]]   # @test-net-upper
  cidrs = ["203.0.113.128/25"]
  ports = ["1-65535"]

  [[policy.allow]]   # @tracker-allowed
  hosts = ["ads.tracker.example", "127.0.0.0/8"]

[[policy]]
name = "onprem"
route = "agent:onprem-1"
orgs = ["acme"]

  [[policy.allow]]   # @corp-git
  hosts = ["git.corp.example"]
  private = true

  [[policy.allow]]   # @corp-net
  cidrs = ["10.20.0.0/16"]
  ports = [443, 22]

  [[policy.allow]]   # @onprem-github
  hosts = ["api.github.com"]
"#;

pub(super) const LATER: &str = r#"
[[policy]]
name = "later"
route = "direct"

  [[policy.allow]]   # @later-salesforce
  hosts = ["*.salesforce.com", "api.github.com"]
  ports = [443, 8443]

  [[policy.allow]]   # @later-net
  cidrs = ["203.0.0.0/16"]

  [[policy.allow]]   # @later-idn
  hosts = ["bücher.example"]

  [[policy.allow]]   # @later-mapped
  cidrs = ["::ffff:192.0.2.0/120"]

  [[policy.allow]]   # @later-all-names
  hosts = ["*.net"]
  ports = [8443]
"#;

/// Replaces the host pattern that is deliberately invalid in SAAS (to keep the fixture
/// readable, it is fixed here and the invalid form is tested below).
pub(super) fn saas() -> String {
    SAAS.replace(r#", "127.0.0.0/8""#, "")
}

pub(super) fn matching_set() -> PolicySet {
    set(&[
        ("00-deny.toml", DENY),
        ("10-saas.toml", &saas()),
        ("20-later.toml", LATER),
    ])
}

/// `file:line` of the rule whose header carries `# @label`.
pub(super) fn rule(label: &str) -> String {
    let saas = saas();
    for (file, src) in [
        ("00-deny.toml", DENY),
        ("10-saas.toml", saas.as_str()),
        ("20-later.toml", LATER),
    ] {
        let tag = format!("# @{label}");
        if let Some(i) = src.lines().position(|l| l.trim_end().ends_with(&tag)) {
            return format!("{file}:{}", i + 1);
        }
    }
    panic!("no rule labelled {label}");
}

/// What a case expects.
pub(super) enum Want {
    Allow {
        policy: &'static str,
        rule: &'static str,
        kind: RuleKind,
        route: &'static str,
        private: bool,
    },
    DenyRule(&'static str),
    Denied(DenyReason),
    /// No host rule allows the name; the `cidrs` rules (the first labelled) allow it on the
    /// condition that its addresses are inside them.
    Resolved(&'static str, &'static str),
}

pub(super) fn resolved(policy: &'static str, rule: &'static str) -> Want {
    Want::Resolved(policy, rule)
}

pub(super) fn allow(policy: &'static str, rule: &'static str, kind: RuleKind) -> Want {
    Want::Allow {
        policy,
        rule,
        kind,
        route: "direct",
        private: kind == RuleKind::Cidr,
    }
}

pub(super) fn check(case: &str, d: &Decision, want: &Want) {
    let want = match want {
        Want::Allow {
            policy,
            rule: label,
            kind,
            route,
            private,
        } => {
            assert_eq!(d.reason(), "allowed", "{case}");
            Decision::Allow {
                policy: (*policy).into(),
                rule: rule_ref(label),
                kind: *kind,
                route: crate::policy::parse::parse_route(route).unwrap(),
                allow_private: *private,
                inspect: false,
                would_deny: None,
                upstream_proxy: true,
                within: None,
            }
        }
        Want::DenyRule(label) => Decision::Deny {
            reason: DenyReason::DenyRule,
            policy: None,
            rule: Some(rule_ref(label)),
        },
        Want::Denied(reason) => Decision::denied(*reason),
        Want::Resolved(policy, label) => {
            let Decision::Allow {
                within: Some(within),
                ..
            } = d
            else {
                panic!("{case}: expected a cidrs condition, got {d:?}");
            };
            assert_eq!(within.rule, rule_ref(label), "{case}");
            Decision::Allow {
                policy: (*policy).into(),
                rule: rule_ref(label),
                kind: RuleKind::ResolvedCidr,
                route: Route::Direct,
                allow_private: true,
                inspect: false,
                would_deny: None,
                upstream_proxy: true,
                within: Some(within.clone()),
            }
        }
    };
    assert_eq!(*d, want, "{case}");
}

/// The [`RuleRef`] of the rule labelled `label` in the fixtures.
pub(super) fn rule_ref(label: &str) -> RuleRef {
    let at = rule(label);
    let (file, line) = at.split_once(':').unwrap();
    RuleRef {
        file: file.into(),
        line: line.parse().unwrap(),
    }
}
