//! A closed-loop load generator for the paths wrk cannot drive: requests inside `CONNECT`
//! tunnels (TLS, then HTTP/1.1 or HTTP/2), and plain absolute-form forwarding with the same
//! client so that the two compare. `bench/compare.sh` runs it; it prints wrk's result lines
//! (`Requests/sec:`, the `50%` and `99%` latencies) so that one parser reads both.
//!
//! ```sh
//! cargo run --release --example loadgen -- --proxy 127.0.0.1:3128 --auth "Bearer …" \
//!     --mode h2 --ca tollgate-ca.pem --conns 64 --duration 8s https://127.0.0.1:8443/1k
//! ```
//!
//! One thread, like `wrk -t1`: every connection is a task on a current-thread runtime with
//! one request in flight at a time (an HTTP/2 connection carries one stream at a time too).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Absolute-form `http://` requests to the proxy (`HTTP_PROXY`).
    Forward,
    /// `CONNECT`, TLS with ALPN `http/1.1`, then origin-form requests.
    H1,
    /// `CONNECT`, TLS with ALPN `h2`, then HTTP/2 requests.
    H2,
}

#[derive(Parser)]
struct Args {
    /// The proxy's address.
    #[arg(long)]
    proxy: String,
    /// `Proxy-Authorization` value.
    #[arg(long)]
    auth: String,
    #[arg(long, value_enum)]
    mode: Mode,
    /// CA certificate (PEM) the tunnels' TLS must chain to: tollgate's interception CA.
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = 64)]
    conns: usize,
    #[arg(long, default_value = "8s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// The URL requested (`http://` for forward, `https://` for the tunnels).
    url: Uri,
}

/// One request at a time on one connection, whatever its protocol.
enum Conn {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Conn {
    async fn get(&mut self, req: Request<Empty<Bytes>>) -> Result<()> {
        let resp = match self {
            Conn::H1(s) => s.send_request(req).await?,
            Conn::H2(s) => s.send_request(req).await?,
        };
        if !resp.status().is_success() {
            bail!("status {}", resp.status());
        }
        resp.into_body().collect().await?;
        Ok(())
    }
}

async fn open(args: &Args, tls: &Option<Arc<rustls::ClientConfig>>) -> Result<Conn> {
    let mut tcp = TcpStream::connect(&args.proxy).await?;
    tcp.set_nodelay(true)?;
    if args.mode == Mode::Forward {
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        return Ok(Conn::H1(send));
    }
    let authority = args.url.authority().context("the URL has no authority")?;
    let authority = match authority.port() {
        Some(_) => authority.to_string(),
        None => format!("{}:443", authority.host()),
    };
    let head = format!(
        "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nProxy-Authorization: {}\r\n\r\n",
        args.auth
    );
    tcp.write_all(head.as_bytes()).await?;
    let mut answer = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut byte).await? == 0 {
            bail!("the proxy closed during CONNECT");
        }
        answer.push(byte[0]);
    }
    if !answer.starts_with(b"HTTP/1.1 200") {
        bail!("CONNECT refused: {}", String::from_utf8_lossy(&answer));
    }
    let mut config = (**tls.as_ref().context("--ca is needed for tunnels")?).clone();
    config.alpn_protocols = vec![match args.mode {
        Mode::H2 => b"h2".to_vec(),
        _ => b"http/1.1".to_vec(),
    }];
    let host = args.url.host().context("the URL has no host")?;
    let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    let io = TokioIo::new(stream);
    Ok(match args.mode {
        Mode::H2 => {
            let (send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            Conn::H2(send)
        }
        _ => {
            let (send, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            Conn::H1(send)
        }
    })
}

fn request(args: &Args) -> Result<Request<Empty<Bytes>>> {
    let authority = args.url.authority().context("the URL has no authority")?;
    let b = Request::get(match args.mode {
        Mode::Forward => args.url.clone(),
        Mode::H1 => args
            .url
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()?,
        Mode::H2 => args.url.clone(),
    });
    let b = match args.mode {
        Mode::Forward => b
            .header("host", authority.as_str())
            .header("proxy-authorization", &args.auth),
        Mode::H1 => b.header("host", authority.as_str()),
        Mode::H2 => b.version(http::Version::HTTP_2),
    };
    Ok(b.body(Empty::new())?)
}

fn tls_config(ca: &std::path::Path) -> Result<Arc<rustls::ClientConfig>> {
    let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(&pem)? {
        roots.add(cert)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// The certificates of a PEM file.
fn rustls_pemfile_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    Ok(CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>()?)
}

fn percentile(sorted: &[u32], p: f64) -> String {
    let Some(last) = sorted.len().checked_sub(1) else {
        return "-".into();
    };
    let us = sorted[((last as f64) * p).round() as usize];
    format!("{:.2}ms", f64::from(us) / 1000.0)
}

fn main() -> Result<()> {
    let args = Arc::new(Args::parse());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let tls = args.ca.as_deref().map(tls_config).transpose()?;
        let mut conns = Vec::with_capacity(args.conns);
        for _ in 0..args.conns {
            let mut c = open(&args, &tls).await?;
            c.get(request(&args)?).await?; // warms the connection (and the upstream pool)
            conns.push(c);
        }
        let start = Instant::now();
        let deadline = start + args.duration;
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|mut c| {
                let args = args.clone();
                tokio::spawn(async move {
                    let (mut latencies, mut errors) = (Vec::with_capacity(1 << 16), 0u64);
                    while Instant::now() < deadline {
                        let sent = Instant::now();
                        match c.get(request(&args)?).await {
                            Ok(()) => latencies.push(
                                u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX),
                            ),
                            Err(e) => {
                                // The first few of each connection, to tell what failed.
                                if errors < 3 {
                                    eprintln!("loadgen: request failed: {e:#}");
                                }
                                errors += 1;
                            }
                        }
                    }
                    anyhow::Ok((latencies, errors))
                })
            })
            .collect();
        let (mut all, mut errors) = (Vec::new(), 0);
        for t in tasks {
            let (l, e) = t.await??;
            all.extend(l);
            errors += e;
        }
        let elapsed = start.elapsed().as_secs_f64();
        all.sort_unstable();
        println!("  Latency Distribution");
        println!("     50%   {}", percentile(&all, 0.50));
        println!("     99%   {}", percentile(&all, 0.99));
        if errors > 0 {
            println!("  Non-2xx or Socket errors: {errors}");
        }
        println!("Requests/sec: {:.2}", all.len() as f64 / elapsed);
        Ok(())
    })
}
