//! The command line: `policy check`, `policy explain`, `token mint`, `help`.

mod common;

use std::process::{Command, Output};

use common::policies::{loopback_deny_line as deny_line, LOOPBACK as POLICY};
use common::*;

/// Runs the tollgate binary with `args` and waits for it.
fn tollgate(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

#[test]
fn policy_check_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.toml"), POLICY).unwrap();
    let out = tollgate(&["policy", "check", "--policies", path_str(dir.path())]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    std::fs::write(
        dir.path().join("b.toml"),
        "[[policy]]\nname = \"Bad Name\"\nroute = \"direct\"\n[[policy.allow]]\nhosts = [\"*\"]\n",
    )
    .unwrap();
    let out = tollgate(&["policy", "check", "--policies", path_str(dir.path())]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let located: Vec<&str> = err.lines().filter(|l| l.starts_with("b.toml:")).collect();
    assert!(located.len() >= 2, "every error as FILE:LINE: {err}");
    assert!(err.contains("b.toml:2:"), "{err}");
    assert!(err.contains("b.toml:5:"), "{err}");

    let out = tollgate(&["policy", "check", "--bogus"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn policy_explain_prints_the_decision() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("10-test.toml"), POLICY).unwrap();
    let explain = |org: &str, target: &str| {
        let out = tollgate(&[
            "policy",
            "explain",
            "--policies",
            path_str(dir.path()),
            "--org",
            org,
            target,
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let out = explain("acme", "http://localhost:8080/x");
    assert!(out.contains("decision: allowed"), "{out}");
    assert!(out.contains("policy:   acme-loopback"), "{out}");
    let rule_line = POLICY
        .lines()
        .position(|l| l.contains("hosts = [\"localhost\"]"))
        .unwrap();
    // The rule is reported at its [[policy.allow]] header, the line above its hosts.
    assert!(
        out.contains(&format!("rule:     10-test.toml:{rule_line}")),
        "{out}"
    );
    assert!(out.contains("route:    direct"), "{out}");
    assert!(out.contains("(loopback) guard ok"), "{out}");

    let out = explain("beta", "localhost:8080");
    assert!(out.contains("decision: denied"), "{out}");
    assert!(out.contains("guard refused"), "{out}");

    let out = explain("acme", "https://git.corp.example");
    assert!(out.contains("route:    agent:onprem-1"), "{out}");

    let out = explain("acme", "x.blocked.example:443");
    assert!(out.contains("decision: denied"), "{out}");
    assert!(
        out.contains(&format!("rule:     10-test.toml:{}", deny_line())),
        "{out}"
    );
}

#[test]
fn token_mint_cli_makes_a_usable_token() {
    let tg = Tollgate::start(POLICY, &[]);
    let mint = |role: &str, extra: &[&str]| {
        let mut args = vec!["token", "mint", "--data", path_str(&tg.data)];
        args.extend(["--org", "acme", "--user", "bob", "--role", role]);
        args.extend_from_slice(extra);
        tollgate(&args)
    };
    let out = mint("admin", &["--ttl", "10m"]);
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let key = std::fs::read_to_string(tg.data.join("keys/identity.key")).unwrap();
    let v = tollgate::identity::Verifier::new(tollgate::identity::IdentityKey::from_bytes(
        key.trim().as_bytes(),
    ));
    let caller = v.verify_token(&token).unwrap();
    assert_eq!((caller.org.as_str(), caller.user.as_str()), ("acme", "bob"));
    assert!(caller.is_admin());
    assert!(caller.exp > 0);
    // A claim the verifier would refuse is refused at mint time, not printed.
    let out = mint("", &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--role"));

    let out = tollgate(&["ca", "export", "--data", path_str(&tg.data)]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("-----BEGIN CERTIFICATE-----"));
}

#[test]
fn help_lists_every_command() {
    let out = tollgate(&["help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["serve", "policy", "token", "ca", "app", "agent"] {
        assert!(
            text.contains(cmd),
            "{cmd} missing from `tollgate help`:\n{text}"
        );
    }
}
