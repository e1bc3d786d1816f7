//! The proxy listener: HTTP/1.1 forward proxy for absolute-form requests and `CONNECT`.
//!
//! Every request goes through the same phases, in this order (pingora's order, without a
//! plugin framework): parse the target → identify the caller → policy decision → route →
//! forward or tunnel → one log line. Failures at any phase become a synthetic response in
//! [`errors`]; nothing else writes error responses.

pub mod errors;
pub mod forward;
pub mod intercept;
pub mod log;
pub mod replay;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::identity::{IdentityError, Verifier};
use crate::metrics::Metrics;
use crate::oauth::OAuth;
use crate::policy::watch::Policies;
use crate::policy::{normalize_host, Decision, Host, Route};
use crate::relay::{AgentStream, Registry};
use crate::route::direct::DirectDialer;
use errors::ProxyError;
use forward::{AgentUpstream, Upstream};
use log::{CountingBody, RequestLog};

/// Smallest read buffer given to hyper (its own minimum is 8 KiB).
pub(crate) const HYPER_BUF_MIN: usize = 256 * 1024;
/// Header count hyper accepts; more than the usual 100 so that the size limit, which we
/// enforce with a proper error, is what normally trips.
const MAX_HEADERS: usize = 1000;

/// Body type of every response the proxy sends.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Limits and timeouts of the proxy listener.
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// Idle tunnel timeout.
    pub idle_timeout: Duration,
    /// Time a client has to send its request head.
    pub request_head_timeout: Duration,
    /// Largest request head accepted.
    pub max_request_head: usize,
    /// Concurrent client connections before `503 overloaded`.
    pub max_connections: usize,
    /// How long shutdown waits for in-flight requests and tunnels.
    pub shutdown_grace: Duration,
}

/// Everything a request needs, shared by all connections.
pub struct ProxyState {
    /// The live policy set.
    pub policies: Arc<Policies>,
    /// Caller token verification (cached).
    pub verifier: Arc<Verifier>,
    /// Direct dialing behind the address guard (tunnels use it directly).
    pub dialer: Arc<DirectDialer>,
    /// Pooled upstream clients for forwarded requests.
    pub upstream: Arc<Upstream>,
    /// Connected agents; tunnels of agent routes are dialed through it.
    pub agents: Arc<Registry>,
    /// Pooled clients for forwarded requests of agent routes.
    pub agent_upstream: Arc<AgentUpstream>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Limits and timeouts.
    pub settings: ProxySettings,
    /// Open tunnels, so shutdown can wait for them.
    pub tunnels: TaskTracker,
    /// Outbound applications: which hosts get a token, and the token itself.
    pub oauth: Arc<OAuth>,
    /// Which `CONNECT`s are intercepted, and how (default: none).
    pub intercept: Arc<intercept::Interception>,
}

/// Accepts connections on `listener` until `shutdown` is cancelled, then drains: stops
/// accepting, lets in-flight requests and tunnels finish for up to `shutdown_grace`.
pub async fn run(listener: TcpListener, state: Arc<ProxyState>, shutdown: CancellationToken) {
    let limit = Arc::new(Semaphore::new(state.settings.max_connections));
    // Client connections, so the drain can wait for them.
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            state.metrics.overloaded.inc();
            tokio::spawn(refuse_overloaded(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let permit = Arc::new(permit);
        let conn_state = state.clone();
        let service = service_fn(move |req| handle(conn_state.clone(), peer, permit.clone(), req));
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(state.settings.request_head_timeout)
            // hyper answers a head beyond its buffer itself (bare 431, no JSON); give it room
            // so that heads over our limit reach `handle` and get a proper error instead.
            .max_buf_size(
                state
                    .settings
                    .max_request_head
                    .saturating_mul(4)
                    .max(HYPER_BUF_MIN),
            )
            .max_headers(MAX_HEADERS)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let metrics = state.metrics.clone();
        let shutdown = shutdown.clone();
        connections.spawn(
            async move {
                metrics.client_connections.inc();
                tokio::pin!(conn);
                let result = tokio::select! {
                    r = conn.as_mut() => r,
                    () = shutdown.cancelled() => {
                        // Finish the request in flight, then close (keep-alive off).
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "client connection ended with an error");
                }
                metrics.client_connections.dec();
            }
            .instrument(tracing::info_span!("conn", %peer)),
        );
    }
    drop(listener);
    let deadline = Instant::now() + state.settings.shutdown_grace;
    connections.close();
    if tokio::time::timeout_at(deadline.into(), connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over with requests still in flight");
    }
    state.tunnels.close();
    if tokio::time::timeout_at(deadline.into(), state.tunnels.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = state.tunnels.len(),
            "closing tunnels still open after the grace period"
        );
    }
}

/// Answers a `CONNECT` with 200 and, once hyper hands over the client connection, runs the
/// tunnel `body` on the tunnel tracker: the connection-limit `permit` is held and the tunnel
/// counted in `open_tunnels` for its whole life, and the access line (`log`) is written when
/// it ends, with how it ended.
fn spawn_tunnel<P, F, Fut>(
    state: &ProxyState,
    on_upgrade: OnUpgrade,
    permit: P,
    mut log: RequestLog,
    body: F,
) where
    P: Send + 'static,
    F: FnOnce(hyper::upgrade::Upgraded) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = String> + Send,
{
    log.status = 200;
    let metrics = state.metrics.clone();
    state.tunnels.spawn(
        async move {
            let _permit = permit;
            let client = match on_upgrade.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "CONNECT upgrade failed");
                    return;
                }
            };
            metrics.open_tunnels.inc();
            let end = body(client).await;
            metrics.open_tunnels.dec();
            tracing::debug!(end = %end, "tunnel closed");
            drop(log);
        }
        .in_current_span(),
    );
}

/// Answers a connection over the limit with `503 overloaded` and closes it.
async fn refuse_overloaded(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = stream.write_all(&errors::overloaded_raw_response()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// What a request turned into once every check passed.
enum Outcome {
    /// The upstream's response to a forwarded request.
    Forward(Response<Incoming>),
    /// A dialed upstream (direct, or a tunnel through an agent) for a `CONNECT`, and the
    /// client side once upgraded.
    Tunnel(Either<TcpStream, AgentStream>, OnUpgrade),
    /// A `CONNECT` to intercept: dialed, with the leaf to present.
    Intercept(Box<intercept::Intercepted>, OnUpgrade),
}

async fn handle(
    state: Arc<ProxyState>,
    peer: SocketAddr,
    permit: Arc<OwnedSemaphorePermit>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let mut log = RequestLog::new(state.metrics.clone(), peer, req.method().clone());
    let outcome = proxy_request(&state, &mut log, req).await;
    Ok(match outcome {
        Err(e) => {
            log.record_error(&e);
            e.into_response()
        }
        Ok(Outcome::Forward(mut resp)) => {
            forward::clean_response(&mut resp);
            log.status = resp.status().as_u16();
            let down = log.bytes_down.clone();
            resp.map(|body| CountingBody::new(body, down, Some(log)).boxed())
        }
        Ok(Outcome::Tunnel(upstream, on_upgrade)) => {
            let idle = state.settings.idle_timeout;
            let (up, down) = (log.bytes_up.clone(), log.bytes_down.clone());
            spawn_tunnel(&state, on_upgrade, permit, log, move |client| async move {
                match upstream {
                    // Socket to socket: zero-copy where the platform allows.
                    Either::Left(tcp) => crate::io::tunnel(client, tcp, idle, up, down).await,
                    Either::Right(agent) => {
                        crate::io::splice(TokioIo::new(client), agent, idle, up, down).await
                    }
                }
            });
            Response::new(errors::full(Bytes::new()))
        }
        Ok(Outcome::Intercept(i, on_upgrade)) => {
            let (st, counts) = (state.clone(), intercept::Counts::of(&log));
            spawn_tunnel(&state, on_upgrade, permit, log, move |client| {
                intercept::run(st, i, client, counts)
            });
            Response::new(errors::full(Bytes::new()))
        }
    })
}

async fn proxy_request(
    state: &ProxyState,
    log: &mut RequestLog,
    mut req: Request<Incoming>,
) -> Result<Outcome, ProxyError> {
    // Phase 1: the target, from a head of acceptable size.
    let head_len = head_size(&req);
    if head_len > state.settings.max_request_head {
        return Err(ProxyError::HeadTooLarge(state.settings.max_request_head));
    }
    let (host, port, authority) = target_of(&req)?;
    log.host = Some(host.to_string());
    log.port = port;

    // Phase 2: who is calling.
    let caller = match req.headers().get(http::header::PROXY_AUTHORIZATION) {
        None => return Err(ProxyError::AuthRequired(IdentityError::Missing)),
        Some(v) => state
            .verifier
            .verify_header(v.as_bytes())
            .map_err(ProxyError::AuthRequired)?,
    };
    log.caller = Some(caller.clone());

    // Phase 3: may they go there, and how. A plain-http request to an outbound application's
    // domains is forwarded over TLS unless the app says otherwise (the default port 80 becomes
    // 443), so the policy decides on the port actually dialed.
    let app = state.oauth.injector.lookup(&caller, &host).await?;
    let is_connect = req.method() == Method::CONNECT;
    let tls_port = app
        .as_ref()
        .filter(|a| !is_connect && a.upstream_tls)
        .map(|_| if port == 80 { 443 } else { port });
    let decision = state
        .policies
        .current()
        .decide(&caller.org, &host, tls_port.unwrap_or(port));
    log.set_decision(&decision);
    // The agent resolves and enforces its own allowlist; the proxy does not resolve.
    let agent = match &decision {
        Decision::Allow {
            route: Route::Direct,
            ..
        } => None,
        Decision::Allow {
            route: Route::Agent(id),
            ..
        } => Some(id.clone()),
        Decision::Deny { .. } => return Err(ProxyError::Denied(Box::new(decision))),
    };

    // Phase 4: dial and forward, or tunnel.
    let started = Instant::now();
    if req.method() == Method::CONNECT {
        // Intercepted only where a token is needed: the host is bound to an app of the
        // caller's org (a disabled app too, so its requests get `403 app_disabled` rather
        // than slipping through a blind tunnel without the token the API expects).
        let intercept = app.is_some() || (state.intercept.predicate)(&caller, &host, port);
        // A direct route is dialed before the 200 (the connection is handed to the first
        // inner request). An intercepted agent route is not: its inner requests open pooled
        // tunnels through the agent as they come, so only the agent's presence is checked.
        let stream = match &agent {
            None => {
                let (stream, _addr) = state
                    .dialer
                    .dial(&host, port, decision.allow_private())
                    .await?;
                Some(Either::Left(stream))
            }
            Some(id) if intercept => {
                state.agents.require(id)?;
                None
            }
            Some(id) => Some(Either::Right(
                state.agents.dial(id, &host.to_string(), port).await?,
            )),
        };
        state
            .metrics
            .upstream_latency
            .observe(started.elapsed().as_secs_f64());
        let on_upgrade = hyper::upgrade::on(&mut req);
        return match stream {
            Some(stream) if !intercept => Ok(Outcome::Tunnel(stream, on_upgrade)),
            stream => {
                // Minted before the 200, so a failure is still an answer to the CONNECT.
                let tls = state
                    .intercept
                    .leaves
                    .server_config(&host)
                    .await
                    .map_err(|e| {
                        ProxyError::Internal(format!("leaf certificate for {host}: {e}"))
                    })?;
                let upstream = match stream {
                    Some(Either::Left(tcp)) => Some(tcp),
                    _ => None,
                };
                Ok(Outcome::Intercept(
                    Box::new(intercept::Intercepted {
                        upstream,
                        tls,
                        target: Arc::new(intercept::InterceptTarget::new(host, port, decision)?),
                        caller,
                    }),
                    on_upgrade,
                ))
            }
        };
    }
    forward::prepare_request(&mut req, &authority)?;
    // TLS origination, on either route: through an agent, TLS runs end to end inside the
    // tunnel and tollgate verifies the certificate.
    if let (Some(_), Some(p)) = (&app, tls_port) {
        forward::originate_tls(&mut req, &host, p)?;
    }
    let (mut parts, body) = req.into_parts();
    let reauth = match app {
        Some(app) => {
            log.app = Some(app.id.clone());
            let injector = state.oauth.injector.clone();
            let injected = injector.inject(&caller, app, &mut parts.headers).await?;
            log.injected = true;
            Some(replay::Reinject {
                injector,
                caller: caller.clone(),
                injected,
            })
        }
        None => None,
    };
    let up = log.bytes_up.clone();
    let resp = match &agent {
        None => {
            let allow_private = decision.allow_private();
            replay::send_replayable(parts, body, reauth.as_ref(), up, |r| {
                state.upstream.send(r, allow_private)
            })
            .await?
        }
        Some(id) => {
            replay::send_replayable(parts, body, reauth.as_ref(), up, |r| {
                state.agent_upstream.send(id, r)
            })
            .await?
        }
    };
    state
        .metrics
        .upstream_latency
        .observe(started.elapsed().as_secs_f64());
    Ok(Outcome::Forward(resp))
}

/// Approximate size of the request head as sent: request line plus `name: value\r\n` lines.
fn head_size<B>(req: &Request<B>) -> usize {
    let uri = req.uri();
    let target = uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len());
    let line = req.method().as_str().len() + target + 12;
    req.headers()
        .iter()
        .fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

/// The destination of a proxy request: `CONNECT host:port`, or an absolute-form `http://`
/// URI. Returns the normalized host, the port and the authority to send as `Host`.
fn target_of<B>(req: &Request<B>) -> Result<(Host, u16, String), ProxyError> {
    let uri = req.uri();
    if req.method() == Method::CONNECT {
        let auth = uri
            .authority()
            .ok_or_else(|| ProxyError::BadRequest("CONNECT needs a host:port target".into()))?;
        let port = auth
            .port_u16()
            .ok_or_else(|| ProxyError::BadRequest("CONNECT target needs a port".into()))?;
        let host =
            normalize_host(auth.host()).map_err(|e| ProxyError::BadRequest(e.to_string()))?;
        return Ok((host, port, auth.as_str().to_string()));
    }
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(auth)) => {
            if auth.as_str().contains('@') {
                return Err(ProxyError::BadRequest(
                    "user information in the request target is not allowed".into(),
                ));
            }
            let host =
                normalize_host(auth.host()).map_err(|e| ProxyError::BadRequest(e.to_string()))?;
            let port = auth.port_u16().unwrap_or(80);
            Ok((host, port, auth.as_str().to_string()))
        }
        (Some("https"), Some(_)) => Err(ProxyError::BadRequest(
            "https:// targets must be requested with CONNECT (set HTTPS_PROXY)".into(),
        )),
        (Some(other), Some(_)) => Err(ProxyError::BadRequest(format!(
            "unsupported scheme {other:?}; only http:// and CONNECT are proxied"
        ))),
        _ => Err(ProxyError::BadRequest(
            "tollgate is a forward proxy: send an absolute-form request (GET http://host/path) \
             or CONNECT host:port"
                .into(),
        )),
    }
}
