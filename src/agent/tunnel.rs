//! One tunnel through the agent: a `CONNECT host:port` stream from tollgate. The target is
//! checked against the [`Allowlist`](super::allow::Allowlist), resolved once, every address
//! checked, a checked one dialed; 200 is answered only after the dial succeeded. Then bytes
//! flow through [`crate::io`] until both sides are done or the tunnel idles out.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::allow::{Refusal, TargetMatch};
use super::AgentState;
use crate::policy::{normalize_host, Host};
use crate::route::direct::DirectError;

/// Copy buffer per tunnel direction, held only while bytes move. Larger than the proxy's
/// (64 KiB): each read becomes one HTTP/2 frame towards tollgate (frames up to
/// `MAX_FRAME_SIZE`), and fewer, larger frames cost less on both sides of the relay.
const TUNNEL_BUFFER: usize = 256 * 1024;

pub(super) type TunnelBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// The per-tunnel log line (`tollgate::agent::tunnel`), emitted when dropped.
struct TunnelLog {
    /// For `duration_us`.
    start: Instant,
    /// The target as asked, then normalized.
    host: String,
    /// The target port.
    port: u16,
    /// `allowed`, `denied` or `error`.
    decision: &'static str,
    /// Why it was refused, or how it ended.
    reason: String,
    /// The allowlist entry that matched (`by address` for CIDR-only matches).
    rule: String,
    /// The address dialed, once connected.
    addr: Option<SocketAddr>,
    /// The status answered to the relay.
    status: u16,
    /// Bytes from tollgate to the destination, counted as they move.
    up: Arc<AtomicU64>,
    /// Bytes back.
    down: Arc<AtomicU64>,
}

impl TunnelLog {
    /// Records how the tunnel ended (the line is written when the log is dropped).
    fn end(&mut self, reason: String) {
        self.reason = reason;
    }
}

impl Drop for TunnelLog {
    fn drop(&mut self) {
        tracing::info!(
            target: "tollgate::agent::tunnel",
            host = %self.host,
            port = self.port,
            decision = self.decision,
            reason = %self.reason,
            rule = %self.rule,
            addr = self.addr.map(tracing::field::display),
            status = self.status,
            bytes_up = self.up.load(Ordering::Relaxed),
            bytes_down = self.down.load(Ordering::Relaxed),
            duration_us = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX),
            "tunnel"
        );
    }
}

fn answer(status: StatusCode, code: &str, message: &str) -> Response<TunnelBody> {
    let body = serde_json::json!({"error": code, "message": message}).to_string();
    let mut resp = Response::new(Full::new(Bytes::from(body)).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Handles one stream: a `CONNECT host:port` from tollgate.
pub(super) async fn tunnel(
    state: Arc<AgentState>,
    tunnels: TaskTracker,
    mut req: Request<Incoming>,
) -> Result<Response<TunnelBody>, Infallible> {
    let mut log = TunnelLog {
        start: Instant::now(),
        host: "-".into(),
        port: 0,
        decision: "denied",
        reason: String::new(),
        rule: "-".into(),
        addr: None,
        status: 0,
        up: Arc::default(),
        down: Arc::default(),
    };
    let refuse = |log: &mut TunnelLog, status: StatusCode, code: &'static str, message: String| {
        log.status = status.as_u16();
        log.reason = message.clone();
        answer(status, code, &message)
    };
    if req.method() != Method::CONNECT {
        return Ok(refuse(
            &mut log,
            StatusCode::METHOD_NOT_ALLOWED,
            "bad_request",
            "the agent only opens CONNECT tunnels".into(),
        ));
    }
    let Some((raw_host, port)) = connect_target(req.uri()) else {
        return Ok(refuse(
            &mut log,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "CONNECT needs host:port with a port from 1 to 65535".into(),
        ));
    };
    log.host = raw_host.clone();
    log.port = port;
    let host = match normalize_host(&raw_host) {
        Ok(h) => h,
        Err(e) => {
            return Ok(refuse(
                &mut log,
                StatusCode::BAD_REQUEST,
                "bad_request",
                e.to_string(),
            ))
        }
    };
    log.host = host.to_string();
    let matched = match state.config.allow.check_target(&host) {
        Ok(m) => m,
        Err(Refusal { code, message }) => {
            return Ok(refuse(&mut log, StatusCode::FORBIDDEN, code, message));
        }
    };
    log.rule = match &matched {
        TargetMatch::Name(r) | TargetMatch::Ip(r) => r.clone(),
        TargetMatch::Addresses => "by address".into(),
    };
    let stream = match dial(&state, &host, port, &matched).await {
        Ok((stream, addr)) => {
            log.addr = Some(addr);
            stream
        }
        Err(Dial::Refused(Refusal { code, message })) => {
            return Ok(refuse(&mut log, StatusCode::FORBIDDEN, code, message));
        }
        Err(Dial::Failed(e)) => {
            log.decision = "error";
            // The classification the proxy reports for its own direct dials, so a failure
            // reads the same on either route.
            return Ok(refuse(&mut log, e.status(), e.code(), e.to_string()));
        }
    };
    log.decision = "allowed";
    log.reason = "allowed".into();
    log.status = 200;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let idle = state.config.idle_timeout;
    tunnels.spawn(
        async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => {
                    log.end(format!("tunnel setup failed: {e}"));
                    return;
                }
            };
            let end = crate::io::splice_with_buffer(
                TokioIo::new(upgraded),
                stream,
                idle,
                log.up.clone(),
                log.down.clone(),
                TUNNEL_BUFFER,
            )
            .await;
            log.end(end);
        }
        .in_current_span(),
    );
    Ok(Response::new(http_body_util::Empty::new().boxed()))
}

/// The `host:port` of a `CONNECT`, or `None` when the port is missing or not in 1..=65535
/// (never a default: the relay is answered 400).
fn connect_target(uri: &http::Uri) -> Option<(String, u16)> {
    let authority = uri.authority()?;
    let port = crate::policy::authority_port(authority.as_str()).ok()??;
    Some((authority.host().to_string(), port))
}

enum Dial {
    Refused(Refusal),
    Failed(DirectError),
}

/// Resolves once, checks every address against the allowlist (on top of the dialer's own
/// checks, which allow private addresses: the allowlist decides here), and dials a checked
/// address, all within one connect timeout.
async fn dial(
    state: &AgentState,
    host: &Host,
    port: u16,
    matched: &TargetMatch,
) -> Result<(TcpStream, SocketAddr), Dial> {
    let deadline = tokio::time::Instant::now() + state.config.connect_timeout;
    let addrs = state
        .dialer
        .resolve_checked_until(host, port, true, deadline)
        .await
        .map_err(Dial::Failed)?;
    for addr in &addrs {
        state
            .config
            .allow
            .check_address(matched, addr.ip())
            .map_err(Dial::Refused)?;
    }
    state
        .dialer
        .connect_until(host, port, &addrs, deadline)
        .await
        .map_err(Dial::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_targets_need_a_port_from_1_to_65535() {
        let target = |authority: &str| {
            let uri: http::Uri = authority.parse().unwrap();
            connect_target(&uri)
        };
        let cases = [
            ("name and port", "db.corp:5432", Some(("db.corp", 5432))),
            ("highest port", "db.corp:65535", Some(("db.corp", 65535))),
            ("IPv6", "[::1]:443", Some(("[::1]", 443))),
            ("no port", "db.corp", None),
            ("port 0", "db.corp:0", None),
            ("port 65536", "db.corp:65536", None),
            ("port 99999", "db.corp:99999", None),
            ("empty port", "db.corp:", None),
        ];
        for (name, authority, want) in cases {
            let got = target(authority);
            let got = got.as_ref().map(|(h, p)| (h.as_str(), *p));
            assert_eq!(got, want, "{name}: {authority}");
        }
    }
}
