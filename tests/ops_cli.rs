//! The command line (issue 17): a maximum token lifetime at minting and at verification,
//! unknown roles refused, `token inspect`, every `serve` flag's default in `--help`, shell
//! completions and the man page.

mod common;

use std::process::Output;
use std::time::Duration;

use common::policies::LOOPBACK as POLICY;
use common::*;

fn tollgate(args: &[&str]) -> Output {
    std::process::Command::new(bin())
        .args(args)
        .env_remove("TOLLGATE_MAX_TOKEN_TTL")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn mint_caps_the_lifetime_and_refuses_unknown_roles() {
    let tg = Tollgate::start(POLICY, &[]);
    let data = path_str(&tg.data);
    let mint = |extra: &[&str]| {
        let mut args = vec![
            "token", "mint", "--data", data, "--org", "acme", "--user", "u",
        ];
        args.extend_from_slice(extra);
        tollgate(&args)
    };
    for ttl in ["100000d", "31d"] {
        let out = mint(&["--ttl", ttl]);
        assert_eq!(out.status.code(), Some(1), "{ttl}");
        assert!(out.stdout.is_empty());
        assert!(stderr(&out).contains("maximum"), "{}", stderr(&out));
    }
    assert!(mint(&["--ttl", "30d"]).status.success());
    assert!(mint(&["--ttl", "60d", "--max-ttl", "90d"]).status.success());
    let out = mint(&["--role", "superuser"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(stderr(&out).contains("superuser"), "{}", stderr(&out));
    assert!(stderr(&out).contains("admin, operator"), "{}", stderr(&out));
    assert!(mint(&["--role", "operator", "--role", "admin"])
        .status
        .success());
}

#[tokio::test]
async fn the_server_refuses_tokens_over_the_maximum_lifetime() {
    let up = echo_upstream().await;
    let uri = format!("http://{up}/");
    let send = async |tg: &Tollgate, ttl_days: u64| {
        let t = tg.token_ttl("acme", "u", Duration::from_secs(ttl_days * 86_400));
        let pa = format!("Bearer {t}");
        proxy_request(tg.proxy, "GET", &uri, &[("proxy-authorization", &pa)], "").await
    };
    let tg = Tollgate::start(POLICY, &[]);
    assert_eq!(send(&tg, 29).await.status, 200);
    let r = send(&tg, 60).await;
    assert_proxy_error(&r, 407, "proxy_auth_required");
    let tg = Tollgate::start(POLICY, &["--max-token-ttl", "90d"]);
    assert_eq!(send(&tg, 60).await.status, 200);
    assert_eq!(send(&tg, 100).await.status, 407);
}

#[test]
fn inspect_shows_claims_and_validity_but_no_secret() {
    let tg = Tollgate::start(POLICY, &[]);
    let data = path_str(&tg.data);
    let token = tg.role_token("acme", "alice", "admin");
    let out = tollgate(&["token", "inspect", &token, "--data", data]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for want in [
        "org:        acme",
        "user:       alice",
        "admin",
        "valid:      valid",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    // RFC 3339 times.
    let expires = text.lines().find(|l| l.starts_with("expires at:")).unwrap();
    assert!(
        expires.contains('T') && expires.contains("Z (in "),
        "{expires}"
    );
    let signature = token.rsplit('.').next().unwrap();
    let key = std::fs::read_to_string(tg.data.join("keys/identity.key")).unwrap();
    assert!(!text.contains(signature), "signature printed");
    assert!(!text.contains(key.trim()), "key printed");

    // JSON, an expired token, a token signed with another key, and no key at hand.
    let expired = tg.expired_token("acme", "old");
    let out = tollgate(&["token", "inspect", &expired, "--data", data, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], "invalid: expired");
    assert_eq!(v["signature"], "valid");
    assert_eq!(v["user"], "old");
    assert!(v["expires_at"].as_str().unwrap().ends_with('Z'));
    assert!(v["expires_in_seconds"].as_i64().unwrap() < 0);
    let other = Tollgate::start(POLICY, &[]);
    let out = tollgate(&["token", "inspect", &token, "--data", path_str(&other.data)]);
    assert!(
        stdout(&out).contains("valid:      invalid"),
        "{}",
        stdout(&out)
    );
    let out = tollgate(&["token", "inspect", &token, "--data", "/nonexistent"]);
    assert!(stdout(&out).contains("not checked"), "{}", stdout(&out));
    let out = tollgate(&["token", "inspect", "not-a-token"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn serve_help_shows_every_default() {
    let out = tollgate(&["serve", "--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    let flags: Vec<&str> = help.split("\n      --").skip(1).collect();
    assert!(flags.len() > 40, "{help}");
    for f in flags {
        let name = f.split_whitespace().next().unwrap();
        assert!(
            f.contains("[default: ") || f.contains("off unless"),
            "--{name} shows no default:\n{f}"
        );
    }
}

#[test]
fn completions_and_man_page_are_generated() {
    for (shell, marker) in [
        ("bash", "complete -F _tollgate"),
        ("zsh", "#compdef tollgate"),
        ("fish", "complete -c tollgate"),
    ] {
        let out = tollgate(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("inspect"), "{shell}: subcommands missing");
    }
    let out = tollgate(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    let out = tollgate(&["man"]);
    assert!(out.status.success());
    let page = stdout(&out);
    assert!(page.contains(".TH tollgate 1"), "{page}");
    assert!(page.contains("serve"), "{page}");
    // The bash script parses.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.bash");
    std::fs::write(&path, stdout(&tollgate(&["completions", "bash"]))).unwrap();
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .status()
        .unwrap();
    assert!(check.success());
}

/// Timestamps in the admin API, the operator API and `tollgate app` are RFC 3339.
#[tokio::test]
async fn admin_api_and_cli_timestamps_are_rfc3339() {
    let env = common::oauth::setup(&[], |_, _| {}).await;
    env.consent("acme", "alice").await;
    let is_time = |v: &serde_json::Value| {
        let s = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
        assert!(s.ends_with('Z') && s.contains('T'), "{s}");
        let secs = unix_time(v).unwrap();
        let now = common::oauth::now();
        assert!(secs + 3600 > now && secs < now + 86_400, "{s}");
    };
    let app = env.admin_call("GET", "/v1/apps/crm", None).await.json();
    is_time(&app["created_at"]);
    is_time(&app["updated_at"]);
    let a = &env.authorizations("crm").await[0];
    is_time(&a["obtained_at"]);
    is_time(&a["expires_at"]);
    let audit = env.admin_call("GET", "/v1/audit", None).await.json();
    is_time(&audit["events"][0]["at"]);

    let out = std::process::Command::new(bin())
        .args(["app", "authorizations", "crm"])
        .env("TOLLGATE_URL", format!("http://{}", env.tg.web))
        .env("TOLLGATE_TOKEN", &env.admin)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let row = text.lines().find(|l| l.starts_with("alice")).unwrap();
    assert_eq!(row.matches('T').count(), 2, "{row}");
    assert!(row.contains(a["obtained_at"].as_str().unwrap()), "{row}");
}
