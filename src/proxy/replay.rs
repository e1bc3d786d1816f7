//! Forwarding a request that carries an injected token: the token is set (or refreshed, or
//! the caller gets `401 authorization_required`), the request body is buffered when it is
//! small enough to be sent twice, and an upstream `401` with `error="invalid_token"` triggers
//! one forced refresh and, for a buffered body, one replay (DESIGN "Token responses").

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper::body::{Body, Frame, Incoming};

use super::errors::{full, ProxyError};
use super::forward::UpstreamBody;
use super::log::{CountingBody, RequestLog};
use super::ProxyState;
use crate::identity::Caller;
use crate::oauth::inject::rejects_token;
use crate::store::App;

/// Request bodies up to this size are buffered so they can be replayed once after a forced
/// refresh (DESIGN: "for bodies under 64 KiB"); larger ones are streamed and not replayed.
pub const MAX_REPLAY_BODY: usize = 64 * 1024;

/// A request body, either whole in memory (replayable) or streaming.
enum Buffered {
    /// The whole body.
    Whole(Bytes),
    /// Too large to replay: what was read so far, followed by the rest.
    Streaming(UpstreamBody),
}

/// Injects `app`'s token into `req` and forwards it, refreshing and replaying once if the
/// upstream rejects the token.
pub async fn send_injected(
    state: &ProxyState,
    caller: &Caller,
    app: Arc<App>,
    req: Request<Incoming>,
    allow_private: bool,
    log: &mut RequestLog,
) -> Result<Response<Incoming>, ProxyError> {
    let injector = &state.oauth.injector;
    let (mut parts, body) = req.into_parts();
    let injected = injector.inject(caller, app, &mut parts.headers).await?;
    log.injected = true;
    match buffer(body, MAX_REPLAY_BODY, log.bytes_up.clone()).await? {
        Buffered::Streaming(body) => {
            let resp = state
                .upstream
                .send(Request::from_parts(parts, body), allow_private)
                .await?;
            if rejects_token(resp.status(), resp.headers()) {
                // The body is gone, so no replay; refresh now so the client's retry works.
                let mut scratch = HeaderMap::new();
                if let Err(e) = injector
                    .inject_after_rejection(caller, &injected, &mut scratch)
                    .await
                {
                    tracing::debug!(error = %e, "refresh after an upstream rejection failed");
                }
            }
            Ok(resp)
        }
        Buffered::Whole(bytes) => {
            let mut again = Request::builder()
                .method(parts.method.clone())
                .uri(parts.uri.clone())
                .version(parts.version)
                .body(())
                .map_err(|_| ProxyError::BadRequest("invalid request".into()))?;
            *again.headers_mut() = parts.headers.clone();
            let resp = state
                .upstream
                .send(
                    Request::from_parts(parts, full(bytes.clone())),
                    allow_private,
                )
                .await?;
            if !rejects_token(resp.status(), resp.headers()) {
                return Ok(resp);
            }
            drop(resp);
            let (mut parts, ()) = again.into_parts();
            injector
                .inject_after_rejection(caller, &injected, &mut parts.headers)
                .await?;
            tracing::debug!("replaying a request after refreshing a rejected token");
            state
                .upstream
                .send(Request::from_parts(parts, full(bytes)), allow_private)
                .await
        }
    }
}

/// Reads `body` into memory while it stays under `limit` bytes; at `limit` or beyond, returns
/// a body that yields what was read and then streams the rest. Bytes read from the client are counted in `counter`.
async fn buffer(
    mut body: Incoming,
    limit: usize,
    counter: Arc<AtomicU64>,
) -> Result<Buffered, ProxyError> {
    if body.size_hint().lower() >= limit as u64 {
        return Ok(Buffered::Streaming(
            CountingBody::new(body, counter, None).boxed(),
        ));
    }
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ProxyError::BadRequest(format!("reading the request body: {e}")))?;
        // Request trailers are not forwarded (the upstream client speaks HTTP/1.1 without
        // `TE: trailers`), so only data frames matter.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len();
        chunks.push(data);
        if total >= limit {
            counter.fetch_add(total as u64, Ordering::Relaxed);
            let prefix = futures_util::stream::iter(
                chunks
                    .into_iter()
                    .map(|c| Ok::<_, hyper::Error>(Frame::data(c))),
            );
            let rest = BodyStream::new(CountingBody::new(body, counter, None));
            return Ok(Buffered::Streaming(BodyExt::boxed(StreamBody::new(
                prefix.chain(rest),
            ))));
        }
    }
    counter.fetch_add(total as u64, Ordering::Relaxed);
    let bytes = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut all = BytesMut::with_capacity(total);
            for c in chunks {
                all.extend_from_slice(&c);
            }
            all.freeze()
        }
    };
    Ok(Buffered::Whole(bytes))
}
