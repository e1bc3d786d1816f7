//! Loading a directory: which files, in which order, and its edge cases.

use std::fs;

use super::*;

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
