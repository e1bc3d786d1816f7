//! `--events-webhook` end to end: a local receiver that checks every signature itself gets
//! `connected` (consent), `refresh_failed` (provider 5xx), `recovered`, `needs_consent`
//! (`invalid_grant`) and `disconnected` (`DELETE /v1/me/connections/{app}`), in order, each
//! once; a delivery answered `500` is retried; bodies never carry a token.

mod common;

use common::agent::metric;
use common::events::{verify, Receiver};
use common::oauth::*;
use common::provider::RefreshMode;
use common::*;
use ring::hmac;
use serde_json::Value;

const SECRET: &str = "whsec-0123456789-abcdef";

/// Waits until the receiver has `n` delivered events.
async fn wait_events(rx: &Receiver, n: usize) -> Vec<Value> {
    let ok = wait_until(DEADLINE, async || rx.delivered().len() >= n).await;
    assert!(ok, "expected {n} events, got {:#?}", rx.deliveries());
    rx.delivered()
}

#[tokio::test]
async fn grant_events_are_signed_retried_and_delivered_in_order() {
    let rx = Receiver::start(SECRET.as_bytes()).await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("events.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let (url, file) = (rx.url(), secret_file.to_str().unwrap().to_string());
    let flags = [
        "--refresh-ahead",
        "off",
        "--events-webhook",
        &url,
        "--events-webhook-secret-file",
        &file,
    ];
    let env = setup(&flags, |_, _| {}).await;
    env.p.with(|s| s.access_ttl = Some(2));

    // connected, answered 500 once: delivered after a retry, with the same id.
    rx.fail_next(1);
    env.consent("acme", "alice").await;
    let events = wait_events(&rx, 1).await;
    let all = rx.deliveries();
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(all[0].answered, 500);
    assert_eq!(
        all[0].body["id"], all[1].body["id"],
        "a retry is the same event"
    );
    let connected = &events[0];
    assert_eq!(connected["event"], "connected");
    assert_eq!(connected["org"], "acme");
    assert_eq!(connected["app"], "crm");
    assert_eq!(connected["user"], "alice");
    assert_eq!(connected["state"], "ok");
    let at = connected["at"].as_str().unwrap();
    assert!(at.ends_with('Z') && at.contains('T'), "RFC 3339: {at}");
    assert_eq!(connected["id"].as_str().unwrap().len(), 32);

    // A provider 5xx on refresh: refresh_failed, with the reason.
    env.wait_stale("alice").await;
    env.p.with(|s| s.refresh_mode = RefreshMode::ServerError);
    assert_proxy_error(
        &env.call("acme", "alice").await,
        502,
        "token_refresh_failed",
    );
    let failed = wait_events(&rx, 2).await.remove(1);
    assert_eq!(failed["event"], "refresh_failed", "{failed}");
    assert_eq!(failed["state"], "refresh_failing");
    assert!(failed["error"].as_str().is_some(), "{failed}");
    // Failing again is not a new event.
    assert_proxy_error(
        &env.call("acme", "alice").await,
        502,
        "token_refresh_failed",
    );

    // The provider is back: recovered.
    env.p.with(|s| s.refresh_mode = RefreshMode::Normal);
    assert_eq!(env.call("acme", "alice").await.status, 200);
    let recovered = wait_events(&rx, 3).await.remove(2);
    assert_eq!(recovered["event"], "recovered", "{recovered}");
    assert_eq!(recovered["state"], "ok");

    // invalid_grant: needs_consent.
    env.wait_stale("alice").await;
    env.p.with(|s| s.refresh_mode = RefreshMode::InvalidGrant);
    assert_eq!(env.call("acme", "alice").await.status, 401);
    let refused = wait_events(&rx, 4).await.remove(3);
    assert_eq!(refused["event"], "needs_consent", "{refused}");
    assert_eq!(refused["state"], "needs_consent");

    // Consent again, then Disconnect through the API.
    env.p.with(|s| s.refresh_mode = RefreshMode::Normal);
    env.consent("acme", "alice").await;
    let token = env.tg.token("acme", "alice");
    let path = "/v1/me/connections/crm";
    let r = web_request(env.tg.web, "DELETE", path, Some(&token), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let events = wait_events(&rx, 6).await;
    let names: Vec<_> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "connected",
            "refresh_failed",
            "recovered",
            "needs_consent",
            "connected",
            "disconnected"
        ]
    );
    let gone = &events[5];
    assert_eq!(gone["user"], "alice");
    assert!(gone.get("state").is_none(), "no state once gone: {gone}");

    // Every delivery verified; a wrong secret or a changed body would not have.
    let all = rx.deliveries();
    assert!(all.iter().all(|d| d.signed), "{all:#?}");
    let d = &all[1];
    let wrong = hmac::Key::new(hmac::HMAC_SHA256, b"another-secret-entirely");
    assert!(!verify(&wrong, &d.signature, d.raw.as_bytes()));
    let right = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
    assert!(verify(&right, &d.signature, d.raw.as_bytes()));
    let tampered = d.raw.replace("alice", "mallory");
    assert!(!verify(&right, &d.signature, tampered.as_bytes()));
    for d in &all {
        for s in ["AT-secret", "RT-secret", "sk-CLIENT-SECRET", SECRET] {
            assert!(!d.raw.contains(s), "{s} in an event: {}", d.raw);
        }
    }

    let delivered = r#"tollgate_events_total{event="connected",outcome="delivered"}"#;
    assert_eq!(metric(&env.tg, delivered).await, 2.0);
    let failed = r#"tollgate_events_total{event="connected",outcome="failed"}"#;
    assert_eq!(metric(&env.tg, failed).await, 0.0);
    assert_eq!(metric(&env.tg, "tollgate_events_queue").await, 0.0);
    env.assert_no_secrets_logged();
    assert!(
        !env.tg.logs().contains(SECRET),
        "the webhook secret was logged"
    );
}

#[tokio::test]
async fn a_webhook_without_a_secret_or_over_plain_http_is_refused() {
    for (flags, expect) in [
        (
            vec!["--events-webhook", "https://hooks.example/e"],
            "needs --events-webhook-secret-file",
        ),
        (
            vec![
                "--events-webhook",
                "http://hooks.example/e",
                "--events-webhook-secret-file",
                "/dev/null",
            ],
            "must be https",
        ),
    ] {
        let out = tollgate_output(&flags);
        assert!(!out.status.success(), "started with {flags:?}");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(text.contains(expect), "{flags:?}: {text}");
    }
}

/// Runs `tollgate serve` with `flags` (expected to exit at once).
fn tollgate_output(flags: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("serve")
        .arg("--data")
        .arg(dir.path().join("data"))
        .args(flags)
        .output()
        .unwrap()
}

#[tokio::test]
async fn what_is_queued_is_delivered_at_shutdown() {
    let rx = Receiver::start(SECRET.as_bytes()).await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("events.secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let (url, file) = (rx.url(), secret_file.to_str().unwrap().to_string());
    let flags = [
        "--events-webhook",
        &url,
        "--events-webhook-secret-file",
        &file,
    ];
    let mut env = setup(&flags, |_, _| {}).await;
    // The receiver fails three times: the next retry waits up to 4 s, longer than the stop.
    rx.fail_next(3);
    env.consent("acme", "alice").await;
    let failed = wait_until(DEADLINE, async || rx.deliveries().len() >= 3).await;
    assert!(failed, "{:#?}", rx.deliveries());
    let status = env.tg.stop().await;
    assert!(status.success(), "{status:?}");
    let events = rx.delivered();
    assert_eq!(events.len(), 1, "{:#?}", rx.deliveries());
    assert_eq!(events[0]["event"], "connected");
}
