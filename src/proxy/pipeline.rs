//! The one request pipeline. Every request the proxy forwards — absolute-form `http://`
//! requests (with or without TLS origination) and the requests inside intercepted tunnels,
//! over HTTP/1.1 or HTTP/2 — goes through these phases, in pingora's order:
//!
//! 1. [`identify`] the caller from `Proxy-Authorization`;
//! 2. [`decide`] with the policy set, which yields the [`Target`] (route and guard setting);
//!    an HTTP request is decided with its method and normalized path ([`decide_request`]);
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

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use http::uri::PathAndQuery;
use http::{HeaderMap, Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::callers::ConnPermit;
use super::errors::ProxyError;
use super::forward::clean_response;
use super::log::{CountingBody, RequestLog};
use super::replay::{send_replayable, Reinject};
use super::{ProxyBody, ProxyState};
use crate::identity::{Caller, IdentityError};
use crate::policy::{normalize_path, Decision, DenyReason, Host, Reach, RequestInfo, Route};
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
    /// How a direct route may reach the destination (`Decision::reach`), for the dial.
    pub(crate) reach: Reach,
}

/// Phase 1: the caller, from `Proxy-Authorization` (missing, expired or forged → `407`).
/// A workload token whose issuer's keys are not cached waits for one JWKS fetch and is
/// verified again (`identity::issuer`). The connection is counted for the first caller it
/// carries (`--max-connections-per-caller`; over the limit, `503 overloaded`): the one
/// verification serves both.
pub(crate) async fn identify(
    state: &ProxyState,
    permit: &ConnPermit,
    headers: &HeaderMap,
    log: &mut RequestLog,
) -> Result<Arc<Caller>, ProxyError> {
    let caller = match headers.get(http::header::PROXY_AUTHORIZATION) {
        None => return Err(ProxyError::AuthRequired(IdentityError::Missing)),
        Some(v) => state
            .verifier
            .verify_header_fetching(v.as_bytes())
            .await
            .map_err(ProxyError::AuthRequired)?,
    };
    log.caller = Some(caller.clone());
    if !permit.count_for(&state.callers, &caller) {
        state.metrics.overloaded.inc();
        return Err(ProxyError::CallerOverloaded(state.callers.limit()));
    }
    Ok(caller)
}

/// Phase 2 for a `CONNECT`: may `caller` reach `host:port`, and by which route. Methods and
/// paths are decided per request inside the tunnel, which the decision then asks to
/// intercept (`Decision::inspect`).
pub(crate) fn decide(
    state: &ProxyState,
    caller: Arc<Caller>,
    host: Host,
    port: u16,
    log: &mut RequestLog,
) -> Result<Target, ProxyError> {
    decide_with(state, caller, host, port, None, log)
}

/// Phase 2 for an HTTP request: may `caller` send `req` to `host:port`, and by which route.
/// The path is decided in its normalized form (`policy::normalize_path`), and `req` is
/// pointed at that form, so the upstream gets exactly the path that was decided on.
pub(crate) fn decide_request<B>(
    state: &ProxyState,
    caller: Arc<Caller>,
    host: Host,
    port: u16,
    req: &mut Request<B>,
    log: &mut RequestLog,
) -> Result<Target, ProxyError> {
    let normalized = normalize_path(req.uri().path());
    let info = RequestInfo {
        method: req.method().as_str(),
        path: normalized.as_deref().map_err(|e| *e),
    };
    let target = decide_with(state, caller, host, port, Some(&info), log)?;
    if let Ok(Cow::Owned(path)) = normalized {
        set_path(req, &path)?;
    }
    Ok(target)
}

/// [`decide_request`] for a request inside an intercepted tunnel, whose `CONNECT` decided
/// `target`: the same target when the request's decision is the same (the usual case: no
/// allocation), else one for the rule that allows this request.
pub(crate) fn decide_inner<B>(
    state: &ProxyState,
    target: &Arc<Target>,
    req: &mut Request<B>,
    log: &mut RequestLog,
) -> Result<Arc<Target>, ProxyError> {
    let normalized = normalize_path(req.uri().path());
    let info = RequestInfo {
        method: req.method().as_str(),
        path: normalized.as_deref().map_err(|e| *e),
    };
    let (caller, host, port) = (&target.caller, &target.host, target.port);
    let decision = state
        .policies
        .current()
        .decide_request(&caller.org, host, port, &info);
    log.set_decision(&decision);
    let next = if decision == target.decision {
        target.clone()
    } else {
        let fresh = into_target(
            decision,
            caller.clone(),
            host.clone(),
            port,
            target.generation,
        );
        Arc::new(fresh?)
    };
    if let Ok(Cow::Owned(path)) = normalized {
        set_path(req, &path)?;
    }
    Ok(next)
}

/// Replaces the path of `req`'s URI, keeping its scheme, authority and query.
fn set_path<B>(req: &mut Request<B>, path: &str) -> Result<(), ProxyError> {
    let bad = || ProxyError::BadRequest("invalid request target".into());
    let pq = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(pq).map_err(|_| bad())?);
    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| bad())?;
    Ok(())
}

fn decide_with(
    state: &ProxyState,
    caller: Arc<Caller>,
    host: Host,
    port: u16,
    request: Option<&RequestInfo<'_>>,
    log: &mut RequestLog,
) -> Result<Target, ProxyError> {
    // The generation first: the set loaded after it is that generation's or a newer one.
    let generation = state.policies.generation();
    let set = state.policies.current();
    let decision = match request {
        None => set.decide(&caller.org, &host, port),
        Some(r) => set.decide_request(&caller.org, &host, port, r),
    };
    log.set_decision(&decision);
    into_target(decision, caller, host, port, generation)
}

/// The target of an allowing `decision`, or the error that answers a denying one.
fn into_target(
    decision: Decision,
    caller: Arc<Caller>,
    host: Host,
    port: u16,
    generation: u64,
) -> Result<Target, ProxyError> {
    match &decision {
        Decision::Deny {
            reason: DenyReason::UndecidablePath(why),
            ..
        } => Err(ProxyError::BadRequest(format!(
            "{why}: a path rule decides this destination, and such a path could reach another \
             resource than the one decided on; send the path in its plain form"
        ))),
        Decision::Allow {
            route,
            allow_private,
            ..
        } => Ok(Target {
            route: route.clone(),
            allow_private: *allow_private,
            reach: decision.reach(),
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

/// The policy files' `[[limit]]` blocks for one request (or blind tunnel) of the target's
/// caller, with the app whose token it would carry: `429 rate_limited` beyond one, counted
/// in `tollgate_rate_limited_total` and logged with the limit's rule.
pub(crate) fn rate_limit(
    state: &ProxyState,
    target: &Target,
    app: Option<&str>,
    log: &mut RequestLog,
) -> Result<(), ProxyError> {
    let set = state.policies.current();
    let who = crate::policy::limiter::Subject {
        org: &target.caller.org,
        user: &target.caller.user,
        app,
        host: &target.host,
    };
    state.rate_limits.check(&set, &who).map_err(|e| {
        state
            .metrics
            .rate_limited
            .get_or_create(&crate::metrics::RateLimitedLabels {
                limit: e.limit.to_string(),
            })
            .inc();
        log.rule = Some(e.at.clone());
        ProxyError::RateLimited(e)
    })
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
    rate_limit(state, target, app.as_ref().map(|a| a.id.as_str()), log)?;
    let (mut parts, body) = req.into_parts();
    // A WebSocket handshake goes on an unpooled connection of its own (`super::upgrade`).
    let upgrade = super::upgrade::restore(&mut parts.headers, &parts.extensions);
    let reauth = match app {
        None => None,
        Some(app) => {
            log.app = Some(app.id.clone());
            let counted = app.clone();
            let injected = state
                .injector
                .inject(&target.caller, app, &mut parts.headers)
                .await;
            let outcome = super::log::injection_outcome(injected.as_ref().err());
            (state.metrics).count_injection(&counted.org, &counted.id, outcome);
            let injected = injected?;
            log.injected = true;
            log.refreshed = injected.refreshed;
            Some(Reinject {
                injector: state.injector.clone(),
                caller: target.caller.clone(),
                injected,
                refreshed: Default::default(),
            })
        }
    };
    let started = Instant::now();
    let send = |req| async move {
        let (route, reach) = (&target.route, &target.reach);
        let sent = if upgrade {
            state.router.upgrade(route, reach, req).await
        } else {
            state.router.send(route, reach, req, predialed).await
        };
        Ok::<_, ProxyError>(sent?)
    };
    // The handshake's path, decided again as this `GET` when the policies are reloaded.
    let ws_path = upgrade.then(|| parts.uri.path().to_string());
    let (up, body_timeout) = (log.bytes_up.clone(), state.settings.body_timeout);
    let sent = send_replayable(parts, body, reauth.as_ref(), up, body_timeout, send).await;
    if let Some(r) = &reauth {
        log.refreshed |= r.refreshed.load(std::sync::atomic::Ordering::Relaxed);
    }
    let mut resp = sent?;
    if let Some(path) = ws_path {
        super::upgrade::follow_reloads(state, target, path, &mut resp);
    }
    log.upstream = resp
        .extensions()
        .get::<hyper_util::client::legacy::connect::HttpInfo>()
        .map(|i| i.remote_addr());
    let upstream_time = started.elapsed();
    log.upstream_time = Some(upstream_time);
    (state.metrics.upstream_latency).observe(upstream_time.as_secs_f64());
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
