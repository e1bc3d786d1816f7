//! Direct dialing (STUB).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::guard::{Guard, Prohibited};
use crate::policy::Host;

/// Resolves names. A trait so tests can map names to chosen addresses.
pub trait Resolve: Send + Sync + 'static {
    /// Every address of `name`.
    fn resolve(
        &self,
        name: &str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Vec<IpAddr>>> + Send + '_>>;
}

/// Why a direct dial failed. Maps 1:1 to proxy error codes.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// Name did not resolve (`dns_error`).
    #[error("DNS lookup failed for {host}: {detail}")]
    Dns {
        /// The name looked up.
        host: String,
        /// Resolver message.
        detail: String,
    },
    /// The guard refused an address (`destination_ip_prohibited`).
    #[error(transparent)]
    Prohibited(#[from] Prohibited),
    /// Every address refused the connection (`connection_refused`).
    #[error("connection refused by {0}")]
    Refused(SocketAddr),
    /// Connect timed out (`connection_timeout`).
    #[error("connection to {0} timed out")]
    Timeout(String),
    /// Other I/O error while connecting (`connection_refused`-class 502).
    #[error("connecting to {addr}: {source}")]
    Io {
        /// Address being dialed.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Dials destinations directly: resolve once, classify every address, connect only to a
/// checked address.
pub struct DirectDialer {}

impl DirectDialer {
    /// A dialer using `resolver`, `guard` and a connect timeout.
    pub fn new(resolver: Arc<dyn Resolve>, guard: Guard, connect_timeout: Duration) -> Self {
        let _ = (resolver, guard, connect_timeout);
        todo!()
    }

    /// Dials `host:port`. Returns the stream and the address actually connected to.
    pub async fn dial(
        &self,
        host: &Host,
        port: u16,
        allow_private: bool,
    ) -> Result<(TcpStream, SocketAddr), DialError> {
        let _ = (host, port, allow_private);
        todo!()
    }
}

/// TEMP stub until the route module lands.
pub struct SystemResolver;
impl Resolve for SystemResolver {
    fn resolve(
        &self,
        _name: &str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Vec<IpAddr>>> + Send + '_>>
    {
        todo!()
    }
}
