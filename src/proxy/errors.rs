//! The one place (linkerd's `rescue`) that turns a failure into the synthetic response the
//! client sees: a status, an RFC 9209 `Proxy-Status` header and a JSON body
//! `{"error": CODE, "message": ..., ...}`. Internals never leak: messages are written for the
//! caller, and secrets never reach this module.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, PROXY_AUTHENTICATE, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Map, Value};

use super::ProxyBody;
use crate::identity::IdentityError;
use crate::oauth::inject::{ConsentRequired, InjectError};
use crate::policy::Decision;
use crate::relay::{AgentDialError, AgentFailure};
use crate::route::{DialError, DirectError, SendError};
use crate::store::StoreError;

/// Name this proxy uses in `Proxy-Status`.
pub const PROXY_NAME: &str = "tollgate";

/// Everything the proxy itself can answer with instead of an upstream response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Missing, expired or forged caller token.
    #[error("proxy authentication required: {0}")]
    AuthRequired(IdentityError),
    /// Policy denied the destination.
    #[error("destination denied: {}", .0.reason())]
    Denied(Box<Decision>),
    /// Reaching the upstream failed on either route: the dial (DNS, guard, deny rule on a
    /// resolved address, refused, timeout; no agent connected, or the agent refused or failed,
    /// its reason passed on), the upstream's TLS handshake, no response head in time, or a
    /// broken connection. Tunnels' dial errors arrive as `SendError::Dial`.
    #[error(transparent)]
    Upstream(#[from] SendError),
    /// The request cannot be proxied as sent.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Connection limit reached.
    #[error("too many connections")]
    Overloaded,
    /// The request head is larger than the configured limit.
    #[error("request head larger than {0} bytes")]
    HeadTooLarge(usize),
    /// A request inside an intercepted tunnel names another host than the `CONNECT` did.
    #[error("misdirected request: {0}")]
    Misdirected(String),
    /// The outbound application bound to the host is disabled.
    #[error("outbound application {app:?} is disabled by its administrators")]
    AppDisabled {
        /// App id.
        app: String,
        /// App name.
        app_name: String,
    },
    /// The user has no usable token for the app: the body carries a consent URL.
    #[error("authorization required")]
    AuthorizationRequired(Box<ConsentRequired>),
    /// Refreshing the user's token failed; the token is kept, a retry may succeed.
    #[error("refreshing the token for application {app:?} failed: {reason}")]
    TokenRefreshFailed {
        /// App id.
        app: String,
        /// Why (never a token).
        reason: String,
    },
    /// tollgate itself failed (the store, minting a certificate); the detail goes to the
    /// server log only, never to the client.
    #[error("internal error")]
    Internal(String),
    /// The caller already holds its limit of live connections (the limit).
    #[error("too many connections for this caller (limit {0})")]
    CallerOverloaded(usize),
    /// The client did not send a buffered request body within the body timeout.
    #[error("the request body did not arrive within {}s", .0.as_secs())]
    BodyTimeout(std::time::Duration),
    /// The shared store cannot be reached and this request needs it (a token not cached, a
    /// refresh, a consent ticket); cached requests go on. Retry shortly.
    #[error("tollgate's store is unreachable and this request needs it; retry shortly")]
    StoreUnavailable,
    /// A `[[limit]]` of the policy files refuses the request for now.
    #[error("rate limit {} exceeded: retry after {}s", .0.limit, .0.retry_after_secs())]
    RateLimited(crate::policy::limiter::Exceeded),
}

impl From<InjectError> for ProxyError {
    fn from(e: InjectError) -> Self {
        match e {
            InjectError::Disabled { app, app_name } => ProxyError::AppDisabled { app, app_name },
            InjectError::AuthorizationRequired(c) => ProxyError::AuthorizationRequired(c),
            InjectError::RefreshFailed { app, reason } => {
                ProxyError::TokenRefreshFailed { app, reason }
            }
            InjectError::Store(StoreError::Unavailable(e)) => {
                tracing::warn!(error = %e, "store unreachable during token injection");
                ProxyError::StoreUnavailable
            }
            InjectError::Store(e) => {
                tracing::error!(error = %e, "store failed during token injection");
                ProxyError::Internal("store".into())
            }
        }
    }
}

impl From<DialError> for ProxyError {
    fn from(e: DialError) -> Self {
        ProxyError::Upstream(SendError::Dial(e))
    }
}

impl From<DirectError> for ProxyError {
    fn from(e: DirectError) -> Self {
        ProxyError::from(DialError::from(e))
    }
}

impl From<AgentDialError> for ProxyError {
    fn from(e: AgentDialError) -> Self {
        ProxyError::from(DialError::from(e))
    }
}

/// The status of an agent's failure to open a tunnel.
fn agent_status(e: &AgentDialError) -> StatusCode {
    match e {
        AgentDialError::Failed {
            kind: AgentFailure::Denied | AgentFailure::Prohibited,
            ..
        } => StatusCode::FORBIDDEN,
        AgentDialError::Failed {
            kind: AgentFailure::Timeout,
            ..
        } => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// The error code of a dial failure: the direct side's own classification, or the agent's.
fn dial_code(e: &DialError) -> &'static str {
    match e {
        DialError::Direct(e) => e.code(),
        DialError::Agent(e) => e.code(),
    }
}

/// The RFC 9209 error type of an error code shared by direct and agent dial failures.
fn dial_status_type(code: &str) -> &'static str {
    match code {
        "destination_denied" => "http_request_denied",
        "destination_ip_prohibited" => "destination_ip_prohibited",
        "dns_error" => "dns_error",
        "connection_refused" => "connection_refused",
        "connection_timeout" => "connection_timeout",
        _ => "destination_unavailable",
    }
}

impl ProxyError {
    /// The JSON `error` code (DESIGN "Errors from the proxy itself").
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::AuthRequired(_) => "proxy_auth_required",
            ProxyError::Denied(_) => "destination_denied",
            ProxyError::Upstream(SendError::Dial(e)) => dial_code(e),
            ProxyError::Upstream(SendError::Timeout(_)) => "connection_timeout",
            ProxyError::Upstream(SendError::Upstream(_)) => "upstream_error",
            ProxyError::Upstream(SendError::Tls {
                certificate: true, ..
            }) => "tls_certificate_error",
            ProxyError::Upstream(SendError::Tls { .. }) => "tls_protocol_error",
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::HeadTooLarge(_) => "request_head_too_large",
            ProxyError::Overloaded => "overloaded",
            ProxyError::AppDisabled { .. } => "app_disabled",
            ProxyError::AuthorizationRequired(_) => "authorization_required",
            ProxyError::TokenRefreshFailed { .. } => "token_refresh_failed",
            ProxyError::Misdirected(_) => "misdirected_request",
            ProxyError::Internal(_) => "internal_error",
            ProxyError::CallerOverloaded(_) => "overloaded",
            ProxyError::BodyTimeout(_) => "body_timeout",
            ProxyError::StoreUnavailable => "store_unavailable",
            ProxyError::RateLimited(_) => "rate_limited",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::AuthRequired(_) => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            ProxyError::Denied(_) => StatusCode::FORBIDDEN,
            ProxyError::Upstream(SendError::Dial(DialError::Direct(e))) => e.status(),
            ProxyError::Upstream(SendError::Dial(DialError::Agent(e))) => agent_status(e),
            ProxyError::Upstream(SendError::Timeout(_)) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::HeadTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::AppDisabled { .. } => StatusCode::FORBIDDEN,
            ProxyError::AuthorizationRequired(_) => StatusCode::UNAUTHORIZED,
            ProxyError::TokenRefreshFailed { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Misdirected(_) => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::CallerOverloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The RFC 9209 error type for `Proxy-Status`.
    fn proxy_status_type(&self) -> &'static str {
        match self {
            ProxyError::AuthRequired(_) | ProxyError::Denied(_) => "http_request_denied",
            ProxyError::Upstream(SendError::Dial(e)) => dial_status_type(dial_code(e)),
            ProxyError::Upstream(SendError::Timeout(_)) => "connection_timeout",
            ProxyError::Upstream(SendError::Upstream(_)) => "connection_terminated",
            ProxyError::Upstream(SendError::Tls {
                certificate: true, ..
            }) => "tls_certificate_error",
            ProxyError::Upstream(SendError::Tls { .. }) => "tls_protocol_error",
            ProxyError::BadRequest(_) => "http_request_error",
            ProxyError::HeadTooLarge(_) => "http_request_error",
            ProxyError::Overloaded | ProxyError::Internal(_) => "proxy_internal_error",
            ProxyError::AppDisabled { .. } | ProxyError::AuthorizationRequired(_) => {
                "http_request_denied"
            }
            ProxyError::TokenRefreshFailed { .. } => "proxy_internal_error",
            ProxyError::Misdirected(_) => "http_request_error",
            ProxyError::CallerOverloaded(_) => "proxy_internal_error",
            ProxyError::BodyTimeout(_) => "http_request_error",
            ProxyError::StoreUnavailable => "proxy_internal_error",
            ProxyError::RateLimited(_) => "http_request_denied",
        }
    }

    /// The human message for the body and the `details` parameter.
    pub fn message(&self) -> String {
        match self {
            ProxyError::AuthRequired(e) => format!(
                "proxy authentication required ({e}): send a caller token as \
                 Proxy-Authorization: Bearer <token> or Basic user:<token>"
            ),
            ProxyError::Denied(d) => match (d.rule(), d.policy()) {
                (Some(rule), None) => format!("destination denied by deny rule {rule}"),
                (Some(rule), Some(policy)) => format!(
                    "destination denied: {} (rule {rule} of policy {policy})",
                    d.reason()
                ),
                _ => format!("destination denied: {}", d.reason()),
            },
            // The agent's ID is for operators (the access log has it), not for callers.
            ProxyError::Upstream(SendError::Dial(DialError::Agent(e))) => match e {
                AgentDialError::Unavailable { .. } => {
                    "no agent serving this destination's route is connected".to_string()
                }
                AgentDialError::Failed { message, .. } => {
                    format!("the agent could not open the tunnel: {message}")
                }
            },
            other => other.to_string(),
        }
    }

    /// Extra JSON fields.
    fn extra(&self, body: &mut Map<String, Value>) {
        match self {
            ProxyError::Denied(d) => {
                if let Some(p) = d.policy() {
                    body.insert("policy".into(), json!(p.as_ref()));
                }
                if let Some(r) = d.rule() {
                    body.insert("rule".into(), json!(r.to_string()));
                }
                body.insert("reason".into(), json!(d.reason()));
            }
            ProxyError::Upstream(SendError::Dial(DialError::Direct(DirectError::Prohibited(
                p,
            )))) => {
                body.insert("address".into(), json!(p.addr.ip().to_string()));
                body.insert("reason".into(), json!(p.reason));
            }
            ProxyError::Upstream(SendError::Dial(DialError::Direct(
                DirectError::DeniedAddress { addr, rule }
                | DirectError::OutsideCidrs { addr, rule },
            ))) => {
                body.insert("address".into(), json!(addr.ip().to_string()));
                body.insert("rule".into(), json!(rule));
            }
            ProxyError::Upstream(SendError::Dial(DialError::Agent(AgentDialError::Failed {
                message,
                ..
            }))) => {
                body.insert("reason".into(), json!(message));
            }
            ProxyError::AppDisabled { app, app_name } => {
                body.insert("app".into(), json!(app));
                body.insert("app_name".into(), json!(app_name));
            }
            ProxyError::AuthorizationRequired(c) => {
                body.insert("org".into(), json!(c.org));
                body.insert("app".into(), json!(c.app));
                body.insert("app_name".into(), json!(c.app_name));
                body.insert("consent_url".into(), json!(c.consent_url));
                body.insert("expires_in".into(), json!(c.expires_in));
            }
            ProxyError::TokenRefreshFailed { app, .. } => {
                body.insert("app".into(), json!(app));
            }
            ProxyError::CallerOverloaded(limit) => {
                body.insert("reason".into(), json!("per_caller_connection_limit"));
                body.insert("limit".into(), json!(limit));
            }
            ProxyError::RateLimited(e) => {
                body.insert("limit".into(), json!(e.limit.as_ref()));
                body.insert("rule".into(), json!(e.at.to_string()));
                body.insert("retry_after".into(), json!(e.retry_after_secs()));
            }
            _ => {}
        }
    }

    /// The synthetic response.
    pub fn into_response(&self) -> Response<ProxyBody> {
        let message = self.message();
        let mut body = Map::new();
        body.insert("error".into(), json!(self.code()));
        body.insert("message".into(), json!(message));
        self.extra(&mut body);
        let mut resp = json_response(self.status(), &Value::Object(body));
        let status_value = proxy_status(self.proxy_status_type(), &message);
        resp.headers_mut().insert("proxy-status", status_value);
        if let ProxyError::RateLimited(e) = self {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, e.retry_after_secs().into());
        }
        if let ProxyError::AuthRequired(_) = self {
            resp.headers_mut().insert(
                PROXY_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"tollgate\""),
            );
        }
        if let ProxyError::AuthorizationRequired(c) = self {
            // A 401 must say how to authenticate (RFC 9110 §15.5.2): here, by consenting at
            // the consent URL, which the body carries too.
            resp.headers_mut()
                .insert(WWW_AUTHENTICATE, consent_challenge(&c.consent_url));
        }
        if let ProxyError::Overloaded
        | ProxyError::CallerOverloaded(_)
        | ProxyError::BodyTimeout(_) = self
        {
            resp.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// The `WWW-Authenticate` challenge of `401 authorization_required`:
/// `Tollgate-Consent realm="tollgate", error="authorization_required", consent_url="..."`.
fn consent_challenge(url: &str) -> HeaderValue {
    let quoted: String = url
        .chars()
        .filter(|c| (' '..='~').contains(c) && *c != '"' && *c != '\\')
        .collect();
    let v = format!(
        "Tollgate-Consent realm=\"tollgate\", error=\"authorization_required\", consent_url=\"{quoted}\""
    );
    // Only printable ASCII was written above.
    HeaderValue::from_str(&v)
        .unwrap_or_else(|_| HeaderValue::from_static("Tollgate-Consent realm=\"tollgate\""))
}

/// A raw HTTP/1.1 error answer closing the connection (`Proxy-Status`, JSON body).
pub fn raw_error(status: StatusCode, code: &str, message: &str) -> Vec<u8> {
    let body = json!({"error": code, "message": message}).to_string();
    let ps = proxy_status("http_request_error", message);
    format!(
        "HTTP/1.1 {} {}\r\nProxy-Status: {}\r\nContent-Type: application/json\r\n\
         Cache-Control: no-store\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        ps.to_str().unwrap_or(PROXY_NAME),
        body.len(),
    )
    .into_bytes()
}

/// tollgate's answer in place of hyper's automatic one (`crate::io::canned`): `400` for a
/// request hyper could not parse, `414` for a target too long, `431` for a head too large.
pub fn hyper_answer(status: u16) -> Option<Vec<u8>> {
    let (status, code, message) = match status {
        400 => (
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request could not be parsed (request line or header syntax)",
        ),
        414 => (
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            "the request target is too long",
        ),
        431 => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request_head_too_large",
            "the request head is too large",
        ),
        _ => return None,
    };
    Some(raw_error(status, code, message))
}

/// `tollgate; error=TYPE; details="..."` with the details made a valid sf-string.
pub fn proxy_status(error_type: &str, details: &str) -> HeaderValue {
    let mut escaped = String::with_capacity(details.len());
    for c in details.chars().take(300) {
        match c {
            '"' | '\\' => {
                escaped.push('\\');
                escaped.push(c);
            }
            ' '..='~' => escaped.push(c),
            _ => escaped.push('?'),
        }
    }
    let v = format!("{PROXY_NAME}; error={error_type}; details=\"{escaped}\"");
    // Only printable ASCII was written above.
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("tollgate"))
}

/// A JSON response with `Content-Type: application/json` and `Cache-Control: no-store`.
pub fn json_response(status: StatusCode, body: &Value) -> Response<ProxyBody> {
    let bytes = Bytes::from(body.to_string());
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    resp
}

/// A complete body.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// The raw bytes of a `503 overloaded` answer, written straight to a socket we will not
/// serve (the connection limit is reached, so no hyper connection is started for it).
pub fn overloaded_raw_response() -> Vec<u8> {
    let err = ProxyError::Overloaded;
    let body = json!({"error": err.code(), "message": err.message()}).to_string();
    let status = proxy_status(err.proxy_status_type(), &err.message());
    crate::io::refuse::raw_503(status.to_str().unwrap_or("tollgate"), &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_status_details_are_escaped() {
        let v = proxy_status("dns_error", "bad \"name\" \\ é");
        assert_eq!(
            v.to_str().unwrap(),
            "tollgate; error=dns_error; details=\"bad \\\"name\\\" \\\\ ?\""
        );
    }

    #[test]
    fn every_error_has_status_code_header_and_json() {
        let cases = vec![
            ProxyError::AuthRequired(IdentityError::Missing),
            ProxyError::BadRequest("x".into()),
            ProxyError::Overloaded,
            ProxyError::from(AgentDialError::Unavailable {
                agent: "onprem".into(),
            }),
            ProxyError::from(AgentDialError::Failed {
                agent: "onprem".into(),
                kind: AgentFailure::Denied,
                message: "not in the agent's allowlist".into(),
            }),
            ProxyError::from(SendError::Timeout(std::time::Duration::from_secs(1))),
            ProxyError::from(SendError::Upstream("reset".into())),
            ProxyError::AppDisabled {
                app: "crm".into(),
                app_name: "CRM".into(),
            },
            ProxyError::TokenRefreshFailed {
                app: "crm".into(),
                reason: "provider answered HTTP 503".into(),
            },
            ProxyError::Misdirected("other.example".into()),
            ProxyError::from(SendError::Tls {
                certificate: true,
                detail: "UnknownIssuer".into(),
            }),
            ProxyError::Internal("x".into()),
            ProxyError::CallerOverloaded(256),
            ProxyError::BodyTimeout(std::time::Duration::from_secs(30)),
            ProxyError::StoreUnavailable,
            ProxyError::RateLimited(crate::policy::limiter::Exceeded {
                limit: "per-user".into(),
                at: crate::policy::RuleRef {
                    file: "l.toml".into(),
                    line: 2,
                },
                retry_after: std::time::Duration::from_millis(1500),
            }),
        ];
        for e in cases {
            let r = e.into_response();
            assert_eq!(r.status(), e.status());
            assert!(r.headers().contains_key("proxy-status"), "{e:?}");
            // Agent IDs are for operators, not callers.
            assert!(!format!("{:?}", r.headers()).contains("onprem"), "{e:?}");
            assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        }
        let r = ProxyError::AuthRequired(IdentityError::Expired).into_response();
        assert_eq!(r.headers()[PROXY_AUTHENTICATE], "Basic realm=\"tollgate\"");
        let raw = String::from_utf8(overloaded_raw_response()).unwrap();
        assert!(raw.starts_with("HTTP/1.1 503"));
        assert!(raw.contains("Proxy-Status: tollgate; error=proxy_internal_error"));
        let body = raw.split("\r\n\r\n").nth(1).unwrap();
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "overloaded");
    }

    #[tokio::test]
    async fn authorization_required_is_exactly_as_designed() {
        let e = ProxyError::AuthorizationRequired(Box::new(ConsentRequired {
            org: "acme".into(),
            app: "github".into(),
            app_name: "GitHub".into(),
            consent_url: "https://tollgate.example/consent/t".into(),
            expires_in: 900,
        }));
        let r = e.into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()["proxy-status"],
            "tollgate; error=http_request_denied; details=\"authorization required\""
        );
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "authorization_required");
        assert_eq!(v["org"], "acme");
        assert_eq!(v["app"], "github");
        assert_eq!(v["app_name"], "GitHub");
        assert_eq!(v["consent_url"], "https://tollgate.example/consent/t");
        assert_eq!(v["expires_in"], 900);
    }

    /// One mapping on every route: a guard refusal is `destination_ip_prohibited`, a deny
    /// match `destination_denied`, whether the proxy dialed or an agent did.
    #[test]
    fn guard_refusals_and_deny_matches_read_the_same_on_every_route() {
        let addr: std::net::SocketAddr = "10.0.0.1:443".parse().unwrap();
        let prohibited = crate::route::Guard::default()
            .check(addr, false)
            .unwrap_err();
        let agent = |kind| {
            ProxyError::from(AgentDialError::Failed {
                agent: "onprem".into(),
                kind,
                message: "refused".into(),
            })
        };
        let cases = [
            (
                ProxyError::from(DirectError::Prohibited(prohibited)),
                "destination_ip_prohibited",
                "destination_ip_prohibited",
            ),
            (
                agent(AgentFailure::Prohibited),
                "destination_ip_prohibited",
                "destination_ip_prohibited",
            ),
            (
                ProxyError::from(DirectError::DeniedAddress {
                    addr,
                    rule: "10-test.toml:3".into(),
                }),
                "destination_denied",
                "http_request_denied",
            ),
            (
                agent(AgentFailure::Denied),
                "destination_denied",
                "http_request_denied",
            ),
        ];
        for (e, code, status_type) in cases {
            assert_eq!(e.code(), code, "{e:?}");
            assert_eq!(e.status(), StatusCode::FORBIDDEN, "{e:?}");
            let r = e.into_response();
            let ps = r.headers()["proxy-status"].to_str().unwrap().to_string();
            assert!(
                ps.starts_with(&format!("tollgate; error={status_type};")),
                "{ps}"
            );
        }
    }

    #[test]
    fn interception_errors_have_their_codes() {
        let r = ProxyError::Misdirected("x".into()).into_response();
        assert_eq!(r.status(), 421);
        let r = ProxyError::from(SendError::Tls {
            certificate: true,
            detail: "invalid peer certificate: UnknownIssuer".into(),
        })
        .into_response();
        assert_eq!(r.status(), 502);
        assert!(r.headers()["proxy-status"]
            .to_str()
            .unwrap()
            .starts_with("tollgate; error=tls_certificate_error; details="));
        let e = ProxyError::from(SendError::Tls {
            certificate: false,
            detail: "alert".into(),
        });
        assert_eq!(e.code(), "tls_protocol_error");
    }
}
