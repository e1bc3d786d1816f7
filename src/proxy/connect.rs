//! `CONNECT host:port`: the listener adapter for tunnels. The pipeline's first phases run
//! (identify → decide → app), then the route is dialed **before** the client sees `200`, so a
//! refusal or a failed dial is the answer to the `CONNECT` itself:
//!
//! - a blind tunnel (the usual case) copies bytes both ways ([`crate::io`]) until a side
//!   closes it, it idles out, or a policy reload no longer allows it (closed at once and
//!   logged with the reason `policy_revoked`; see `super::live`);
//! - a `CONNECT` to a host bound to an outbound application of the caller's org (or one the
//!   embedder's predicate selects) is intercepted ([`super::intercept`]). On a direct route
//!   the connection dialed here becomes that tunnel's [`Predialed`] connection; on an agent
//!   route only the agent's presence is checked, and inner requests open pooled tunnels
//!   through it as they come.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_util::either::Either;
use tracing::Instrument;

use super::errors::{full, ProxyError};
use super::intercept::{self, Intercepted};
use super::live::{Revocation, POLICY_REVOKED};
use super::log::RequestLog;
use super::{pipeline, ProxyBody, ProxyState};
use crate::policy::{authority_port, normalize_host, Host, Route};
use crate::route::{Connection, Predialed};

/// What an accepted `CONNECT` turns into once every check passed.
enum Opened {
    /// A blind tunnel to the dialed connection, closed if a reload revokes it.
    Tunnel(Connection, Revocation),
    /// An intercepted tunnel.
    Intercept(Box<Intercepted>),
}

/// Answers one `CONNECT`: `200` and a tunnel task, or the error.
pub(super) async fn handle(
    state: &Arc<ProxyState>,
    permit: Arc<super::callers::ConnPermit>,
    mut req: Request<Incoming>,
    mut log: RequestLog,
) -> Response<ProxyBody> {
    let opened = match open(state, &permit, &req, &mut log).await {
        Ok(o) => o,
        Err(e) => {
            log.record_error(&e);
            return e.into_response();
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    match opened {
        Opened::Tunnel(upstream, revocation) => {
            let idle = state.settings.idle_timeout;
            let (up, down) = (log.bytes_up.clone(), log.bytes_down.clone());
            spawn_tunnel(state, on_upgrade, permit, log, move |client| async move {
                let copy = async move {
                    match upstream {
                        // Socket to socket: zero-copy where the platform allows.
                        Either::Left(tcp) => crate::io::tunnel(client, tcp, idle, up, down).await,
                        Either::Right(agent) => {
                            crate::io::splice(TokioIo::new(client), agent, idle, up, down).await
                        }
                    }
                };
                // Dropping the copy closes both sides.
                tokio::select! {
                    end = copy => Ended::Closed(end),
                    _ = revocation.revoked() => Ended::Revoked,
                }
            });
        }
        Opened::Intercept(i) => {
            let (st, counts) = (state.clone(), intercept::Counts::of(&log));
            spawn_tunnel(state, on_upgrade, permit, log, move |client| async move {
                Ended::Closed(intercept::run(st, i, client, counts).await)
            });
        }
    }
    Response::new(full(Bytes::new()))
}

/// The pipeline's first phases for a `CONNECT`, then the dial (and, when intercepting, the leaf
/// certificate: minted before the `200`, so a failure is still an answer to the `CONNECT`).
async fn open(
    state: &ProxyState,
    permit: &super::callers::ConnPermit,
    req: &Request<Incoming>,
    log: &mut RequestLog,
) -> Result<Opened, ProxyError> {
    pipeline::check_head(state, req)?;
    let (host, port) = connect_target(req)?;
    log.host = Some(host.to_string());
    log.port = port;
    let caller = pipeline::identify(state, permit, req.headers(), log).await?;
    let target = pipeline::decide(state, caller, host, port, log)?;
    let app = pipeline::app(state, &target.caller, &target.host).await?;
    // Intercepted only where a token is needed: the host is bound to an app of the caller's
    // org (a disabled app too, so its requests get `403 app_disabled` rather than slipping
    // through a blind tunnel without the token the API expects); or where each request must
    // be decided: the winning rule limits methods or paths.
    let intercept = app.is_some()
        || target.decision.inspect()
        || (state.intercept_when)(&target.caller, &target.host, target.port);
    // A blind tunnel counts once against the `[[limit]]`s; an intercepted one per request.
    if !intercept {
        pipeline::rate_limit(state, &target, None, log)?;
    }
    let started = Instant::now();
    let conn = match &target.route {
        Route::Agent(_) if intercept => {
            state.router.require(&target.route)?;
            None
        }
        route => Some(
            state
                .router
                .connect(route, &target.reach, &target.host, port)
                .await?,
        ),
    };
    state
        .metrics
        .upstream_latency
        .observe(started.elapsed().as_secs_f64());
    if let Some(Either::Left(tcp)) = &conn {
        log.upstream = tcp.peer_addr().ok();
    }
    match conn {
        Some(conn) if !intercept => Ok(Opened::Tunnel(
            conn,
            Revocation::new(&state.policies, &target),
        )),
        conn => {
            let tls = state
                .leaves
                .server_config(&target.host)
                .await
                .map_err(|e| {
                    ProxyError::Internal(format!("leaf certificate for {}: {e}", target.host))
                })?;
            let predialed = match conn {
                Some(Either::Left(tcp)) => {
                    Some(Arc::new(Predialed::new(target.host.clone(), port, tcp)))
                }
                _ => None,
            };
            Ok(Opened::Intercept(Box::new(Intercepted::new(
                target, tls, predialed,
            )?)))
        }
    }
}

/// The `CONNECT` target: `host:port` with a port in 1-65535 (else `400`).
fn connect_target<B>(req: &Request<B>) -> Result<(Host, u16), ProxyError> {
    let auth = req
        .uri()
        .authority()
        .ok_or_else(|| ProxyError::BadRequest("CONNECT needs a host:port target".into()))?;
    let port = match authority_port(auth.as_str()) {
        Ok(Some(p)) => p,
        _ => {
            return Err(ProxyError::BadRequest(format!(
                "CONNECT target {auth} needs a port in 1-65535"
            )))
        }
    };
    let host = normalize_host(auth.host()).map_err(|e| ProxyError::BadRequest(e.to_string()))?;
    Ok((host, port))
}

/// How a tunnel ended.
enum Ended {
    /// A side closed it, it idled out, or it failed: why, for the debug log.
    Closed(String),
    /// A policy reload no longer allows it.
    Revoked,
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
    Fut: std::future::Future<Output = Ended> + Send,
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
            match end {
                Ended::Closed(end) => tracing::debug!(end = %end, "tunnel closed"),
                Ended::Revoked => {
                    tracing::info!(
                        host = log.host.as_deref().unwrap_or("-"),
                        port = log.port,
                        "tunnel closed: a policy reload no longer allows it"
                    );
                    log.decision = "denied";
                    log.reason = POLICY_REVOKED.into();
                }
            }
            drop(log);
        }
        .in_current_span(),
    );
}
