//! The per-request context (pingora-style) and the one canonical decision log line per
//! request (smokescreen-style: fixed field names). The line is emitted when the context is
//! dropped, i.e. when the response body or the tunnel has finished, so it carries the bytes
//! moved both ways and the whole duration.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Buf;
use hyper::body::{Body, Frame, SizeHint};

use crate::identity::Caller;
use crate::metrics::Metrics;
use crate::policy::{Decision, Route, RuleRef};

/// Everything the decision line reports about one request.
pub struct RequestLog {
    /// When the request head was received.
    pub start: Instant,
    /// Client address.
    pub peer: SocketAddr,
    /// Request method (`CONNECT` for tunnels).
    pub method: http::Method,
    /// Destination host, normalized when it could be.
    pub host: Option<String>,
    /// Destination port.
    pub port: u16,
    /// The identified caller.
    pub caller: Option<Arc<Caller>>,
    /// `allowed`, `denied`, `error`, or `would_deny` (allowed by a report-mode policy that
    /// would deny it).
    pub decision: &'static str,
    /// Why (the policy reason or the error code).
    pub reason: Cow<'static, str>,
    /// Winning policy.
    pub policy: Option<Arc<str>>,
    /// Deciding rule (`file:line` in the line); formatted only when the line is written.
    pub rule: Option<RuleRef>,
    /// Route taken; formatted only when the line is written.
    pub route: Option<Route>,
    /// Outbound application bound to the destination host, when one of the caller's org is.
    pub app: Option<String>,
    /// Whether a token was injected.
    pub injected: bool,
    /// Status tollgate answered with.
    pub status: u16,
    /// Bytes from the client to the upstream (body or tunnel).
    pub bytes_up: Arc<AtomicU64>,
    /// Bytes from the upstream to the client.
    pub bytes_down: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
}

impl RequestLog {
    /// A fresh context for a request from `peer`.
    pub fn new(metrics: Arc<Metrics>, peer: SocketAddr, method: http::Method) -> Self {
        RequestLog {
            start: Instant::now(),
            peer,
            method,
            host: None,
            port: 0,
            caller: None,
            decision: "error",
            reason: Cow::Borrowed("-"),
            policy: None,
            rule: None,
            route: None,
            app: None,
            injected: false,
            status: 0,
            bytes_up: Arc::default(),
            bytes_down: Arc::default(),
            metrics,
        }
    }

    /// Records a failure answered by tollgate itself. A policy denial keeps the policy's
    /// reason; anything else is logged by its code: refused when it is the client's or the
    /// policy's doing (4xx), failed otherwise.
    pub fn record_error(&mut self, e: &super::errors::ProxyError) {
        self.status = e.status().as_u16();
        if !matches!(e, super::errors::ProxyError::Denied(_)) {
            self.decision = if e.status().is_client_error() {
                "denied"
            } else {
                "error"
            };
            self.reason = e.code().into();
        }
        // A refused credential says why (never with the token): expired, wrong audience...
        if let super::errors::ProxyError::AuthRequired(why) = e {
            if *why != crate::identity::IdentityError::Missing {
                self.reason = format!("{}: {why}", e.code()).into();
            }
        }
    }

    /// Records the policy decision. A request allowed only by a report-mode policy is
    /// `would_deny`, with the reason and rule that would have denied it.
    pub fn set_decision(&mut self, d: &Decision) {
        self.decision = match (d.is_allowed(), d.would_deny()) {
            (true, Some(_)) => WOULD_DENY,
            (true, None) => "allowed",
            (false, _) => "denied",
        };
        self.reason = Cow::Borrowed(d.reason());
        self.policy = d.policy().cloned();
        self.rule = d.rule().cloned();
        self.route = d.route().cloned();
    }
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        let (org, user) = match &self.caller {
            Some(c) => (c.org.as_str(), c.user.as_str()),
            None => ("-", "-"),
        };
        tracing::info!(
            target: "tollgate::access",
            org,
            user,
            method = %self.method,
            host = self.host.as_deref().unwrap_or("-"),
            port = self.port,
            decision = self.decision,
            reason = %self.reason,
            policy = self.policy.as_deref().unwrap_or("-"),
            rule = %OrDash(self.rule.as_ref()),
            route = %OrDash(self.route.as_ref()),
            app = self.app.as_deref().unwrap_or("-"),
            injected = self.injected,
            status = self.status,
            bytes_up = self.bytes_up.load(Ordering::Relaxed),
            bytes_down = self.bytes_down.load(Ordering::Relaxed),
            duration_ms = self.start.elapsed().as_secs_f64() * 1000.0,
            peer = %self.peer,
            "request"
        );
        self.metrics.count_request(self.decision, self.status);
        if self.decision == WOULD_DENY {
            // `reason` holds the would-deny reason, one of the policy's fixed codes.
            let reason = match &self.reason {
                Cow::Borrowed(r) => r,
                Cow::Owned(_) => "-",
            };
            self.metrics
                .would_deny
                .get_or_create(&crate::metrics::WouldDenyLabels {
                    policy: self.policy.as_deref().unwrap_or("-").to_owned(),
                    reason,
                })
                .inc();
        }
    }
}

/// The access line's `decision` for a request a report-mode policy let through.
pub const WOULD_DENY: &str = "would_deny";

/// A value in the access line, `-` when absent (the line's fields are fixed).
struct OrDash<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for OrDash<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// A body that counts the data bytes it yields and, when it is dropped (finished or
/// abandoned), drops the request context it carries, which emits the log line.
pub struct CountingBody<B> {
    inner: B,
    counter: Arc<AtomicU64>,
    /// Held only to be dropped with the body.
    _log: Option<RequestLog>,
}

impl<B> CountingBody<B> {
    /// Counts into `counter`; emits `log` (if any) when the body is dropped.
    pub fn new(inner: B, counter: Arc<AtomicU64>, log: Option<RequestLog>) -> Self {
        CountingBody {
            inner,
            counter,
            _log: log,
        }
    }
}

impl<B> Body for CountingBody<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.counter
                    .fetch_add(data.remaining() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
