//! Forwarding a request that carries credentials tollgate set (an injected token) on any
//! route: direct plain-http, through an agent, or inside an intercepted TLS tunnel. The
//! request body is buffered when it is small enough to be sent twice, and an upstream `401`
//! with `error="invalid_token"` asks the injector ([`Reinject`]) for fresh credentials (one
//! forced refresh) and, for a buffered body, replays the request once (DESIGN "Token
//! responses").

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::request::Parts;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper::body::{Body, Frame, Incoming};

use super::errors::{full, ProxyError};
use super::log::CountingBody;
use crate::identity::Caller;
use crate::oauth::inject::{rejects_token, Injected, Injector};
use crate::route::UpstreamBody;

/// Request bodies up to this size are buffered so they can be replayed once after a forced
/// refresh (DESIGN: "for bodies under 64 KiB"); larger ones are streamed and not replayed.
pub const MAX_REPLAY_BODY: usize = 64 * 1024;

/// What was injected into a request, to get fresh credentials if the upstream rejects them:
/// one forced refresh of the rejected token (unless a concurrent request already replaced
/// it), then the new token.
pub struct Reinject {
    /// Refreshes and injects.
    pub injector: Arc<Injector>,
    /// Whose token it is.
    pub caller: Arc<Caller>,
    /// What was injected and rejected.
    pub injected: Injected,
    /// Set when the rejection led to a refresh (the request's span reports it).
    pub refreshed: std::sync::atomic::AtomicBool,
}

impl Reinject {
    /// Sets fresh credentials in `headers` (the rejected request's headers).
    async fn reauthorize(&self, headers: &mut HeaderMap) -> Result<(), ProxyError> {
        let again = self
            .injector
            .inject_after_rejection(&self.caller, &self.injected, headers)
            .await?;
        if again.refreshed {
            (self.refreshed).store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }
}

/// A request body, either whole in memory (replayable) or streaming.
enum Buffered {
    /// The whole body.
    Whole(Bytes),
    /// Too large to replay: what was read so far, followed by the rest.
    Streaming(UpstreamBody),
}

/// Sends `parts` + `body` with `send`, counting request body bytes into `counter`. With
/// `reauth`, a token rejection (`401 invalid_token`) gets fresh credentials and, when the body
/// was small enough to keep, one replay; a large body is not replayed, but the refresh still
/// happens so the client's own retry works. The part of the body buffered must arrive within
/// `body_timeout` (`408 body_timeout` otherwise), so a client that stops sending mid-body
/// does not hold the connection.
pub async fn send_replayable<S, Fut>(
    parts: Parts,
    body: Incoming,
    reauth: Option<&Reinject>,
    counter: Arc<AtomicU64>,
    body_timeout: Duration,
    send: S,
) -> Result<Response<Incoming>, ProxyError>
where
    S: Fn(Request<UpstreamBody>) -> Fut,
    Fut: Future<Output = Result<Response<Incoming>, ProxyError>>,
{
    let Some(reauth) = reauth else {
        let body = CountingBody::new(body, counter, None).boxed();
        return send(Request::from_parts(parts, body)).await;
    };
    let buffered = tokio::time::timeout(body_timeout, buffer(body, MAX_REPLAY_BODY, counter))
        .await
        .map_err(|_| ProxyError::BodyTimeout(body_timeout))??;
    match buffered {
        Buffered::Streaming(body) => {
            let resp = send(Request::from_parts(parts, body)).await?;
            if rejects_token(resp.status(), resp.headers()) {
                let mut scratch = HeaderMap::new();
                if let Err(e) = reauth.reauthorize(&mut scratch).await {
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
            let resp = send(Request::from_parts(parts, full(bytes.clone()))).await?;
            if !rejects_token(resp.status(), resp.headers()) {
                return Ok(resp);
            }
            drop(resp);
            let (mut parts, ()) = again.into_parts();
            reauth.reauthorize(&mut parts.headers).await?;
            tracing::debug!("replaying a request after refreshing a rejected token");
            send(Request::from_parts(parts, full(bytes))).await
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
