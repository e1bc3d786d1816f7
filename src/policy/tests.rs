//! Tests of parsing and matching across the policy modules (host normalization and the
//! watcher have their own, next to the code).

use std::fs;
use std::path::Path;

use super::*;

fn sources(files: &[(&str, &str)]) -> Vec<(String, String)> {
    files
        .iter()
        .map(|(n, s)| (n.to_string(), s.to_string()))
        .collect()
}

fn set(files: &[(&str, &str)]) -> PolicySet {
    match PolicySet::from_sources(&sources(files)) {
        Ok(set) => set,
        Err(errors) => panic!("fixture does not load: {errors:#?}"),
    }
}

fn host(s: &str) -> Host {
    normalize_host(s).unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------------------------------------
// Parsing errors: one fixture per error kind under testdata/invalid, each listing the errors
// it must produce as `# expect: LINE: message fragment` comments.

/// Guards against the fixture loop silently checking fewer files than exist.
const INVALID_FIXTURES: usize = 41;

#[test]
fn invalid_fixtures_report_file_line_and_message() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/policy/testdata/invalid");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    assert_eq!(names.len(), INVALID_FIXTURES, "fixtures: {names:?}");
    for name in &names {
        let src = fs::read_to_string(dir.join(name)).unwrap();
        let expected: Vec<(usize, &str)> = src
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .map(|e| {
                let (line, fragment) = e.split_once(": ").unwrap();
                (line.parse().unwrap(), fragment)
            })
            .collect();
        assert!(!expected.is_empty(), "{name}: no `# expect:` line");
        let errors = match PolicySet::from_sources(&[(name.clone(), src.clone())]) {
            Ok(_) => panic!("{name}: accepted"),
            Err(errors) => errors,
        };
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            errors.len(),
            expected.len(),
            "{name}: got {shown:#?}, expected {expected:#?}"
        );
        for (e, (line, fragment)) in errors.iter().zip(&expected) {
            assert_eq!(e.file, *name);
            assert_eq!(e.line, *line, "{name}: {e}");
            assert!(
                e.message.contains(fragment),
                "{name}: {e} lacks {fragment:?}"
            );
            assert!(
                e.to_string().starts_with(&format!("{name}:{line}: ")),
                "{e}"
            );
        }
    }
}

#[test]
fn errors_of_every_file_are_reported_at_once() {
    let good = r#"
[[policy]]
name = "shared"
route = "direct"
  [[policy.allow]]
  hosts = ["api.github.com"]
"#;
    let syntax = "[[policy]]\nname = \"broken\nroute = \"direct\"\n";
    let semantic = r#"
[[policy]]
name = "shared"
route = "direct"
  [[policy.allow]]
  hosts = ["*"]
[[deny]]
cidrs = ["300.0.0.0/8"]
"#;
    let errors = PolicySet::from_sources(&sources(&[
        ("10-good.toml", good),
        ("20-syntax.toml", syntax),
        ("30-semantic.toml", semantic),
    ]))
    .unwrap_err();
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(shown.len(), 4, "{shown:#?}");
    assert!(
        shown[0].starts_with("20-syntax.toml:2: TOML syntax error"),
        "{shown:#?}"
    );
    assert!(shown[1].starts_with("30-semantic.toml:2: duplicate policy name \"shared\": already defined at 10-good.toml:2"), "{shown:#?}");
    assert!(
        shown[2].starts_with("30-semantic.toml:6: host pattern \"*\""),
        "{shown:#?}"
    );
    assert!(
        shown[3].starts_with("30-semantic.toml:8: invalid CIDR \"300.0.0.0/8\""),
        "{shown:#?}"
    );
}

#[test]
fn valid_forms_are_accepted() {
    let s = set(&[(
        "a.toml",
        r#"
# An inline array of tables is the same thing as [[...]] headers.
deny = [{ hosts = ["x.example"] }]

[[policy]]
name = "all-forms"
description = "every accepted spelling"
route = "agent:edge-1"
orgs = ["acme", "globex", "acme"]
allow = [
  { hosts = ["API.Example.COM.", "*.Bücher.example"], ports = [443, "8000-8100", "9000"] },
  { cidrs = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.1", "::ffff:198.18.0.0/111"], private = true },
]
"#,
    )]);
    assert_eq!(s.policy_count(), 1);
    assert_eq!(s.file_count(), 1);
    assert_eq!(s.deny_rule_count(), 1);
    let p = s.policy("all-forms").unwrap();
    assert_eq!(p.description.as_deref(), Some("every accepted spelling"));
    assert_eq!(p.route, Route::Agent("edge-1".into()));
    assert_eq!(p.orgs.as_deref().unwrap().len(), 2, "duplicates folded");
    assert_eq!(p.defined_at.to_string(), "a.toml:5");
    assert_eq!(p.allow_rules, 2);
    assert!(p.visible_to("globex") && !p.visible_to("initech"));
    for (target, port) in [
        ("api.example.com", 9000),
        ("www.xn--bcher-kva.example", 8050),
        ("192.0.2.1", 443),
        ("198.19.255.255", 443),
    ] {
        assert!(
            s.decide("acme", &host(target), port).is_allowed(),
            "{target}:{port}"
        );
    }
    assert!(!s.decide("acme", &host("192.0.2.2"), 443).is_allowed());
}

#[test]
fn load_dir_reads_toml_files_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let policy = |name: &str, line_pad: &str| {
        format!("{line_pad}[[policy]]\nname = \"{name}\"\nroute = \"direct\"\n  [[policy.allow]]\n  hosts = [\"same.example\"]\n")
    };
    // Written in reverse order; "a" must still win the tie, being first by name.
    fs::write(dir.path().join("b.toml"), policy("from-b", "")).unwrap();
    fs::write(dir.path().join("a.toml"), policy("from-a", "\n\n")).unwrap();
    fs::write(dir.path().join("notes.txt"), "not a policy").unwrap();
    fs::write(dir.path().join(".#a.toml"), "editor lock, ignored").unwrap();
    fs::create_dir(dir.path().join("sub.toml")).unwrap();
    fs::write(dir.path().join("sub.toml/c.toml"), "not read = true").unwrap();
    let s = PolicySet::load_dir(dir.path()).unwrap();
    assert_eq!(s.file_count(), 2);
    let names: Vec<&str> = s.policies().iter().map(|p| &*p.name).collect();
    assert_eq!(names, ["from-a", "from-b"]);
    let d = s.decide("acme", &host("same.example"), 443);
    assert_eq!(d.policy().map(|p| &**p), Some("from-a"));
    assert_eq!(d.rule().unwrap().to_string(), "a.toml:6");
}

#[test]
fn load_dir_edge_cases() {
    let dir = tempfile::tempdir().unwrap();
    let empty = PolicySet::load_dir(dir.path()).unwrap();
    assert_eq!((empty.file_count(), empty.policy_count()), (0, 0));
    assert_eq!(
        empty.decide("acme", &host("api.github.com"), 443),
        Decision::denied(DenyReason::NoMatchingRule)
    );

    let missing = dir.path().join("missing");
    let errors = PolicySet::load_dir(&missing).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line, 0);
    assert_eq!(errors[0].file, missing.display().to_string());
    assert!(errors[0]
        .message
        .contains("cannot read the policy directory"));

    // An unreadable file does not hide the errors of the others, and keeps its name order.
    fs::write(dir.path().join("b.toml"), [0xff, 0xfe]).unwrap();
    fs::write(dir.path().join("a.toml"), "[[deny]]\nhosts = [\"*\"]\n").unwrap();
    fs::write(dir.path().join("c.toml"), "oops = 1\n").unwrap();
    let errors = PolicySet::load_dir(dir.path()).unwrap_err();
    let at: Vec<(&str, usize)> = errors.iter().map(|e| (e.file.as_str(), e.line)).collect();
    assert_eq!(
        at,
        [("a.toml", 2), ("b.toml", 0), ("c.toml", 1)],
        "{errors:#?}"
    );
    assert!(
        errors[1].message.starts_with("cannot read: "),
        "{}",
        errors[1]
    );
    assert_eq!(
        PolicySet::read_sources(dir.path()).unwrap_err().len(),
        1,
        "read_sources reports only reading problems"
    );
}

// ---------------------------------------------------------------------------------------------
// Matching. Rules are referred to by a `# @label` comment on their header line.

const DENY: &str = r#"
[[deny]]   # @deny-main
hosts = ["*.tracker.example", "blocked.example"]
cidrs = ["198.51.100.0/24", "127.0.0.0/8", "169.254.169.254/32", "fd00::/8"]

[[deny]]   # @deny-smtp
hosts = ["smtp.example"]
ports = [25]
"#;

const SAAS: &str = r#"
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

const LATER: &str = r#"
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
fn saas() -> String {
    SAAS.replace(r#", "127.0.0.0/8""#, "")
}

fn matching_set() -> PolicySet {
    set(&[
        ("00-deny.toml", DENY),
        ("10-saas.toml", &saas()),
        ("20-later.toml", LATER),
    ])
}

/// `file:line` of the rule whose header carries `# @label`.
fn rule(label: &str) -> String {
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
enum Want {
    Allow {
        policy: &'static str,
        rule: &'static str,
        kind: RuleKind,
        route: &'static str,
        private: bool,
    },
    DenyRule(&'static str),
    Denied(DenyReason),
}

fn allow(policy: &'static str, rule: &'static str, kind: RuleKind) -> Want {
    Want::Allow {
        policy,
        rule,
        kind,
        route: "direct",
        private: kind == RuleKind::Cidr,
    }
}

fn check(case: &str, d: &Decision, want: &Want) {
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
                route: model::parse_route(route).unwrap(),
                allow_private: *private,
            }
        }
        Want::DenyRule(label) => Decision::Deny {
            reason: DenyReason::DenyRule,
            policy: None,
            rule: Some(rule_ref(label)),
        },
        Want::Denied(reason) => Decision::denied(*reason),
    };
    assert_eq!(*d, want, "{case}");
}

/// The [`RuleRef`] of the rule labelled `label` in the fixtures.
fn rule_ref(label: &str) -> RuleRef {
    let at = rule(label);
    let (file, line) = at.split_once(':').unwrap();
    RuleRef {
        file: file.into(),
        line: line.parse().unwrap(),
    }
}

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
            Want::Denied(DenyReason::NoMatchingRule),
        ),
        (
            "suffix needs a label boundary",
            "globex",
            "evilgithub.com",
            443,
            Want::Denied(DenyReason::NoMatchingRule),
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
            Want::Denied(DenyReason::PortNotAllowed),
        ),
        (
            "port not allowed",
            "globex",
            "api.github.com",
            22,
            Want::Denied(DenyReason::PortNotAllowed),
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
            Want::Denied(DenyReason::NoMatchingRule),
        ),
        (
            "org-scoped port refusal is not leaked",
            "globex",
            "git.corp.example",
            22,
            Want::Denied(DenyReason::NoMatchingRule),
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
            "name never matches cidrs",
            "globex",
            "203.0.113.7.nip.io",
            443,
            Want::Denied(DenyReason::NoMatchingRule),
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
            Want::Denied(DenyReason::NoMatchingRule),
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
            Want::Denied(DenyReason::PortNotAllowed),
        ),
        (
            "other policies ignored",
            "later",
            "globex",
            "uploads.github.com",
            443,
            Want::Denied(DenyReason::NoMatchingRule),
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
fn host_pattern_written_as_cidr_is_rejected() {
    let errors = PolicySet::from_sources(&sources(&[("10-saas.toml", SAAS)])).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        errors[0].line,
        rule("tracker-allowed")[13..].parse::<usize>().unwrap() + 1
    );
    assert!(
        errors[0].message.contains("\"127.0.0.0/8\""),
        "{}",
        errors[0]
    );
}

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
