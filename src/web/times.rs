//! Timestamps in the admin and operator APIs are RFC 3339 (`2026-12-06T11:30:23Z`), not Unix
//! seconds: the records keep seconds (their stored form does not change), and this layer
//! rewrites the JSON the APIs answer with. A field is a timestamp by its name: `at`, `*_at`
//! and `connected_since`, holding an unsigned integer of seconds (`revoked_at_ns`, a
//! nanosecond cut-off, keeps its number).

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http_body_util::BodyExt;
use serde_json::Value;

/// Largest JSON answer rewritten (audit pages and app lists are far smaller).
const MAX_BODY: usize = 4 * 1024 * 1024;

use crate::clock::rfc3339;

/// Whether a field of this name holds a timestamp.
fn is_time(key: &str) -> bool {
    key == "at" || key.ends_with("_at") || key == "connected_since"
}

/// Rewrites every timestamp field in `v`, at any depth.
pub(crate) fn rewrite(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, field) in map.iter_mut() {
                match field.as_u64() {
                    Some(secs) if is_time(k) => *field = Value::String(rfc3339(secs)),
                    _ => rewrite(field),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite),
        _ => {}
    }
}

/// The middleware (`axum::middleware::from_fn`) on the admin and operator routes.
pub(crate) async fn rfc3339_times(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let json = resp
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(collected) = http_body_util::Limited::new(body, MAX_BODY).collect().await else {
        parts.headers.remove(CONTENT_LENGTH);
        return Response::from_parts(parts, Body::empty());
    };
    let bytes = collected.to_bytes();
    let body = match serde_json::from_slice::<Value>(&bytes) {
        Ok(mut v) => {
            rewrite(&mut v);
            parts.headers.remove(CONTENT_LENGTH);
            Body::from(v.to_string())
        }
        Err(_) => Body::from(bytes),
    };
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_fields_become_rfc3339_at_any_depth() {
        let mut v = serde_json::json!({
            "events": [{"at": 1_700_000_000u64, "seq": 5}],
            "expires_at": null,
            "obtained_at": 0,
            "revoked_at_ns": 1_700_000_000_000_000_000u64,
            "agents": [{"connected_since": 1_700_000_000u64, "instance": "x"}],
        });
        rewrite(&mut v);
        assert_eq!(v["events"][0]["at"], "2023-11-14T22:13:20Z");
        assert_eq!(v["events"][0]["seq"], 5);
        assert_eq!(v["expires_at"], Value::Null);
        assert_eq!(v["obtained_at"], "1970-01-01T00:00:00Z");
        assert!(v["revoked_at_ns"].is_u64());
        assert_eq!(v["agents"][0]["connected_since"], "2023-11-14T22:13:20Z");
    }
}
