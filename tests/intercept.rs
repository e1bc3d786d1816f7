//! HTTPS interception, in-process (`common::inproc`): interception forced for chosen hosts (the
//! predicate token injection provides), a loopback TLS upstream with its own test CA, and
//! clients that trust the tollgate CA exported by the real `tollgate ca export`.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::inproc::*;
use common::tls::*;
use common::{assert_proxy_error, proxy_connect};
use tollgate::identity::Caller;
use tollgate::policy::Host;

/// Everything most tests start from.
struct Intercepting {
    /// A TLS upstream whose CA tollgate trusts (`--upstream-ca-file`).
    up: Upstream,
    /// tollgate intercepting every `CONNECT`.
    tg: Running,
    /// tollgate's CA, which the client must trust.
    ca: String,
    /// The caller's `Proxy-Authorization` (org acme).
    auth: String,
    /// The upstream as `localhost:PORT`.
    target: String,
}

/// An intercepting tollgate in front of a trusted TLS upstream, for `user` of org acme.
async fn intercepting(user: &str) -> Intercepting {
    let up_ca = test_ca(UPSTREAM_CA_CN);
    let up = tls_upstream(&up_ca).await;
    let tg = start(&up_ca, always()).await;
    Intercepting {
        ca: tg.exported_ca(),
        auth: tg.auth("acme", user),
        target: format!("localhost:{}", up.addr.port()),
        up,
        tg,
    }
}

#[tokio::test]
async fn http1_and_http2_inside_an_intercepted_tunnel_reach_the_upstream() {
    let Intercepting {
        up,
        tg,
        ca,
        auth,
        target,
    } = intercepting("alice").await;

    // HTTP/1.1 inside.
    let tls = connect_tls(tg.proxy, &target, &auth, &ca, "localhost", &[b"http/1.1"])
        .await
        .unwrap();
    let (issuer, san) = peer_cert(&tls);
    assert_eq!(issuer, TOLLGATE_CA_CN, "the client sees tollgate's leaf");
    assert_eq!(san, "[DNSName(\"localhost\")]");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut send = h1(tls).await;
    for i in 0..3 {
        let r = read(
            send.send_request(get(
                &format!("/h1/{i}?q=1"),
                &[
                    ("host", &target),
                    ("connection", "keep-alive"),
                    ("x-keep", "1"),
                ],
            ))
            .await
            .unwrap(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let echo = r.json();
        assert_eq!(echo["uri"], format!("https://{target}/h1/{i}?q=1"));
        assert_eq!(echo["alpn"], "h2", "HTTP/2 upstream when it offers it");
        assert_eq!(echo["version"], "HTTP/2.0");
        assert_eq!(echo["authority"], target);
        assert_eq!(echo["headers"]["x-keep"], "1");
        assert!(echo["headers"].get("connection").is_none());
    }
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        1,
        "the connection dialed before the 200 became the pooled upstream connection"
    );

    // HTTP/2 inside, several streams at once.
    let tls = connect_tls(tg.proxy, &target, &auth, &ca, "localhost", &[b"h2"])
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let send = h2(tls).await;
    let requests = (0..4).map(|i| {
        let mut send = send.clone();
        let uri = format!("https://{target}/h2/{i}");
        async move {
            let r = read(send.send_request(get(&uri, &[])).await.unwrap()).await;
            assert_eq!(r.status, 200, "{}", r.text());
            let echo = r.json();
            assert_eq!(echo["uri"], uri);
            assert_eq!(echo["method"], "GET");
        }
    });
    futures_util::future::join_all(requests).await;
    assert_eq!(
        tg.leaves.mints(),
        1,
        "both connections used the cached leaf"
    );
}

#[tokio::test]
async fn leaf_cache_is_reused_and_ip_literals_get_an_ip_san() {
    let Intercepting {
        up,
        tg,
        ca,
        auth,
        target: by_name,
    } = intercepting("alice").await;
    for _ in 0..3 {
        let tls = connect_tls(tg.proxy, &by_name, &auth, &ca, "localhost", &[b"http/1.1"])
            .await
            .unwrap();
        let r = read(
            h1(tls)
                .await
                .send_request(get("/", &[("host", &by_name)]))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(tg.leaves.mints(), 1, "three connections, one mint");

    let by_ip = up.addr.to_string();
    let tls = connect_tls(tg.proxy, &by_ip, &auth, &ca, "127.0.0.1", &[b"http/1.1"])
        .await
        .unwrap();
    let (issuer, san) = peer_cert(&tls);
    assert_eq!(issuer, TOLLGATE_CA_CN);
    assert_eq!(san, "[IPAddress([127, 0, 0, 1])]");
    let r = read(
        h1(tls)
            .await
            .send_request(get("/ip", &[("host", &by_ip)]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["uri"], format!("https://{by_ip}/ip"));
    assert_eq!(tg.leaves.mints(), 2);
    assert_eq!(tg.leaves.len(), 2);
}

#[tokio::test]
async fn host_mismatch_is_421_and_the_connection_stays_usable() {
    let Intercepting {
        up,
        tg,
        ca,
        auth,
        target,
    } = intercepting("alice").await;

    let tls = connect_tls(tg.proxy, &target, &auth, &ca, "localhost", &[b"http/1.1"])
        .await
        .unwrap();
    let mut send = h1(tls).await;
    let other = format!("other.example:{}", up.addr.port());
    let r = get_host(&mut send, "/", &other).await;
    let body = assert_proxy_error(&r, 421, "misdirected_request");
    assert!(
        body["message"].as_str().unwrap().contains("other.example"),
        "{body}"
    );
    // Same host, other port.
    let r = get_host(&mut send, "/", "localhost").await;
    assert_proxy_error(&r, 421, "misdirected_request");
    let r = get_host(&mut send, "/fine", &target).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.connections.load(Ordering::SeqCst), 1);

    // HTTP/2: the :authority decides.
    let tls = connect_tls(tg.proxy, &target, &auth, &ca, "localhost", &[b"h2"])
        .await
        .unwrap();
    let mut send = h2(tls).await;
    let r = read(
        send.send_request(get(&format!("https://{other}/"), &[]))
            .await
            .unwrap(),
    )
    .await;
    assert_proxy_error(&r, 421, "misdirected_request");
    let r = read(
        send.send_request(get(&format!("https://{target}/ok"), &[]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// An inner request whose Host names port 0 or one above 65535 is `400 bad_request`, not a
/// request to 443 (it used to read as the tunnel's default), and the connection stays usable.
#[tokio::test]
async fn inner_host_port_out_of_range_is_400_bad_request() {
    let Intercepting {
        up,
        tg,
        ca,
        auth,
        target,
    } = intercepting("alice").await;

    let tls = connect_tls(tg.proxy, &target, &auth, &ca, "localhost", &[b"http/1.1"])
        .await
        .unwrap();
    let mut send = h1(tls).await;
    for host in ["localhost:0", "localhost:99999", "localhost:65536"] {
        let r = get_host(&mut send, "/", host).await;
        assert_proxy_error(&r, 400, "bad_request");
    }
    let r = get_host(&mut send, "/fine", &target).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn connect_not_selected_is_a_blind_tunnel_with_the_upstream_certificate() {
    let up_ca = test_ca(UPSTREAM_CA_CN);
    let up = tls_upstream(&up_ca).await;
    // Intercept only another port: this CONNECT must stay blind.
    let port = up.addr.port();
    let tg = start(
        &up_ca,
        Arc::new(move |_: &Caller, _: &Host, p: u16| p != port),
    )
    .await;
    let auth = tg.auth("acme", "alice");
    let target = format!("localhost:{port}");
    let tls = connect_tls(tg.proxy, &target, &auth, &up_ca.pem, "localhost", &[b"h2"])
        .await
        .unwrap();
    let (issuer, _) = peer_cert(&tls);
    assert_eq!(
        issuer, UPSTREAM_CA_CN,
        "the client sees the upstream's own certificate"
    );
    let mut send = h2(tls).await;
    let r = read(
        send.send_request(get(&format!("https://{target}/blind"), &[]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["uri"], format!("https://{target}/blind"));
    assert_eq!(tg.leaves.mints(), 0, "nothing was minted");
    // And a client trusting only the tollgate CA cannot talk to it: nothing is intercepted.
    let err = connect_tls(
        tg.proxy,
        &target,
        &auth,
        &tg.exported_ca(),
        "localhost",
        &[b"h2"],
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn untrusted_upstream_certificate_is_502_tls_certificate_error() {
    let trusted = test_ca(UPSTREAM_CA_CN);
    let rogue = test_ca("rogue CA");
    let up = tls_upstream(&rogue).await;
    let tg = start(&trusted, always()).await;
    let ca = tg.exported_ca();
    let auth = tg.auth("acme", "alice");
    let target = format!("localhost:{}", up.addr.port());
    let tls = connect_tls(tg.proxy, &target, &auth, &ca, "localhost", &[b"http/1.1"])
        .await
        .unwrap();
    let r = read(
        h1(tls)
            .await
            .send_request(get("/", &[("host", &target)]))
            .await
            .unwrap(),
    )
    .await;
    let body = assert_proxy_error(&r, 502, "tls_certificate_error");
    let ps = r.header("proxy-status").unwrap();
    assert!(ps.contains("error=tls_certificate_error"), "{ps}");
    assert!(ps.contains("UnknownIssuer"), "{ps}");
    assert!(
        body["message"].as_str().unwrap().contains("certificate"),
        "{body}"
    );
}

#[tokio::test]
async fn intercepted_connect_dials_first_and_the_guard_applies() {
    let up_ca = test_ca(UPSTREAM_CA_CN);
    let tg = start(&up_ca, always()).await;
    let acme = tg.auth("acme", "alice");
    // Nothing listens: the CONNECT itself fails, before any TLS.
    let closed = common::closed_port();
    let (r, tunnel) = proxy_connect(
        tg.proxy,
        &format!("localhost:{closed}"),
        &[("proxy-authorization", &acme)],
    )
    .await;
    assert!(tunnel.is_none());
    assert_proxy_error(&r, 502, "connection_refused");
    // beta's rule for localhost is not private: the guard refuses loopback.
    let up = tls_upstream(&up_ca).await;
    let beta = tg.auth("beta", "bob");
    let (r, _) = proxy_connect(
        tg.proxy,
        &format!("localhost:{}", up.addr.port()),
        &[("proxy-authorization", &beta)],
    )
    .await;
    assert_proxy_error(&r, 403, "destination_ip_prohibited");
    assert_eq!(tg.leaves.mints(), 0);
}

#[tokio::test]
async fn inner_requests_are_rewritten_and_logged_one_line_each_then_the_connect() {
    let log = access_log();
    let Intercepting {
        up: _up,
        tg,
        ca,
        auth,
        target,
    } = intercepting("inner-user").await;
    let tls = connect_tls(tg.proxy, &target, &auth, &ca, "localhost", &[b"http/1.1"])
        .await
        .unwrap();
    let mut send = h1(tls).await;
    let r = read(
        send.send_request(get(
            "/api?x=1",
            &[("host", &target), ("authorization", "Bearer client-own")],
        ))
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.json();
    assert_eq!(echo["uri"], format!("https://{target}/api?x=1"));
    assert_eq!(
        echo["headers"]["authorization"], "Bearer client-own",
        "no app is bound to the host: the client's own header passes"
    );
    let r = get_host(&mut send, "/other", "elsewhere.example").await;
    assert_proxy_error(&r, 421, "misdirected_request");
    drop(send);

    // One access line per inner request, then the CONNECT's when the tunnel closes.
    common::wait_until(Duration::from_secs(10), async || {
        log_lines(&log, "inner-user")
            .iter()
            .any(|l| l["method"] == "CONNECT")
    })
    .await;
    let lines = log_lines(&log, "inner-user");
    let inner: Vec<_> = lines.iter().filter(|l| l["method"] == "GET").collect();
    assert_eq!(inner.len(), 2, "{lines:?}");
    assert_eq!(inner[0]["status"], 200);
    assert_eq!(inner[0]["injected"], false);
    assert_eq!(inner[0]["app"], serde_json::Value::Null);
    assert_eq!(inner[0]["host"], "localhost");
    assert!(inner[0]["bytes_down"].as_u64().unwrap() > 0);
    assert_eq!(inner[1]["status"], 421);
    assert_eq!(inner[1]["injected"], false);
    let connect: Vec<_> = lines.iter().filter(|l| l["method"] == "CONNECT").collect();
    assert_eq!(connect.len(), 1, "{lines:?}");
    assert_eq!(connect[0]["status"], 200);
    assert!(connect[0]["bytes_up"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn real_curl_through_an_intercepted_tunnel() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("SKIPPED: curl is not installed");
        return;
    }
    let up_ca = test_ca(UPSTREAM_CA_CN);
    let up = tls_upstream(&up_ca).await;
    let tg = start(&up_ca, always()).await;
    let ca_path = tg.dir.path().join("exported-ca.pem");
    std::fs::write(&ca_path, tg.exported_ca()).unwrap();
    let token = tg
        .auth("acme", "alice")
        .trim_start_matches("Bearer ")
        .to_string();
    let proxy = format!("http://127.0.0.1:{}", tg.proxy.port());
    let url = format!("https://localhost:{}/via-curl?x=1", up.addr.port());
    let run = |extra: &[&str], ca: &Path| {
        let mut args: Vec<String> = vec![
            "-sS".into(),
            "--proxy".into(),
            proxy.clone(),
            "--proxy-user".into(),
            format!("alice:{token}"),
            "--cacert".into(),
            ca.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(url.clone());
        tokio::task::spawn_blocking(move || Command::new("curl").args(args).output().unwrap())
    };
    for version in ["--http1.1", "--http2"] {
        let out = run(&[version], &ca_path).await.unwrap();
        assert!(
            out.status.success(),
            "{version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["uri"], url, "{version}");
        assert!(v["headers"].get("proxy-authorization").is_none());
    }
    // Without the tollgate CA, curl refuses the intercepted connection.
    let other = tg.dir.path().join("upstream-ca.pem");
    let out = run(&[], &other).await.unwrap();
    assert!(!out.status.success());
}

#[tokio::test]
async fn an_operator_supplied_ca_signs_the_leaves() {
    let up_ca = test_ca(UPSTREAM_CA_CN);
    let up = tls_upstream(&up_ca).await;
    let operator = test_ca("Operator Interception CA");
    let files = tempfile::tempdir().unwrap();
    let (cert, key) = write_ca(files.path(), "operator", &operator);
    let (c, k) = (cert.clone(), key.clone());
    let tg = start_with(&up_ca, always(), move |o| {
        o.ca_cert = Some(c);
        o.ca_key = Some(k);
    })
    .await;
    // `ca export` prints the operator's CA when told about it (TOLLGATE_CA_CERT as serve).
    let out = Command::new(common::bin())
        .args(["ca", "export", "--data"])
        .arg(tg.data())
        .env("TOLLGATE_CA_CERT", &cert)
        .output()
        .unwrap();
    assert!(out.status.success());
    let exported = String::from_utf8(out.stdout).unwrap();
    assert_eq!(exported, operator.pem);
    let auth = tg.auth("acme", "alice");
    let target = format!("localhost:{}", up.addr.port());
    let tls = connect_tls(
        tg.proxy,
        &target,
        &auth,
        &exported,
        "localhost",
        &[b"http/1.1"],
    )
    .await
    .unwrap();
    assert_eq!(peer_cert(&tls).0, "Operator Interception CA");
    let r = read(
        h1(tls)
            .await
            .send_request(get("/op", &[("host", &target)]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn serve_refuses_half_or_bad_operator_ca_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let serve = |args: &[&std::ffi::OsStr]| {
        Command::new(common::bin())
            .arg("serve")
            .arg("--data")
            .arg(dir.path().join("data"))
            .arg("--policies")
            .arg(dir.path().join("policies"))
            .args([
                "--proxy-listen",
                "127.0.0.1:0",
                "--web-listen",
                "127.0.0.1:0",
            ])
            .args(args)
            .output()
            .unwrap()
    };
    let good = test_ca("good");
    let (cert, _key) = write_ca(dir.path(), "good", &good);
    let out = serve(&["--ca-cert".as_ref(), cert.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--ca-cert needs --ca-key"), "{err}");

    let not_ca = ca_with("not a CA", false);
    let (bad_cert, bad_key) = write_ca(dir.path(), "not-ca", &not_ca);
    let out = serve(&[
        "--ca-cert".as_ref(),
        bad_cert.as_os_str(),
        "--ca-key".as_ref(),
        bad_key.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not-ca.pem: not a CA certificate"), "{err}");

    // The key of another CA.
    let out = serve(&[
        "--ca-cert".as_ref(),
        cert.as_os_str(),
        "--ca-key".as_ref(),
        bad_key.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not belong to the certificate"), "{err}");
}

/// `GET path` with `Host: host` on an HTTP/1.1 sender inside a tunnel, read whole.
async fn get_host(
    send: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    path: &str,
    host: &str,
) -> common::Resp {
    read(
        send.send_request(get(path, &[("host", host)]))
            .await
            .unwrap(),
    )
    .await
}
