//! The web listener's connections: hyper's HTTP/1.1 server under the axum [`Router`], with the
//! limits `axum::serve` lacks (issue 13). Per connection:
//! - a permit of `--web-max-connections`; beyond it the connection gets `503 overloaded`
//!   (`Proxy-Status` + JSON) and is closed, in bounded work ([`crate::io::refuse`]);
//! - `--web-header-timeout` for each request head, which hyper also applies while a keep-alive
//!   connection waits for its next request (so an idle connection closes after it);
//! - `--web-idle-timeout`: no byte moving either way (a stalled body, a client that stopped
//!   reading) closes the connection;
//! - the peer address as `axum::extract::ConnectInfo<SocketAddr>` in every request's
//!   extensions (the sign-in checks `--trusted-proxies` against it).
//!
//! Shutdown stops accepting, lets requests in flight finish (keep-alive off) for up to the
//! grace period, then drops what is left.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::io::canned::{Canned, Dispatched};
use crate::io::refuse::Refusals;
use crate::io::{accept, idle_watchdog, Activity, Counted, Meter};

/// Limits of the web listener.
#[derive(Clone, Debug)]
pub struct WebSettings {
    /// Time for a request head, and for the next one on an idle keep-alive connection.
    pub header_timeout: Duration,
    /// A connection with no byte moving either way for this long is closed.
    pub idle_timeout: Duration,
    /// Concurrent connections; beyond, `503 overloaded`.
    pub max_connections: usize,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
    /// Open connections of this listener (`tollgate_open_connections{listener}`).
    pub open: prometheus_client::metrics::gauge::Gauge,
}

/// Serves `app` on `listener` until `shutdown`, then drains for the grace period.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: WebSettings,
    shutdown: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(settings.max_connections));
    let refusals = Refusals::new(overloaded_response());
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = accept(&listener, "web") => accepted,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            refusals.refuse(stream);
            continue;
        };
        let conn = serve_connection(stream, peer, app.clone(), &settings, shutdown.clone());
        let open = settings.open.clone();
        open.inc();
        connections.spawn(async move {
            conn.await;
            open.dec();
            drop(permit);
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(settings.shutdown_grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("web listener: shutdown grace period over with requests in flight");
    }
}

/// One connection: HTTP/1.1 with the header timeout, the idle watchdog and the peer address.
fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    settings: &WebSettings,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let metered = Counted {
        inner: stream,
        counter: Meter {
            activity: activity.clone(),
            read: Arc::new(AtomicU64::new(0)),
            written: None,
        },
    };
    // Counts requests so hyper's own error answers can be told apart (`io::canned`).
    let dispatched = Dispatched::default();
    let counted = dispatched.clone();
    let metered = Canned::new(metered, dispatched, crate::proxy::errors::hyper_answer);
    let service = service_fn(move |mut req: hyper::Request<Incoming>| {
        counted.inc();
        req.extensions_mut().insert(ConnectInfo(peer));
        app.clone().call(req)
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(metered), service);
    let idle = settings.idle_timeout;
    async move {
        tokio::pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            () = idle_watchdog(&activity, idle) => {
                tracing::debug!(%peer, "web connection idle: closed");
                return;
            }
            () = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    r = conn.as_mut() => r,
                    () = idle_watchdog(&activity, idle) => return,
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "web connection ended with an error");
        }
    }
}

/// The `503 overloaded` a connection over the cap gets, as raw bytes (no HTTP server runs on
/// it): `Proxy-Status` and a JSON body, as every error tollgate generates.
pub fn overloaded_response() -> Vec<u8> {
    let body = serde_json::json!({
        "error": "overloaded",
        "message": "too many connections to the web listener; retry later",
    })
    .to_string();
    crate::io::refuse::raw_503(
        "tollgate; error=proxy_internal_error; details=\"web connection limit reached\"",
        &body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn overloaded_answer_is_a_proxy_error() {
        let raw = String::from_utf8(overloaded_response()).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "overloaded");
        for line in [
            "HTTP/1.1 503 ",
            "Proxy-Status: tollgate; error=",
            "Connection: close",
        ] {
            assert!(head.contains(line), "{head}");
        }
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
    }

    #[tokio::test]
    async fn handlers_see_the_peer_address() {
        async fn peer(ConnectInfo(addr): ConnectInfo<SocketAddr>) -> String {
            addr.to_string()
        }
        let app = Router::new().route("/", axum::routing::get(peer));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let settings = WebSettings {
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            max_connections: 4,
            shutdown_grace: Duration::from_secs(1),
            open: Default::default(),
        };
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, app, settings, stop.clone()));
        let mut client = TcpStream::connect(addr).await.unwrap();
        let me = client.local_addr().unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut raw = String::new();
        client.read_to_string(&mut raw).await.unwrap();
        assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
        assert!(raw.ends_with(&me.to_string()), "{raw}");
        stop.cancel();
        server.await.unwrap();
    }
}
