//! HTTPS interception ("TLS MITM") for the `CONNECT`s that need it, and only those: the
//! listener adapter that terminates TLS and hands each inner request to the
//! pipeline (`super::pipeline`).
//!
//! A `CONNECT` is intercepted when the host belongs to an outbound application of the
//! caller's org, when the winning policy rule limits methods or paths, or when the
//! embedder's [`InterceptPredicate`] says so (default: never; tests set it). It goes through the same phases as a tunnel — identify, decide, dial on direct
//! routes (the address guard applies) — and only then gets its `200` (see `super::connect`).
//! After that:
//!
//! 1. TLS is accepted with a leaf for the `CONNECT` host from the [`LeafCache`]
//!    (ALPN `h2`, `http/1.1`);
//! 2. inner requests are served with hyper-util's `auto` server (HTTP/1.1 and HTTP/2);
//! 3. each inner request must name the `CONNECT` target in `Host` / `:authority` (default
//!    port 443), else `421 misdirected_request`; it is rewritten to an absolute
//!    `https://host[:port]/...` URI;
//! 4. the caller token's expiry is checked again (`407` once expired), and when a policy
//!    reload applied a new set since the decision the tunnel holds, the destination is decided
//!    again (`403` when now denied; see `super::live`); then the request itself is decided
//!    by its method and normalized path (`pipeline::decide_inner`: rules may limit them, which
//!    is why such a `CONNECT` is intercepted at all);
//! 5. then it runs the pipeline's app → exchange → respond phases under that decision:
//!    token injection, the [`Router`](crate::route::Router)'s pooled clients (the
//!    same ones plain-http forwarding uses, so connections are shared), upstream TLS verified
//!    against the webpki roots plus `--upstream-ca-file` (`502 tls_certificate_error` when it
//!    fails), HTTP/2 when the upstream offers it;
//! 6. each inner request gets its own access line; the `CONNECT` line follows when the
//!    tunnel closes, with the raw bytes.
//!
//! An HTTP/1.1 inner request may be a WebSocket handshake (`super::upgrade`): after the
//! upstream's `101` its bytes are pumped until it ends, and the tunnel lasts until its last
//! WebSocket does. HTTP/2's extended `CONNECT` (RFC 8441) is refused with `400`.
//!
//! The connection dialed before the `200` is not wasted: it travels with the tunnel as its
//! [`Predialed`] connection, which the first request needing a new upstream connection uses
//! if that happens within [`PREDIALED_MAX_AGE`](crate::route::PREDIALED_MAX_AGE).
//!
//! [`LeafCache`]: crate::tls::LeafCache

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::header::{HeaderValue, HOST, TE};
use http::uri::Authority;
use http::{Method, Request, Response, Version};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::task::TaskTracker;

use super::errors::ProxyError;
use super::forward::{https_authority, https_uri, strip_hop_by_hop};
use super::log::RequestLog;
use super::pipeline::{self, Target};
use super::upgrade::Pending;
use super::{ProxyBody, ProxyState, HYPER_BUF_MIN};
use crate::identity::Caller;
use crate::io::{Activity, Meter, Metered};
use crate::policy::{authority_port, normalize_host, Host};
use crate::route::Predialed;

/// Decides, per `CONNECT`, whether to intercept besides the app domains of the caller's org
/// (which always are): `(caller, host, port) -> bool`. Called after the policy allowed the
/// destination.
pub type InterceptPredicate = Arc<dyn Fn(&Caller, &Host, u16) -> bool + Send + Sync>;

/// The default predicate: never intercept; every `CONNECT` is a blind tunnel.
pub fn never() -> InterceptPredicate {
    Arc::new(|_, _, _| false)
}

/// What the `CONNECT` hands over to an intercepted tunnel.
pub(super) struct Intercepted {
    /// The server configuration presenting the target's leaf.
    tls: Arc<ServerConfig>,
    /// The `CONNECT`'s caller, target and decision: the first one the inner requests run
    /// under.
    target: Arc<Target>,
    /// `host`, plus `:port` unless 443: the authority of the rewritten inner requests.
    authority: Authority,
    /// The connection dialed before the `200` (direct routes), for the first new upstream
    /// connection; `None` on agent routes, whose inner requests open pooled tunnels through
    /// the agent as they come.
    predialed: Option<Arc<Predialed>>,
}

impl Intercepted {
    /// The tunnel for `target`, presenting `tls`.
    pub(super) fn new(
        target: Target,
        tls: Arc<ServerConfig>,
        predialed: Option<Arc<Predialed>>,
    ) -> Result<Self, ProxyError> {
        Ok(Intercepted {
            authority: https_authority(&target.host, target.port)?,
            tls,
            target: Arc::new(target),
            predialed,
        })
    }
}

/// Per-tunnel context for the inner requests.
struct Tunnel {
    /// The pumps of the tunnel's WebSockets: the tunnel (and with it the `CONNECT`'s
    /// connection permit and access line) lasts until the last one ends.
    upgrades: TaskTracker,
    /// What every inner request's pipeline needs.
    state: Arc<ProxyState>,
    /// The client, for the inner requests' access lines.
    peer: SocketAddr,
    /// The `CONNECT`'s target, decision and pre-dialed connection.
    intercepted: Intercepted,
    /// The decision inner requests run under: the `CONNECT`'s until a policy reload makes
    /// `super::live::recheck` decide again.
    live: ArcSwap<Target>,
}

/// Runs an intercepted tunnel to its end: TLS accept, inner requests, idle timeout. `counts`
/// are the `CONNECT` line's, which its owner writes when the tunnel closes, with the raw
/// bytes both ways.
pub(super) async fn run(
    state: Arc<ProxyState>,
    i: Box<Intercepted>,
    client: Upgraded,
    counts: Counts,
) -> String {
    let activity = Arc::new(Activity::new());
    let io = Metered {
        inner: TokioIo::new(client),
        counter: Meter {
            activity: activity.clone(),
            read: counts.up,
            written: Some(counts.down),
        },
    };
    let settings = &state.settings;
    let accept = tokio_rustls::TlsAcceptor::from(i.tls.clone()).accept(io);
    match tokio::time::timeout(settings.request_head_timeout, accept).await {
        Err(_) => "client TLS handshake timed out".to_string(),
        Ok(Err(e)) => {
            // The usual cause is a client that does not trust the tollgate CA.
            tracing::info!(host = %i.target.host, error = %e,
                "intercepted client TLS handshake failed (does the client trust the tollgate CA?)");
            "client TLS handshake failed".to_string()
        }
        Ok(Ok(stream)) => {
            let tunnel = Tunnel {
                upgrades: TaskTracker::new(),
                state: state.clone(),
                peer: counts.peer,
                live: ArcSwap::new(i.target.clone()),
                intercepted: *i,
            };
            serve_inner(&state, stream, tunnel, &activity).await
        }
    }
}

/// What the `CONNECT`'s access line needs from an intercepted tunnel: its raw byte counts
/// (the line itself is written by the tunnel's owner when the tunnel ends).
pub(super) struct Counts {
    /// Raw bytes from the client.
    up: Arc<AtomicU64>,
    /// Raw bytes to the client.
    down: Arc<AtomicU64>,
    /// The client.
    peer: SocketAddr,
}

impl Counts {
    /// The counters of `log`.
    pub(super) fn of(log: &RequestLog) -> Counts {
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
    let upgrades = tunnel.upgrades.clone();
    let tunnel = Arc::new(tunnel);
    // Counts requests so hyper's own HTTP/1.1 error answers can be told apart
    // (`crate::io::canned`; HTTP/2 frames never look like a head and pass as they are).
    let dispatched = crate::io::canned::Dispatched::default();
    let counted = dispatched.clone();
    let service = hyper::service::service_fn(move |req| {
        counted.inc();
        let tunnel = tunnel.clone();
        async move { Ok::<_, Infallible>(inner_request(&tunnel, req).await) }
    });
    let stream = crate::io::canned::Canned::new(stream, dispatched, super::errors::hyper_answer);
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
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    let idle = settings.idle_timeout;
    let end = tokio::select! {
        r = conn => match r {
            Ok(()) => "closed".into(),
            Err(e) => e.to_string(),
        },
        () = crate::io::idle_watchdog(activity, idle) => "idle timeout".into(),
    };
    // A WebSocket outlives the HTTP connection it was upgraded from (each pump has the same
    // idle timeout).
    upgrades.close();
    upgrades.wait().await;
    end
}

/// One inner request: the caller and the decision re-checked, the target checked and
/// rewritten, then the pipeline's app → exchange → respond phases under the decision.
async fn inner_request(tunnel: &Tunnel, mut req: Request<Incoming>) -> Response<ProxyBody> {
    let state = &tunnel.state;
    let upgrade = Pending::take(&mut req);
    let i = &tunnel.intercepted;
    let mut log = RequestLog::new(state.metrics.clone(), tunnel.peer, req.method().clone())
        .trace_to(state.otel.as_ref());
    log.host = Some(i.target.host.to_string());
    log.port = i.target.port;
    log.caller = Some(i.target.caller.clone());
    log.path = Some(req.uri().path().to_owned());
    let result = async {
        let target = super::live::recheck(state, &tunnel.live, &mut log)?;
        let mut req = check_and_rewrite(req, &target.host, target.port, &i.authority)?;
        let target = pipeline::decide_inner(state, &target, &mut req, &mut log)?;
        strip_hop_by_hop_keeping_te_trailers(req.headers_mut());
        // Let ALPN decide between HTTP/1.1 and HTTP/2 upstream, whatever the client spoke.
        *req.version_mut() = Version::HTTP_11;
        let app = pipeline::app(state, &target.caller, &target.host).await?;
        // The connection dialed for the `CONNECT` serves only the `CONNECT`'s decision.
        let predialed = i
            .predialed
            .as_ref()
            .filter(|_| Arc::ptr_eq(&target, &i.target));
        pipeline::exchange(state, &target, app, req, &mut log, predialed).await
    }
    .await;
    match upgrade {
        Some(u) => u.respond(state, result, log, &tunnel.upgrades, ()),
        None => pipeline::respond(result, log),
    }
}

/// Checks that `req` targets the `CONNECT` host and port (default 443), then rewrites it to
/// an absolute `https://` URI with the target's authority and no `Host` header (the upstream
/// client derives `Host` / `:authority` from the URI).
fn check_and_rewrite<B>(
    mut req: Request<B>,
    host: &Host,
    port: u16,
    authority: &Authority,
) -> Result<Request<B>, ProxyError> {
    if req.method() == Method::CONNECT && req.extensions().get::<hyper::ext::Protocol>().is_some() {
        return Err(super::upgrade::h2_websocket_refused());
    }
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
        if auth == *authority {
            continue;
        }
        let (named, named_port) = inner_target(&auth)?;
        if named != *host || named_port != port {
            return Err(ProxyError::Misdirected(format!(
                "this connection is for {host}:{port}; the request is for {named}:{named_port}"
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
    *req.uri_mut() = https_uri(authority.clone(), req.uri().path_and_query())?;
    req.headers_mut().remove(HOST);
    Ok(req)
}

/// The normalized host and port (default 443; `400` for 0 or above 65535) an inner request
/// names.
fn inner_target(auth: &Authority) -> Result<(Host, u16), ProxyError> {
    if auth.as_str().contains('@') {
        return Err(ProxyError::BadRequest(
            "user information in the authority is not allowed".into(),
        ));
    }
    let host = normalize_host(auth.host()).map_err(|e| ProxyError::BadRequest(e.to_string()))?;
    let port = authority_port(auth.as_str())
        .map_err(|_| ProxyError::BadRequest(format!("invalid port in {auth}: ports are 1-65535")))?
        .unwrap_or(443);
    Ok((host, port))
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

    /// The `CONNECT` target: host, port and the authority of rewritten requests.
    struct T(Host, u16, Authority);

    fn target(host: &str, port: u16) -> T {
        let host = normalize_host(host).unwrap();
        let authority = https_authority(&host, port).unwrap();
        T(host, port, authority)
    }

    fn check_and_rewrite<B>(req: Request<B>, t: &T) -> Result<Request<B>, ProxyError> {
        super::check_and_rewrite(req, &t.0, t.1, &t.2)
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
            (
                "port above 65535",
                "/",
                Some("api.example.com:99999"),
                Err("bad_request"),
            ),
            ("port 0", "/", Some("api.example.com:0"), Err("bad_request")),
            (
                "h2 authority port above 65535",
                "https://api.example.com:70000/",
                None,
                Err("bad_request"),
            ),
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
