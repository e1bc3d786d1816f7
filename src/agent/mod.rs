//! `tollgate agent run`: the agent inside a private network. It opens no port: it keeps a
//! few TLS connections to tollgate's relay listener ([`crate::relay`]), authenticates each
//! with its credential, and then serves HTTP/2 on them — the connection is turned around,
//! tollgate is the client.
//!
//! - [`connection`]: one relay connection — dial, TLS, handshake, the HTTP/2 server, and
//!   redialing with full-jitter exponential backoff (1 s base, 30 s cap);
//! - `tunnel`: each `CONNECT host:port` stream is one tunnel. The agent checks its
//!   [`Allowlist`], resolves the name once, checks every address, dials only a checked one,
//!   and answers 200 only after the dial succeeded (400, 403, 502 or 504 with a JSON reason
//!   otherwise). Then bytes flow through [`crate::io`], with HTTP/2 flow control bounding
//!   what a slow side can make either end buffer;
//! - [`allow`]: the agent's own allowlist, checked before and after DNS;
//! - [`credential_file`]: the credential new connections present, replaced by the relay's
//!   renewals and written back to `--credential-file` atomically;
//! - [`replicas`]: a session to every live tollgate replica, as the relay lists them, with
//!   `--relay` (perhaps a load-balanced name) as the bootstrap and the fallback.
//!
//! On SIGTERM the agent drains: every connection sends GOAWAY (tollgate opens new tunnels
//! elsewhere), open tunnels may finish for up to the drain timeout, then it exits.
//!
//! The settings are read and validated by [`crate::config::agent`].

pub mod allow;
pub mod connection;
pub mod credential_file;
pub mod replicas;
mod tunnel;

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::logging::LogFormat;
use crate::route::direct::{DirectDialer, SystemResolver};
use crate::route::guard::Guard;
use allow::Allowlist;
use connection::{random_instance_id, slot_loop};

/// The credential text; `Debug` never prints it.
#[derive(Clone)]
pub struct Credential(String);

impl Credential {
    /// Wraps the credential text read from `--credential-file`.
    pub fn new(text: String) -> Self {
        Credential(text)
    }

    /// The text, for the relay handshake only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

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
    /// `--credential-file`, where renewed credentials are written.
    pub credential_file: std::path::PathBuf,
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

/// Shared by every connection and tunnel of the agent.
struct AgentState {
    /// The validated settings.
    config: AgentConfig,
    /// Resolves and connects (the allowlist is checked in between, see `tunnel::dial`).
    dialer: DirectDialer,
    /// The credential new connections present, and renewals of it.
    credentials: Arc<credential_file::CredentialFile>,
}

/// Starts connection `i` of `session` on a thread of its own, until `stop`; then its tunnels
/// may finish for up to `drain`.
fn spawn_slot(
    state: &Arc<AgentState>,
    session: &Arc<replicas::Session>,
    instance: &str,
    i: u32,
    stop: &CancellationToken,
    slots: &TaskTracker,
    drain: Duration,
) {
    let slot = session.slot(i);
    let tunnels = TaskTracker::new();
    let relay = slot_loop(
        state.clone(),
        session.clone(),
        instance.to_string(),
        slot,
        stop.clone(),
        tunnels.clone(),
    );
    let span = match &session.replica {
        None => tracing::info_span!("relay", slot),
        Some(replica) => tracing::info_span!("relay", slot, %replica),
    };
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
        .instrument(span),
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
    let credentials = Arc::new(credential_file::CredentialFile::new(
        config.credential_file.clone(),
        config.id.clone(),
        config.credential.clone(),
    ));
    tokio::spawn(credential_file::watch(
        credentials.clone(),
        shutdown.clone(),
    ));
    let state = Arc::new(AgentState {
        config,
        dialer,
        credentials,
    });
    let book = Arc::new(replicas::Book::default());
    let slots = TaskTracker::new();
    let start = |session: Arc<replicas::Session>, stop: CancellationToken| {
        for i in 0..state.config.connections {
            spawn_slot(&state, &session, &instance, i, &stop, &slots, drain);
        }
    };
    // The bootstrap session (`--relay`) always runs; direct sessions follow the replica list.
    let bootstrap = replicas::Session {
        host: state.config.relay_host.clone(),
        port: state.config.relay_port,
        replica: None,
        book: book.clone(),
    };
    start(Arc::new(bootstrap), shutdown.clone());
    replicas::follow(book, start, shutdown.clone()).await;
    slots.close();
    if tokio::time::timeout(drain, slots.wait()).await.is_err() {
        tracing::warn!("drain timeout passed with relay connections or tunnels still open");
    }
    tracing::info!("agent stopped");
}
