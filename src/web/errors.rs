//! The web listener's last word on errors: every error response carries `Proxy-Status`, and
//! is JSON unless it is a page. Handlers write their own errors (the admin API's
//! `{"error", "message"}`, the consent and sign-in pages); this layer adds `Proxy-Status`
//! where a handler did not, and turns the errors axum writes by itself — a body over the
//! limit (`413`), a missing `Content-Type` (`415`), a rejected extractor (`400`/`422`), an
//! unknown method (`405`), all plain text or empty — into `{"error": CODE, "message": ...}`.

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};
use http_body_util::BodyExt;

/// Largest error body read to be rewritten; a bigger one keeps its body (it was written on
/// purpose) and only gets `Proxy-Status`.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The middleware (`axum::middleware::from_fn`).
pub(crate) async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if status.as_u16() < 400 || resp.headers().contains_key("proxy-status") {
        return resp;
    }
    let content_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let (mut parts, body) = resp.into_parts();
    let bytes = match http_body_util::Limited::new(body, MAX_ERROR_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            // Too large or broken: answer with the code alone.
            parts.headers.remove(CONTENT_LENGTH);
            bytes::Bytes::new()
        }
    };
    let code = if content_type.starts_with("application/json") {
        serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| code_of(status).to_owned())
    } else {
        code_of(status).to_owned()
    };
    let body =
        if content_type.starts_with("application/json") || content_type.starts_with("text/html") {
            Body::from(bytes)
        } else {
            // axum's plain-text rejection (or an empty body): its text becomes the message.
            let text = String::from_utf8_lossy(&bytes);
            let message = match text.trim() {
                "" => status.canonical_reason().unwrap_or("error").to_owned(),
                t => t.to_owned(),
            };
            let json = serde_json::json!({"error": code, "message": message}).to_string();
            parts.headers.remove(CONTENT_LENGTH);
            parts
                .headers
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Body::from(json)
        };
    let kind = match status.as_u16() {
        500.. => "proxy_internal_error",
        401 | 403 => "http_request_denied",
        _ => "http_request_error",
    };
    parts.headers.insert(
        "proxy-status",
        crate::proxy::errors::proxy_status(kind, &code),
    );
    Response::from_parts(parts, body)
}

/// The error code of a status no handler named.
fn code_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        411 => "length_required",
        413 => "request_body_too_large",
        415 => "unsupported_media_type",
        422 => "invalid_request",
        429 => "too_many_requests",
        503 => "unavailable",
        500..=599 => "internal_error",
        _ => "bad_request",
    }
}
