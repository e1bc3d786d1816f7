//! WebSockets: HTTP/1.1 `Upgrade: websocket` through plain-http forwarding (`super::forward`,
//! TLS origination included) and inside intercepted tunnels (`super::intercept`, HTTP/1.1
//! inner connections; HTTP/2's extended `CONNECT` is refused there).
//!
//! The handshake is a request like any other: it runs the pipeline's phases (identify, decide,
//! app, exchange), so the policy decides on it and an app's token is injected into it. Only
//! its transport differs:
//!
//! 1. the adapter takes the client's half of the upgrade ([`Pending::take`]) and marks the
//!    request with the [`Protocol`] asked for; hop-by-hop stripping then removes `Connection`
//!    and `Upgrade` as for every request, and [`restore`] puts back exactly
//!    `Connection: upgrade` and that `Upgrade` just before the exchange sends it;
//! 2. the exchange sends it on an unpooled upstream connection of its own
//!    ([`Router::upgrade`](crate::route::Router::upgrade)), never returned to a pool;
//! 3. an upstream `101` is answered to the client with `Connection: upgrade` and the
//!    upstream's `Upgrade`, and a task pumps bytes both ways between the two upgraded streams
//!    ([`crate::io::splice`], the tunnels' idle timeout), counting them into the request's
//!    access line, which is written when the pump ends (status `101`); a policy reload that
//!    no longer allows the decision closes it (`super::live`'s `Revocation`, as for blind
//!    tunnels; reason `policy_revoked`);
//! 4. any other answer is passed through as a normal response.
//!
//! A pumping WebSocket holds its client connection's limits as a tunnel does: the connection
//! permit (global and per caller) for a forwarded one; an intercepted one keeps its tunnel,
//! and with it the `CONNECT`'s permit, open until it ends.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, UPGRADE};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::errors::{full, ProxyError};
use super::forward::clean_response;
use super::live::{Revocation, POLICY_REVOKED};
use super::log::RequestLog;
use super::pipeline::Target;
use super::{pipeline, ProxyBody, ProxyState};

/// The `Upgrade` value a client's WebSocket handshake asked for, carried in the request's
/// extensions across hop-by-hop stripping so that the exchange sends the request as an
/// upgrade.
#[derive(Clone, Debug)]
pub(super) struct Protocol(HeaderValue);

/// The handshake's [`Revocation`], carried from the exchange (which knows the decision) to
/// the pump in the response's extensions.
#[derive(Clone)]
struct Revoke(Arc<Mutex<Option<Revocation>>>);

/// Makes the WebSocket that `resp` may open (a `GET` of `path`) follow policy reloads under
/// `target`'s decision: one the new policies no longer allow is closed, as a blind tunnel is.
pub(super) fn follow_reloads<B>(
    state: &ProxyState,
    target: &Target,
    path: String,
    resp: &mut Response<B>,
) {
    let revocation = Revocation::for_request(&state.policies, target, path);
    resp.extensions_mut()
        .insert(Revoke(Arc::new(Mutex::new(Some(revocation)))));
}

/// A client's WebSocket handshake in flight: the client's half of the upgrade, taken before
/// the request is consumed by the pipeline.
pub(super) struct Pending {
    /// Resolves to the client's stream once the `101` is written.
    client: OnUpgrade,
}

impl Pending {
    /// When `req` is an HTTP/1.1 WebSocket handshake (`GET`, `Connection: upgrade`,
    /// `Upgrade: websocket`): takes the client's half of the upgrade and marks the request
    /// with its [`Protocol`]. Any other `Upgrade` (`h2c`, ...) is left alone: stripped as a
    /// hop-by-hop header, the request is forwarded as a plain one.
    pub(super) fn take<B>(req: &mut Request<B>) -> Option<Pending> {
        if req.version() != Version::HTTP_11 || req.method() != Method::GET {
            return None;
        }
        let protocol = req.headers().get(UPGRADE)?.clone();
        if !is_websocket(&protocol) || !connection_has_upgrade(req.headers()) {
            return None;
        }
        let client = hyper::upgrade::on(&mut *req);
        req.extensions_mut().insert(Protocol(protocol));
        Some(Pending { client })
    }

    /// Phase 5 for a handshake. An upstream `101` is answered with the upgrade headers and
    /// a pump task spawned on `pumps`, which holds `hold` (the connection's limits) and the
    /// access line until the WebSocket ends; anything else is [`pipeline::respond`]'s.
    pub(super) fn respond<H: Send + 'static>(
        self,
        state: &ProxyState,
        result: Result<Response<Incoming>, ProxyError>,
        mut log: RequestLog,
        pumps: &TaskTracker,
        hold: H,
    ) -> Response<ProxyBody> {
        let mut resp = match result {
            Ok(resp) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => resp,
            other => return pipeline::respond(other, log),
        };
        let upstream = hyper::upgrade::on(&mut resp);
        let revocation = resp
            .extensions_mut()
            .remove::<Revoke>()
            .and_then(|r| r.0.lock().unwrap_or_else(|e| e.into_inner()).take());
        let protocol = resp
            .headers()
            .get(UPGRADE)
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static("websocket"));
        clean_response(&mut resp);
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        resp.headers_mut().insert(UPGRADE, protocol);
        log.status = StatusCode::SWITCHING_PROTOCOLS.as_u16();
        let idle = state.settings.idle_timeout;
        let metrics = state.metrics.clone();
        let client = self.client;
        pumps.spawn(
            async move {
                let _hold = hold;
                let (up, down) = (log.bytes_up.clone(), log.bytes_down.clone());
                match tokio::join!(client, upstream) {
                    (Ok(client), Ok(upstream)) => {
                        metrics.open_tunnels.inc();
                        let pump = crate::io::splice(
                            TokioIo::new(client),
                            TokioIo::new(upstream),
                            idle,
                            up,
                            down,
                        );
                        let revoked = async {
                            match revocation {
                                Some(r) => drop(r.revoked().await),
                                None => std::future::pending().await,
                            }
                        };
                        // Dropping the pump closes both sides.
                        tokio::select! {
                            end = pump => tracing::debug!(end = %end, "websocket closed"),
                            () = revoked => record_revoked(&mut log),
                        }
                        metrics.open_tunnels.dec();
                    }
                    (client, upstream) => tracing::debug!(
                        client = ?client.err(),
                        upstream = ?upstream.err(),
                        "websocket upgrade failed"
                    ),
                }
                // The access line, with the bytes moved both ways.
                drop(log);
            }
            .in_current_span(),
        );
        resp.map(|_| full(Bytes::new()))
    }
}

/// Notes in the access line (and the log) that a policy reload closed the WebSocket.
fn record_revoked(log: &mut RequestLog) {
    let host = log.host.as_deref().unwrap_or("-");
    let port = log.port;
    tracing::info!(
        host,
        port,
        "websocket closed: a policy reload no longer allows it"
    );
    (log.decision, log.reason) = ("denied", POLICY_REVOKED.into());
}

/// Puts `Connection: upgrade` and the client's `Upgrade` back on a handshake marked with a
/// [`Protocol`] (after hop-by-hop stripping removed them); returns whether it is one.
pub(super) fn restore(headers: &mut HeaderMap, extensions: &http::Extensions) -> bool {
    let Some(Protocol(protocol)) = extensions.get::<Protocol>() else {
        return false;
    };
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, protocol.clone());
    true
}

/// Whether `Upgrade` names the WebSocket protocol (case-insensitive, among others).
fn is_websocket(v: &HeaderValue) -> bool {
    v.to_str().is_ok_and(|s| {
        s.split(',')
            .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
    })
}

/// Whether `Connection` carries the `upgrade` token.
fn connection_has_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The answer to a WebSocket over HTTP/2 (extended `CONNECT`, RFC 8441) inside an intercepted
/// tunnel: not supported, HTTP/1.1 is.
pub(super) fn h2_websocket_refused() -> ProxyError {
    ProxyError::BadRequest(
        "WebSockets over HTTP/2 (extended CONNECT) are not supported inside intercepted \
         tunnels; use HTTP/1.1"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(version: Version, method: Method, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder()
            .method(method)
            .version(version)
            .uri("http://h/ws");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn only_http11_get_websocket_handshakes_are_upgrades() {
        let ws = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ];
        let mut r = handshake(Version::HTTP_11, Method::GET, &ws);
        assert!(Pending::take(&mut r).is_some());
        let mut stripped = r.headers().clone();
        super::super::forward::strip_hop_by_hop(&mut stripped);
        assert!(!stripped.contains_key(UPGRADE));
        assert!(restore(&mut stripped, r.extensions()));
        assert_eq!(stripped[CONNECTION], "upgrade");
        assert_eq!(stripped[UPGRADE], "WebSocket");

        for (name, mut r) in [
            (
                "h2c",
                handshake(
                    Version::HTTP_11,
                    Method::GET,
                    &[("connection", "upgrade"), ("upgrade", "h2c")],
                ),
            ),
            (
                "no connection token",
                handshake(Version::HTTP_11, Method::GET, &[("upgrade", "websocket")]),
            ),
            ("POST", handshake(Version::HTTP_11, Method::POST, &ws)),
            ("HTTP/1.0", handshake(Version::HTTP_10, Method::GET, &ws)),
        ] {
            assert!(Pending::take(&mut r).is_none(), "{name}");
            let mut h = HeaderMap::new();
            assert!(!restore(&mut h, r.extensions()), "{name}");
            assert!(h.is_empty(), "{name}");
        }
    }
}
