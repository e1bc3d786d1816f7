//! Name resolution for direct routes: the [`Resolve`] trait, the operating system's resolver
//! and a static table for tests. The dialer (`super::direct`) resolves each name once per dial
//! and checks every answer before connecting.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;

/// Resolves names. A trait so tests can map names to chosen addresses.
pub trait Resolve: Send + Sync + 'static {
    /// Every address of `name`.
    fn resolve(
        &self,
        name: &str,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<Vec<IpAddr>>> + Send + '_>,
    >;
}

/// The operating system's resolver (`getaddrinfo` on a blocking thread, via
/// `tokio::net::lookup_host`), honouring `/etc/hosts` and `/etc/resolv.conf` like every other
/// program on the host.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(
        &self,
        name: &str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + '_>> {
        let name = name.to_owned();
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((name.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// A fixed name → addresses table, for tests and examples. Unknown names fail with
/// `io::ErrorKind::NotFound`, like an NXDOMAIN.
#[derive(Clone, Debug, Default)]
pub struct StaticResolver {
    /// Exact (already normalized) names and their answers, in answer order.
    names: HashMap<String, Vec<IpAddr>>,
}

impl StaticResolver {
    /// An empty table: every name is unknown.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the answer for `name`; for building a table in one expression.
    pub fn with(
        mut self,
        name: impl Into<String>,
        addrs: impl IntoIterator<Item = IpAddr>,
    ) -> Self {
        self.insert(name, addrs);
        self
    }

    /// Adds (or replaces) the answer for `name`.
    pub fn insert(&mut self, name: impl Into<String>, addrs: impl IntoIterator<Item = IpAddr>) {
        self.names.insert(name.into(), addrs.into_iter().collect());
    }
}

impl Resolve for StaticResolver {
    fn resolve(
        &self,
        name: &str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + '_>> {
        let answer =
            self.names.get(name).cloned().ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "name not in the static table")
            });
        Box::pin(std::future::ready(answer))
    }
}
