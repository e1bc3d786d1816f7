//! Agent credential renewal over the relay connection (issue 18), end to end: tollgate and
//! `tollgate agent run` as processes, an agent enrolled with a 20 s credential serving
//! requests through its route for 90 s while the relay renews the credential on its live
//! sessions, the credential file read concurrently the whole time, then the agent revoked.
//!
//! Beside it, a second agent whose renewals fail (its credential's directory is gone) shows a
//! session cut when its credential expires unrenewed.
//!
//! One test function: it runs 90 s by design. Its polling is one file read every 5 ms, and
//! one request and one metrics read every 0.5 s.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::agent::*;
use common::*;
use tollgate::identity::IdentityKey;
use tollgate::relay::credential::{peek, CredentialVerifier};

/// How long the agent serves through renewals.
const SERVE_FOR: Duration = Duration::from_secs(90);

/// Wall-clock seconds since the Unix epoch, fractional.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// What the reader loop saw of the credential file.
#[derive(Default)]
struct FileReads {
    /// Reads done.
    reads: u64,
    /// Reads that were not a valid credential of the agent (half-written, or worse).
    bad: Vec<String>,
    /// Each distinct credential, in the order seen, with its expiry.
    seen: Vec<(String, u64)>,
}

/// Reads `path` every 5 ms until `stop`, verifying every read with `key`.
fn read_loop(path: std::path::PathBuf, key: IdentityKey, stop: Arc<AtomicBool>) -> FileReads {
    let verifier = CredentialVerifier::new(&key, vec![]);
    let mut out = FileReads::default();
    while !stop.load(Ordering::Relaxed) {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let text = text.trim().to_string();
        out.reads += 1;
        match verifier.check(&text) {
            Ok(v) if v.agent == "onprem-1" => {
                if out.seen.last().map(|(t, _)| t) != Some(&text) {
                    out.seen.push((text, v.expires_at.unwrap_or(0)));
                }
            }
            other => out.bad.push(format!("{other:?}: {:?}", text.len())),
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twenty_second_credential_keeps_serving_through_renewals_until_revoked() {
    let up = echo_upstream().await;
    let (tg, relay) = start_tollgate(&[]);
    let cred = tg.dir.path().join("agent-onprem-1.jwt");
    std::fs::write(&cred, enroll_with(&tg, "onprem-1", &["--ttl", "20s"])).unwrap();
    let ca = tg.dir.path().join("relay-ca.pem");
    std::fs::copy(tg.data.join("ca/ca.pem"), &ca).unwrap();
    let agent = Agent::start_with_files(
        relay,
        "onprem-1",
        &cred,
        &ca,
        &["127.0.0.0/8"],
        &["--keepalive", KEEPALIVE],
    );
    assert!(
        wait_connections(&tg, "onprem-1", 2, Duration::from_secs(20)).await,
        "agent did not connect\n{}\n{}",
        tg.logs(),
        agent.logs()
    );

    // A second agent whose renewals fail: its credential's directory is gone, so it cannot
    // write a renewed one (root ignores permissions). Its session must end at expiry.
    let short_dir = tg.dir.path().join("short");
    std::fs::create_dir(&short_dir).unwrap();
    let short_cred = short_dir.join("agent.jwt");
    let short = enroll_with(&tg, "onprem-2", &["--ttl", "12s"]);
    std::fs::write(&short_cred, &short).unwrap();
    let short_exp = peek(&short).unwrap().expires_at.unwrap();
    let short_agent = Agent::start_with_files(
        relay,
        "onprem-2",
        &short_cred,
        &ca,
        &["127.0.0.0/8"],
        &["--keepalive", KEEPALIVE, "--connections", "1"],
    );
    assert!(
        wait_connections(&tg, "onprem-2", 1, Duration::from_secs(20)).await,
        "{}",
        short_agent.logs()
    );
    std::fs::remove_dir_all(&short_dir).unwrap();
    let short_series = "tollgate_agent_connections{agent=\"onprem-2\"}";
    let mut short_cut_at = None;

    let key = std::fs::read_to_string(tg.data.join("keys/identity.key")).unwrap();
    let key = IdentityKey::from_bytes(key.trim().as_bytes());
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (path, stop) = (cred.clone(), stop.clone());
        std::thread::spawn(move || read_loop(path, key, stop))
    };

    // A request every 0.5 s through the agent route, for 90 s.
    let auth = tg.bearer("acme", "alice");
    let started = Instant::now();
    let (mut sent, mut failures) = (0u32, Vec::new());
    while started.elapsed() < SERVE_FOR {
        let uri = format!("http://{up}/renew/{sent}");
        let r = proxy_request(tg.proxy, "GET", &uri, &[("proxy-authorization", &auth)], "").await;
        if r.status != 200 {
            failures.push(format!(
                "{:?} {}: {}",
                started.elapsed(),
                r.status,
                r.text()
            ));
        }
        sent += 1;
        if short_cut_at.is_none() && metric(&tg, short_series).await == 0.0 {
            short_cut_at = Some(unix_now());
        }
        tokio::time::sleep_until((started + Duration::from_millis(500) * sent).into()).await;
    }
    stop.store(true, Ordering::Relaxed);
    let file = reader.join().unwrap();
    let renewals = tg.operator_get("/v1/agents/audit").await;
    assert_eq!(renewals.status, 200, "{}", renewals.text());

    println!(
        "renewal: {sent} requests in {:?}, {} failed; credential file read {} times, {} \
         credentials seen, {} unreadable reads",
        started.elapsed(),
        failures.len(),
        file.reads,
        file.seen.len(),
        file.bad.len()
    );
    assert!(failures.is_empty(), "{failures:#?}\n{}", tg.logs());
    assert!(sent >= 170, "{sent} requests");
    assert!(
        file.bad.is_empty(),
        "half-written or invalid reads: {:?}",
        file.bad
    );
    // 20 s credentials renewed at about 13.3 s: 6 renewals in 90 s.
    assert!(file.seen.len() >= 6, "{} credentials seen", file.seen.len());
    let exps: Vec<u64> = file.seen.iter().map(|(_, exp)| *exp).collect();
    assert!(exps.windows(2).all(|w| w[0] < w[1]), "expiries {exps:?}");
    // The sessions were kept: no reconnection.
    let connects = tg
        .logs()
        .lines()
        .filter(|l| l.contains("agent connected") && l.contains("onprem-1"))
        .count();
    assert_eq!(connects, 2, "{}", tg.logs());

    // The agent that could not save its renewals: retried loudly, cut at expiry (when the
    // handshake refuses the credential too: 5 s of tolerated skew, in whole seconds), and
    // refused since.
    let cut_at = short_cut_at.expect("the unrenewed session was never cut");
    let cut_after_exp = cut_at - short_exp as f64;
    println!("renewal: unrenewed session cut {cut_after_exp:.2} s after its credential's exp");
    assert!(
        (5.5..8.0).contains(&cut_after_exp),
        "cut {cut_after_exp} s after exp\n{}",
        tg.logs()
    );
    assert!(tg.logs().contains("renewal failed"), "{}", tg.logs());
    let short_logs = short_agent.logs();
    assert!(
        short_logs.contains("cannot write the renewed credential"),
        "{short_logs}"
    );
    assert!(short_logs.contains("\"expired\""), "{short_logs}");

    // One renewal per lifetime, not one per session; no credential in the audit or logs.
    let events = renewals.json()["events"].as_array().cloned().unwrap();
    let renewed = events
        .iter()
        .filter(|e| e["action"] == "agent.renew")
        .count();
    let seen_renewals = file.seen.len() - 1;
    assert!(
        (seen_renewals..=seen_renewals + 1).contains(&renewed),
        "{renewed} renewals audited, {seen_renewals} seen in the file: {}",
        renewals.text()
    );
    assert!(events.iter().all(|e| e["target"] == "agent:onprem-1"));
    let (tg_logs, agent_logs) = (tg.logs(), agent.logs());
    for (text, _) in &file.seen {
        assert!(
            !renewals.text().contains(text.as_str()),
            "credential in the audit"
        );
        assert!(
            !tg_logs.contains(text.as_str()),
            "credential in tollgate's log"
        );
        assert!(
            !agent_logs.contains(text.as_str()),
            "credential in the agent's log"
        );
    }

    // Revoked: its sessions end (at once; at the latest when the credential expires) and the
    // renewed credential no longer connects.
    let revoked_at = Instant::now();
    let r = web_request(
        tg.web,
        "POST",
        "/v1/agents/onprem-1/revoke",
        Some(&tg.operator_token()),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let audit = tg.operator_get("/v1/agents/audit").await.json();
    let revoked = audit["events"].as_array().cloned().unwrap_or_default();
    assert!(
        revoked.iter().any(|e| e["action"] == "agent.revoke"
            && e["target"] == "agent:onprem-1"
            && e["actor"].as_str().is_some_and(|a| !a.is_empty())),
        "the revocation is not audited: {audit:#}"
    );
    assert!(
        wait_connections(&tg, "onprem-1", 0, Duration::from_secs(25)).await,
        "revoked sessions still up\n{}",
        tg.logs()
    );
    println!(
        "renewal: revoked agent's sessions closed after {:?}",
        revoked_at.elapsed()
    );
    let refused = wait_until(Duration::from_secs(20), async || {
        agent.logs().contains("revoked")
    })
    .await;
    assert!(refused, "{}", agent.logs());
    let r = proxy_request(
        tg.proxy,
        "GET",
        &format!("http://{up}/after-revoke"),
        &[("proxy-authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.text());
}
