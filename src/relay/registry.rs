//! The relay registry: which agents are connected, over which relay connections, and how a
//! tunnel is opened through one of them.
//!
//! Every authenticated relay connection is an HTTP/2 client connection (tollgate is the
//! client, the agent the server). Opening a tunnel is one `CONNECT host:port` stream; the
//! agent answers 200 only once it has dialed the destination, so a [`Registry::dial`] that
//! returns `Ok` hands back a byte stream to a connected destination, exactly like a direct
//! TCP dial.
//!
//! Choice of connection: among the connections of the agent ID (several agent processes may
//! share an ID, each with several connections), the one with the fewest open tunnels wins;
//! ties rotate so idle agents share new work. A connection whose agent never answered a
//! `CONNECT` (it died, or sent GOAWAY while draining) is set aside and the dial is retried
//! on the next one, so a dying agent costs no failed tunnel as long as another one is there.
//! This retry is safe: the destination never saw a byte of the failed attempt.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::metrics::{AgentLabel, AgentMetrics, BytesLabels};
use super::stream::{AgentStream, Lease};

/// Largest error body read from an agent's refusal.
const MAX_REFUSAL_BODY: usize = 4 * 1024;

/// How long an agent's refusal body may take to arrive after its status line.
const REFUSAL_BODY_TIMEOUT: Duration = Duration::from_secs(2);

/// What kind of failure an agent reported (or the relay met) when opening a tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentFailure {
    /// The agent's allowlist does not include the destination (403).
    Denied,
    /// The destination resolved to an address the agent refuses, e.g. link-local (403).
    Prohibited,
    /// The agent could not resolve the name (502).
    Dns,
    /// The destination refused the connection, or another dial error (502).
    Refused,
    /// The agent's dial timed out, or the agent did not answer in time (504).
    Timeout,
    /// The relay connection failed or the agent answered something unexpected (502).
    Relay,
}

impl AgentFailure {
    /// The error code tollgate reports for it (DESIGN "Errors from the proxy itself").
    pub fn code(self) -> &'static str {
        match self {
            AgentFailure::Denied => "destination_denied",
            AgentFailure::Prohibited => "destination_ip_prohibited",
            AgentFailure::Dns => "dns_error",
            AgentFailure::Refused => "connection_refused",
            AgentFailure::Timeout => "connection_timeout",
            AgentFailure::Relay => "agent_unavailable",
        }
    }

    /// Reads the agent's answer: its `error` code when it is one tollgate knows, else the
    /// status. An agent is trusted to explain, not to invent codes.
    fn from_answer(status: StatusCode, code: Option<&str>) -> Self {
        match code {
            Some("destination_denied") => AgentFailure::Denied,
            Some("destination_ip_prohibited") => AgentFailure::Prohibited,
            Some("dns_error") => AgentFailure::Dns,
            Some("connection_refused") => AgentFailure::Refused,
            Some("connection_timeout") => AgentFailure::Timeout,
            _ => match status {
                StatusCode::FORBIDDEN => AgentFailure::Denied,
                StatusCode::GATEWAY_TIMEOUT => AgentFailure::Timeout,
                StatusCode::BAD_GATEWAY => AgentFailure::Refused,
                _ => AgentFailure::Relay,
            },
        }
    }
}

/// Why [`Registry::dial`] could not open a tunnel.
#[derive(Clone, Debug, thiserror::Error)]
pub enum AgentDialError {
    /// No connection of this agent ID is up (`502 agent_unavailable`, at once).
    #[error("no agent {agent:?} is connected")]
    Unavailable {
        /// The agent ID.
        agent: String,
    },
    /// The agent (or the relay connection to it) failed to open the tunnel.
    #[error("agent {agent}: {message}")]
    Failed {
        /// The agent ID.
        agent: String,
        /// What kind of failure.
        kind: AgentFailure,
        /// The agent's reason, or the relay's.
        message: String,
    },
}

impl AgentDialError {
    /// The error code (`agent_unavailable`, `destination_denied`, `dns_error`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            AgentDialError::Unavailable { .. } => "agent_unavailable",
            AgentDialError::Failed { kind, .. } => kind.code(),
        }
    }

    /// The agent ID the dial was for.
    pub fn agent(&self) -> &str {
        match self {
            AgentDialError::Unavailable { agent } | AgentDialError::Failed { agent, .. } => agent,
        }
    }
}

/// Per-connection metric handles, looked up once at registration so the data path only
/// touches atomics.
pub(super) struct ConnMetrics {
    pub(super) open_tunnels: Gauge,
    pub(super) tunnels: Counter,
    pub(super) up: Counter,
    pub(super) down: Counter,
}

/// One authenticated relay connection.
pub struct RelayConn {
    /// Registry-unique, to tell connections apart in logs and retries.
    pub(super) id: u64,
    /// Agent ID from the credential.
    pub(super) agent: Arc<str>,
    /// The agent process's random instance ID.
    pub(super) instance: String,
    /// Which of the instance's connections.
    slot: u32,
    /// Where the agent connected from.
    peer: SocketAddr,
    /// When the credential it authenticated with was issued (ns since the Unix epoch): a
    /// revocation closes the connections whose credential it covers, not newer ones.
    pub(super) issued_at_ns: u64,
    /// When it was registered, Unix seconds (`GET /v1/agents`).
    pub(super) connected_at: u64,
    /// HTTP/2 handle; cloned per tunnel.
    send: SendRequest<Empty<Bytes>>,
    /// Open tunnels (and dials in progress): the load measure for picking.
    pub(super) in_flight: AtomicUsize,
    /// Set aside: no new tunnels (the agent failed to answer, or a newer connection of the
    /// same instance and slot replaced it). Closed once its last tunnel ends.
    pub(super) closing: AtomicBool,
    /// Cancelled to make the relay task drop the connection.
    pub(super) stop: CancellationToken,
    pub(super) metrics: ConnMetrics,
}

impl RelayConn {
    /// Cancelled when the registry wants this connection closed.
    pub fn stopped(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Registry-unique connection number.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Open tunnels on this connection.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Stops new tunnels; closes now if none is open, else when the last one ends.
    fn set_aside(&self) {
        self.closing.store(true, Ordering::SeqCst);
        if self.in_flight.load(Ordering::SeqCst) == 0 {
            self.stop.cancel();
        }
    }

    /// Closes now, tunnels and all: the credential it authenticated with (or last renewed
    /// on it) expired.
    pub(super) fn expire(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.stop.cancel();
    }

    /// The agent ID it authenticated as.
    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// The agent process's random instance ID.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub(super) fn usable(&self) -> bool {
        !self.closing.load(Ordering::Relaxed) && !self.send.is_closed()
    }
}

impl std::fmt::Debug for RelayConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayConn")
            .field("id", &self.id)
            .field("agent", &self.agent)
            .field("instance", &self.instance)
            .field("slot", &self.slot)
            .field("peer", &self.peer)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

/// Connected agents and their relay connections.
pub struct Registry {
    /// Agent ID → its live connections.
    agents: Mutex<HashMap<Arc<str>, Vec<Arc<RelayConn>>>>,
    metrics: AgentMetrics,
    /// How long a dial waits for the agent's answer: the agent's own connect timeout plus
    /// some slack, so the agent's 504 (with its reason) normally arrives first.
    dial_timeout: Duration,
    next_id: AtomicU64,
    /// Tie-break among equally loaded connections.
    rotate: AtomicUsize,
    /// The live replicas, told to every connected agent (`replicas`).
    replicas: Arc<super::replicas::Directory>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("dial_timeout", &self.dial_timeout)
            .finish_non_exhaustive()
    }
}

/// Slack on top of the connect timeout before tollgate gives up on an agent's answer.
const DIAL_SLACK: Duration = Duration::from_secs(5);

impl Registry {
    /// An empty registry. `connect_timeout` is tollgate's; a dial waits for the agent's
    /// answer for that long plus a few seconds.
    pub fn new(metrics: AgentMetrics, connect_timeout: Duration) -> Self {
        Registry {
            agents: Mutex::default(),
            metrics,
            dial_timeout: connect_timeout + DIAL_SLACK,
            next_id: AtomicU64::new(1),
            rotate: AtomicUsize::new(0),
            replicas: Arc::default(),
        }
    }

    /// The live replicas this registry tells its agents about.
    pub fn replicas(&self) -> &Arc<super::replicas::Directory> {
        &self.replicas
    }

    /// The metrics this registry updates.
    pub fn metrics(&self) -> &AgentMetrics {
        &self.metrics
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Vec<Arc<RelayConn>>>> {
        // A panic while holding the lock leaves the map consistent (every mutation is one
        // std call), so keep using it.
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an authenticated connection, made with a credential issued at `issued_at_ns`. A
    /// connection of the same agent instance and slot that is still registered is stale (the
    /// agent would not have redialed otherwise): it is set aside and closed once its tunnels
    /// end.
    pub fn register(
        &self,
        agent: &str,
        instance: String,
        slot: u32,
        peer: SocketAddr,
        issued_at_ns: u64,
        send: SendRequest<Empty<Bytes>>,
    ) -> Arc<RelayConn> {
        let label = AgentLabel {
            agent: agent.to_string(),
        };
        let bytes = |direction| {
            self.metrics
                .bytes
                .get_or_create(&BytesLabels {
                    agent: agent.to_string(),
                    direction,
                })
                .clone()
        };
        let metrics = ConnMetrics {
            open_tunnels: self.metrics.open_tunnels.get_or_create(&label).clone(),
            tunnels: self.metrics.tunnels.get_or_create(&label).clone(),
            up: bytes("up"),
            down: bytes("down"),
        };
        let mut agents = self.lock();
        let key: Arc<str> = agents
            .get_key_value(agent)
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| agent.into());
        let conn = Arc::new(RelayConn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            agent: key.clone(),
            instance,
            slot,
            peer,
            issued_at_ns,
            // A clock before 1970 only blurs this display value.
            connected_at: crate::clock::Clock::system().now().unwrap_or(0),
            send,
            in_flight: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            stop: CancellationToken::new(),
            metrics,
        });
        let list = agents.entry(key).or_default();
        for stale in list
            .iter()
            .filter(|c| c.instance == conn.instance && c.slot == conn.slot)
        {
            tracing::info!(agent, conn = stale.id, replaced_by = conn.id, peer = %stale.peer,
                "stale relay connection of the same agent instance replaced");
            stale.set_aside();
        }
        list.push(conn.clone());
        self.metrics.connections.get_or_create(&label).inc();
        conn
    }

    /// Removes a connection whose relay task ended.
    pub fn unregister(&self, conn: &RelayConn) {
        let mut agents = self.lock();
        let Some(list) = agents.get_mut(&*conn.agent) else {
            return;
        };
        let before = list.len();
        list.retain(|c| c.id != conn.id);
        if list.len() < before {
            self.metrics
                .connections
                .get_or_create(&AgentLabel {
                    agent: conn.agent.to_string(),
                })
                .dec();
        }
        if list.is_empty() {
            agents.remove(&*conn.agent);
        }
    }

    /// Number of usable connections of `agent`.
    pub fn connections(&self, agent: &str) -> usize {
        self.lock()
            .get(agent)
            .map(|l| l.iter().filter(|c| c.usable()).count())
            .unwrap_or(0)
    }

    /// Fails with [`AgentDialError::Unavailable`] (counted, as [`Registry::dial`] counts it)
    /// when no connection of `agent` is up: for callers that open their tunnels later.
    pub fn require(&self, agent: &str) -> Result<(), AgentDialError> {
        if self.connections(agent) > 0 {
            return Ok(());
        }
        let e = AgentDialError::Unavailable {
            agent: agent.to_string(),
        };
        self.metrics.dial_failed(agent, e.code());
        Err(e)
    }

    /// Closes every connection (shutdown).
    pub fn close_all(&self) {
        for list in self.lock().values() {
            for c in list {
                c.stop.cancel();
            }
        }
    }

    /// The least loaded usable connection of `agent` not in `tried`, with its in-flight count
    /// already raised.
    fn pick(&self, agent: &str, tried: &[u64]) -> Option<Lease> {
        let agents = self.lock();
        let list = agents.get(agent)?;
        let n = list.len();
        if n == 0 {
            return None;
        }
        let start = self.rotate.fetch_add(1, Ordering::Relaxed) % n;
        let best = (0..n)
            .map(|i| &list[(start + i) % n])
            .filter(|c| c.usable() && !tried.contains(&c.id))
            .min_by_key(|c| c.in_flight.load(Ordering::Relaxed))?;
        Some(Lease::new(best.clone()))
    }

    /// Opens a tunnel to `host:port` through agent `agent`.
    ///
    /// Fails at once with [`AgentDialError::Unavailable`] when no connection of the agent is
    /// up. Otherwise sends `CONNECT host:port` on the least loaded connection; the agent
    /// answers 200 only after its dial succeeded, so the stream returned is connected.
    /// Refusals carry the agent's reason. `host` is a name or an IP literal (IPv6 with or
    /// without brackets).
    pub async fn dial(
        &self,
        agent: &str,
        host: &str,
        port: u16,
    ) -> Result<AgentStream, AgentDialError> {
        let result = self.dial_inner(agent, host, port).await;
        if let Err(e) = &result {
            self.metrics.dial_failed(agent, e.code());
        }
        result
    }

    async fn dial_inner(
        &self,
        agent: &str,
        host: &str,
        port: u16,
    ) -> Result<AgentStream, AgentDialError> {
        let failed = |kind, message: String| AgentDialError::Failed {
            agent: agent.to_string(),
            kind,
            message,
        };
        let authority = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let uri: http::Uri = authority.parse().map_err(|_| {
            failed(
                AgentFailure::Relay,
                format!("invalid destination {authority:?}"),
            )
        })?;
        let deadline = Instant::now() + self.dial_timeout;
        let mut tried = Vec::new();
        let mut last_error = None;
        loop {
            let Some(lease) = self.pick(agent, &tried) else {
                return Err(last_error.unwrap_or_else(|| AgentDialError::Unavailable {
                    agent: agent.to_string(),
                }));
            };
            tried.push(lease.conn.id);
            let req = Request::builder()
                .method(Method::CONNECT)
                .uri(uri.clone())
                .body(Empty::new())
                .map_err(|e| failed(AgentFailure::Relay, e.to_string()))?;
            let mut send = lease.conn.send.clone();
            let resp = match tokio::time::timeout_at(deadline, send.send_request(req)).await {
                Err(_) => {
                    return Err(failed(
                        AgentFailure::Timeout,
                        format!(
                            "no answer to CONNECT {authority} within {:?}",
                            self.dial_timeout
                        ),
                    ))
                }
                Ok(Err(e)) => {
                    // The agent never answered: the destination saw nothing, try another.
                    tracing::debug!(agent, conn = lease.conn.id, error = %e,
                        "relay connection failed a CONNECT; setting it aside");
                    lease.conn.set_aside();
                    last_error = Some(failed(
                        AgentFailure::Relay,
                        format!("relay connection failed: {e}"),
                    ));
                    continue;
                }
                Ok(Ok(resp)) => resp,
            };
            let status = resp.status();
            if status == StatusCode::OK {
                let upgraded = hyper::upgrade::on(resp).await.map_err(|e| {
                    failed(AgentFailure::Relay, format!("tunnel setup failed: {e}"))
                })?;
                lease.conn.metrics.tunnels.inc();
                return Ok(AgentStream::new(TokioIo::new(upgraded), lease));
            }
            let body = tokio::time::timeout(
                REFUSAL_BODY_TIMEOUT,
                Limited::new(resp.into_body(), MAX_REFUSAL_BODY).collect(),
            )
            .await;
            let refusal: Option<serde_json::Value> = match body {
                Ok(Ok(b)) => serde_json::from_slice(&b.to_bytes()).ok(),
                _ => None,
            };
            let code = refusal
                .as_ref()
                .and_then(|v| v.get("error"))
                .and_then(|v| v.as_str());
            let kind = AgentFailure::from_answer(status, code);
            let message = refusal
                .as_ref()
                .and_then(|v| v.get("message"))
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| format!("agent answered {status}"));
            return Err(failed(kind, message));
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::convert::Infallible;

    use http::Response;
    use http_body_util::Full;
    use hyper::body::Incoming;
    use hyper_util::rt::TokioExecutor;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An in-memory agent: an HTTP/2 server that refuses `denied.test` with the agent's JSON
    /// answer and echoes every other tunnel.
    pub(in crate::relay) async fn agent_conn() -> SendRequest<Empty<Bytes>> {
        let svc = hyper::service::service_fn(|mut req: Request<Incoming>| async move {
            if req.uri().host() == Some("denied.test") {
                let mut r = Response::new(Full::new(Bytes::from_static(
                    br#"{"error":"destination_denied","message":"not in the allowlist"}"#,
                )));
                *r.status_mut() = StatusCode::FORBIDDEN;
                return Ok::<_, Infallible>(r);
            }
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    let (mut r, mut w) = tokio::io::split(TokioIo::new(up));
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
            Ok(Response::new(Full::new(Bytes::new())))
        });
        serve_agent(svc).await
    }

    /// An in-memory agent serving `svc`: the relay's end of its HTTP/2 connection.
    pub(in crate::relay) async fn serve_agent<S>(svc: S) -> SendRequest<Empty<Bytes>>
    where
        S: hyper::service::Service<Request<Incoming>, Response = Response<Full<Bytes>>>
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (tollgate_end, agent_end) = tokio::io::duplex(1 << 20);
        tokio::spawn(
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(agent_end), svc),
        );
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(tollgate_end))
            .await
            .unwrap();
        tokio::spawn(conn);
        send
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    #[tokio::test]
    async fn tunnels_spread_by_load_refusals_pass_through_stale_connections_are_replaced() {
        let r = Registry::new(AgentMetrics::default(), Duration::from_secs(5));
        let first = r.register("a", "one".into(), 0, peer(), 1, agent_conn().await);
        let second = r.register("a", "two".into(), 0, peer(), 1, agent_conn().await);
        assert_eq!(r.connections("a"), 2);

        // Least in flight: four open tunnels end up two per connection.
        let mut open = Vec::new();
        for _ in 0..4 {
            open.push(r.dial("a", "db.test", 5432).await.unwrap());
        }
        assert_eq!((first.in_flight(), second.in_flight()), (2, 2));

        // Bytes go through.
        let t = &mut open[0];
        t.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        t.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");

        // The agent's refusal comes back with its code and reason.
        match r.dial("a", "denied.test", 443).await {
            Err(AgentDialError::Failed { kind, message, .. }) => {
                assert_eq!(kind, AgentFailure::Denied);
                assert_eq!(message, "not in the allowlist");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }

        // Instance "one" reconnects slot 0: its old connection takes no new tunnels and is
        // closed once its own tunnels end.
        let replacement = r.register("a", "one".into(), 0, peer(), 1, agent_conn().await);
        assert_eq!(r.connections("a"), 2);
        assert!(!first.stopped().is_cancelled(), "tunnels still open on it");
        for _ in 0..3 {
            let t = r.dial("a", "db.test", 5432).await.unwrap();
            assert_eq!(first.in_flight(), 2, "stale connection picked");
            drop(t);
        }
        open.clear();
        assert!(first.stopped().is_cancelled());
        r.unregister(&first);
        r.unregister(&second);
        r.unregister(&replacement);
        assert_eq!(r.connections("a"), 0);
        assert_eq!(
            r.dial("a", "db.test", 5432).await.unwrap_err().code(),
            "agent_unavailable"
        );
    }

    #[tokio::test]
    async fn no_agent_is_unavailable_at_once_and_counted() {
        let r = Registry::new(AgentMetrics::default(), Duration::from_secs(10));
        let started = std::time::Instant::now();
        let e = r.dial("onprem-1", "db.corp", 5432).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(100));
        assert_eq!(e.code(), "agent_unavailable");
        assert_eq!(e.agent(), "onprem-1");
        assert_eq!(r.connections("onprem-1"), 0);
    }

    #[test]
    fn agent_answers_map_to_codes() {
        let cases = [
            (403, Some("destination_denied"), "destination_denied"),
            (
                403,
                Some("destination_ip_prohibited"),
                "destination_ip_prohibited",
            ),
            (502, Some("dns_error"), "dns_error"),
            (502, None, "connection_refused"),
            (504, None, "connection_timeout"),
            (403, Some("made_up"), "destination_denied"),
            (500, Some("made_up"), "agent_unavailable"),
        ];
        for (status, code, want) in cases {
            let s = StatusCode::from_u16(status).unwrap();
            assert_eq!(
                AgentFailure::from_answer(s, code).code(),
                want,
                "{status} {code:?}"
            );
        }
    }
}
