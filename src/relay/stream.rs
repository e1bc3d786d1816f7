//! A tunnel through an agent as a byte stream ([`AgentStream`]), and the lease that counts
//! it as open on its relay connection until it is dropped (the registry's load measure).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use hyper::upgrade::Upgraded;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;

use super::registry::RelayConn;
use crate::io::{ByteCounter, Counted};

/// A tunnel's claim on its relay connection: counts as in flight until dropped.
pub struct Lease {
    /// The connection the tunnel runs on.
    pub(super) conn: Arc<RelayConn>,
}

impl Lease {
    pub(super) fn new(conn: Arc<RelayConn>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::SeqCst);
        conn.metrics.open_tunnels.inc();
        Lease { conn }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.conn.metrics.open_tunnels.dec();
        let left = self.conn.in_flight.fetch_sub(1, Ordering::SeqCst) - 1;
        if left == 0 && self.conn.closing.load(Ordering::SeqCst) {
            self.conn.stop.cancel();
        }
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("agent", &self.conn.agent)
            .field("conn", &self.conn.id)
            .finish()
    }
}

/// Bytes read come from the destination (down), bytes written go to it (up).
impl ByteCounter for Lease {
    fn read(&self, n: u64) {
        self.conn.metrics.down.inc_by(n);
    }

    fn written(&self, n: u64) {
        self.conn.metrics.up.inc_by(n);
    }
}

/// A tunnel through an agent: bytes written go to the destination, bytes read come from it.
/// Counts bytes into the agent's metrics and keeps the connection's load count (its
/// [`Lease`]) until dropped.
pub type AgentStream = Counted<TokioIo<Upgraded>, Lease>;

impl AgentStream {
    /// A tunnel that was just answered 200 on `lease`'s connection.
    pub(super) fn new(io: TokioIo<Upgraded>, lease: Lease) -> Self {
        Counted {
            inner: io,
            counter: lease,
        }
    }

    /// The agent ID this tunnel goes through.
    pub fn agent(&self) -> &str {
        &self.counter.conn.agent
    }
}

impl Connection for AgentStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}
