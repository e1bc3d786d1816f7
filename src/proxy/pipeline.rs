//! The one request pipeline. Every request the proxy forwards — absolute-form `http://`
//! requests (with or without TLS origination) and the requests inside intercepted tunnels,
//! over HTTP/1.1 or HTTP/2 — goes through these phases, in pingora's order:
//!
//! 1. [`identify`] the caller from `Proxy-Authorization`;
//! 2. [`decide`] with the policy set, which yields the [`Target`] (route and guard setting);
//! 3. [`app`]: the outbound application of the caller's org bound to the host, if any;
//! 4. [`exchange`]: inject the app's token, send through the [`Router`](crate::route::Router),
//!    and replay once after an upstream `401 invalid_token` (see [`super::replay`]);
//! 5. [`respond`]: the upstream's response, cleaned and counted, or the error's synthetic
//!    response; the access line is written when the response body ends.
//!
//! A `CONNECT` runs phases 1–3 and then opens a tunnel or intercepts; an intercepted tunnel's
//! inner requests carry the `CONNECT`'s decision and run phases 3–5 each. Where the app fixes
//! the port actually dialed (TLS origination turns port 80 into 443), the adapter looks the
//! app up before the decision, so the policy decides on that port.
//!
//! The per-request context is the [`RequestLog`]: every phase records what it learned there.

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::errors::ProxyError;
use super::forward::clean_response;
use super::log::{CountingBody, RequestLog};
use super::replay::{send_replayable, Reinject};
use super::{ProxyBody, ProxyState};
use crate::identity::{Caller, IdentityError};
use crate::policy::{Decision, Host, Route};
use crate::route::Predialed;
use crate::store::App;

/// Where an allowed request goes: who asked, the destination, and the policy's decision.
/// Built only by [`decide`], so it always holds an allowing decision.
pub(crate) struct Target {
    /// The identified caller.
    pub(crate) caller: Arc<Caller>,
    /// The normalized destination host.
    pub(crate) host: Host,
    /// The destination port, as decided.
    pub(crate) port: u16,
    /// The winning policy's route, copied out of `decision` for the dial.
    pub(crate) route: Route,
    /// Whether the address guard lets private addresses through for this destination.
    pub(crate) allow_private: bool,
    /// The decision, for the access lines of an intercepted tunnel's inner requests (the
    /// tunnel owns its `Target`, so they share it without another allocation).
    pub(crate) decision: Decision,
    /// The policy generation the decision was made under: a tunnel that outlives it decides
    /// again (`super::live`).
    pub(crate) generation: u64,
}

/// Phase 1: the caller, from `Proxy-Authorization` (missing, expired or forged → `407`).
pub(crate) fn identify(
    state: &ProxyState,
    headers: &HeaderMap,
    log: &mut RequestLog,
) -> Result<Arc<Caller>, ProxyError> {
    let caller = match headers.get(http::header::PROXY_AUTHORIZATION) {
        None => return Err(ProxyError::AuthRequired(IdentityError::Missing)),
        Some(v) => state
            .verifier
            .verify_header(v.as_bytes())
            .map_err(ProxyError::AuthRequired)?,
    };
    log.caller = Some(caller.clone());
    Ok(caller)
}

/// Phase 2: may `caller` reach `host:port`, and by which route.
pub(crate) fn decide(
    state: &ProxyState,
    caller: Arc<Caller>,
    host: Host,
    port: u16,
    log: &mut RequestLog,
) -> Result<Target, ProxyError> {
    // The generation first: the set loaded after it is that generation's or a newer one.
    let generation = state.policies.generation();
    let decision = state.policies.current().decide(&caller.org, &host, port);
    log.set_decision(&decision);
    match &decision {
        Decision::Allow {
            route,
            allow_private,
            ..
        } => Ok(Target {
            route: route.clone(),
            allow_private: *allow_private,
            caller,
            host,
            port,
            decision,
            generation,
        }),
        Decision::Deny { .. } => Err(ProxyError::Denied(Box::new(decision))),
    }
}

/// Phase 3: the outbound application of the caller's org bound to `host`, if any.
pub(crate) async fn app(
    state: &ProxyState,
    caller: &Caller,
    host: &Host,
) -> Result<Option<Arc<App>>, ProxyError> {
    Ok(state.injector.lookup(caller, host).await?)
}

/// Phase 4: injects `app`'s token (if any), sends `req` (absolute URI, headers prepared) on
/// the target's route, and replays it once when the upstream rejects the token. Request body
/// bytes are counted into the log. `predialed` is the intercepted `CONNECT`'s connection, for
/// the first request that needs a new upstream connection.
pub(crate) async fn exchange(
    state: &ProxyState,
    target: &Target,
    app: Option<Arc<App>>,
    req: Request<Incoming>,
    log: &mut RequestLog,
    predialed: Option<&Arc<Predialed>>,
) -> Result<Response<Incoming>, ProxyError> {
    let (mut parts, body) = req.into_parts();
    // A WebSocket handshake goes on an unpooled connection of its own (`super::upgrade`).
    let upgrade = super::upgrade::restore(&mut parts.headers, &parts.extensions);
    let reauth = match app {
        None => None,
        Some(app) => {
            log.app = Some(app.id.clone());
            let injected = state
                .injector
                .inject(&target.caller, app, &mut parts.headers)
                .await?;
            log.injected = true;
            Some(Reinject {
                injector: state.injector.clone(),
                caller: target.caller.clone(),
                injected,
            })
        }
    };
    let started = Instant::now();
    let send = |req| async move {
        let (route, private) = (&target.route, target.allow_private);
        let sent = if upgrade {
            state.router.upgrade(route, private, req).await
        } else {
            state.router.send(route, private, req, predialed).await
        };
        Ok::<_, ProxyError>(sent?)
    };
    let (up, body_timeout) = (log.bytes_up.clone(), state.settings.body_timeout);
    let mut resp = send_replayable(parts, body, reauth.as_ref(), up, body_timeout, send).await?;
    if upgrade {
        super::upgrade::follow_reloads(state, target, &mut resp);
    }
    state
        .metrics
        .upstream_latency
        .observe(started.elapsed().as_secs_f64());
    Ok(resp)
}

/// Phase 5: the response the client gets. The upstream's, minus hop-by-hop headers and any
/// `Proxy-Status` of its own, with its body counted and the access line written when the
/// body ends; or the synthetic response for the error, logged at once.
pub(crate) fn respond(
    result: Result<Response<Incoming>, ProxyError>,
    mut log: RequestLog,
) -> Response<ProxyBody> {
    match result {
        Ok(mut resp) => {
            clean_response(&mut resp);
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

/// Refuses a request head larger than the configured limit (`431`): request line plus
/// `name: value\r\n` lines, approximately as sent.
pub(crate) fn check_head<B>(state: &ProxyState, req: &Request<B>) -> Result<(), ProxyError> {
    let uri = req.uri();
    let target = uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len());
    let line = req.method().as_str().len() + target + 12;
    let size = req
        .headers()
        .iter()
        .fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4);
    let max = state.settings.max_request_head;
    if size > max {
        return Err(ProxyError::HeadTooLarge(max));
    }
    Ok(())
}
