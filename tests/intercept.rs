//! HTTPS interception, in-process: the library's `Server` on 127.0.0.1:0 with interception
//! forced for chosen hosts (the predicate token injection will provide), a loopback TLS
//! upstream with its own test CA, and clients that trust the tollgate CA exported by the real
//! `tollgate ca export`.

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use common::{assert_proxy_error, proxy_connect, Resp};
use tollgate::config::{Config, ServeOverrides};
use tollgate::identity::Caller;
use tollgate::policy::Host;
use tollgate::proxy::intercept::InterceptPredicate;
use tollgate::server::Server;
use tollgate::tls::LeafCache;

const POLICY: &str = r#"
[[policy]]
name = "acme-loopback"
orgs = ["acme"]
route = "direct"

  [[policy.allow]]
  cidrs = ["127.0.0.0/8"]
  ports = ["1024-65535"]

  [[policy.allow]]
  hosts = ["localhost"]
  ports = ["1024-65535"]
  private = true

[[policy]]
name = "beta-public"
orgs = ["beta"]
route = "direct"

  [[policy.allow]]
  hosts = ["localhost"]
  ports = ["1024-65535"]
"#;

const TOLLGATE_CA_CN: &str = "tollgate interception CA";
const UPSTREAM_CA_CN: &str = "upstream test CA";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A CA made by the test: certificate PEM, key PEM (PKCS#8), signer.
struct TestCa {
    pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn test_ca(cn: &str) -> TestCa {
    ca_with(cn, true)
}

fn ca_with(cn: &str, is_ca: bool) -> TestCa {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    if is_ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    }
    let cert = params.self_signed(&key).unwrap();
    TestCa {
        pem: cert.pem(),
        key_pem: key.serialize_pem(),
        issuer: Issuer::new(params, key),
    }
}

/// Writes `ca` as `NAME.pem` and `NAME.key` (mode 0600) in `dir`.
fn write_ca(dir: &Path, name: &str, ca: &TestCa) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, &ca.pem).unwrap();
    std::fs::write(&key, &ca.key_pem).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    (cert, key)
}

/// A loopback TLS upstream (ALPN h2 + http/1.1) with a certificate for `localhost` and
/// `127.0.0.1` signed by `ca`. It echoes what it received as JSON and counts TCP connections.
struct Upstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

async fn tls_upstream(ca: &TestCa) -> Upstream {
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let alpn = tls
                    .get_ref()
                    .1
                    .alpn_protocol()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .unwrap_or_default();
                let svc = hyper::service::service_fn(move |req| echo(req, alpn.clone()));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Upstream { addr, connections }
}

async fn echo(req: Request<Incoming>, alpn: String) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut headers = BTreeMap::new();
    for (k, v) in req.headers() {
        headers.insert(k.as_str().to_string(), v.to_str().unwrap_or("").to_string());
    }
    let out = serde_json::json!({
        "method": req.method().to_string(),
        "uri": req.uri().to_string(),
        "authority": req.uri().authority().map(|a| a.to_string()),
        "version": format!("{:?}", req.version()),
        "alpn": alpn,
        "headers": headers,
        "body": String::from_utf8_lossy(&req.into_body().collect().await.unwrap().to_bytes()),
    });
    let mut resp = Response::new(Full::new(Bytes::from(out.to_string())));
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    Ok(resp)
}

/// tollgate running in-process.
struct Running {
    proxy: SocketAddr,
    dir: tempfile::TempDir,
    leaves: Arc<LeafCache>,
    shutdown: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Running {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn auth(&self, org: &str, user: &str) -> String {
        let key = std::fs::read_to_string(self.data().join("keys/identity.key")).unwrap();
        let token = tollgate::identity::mint(
            &tollgate::identity::IdentityKey::from_bytes(key.trim().as_bytes()),
            org,
            user,
            &[],
            Duration::from_secs(3600),
        );
        format!("Bearer {token}")
    }

    /// The tollgate CA as a client gets it: `tollgate ca export`.
    fn exported_ca(&self) -> String {
        let out = Command::new(common::bin())
            .args(["ca", "export", "--data"])
            .arg(self.data())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// Starts tollgate trusting `upstream_ca` (as `--upstream-ca-file`), intercepting the
/// CONNECTs `predicate` selects.
async fn start(upstream_ca: &TestCa, predicate: InterceptPredicate) -> Running {
    start_with(upstream_ca, predicate, |_| {}).await
}

/// [`start`], with the overrides adjusted by `adjust`.
async fn start_with(
    upstream_ca: &TestCa,
    predicate: InterceptPredicate,
    adjust: impl FnOnce(&mut ServeOverrides),
) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("10-test.toml"), POLICY).unwrap();
    let ca_file = dir.path().join("upstream-ca.pem");
    std::fs::write(&ca_file, &upstream_ca.pem).unwrap();
    let mut over = ServeOverrides {
        data: Some(dir.path().join("data")),
        policies: Some(policies),
        proxy_listen: Some("127.0.0.1:0".into()),
        web_listen: Some("127.0.0.1:0".into()),
        upstream_ca_file: Some(ca_file),
        ..Default::default()
    };
    adjust(&mut over);
    let mut server = Server::bind(Config::resolve(&over).unwrap()).await.unwrap();
    server.intercept_when(predicate);
    let proxy = server.proxy_addr;
    let leaves = server.leaf_cache();
    let shutdown = CancellationToken::new();
    tokio::spawn(server.run(shutdown.clone()));
    Running {
        proxy,
        dir,
        leaves,
        shutdown,
    }
}

fn always() -> InterceptPredicate {
    Arc::new(|_: &Caller, _: &Host, _: u16| true)
}

fn client_config(root_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(root_pem) {
        roots.add(cert).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

fn rustls_pemfile_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(Result::unwrap)
        .collect()
}

type Tls = tokio_rustls::client::TlsStream<TokioIo<hyper::upgrade::Upgraded>>;

/// CONNECT `target` through the proxy, then TLS with `server_name`, trusting `root_pem`.
async fn connect_tls(
    proxy: SocketAddr,
    target: &str,
    auth: &str,
    root_pem: &str,
    server_name: &str,
    alpn: &[&[u8]],
) -> Result<Tls, std::io::Error> {
    let (r, tunnel) = proxy_connect(proxy, target, &[("proxy-authorization", auth)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let connector = tokio_rustls::TlsConnector::from(client_config(root_pem, alpn));
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    connector.connect(name, tunnel.unwrap()).await
}

/// The peer certificate's issuer CN and SAN list, as text.
fn peer_cert(tls: &Tls) -> (String, String) {
    let der = &tls.get_ref().1.peer_certificates().unwrap()[0];
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let issuer = cert
        .issuer()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    let san = cert
        .subject_alternative_name()
        .unwrap()
        .map(|s| format!("{:?}", s.value.general_names))
        .unwrap_or_default();
    (issuer, san)
}

async fn read(resp: Response<Incoming>) -> Resp {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Resp {
        status,
        headers,
        body,
    }
}

fn get(uri: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::builder().uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

/// An HTTP/1.1 sender over `tls`.
async fn h1(tls: Tls) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// An HTTP/2 sender over `tls`.
async fn h2(tls: Tls) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

#[tokio::test]
async fn http1_and_http2_inside_an_intercepted_tunnel_reach_the_upstream() {
    let up_ca = test_ca(UPSTREAM_CA_CN);
    let up = tls_upstream(&up_ca).await;
    let tg = start(&up_ca, always()).await;
    let ca = tg.exported_ca();
    let auth = tg.auth("acme", "alice");
    let target = format!("localhost:{}", up.addr.port());

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
    let up_ca = test_ca(UPSTREAM_CA_CN);
    let up = tls_upstream(&up_ca).await;
    let tg = start(&up_ca, always()).await;
    let ca = tg.exported_ca();
    let auth = tg.auth("acme", "alice");
    let by_name = format!("localhost:{}", up.addr.port());
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
    let up_ca = test_ca(UPSTREAM_CA_CN);
    let up = tls_upstream(&up_ca).await;
    let tg = start(&up_ca, always()).await;
    let ca = tg.exported_ca();
    let auth = tg.auth("acme", "alice");
    let target = format!("localhost:{}", up.addr.port());

    let tls = connect_tls(tg.proxy, &target, &auth, &ca, "localhost", &[b"http/1.1"])
        .await
        .unwrap();
    let mut send = h1(tls).await;
    let other = format!("other.example:{}", up.addr.port());
    let r = read(
        send.send_request(get("/", &[("host", &other)]))
            .await
            .unwrap(),
    )
    .await;
    let body = assert_proxy_error(&r, 421, "misdirected_request");
    assert!(
        body["message"].as_str().unwrap().contains("other.example"),
        "{body}"
    );
    // Same host, other port.
    let r = read(
        send.send_request(get("/", &[("host", "localhost")]))
            .await
            .unwrap(),
    )
    .await;
    assert_proxy_error(&r, 421, "misdirected_request");
    let r = read(
        send.send_request(get("/fine", &[("host", &target)]))
            .await
            .unwrap(),
    )
    .await;
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

/// Access log lines of this test binary (JSON), captured once for all tests.
fn access_log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let _ = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_env_filter("tollgate::access=info")
            .with_writer(move || Sink(sink.clone()))
            .try_init();
        buf
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().write_all(b)?;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_lines(buf: &Mutex<Vec<u8>>, user: &str) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&buf.lock().unwrap())
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["user"] == user)
        .collect()
}

#[tokio::test]
async fn inner_requests_are_rewritten_and_logged_one_line_each_then_the_connect() {
    let log = access_log();
    let up_ca = test_ca(UPSTREAM_CA_CN);
    let up = tls_upstream(&up_ca).await;
    let tg = start(&up_ca, always()).await;
    let ca = tg.exported_ca();
    let auth = tg.auth("acme", "inner-user");
    let target = format!("localhost:{}", up.addr.port());
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
    let r = read(
        send.send_request(get("/other", &[("host", "elsewhere.example")]))
            .await
            .unwrap(),
    )
    .await;
    assert_proxy_error(&r, 421, "misdirected_request");
    drop(send);

    // One access line per inner request, then the CONNECT's when the tunnel closes.
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let lines = log_lines(&log, "inner-user");
        if lines.iter().any(|l| l["method"] == "CONNECT") || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let inner: Vec<_> = lines.iter().filter(|l| l["method"] == "GET").collect();
    assert_eq!(inner.len(), 2, "{lines:?}");
    assert_eq!(inner[0]["status"], 200);
    assert_eq!(inner[0]["injected"], false);
    assert_eq!(inner[0]["app"], "-");
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
