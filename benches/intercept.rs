//! HTTPS interception load figures for BENCHMARKS.md (`bash bench/intercept.sh`).
//!
//! Everything runs in this process on loopback, each part on its own tokio runtime so they
//! compete for the cores as separate processes would: a TLS upstream (1 KiB answers, h2 and
//! http/1.1, wildcard certificate for `*.bench.test` from a bench CA), tollgate's proxy
//! listener built from the library (a resolver mapping `*.bench.test` to 127.0.0.1, JSON
//! access log formatted into a sink), and the clients.
//!
//! Scenarios: kept-alive requests per second through an intercepted tunnel and through a blind
//! tunnel (and straight to the upstream for reference); new intercepted connections per second
//! with a warm leaf cache (one host) and a cold one (a new host per connection); the mint cost
//! alone; bulk bytes per second through a blind tunnel against direct for a 1 GiB transfer.
//!
//! Settings (environment): `DURATION` seconds per scenario (default 10), `CONNS` kept-alive
//! connections (default 32), `NEW_CONNS` concurrent new-connection loops (default 8),
//! `BULK_MIB` (default 1024), `BULK_RUNS` (default 3, best reported), `SCENARIOS` (comma
//! list of `keepalive`, `new`, `mint`, `bulk`; default all).

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use tollgate::identity::{IdentityKey, Verifier};
use tollgate::metrics::Metrics;
use tollgate::policy::watch::Policies;
use tollgate::policy::Host;
use tollgate::proxy::{self, ProxySettings, ProxyState};
use tollgate::route::{DirectDialer, Guard, Resolve, Router};
use tollgate::tls::{Ca, LeafCache};

const POLICY: &str = r#"
[[policy]]
name = "bench"
route = "direct"

  [[policy.allow]]
  hosts = ["*.bench.test"]
  ports = ["1024-65535"]
  private = true
"#;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn enabled(scenario: &str) -> bool {
    std::env::var("SCENARIOS").map_or(true, |v| v.split(',').any(|s| s.trim() == scenario))
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `*.bench.test` → 127.0.0.1.
struct BenchResolver;

impl Resolve for BenchResolver {
    fn resolve(
        &self,
        name: &str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + '_>> {
        let answer = if name.ends_with(".bench.test") {
            Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])
        } else {
            Err(io::Error::new(io::ErrorKind::NotFound, "not a bench name"))
        };
        Box::pin(std::future::ready(answer))
    }
}

/// The upstream: TLS (h2 + http/1.1) answering 1 KiB to everything.
async fn tls_upstream(config: Arc<rustls::ServerConfig>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let body = Bytes::from(vec![b'x'; 1024]);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(body)))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

/// A TCP server that writes `bytes` zero bytes to every connection, then closes it.
async fn bulk_source(bytes: u64) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let chunk = vec![0u8; 256 * 1024];
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    if s.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    left -= n as u64;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

struct Bench {
    proxy: SocketAddr,
    upstream: SocketAddr,
    bulk: SocketAddr,
    auth: String,
    tollgate_ca: CertificateDer<'static>,
    bench_ca: CertificateDer<'static>,
    leaves: Arc<LeafCache>,
}

fn client_config(root: &CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Like a new curl process: no session to resume.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// CONNECT through the proxy.
async fn connect(proxy: SocketAddr, target: &str, auth: &str) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.set_nodelay(true).unwrap();
    let head = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: {auth}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).await.unwrap();
        assert!(n == 1, "proxy closed during CONNECT");
        buf.push(byte[0]);
    }
    assert!(
        buf.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    s
}

/// TLS over `stream` with `name`, then an HTTP/1.1 sender.
async fn tls_h1(stream: TcpStream, name: &str, config: Arc<rustls::ClientConfig>) -> Sender {
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from(name.to_string()).unwrap(), stream)
        .await
        .unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

async fn one_request(send: &mut Sender, authority: &str) {
    let req = Request::builder()
        .uri("/")
        .header("host", authority)
        .body(Empty::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
}

/// Requests per second over `conns` kept-alive connections made by `open`.
async fn kept_alive<F, Fut>(conns: u64, duration: Duration, authority: String, open: F) -> f64
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Sender> + Send,
{
    let open = Arc::new(open);
    let count = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for _ in 0..conns {
        senders.push(open().await);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut send| {
            let (count, authority) = (count.clone(), authority.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    one_request(&mut send, &authority).await;
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Numbers the hosts of cold connections, across scenarios, so each is new to the cache.
static COLD_SERIAL: AtomicU64 = AtomicU64::new(0);

/// New connections per second: `loops` concurrent loops of CONNECT + TLS (+ one request).
async fn new_connections(
    b: Arc<Bench>,
    loops: u64,
    duration: Duration,
    cold: bool,
    request: bool,
) -> f64 {
    let config = client_config(&b.tollgate_ca);
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..loops)
        .map(|_| {
            let (b, config, count) = (b.clone(), config.clone(), count.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let host = if cold {
                        format!(
                            "c{}.bench.test",
                            COLD_SERIAL.fetch_add(1, Ordering::Relaxed)
                        )
                    } else {
                        "warm.bench.test".to_string()
                    };
                    let authority = format!("{host}:{}", b.upstream.port());
                    let stream = connect(b.proxy, &authority, &b.auth).await;
                    if request {
                        let mut send = tls_h1(stream, &host, config.clone()).await;
                        one_request(&mut send, &authority).await;
                    } else {
                        let tls = tokio_rustls::TlsConnector::from(config.clone())
                            .connect(ServerName::try_from(host).unwrap(), stream)
                            .await
                            .unwrap();
                        drop(tls);
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Bytes per second reading `stream` to its end.
async fn drain(mut stream: TcpStream) -> (u64, f64) {
    let mut buf = vec![0u8; 256 * 1024];
    let start = Instant::now();
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    (total, total as f64 / start.elapsed().as_secs_f64())
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let duration = Duration::from_secs(env("DURATION", 10));
    let conns = env("CONNS", 32);
    let new_loops = env("NEW_CONNS", 8);
    let bulk_bytes = env("BULK_MIB", 1024) * 1024 * 1024;
    let bulk_runs = env("BULK_RUNS", 3);

    // A JSON access log formatted for every request, as in production, written nowhere.
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter("tollgate::access=info")
        .with_writer(io::sink)
        .init();

    let upstream_rt = runtime(2);
    let proxy_rt = runtime(2);
    let client_rt = runtime(2);

    // The bench CA and the upstream's wildcard certificate.
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "bench upstream CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let up_key = KeyPair::generate().unwrap();
    let up_cert = CertificateParams::new(vec!["*.bench.test".to_string()])
        .unwrap()
        .signed_by(&up_key, &issuer)
        .unwrap();
    let mut up_config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![up_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(up_key.serialize_der())),
        )
        .unwrap();
    up_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let upstream = upstream_rt.block_on(tls_upstream(Arc::new(up_config)));
    let bulk = upstream_rt.block_on(bulk_source(bulk_bytes));

    // tollgate's proxy listener, from the library.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/bench.toml"), POLICY).unwrap();
    let ca_file = dir.path().join("bench-ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    let (tg_cert, tg_key) = tollgate::tls::generate_ca().unwrap();
    let ca =
        Arc::new(Ca::from_pem(&tg_cert, "ca.pem".as_ref(), &tg_key, "ca.key".as_ref()).unwrap());
    let tollgate_ca = ca.cert_der().clone();
    let leaves = Arc::new(LeafCache::new(ca, tollgate::tls::LEAF_CACHE_CAPACITY).unwrap());
    let identity = "bench-identity-key";
    let auth = format!(
        "Bearer {}",
        tollgate::identity::mint(
            &IdentityKey::from_bytes(identity.as_bytes()),
            "bench",
            "bench",
            &[],
            Duration::from_secs(24 * 3600),
        )
        .expect("clock")
    );
    let leaves2 = leaves.clone();
    let shutdown = CancellationToken::new();
    let proxy = proxy_rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new());
        let dialer = Arc::new(DirectDialer::new(
            Arc::new(BenchResolver),
            Guard::new(vec![proxy]),
            Duration::from_secs(10),
        ));
        let tls = tollgate::tls::upstream_client_config(Some(&ca_file)).unwrap();
        let policies = Policies::load(dir.path().join("policies"));
        let store: Arc<dyn tollgate::store::Store> = Arc::new(
            tollgate::store::SledStore::open(
                &dir.path().join("store"),
                tollgate::store::StoreKey::from_hex_text(&"ab".repeat(32)).unwrap(),
            )
            .unwrap(),
        );
        let agents = Arc::new(tollgate::relay::Registry::new(
            metrics.agents.clone(),
            Duration::from_secs(10),
        ));
        let router = Arc::new(Router::new(
            dialer,
            agents,
            Duration::from_secs(60),
            tls.clone(),
        ));
        let oauth = tollgate::oauth::OAuth::build(
            store,
            policies.clone(),
            router.clone(),
            Arc::new(tls.clone()),
            Duration::from_secs(60),
            "http://127.0.0.1:1".into(),
            metrics.clone(),
        )
        .await;
        let settings = ProxySettings {
            idle_timeout: Duration::from_secs(900),
            request_head_timeout: Duration::from_secs(30),
            max_request_head: 64 * 1024,
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(1),
            body_timeout: Duration::from_secs(30),
            max_connections_per_caller: 256,
            proxy_headers: tollgate::io::proxy_header::ProxyHeaders::off(),
        };
        let verifier = Arc::new(Verifier::new(IdentityKey::from_bytes(identity.as_bytes())));
        let state = Arc::new(
            ProxyState::new(
                policies,
                verifier,
                router,
                oauth.injector.clone(),
                leaves2,
                metrics,
                settings,
            )
            // Everything but blind.bench.test and the bulk source is intercepted.
            .intercept_when(Arc::new(|_, host: &Host, _| {
                !matches!(host, Host::Name(n) if n == "blind.bench.test" || n == "bulk.bench.test")
            })),
        );
        tokio::spawn(proxy::run(listener, state, shutdown.clone()));
        proxy
    });
    let b = Arc::new(Bench {
        proxy,
        upstream,
        bulk,
        auth,
        tollgate_ca,
        bench_ca: ca_cert.der().clone(),
        leaves,
    });

    println!(
        "duration {}s per scenario, {conns} kept-alive connections, {new_loops} new-connection loops, 1 KiB responses",
        duration.as_secs()
    );
    println!();
    println!("| scenario | result |");
    println!("|---|---|");
    client_rt.block_on(async {
        let port = b.upstream.port();
        // Kept-alive requests per second.
        let keepalive = if enabled("keepalive") { 3 } else { 0 };
        for (label, host, intercepted, through_proxy) in [
            ("intercepted tunnel (h1 inside, h2 upstream)", "api.bench.test", true, true),
            ("blind tunnel (TLS end to end)", "blind.bench.test", false, true),
            ("direct to the upstream (reference)", "direct.bench.test", false, false),
        ]
        .into_iter()
        .take(keepalive)
        {
            let b2 = b.clone();
            let authority = format!("{host}:{port}");
            let config = client_config(if intercepted {
                &b.tollgate_ca
            } else {
                &b.bench_ca
            });
            let target = authority.clone();
            let rps = kept_alive(conns, duration, authority, move || {
                let (b, config, target) = (b2.clone(), config.clone(), target.clone());
                async move {
                    let stream = if through_proxy {
                        connect(b.proxy, &target, &b.auth).await
                    } else {
                        let s = TcpStream::connect(b.upstream).await.unwrap();
                        s.set_nodelay(true).unwrap();
                        s
                    };
                    tls_h1(stream, host, config).await
                }
            })
            .await;
            println!("| kept-alive requests/s, {label} | {rps:.0} |");
        }

        // New intercepted connections per second.
        let new = if enabled("new") { 4 } else { 0 };
        for (label, cold, request) in [
            ("CONNECT + TLS handshake, warm leaf cache", false, false),
            ("CONNECT + TLS handshake, cold (new host each time)", true, false),
            ("CONNECT + TLS + 1 request, warm leaf cache", false, true),
            ("CONNECT + TLS + 1 request, cold (new host, new upstream connection)", true, true),
        ]
        .into_iter()
        .take(new)
        {
            let before = b.leaves.mints();
            let cps = new_connections(b.clone(), new_loops, duration, cold, request).await;
            let mints = b.leaves.mints() - before;
            println!("| new intercepted connections/s, {label} | {cps:.0} ({mints} mints) |");
        }

        // Mint cost alone.
        let n = if enabled("mint") { 2000 } else { 0 };
        let start = Instant::now();
        let now = SystemTime::now();
        for i in 0..n {
            b.leaves
                .leaf_at(&Host::Name(format!("m{i}.mint.test")), now)
                .await
                .unwrap();
        }
        if n > 0 {
            let per = start.elapsed() / n;
            println!("| leaf mint (sign + rustls config), one at a time | {per:.1?} |");
        }
        if !enabled("bulk") {
            return;
        }

        // Bulk: blind tunnel against direct.
        let mib = bulk_bytes as f64 / (1024.0 * 1024.0);
        let mut direct_best = 0f64;
        let mut tunnel_best = 0f64;
        for _ in 0..bulk_runs {
            let s = TcpStream::connect(b.bulk).await.unwrap();
            let (n, bps) = drain(s).await;
            assert_eq!(n, bulk_bytes);
            direct_best = direct_best.max(bps);
            let s = connect(b.proxy, &format!("bulk.bench.test:{}", b.bulk.port()), &b.auth).await;
            let (n, bps) = drain(s).await;
            assert_eq!(n, bulk_bytes);
            tunnel_best = tunnel_best.max(bps);
        }
        let gib = |bps: f64| bps / (1024.0 * 1024.0 * 1024.0);
        println!(
            "| bulk {mib:.0} MiB, direct (best of {bulk_runs}) | {:.2} GiB/s |",
            gib(direct_best)
        );
        println!(
            "| bulk {mib:.0} MiB, blind tunnel (best of {bulk_runs}) | {:.2} GiB/s ({:.0}% of direct) |",
            gib(tunnel_best),
            100.0 * tunnel_best / direct_best
        );
    });
    shutdown.cancel();
}
