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

/// Runs `policy test` on `cases` (written to files in order) against [`POLICY`].
fn policy_test(cases: &[&str]) -> (Option<i32>, String, String) {
    let (dir, case_dir) = (policies(), tempfile::tempdir().unwrap());
    let mut args: Vec<String> = vec!["policy".into(), "test".into(), "--policies".into()];
    args.push(path_str(dir.path()).into());
    for (i, c) in cases.iter().enumerate() {
        let file = case_dir.path().join(format!("cases-{i}.toml"));
        std::fs::write(&file, c).unwrap();
        args.push(file.display().to_string());
    }
    let out = Command::new(common::bin())
        .args(&args)
        .env_remove("TOLLGATE_TOKEN")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// One `[[case]]` of acme's alice, with `extra` keys.
fn case(method: &str, url: &str, expect: &str, extra: &str) -> String {
    format!(
        "[[case]]\norg = \"acme\"\nuser = \"alice\"\nurl = {url:?}\nmethod = {method:?}\nexpect = {expect:?}\n{extra}\n"
    )
}

fn passing() -> String {
    let repo = "https://api.github.com/repos/a/b";
    case(
        "GET",
        repo,
        "allow",
        "rule = \"10-gh.toml:6\"\nroute = \"direct\"\n",
    ) + &case("DELETE", repo, "deny", "rule = \"10-gh.toml:6\"\n")
}

/// 1-based line of the `n`th `[[case]]` of `text`.
fn case_line(text: &str, n: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| *l == "[[case]]")
        .nth(n)
        .unwrap()
        .0
        + 1
}

#[test]
fn passing_cases_exit_0() {
    let (code, out, err) = policy_test(&[&passing()]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("ok: 2 cases passed"), "{out}");
}

#[test]
fn each_failure_is_printed_with_the_decision_and_exits_1() {
    let repo = "https://api.github.com/repos/a/b";
    let failing = case("PUT", repo, "allow", "")
        + &case(
            "GET",
            "https://api.github.com/orgs/x",
            "deny",
            "rule = \"10-gh.toml:12\"\n",
        )
        + &case(
            "GET",
            repo,
            "allow",
            "route = \"agent:edge\"\napp = \"github\"\n",
        );
    let (code, out, err) = policy_test(&[&passing(), &failing]);
    assert_eq!(code, Some(1), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let at = |n: usize| format!("cases-1.toml:{}: ", case_line(&failing, n));
    assert!(lines[0].contains(&format!("{}PUT {repo} as acme/alice: expected allow, got deny (method_not_allowed; policy github-ro; rule 10-gh.toml:6)", at(0))), "{out}");
    assert!(lines[1].contains(&at(1)), "{out}");
    assert!(lines[1].contains("expected rule 10-gh.toml:12, got deny (path_not_allowed; policy github-ro; rule 10-gh.toml:6)"), "{out}");
    assert!(lines[2].contains(&at(2)), "{out}");
    assert!(lines[2].contains("expected route agent:edge"), "{out}");
    assert!(lines[2].contains("give --server and --token"), "{out}");
    assert!(lines[2].contains("route direct"), "{out}");
    assert!(err.contains("3 of 5 cases failed"), "{err}");
}

#[test]
fn invalid_case_files_are_errors_with_file_and_line() {
    let cases: &[(&str, &str)] = &[
        (
            "[[case]]\norg = \"acme\"\nuser = \"a\"\nurl = \"https://x.example/\"\nmethod = \"GET\"\nexpect = \"allow\"\nexpected = \"deny\"\n",
            "cases-0.toml:7: unknown field `expected`",
        ),
        (
            "[[case]]\norg = \"acme\"\nuser = \"a\"\nurl = \"https://x.example/\"\nmethod = \"GET\"\nexpect = \"maybe\"\n",
            "cases-0.toml:6: unknown variant `maybe`",
        ),
        (
            "[[case]]\norg = \"acme\"\nuser = \"a\"\nurl = \"https://x.example/\"\nexpect = \"allow\"\n",
            "missing field `method`",
        ),
        ("# nothing\n", "cases-0.toml:1: no [[case]] in the file"),
        (
            "[[case]]\norg = \"acme\"\nuser = \"a\"\nurl = \"x.example:443\"\nmethod = \"GET\"\nexpect = \"allow\"\n",
            "cases-0.toml:1: url \"x.example:443\" must be an http:// or https:// URL",
        ),
        (
            "\n[[case]]\norg = \"acme\"\nuser = \"a\"\nurl = \"https://x.example/\"\nmethod = \"GET\"\nexpect = \"deny\"\nroute = \"direct\"\n",
            "cases-0.toml:2: `route` and `app` describe an allowed request",
        ),
    ];
    for (text, want) in cases {
        let (code, out, err) = policy_test(&[text]);
        assert_eq!(code, Some(1), "{want}: {out}{err}");
        assert!(err.contains(want), "{want}: {err}");
    }
}

#[test]
fn the_shipped_cases_pass_against_the_shipped_policies() {
    let shipped = common::policies::shipped();
    let cases: Vec<_> = std::fs::read_dir(shipped.join("cases"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    assert!(!cases.is_empty(), "no case file under policies/cases");
    let out = Command::new(common::bin())
        .args(["policy", "test", "--policies"])
        .arg(shipped)
        .args(&cases)
        .env_remove("TOLLGATE_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("cases passed"), "{stdout}");
}
