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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Buf;
use hyper::body::{Body, Frame, SizeHint};

use crate::identity::Caller;
use crate::metrics::Metrics;
use crate::otel::{Otel, RequestSpan};
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
    /// The request's path as sent, without the query (which may carry secrets); none for
    /// `CONNECT`.
    pub path: Option<String>,
    /// The address actually dialed (after DNS and the guard; the parent proxy's with
    /// `--upstream-proxy`), when a direct connection was made or refused. Agent routes
    /// dial on the agent's side, which logs it.
    pub upstream: Option<SocketAddr>,
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
    /// Whether the app's token was refreshed for this request (before injecting it, or after
    /// the upstream rejected it).
    pub refreshed: bool,
    /// Time from sending the request upstream to its response head (the span's upstream time).
    pub upstream_time: Option<Duration>,
    /// The OpenTelemetry exporter the request's span goes to (`--otlp-endpoint`), when on.
    otel: Option<Arc<Otel>>,
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
            path: None,
            upstream: None,
            caller: None,
            decision: "error",
            reason: Cow::Borrowed(""),
            policy: None,
            rule: None,
            route: None,
            app: None,
            injected: false,
            status: 0,
            bytes_up: Arc::default(),
            bytes_down: Arc::default(),
            metrics,
            refreshed: false,
            upstream_time: None,
            otel: None,
        }
    }

    /// Sends the request's span to `otel` too when the line is written (`--otlp-endpoint`).
    pub fn trace_to(mut self, otel: Option<&Arc<Otel>>) -> Self {
        self.otel = otel.cloned();
        self
    }

    /// The request's span, from the same fields as the line.
    fn span(&self) -> RequestSpan<'_> {
        let since = self.start.elapsed();
        RequestSpan {
            start: SystemTime::now().checked_sub(since).unwrap_or(UNIX_EPOCH),
            method: self.method.as_str(),
            decision: self.decision,
            reason: (!self.reason.is_empty()).then_some(&*self.reason),
            policy: self.policy.as_deref(),
            rule: self.rule.as_ref().map(ToString::to_string),
            route: self.route.as_ref().map(ToString::to_string),
            app: self.app.as_deref(),
            injected: self.injected,
            refreshed: self.refreshed,
            status: self.status,
            upstream_time: self.upstream_time,
            caller: self
                .caller
                .as_ref()
                .map(|c| (c.org.as_str(), c.user.as_str())),
            host: self.host.as_deref(),
            port: self.port,
            path: self.path.as_deref(),
            peer: self.peer.to_string(),
            bytes: (
                self.bytes_up.load(Ordering::Relaxed),
                self.bytes_down.load(Ordering::Relaxed),
            ),
        }
    }

    /// Records a failure answered by tollgate itself. A policy denial keeps the policy's
    /// reason; anything else is logged by its code: refused when it is the client's or the
    /// policy's doing (4xx), failed otherwise.
    /// A `407` is logged with why the credentials were refused (`missing_credentials`,
    /// `token_expired`...), and a failed dial with the address it refused or failed on.
    pub fn record_error(&mut self, e: &super::errors::ProxyError) {
        use super::errors::ProxyError;
        self.status = e.status().as_u16();
        if !matches!(e, ProxyError::Denied(_)) {
            self.decision = if e.status().is_client_error() {
                "denied"
            } else {
                "error"
            };
            self.reason = match e {
                ProxyError::AuthRequired(why) => auth_reason(why),
                _ => e.code().into(),
            };
        }
        if let Some(addr) = dialed(e) {
            self.upstream = Some(addr);
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

impl RequestLog {
    /// This request as the deny log keeps it (the same fields as the access line).
    fn denial(&self, org: Option<&str>, user: Option<&str>) -> crate::denials::Denial {
        crate::denials::Denial {
            at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            org: org.map(str::to_owned),
            user: user.map(str::to_owned),
            method: self.method.to_string(),
            host: self.host.clone(),
            port: self.port,
            path: self.path.clone(),
            policy: self.policy.as_deref().map(str::to_owned),
            rule: self.rule.as_ref().map(ToString::to_string),
            reason: self.reason.to_string(),
            status: self.status,
        }
    }
}

/// The access line's `reason` for a `407`: why the credentials were refused.
fn auth_reason(e: &crate::identity::IdentityError) -> Cow<'static, str> {
    use crate::identity::IdentityError;
    Cow::Borrowed(match e {
        IdentityError::Missing => "missing_credentials",
        IdentityError::Malformed => "malformed_credentials",
        IdentityError::Expired => "token_expired",
        IdentityError::Invalid => "invalid_token",
        IdentityError::UserMismatch => "user_mismatch",
        IdentityError::Clock => "clock_unusable",
        IdentityError::Revoked => "token_revoked",
        IdentityError::KeysNeeded => "issuer_keys_unavailable",
        // A workload token refused: which check failed (never token data).
        IdentityError::Refused(why) => return Cow::Owned(format!("token_refused: {why}")),
    })
}

/// The `outcome` label of `tollgate_injections_total` for an injection's result.
pub(crate) fn injection_outcome(e: Option<&crate::oauth::inject::InjectError>) -> &'static str {
    use crate::oauth::inject::InjectError;
    match e {
        None => "injected",
        Some(InjectError::AuthorizationRequired(_)) => "authorization_required",
        Some(InjectError::Disabled { .. }) => "app_disabled",
        Some(InjectError::RefreshFailed { .. }) => "refresh_failed",
        Some(InjectError::Store(_)) => "error",
    }
}

/// The address a failed direct dial refused or failed on, when the error names one.
fn dialed(e: &super::errors::ProxyError) -> Option<SocketAddr> {
    use crate::route::{DialError, DirectError, SendError};
    match e {
        super::errors::ProxyError::Upstream(SendError::Dial(DialError::Direct(d))) => match d {
            DirectError::Refused(addr) | DirectError::DeniedAddress { addr, .. } => Some(*addr),
            DirectError::Prohibited(p) => Some(p.addr),
            _ => None,
        },
        _ => None,
    }
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        let (org, user) = match &self.caller {
            Some(c) => (Some(c.org.as_str()), Some(c.user.as_str())),
            None => (None, None),
        };
        let peer = AddrText::new(self.peer);
        let upstream = self.upstream.map(AddrText::new);
        // Absent values are `None`: JSON lines write them as `null` (`crate::logging::json`).
        tracing::info!(
            target: "tollgate::access",
            org,
            user,
            method = self.method.as_str(),
            host = self.host.as_deref(),
            port = self.port,
            path = self.path.as_deref(),
            decision = self.decision,
            reason = (!self.reason.is_empty()).then_some(&*self.reason),
            policy = self.policy.as_deref(),
            rule = self.rule.as_ref().map(tracing::field::display),
            route = self.route.as_ref().map(tracing::field::display),
            app = self.app.as_deref(),
            upstream = upstream.as_ref().map(AddrText::as_str),
            injected = self.injected,
            status = self.status,
            bytes_up = self.bytes_up.load(Ordering::Relaxed),
            bytes_down = self.bytes_down.load(Ordering::Relaxed),
            duration_us = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX),
            peer = peer.as_str(),
            "request"
        );
        if let Some(otel) = &self.otel {
            otel.record(self.span());
        }
        self.metrics.count_request(self.decision, self.status);
        if self.decision == "denied" {
            self.metrics.denials.record(self.denial(org, user));
        }
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

/// A socket address as the access line writes it (`Display`'s form), made without `fmt` for
/// IPv4: every line has one or two, and `fmt` made them a fifth of the line's cost.
struct AddrText {
    buf: [u8; 64],
    len: usize,
}

impl AddrText {
    fn new(addr: SocketAddr) -> Self {
        let mut t = AddrText {
            buf: [0; 64],
            len: 0,
        };
        match addr {
            SocketAddr::V4(a) => {
                for (i, octet) in a.ip().octets().into_iter().enumerate() {
                    if i > 0 {
                        t.push(b'.');
                    }
                    t.push_number(u32::from(octet));
                }
                t.push(b':');
                t.push_number(u32::from(a.port()));
            }
            // At most 64 bytes: `[` 45-byte address `%` 10-digit scope `]:` 5-digit port.
            SocketAddr::V6(_) => {
                use std::io::Write;
                let mut out = std::io::Cursor::new(&mut t.buf[..]);
                let _ = write!(out, "{addr}");
                t.len = usize::try_from(out.position()).unwrap_or(0);
            }
        }
        t
    }

    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    fn push_number(&mut self, mut n: u32) {
        let mut digits = [0u8; 10];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for &d in &digits[i..] {
            self.push(d);
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

/// The access line's `decision` for a request a report-mode policy let through.
pub const WOULD_DENY: &str = "would_deny";

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

#[cfg(test)]
mod tests {
    use super::AddrText;

    #[test]
    fn addresses_read_as_display_writes_them() {
        for a in [
            "127.0.0.1:8080",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "10.20.3.4:443",
            "[::1]:3128",
            "[2001:db8::1]:443",
            "[::ffff:192.0.2.1]:80",
        ] {
            let addr: std::net::SocketAddr = a.parse().unwrap();
            assert_eq!(AddrText::new(addr).as_str(), addr.to_string());
        }
        // The longest form: an IPv4-embedding address with a scope id, which fills the buffer.
        let ip: std::net::Ipv6Addr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .unwrap();
        let addr = std::net::SocketAddr::V6(std::net::SocketAddrV6::new(ip, 65535, 0, u32::MAX));
        assert_eq!(AddrText::new(addr).as_str(), addr.to_string());
    }
}
