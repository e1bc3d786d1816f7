//! The one dial point: [`Router`] turns a decision's route into a connection.
//!
//! - direct routes: the proxy resolves the name once, the address guard checks every answer,
//!   and only a checked address is dialed ([`direct`], [`guard`]); with `--upstream-proxy`,
//!   the checked address is reached through a parent proxy's `CONNECT` ([`UpstreamProxy`],
//!   `parent.rs`) unless the policy says `upstream_proxy = false`; the decision's
//!   [`Reach`] (`reach.rs`) carries that choice, the guard's say on private addresses and,
//!   for a name allowed through `cidrs` rules, the networks its addresses must be in;
//! - agent routes: a tunnel through the relay ([`crate::relay::Registry`]); the agent
//!   resolves and applies its own allowlist.
//!
//! Tunnels and tollgate's own provider calls take a raw connection ([`Router::connect`]);
//! forwarded, originated and intercepted requests go through the pooled clients
//! ([`Router::send`]), except upgrade requests (WebSocket handshakes), which get a connection
//! of their own that never returns to a pool ([`Router::upgrade`], `upgrade.rs`). Failures of
//! either side are one [`DialError`], turned into the client's response in one place
//! (`proxy::errors`).

pub mod direct;
pub mod guard;
mod parent;
mod pool;
mod reach;
mod resolve;
mod upgrade;

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::TcpStream;
use tokio_util::either::Either;

use crate::policy::{Host, Reach, Route};
use crate::relay::{AgentDialError, AgentStream, Registry};

pub use direct::{DirectDialer, DirectError, Resolve, StaticResolver, SystemResolver};
pub use guard::{classify, AddrClass, Guard, Prohibited};
pub use parent::UpstreamProxy;
pub use pool::{Predialed, UpstreamBody, PREDIALED_MAX_AGE};

/// Why a route could not be dialed: the direct dialer's failure or the agent's.
#[derive(Clone, Debug, thiserror::Error)]
pub enum DialError {
    /// Resolution, the address guard, a deny rule on a resolved address, or the connection.
    #[error(transparent)]
    Direct(#[from] DirectError),
    /// No agent connected, or the agent (or the relay) failed to open the tunnel.
    #[error(transparent)]
    Agent(#[from] AgentDialError),
}

/// Why a request sent through the pools got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The connection could not be opened.
    #[error(transparent)]
    Dial(#[from] DialError),
    /// The TLS handshake with the upstream failed; `certificate` when its certificate did not
    /// verify (untrusted issuer, wrong name, expired).
    #[error("upstream TLS failed: {detail}")]
    Tls {
        /// True for a certificate verification failure.
        certificate: bool,
        /// What rustls reported.
        detail: String,
    },
    /// The upstream did not begin its response in time.
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    /// The exchange failed after the connection was established.
    #[error("upstream connection failed: {0}")]
    Upstream(String),
}

impl SendError {
    /// The failure of a client request: the dial error or TLS failure found in the error's
    /// chain, else a generic upstream error.
    fn from_client(e: &hyper_util::client::legacy::Error) -> SendError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(s) = source {
            if let Some(d) = s.downcast_ref::<DirectError>() {
                return SendError::Dial(d.clone().into());
            }
            if let Some(a) = s.downcast_ref::<AgentDialError>() {
                return SendError::Dial(a.clone().into());
            }
            if let Some(t) = tls_error(s) {
                return SendError::Tls {
                    certificate: matches!(
                        t,
                        rustls::Error::InvalidCertificate(_)
                            | rustls::Error::InvalidCertRevocationList(_)
                    ),
                    detail: t.to_string(),
                };
            }
            source = s.source();
        }
        let detail = match std::error::Error::source(e) {
            Some(s) => s.to_string(),
            None => e.to_string(),
        };
        SendError::Upstream(detail)
    }
}

/// A rustls error, directly or inside (nested) `io::Error`s, whose `source()` skips the error
/// they wrap, so the chain walk alone would miss it (hyper-rustls wraps tokio-rustls's
/// `io::Error` in another one).
fn tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut e: &(dyn std::error::Error + 'static) = e;
    loop {
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        e = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    }
}

/// A raw connection to a destination: a socket on direct routes, a tunnel through an agent.
pub type Connection = Either<TcpStream, AgentStream>;

/// Turns routes into connections; owns the upstream pools.
pub struct Router {
    /// Direct routes: resolve once, guard, dial a checked address.
    direct: Arc<DirectDialer>,
    /// Agent routes: tunnels through the relay.
    agents: Arc<Registry>,
    /// Pooled clients of both, for requests.
    pools: pool::Pools,
    /// Unpooled connections for upgrade requests (WebSocket handshakes).
    upgrades: upgrade::Upgrades,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("direct", &self.direct)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A router dialing direct routes with `direct` and agent routes through `agents`;
    /// requests wait `response_timeout` for a response head; `tls` verifies upstreams of
    /// `https` requests.
    pub fn new(
        direct: Arc<DirectDialer>,
        agents: Arc<Registry>,
        response_timeout: Duration,
        tls: rustls::ClientConfig,
    ) -> Self {
        let upgrades = upgrade::Upgrades::new(tls.clone(), response_timeout);
        let pools = pool::Pools::new(direct.clone(), agents.clone(), response_timeout, tls);
        Router {
            direct,
            agents,
            pools,
            upgrades,
        }
    }

    /// Opens a connection to `host:port` on `route`; `reach` is the decision's say on the
    /// addresses and the parent proxy (direct routes only: an agent applies its own
    /// allowlist).
    pub async fn connect(
        &self,
        route: &Route,
        reach: &Reach,
        host: &Host,
        port: u16,
    ) -> Result<Connection, DialError> {
        match route {
            Route::Direct => {
                let (stream, _addr) = self.direct.dial_reach(host, port, reach).await?;
                Ok(Either::Left(stream))
            }
            Route::Agent(id) => Ok(Either::Right(
                self.agents.dial(id, &host.to_string(), port).await?,
            )),
        }
    }

    /// Checks that `route` can be used now without dialing: an agent route needs its agent
    /// connected (`agent_unavailable` at once otherwise).
    pub fn require(&self, route: &Route) -> Result<(), DialError> {
        match route {
            Route::Direct => Ok(()),
            Route::Agent(id) => Ok(self.agents.require(id)?),
        }
    }

    /// Sends `req` (absolute URI, headers prepared) on `route` through the pools; an `https`
    /// URI gets TLS (end to end through an agent's tunnel). `predialed` (direct routes) is a
    /// connection to the request's target that a new pooled connection may use.
    pub async fn send(
        &self,
        route: &Route,
        reach: &Reach,
        req: Request<UpstreamBody>,
        predialed: Option<&Arc<Predialed>>,
    ) -> Result<Response<Incoming>, SendError> {
        match route {
            Route::Direct => self.pools.send_direct(req, reach, predialed).await,
            Route::Agent(id) => self.pools.send_agent(id, req).await,
        }
    }
}
