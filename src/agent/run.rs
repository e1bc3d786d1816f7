//! `tollgate agent run`: the agent inside a private network. It opens no port: it keeps a
//! few TLS connections to tollgate's relay listener, authenticates each with its credential,
//! and then serves HTTP/2 on them — the connection is turned around, tollgate is the client.
//!
//! Each `CONNECT host:port` stream is one tunnel. The agent checks its [`Allowlist`], resolves
//! the name once, checks every address, dials only a checked one, and answers 200 only after
//! the dial succeeded (403, 502 or 504 with a JSON reason otherwise). Then bytes flow, with
//! HTTP/2 flow control bounding what a slow side can make either end buffer.
//!
//! Connections that fail are redialed with full-jitter exponential backoff (1 s base, 30 s
//! cap). On SIGTERM the agent drains: every connection sends GOAWAY (tollgate opens new
//! tunnels elsewhere), open tunnels may finish for up to the drain timeout, then it exits.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::allow::{Allowlist, Refusal, TargetMatch};
use super::credential::agent_id_problem;
use super::handshake::{self, Hello, Welcome};
use super::relay::{
    CONNECTION_WINDOW, DEFAULT_KEEPALIVE, MAX_FRAME_SIZE, MAX_TUNNELS_PER_CONNECTION,
    SOCKET_BUFFER, STREAM_WINDOW,
};
// Connect timeout towards destinations and the relay, and the idle tunnel timeout: the same
// defaults as tollgate's.
use crate::config::{
    duration_setting, load_toml_or_default, LogFormat, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
};
use crate::policy::{normalize_host, Host};
use crate::route::direct::{DirectDialer, DirectError, SystemResolver};
use crate::route::guard::Guard;

/// Relay connections kept by default.
pub const DEFAULT_CONNECTIONS: u32 = 2;
/// First reconnection delay bound; doubles per failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Largest reconnection delay bound.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// How long SIGTERM lets open tunnels finish.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Copy buffer per tunnel direction, held only while bytes move. Larger than the proxy's
/// (64 KiB): each read becomes one HTTP/2 frame towards tollgate (frames up to
/// `MAX_FRAME_SIZE`), and fewer, larger frames cost less on both sides of the relay.
const TUNNEL_BUFFER: usize = 256 * 1024;
/// A relay connection that stayed up this long resets the backoff.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);
/// Time for the relay's TLS handshake and answer.
const RELAY_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// `tollgate agent run` flags (each with a `TOLLGATE_AGENT_*` variable and a key in
/// `--config`).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct RunArgs {
    /// Settings file (TOML; keys as the flags, with underscores; `allow` is a list).
    #[arg(long, env = "TOLLGATE_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// The relay listener, as https://HOST:PORT.
    #[arg(long, env = "TOLLGATE_AGENT_RELAY")]
    pub relay: Option<String>,
    /// This agent's ID (as in `route = "agent:ID"` and `agent enroll --id`).
    #[arg(long, env = "TOLLGATE_AGENT_ID")]
    pub id: Option<String>,
    /// File holding the credential printed by `tollgate agent enroll`.
    #[arg(long, env = "TOLLGATE_AGENT_CREDENTIAL_FILE")]
    pub credential_file: Option<PathBuf>,
    /// CA certificate(s) to verify the relay with (`tollgate ca export`); default: the
    /// platform's public roots.
    #[arg(long, env = "TOLLGATE_AGENT_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Destinations tollgate may reach through this agent: host names, `*.suffix`, IPs and
    /// CIDRs (repeatable, or comma-separated). Replaces the config file's list.
    #[arg(long = "allow", env = "TOLLGATE_AGENT_ALLOW", value_delimiter = ',')]
    pub allow: Vec<String>,
    /// Relay connections to keep [default: 2].
    #[arg(long, env = "TOLLGATE_AGENT_CONNECTIONS")]
    pub connections: Option<u32>,
    /// Connect timeout towards destinations [default: 10s].
    #[arg(long, env = "TOLLGATE_AGENT_CONNECT_TIMEOUT")]
    pub connect_timeout: Option<String>,
    /// HTTP/2 keep-alive ping interval (and ping timeout) [default: 10s].
    #[arg(long, env = "TOLLGATE_AGENT_KEEPALIVE")]
    pub keepalive: Option<String>,
    /// How long SIGTERM lets open tunnels finish [default: 30s].
    #[arg(long, env = "TOLLGATE_AGENT_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<String>,
    /// Idle tunnel timeout [default: 15m].
    #[arg(long, env = "TOLLGATE_AGENT_IDLE_TIMEOUT")]
    pub idle_timeout: Option<String>,
    /// Log format.
    #[arg(long, env = "TOLLGATE_AGENT_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

/// The optional agent settings file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    relay: Option<String>,
    id: Option<String>,
    credential_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    allow: Option<Vec<String>>,
    connections: Option<u32>,
    connect_timeout: Option<String>,
    keepalive: Option<String>,
    drain_timeout: Option<String>,
    idle_timeout: Option<String>,
    log_format: Option<LogFormat>,
}

/// The credential text; `Debug` never prints it.
#[derive(Clone)]
pub struct Credential(String);

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(MASKED)")
    }
}

/// Validated agent settings.
#[derive(Clone)]
pub struct AgentConfig {
    /// Relay host (name or IP) and port.
    pub relay_host: String,
    /// Relay port.
    pub relay_port: u16,
    /// Name the relay certificate is checked against.
    pub server_name: ServerName<'static>,
    /// TLS client settings (roots, ALPN).
    pub tls: Arc<rustls::ClientConfig>,
    /// Agent ID.
    pub id: String,
    /// Enrollment credential.
    pub credential: Credential,
    /// What tollgate may reach through this agent.
    pub allow: Arc<Allowlist>,
    /// Relay connections kept.
    pub connections: u32,
    /// Connect timeout to destinations and the relay.
    pub connect_timeout: Duration,
    /// HTTP/2 ping interval and timeout.
    pub keepalive: Duration,
    /// Drain period on SIGTERM.
    pub drain_timeout: Duration,
    /// Idle tunnel timeout.
    pub idle_timeout: Duration,
    /// Log format.
    pub log_format: LogFormat,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field(
                "relay",
                &format_args!("{}:{}", self.relay_host, self.relay_port),
            )
            .field("id", &self.id)
            .field("allow", &self.allow.entries())
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

/// Every problem found in the agent's settings.
#[derive(Debug, thiserror::Error)]
#[error("invalid agent configuration:\n  {}", .0.join("\n  "))]
pub struct AgentConfigError(pub Vec<String>);

impl AgentConfig {
    /// Merges flags/env over the optional file, reads the credential and CA, and validates.
    /// Every problem is reported at once.
    pub fn resolve(args: &RunArgs) -> Result<AgentConfig, AgentConfigError> {
        let mut errors = Vec::new();
        let file: FileConfig = load_toml_or_default(args.config.as_deref(), &mut errors);
        let dur = |flag, v: &Option<String>, f: &Option<String>, d, errs: &mut Vec<String>| {
            duration_setting(flag, v.as_ref(), f.as_ref(), d, errs)
        };
        let connect_timeout = dur(
            "connect-timeout",
            &args.connect_timeout,
            &file.connect_timeout,
            DEFAULT_CONNECT_TIMEOUT,
            &mut errors,
        );
        let keepalive = dur(
            "keepalive",
            &args.keepalive,
            &file.keepalive,
            DEFAULT_KEEPALIVE,
            &mut errors,
        );
        let drain_timeout = dur(
            "drain-timeout",
            &args.drain_timeout,
            &file.drain_timeout,
            DEFAULT_DRAIN_TIMEOUT,
            &mut errors,
        );
        let idle_timeout = dur(
            "idle-timeout",
            &args.idle_timeout,
            &file.idle_timeout,
            DEFAULT_IDLE_TIMEOUT,
            &mut errors,
        );
        let relay = args.relay.clone().or(file.relay);
        let relay = match relay.as_deref().map(parse_relay_url) {
            None => {
                errors.push("--relay is required (https://HOST:PORT of the relay listener)".into());
                None
            }
            Some(Err(e)) => {
                errors.push(format!("--relay: {e}"));
                None
            }
            Some(Ok(r)) => Some(r),
        };
        let id = args.id.clone().or(file.id);
        match &id {
            None => errors.push("--id is required".into()),
            Some(id) => errors.extend(agent_id_problem(id).map(|p| format!("--id: {p}"))),
        }
        let credential = match args.credential_file.clone().or(file.credential_file) {
            None => {
                errors.push("--credential-file is required (from `tollgate agent enroll`)".into());
                None
            }
            Some(p) => match std::fs::read_to_string(&p) {
                Ok(s) if !s.trim().is_empty() => Some(Credential(s.trim().to_string())),
                Ok(_) => {
                    errors.push(format!("{}: the credential file is empty", p.display()));
                    None
                }
                Err(e) => {
                    errors.push(format!("{}: {e}", p.display()));
                    None
                }
            },
        };
        let tls = match client_tls(args.ca_file.clone().or(file.ca_file).as_deref()) {
            Ok(t) => Some(t),
            Err(e) => {
                errors.push(e);
                None
            }
        };
        let entries = if args.allow.is_empty() {
            file.allow.unwrap_or_default()
        } else {
            args.allow.clone()
        };
        let allow = match Allowlist::parse(&entries) {
            Ok(a) => Some(a),
            Err(e) => {
                errors.extend(e);
                None
            }
        };
        let connections = args
            .connections
            .or(file.connections)
            .unwrap_or(DEFAULT_CONNECTIONS);
        if connections == 0 || connections > 64 {
            errors.push("--connections must be between 1 and 64".into());
        }

        let (
            Some((relay_host, relay_port, server_name)),
            Some(id),
            Some(credential),
            Some(tls),
            Some(allow),
        ) = (relay, id, credential, tls, allow)
        else {
            return Err(AgentConfigError(errors));
        };
        if !errors.is_empty() {
            return Err(AgentConfigError(errors));
        }
        Ok(AgentConfig {
            relay_host,
            relay_port,
            server_name,
            tls,
            id,
            credential,
            allow: Arc::new(allow),
            connections,
            connect_timeout,
            keepalive,
            drain_timeout,
            idle_timeout,
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
        })
    }
}

/// `https://host[:port]` → (host, port, TLS server name).
fn parse_relay_url(s: &str) -> Result<(String, u16, ServerName<'static>), String> {
    let uri: http::Uri = s.parse().map_err(|_| format!("{s:?} is not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!(
            "{s:?} must be an https:// URL (the relay speaks TLS)"
        ));
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("{s:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let server_name = match host.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(host.clone())
            .map_err(|_| format!("{host:?} is not a valid host name"))?,
    };
    Ok((host, port, server_name))
}

fn client_tls(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("{}: no certificate in the file", path.display()));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    // AES-128-GCM first: every tunnelled byte is encrypted once on each side, and it costs
    // fewer rounds than AES-256 for the same TLS 1.3 security level the relay needs.
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![handshake::ALPN.to_vec()];
    Ok(Arc::new(tls))
}

/// An authenticated relay connection: TLS over a TCP stream whose reads are buffered (TLS
/// reads record by record). Writes are not: the agent mostly sends, and HTTP/2 already hands
/// TLS whole frames of up to `MAX_FRAME_SIZE`; a write buffer would only add a copy.
type RelayStream = TlsStream<tokio::io::BufReader<TcpStream>>;

/// Why one relay connection attempt failed.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("cannot reach the relay: {0}")]
    Io(#[from] std::io::Error),
    #[error("relay connection timed out")]
    Timeout,
    #[error(transparent)]
    Handshake(#[from] handshake::HandshakeError),
    #[error("the relay refused this agent ({code}): {message}")]
    Refused { code: String, message: String },
}

/// Full-jitter exponential backoff: a uniformly random delay in
/// `[0, min(cap, base * 2^attempt)]` (the AWS architecture blog's "full jitter"), so many
/// agents that lost tollgate at once do not all come back in the same second.
pub fn backoff_delay(attempt: u32, random: u64) -> Duration {
    let bound = BACKOFF_BASE
        .saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
        .min(BACKOFF_CAP);
    let ms = bound.as_millis() as u64;
    Duration::from_millis(if ms == 0 { 0 } else { random % (ms + 1) })
}

fn random_u64() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    // A failing system RNG only makes the jitter predictable; the delay stays bounded.
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u64::from_le_bytes(b)
}

fn random_instance_id() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Shared by every connection and tunnel of the agent.
struct AgentState {
    config: AgentConfig,
    /// Resolves and connects (the allowlist is checked in between, see [`dial`]).
    dialer: DirectDialer,
}

/// Runs the agent until `shutdown`, then drains. Returns when every connection and tunnel
/// has ended or the drain timeout passed.
///
/// Each relay connection runs on its own thread with a single-threaded runtime, together
/// with its tunnels: a tunnel's bytes then never cross threads between the copy task and the
/// HTTP/2 connection task (measured: about a fifth less CPU per byte than one shared
/// multi-threaded runtime), while the connections still use several cores, and tollgate
/// spreads tunnels over them.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) {
    let instance = random_instance_id();
    if config.allow.is_empty() {
        tracing::warn!("the allowlist is empty: every tunnel will be refused (use --allow)");
    }
    tracing::info!(id = %config.id, relay = %format_args!("{}:{}", config.relay_host, config.relay_port),
        connections = config.connections, allow = ?config.allow.entries(), %instance,
        "agent starting");
    let drain = config.drain_timeout;
    let dialer = DirectDialer::new(
        Arc::new(SystemResolver),
        Guard::default(),
        config.connect_timeout,
    );
    let state = Arc::new(AgentState { config, dialer });
    let slots = TaskTracker::new();
    for slot in 0..state.config.connections {
        let tunnels = TaskTracker::new();
        let relay = slot_loop(
            state.clone(),
            instance.clone(),
            slot,
            shutdown.clone(),
            tunnels.clone(),
        );
        let work = slots.track_future(
            async move {
                relay.await;
                // The connection drained; tunnels that outlived it may finish too.
                tunnels.close();
                if tokio::time::timeout(drain, tunnels.wait()).await.is_err() {
                    tracing::warn!(
                        open = tunnels.len(),
                        "closing tunnels still open after the drain timeout"
                    );
                }
            }
            .instrument(tracing::info_span!("relay", slot)),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("relay-{slot}"))
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(work),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start a runtime for a relay connection")
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a thread for a relay connection");
        }
    }
    slots.close();
    shutdown.cancelled().await;
    if tokio::time::timeout(drain, slots.wait()).await.is_err() {
        tracing::warn!("drain timeout passed with relay connections or tunnels still open");
    }
    tracing::info!("agent stopped");
}

/// Keeps relay connection `slot` up until shutdown.
async fn slot_loop(
    state: Arc<AgentState>,
    instance: String,
    slot: u32,
    shutdown: CancellationToken,
    tunnels: TaskTracker,
) {
    let mut attempt: u32 = 0;
    while !shutdown.is_cancelled() {
        let connected = tokio::select! {
            () = shutdown.cancelled() => break,
            r = connect(&state.config, &instance, slot) => r,
        };
        match connected {
            Ok(tls) => {
                tracing::info!("connected to the relay");
                let up_since = Instant::now();
                let end = serve(state.clone(), tls, shutdown.clone(), tunnels.clone()).await;
                if shutdown.is_cancelled() {
                    break;
                }
                tracing::warn!(reason = %end, "relay connection lost");
                if up_since.elapsed() >= BACKOFF_RESET_AFTER {
                    attempt = 0;
                }
            }
            Err(ConnectError::Refused { code, message }) => {
                tracing::error!(code, message, "the relay refused this agent");
            }
            Err(e) => tracing::warn!(error = %e, "relay connection failed"),
        }
        let delay = backoff_delay(attempt, random_u64());
        attempt = attempt.saturating_add(1);
        tracing::debug!(?delay, attempt, "reconnecting after backoff");
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Dials the relay, TLS, hello, welcome.
async fn connect(
    config: &AgentConfig,
    instance: &str,
    slot: u32,
) -> Result<RelayStream, ConnectError> {
    let attempt = async {
        let tcp = tokio::time::timeout(
            config.connect_timeout,
            TcpStream::connect((config.relay_host.as_str(), config.relay_port)),
        )
        .await
        .map_err(|_| ConnectError::Timeout)??;
        tcp.set_nodelay(true)?;
        let buffered = tokio::io::BufReader::with_capacity(SOCKET_BUFFER, tcp);
        let mut tls = TlsConnector::from(config.tls.clone())
            .connect(config.server_name.clone(), buffered)
            .await?;
        let hello = Hello {
            credential: config.credential.0.clone(),
            instance: instance.to_string(),
            slot,
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        handshake::send_hello(&mut tls, &hello).await?;
        let welcome: Welcome = handshake::read_frame(&mut tls).await?;
        if !welcome.ok {
            return Err(ConnectError::Refused {
                code: welcome.error.unwrap_or_else(|| "refused".into()),
                message: welcome.message.unwrap_or_default(),
            });
        }
        Ok(tls)
    };
    tokio::time::timeout(RELAY_HANDSHAKE_TIMEOUT, attempt)
        .await
        .map_err(|_| ConnectError::Timeout)?
}

/// Serves HTTP/2 on an authenticated relay connection until it ends, or drains it on
/// shutdown. Returns why it ended.
async fn serve(
    state: Arc<AgentState>,
    tls: RelayStream,
    shutdown: CancellationToken,
    tunnels: TaskTracker,
) -> String {
    let svc_state = state.clone();
    let service =
        hyper::service::service_fn(move |req| tunnel(svc_state.clone(), tunnels.clone(), req));
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(state.config.keepalive)
        .keep_alive_timeout(state.config.keepalive)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_concurrent_streams(MAX_TUNNELS_PER_CONNECTION)
        .serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    let r = tokio::select! {
        r = conn.as_mut() => r,
        () = shutdown.cancelled() => {
            // GOAWAY: tollgate opens new tunnels elsewhere; open ones may finish.
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(state.config.drain_timeout, conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => return "drain timeout".into(),
            }
        }
    };
    match r {
        Ok(()) => "closed".into(),
        Err(e) => e.to_string(),
    }
}

type TunnelBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// The per-tunnel log line (`tollgate::agent::tunnel`), emitted when dropped.
struct TunnelLog {
    start: Instant,
    host: String,
    port: u16,
    decision: &'static str,
    reason: String,
    rule: String,
    addr: Option<SocketAddr>,
    status: u16,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
}

impl TunnelLog {
    /// Records how the tunnel ended (the line is written when the log is dropped).
    fn end(&mut self, reason: String) {
        self.reason = reason;
    }
}

impl Drop for TunnelLog {
    fn drop(&mut self) {
        tracing::info!(
            target: "tollgate::agent::tunnel",
            host = %self.host,
            port = self.port,
            decision = self.decision,
            reason = %self.reason,
            rule = %self.rule,
            addr = %self.addr.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
            status = self.status,
            bytes_up = self.up.load(Ordering::Relaxed),
            bytes_down = self.down.load(Ordering::Relaxed),
            duration_ms = self.start.elapsed().as_secs_f64() * 1000.0,
            "tunnel"
        );
    }
}

fn answer(status: StatusCode, code: &str, message: &str) -> Response<TunnelBody> {
    let body = serde_json::json!({"error": code, "message": message}).to_string();
    let mut resp = Response::new(Full::new(Bytes::from(body)).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Handles one stream: a `CONNECT host:port` from tollgate.
async fn tunnel(
    state: Arc<AgentState>,
    tunnels: TaskTracker,
    mut req: Request<Incoming>,
) -> Result<Response<TunnelBody>, Infallible> {
    let mut log = TunnelLog {
        start: Instant::now(),
        host: "-".into(),
        port: 0,
        decision: "denied",
        reason: String::new(),
        rule: "-".into(),
        addr: None,
        status: 0,
        up: Arc::default(),
        down: Arc::default(),
    };
    let refuse = |log: &mut TunnelLog, status: StatusCode, code: &'static str, message: String| {
        log.status = status.as_u16();
        log.reason = message.clone();
        answer(status, code, &message)
    };
    if req.method() != Method::CONNECT {
        return Ok(refuse(
            &mut log,
            StatusCode::METHOD_NOT_ALLOWED,
            "bad_request",
            "the agent only opens CONNECT tunnels".into(),
        ));
    }
    let Some((raw_host, port)) = req
        .uri()
        .authority()
        .and_then(|a| a.port_u16().map(|p| (a.host().to_string(), p)))
    else {
        return Ok(refuse(
            &mut log,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "CONNECT needs host:port".into(),
        ));
    };
    log.host = raw_host.clone();
    log.port = port;
    let host = match normalize_host(&raw_host) {
        Ok(h) => h,
        Err(e) => {
            return Ok(refuse(
                &mut log,
                StatusCode::BAD_REQUEST,
                "bad_request",
                e.to_string(),
            ))
        }
    };
    log.host = host.to_string();
    let matched = match state.config.allow.check_target(&host) {
        Ok(m) => m,
        Err(Refusal { code, message }) => {
            return Ok(refuse(&mut log, StatusCode::FORBIDDEN, code, message));
        }
    };
    log.rule = match &matched {
        TargetMatch::Name(r) | TargetMatch::Ip(r) => r.clone(),
        TargetMatch::Addresses => "by address".into(),
    };
    let stream = match dial(&state, &host, port, &matched).await {
        Ok((stream, addr)) => {
            log.addr = Some(addr);
            stream
        }
        Err(Dial::Refused(Refusal { code, message })) => {
            return Ok(refuse(&mut log, StatusCode::FORBIDDEN, code, message));
        }
        Err(Dial::Failed(e)) => {
            log.decision = "error";
            // The classification the proxy reports for its own direct dials, so a failure
            // reads the same on either route.
            return Ok(refuse(&mut log, e.status(), e.code(), e.to_string()));
        }
    };
    log.decision = "allowed";
    log.reason = "allowed".into();
    log.status = 200;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let idle = state.config.idle_timeout;
    tunnels.spawn(
        async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => {
                    log.end(format!("tunnel setup failed: {e}"));
                    return;
                }
            };
            let end = crate::proxy::connect::splice_with_buffer(
                TokioIo::new(upgraded),
                stream,
                idle,
                log.up.clone(),
                log.down.clone(),
                TUNNEL_BUFFER,
            )
            .await;
            log.end(end);
        }
        .in_current_span(),
    );
    Ok(Response::new(http_body_util::Empty::new().boxed()))
}

enum Dial {
    Refused(Refusal),
    Failed(DirectError),
}

/// Resolves once, checks every address against the allowlist (on top of the dialer's own
/// checks, which allow private addresses: the allowlist decides here), and dials a checked
/// address, all within one connect timeout.
async fn dial(
    state: &AgentState,
    host: &Host,
    port: u16,
    matched: &TargetMatch,
) -> Result<(TcpStream, SocketAddr), Dial> {
    let deadline = tokio::time::Instant::now() + state.config.connect_timeout;
    let addrs = state
        .dialer
        .resolve_checked_until(host, port, true, deadline)
        .await
        .map_err(Dial::Failed)?;
    for addr in &addrs {
        state
            .config
            .allow
            .check_address(matched, addr.ip())
            .map_err(Dial::Refused)?;
    }
    state
        .dialer
        .connect_until(host, port, &addrs, deadline)
        .await
        .map_err(Dial::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_full_jitter_capped() {
        assert_eq!(backoff_delay(0, 0), Duration::ZERO);
        assert!(backoff_delay(0, u64::MAX) <= Duration::from_secs(1));
        assert_eq!(backoff_delay(1, 2000), Duration::from_millis(2000));
        assert_eq!(backoff_delay(3, 7999), Duration::from_millis(7999));
        for attempt in [5, 6, 20, u32::MAX] {
            assert!(backoff_delay(attempt, u64::MAX - 1) <= BACKOFF_CAP);
            assert_eq!(backoff_delay(attempt, 30_000), BACKOFF_CAP);
        }
    }

    #[test]
    fn relay_urls() {
        let (h, p, _) = parse_relay_url("https://relay.example:8443").unwrap();
        assert_eq!((h.as_str(), p), ("relay.example", 8443));
        let (h, p, n) = parse_relay_url("https://[::1]").unwrap();
        assert_eq!((h.as_str(), p), ("::1", 443));
        assert!(matches!(n, ServerName::IpAddress(_)));
        assert!(parse_relay_url("http://relay.example").is_err());
        assert!(parse_relay_url("relay.example:443").is_err());
    }

    #[test]
    fn config_errors_are_reported_together() {
        let args = RunArgs {
            relay: Some("http://x".into()),
            id: Some("Bad ID".into()),
            allow: vec!["*".into()],
            connections: Some(0),
            keepalive: Some("never".into()),
            ..Default::default()
        };
        let err = AgentConfig::resolve(&args).unwrap_err();
        // relay, id, credential-file, allow, connections, keepalive
        assert_eq!(err.0.len(), 6, "{err}");
    }

    #[test]
    fn config_file_and_flags_merge() {
        let dir = tempfile::tempdir().unwrap();
        let cred = dir.path().join("cred");
        std::fs::write(&cred, "token\n").unwrap();
        let cfg = dir.path().join("agent.toml");
        std::fs::write(
            &cfg,
            format!(
                "relay = \"https://127.0.0.1:9443\"\nid = \"onprem-1\"\ncredential_file = {:?}\nallow = [\"*.corp\", \"10.0.0.0/8\"]\nconnections = 3\n",
                cred.display().to_string()
            ),
        )
        .unwrap();
        let args = RunArgs {
            config: Some(cfg.clone()),
            connections: Some(4),
            ..Default::default()
        };
        let c = AgentConfig::resolve(&args).unwrap();
        assert_eq!(c.connections, 4, "flag wins");
        assert_eq!(c.allow.entries(), ["*.corp", "10.0.0.0/8"]);
        assert_eq!(format!("{:?}", c.credential), "Credential(MASKED)");
        std::fs::write(&cfg, "relay = \"https://x\"\nallowed = []\n").unwrap();
        let err = AgentConfig::resolve(&RunArgs {
            config: Some(cfg),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains(":2:") && err.contains("allowed"), "{err}");
    }
}
