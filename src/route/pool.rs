//! The pooled upstream clients behind [`Router::send`](super::Router::send): hyper-util
//! clients whose connectors dial through the address guard (direct routes) or open a tunnel
//! through an agent (agent routes), with TLS on top for `https` URIs (TLS origination and
//! intercepted requests; hyper-rustls, ring; HTTP/2 when the upstream offers it).
//!
//! Pools are split on purpose, because hyper-util keys a pool by scheme+authority only:
//! - direct connections are pooled per [`Reach`]: one dialed under a rule that may reach
//!   private addresses is never handed to a request whose rule may not (one org's
//!   `private = true` rule must not leak a connection to another org's request for the same
//!   name), nor one dialed through the parent proxy to a policy that bypasses it, nor one
//!   dialed without a `cidrs` condition to a request allowed only under one;
//! - a connection through one agent never serves a request routed through another (two orgs
//!   may reach the same internal name through different agents).
//!
//! A connection dialed before an intercepted `CONNECT` was answered reaches the pool through
//! the request that needs a new connection: the tunnel passes its [`Predialed`] slot to
//! [`Router::send`](super::Router::send), which makes it visible to the connector for the
//! duration of that one request (a tokio task-local), and the connector takes it instead of
//! dialing. Nothing is shared between tunnels.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{Either, Empty};
use hyper::body::{Body, Incoming};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::direct::{DirectDialer, DirectError};
use super::{DialError, SendError};
use crate::policy::{normalize_host, Host, Reach};
use crate::relay::{AgentDialError, AgentStream, Registry};

/// How long an idle pooled upstream connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle pooled connections kept per upstream host.
const POOL_MAX_IDLE_PER_HOST: usize = 256;
/// Direct clients kept (one per distinct [`Reach`]); beyond it they are made again.
const MAX_DIRECT_POOLS: usize = 64;

/// A connection dialed before the `200` is used for a new upstream connection only while it is
/// this young: servers close connections that send no TLS ClientHello (commonly after 10 s or
/// more), and a stale one would fail the request.
pub const PREDIALED_MAX_AGE: Duration = Duration::from_secs(5);

/// Body of a request sent upstream: the client's streamed body, or a buffered copy that can
/// be replayed once after a token refresh.
pub type UpstreamBody = BoxBody<Bytes, hyper::Error>;

type DirectClient = Client<HttpsConnector<DirectConnector>, UpstreamBody>;
/// Body of a request forwarded through an agent: the client's, or none for a replay.
type AgentBody = Either<UpstreamBody, Empty<Bytes>>;
type AgentClient = Client<HttpsConnector<AgentConnector>, AgentBody>;

/// The connection an intercepted `CONNECT` dialed (guard checked) before its `200`, kept by
/// its tunnel until a request of that tunnel needs a new upstream connection.
pub struct Predialed {
    /// The target it was dialed for; the connector uses it only for that target.
    host: Host,
    /// The target's port.
    port: u16,
    /// The connection and when it was dialed; taken at most once.
    slot: Mutex<Option<(TcpStream, Instant)>>,
    /// Set once the slot is empty, so later requests of the tunnel skip the offer (and its
    /// lock) altogether.
    spent: AtomicBool,
}

impl Predialed {
    /// Keeps `stream`, dialed to `host:port`.
    pub fn new(host: Host, port: u16, stream: TcpStream) -> Self {
        Predialed {
            host,
            port,
            slot: Mutex::new(Some((stream, Instant::now()))),
            spent: AtomicBool::new(false),
        }
    }

    /// Whether there is still a connection to offer.
    fn available(&self) -> bool {
        !self.spent.load(Ordering::Relaxed)
    }

    /// Closes the connection if it is too old to be used, so a tunnel whose requests found
    /// pooled connections does not hold it open for its whole life.
    fn release_if_stale(&self) {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() >= PREDIALED_MAX_AGE)
        {
            *slot = None;
            self.spent.store(true, Ordering::Relaxed);
        }
    }

    /// The connection, if it is for `host:port`, young, and still open (nothing may have
    /// arrived before our ClientHello: EOF or data means it is unusable).
    fn take(&self, host: &Host, port: u16) -> Option<TcpStream> {
        if self.host != *host || self.port != port {
            return None;
        }
        let (stream, at) = self.slot.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        self.spent.store(true, Ordering::Relaxed);
        if at.elapsed() >= PREDIALED_MAX_AGE {
            return None;
        }
        match stream.try_read(&mut [0u8; 1]) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Some(stream),
            _ => None,
        }
    }
}

tokio::task_local! {
    /// The pre-dialed connection of the request being sent, for the connector to take.
    static PREDIALED: Arc<Predialed>;
}

/// The pooled clients of every route.
pub(super) struct Pools {
    /// Direct routes: one pooled client per [`Reach`], created on first use, so a
    /// connection dialed under one rule's reach never serves a request under another's.
    /// Held in an `Arc`: a request takes one reference, not a copy of the client's parts.
    direct: RwLock<HashMap<Reach, Arc<DirectClient>>>,
    /// Dials the direct clients' connections.
    dialer: Arc<DirectDialer>,
    /// Per agent: the pooled client, and an unpooled one for replays.
    agents: RwLock<HashMap<Arc<str>, (AgentClient, AgentClient)>>,
    /// Tunnels for agent routes.
    registry: Arc<Registry>,
    /// Time the upstream has to begin its response.
    response_timeout: Duration,
    /// Verifies upstreams reached over TLS (webpki roots plus `--upstream-ca-file`); ALPN
    /// left to hyper-rustls.
    tls: rustls::ClientConfig,
}

/// A pooled client over `connector`, keeping at most `max_idle` idle connections per host.
/// `Host` is set by the client only where a request lacks it (intercepted HTTP/1.1
/// requests); forwarded requests carry their own.
fn client<C, B>(
    tls: &rustls::ClientConfig,
    connector: C,
    max_idle: usize,
) -> Client<HttpsConnector<C>, B>
where
    C: tower_service::Service<Uri> + Clone + Send + Sync + 'static,
    C::Response: hyper::rt::Read
        + hyper::rt::Write
        + hyper_util::client::legacy::connect::Connection
        + Send
        + Unpin
        + 'static,
    C::Future: Send + 'static,
    C::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls.clone())
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(connector);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(max_idle)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}

impl Pools {
    pub(super) fn new(
        dialer: Arc<DirectDialer>,
        registry: Arc<Registry>,
        response_timeout: Duration,
        tls: rustls::ClientConfig,
    ) -> Self {
        Pools {
            direct: RwLock::default(),
            dialer,
            agents: RwLock::default(),
            registry,
            response_timeout,
            tls,
        }
    }

    /// Sends `req` on a direct route; `predialed`, when given, is offered to the connector
    /// should this request need a new connection.
    pub(super) async fn send_direct(
        &self,
        req: Request<UpstreamBody>,
        reach: &Reach,
        predialed: Option<&Arc<Predialed>>,
    ) -> Result<Response<Incoming>, SendError> {
        let sent = self.direct_client(reach).request(req);
        let sent = async {
            match predialed.filter(|p| p.available()) {
                Some(p) => {
                    let sent = PREDIALED.scope(p.clone(), sent).await;
                    p.release_if_stale();
                    sent
                }
                None => sent.await,
            }
        };
        match tokio::time::timeout(self.response_timeout, sent).await {
            Err(_) => Err(SendError::Timeout(self.response_timeout)),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(SendError::from_client(&e)),
        }
    }

    /// The pooled client of `reach`. The distinct reaches are few (one per combination of
    /// rule settings, and one per `cidrs`-allowed rule set); past [`MAX_DIRECT_POOLS`], as
    /// after many reloads, the clients are dropped and made again.
    fn direct_client(&self, reach: &Reach) -> Arc<DirectClient> {
        if let Some(c) = self
            .direct
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(reach)
        {
            return c.clone();
        }
        let mut clients = self.direct.write().unwrap_or_else(|p| p.into_inner());
        if clients.len() >= MAX_DIRECT_POOLS {
            clients.clear();
        }
        let connector = DirectConnector {
            dialer: self.dialer.clone(),
            reach: reach.clone(),
        };
        clients
            .entry(reach.clone())
            .or_insert_with(|| Arc::new(client(&self.tls, connector, POOL_MAX_IDLE_PER_HOST)))
            .clone()
    }

    fn agent_clients(&self, agent: &Arc<str>) -> (AgentClient, AgentClient) {
        if let Some(c) = self
            .agents
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(agent)
        {
            return c.clone();
        }
        let build = |max_idle| {
            let connector = AgentConnector {
                registry: self.registry.clone(),
                agent: agent.clone(),
            };
            client(&self.tls, connector, max_idle)
        };
        let mut clients = self.agents.write().unwrap_or_else(|p| p.into_inner());
        clients
            .entry(agent.clone())
            .or_insert_with(|| (build(POOL_MAX_IDLE_PER_HOST), build(0)))
            .clone()
    }

    /// Sends `req` through agent `agent`. With no agent connected, fails with
    /// `agent_unavailable` at once.
    ///
    /// A request that fails before any response head on a pooled tunnel (typically: the
    /// agent behind it just died) is sent once more on a fresh tunnel when that is safe: the
    /// method is idempotent (GET, HEAD, OPTIONS, TRACE) and there is no body to replay. The
    /// replay never takes a pooled connection: others in the pool may go through the same
    /// dead agent.
    pub(super) async fn send_agent(
        &self,
        agent: &Arc<str>,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, SendError> {
        self.registry
            .require(agent)
            .map_err(|e| SendError::Dial(DialError::Agent(e)))?;
        let (client, fresh) = self.agent_clients(agent);
        let replay = (matches!(
            *req.method(),
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        ) && req.body().is_end_stream())
        .then(|| {
            let mut r = Request::new(());
            *r.method_mut() = req.method().clone();
            *r.uri_mut() = req.uri().clone();
            *r.version_mut() = req.version();
            *r.headers_mut() = req.headers().clone();
            r
        });
        let timeout = self.response_timeout;
        let first = tokio::time::timeout(timeout, client.request(req.map(Either::Left))).await;
        let err = match first {
            Err(_) => return Err(SendError::Timeout(timeout)),
            Ok(Ok(resp)) => return Ok(resp),
            Ok(Err(e)) => e,
        };
        match replay {
            Some(again) if !err.is_connect() => {
                tracing::debug!(agent = %agent, error = %err, "request failed on a pooled agent tunnel; sending it again");
                let again = again.map(|()| Either::Right(Empty::new()));
                match tokio::time::timeout(timeout, fresh.request(again)).await {
                    Err(_) => Err(SendError::Timeout(timeout)),
                    Ok(Ok(resp)) => Ok(resp),
                    Ok(Err(e)) => Err(SendError::from_client(&e)),
                }
            }
            _ => Err(SendError::from_client(&err)),
        }
    }
}

/// The port a connector dials for `uri` (built by tollgate, so a written port is valid).
fn uri_port(uri: &Uri) -> Result<u16, DirectError> {
    let default = if uri.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    let bad = || DirectError::Dns {
        host: uri.to_string(),
        detail: "invalid port".into(),
    };
    let auth = uri.authority().ok_or_else(bad)?;
    Ok(crate::policy::authority_port(auth.as_str())
        .map_err(|_| bad())?
        .unwrap_or(default))
}

/// The direct pools' connector: the request's pre-dialed connection if it has one for the
/// target, else a fresh dial through [`DirectDialer`] (resolve once, guard, dial a checked
/// address).
#[derive(Clone)]
struct DirectConnector {
    /// Resolves once, guards, dials a checked address.
    dialer: Arc<DirectDialer>,
    /// As the policy decided for the pool this connector serves.
    reach: Reach,
}

impl tower_service::Service<Uri> for DirectConnector {
    type Response = TokioIo<TcpStream>;
    type Error = DirectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, DirectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), DirectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let target = uri_port(&uri).and_then(|port| {
            let raw = uri.host().unwrap_or_default();
            normalize_host(raw)
                .map(|host| (host, port))
                .map_err(|e| DirectError::Dns {
                    host: raw.to_string(),
                    detail: e.to_string(),
                })
        });
        let (host, port) = match target {
            Ok(t) => t,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        // Called within the request's poll, so the task-local of `send_direct` is visible.
        let predialed = PREDIALED.try_with(|p| p.take(&host, port)).ok().flatten();
        if let Some(stream) = predialed {
            return Box::pin(std::future::ready(Ok(TokioIo::new(stream))));
        }
        let dialer = self.dialer.clone();
        let reach = self.reach.clone();
        Box::pin(async move {
            let (stream, _) = dialer.dial_reach(&host, port, &reach).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// hyper-util connector that opens a tunnel through one agent.
#[derive(Clone)]
struct AgentConnector {
    /// Connected agents.
    registry: Arc<Registry>,
    /// The agent this connector's pool goes through (one pool per agent).
    agent: Arc<str>,
}

impl tower_service::Service<Uri> for AgentConnector {
    type Response = TokioIo<AgentStream>;
    type Error = AgentDialError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, AgentDialError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), AgentDialError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let registry = self.registry.clone();
        let agent = self.agent.clone();
        Box::pin(async move {
            let port = uri_port(&uri).map_err(|e| AgentDialError::Failed {
                agent: agent.to_string(),
                kind: crate::relay::AgentFailure::Relay,
                message: e.to_string(),
            })?;
            let host = uri.host().unwrap_or_default();
            let stream = registry.dial(&agent, host, port).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn predialed_connections_are_given_out_once_young_open_and_for_their_target() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let host = normalize_host("127.0.0.1").unwrap();
        let s = TcpStream::connect(addr).await.unwrap();
        let (_server, _) = l.accept().await.unwrap();
        let p = Predialed::new(host.clone(), addr.port(), s);
        assert!(p.take(&host, addr.port() + 1).is_none(), "other target");
        assert!(p.available());
        assert!(p.take(&host, addr.port()).is_some());
        assert!(p.take(&host, addr.port()).is_none(), "given out once");
        assert!(!p.available());
        // The server closes it: once the FIN is readable, the connection is not handed out.
        let s = TcpStream::connect(addr).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        drop(server);
        s.readable().await.unwrap();
        let p = Predialed::new(host.clone(), addr.port(), s);
        assert!(
            p.take(&host, addr.port()).is_none(),
            "closed connection handed out"
        );
    }
}
