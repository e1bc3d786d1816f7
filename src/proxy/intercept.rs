//! HTTPS interception ("TLS MITM") for the `CONNECT`s that need it, and only those.
//!
//! A `CONNECT` is intercepted when the host belongs to an outbound application of the
//! caller's org (decided in `proxy_request`), or when [`Interception::predicate`] says so
//! (default: never; tests and embedders set it). An intercepted `CONNECT` goes through the
//! same phases as a tunnel — policy, route, dial on direct routes (the address guard applies)
//! — and only then gets its `200`. After that:
//!
//! 1. TLS is accepted with a leaf for the `CONNECT` host from the [`LeafCache`] (ALPN `h2`,
//!    `http/1.1`);
//! 2. inner requests are served with hyper-util's `auto` server (HTTP/1.1 and HTTP/2);
//! 3. each inner request must name the `CONNECT` target in `Host` / `:authority` (default
//!    port 443), else `421 misdirected_request`; it is rewritten to an absolute
//!    `https://host[:port]/...` URI and handed to the [`InnerHandler`];
//! 4. each inner request gets its own access log line (method, host, status, bytes,
//!    `injected`); the `CONNECT` line follows when the tunnel closes, with the raw bytes.
//!
//! The default handler, [`UpstreamForwarder`], calls the optional [`RequestHook`] (where token
//! injection plugs in) and forwards over TLS through the pooled clients of plain-http
//! forwarding ([`Upstream`]), whose connector is the proxy's guarded dialer (or, on agent
//! routes, through the agent with TLS end to end): the address guard and the policy's `allow_private` hold for
//! every upstream connection; SNI is the target host; HTTP/2 is used when the upstream offers
//! it; certificates are verified against the webpki roots plus `--upstream-ca-file`, and a
//! failed verification is `502 tls_certificate_error`.
//!
//! The connection dialed before the `200` is not wasted: it is handed to the forwarder
//! ([`InnerHandler::adopt_upstream`]), whose connector uses it for the next new upstream
//! connection to that target if that happens within
//! [`HANDOFF_MAX_AGE`](super::forward::HANDOFF_MAX_AGE).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{HeaderValue, HOST, TE};
use http::uri::Authority;
use http::{Method, Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ServerConfig;
use std::sync::atomic::AtomicU64;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::errors::ProxyError;
use super::forward::{
    clean_response, https_authority, https_uri, strip_hop_by_hop, AgentUpstream, Upstream,
    UpstreamBody,
};
use super::log::{CountingBody, RequestLog};
use super::replay::{send_replayable, Reinject};
use super::{ProxyBody, ProxyState};
use crate::identity::Caller;
use crate::metrics::Metrics;
use crate::policy::{normalize_host, Decision, Host, Route};
use crate::tls::LeafCache;

use super::HYPER_BUF_MIN;
use crate::io::{Activity, Metered};

/// Decides, per `CONNECT`, whether to intercept besides the app domains of the caller's org
/// (which always are): `(caller, host, port) -> bool`. Called after the policy allowed the
/// destination.
pub type InterceptPredicate = Arc<dyn Fn(&Caller, &Host, u16) -> bool + Send + Sync>;

/// The default predicate: never intercept; every `CONNECT` is a blind tunnel.
pub fn never() -> InterceptPredicate {
    Arc::new(|_, _, _| false)
}

/// The `CONNECT` target of an intercepted tunnel, as the policy allowed it.
#[derive(Debug)]
pub struct InterceptTarget {
    /// Normalized host.
    pub host: Host,
    /// Port.
    pub port: u16,
    /// `host`, plus `:port` unless 443: the authority of the rewritten inner requests.
    pub authority: Authority,
    /// The policy decision for the `CONNECT` (route, `allow_private`, policy and rule).
    pub decision: Decision,
}

impl InterceptTarget {
    /// A target for `host:port` under `decision`.
    pub fn new(host: Host, port: u16, decision: Decision) -> Result<Self, ProxyError> {
        Ok(InterceptTarget {
            authority: https_authority(&host, port)?,
            host,
            port,
            decision,
        })
    }
}

/// The token injection step of outbound applications, as a [`RequestHook`]: the same step
/// plain-http forwarding runs (authorization_required, refresh, app_disabled, and the refresh
/// and replay after an upstream `401 invalid_token`).
pub struct InjectionHook(pub Arc<crate::oauth::inject::Injector>);

#[async_trait::async_trait]
impl RequestHook for InjectionHook {
    async fn on_request(
        &self,
        caller: &Arc<Caller>,
        target: &InterceptTarget,
        parts: &mut http::request::Parts,
    ) -> Result<HookOutcome, ProxyError> {
        match self
            .0
            .apply(caller, &target.host, &mut parts.headers)
            .await?
        {
            None => Ok(HookOutcome::default()),
            Some(injected) => Ok(HookOutcome {
                injected: true,
                app: Some(injected.app.id.clone()),
                reauthorize: Some(Reinject {
                    injector: self.0.clone(),
                    caller: caller.clone(),
                    injected,
                }),
            }),
        }
    }
}

/// What a [`RequestHook`] did to a request it let through.
#[derive(Default)]
pub struct HookOutcome {
    /// A token was injected (shown as `injected` in the access log).
    pub injected: bool,
    /// The outbound application involved (shown as `app`).
    pub app: Option<String>,
    /// When the hook set credentials the upstream may reject (`401 invalid_token`): how to
    /// get fresh ones, for one replay of the request.
    pub reauthorize: Option<Reinject>,
}

impl std::fmt::Debug for HookOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookOutcome")
            .field("injected", &self.injected)
            .field("app", &self.app)
            .field("reauthorize", &self.reauthorize.is_some())
            .finish()
    }
}

/// Called on every inner request before the default handler forwards it: may change the
/// request (e.g. set `Authorization`) or answer instead by returning the error to send
/// (e.g. `401 authorization_required`), which [`super::errors`] turns into the response.
///
/// Wiring token injection is one line: `server.with_request_hook(Arc::new(inject_step))`.
#[async_trait::async_trait]
pub trait RequestHook: Send + Sync {
    /// Inspects and possibly modifies `parts` (absolute `https://` URI, no `Host` header,
    /// hop-by-hop headers already removed).
    async fn on_request(
        &self,
        caller: &Arc<Caller>,
        target: &InterceptTarget,
        parts: &mut http::request::Parts,
    ) -> Result<HookOutcome, ProxyError>;
}

/// Serves the inner requests of intercepted tunnels. Requests arrive checked (they target the
/// `CONNECT` host) and rewritten to an absolute `https://` URI without a `Host` header.
#[async_trait::async_trait]
pub trait InnerHandler: Send + Sync {
    /// Answers one inner request. `log` is the request's access-log context: set `injected`
    /// and `app` there, and count request body bytes into `log.bytes_up` (response bytes
    /// are counted by the caller). An error becomes the proxy's own response.
    async fn handle(
        &self,
        caller: &Arc<Caller>,
        target: &InterceptTarget,
        req: Request<Incoming>,
        log: &mut RequestLog,
    ) -> Result<Response<ProxyBody>, ProxyError>;

    /// Receives the connection dialed (guard checked) before the `CONNECT` was answered,
    /// once the client's TLS handshake succeeded. The default drops it.
    fn adopt_upstream(&self, target: &InterceptTarget, stream: TcpStream) {
        let _ = (target, stream);
    }
}

/// Everything interception needs, shared by all connections.
pub struct Interception {
    /// Which `CONNECT`s to intercept.
    pub predicate: InterceptPredicate,
    /// Leaf certificates per host.
    pub leaves: Arc<LeafCache>,
    /// What answers inner requests.
    pub handler: Arc<dyn InnerHandler>,
}

impl std::fmt::Debug for Interception {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interception")
            .field("leaves", &self.leaves)
            .finish_non_exhaustive()
    }
}

/// What `proxy_request` hands over when a `CONNECT` is intercepted.
pub struct Intercepted {
    /// The connection dialed to the target before the `200`; `None` on agent routes, whose
    /// inner requests open (pooled) tunnels through the agent as they come.
    pub upstream: Option<TcpStream>,
    /// The server configuration presenting the target's leaf.
    pub tls: Arc<ServerConfig>,
    /// The target.
    pub target: Arc<InterceptTarget>,
    /// The caller who sent the `CONNECT`.
    pub caller: Arc<Caller>,
}

/// Per-tunnel context for the inner requests.
struct Tunnel {
    state: Arc<ProxyState>,
    peer: SocketAddr,
    caller: Arc<Caller>,
    target: Arc<InterceptTarget>,
}

/// Runs an intercepted tunnel to its end: TLS accept, inner requests, idle timeout. `log` is
/// the `CONNECT`'s line, emitted when the tunnel closes with the raw bytes both ways.
pub(crate) async fn run(
    state: Arc<ProxyState>,
    i: Box<Intercepted>,
    client: Upgraded,
    counts: Counts,
) -> String {
    let Intercepted {
        upstream,
        tls,
        target,
        caller,
    } = *i;
    let activity = Arc::new(Activity::new());
    let io = Metered {
        inner: TokioIo::new(client),
        activity: activity.clone(),
        read: counts.up,
        written: Some(counts.down),
    };
    let settings = &state.settings;
    let accept = tokio_rustls::TlsAcceptor::from(tls).accept(io);
    let end = match tokio::time::timeout(settings.request_head_timeout, accept).await {
        Err(_) => "client TLS handshake timed out".to_string(),
        Ok(Err(e)) => {
            // The usual cause is a client that does not trust the tollgate CA.
            tracing::info!(host = %target.host, error = %e,
                "intercepted client TLS handshake failed (does the client trust the tollgate CA?)");
            "client TLS handshake failed".to_string()
        }
        Ok(Ok(stream)) => {
            if let Some(upstream) = upstream {
                state.intercept.handler.adopt_upstream(&target, upstream);
            }
            serve_inner(
                &state,
                stream,
                Tunnel {
                    state: state.clone(),
                    peer: counts.peer,
                    caller,
                    target,
                },
                &activity,
            )
            .await
        }
    };
    end
}

/// What the `CONNECT`'s access line needs from an intercepted tunnel: its raw byte counts
/// (the line itself is written by the tunnel's owner when the tunnel ends).
pub(crate) struct Counts {
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
    peer: SocketAddr,
}

impl Counts {
    /// The counters of `log`.
    pub(crate) fn of(log: &RequestLog) -> Counts {
        Counts {
            up: log.bytes_up.clone(),
            down: log.bytes_down.clone(),
            peer: log.peer,
        }
    }
}

/// Serves HTTP/1.1 or HTTP/2 on the decrypted stream until the client is done or the tunnel
/// is idle for the idle timeout.
async fn serve_inner<S>(
    state: &ProxyState,
    stream: S,
    tunnel: Tunnel,
    activity: &Activity,
) -> String
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let settings = &state.settings;
    let tunnel = Arc::new(tunnel);
    let service = hyper::service::service_fn(move |req| {
        let tunnel = tunnel.clone();
        async move { Ok::<_, Infallible>(inner_request(&tunnel, req).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.request_head_timeout)
        .max_buf_size(
            settings
                .max_request_head
                .saturating_mul(4)
                .max(HYPER_BUF_MIN),
        )
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_request_head).unwrap_or(u32::MAX));
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let idle = settings.idle_timeout;
    tokio::select! {
        r = conn => match r {
            Ok(()) => "closed".into(),
            Err(e) => e.to_string(),
        },
        () = crate::io::idle_watchdog(activity, idle) => "idle timeout".into(),
    }
}

/// One inner request: check the target, rewrite, hand to the handler, log.
async fn inner_request(tunnel: &Tunnel, req: Request<Incoming>) -> Response<ProxyBody> {
    let state = &tunnel.state;
    let target = &tunnel.target;
    let mut log = RequestLog::new(state.metrics.clone(), tunnel.peer, req.method().clone());
    log.host = Some(target.host.to_string());
    log.port = target.port;
    log.caller = Some(tunnel.caller.clone());
    log.set_decision(&target.decision);
    let result = match check_and_rewrite(req, target) {
        Ok(req) => {
            state
                .intercept
                .handler
                .handle(&tunnel.caller, target, req, &mut log)
                .await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(resp) => {
            log.status = resp.status().as_u16();
            let down = log.bytes_down.clone();
            resp.map(|body| CountingBody::new(body, down, Some(log)).boxed())
        }
        Err(e) => {
            log.record_error(&e);
            // Dropping `log` here emits the line: the error body is complete in memory.
            e.into_response()
        }
    }
}

/// Checks that `req` targets the `CONNECT` host and port (default 443), then rewrites it to
/// an absolute `https://` URI with the target's authority and no `Host` header (the upstream
/// client derives `Host` / `:authority` from the URI).
pub fn check_and_rewrite<B>(
    mut req: Request<B>,
    target: &InterceptTarget,
) -> Result<Request<B>, ProxyError> {
    if req.method() == Method::CONNECT {
        return Err(ProxyError::BadRequest(
            "CONNECT inside an intercepted tunnel is not supported".into(),
        ));
    }
    let from_uri = req.uri().authority().cloned();
    let from_host = match req.headers().get(HOST) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<Authority>().ok())
                .ok_or_else(|| ProxyError::BadRequest("invalid Host header".into()))?,
        ),
    };
    if from_uri.is_none() && from_host.is_none() {
        return Err(ProxyError::BadRequest("request without Host".into()));
    }
    for auth in [from_uri, from_host].into_iter().flatten() {
        // The usual case, the authority exactly as the target writes it (compared without
        // case), needs no normalization.
        if auth == target.authority {
            continue;
        }
        let (host, port) = inner_target(&auth)?;
        if host != target.host || port != target.port {
            return Err(ProxyError::Misdirected(format!(
                "this connection is for {}:{}; the request is for {host}:{port}",
                target.host, target.port
            )));
        }
    }
    if req
        .uri()
        .path_and_query()
        .is_some_and(|p| p.as_str() == "*")
    {
        return Err(ProxyError::BadRequest(
            "asterisk-form requests are not forwarded".into(),
        ));
    }
    *req.uri_mut() = https_uri(target.authority.clone(), req.uri().path_and_query())?;
    req.headers_mut().remove(HOST);
    Ok(req)
}

/// The normalized host and port (default 443) an inner request names.
fn inner_target(auth: &Authority) -> Result<(Host, u16), ProxyError> {
    if auth.as_str().contains('@') {
        return Err(ProxyError::BadRequest(
            "user information in the authority is not allowed".into(),
        ));
    }
    let host = normalize_host(auth.host()).map_err(|e| ProxyError::BadRequest(e.to_string()))?;
    Ok((host, auth.port_u16().unwrap_or(443)))
}

/// The default [`InnerHandler`]: runs the [`RequestHook`], if any, then forwards upstream over
/// verified TLS: pooled through the guarded dialer on direct routes, through the agent on
/// agent routes.
pub struct UpstreamForwarder {
    /// Direct routes: the same pooled clients plain-http forwarding uses.
    upstream: Arc<Upstream>,
    /// Where token injection plugs in.
    hook: Option<Arc<dyn RequestHook>>,
    /// For the upstream latency histogram.
    metrics: Arc<Metrics>,
    /// Tunnels whose policy routes through an agent send their inner requests through it
    /// (TLS end to end, verified here); `None` = no agent routes.
    agents: Option<Arc<AgentUpstream>>,
}

impl UpstreamForwarder {
    /// A forwarder sending direct-route requests through `upstream`.
    pub fn new(upstream: Arc<Upstream>, metrics: Arc<Metrics>) -> Self {
        UpstreamForwarder {
            upstream,
            hook: None,
            metrics,
            agents: None,
        }
    }

    /// Sends the inner requests of agent-routed tunnels through `agents`.
    pub fn with_agents(mut self, agents: Arc<AgentUpstream>) -> Self {
        self.agents = Some(agents);
        self
    }

    /// Calls `hook` on every request before forwarding it.
    pub fn with_hook(mut self, hook: Option<Arc<dyn RequestHook>>) -> Self {
        self.hook = hook;
        self
    }
}

#[async_trait::async_trait]
impl InnerHandler for UpstreamForwarder {
    async fn handle(
        &self,
        caller: &Arc<Caller>,
        target: &InterceptTarget,
        req: Request<Incoming>,
        log: &mut RequestLog,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop_keeping_te_trailers(&mut parts.headers);
        let mut reauthorize = None;
        if let Some(hook) = &self.hook {
            let outcome = hook.on_request(caller, target, &mut parts).await?;
            log.injected = outcome.injected;
            log.app = outcome.app;
            reauthorize = outcome.reauthorize;
        }
        // Let ALPN decide between HTTP/1.1 and HTTP/2 upstream, whatever the client spoke.
        parts.version = Version::HTTP_11;
        let agent = match target.decision.route() {
            Some(Route::Agent(id)) => Some(id),
            _ => None,
        };
        let allow_private = target.decision.allow_private();
        let send = |req: Request<UpstreamBody>| async move {
            let started = Instant::now();
            let resp = match (agent, &self.agents) {
                (Some(id), Some(agents)) => agents.send(id, req).await?,
                (Some(id), None) => return Err(ProxyError::AgentUnavailable(id.to_string())),
                (None, _) => self.upstream.send(req, allow_private).await?,
            };
            self.metrics
                .upstream_latency
                .observe(started.elapsed().as_secs_f64());
            Ok(resp)
        };
        let mut resp = send_replayable(
            parts,
            body,
            reauthorize.as_ref(),
            log.bytes_up.clone(),
            send,
        )
        .await?;
        clean_response(&mut resp);
        Ok(resp.map(|b| b.boxed()))
    }

    fn adopt_upstream(&self, target: &InterceptTarget, stream: TcpStream) {
        self.upstream.adopt(
            &target.host,
            target.port,
            target.decision.allow_private(),
            stream,
        );
    }
}

/// Like [`strip_hop_by_hop`], but keeps `TE: trailers`, which HTTP/2 allows and gRPC needs.
fn strip_hop_by_hop_keeping_te_trailers(headers: &mut http::HeaderMap) {
    let trailers = headers
        .get_all(TE)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    strip_hop_by_hop(headers);
    if trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Decision, RuleKind, RuleRef};

    fn target(host: &str, port: u16) -> InterceptTarget {
        let decision = Decision::Allow {
            policy: "test".into(),
            rule: RuleRef {
                file: "test.toml".into(),
                line: 1,
            },
            kind: RuleKind::ExactHost,
            route: Route::Direct,
            allow_private: false,
        };
        InterceptTarget::new(normalize_host(host).unwrap(), port, decision).unwrap()
    }

    fn req(uri: &str, host: Option<&str>) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header(HOST, h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn inner_requests_must_target_the_connect_host() {
        let t = target("api.example.com", 443);
        /// (name, request target, Host header, rewritten URI or error code)
        type Case<'a> = (&'a str, &'a str, Option<&'a str>, Result<&'a str, &'a str>);
        let cases: &[Case] = &[
            (
                "h1 host",
                "/a?b=1",
                Some("api.example.com"),
                Ok("https://api.example.com/a?b=1"),
            ),
            (
                "h1 host with default port",
                "/",
                Some("API.Example.com:443"),
                Ok("https://api.example.com/"),
            ),
            (
                "h1 trailing dot",
                "/",
                Some("api.example.com."),
                Ok("https://api.example.com/"),
            ),
            (
                "h2 authority",
                "https://api.example.com/x",
                None,
                Ok("https://api.example.com/x"),
            ),
            (
                "h2 authority and same host",
                "https://api.example.com/x",
                Some("api.example.com"),
                Ok("https://api.example.com/x"),
            ),
            (
                "other host",
                "/",
                Some("evil.example"),
                Err("misdirected_request"),
            ),
            (
                "other port",
                "/",
                Some("api.example.com:8443"),
                Err("misdirected_request"),
            ),
            (
                "authority differs from host",
                "https://api.example.com/",
                Some("evil.example"),
                Err("misdirected_request"),
            ),
            (
                "h2 other authority",
                "https://evil.example/",
                None,
                Err("misdirected_request"),
            ),
            ("no host", "/", None, Err("bad_request")),
            (
                "userinfo",
                "/",
                Some("user@api.example.com"),
                Err("bad_request"),
            ),
            ("asterisk", "*", Some("api.example.com"), Err("bad_request")),
        ];
        for (name, uri, host, want) in cases {
            let got = check_and_rewrite(req(uri, *host), &t);
            match (got, want) {
                (Ok(r), Ok(u)) => {
                    assert_eq!(r.uri().to_string(), *u, "{name}");
                    assert!(r.headers().get(HOST).is_none(), "{name}");
                }
                (Err(e), Err(code)) => assert_eq!(e.code(), *code, "{name}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn non_default_ports_and_ip_literals_keep_their_form() {
        let t = target("127.0.0.1", 8443);
        let r = check_and_rewrite(req("/p", Some("127.0.0.1:8443")), &t).unwrap();
        assert_eq!(r.uri().to_string(), "https://127.0.0.1:8443/p");
        let t = target("[::1]", 443);
        let r = check_and_rewrite(req("/p", Some("[::1]")), &t).unwrap();
        assert_eq!(r.uri().to_string(), "https://[::1]/p");
        let e = check_and_rewrite(req("/p", Some("[::1]:444")), &t).unwrap_err();
        assert_eq!(e.code(), "misdirected_request");
    }

    #[test]
    fn te_trailers_survives_hop_by_hop_stripping() {
        let mut h = http::HeaderMap::new();
        h.insert(TE, HeaderValue::from_static("trailers"));
        h.insert("connection", HeaderValue::from_static("close"));
        strip_hop_by_hop_keeping_te_trailers(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h[TE], "trailers");
        let mut h = http::HeaderMap::new();
        h.insert(TE, HeaderValue::from_static("gzip"));
        strip_hop_by_hop_keeping_te_trailers(&mut h);
        assert!(h.is_empty());
    }
}
