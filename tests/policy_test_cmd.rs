//! The policy commands that answer from the policy files alone: `policy explain` with a
//! method and a path, and `policy test` over case files.

mod common;

use std::process::{Command, Output};

use common::path_str;

fn tollgate(args: &[&str]) -> Output {
    Command::new(common::bin()).args(args).output().unwrap()
}

/// github-ro reads `/repos/**` on api.github.com (rule header on line 6); POSTs to issues are
/// allowed by the rule on line 12.
const POLICY: &str = r#"
[[policy]]
name = "github-ro"
route = "direct"

  [[policy.allow]]
  hosts = ["api.github.com"]
  ports = [443]
  read_only = true
  paths = ["/repos/**"]

  [[policy.allow]]
  hosts = ["api.github.com"]
  ports = [443]
  methods = ["POST"]
  paths = ["/repos/*/*/issues"]
"#;

fn policies() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("10-gh.toml"), POLICY).unwrap();
    dir
}

#[test]
fn explain_decides_a_request_by_method_and_path() {
    let dir = policies();
    let explain = |extra: &[&str]| {
        let mut args = vec!["policy", "explain", "--no-resolve", "--policies"];
        args.push(path_str(dir.path()));
        args.extend(["--org", "acme"]);
        args.extend_from_slice(extra);
        let out = tollgate(&args);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let out = explain(&["https://api.github.com/repos/a/b?page=2"]);
    assert!(out.contains("decision: allowed"), "{out}");
    assert!(out.contains("request:  GET /repos/a/b"), "{out}");
    assert!(out.contains("rule:     10-gh.toml:6"), "{out}");
    let out = explain(&["--method", "DELETE", "https://api.github.com/repos/a/b"]);
    assert!(out.contains("decision: denied"), "{out}");
    assert!(out.contains("reason:   method_not_allowed"), "{out}");
    assert!(out.contains("rule:     10-gh.toml:6"), "{out}");
    let out = explain(&[
        "--method",
        "POST",
        "https://api.github.com/repos/a/b/issues",
    ]);
    assert!(out.contains("rule:     10-gh.toml:12"), "{out}");
    let out = explain(&[
        "--method",
        "POST",
        "https://api.github.com/repos/%61/./b/x/../issues",
    ]);
    assert!(out.contains("request:  POST /repos/a/b/issues"), "{out}");
    assert!(out.contains("decision: allowed"), "{out}");
    let out = explain(&["https://api.github.com/repos/a%2Fb"]);
    assert!(out.contains("reason:   undecidable_path"), "{out}");
    // The destination alone: allowed, and a CONNECT to it is intercepted.
    let out = explain(&["api.github.com:443"]);
    assert!(out.contains("decision: allowed"), "{out}");
    assert!(
        out.contains("inspect:  the rule limits methods or paths"),
        "{out}"
    );
    // JSON carries the method and the normalized path.
    let out = explain(&[
        "--json",
        "--method",
        "HEAD",
        "https://api.github.com/repos/%7Ex",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["method"], "HEAD");
    assert_eq!(v["path"], "/repos/~x");
    assert_eq!(v["decision"], "allowed");
}
