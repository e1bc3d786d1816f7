//! The proxy listener: HTTP/1.1 forward proxy for absolute-form requests and `CONNECT`.
//!
//! The listener adapters parse what arrives and hand it to the one request
//! pipeline (`pipeline`: identify → decide → app → inject → send through the
//! [`Router`] → replay → access log):
//! - [`forward`]: absolute-form `http://` requests, with TLS origination for app domains;
//! - `connect`: `CONNECT` tunnels, blind or intercepted;
//! - [`intercept`]: TLS termination and the inner requests of intercepted tunnels;
//! - `upgrade`: WebSocket handshakes in either, and the bytes pumped after the `101`.
//!
//! Failures at any phase become a synthetic response in [`errors`]; nothing else writes
//! error responses.

pub mod callers;
mod connect;
pub mod errors;
pub mod forward;
pub mod intercept;
mod live;
pub mod log;
mod pipeline;
pub mod replay;
mod upgrade;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::identity::Verifier;
use crate::io::canned::{Canned, Dispatched};
use crate::metrics::Metrics;
use crate::oauth::inject::Injector;
use crate::policy::watch::Policies;
use crate::route::Router;
use crate::tls::LeafCache;
use callers::{CallerConnections, ConnPermit};
use intercept::InterceptPredicate;
use log::RequestLog;

/// Smallest read buffer given to hyper (its own minimum is 8 KiB).
pub(crate) const HYPER_BUF_MIN: usize = 256 * 1024;

/// Body of every response the proxy sends.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Limits and timeouts of the proxy listener.
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// Idle tunnel timeout.
    pub idle_timeout: Duration,
    /// Time a client has to send its request head.
    pub request_head_timeout: Duration,
    /// Largest request head accepted.
    pub max_request_head: usize,
    /// Concurrent client connections before `503 overloaded`.
    pub max_connections: usize,
    /// How long shutdown waits for in-flight requests and tunnels.
    pub shutdown_grace: Duration,
    /// Time a client has to send a request body the proxy buffers (a replayable body).
    pub body_timeout: Duration,
    /// Live connections per caller (org, user) before `503 overloaded`.
    pub max_connections_per_caller: usize,
    /// PROXY protocol v2 headers from trusted balancers (`--proxy-protocol`).
    pub proxy_headers: crate::io::proxy_header::ProxyHeaders,
}

/// Everything a request needs, shared by all connections.
pub struct ProxyState {
    /// The live policy set: every request is decided against its current snapshot.
    policies: Arc<Policies>,
    /// Caller token verification (cached).
    verifier: Arc<Verifier>,
    /// The one dial point: tunnels, forwarded and intercepted requests.
    router: Arc<Router>,
    /// Outbound applications: which hosts get a token, and the token itself.
    injector: Arc<Injector>,
    /// Leaf certificates presented to clients of intercepted tunnels.
    leaves: Arc<LeafCache>,
    /// Which `CONNECT`s are intercepted besides the app domains of the caller's org.
    intercept_when: InterceptPredicate,
    /// Request, tunnel and latency metrics.
    metrics: Arc<Metrics>,
    /// Limits and timeouts.
    settings: ProxySettings,
    /// Open tunnels, so shutdown can wait for them.
    tunnels: TaskTracker,
    /// Live connections per caller, for `max_connections_per_caller`.
    callers: CallerConnections,
    /// The counters of the policy files' `[[limit]]` blocks (per process, bounded).
    rate_limits: crate::policy::limiter::RateLimiters,
    /// Where each request's span goes (`--otlp-endpoint`); `None` = off.
    otel: Option<Arc<crate::otel::Otel>>,
}

impl ProxyState {
    /// The state of a proxy deciding with `policies`, identifying callers with `verifier`,
    /// dialing through `router`, injecting with `injector` and presenting `leaves` in
    /// intercepted tunnels. Only app domains are intercepted until
    /// [`intercept_when`](Self::intercept_when) says otherwise.
    pub fn new(
        policies: Arc<Policies>,
        verifier: Arc<Verifier>,
        router: Arc<Router>,
        injector: Arc<Injector>,
        leaves: Arc<LeafCache>,
        metrics: Arc<Metrics>,
        settings: ProxySettings,
    ) -> Self {
        ProxyState {
            policies,
            verifier,
            router,
            injector,
            leaves,
            intercept_when: intercept::never(),
            metrics,
            callers: CallerConnections::new(settings.max_connections_per_caller),
            settings,
            tunnels: TaskTracker::new(),
            rate_limits: Default::default(),
            otel: None,
        }
    }

    /// Also intercepts the `CONNECT`s `predicate` selects.
    pub fn intercept_when(mut self, predicate: InterceptPredicate) -> Self {
        self.intercept_when = predicate;
        self
    }

    /// Also exports one span per request to `otel` (`--otlp-endpoint`).
    pub fn trace_to(mut self, otel: Option<Arc<crate::otel::Otel>>) -> Self {
        self.otel = otel;
        self
    }
}

/// Accepts connections on `listener` until `shutdown` is cancelled, then drains: stops
/// accepting, lets in-flight requests and tunnels finish for up to `shutdown_grace`.
pub async fn run(listener: TcpListener, state: Arc<ProxyState>, shutdown: CancellationToken) {
    let limit = Arc::new(Semaphore::new(state.settings.max_connections));
    let refusals = crate::io::refuse::Refusals::new(errors::overloaded_raw_response());
    // Client connections, so the drain can wait for them.
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = crate::io::accept(&listener, "proxy") => accepted,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            state.metrics.overloaded.inc();
            refusals.refuse(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let permit = Arc::new(ConnPermit::new(permit));
        let state = state.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            // Behind a balancer, the client its PROXY header names (`io::proxy_header`).
            let mut stream = stream;
            let peer = match state.settings.proxy_headers.client(&mut stream, peer).await {
                Ok(client) => client,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "proxy: connection refused");
                    return;
                }
            };
            serve_client(state, stream, peer, permit, shutdown)
                .instrument(tracing::info_span!("conn", %peer))
                .await;
        });
    }
    drop(listener);
    let deadline = Instant::now() + state.settings.shutdown_grace;
    connections.close();
    if tokio::time::timeout_at(deadline.into(), connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over with requests still in flight");
    }
    state.tunnels.close();
    if tokio::time::timeout_at(deadline.into(), state.tunnels.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = state.tunnels.len(),
            "closing tunnels still open after the grace period"
        );
    }
}

/// Serves HTTP/1.1 on one client connection from `peer` until it closes, or finishes the
/// request in flight and closes once `shutdown` is cancelled.
async fn serve_client(
    state: Arc<ProxyState>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    permit: Arc<ConnPermit>,
    shutdown: CancellationToken,
) {
    let conn_state = state.clone();
    // Counts requests so hyper's own error answers can be told apart (`io::canned`).
    let dispatched = Dispatched::default();
    let counted = dispatched.clone();
    let service = service_fn(move |req| {
        counted.inc();
        handle(conn_state.clone(), peer, permit.clone(), req)
    });
    let stream = Canned::new(stream, dispatched, errors::hyper_answer);
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(state.settings.request_head_timeout)
        // hyper answers a head beyond its buffer itself (bare 431, no JSON); give it room
        // so that heads over our limit reach `handle` and get a proper error instead.
        .max_buf_size(
            state
                .settings
                .max_request_head
                .saturating_mul(4)
                .max(HYPER_BUF_MIN),
        )
        // The header count limit stays hyper's default of 100 (Envoy's too): it parses into
        // an array on the stack, where a configured limit makes it allocate and fill one of
        // that size for every request head (3.5% of the proxy's CPU at 1,000). More fields
        // get the same JSON 431 as an oversized head (`errors::hyper_answer`).
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let metrics = state.metrics.clone();
    let open = metrics.connections("proxy");
    metrics.client_connections.inc();
    open.inc();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = shutdown.cancelled() => {
            // Finish the request in flight, then close (keep-alive off).
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
    metrics.client_connections.dec();
    open.dec();
}

/// One request on a client connection: `CONNECT` or absolute-form.
async fn handle(
    state: Arc<ProxyState>,
    peer: SocketAddr,
    permit: Arc<ConnPermit>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let log = RequestLog::new(state.metrics.clone(), peer, req.method().clone())
        .trace_to(state.otel.as_ref());
    Ok(if req.method() == Method::CONNECT {
        connect::handle(&state, permit, req, log).await
    } else {
        forward::handle(&state, permit, req, log).await
    })
}
