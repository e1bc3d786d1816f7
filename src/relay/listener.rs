//! The relay listener (`--relay-listen`): the TLS endpoint agents dial out to.
//!
//! Per connection, in this order: TLS (a certificate minted at startup from the tollgate CA
//! for the listen address and the public URL's host, or `--relay-cert`/`--relay-key`), then
//! the agent's credential ([`super::handshake`]), checked before anything else is read, then
//! the turnaround: tollgate runs an HTTP/2 *client* (`hyper::client::conn::http2`) over the
//! accepted stream and registers it in the [`Registry`], from which the proxy opens tunnels
//! as `CONNECT` streams. HTTP/2 keep-alive pings drop a connection whose agent stopped
//! answering within the keep-alive interval plus timeout; its tunnels fail with it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::credential::{CredentialError, CredentialVerifier};
use super::handshake::{self, Hello, Welcome};
use super::metrics::AuthLabels;
use super::registry::Registry;
use super::renewal::Renewer;
use super::severable::Severable;
use crate::policy::{normalize_host, Host};
use crate::tls::Ca;

/// Relay listener settings.
#[derive(Clone, Debug)]
pub struct RelaySettings {
    /// HTTP/2 ping interval, and how long a ping may go unanswered: a dead agent connection
    /// is dropped within twice this.
    pub keepalive: Duration,
    /// Time an agent has for TLS plus its credential.
    pub handshake_timeout: Duration,
    /// PROXY protocol v2 headers from trusted balancers (`--proxy-protocol`).
    pub proxy_headers: crate::io::proxy_header::ProxyHeaders,
}

/// Default keep-alive interval (and timeout) on relay connections, both sides.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(10);

/// Connections may sit in TLS or authentication at once; beyond, new ones wait in the
/// accept queue. Keeps a flood of half-open handshakes from taking unbounded memory.
pub const MAX_PENDING_HANDSHAKES: usize = 256;

/// Of those, how many one source (an IPv4 address, an IPv6 /64) may hold; its connections
/// beyond are closed at once. Why 16: an agent opens 2 connections by default and at most a
/// few more while reconnecting, so 16 covers several agents behind one NAT address
/// reconnecting together; and one address can then hold only 1/16 of the permits, so idle
/// sockets from one place can no longer lock real agents out (issue 13).
pub const MAX_PENDING_PER_SOURCE: usize = 16;

/// HTTP/2 receive window per tunnel. Bounds what one slow reader can hold in memory (on
/// each side), and is large enough for loopback and LAN bulk transfers.
pub const STREAM_WINDOW: u32 = 1024 * 1024;

/// HTTP/2 receive window per relay connection, shared by its tunnels: 16 fully stalled
/// tunnels fit before the others on the connection slow down.
pub const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

/// Agents per relay connection at once (HTTP/2 concurrent streams), set by the agent.
pub const MAX_TUNNELS_PER_CONNECTION: u32 = 10_000;

/// Largest HTTP/2 frame either side accepts. The default (16 KiB) costs a TLS write on the
/// sender and a socket write on the receiver per 16 KiB; 256 KiB lets a 64 KiB tunnel read
/// travel as one frame (measured: a quarter of the system calls on the receiving side).
pub const MAX_FRAME_SIZE: u32 = 256 * 1024;

/// Buffer between TLS and the TCP socket of a relay connection, each way: the TLS layer
/// reads and writes records of at most 16 KiB, and without it each record would be its own
/// system call. There are only a few relay connections, so this costs little.
pub const SOCKET_BUFFER: usize = 256 * 1024;

/// Validity of the generated relay certificate; it is minted again at every start.
const GENERATED_CERT_DAYS: u64 = 3650;

/// Errors setting up the relay listener.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A certificate or key file could not be read.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The certificate could not be generated or used.
    #[error("relay TLS: {0}")]
    Tls(String),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// A bound relay listener with its TLS configuration.
pub struct RelayListener {
    /// The socket.
    pub listener: TcpListener,
    /// Where it is bound.
    pub addr: SocketAddr,
    /// TLS server configuration.
    pub tls: Arc<rustls::ServerConfig>,
    /// Names in the generated certificate (empty when `--relay-cert` was given).
    pub names: Vec<String>,
}

impl RelayListener {
    /// Binds `addr` and prepares TLS: `cert` (certificate chain and key PEM files) when
    /// given, else a certificate from the CA in `data` for the listen address and the
    /// public URL's host.
    pub async fn bind(
        addr: SocketAddr,
        ca: &Ca,
        public_url: &str,
        cert: Option<(&Path, &Path)>,
    ) -> Result<RelayListener, RelayError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| RelayError::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| RelayError::Bind { addr, source })?;
        let (chain, key, names) = match cert {
            Some((cert, key)) => (read_chain(cert)?, read_key(key)?, Vec::new()),
            None => {
                let names = certificate_names(bound.ip(), public_url);
                let hosts: Vec<Host> = names
                    .iter()
                    .filter_map(|n| normalize_host(n).ok())
                    .collect();
                let (leaf, key) = ca
                    .issue_server_cert(&hosts, Duration::from_secs(GENERATED_CERT_DAYS * 86_400))
                    .map_err(|e| RelayError::Tls(e.to_string()))?;
                let chain = vec![leaf, ca.cert_der().clone()];
                let key = PrivateKeyDer::Pkcs8(key.into());
                (chain, key, names)
            }
        };
        let mut tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| RelayError::Tls(e.to_string()))?;
        tls.alpn_protocols = vec![handshake::ALPN.to_vec()];
        Ok(RelayListener {
            listener,
            addr: bound,
            tls: Arc::new(tls),
            names,
        })
    }
}

/// Names the generated certificate covers: the listen address (for a wildcard listener,
/// `localhost` and both loopback addresses), and the public URL's host.
pub fn certificate_names(listen: IpAddr, public_url: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut add = |n: String| {
        if !names.contains(&n) {
            names.push(n);
        }
    };
    if listen.is_unspecified() {
        add("localhost".into());
        add(Ipv4Addr::LOCALHOST.to_string());
        add(Ipv6Addr::LOCALHOST.to_string());
    } else {
        add(listen.to_canonical().to_string());
    }
    if let Some(host) = public_url
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_string))
    {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match host.parse::<IpAddr>() {
            Ok(ip) => add(ip.to_string()),
            Err(_) => add(host.to_ascii_lowercase()),
        }
    }
    names
}

fn pem_certs(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, RelayError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| RelayError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(RelayError::File {
            path: path.to_path_buf(),
            message: "no certificate in the file".into(),
        });
    }
    Ok(certs)
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, RelayError> {
    let pem = std::fs::read(path).map_err(|e| RelayError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    pem_certs(&pem, path)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, RelayError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| RelayError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Accepts agent connections until `stop` is cancelled, then closes every relay connection
/// (the proxy has drained by then, so no tunnel is cut short).
pub async fn run(
    relay: RelayListener,
    verifier: Arc<CredentialVerifier>,
    registry: Arc<Registry>,
    settings: RelaySettings,
    stop: CancellationToken,
    renewer: Arc<Renewer>,
) {
    let acceptor = TlsAcceptor::from(relay.tls.clone());
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    let sources = Arc::new(PendingBySource::new(MAX_PENDING_PER_SOURCE));
    let conns = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            p = pending.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = crate::io::accept(&relay.listener, "relay") => accepted,
        };
        let conn = RelayConnTask {
            acceptor: acceptor.clone(),
            verifier: verifier.clone(),
            registry: registry.clone(),
            settings: settings.clone(),
            stop: stop.clone(),
            renewer: renewer.clone(),
        };
        let sources = sources.clone();
        conns.spawn(async move {
            // Behind a balancer, the client its PROXY header names: the per-source cap and
            // the logs count it, not the balancer.
            let mut stream = stream;
            let headers = &conn.settings.proxy_headers;
            let peer = match headers.client(&mut stream, peer).await {
                Ok(client) => client,
                Err(e) => {
                    conn.refused("proxy_header");
                    tracing::warn!(%peer, error = %e, "relay: connection refused");
                    return;
                }
            };
            let Some(source) = sources.try_enter(peer.ip()) else {
                conn.refused("source_limit");
                tracing::debug!(%peer, "relay: too many pending connections from this source");
                return;
            };
            conn.serve(stream, peer, (permit, source))
                .instrument(tracing::info_span!("relay", %peer))
                .await;
        });
    }
    drop(relay);
    registry.close_all();
    conns.close();
    conns.wait().await;
}

struct RelayConnTask {
    acceptor: TlsAcceptor,
    verifier: Arc<CredentialVerifier>,
    registry: Arc<Registry>,
    settings: RelaySettings,
    stop: CancellationToken,
    /// Renews each session's credential on it, and cuts the session at expiry otherwise.
    renewer: Arc<Renewer>,
}

impl RelayConnTask {
    /// Counts a connection refused before authentication, by `reason`.
    fn refused(&self, reason: &'static str) {
        self.registry
            .metrics()
            .auth_failures
            .get_or_create(&AuthLabels { reason })
            .inc();
    }

    async fn serve(
        self,
        stream: TcpStream,
        peer: SocketAddr,
        permit: (tokio::sync::OwnedSemaphorePermit, SourceSlot),
    ) {
        let _ = stream.set_nodelay(true);
        let refuse = |reason: &'static str| {
            self.registry
                .metrics()
                .auth_failures
                .get_or_create(&AuthLabels { reason })
                .inc();
        };
        let authenticated = tokio::time::timeout(self.settings.handshake_timeout, async {
            let buffered =
                tokio::io::BufStream::with_capacity(SOCKET_BUFFER, SOCKET_BUFFER, stream);
            let mut tls = match self.acceptor.accept(buffered).await {
                Ok(t) => t,
                Err(e) => {
                    refuse("tls");
                    tracing::debug!(error = %e, "relay TLS handshake failed");
                    return None;
                }
            };
            let hello: Hello = match handshake::read_hello(&mut tls).await {
                Ok(h) => h,
                Err(e) => {
                    refuse("bad_hello");
                    tracing::warn!(error = %e, "relay connection is not a tollgate agent");
                    return None;
                }
            };
            match self.verifier.check(&hello.credential) {
                Ok(agent) => {
                    let welcome = Welcome {
                        ok: true,
                        error: None,
                        message: None,
                    };
                    handshake::write_frame(&mut tls, &welcome).await.ok()?;
                    Some((tls, agent, hello))
                }
                Err(e) => {
                    let code = match e {
                        CredentialError::Invalid => "invalid_credential",
                        CredentialError::Expired => "expired",
                        CredentialError::Revoked(_) => "revoked",
                        CredentialError::Clock(_) => "clock_unusable",
                    };
                    refuse(code);
                    tracing::warn!(reason = code, error = %e, version = %hello.version,
                        "agent refused at the relay");
                    let welcome = Welcome {
                        ok: false,
                        error: Some(code.into()),
                        message: Some(e.to_string()),
                    };
                    let _ = handshake::write_frame(&mut tls, &welcome).await;
                    None
                }
            }
        })
        .await;
        let Ok(Some((tls, verified, hello))) = authenticated else {
            return;
        };
        let (agent, issued_at_ns) = (verified.agent.clone(), verified.issued_at_ns);
        drop(permit);
        // Cut when this task ends: hyper keeps the HTTP/2 connection (and its tunnels) alive
        // on a task of its own otherwise.
        let cut = CancellationToken::new();
        let _cut_on_exit = cut.clone().drop_guard();
        let tls = Severable::new(tls, cut.clone());

        let handshake = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(self.settings.keepalive)
            .keep_alive_timeout(self.settings.keepalive)
            .keep_alive_while_idle(true)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME_SIZE)
            .handshake(TokioIo::new(tls))
            .await;
        let (send, conn) = match handshake {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(agent, error = %e, "HTTP/2 handshake with the agent failed");
                return;
            }
        };
        // The agent is told the live replicas as long as this connection lasts.
        let tell = super::replicas::push(
            send.clone(),
            self.registry.replicas().subscribe(),
            agent.clone(),
        );
        let told = cut.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = tell => {}
                () = told.cancelled() => {}
            }
        });
        let renew_on = send.clone();
        let relay_conn = self.registry.register(
            &agent,
            hello.instance.clone(),
            hello.slot,
            peer,
            issued_at_ns,
            send,
        );
        // The credential is renewed on this connection, which ends when it expires unrenewed.
        let renew = self
            .renewer
            .clone()
            .keep(renew_on, relay_conn.clone(), verified);
        let renewed_until = cut.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = renew => {}
                () = renewed_until.cancelled() => {}
            }
        });
        tracing::info!(agent, instance = %hello.instance, slot = hello.slot,
            conn = relay_conn.id(), version = %hello.version, "agent connected");
        let stopped = relay_conn.stopped();
        let why = tokio::select! {
            r = conn => match r {
                Ok(()) => "closed by the agent".to_string(),
                Err(e) => e.to_string(),
            },
            () = stopped.cancelled() => "replaced, set aside, revoked or expired".to_string(),
            () = self.stop.cancelled() => "relay shutting down".to_string(),
        };
        self.registry.unregister(&relay_conn);
        tracing::info!(agent, conn = relay_conn.id(), open_tunnels = relay_conn.in_flight(),
            reason = %why, "agent disconnected");
    }
}

/// Pre-auth connections per source, each counted while its [`SourceSlot`] lives. Entries exist
/// only for sources with a live slot, and every slot also holds one of the
/// [`MAX_PENDING_HANDSHAKES`] permits, so the map is bounded by them.
struct PendingBySource {
    /// Live slots per source.
    counts: Arc<Mutex<HashMap<SourceKey, usize>>>,
    /// Slots one source may hold.
    per_source: usize,
}

/// A source: an IPv4 address, or an IPv6 /64 (one host usually owns a whole /64, so counting
/// its addresses one by one would be no limit).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum SourceKey {
    V4(Ipv4Addr),
    V6Prefix(u64),
}

impl SourceKey {
    fn of(ip: IpAddr) -> SourceKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => SourceKey::V4(v4),
            IpAddr::V6(v6) => SourceKey::V6Prefix((u128::from(v6) >> 64) as u64),
        }
    }
}

/// One pending connection's place in its source's count; released on drop.
struct SourceSlot {
    /// The shared counts.
    counts: Arc<Mutex<HashMap<SourceKey, usize>>>,
    /// Whose count to decrement.
    key: SourceKey,
}

impl PendingBySource {
    fn new(per_source: usize) -> Self {
        PendingBySource {
            counts: Arc::new(Mutex::new(HashMap::new())),
            per_source,
        }
    }

    /// A slot for a connection from `ip`, unless its source already holds `per_source`.
    fn try_enter(&self, ip: IpAddr) -> Option<SourceSlot> {
        let key = SourceKey::of(ip);
        // A poisoned lock means a panic while holding it; the counts stay consistent (each
        // change is a single operation), so keep using them.
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(key).or_insert(0);
        if *n >= self.per_source {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            counts: self.counts.clone(),
            key,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_names_cover_listen_address_and_public_host() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(
            certificate_names(ip, "https://tollgate.example.com/"),
            vec!["10.1.2.3", "tollgate.example.com"]
        );
        assert_eq!(
            certificate_names(ip, "http://10.1.2.3:8080"),
            vec!["10.1.2.3"]
        );
        assert_eq!(
            certificate_names("0.0.0.0".parse().unwrap(), "http://[::1]:8080"),
            vec!["localhost", "127.0.0.1", "::1"]
        );
    }

    #[test]
    fn pending_connections_are_capped_per_source() {
        let sources = PendingBySource::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let held: Vec<_> = (0..2).map(|_| sources.try_enter(a).unwrap()).collect();
        assert!(sources.try_enter(a).is_none());
        // The same address mapped into IPv6 is the same source.
        assert!(sources
            .try_enter("::ffff:10.0.0.1".parse().unwrap())
            .is_none());
        assert!(sources.try_enter("10.0.0.2".parse().unwrap()).is_some());
        // One IPv6 /64 is one source.
        let _v6: Vec<_> = ["2001:db8::1", "2001:db8::2"]
            .iter()
            .map(|ip| sources.try_enter(ip.parse().unwrap()).unwrap())
            .collect();
        assert!(sources.try_enter("2001:db8::3".parse().unwrap()).is_none());
        assert!(sources
            .try_enter("2001:db8:0:1::1".parse().unwrap())
            .is_some());
        drop(held);
        assert!(sources.try_enter(a).is_some());
        assert!(!sources
            .counts
            .lock()
            .unwrap()
            .contains_key(&SourceKey::of(a)));
    }

    #[tokio::test]
    async fn generated_certificate_chains_to_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let data = crate::datadir::DataDir::prepare(&dir.path().join("data")).unwrap();
        let ca = Ca::load(&data.ca_cert, &data.ca_key).unwrap();
        let relay = RelayListener::bind(
            "127.0.0.1:0".parse().unwrap(),
            &ca,
            "https://relay.example",
            None,
        )
        .await
        .unwrap();
        assert_eq!(relay.names, vec!["127.0.0.1", "relay.example"]);
        // A client trusting only the CA accepts the relay under both names.
        let ca = std::fs::read(&data.ca_cert).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&ca) {
            roots.add(c.unwrap()).unwrap();
        }
        let acceptor = TlsAcceptor::from(relay.tls.clone());
        let addr = relay.addr;
        tokio::spawn(async move {
            for _ in 0..2 {
                let (s, _) = relay.listener.accept().await.unwrap();
                let _ = acceptor.accept(s).await;
            }
        });
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        for name in ["127.0.0.1", "relay.example"] {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let sn = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
            tokio_rustls::TlsConnector::from(client.clone())
                .connect(sn, tcp)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
