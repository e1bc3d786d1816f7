//! Parsing errors and accepted forms.

use std::fs;
use std::path::Path;

use super::matching::{rule, SAAS};
use super::*;

// ---------------------------------------------------------------------------------------------
// Parsing errors: one fixture per error kind under testdata/invalid, each listing the errors
// it must produce as `# expect: LINE: message fragment` comments.

/// Guards against the fixture loop silently checking fewer files than exist.
const INVALID_FIXTURES: usize = 50;

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
    let good = allow_policy("shared", "direct", &["api.github.com"]);
    let syntax = "[[policy]]\nname = \"broken\nroute = \"direct\"\n";
    let semantic =
        allow_policy("shared", "direct", &["*"]) + "[[deny]]\ncidrs = [\"300.0.0.0/8\"]\n";
    let errors = PolicySet::from_sources(&sources(&[
        ("10-good.toml", &good),
        ("20-syntax.toml", syntax),
        ("30-semantic.toml", &semantic),
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
