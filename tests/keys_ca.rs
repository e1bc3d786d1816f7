//! Interception CA rotation end to end (issue 18): before a rotation the leaves chain to the
//! first CA; `POST /v1/keys/ca/rotate` adds a pending CA that `ca export --all` prints with
//! the first; after the switch new leaves (a new host, and a host whose leaf was cached) chain
//! to the new CA only, while a client trusting both sees no failure and an open tunnel keeps
//! its leaf; retiring the first CA leaves one exported. An operator-supplied CA is refused a
//! rotation; offline, a rotation and a retirement change what a restarted server and its
//! relay certificate use (an agent pinned to the old CA reconnects after the rotation); a ring
//! changed on disk (another replica) applies within about a second.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::inproc::*;
use common::tls::*;
use common::{wait_until, web_request, Resp};

/// The certificates of a PEM bundle.
fn certs(pem: &str) -> usize {
    rustls_pemfile_certs(pem).len()
}

/// An intercepted GET through `tg` to `target` (`host:port`), TLS to `name`, trusting the
/// roots in `roots`: the leaf's issuer CN, or why it failed.
async fn get_through(
    tg: &Running,
    target: &str,
    name: &str,
    roots: &str,
) -> Result<String, String> {
    let auth = tg.auth("acme", "alice");
    let tls = connect_tls(tg.proxy, target, &auth, roots, name, &[b"http/1.1"])
        .await
        .map_err(|e| e.to_string())?;
    let issuer = peer_cert(&tls).0;
    let r = read(
        h1(tls)
            .await
            .send_request(get("/ca", &[("host", target)]))
            .await
            .map_err(|e| e.to_string())?,
    )
    .await;
    if r.status != 200 {
        return Err(format!("status {}: {}", r.status, r.text()));
    }
    Ok(issuer)
}

/// Whether `curl --cacert BUNDLE` gets `https://HOST_PORT/curl` through the proxy (a real
/// OpenSSL client reading the bundle, comment lines included); `None` without curl.
async fn curl_ok(tg: &Running, host_port: &str, bundle: &str) -> Option<bool> {
    let which = std::process::Command::new("curl").arg("--version").output();
    if which.is_err() {
        eprintln!("SKIPPED: curl is not installed");
        return None;
    }
    let file = tg.dir.path().join(format!("bundle-{}.pem", bundle.len()));
    std::fs::write(&file, bundle).unwrap();
    let token = tg
        .auth("acme", "alice")
        .trim_start_matches("Bearer ")
        .to_owned();
    let args = vec![
        "-sS".to_string(),
        "--proxy".into(),
        format!("http://127.0.0.1:{}", tg.proxy.port()),
        "--proxy-user".into(),
        format!("alice:{token}"),
        "--cacert".into(),
        file.display().to_string(),
        format!("https://{host_port}/curl"),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    Some(out.status.success())
}

async fn operator(tg: &Running, method: &str, path: &str) -> Resp {
    web_request(tg.web, method, path, Some(&tg.operator_token()), None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_ca_signs_new_leaves_after_the_switch_with_no_failure_for_clients_trusting_both()
{
    let up_ca = test_ca(UPSTREAM_CA_CN);
    let up = tls_upstream(&up_ca).await;
    let tg = start(&up_ca, always()).await;
    let cached = format!("localhost:{}", up.addr.port());
    let fresh = format!("127.0.0.1:{}", up.addr.port());

    // Before: one CA, and the leaves chain to it.
    let ca1 = tg.exported_ca();
    assert_eq!(certs(&ca1), 1);
    assert_eq!(certs(&tg.ca_export(&["--all"])), 1);
    let issuer1 = get_through(&tg, &cached, "localhost", &ca1).await.unwrap();
    assert_eq!(issuer1, "tollgate interception CA");
    let keys = operator(&tg, "GET", "/v1/keys").await;
    assert_eq!(keys.status, 200, "{}", keys.text());
    let kid1 = keys.json()["ca"][0]["kid"].as_str().unwrap().to_owned();
    assert_eq!(keys.json()["ca"][0]["state"], "signing");

    // Only operators rotate.
    let admin = web_request(
        tg.web,
        "POST",
        "/v1/keys/ca/rotate",
        Some(tg.auth("acme", "alice").trim_start_matches("Bearer ")),
        None,
    )
    .await;
    assert_eq!(admin.status, 403, "{}", admin.text());

    // A tunnel opened before the rotation, used again after the switch.
    let auth = tg.auth("acme", "alice");
    let open = connect_tls(tg.proxy, &cached, &auth, &ca1, "localhost", &[b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(peer_cert(&open).0, issuer1);
    let mut open = h1(open).await;

    // Rotate: the new CA is pending for 3 s; both are exported, the old one still signs.
    let r = operator(&tg, "POST", "/v1/keys/ca/rotate?switch_after=3").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let kid2 = r.json()["kid"].as_str().unwrap().to_owned();
    assert_ne!(kid2, kid1);
    let both = tg.ca_export(&["--all"]);
    assert_eq!(certs(&both), 2, "{both}");
    assert!(
        both.contains(&format!("kid={kid1} state=signing")),
        "{both}"
    );
    assert!(
        both.contains(&format!("kid={kid2} state=pending")),
        "{both}"
    );
    assert_eq!(
        tg.exported_ca(),
        ca1,
        "`ca export` prints the CA that signs"
    );
    let again = operator(&tg, "POST", "/v1/keys/ca/rotate").await;
    assert_eq!(again.status, 409, "{}", again.text());
    assert!(again.text().contains("pending"), "{}", again.text());
    // The new CA alone, as a client trusting only it has it.
    let ca2 = both
        .split("# ")
        .find(|part| part.contains(&format!("kid={kid2}")))
        .unwrap()
        .to_owned();
    assert_eq!(certs(&ca2), 1);

    // A client trusting both sends requests throughout the switch.
    let tg = Arc::new(tg);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let client = {
        let (tg, stop, ok, failed) = (tg.clone(), stop.clone(), ok.clone(), failed.clone());
        let (cached, both) = (cached.clone(), both.clone());
        tokio::spawn(async move {
            let mut issuers = std::collections::BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                match get_through(&tg, &cached, "localhost", &both).await {
                    Ok(issuer) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        issuers.insert(issuer);
                    }
                    Err(e) => {
                        eprintln!("client trusting both: {e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            issuers
        })
    };

    // After the switch: a new leaf for the cached host (the cache was flushed) and for a new
    // host chain to the new CA, and not to the old one.
    let switched = wait_until(Duration::from_secs(15), async || {
        get_through(&tg, &cached, "localhost", &ca2).await.is_ok()
    })
    .await;
    assert!(switched, "no leaf chained to the new CA within 15 s");
    let issuer2 = get_through(&tg, &cached, "localhost", &ca2).await.unwrap();
    assert!(
        issuer2.starts_with("tollgate interception CA "),
        "{issuer2}"
    );
    assert!(get_through(&tg, &cached, "localhost", &ca1).await.is_err());
    assert_eq!(
        get_through(&tg, &fresh, "127.0.0.1", &ca2).await.unwrap(),
        issuer2
    );
    let old_root = get_through(&tg, &fresh, "127.0.0.1", &ca1).await;
    assert!(old_root.is_err(), "a new host's leaf chained to the old CA");
    assert_eq!(
        tg.leaves.ca().cert_der(),
        &rustls_pemfile_certs(&ca2)[0],
        "the leaf cache signs with the new CA"
    );
    // The tunnel opened before the rotation keeps its leaf and works.
    let r = read(
        open.send_request(get("/kept", &[("host", &cached)]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // curl agrees: the bundle of both works, the old CA alone no longer does.
    if let Some(ok) = curl_ok(&tg, &cached, &both).await {
        assert!(ok, "curl --cacert (both CAs) failed");
        assert_eq!(curl_ok(&tg, &cached, &ca1).await, Some(false));
    }

    // Let the client run a little after the switch, then count.
    let before = ok.load(Ordering::Relaxed);
    assert!(
        wait_until(Duration::from_secs(10), async || ok.load(Ordering::Relaxed)
            >= before + 5)
        .await
    );
    stop.store(true, Ordering::Relaxed);
    let issuers = client.await.unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("client trusting both: {ok} requests across the switch, {failed} failed");
    assert_eq!(failed, 0);
    assert!(
        issuers.contains(&issuer1) && issuers.contains(&issuer2),
        "{issuers:?}"
    );

    // `ca export` now prints the new CA; `keys list` names both.
    assert_eq!(certs(&tg.exported_ca()), 1);
    assert_eq!(
        rustls_pemfile_certs(&tg.exported_ca()),
        rustls_pemfile_certs(&ca2)
    );
    let keys = operator(&tg, "GET", "/v1/keys").await.json();
    let states: Vec<(&str, &str)> = keys["ca"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["kid"].as_str().unwrap(), k["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [(kid1.as_str(), "trusted"), (kid2.as_str(), "signing")]
    );

    // The signing CA cannot be retired; the old one can, and is no longer exported.
    let r = operator(&tg, "POST", &format!("/v1/keys/{kid2}/retire")).await;
    assert_eq!(r.status, 409, "{}", r.text());
    let r = operator(&tg, "POST", &format!("/v1/keys/{kid1}/retire")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let after = tg.ca_export(&["--all"]);
    assert_eq!(certs(&after), 1, "{after}");
    assert!(
        after.contains(&format!("kid={kid2} state=signing")),
        "{after}"
    );
    assert!(!after.contains(&kid1), "{after}");
    assert_eq!(
        get_through(&tg, &fresh, "127.0.0.1", &after).await.unwrap(),
        issuer2
    );
    // Audited, in the operator's org.
    let key = std::fs::read_to_string(tg.data().join("keys/identity.key")).unwrap();
    let ops_admin = tollgate::identity::mint(
        &tollgate::identity::IdentityKey::from_bytes(key.trim().as_bytes()),
        "ops",
        "auditor",
        &["admin".to_string()],
        Duration::from_secs(600),
    )
    .unwrap();
    let audit = web_request(tg.web, "GET", "/v1/audit", Some(&ops_admin), None)
        .await
        .text();
    assert!(audit.contains(&format!("key:{kid2}")), "{audit}");
    assert!(audit.contains("key.retire"), "{audit}");
}

#[tokio::test]
async fn an_operator_supplied_ca_is_rotated_by_pointing_at_a_new_pair() {
    let up_ca = test_ca(UPSTREAM_CA_CN);
    let operator_ca = test_ca("Operator Interception CA");
    let files = tempfile::tempdir().unwrap();
    let (cert, key) = write_ca(files.path(), "operator", &operator_ca);
    let tg = start_with(&up_ca, always(), move |o| {
        o.ca_cert = Some(cert);
        o.ca_key = Some(key);
    })
    .await;
    let r = operator(&tg, "POST", "/v1/keys/ca/rotate").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("--ca-cert"), "{}", r.text());
    let keys = operator(&tg, "GET", "/v1/keys").await;
    assert_eq!(keys.json()["ca"], serde_json::json!([]), "{}", keys.text());
}

/// `tollgate ARGS` (offline commands): stdout, or a panic with stderr.
fn cli(args: &[&str]) -> String {
    let out = std::process::Command::new(common::bin())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tollgate {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Whether a TLS handshake with the relay listener succeeds trusting only `root`.
async fn relay_trusts(relay: std::net::SocketAddr, root: &str) -> bool {
    let Ok(tcp) = tokio::net::TcpStream::connect(relay).await else {
        return false;
    };
    let connector = tokio_rustls::TlsConnector::from(client_config(root, &[]));
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    connector.connect(name, tcp).await.is_ok()
}

#[tokio::test]
async fn offline_rotation_and_retirement_and_the_relay_certificate_across_restarts() {
    use common::agent::{start_agent, start_tollgate, wait_connections, KEEPALIVE};
    let (tg, relay) = start_tollgate(&[]);
    let relay_args = [
        "--relay-listen".to_string(),
        relay.to_string(),
        "--relay-keepalive".to_string(),
        KEEPALIVE.to_string(),
    ];
    let relay_args: Vec<&str> = relay_args.iter().map(String::as_str).collect();
    let data_of = |dir: &tempfile::TempDir| dir.path().join("data").display().to_string();
    let ca1 = cli(&["ca", "export", "--data", &tg.data.display().to_string()]);
    assert!(
        wait_until(Duration::from_secs(10), async || relay_trusts(relay, &ca1)
            .await)
        .await
    );
    // An agent that pinned the first CA (`--ca-file` with `ca/ca.pem`).
    let agent = start_agent(&tg, relay, &["127.0.0.0/8"], &[]);
    assert!(
        wait_connections(&tg, "onprem-1", 2, Duration::from_secs(20)).await,
        "agent did not connect: {}",
        agent.logs()
    );

    // Offline: a rotation that switches at once.
    let dir = tg.stop_keep_dir();
    let data = data_of(&dir);
    let out = cli(&[
        "keys",
        "rotate",
        "ca",
        "--switch-after",
        "0s",
        "--data",
        &data,
    ]);
    assert!(out.contains("rotated: CA"), "{out}");
    let list: serde_json::Value =
        serde_json::from_str(&cli(&["keys", "list", "--json", "--data", &data])).unwrap();
    let cas = list["ca"].as_array().unwrap();
    assert_eq!(cas.len(), 2, "{list}");
    let (kid1, kid2) = (
        cas[0]["kid"].as_str().unwrap().to_owned(),
        cas[1]["kid"].as_str().unwrap().to_owned(),
    );
    assert_eq!(cas[0]["state"], "trusted");
    assert_eq!(cas[1]["state"], "signing");
    let ca2 = cli(&["ca", "export", "--data", &data]);
    assert_ne!(ca2, ca1);
    let both = cli(&["ca", "export", "--all", "--data", &data]);
    assert_eq!(certs(&both), 2);

    // Restarted: the relay keeps a certificate of the oldest CA not retired, so agents that
    // pinned it keep connecting; a client of the new CA alone does not (it needs both).
    let tg = common::Tollgate::start_in(dir, &relay_args);
    assert!(
        wait_until(Duration::from_secs(10), async || relay_trusts(relay, &ca1)
            .await)
        .await
    );
    assert!(!relay_trusts(relay, &ca2).await);
    assert!(relay_trusts(relay, &both).await);
    // The agent pinned to the first CA connects again to the restarted server.
    assert!(
        wait_connections(&tg, "onprem-1", 2, Duration::from_secs(30)).await,
        "the agent pinned to the old CA did not reconnect after the rotation: {}",
        agent.logs()
    );

    // Retired offline, then restarted: the relay's certificate is the new CA's.
    let dir = tg.stop_keep_dir();
    let data = data_of(&dir);
    cli(&["keys", "retire", &kid1, "--data", &data]);
    let out = std::process::Command::new(common::bin())
        .args(["keys", "retire", &kid2, "--data", &data])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the signing CA was retired");
    assert_eq!(
        cli(&["ca", "export", "--all", "--data", &data])
            .matches("BEGIN")
            .count(),
        1
    );
    let _tg = common::Tollgate::start_in(dir, &relay_args);
    assert!(
        wait_until(Duration::from_secs(10), async || relay_trusts(relay, &ca2)
            .await)
        .await
    );
    assert!(!relay_trusts(relay, &ca1).await);
}

#[tokio::test]
async fn a_running_server_follows_a_ca_ring_changed_on_disk_within_a_second_or_two() {
    let up_ca = test_ca(UPSTREAM_CA_CN);
    let up = tls_upstream(&up_ca).await;
    let tg = start(&up_ca, always()).await;
    let target = format!("localhost:{}", up.addr.port());
    let ca1 = tg.exported_ca();
    get_through(&tg, &target, "localhost", &ca1).await.unwrap();
    // Another replica sharing the data directory rotates, switching at once.
    let dir = tollgate::keys::ca_ring::ca_dir(&tg.data());
    let mut ring = tollgate::keys::CaRing::load(&dir).unwrap();
    let now = tollgate::clock::Clock::system().now().unwrap();
    ring.rotate_after(now, 0).unwrap();
    let ca2 = tg.exported_ca();
    let started = std::time::Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), async || {
            get_through(&tg, &target, "localhost", &ca2).await.is_ok()
        })
        .await
    );
    let took = started.elapsed();
    eprintln!("CA ring change on disk applied after {took:?}");
    assert!(took < Duration::from_millis(2500), "{took:?}");
}
