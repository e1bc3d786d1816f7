//! Absolute-form `http://` requests: forwarded through a pooled hyper-util client whose
//! connector dials through the address guard, with TLS on top when tollgate originates it
//! (plain-http requests to an outbound application's domains; hyper-rustls, ring), or, for
//! agent routes, opens a tunnel through the agent ([`AgentUpstream`]).
//!
//! Two pools exist on purpose: connections dialed under a rule that may reach private
//! addresses are never handed to a request whose rule may not (the pool is keyed by
//! scheme+authority only, so mixing them would let one org's `private = true` rule leak a
//! connection to another org's request for the same name).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONNECTION, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{Either, Empty};
use hyper::body::{Body, Incoming};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::errors::ProxyError;
use crate::policy::{normalize_host, Host};
use crate::relay::{AgentDialError, AgentStream, Registry};
use crate::route::direct::{DialError, DirectDialer};

/// How long an idle pooled upstream connection is kept.
pub(crate) const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle pooled connections kept per upstream host.
pub(crate) const POOL_MAX_IDLE_PER_HOST: usize = 256;

/// Body of a request sent upstream: the client's streamed body, or a buffered copy that can
/// be replayed once after a token refresh.
pub type UpstreamBody = BoxBody<Bytes, hyper::Error>;

type UpstreamClient = Client<HttpsConnector<HandoffConnector>, UpstreamBody>;

/// Pooled upstream clients for direct routes, shared by plain-http forwarding (with or
/// without TLS origination) and intercepted tunnels, so an originated and an intercepted
/// request to the same host can reuse one connection.
pub struct Upstream {
    /// Dials only public addresses.
    strict: UpstreamClient,
    /// May dial private addresses (winning rule has `private = true` or is a CIDR rule).
    private: UpstreamClient,
    /// Connections dialed before an intercepted `CONNECT` was answered, waiting to become
    /// pooled connections.
    handoff: Arc<Handoff>,
    /// Time the upstream has to begin its response.
    response_timeout: Duration,
}

impl Upstream {
    /// Clients over `dialer`; `tls` verifies upstreams of `https` requests (TLS origination,
    /// intercepted requests). HTTP/2 is used when a TLS upstream offers it.
    pub fn new(
        dialer: Arc<DirectDialer>,
        response_timeout: Duration,
        tls: rustls::ClientConfig,
    ) -> Self {
        let handoff = Arc::new(Handoff::default());
        let build = |allow_private| {
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls.clone())
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .wrap_connector(HandoffConnector {
                    dialer: dialer.clone(),
                    handoff: handoff.clone(),
                    allow_private,
                });
            // `Host` is set by the client only where a request lacks it (intercepted HTTP/1.1
            // requests); forwarded requests carry the one `prepare_request` set.
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .build(connector)
        };
        Upstream {
            strict: build(false),
            private: build(true),
            handoff,
            response_timeout,
        }
    }

    /// Sends `req` (absolute-form, headers already cleaned) upstream; an `https` URI makes
    /// the connection TLS.
    pub async fn send(
        &self,
        req: Request<UpstreamBody>,
        allow_private: bool,
    ) -> Result<Response<Incoming>, ProxyError> {
        let client = if allow_private {
            &self.private
        } else {
            &self.strict
        };
        match tokio::time::timeout(self.response_timeout, client.request(req)).await {
            Err(_) => Err(ProxyError::UpstreamTimeout(self.response_timeout)),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(map_client_error(&e)),
        }
    }

    /// Keeps `stream`, dialed (guard checked) to `host:port` under `allow_private`, for the
    /// next new connection to that target within [`HANDOFF_MAX_AGE`].
    pub fn adopt(&self, host: &Host, port: u16, allow_private: bool, stream: TcpStream) {
        let key = HandoffKey {
            authority: format!("{host}:{port}"),
            allow_private,
        };
        self.handoff.put(key, stream);
    }
}

/// Prepares a client request for the upstream: origin of the URI kept (the client converts to
/// origin-form), `Host` set from the target (a different `Host` would let a request reach a
/// virtual host the policy never saw), hop-by-hop and proxy headers removed.
pub fn prepare_request<B>(req: &mut Request<B>, authority: &str) -> Result<(), ProxyError> {
    strip_hop_by_hop(req.headers_mut());
    let host = HeaderValue::from_str(authority)
        .map_err(|_| ProxyError::BadRequest("invalid host in request target".into()))?;
    req.headers_mut().insert(HOST, host);
    *req.version_mut() = Version::HTTP_11;
    Ok(())
}

/// Points the request at `https://host:port` (TLS origination): the pool then keys the
/// connection by the https authority, and hyper-rustls verifies the certificate for `host`.
/// `Host` keeps what the client asked for, minus a port the origin no longer listens on.
pub fn originate_tls<B>(req: &mut Request<B>, host: &Host, port: u16) -> Result<(), ProxyError> {
    let bad = || ProxyError::BadRequest("invalid request target".into());
    // The authority as an intercepted request to the same origin writes it (no `:443`), so
    // both share pooled connections, and HTTP/2's `:authority` equals `Host`.
    let authority = https_authority(host, port)?;
    let value = HeaderValue::from_str(authority.as_str()).map_err(|_| bad())?;
    *req.uri_mut() = https_uri(authority, req.uri().path_and_query())?;
    req.headers_mut().insert(HOST, value);
    Ok(())
}

/// `host`, plus `:port` unless 443: how requests to an https origin name it.
pub fn https_authority(host: &Host, port: u16) -> Result<Authority, ProxyError> {
    let text = if port == 443 {
        host.to_string()
    } else {
        format!("{host}:{port}")
    };
    Authority::try_from(text).map_err(|_| ProxyError::BadRequest("invalid request target".into()))
}

/// `https://{authority}{path_and_query}` (path `/` when there is none), built from parts.
pub fn https_uri(authority: Authority, path: Option<&PathAndQuery>) -> Result<Uri, ProxyError> {
    Uri::builder()
        .scheme(Scheme::HTTPS)
        .authority(authority)
        .path_and_query(
            path.cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        )
        .build()
        .map_err(|_| ProxyError::BadRequest("invalid request target".into()))
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), those named by `Connection`, and the
/// proxy's own credentials, which are never forwarded.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

/// Cleans an upstream response: hop-by-hop headers go, and so does any `Proxy-Status` the
/// upstream sent (clients must be able to trust that header as tollgate's own).
pub fn clean_response<B>(resp: &mut Response<B>) {
    strip_hop_by_hop(resp.headers_mut());
    resp.headers_mut().remove("proxy-status");
}

/// The proxy error for a failed upstream exchange: the dial error or TLS failure found in
/// the error's chain, else a generic upstream error.
pub(crate) fn map_client_error(e: &hyper_util::client::legacy::Error) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(d) = s.downcast_ref::<DialError>() {
            return ProxyError::Dial(d.clone());
        }
        if let Some(a) = s.downcast_ref::<AgentDialError>() {
            return a.clone().into();
        }
        if let Some(t) = tls_error(s) {
            return ProxyError::UpstreamTls {
                certificate: matches!(
                    t,
                    rustls::Error::InvalidCertificate(_)
                        | rustls::Error::InvalidCertRevocationList(_)
                ),
                detail: t.to_string(),
            };
        }
        source = s.source();
    }
    let detail = match std::error::Error::source(e) {
        Some(s) => s.to_string(),
        None => e.to_string(),
    };
    ProxyError::Upstream(detail)
}

/// A rustls error, directly or inside (nested) `io::Error`s, whose `source()` skips the error
/// they wrap, so the chain walk alone would miss it (hyper-rustls wraps tokio-rustls's
/// `io::Error` in another one).
fn tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut e: &(dyn std::error::Error + 'static) = e;
    loop {
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        e = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    }
}

/// The port a connector dials for `uri`: the explicit one, else the scheme's default.
fn uri_port(uri: &Uri) -> u16 {
    let default = if uri.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    uri.port_u16().unwrap_or(default)
}

/// A connection dialed before the `200` is used for a new upstream connection only while it is
/// this young: servers close connections that send no TLS ClientHello (commonly after 10 s or
/// more), and a stale one would fail the request.
pub const HANDOFF_MAX_AGE: Duration = Duration::from_secs(5);
/// Pre-dialed connections waiting for their first request, beyond which old ones are purged.
const HANDOFF_MAX_ENTRIES: usize = 1024;

/// Which pre-dialed connection a new upstream connection may use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct HandoffKey {
    /// `host:port`, host normalized (IPv6 in brackets).
    pub(crate) authority: String,
    /// The pool it may join.
    pub(crate) allow_private: bool,
}

/// Pre-dialed connections, at most one per key; the newest wins.
#[derive(Default)]
struct Handoff {
    slots: Mutex<HashMap<HandoffKey, (TcpStream, Instant)>>,
}

impl Handoff {
    fn put(&self, key: HandoffKey, stream: TcpStream) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.len() >= HANDOFF_MAX_ENTRIES {
            slots.retain(|_, (_, at)| at.elapsed() < HANDOFF_MAX_AGE);
        }
        // A replaced connection is closed: the pool evidently had what it needed.
        slots.insert(key, (stream, Instant::now()));
    }

    /// A pre-dialed connection for `key` that is young and still open.
    fn take(&self, key: &HandoffKey) -> Option<TcpStream> {
        let (stream, at) = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key)?;
        if at.elapsed() >= HANDOFF_MAX_AGE {
            return None;
        }
        // Nothing may have arrived before our ClientHello: EOF or data means it is unusable.
        match stream.try_read(&mut [0u8; 1]) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Some(stream),
            _ => None,
        }
    }
}

/// The upstream clients' connector: a pre-dialed connection for the target if there is one,
/// else a fresh dial through [`DirectDialer`] (resolve once, guard, dial a checked address).
#[derive(Clone)]
struct HandoffConnector {
    dialer: Arc<DirectDialer>,
    handoff: Arc<Handoff>,
    /// As the policy decided for the pool this connector serves.
    allow_private: bool,
}

impl tower_service::Service<Uri> for HandoffConnector {
    type Response = TokioIo<TcpStream>;
    type Error = DialError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, DialError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), DialError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let raw = uri.host().unwrap_or_default();
        let host = match normalize_host(raw) {
            Ok(h) => h,
            Err(e) => {
                return Box::pin(std::future::ready(Err(DialError::Dns {
                    host: raw.to_string(),
                    detail: e.to_string(),
                })))
            }
        };
        let port = uri_port(&uri);
        let key = HandoffKey {
            authority: format!("{host}:{port}"),
            allow_private: self.allow_private,
        };
        if let Some(stream) = self.handoff.take(&key) {
            return Box::pin(std::future::ready(Ok(TokioIo::new(stream))));
        }
        let dialer = self.dialer.clone();
        let allow_private = self.allow_private;
        Box::pin(async move {
            let (stream, _) = dialer.dial(&host, port, allow_private).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// Body of a request forwarded through an agent: the client's, or none for a replay.
type AgentBody = Either<UpstreamBody, Empty<Bytes>>;
type AgentClient = Client<HttpsConnector<AgentConnector>, AgentBody>;

/// Pooled upstream clients for agent routes, one per agent ID: the pool is keyed by
/// scheme+authority only, so a connection through one agent must never serve a request routed
/// through another (two orgs may reach the same internal name through different agents).
///
/// A request that fails before any response head on a pooled tunnel (typically: the agent
/// behind it just died) is sent once more on a fresh tunnel when that is safe: the method is
/// idempotent (GET, HEAD, OPTIONS, TRACE) and there is no body to replay. The replay never
/// takes a pooled connection: others in the pool may go through the same dead agent.
///
/// An `https` URI (TLS origination, or an intercepted request) gets TLS end to end through
/// the tunnel: the agent only carries bytes, tollgate verifies the upstream's certificate.
pub struct AgentUpstream {
    registry: Arc<Registry>,
    /// Per agent: the pooled client, and an unpooled one for replays.
    clients: RwLock<HashMap<Arc<str>, (AgentClient, AgentClient)>>,
    response_timeout: Duration,
    /// Verifies upstreams reached over TLS (webpki roots plus `--upstream-ca-file`); ALPN
    /// left to hyper-rustls.
    tls: rustls::ClientConfig,
}

impl AgentUpstream {
    /// Clients dialing through `registry`; `tls` verifies upstreams of `https` requests.
    pub fn new(
        registry: Arc<Registry>,
        response_timeout: Duration,
        tls: rustls::ClientConfig,
    ) -> Self {
        AgentUpstream {
            registry,
            clients: RwLock::default(),
            response_timeout,
            tls,
        }
    }

    fn clients(&self, agent: &Arc<str>) -> (AgentClient, AgentClient) {
        if let Some(c) = self
            .clients
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(agent)
        {
            return c.clone();
        }
        let build = |max_idle| {
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(self.tls.clone())
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .wrap_connector(AgentConnector {
                    registry: self.registry.clone(),
                    agent: agent.clone(),
                });
            // `Host` is left to the client for HTTP/1.1 requests that lack one (intercepted
            // requests arrive without it); forwarded requests already carry theirs.
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                .pool_max_idle_per_host(max_idle)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .build(connector)
        };
        let mut clients = self.clients.write().unwrap_or_else(|p| p.into_inner());
        clients
            .entry(agent.clone())
            .or_insert_with(|| (build(POOL_MAX_IDLE_PER_HOST), build(0)))
            .clone()
    }

    /// Sends `req` (absolute-form, headers already cleaned) through agent `agent`. With no
    /// agent connected, answers `agent_unavailable` at once.
    pub async fn send(
        &self,
        agent: &Arc<str>,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, ProxyError> {
        self.registry.require(agent)?;
        let (client, fresh) = self.clients(agent);
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
        let first =
            tokio::time::timeout(self.response_timeout, client.request(req.map(Either::Left)))
                .await;
        let err = match first {
            Err(_) => return Err(ProxyError::UpstreamTimeout(self.response_timeout)),
            Ok(Ok(resp)) => return Ok(resp),
            Ok(Err(e)) => e,
        };
        match replay {
            Some(again) if !err.is_connect() => {
                tracing::debug!(agent = %agent, error = %err, "request failed on a pooled agent tunnel; sending it again");
                let again = again.map(|()| Either::Right(Empty::new()));
                match tokio::time::timeout(self.response_timeout, fresh.request(again)).await {
                    Err(_) => Err(ProxyError::UpstreamTimeout(self.response_timeout)),
                    Ok(Ok(resp)) => Ok(resp),
                    Ok(Err(e)) => Err(map_client_error(&e)),
                }
            }
            _ => Err(map_client_error(&err)),
        }
    }
}

/// hyper-util connector that opens a tunnel through one agent.
#[derive(Clone)]
pub struct AgentConnector {
    registry: Arc<Registry>,
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
            let host = uri.host().unwrap_or_default();
            let stream = registry.dial(&agent, host, uri_port(&uri)).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("proxy-authorization", HeaderValue::from_static("Bearer t"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn originated_requests_name_the_authority_as_intercepted_ones_do() {
        let host = Host::Name("api.example".into());
        let mut req = Request::get("http://api.example/v1?x=1").body(()).unwrap();
        originate_tls(&mut req, &host, 443).unwrap();
        assert_eq!(req.uri(), "https://api.example/v1?x=1");
        assert_eq!(req.headers()[HOST], "api.example");
        let mut req = Request::get("http://api.example:8443/v1").body(()).unwrap();
        originate_tls(&mut req, &host, 8443).unwrap();
        assert_eq!(req.uri(), "https://api.example:8443/v1");
        assert_eq!(req.headers()[HOST], "api.example:8443");
    }

    #[test]
    fn upstream_proxy_status_is_not_passed_on() {
        let mut r = Response::new(());
        r.headers_mut()
            .insert("proxy-status", HeaderValue::from_static("evil; error=none"));
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("text/plain"));
        clean_response(&mut r);
        assert!(!r.headers().contains_key("proxy-status"));
        assert!(r.headers().contains_key("content-type"));
    }

    #[tokio::test]
    async fn handoff_gives_out_young_open_connections_once() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let h = Handoff::default();
        let key = HandoffKey {
            authority: format!("127.0.0.1:{}", addr.port()),
            allow_private: true,
        };
        let s = TcpStream::connect(addr).await.unwrap();
        let (_server, _) = l.accept().await.unwrap();
        h.put(key.clone(), s);
        assert!(h.take(&key).is_some());
        assert!(h.take(&key).is_none(), "given out once");
        let other = HandoffKey {
            allow_private: false,
            ..key.clone()
        };
        let s = TcpStream::connect(addr).await.unwrap();
        let (_server2, _) = l.accept().await.unwrap();
        h.put(key.clone(), s);
        assert!(h.take(&other).is_none(), "not across pools");
        // The server closes it: once the FIN is readable, the connection is not handed out.
        let s = TcpStream::connect(addr).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        drop(server);
        s.readable().await.unwrap();
        h.put(key.clone(), s);
        assert!(h.take(&key).is_none(), "closed connection handed out");
    }
}
