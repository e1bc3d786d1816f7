//! One relay connection of the agent: dial the relay, TLS, the handshake (credential in,
//! verdict out), then serve HTTP/2 on it until it ends; redial with full-jitter exponential
//! backoff.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::credential_file::Offer;
use super::replicas::{Session, REPLICAS_HEADER, REPLICAS_PATH};
use super::tunnel::{tunnel, TunnelBody};
use super::AgentState;
use crate::relay::handshake::{self, Hello, Welcome};
use crate::relay::renewal::{CREDENTIAL_HEADER, CREDENTIAL_PATH, REPLACES_HEADER};
use crate::relay::{
    CONNECTION_WINDOW, MAX_FRAME_SIZE, MAX_TUNNELS_PER_CONNECTION, SOCKET_BUFFER, STREAM_WINDOW,
};

/// First reconnection delay bound; doubles per failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Largest reconnection delay bound.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A relay connection that stayed up this long resets the backoff.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);
/// Time for the relay's TLS handshake and answer.
const RELAY_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// An authenticated relay connection: TLS over a TCP stream whose reads are buffered (TLS
/// reads record by record). Writes are not: the agent mostly sends, and HTTP/2 already hands
/// TLS whole frames of up to `MAX_FRAME_SIZE`; a write buffer would only add a copy.
type RelayStream = TlsStream<tokio::io::BufReader<TcpStream>>;

/// Why one relay connection attempt failed.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("cannot reach the relay: {0}")]
    Io(#[from] std::io::Error),
    #[error("relay connection timed out")]
    Timeout,
    #[error(transparent)]
    Handshake(#[from] handshake::HandshakeError),
    #[error("the relay refused this agent ({code}): {message}")]
    Refused { code: String, message: String },
}

/// Full-jitter exponential backoff: a uniformly random delay in
/// `[0, min(cap, base * 2^attempt)]` (the AWS architecture blog's "full jitter"), so many
/// agents that lost tollgate at once do not all come back in the same second.
pub fn backoff_delay(attempt: u32, random: u64) -> Duration {
    let bound = BACKOFF_BASE
        .saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
        .min(BACKOFF_CAP);
    let ms = bound.as_millis() as u64;
    Duration::from_millis(if ms == 0 { 0 } else { random % (ms + 1) })
}

fn random_u64() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    // A failing system RNG only makes the jitter predictable; the delay stays bounded.
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u64::from_le_bytes(b)
}

pub(super) fn random_instance_id() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Keeps connection `slot` of `session` up until shutdown.
pub(super) async fn slot_loop(
    state: Arc<AgentState>,
    session: Arc<Session>,
    instance: String,
    slot: u32,
    shutdown: CancellationToken,
    tunnels: TaskTracker,
) {
    let mut attempt: u32 = 0;
    while !shutdown.is_cancelled() {
        let connected = tokio::select! {
            () = shutdown.cancelled() => break,
            r = connect(&state, &session, &instance, slot) => r,
        };
        match connected {
            Ok(tls) => {
                tracing::info!("connected to the relay");
                let up_since = Instant::now();
                let on = Connected {
                    session: session.clone(),
                    slot,
                };
                let end = serve(state.clone(), on, tls, shutdown.clone(), tunnels.clone()).await;
                session.ended(slot);
                if shutdown.is_cancelled() {
                    break;
                }
                tracing::warn!(reason = %end, "relay connection lost");
                if up_since.elapsed() >= BACKOFF_RESET_AFTER {
                    attempt = 0;
                }
            }
            Err(ConnectError::Refused { code, message }) => {
                tracing::error!(code, message, "the relay refused this agent");
            }
            Err(e) => tracing::warn!(error = %e, "relay connection failed"),
        }
        let delay = backoff_delay(attempt, random_u64());
        attempt = attempt.saturating_add(1);
        tracing::debug!(?delay, attempt, "reconnecting after backoff");
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Dials the session's relay, TLS (the certificate checked against `--relay`'s name),
/// hello, welcome.
async fn connect(
    state: &AgentState,
    session: &Session,
    instance: &str,
    slot: u32,
) -> Result<RelayStream, ConnectError> {
    let config = &state.config;
    let attempt = async {
        let tcp = tokio::time::timeout(
            config.connect_timeout,
            TcpStream::connect((session.host.as_str(), session.port)),
        )
        .await
        .map_err(|_| ConnectError::Timeout)??;
        tcp.set_nodelay(true)?;
        let buffered = tokio::io::BufReader::with_capacity(SOCKET_BUFFER, tcp);
        let mut tls = TlsConnector::from(config.tls.clone())
            .connect(config.server_name.clone(), buffered)
            .await?;
        let hello = Hello {
            // The latest renewal's, if any.
            credential: state.credentials.current().expose().to_string(),
            instance: instance.to_string(),
            slot,
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        handshake::send_hello(&mut tls, &hello).await?;
        let welcome: Welcome = handshake::read_frame(&mut tls).await?;
        if !welcome.ok {
            return Err(ConnectError::Refused {
                code: welcome.error.unwrap_or_else(|| "refused".into()),
                message: welcome.message.unwrap_or_default(),
            });
        }
        Ok(tls)
    };
    tokio::time::timeout(RELAY_HANDSHAKE_TIMEOUT, attempt)
        .await
        .map_err(|_| ConnectError::Timeout)?
}

/// Which connection of which session a relay connection is.
#[derive(Clone)]
struct Connected {
    /// Its session (where replica lists go).
    session: Arc<Session>,
    /// Its slot.
    slot: u32,
}

/// Serves HTTP/2 on an authenticated relay connection until it ends, or drains it on
/// shutdown. Returns why it ended. Streams are tunnels, except the relay's replica lists.
async fn serve(
    state: Arc<AgentState>,
    on: Connected,
    tls: RelayStream,
    shutdown: CancellationToken,
    tunnels: TaskTracker,
) -> String {
    let svc_state = state.clone();
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let (state, tunnels, on) = (svc_state.clone(), tunnels.clone(), on.clone());
        async move {
            if req.method() == http::Method::POST && req.uri().path() == REPLICAS_PATH {
                return Ok(replicas_told(&on, req.headers()));
            }
            if req.method() == http::Method::POST && req.uri().path() == CREDENTIAL_PATH {
                return Ok(credential_offered(&state, req.headers()).await);
            }
            tunnel(state, tunnels, req).await
        }
    });
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(state.config.keepalive)
        .keep_alive_timeout(state.config.keepalive)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_concurrent_streams(MAX_TUNNELS_PER_CONNECTION)
        .serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    let r = tokio::select! {
        r = conn.as_mut() => r,
        () = shutdown.cancelled() => {
            // GOAWAY: tollgate opens new tunnels elsewhere; open ones may finish.
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(state.config.drain_timeout, conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => return "drain timeout".into(),
            }
        }
    };
    match r {
        Ok(()) => "closed".into(),
        Err(e) => e.to_string(),
    }
}

/// Takes a replica list from the relay: `204`, or `400` when it is not one.
fn replicas_told(on: &Connected, headers: &http::HeaderMap) -> http::Response<TunnelBody> {
    let Some(value) = headers.get(REPLICAS_HEADER) else {
        return replicas_answer(http::StatusCode::BAD_REQUEST);
    };
    match on.session.told(on.slot, value.as_bytes()) {
        Ok(()) => replicas_answer(http::StatusCode::NO_CONTENT),
        Err(e) => {
            tracing::warn!(error = %e, "the relay sent a replica list this agent cannot read");
            replicas_answer(http::StatusCode::BAD_REQUEST)
        }
    }
}

/// Takes a renewed credential from the relay (see [`crate::agent::credential_file`]): `204`
/// taken, `200` with the credential held when another session renewed it first, `400` when
/// it is not one for this agent, `500` when it could not be saved.
async fn credential_offered(
    state: &Arc<AgentState>,
    headers: &http::HeaderMap,
) -> http::Response<TunnelBody> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(offered), Some(replaces)) = (header(CREDENTIAL_HEADER), header(REPLACES_HEADER))
    else {
        return replicas_answer(http::StatusCode::BAD_REQUEST);
    };
    let (file, offered, replaces) = (
        state.credentials.clone(),
        offered.to_string(),
        replaces.to_string(),
    );
    let offer = tokio::task::spawn_blocking(move || file.offer(&replaces, &offered)).await;
    let status = match offer {
        Ok(Offer::Taken) => http::StatusCode::NO_CONTENT,
        Ok(Offer::Kept(held)) => {
            let mut resp = replicas_answer(http::StatusCode::OK);
            if let Ok(value) = http::HeaderValue::from_str(held.expose()) {
                resp.headers_mut().insert(CREDENTIAL_HEADER, value);
            }
            return resp;
        }
        Ok(Offer::Invalid(why)) => {
            tracing::warn!(reason = why, "the relay offered an unusable credential");
            http::StatusCode::BAD_REQUEST
        }
        Ok(Offer::NotSaved(_)) | Err(_) => http::StatusCode::INTERNAL_SERVER_ERROR,
    };
    replicas_answer(status)
}

/// An empty answer to a replica list or a credential offer.
fn replicas_answer(status: http::StatusCode) -> http::Response<TunnelBody> {
    use http_body_util::BodyExt;
    let mut resp =
        http::Response::new(http_body_util::Empty::new().map_err(|e| match e {}).boxed());
    *resp.status_mut() = status;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_full_jitter_capped() {
        assert_eq!(backoff_delay(0, 0), Duration::ZERO);
        assert!(backoff_delay(0, u64::MAX) <= Duration::from_secs(1));
        assert_eq!(backoff_delay(1, 2000), Duration::from_millis(2000));
        assert_eq!(backoff_delay(3, 7999), Duration::from_millis(7999));
        for attempt in [5, 6, 20, u32::MAX] {
            assert!(backoff_delay(attempt, u64::MAX - 1) <= BACKOFF_CAP);
            assert_eq!(backoff_delay(attempt, 30_000), BACKOFF_CAP);
        }
    }
}
