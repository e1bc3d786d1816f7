//! A tunnel through an agent as a byte stream ([`AgentStream`]), and the lease that counts
//! it as open on its relay connection until it is dropped (the registry's load measure).

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::upgrade::Upgraded;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::registry::RelayConn;

/// A tunnel's claim on its relay connection: counts as in flight until dropped.
pub(super) struct Lease {
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

/// A tunnel through an agent: bytes written go to the destination, bytes read come from it.
/// Counts bytes into the agent's metrics and keeps the connection's load count until dropped.
pub struct AgentStream {
    /// The upgraded `CONNECT` stream.
    io: TokioIo<Upgraded>,
    /// Keeps the tunnel counted on its connection.
    lease: Lease,
}

impl std::fmt::Debug for AgentStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentStream")
            .field("agent", &self.lease.conn.agent)
            .field("conn", &self.lease.conn.id)
            .finish()
    }
}

impl AgentStream {
    /// A tunnel that was just answered 200 on `lease`'s connection.
    pub(super) fn new(io: TokioIo<Upgraded>, lease: Lease) -> Self {
        AgentStream { io, lease }
    }

    /// The agent ID this tunnel goes through.
    pub fn agent(&self) -> &str {
        &self.lease.conn.agent
    }
}

impl AsyncRead for AgentStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.lease.conn.metrics.down.inc_by(n as u64);
        }
        r
    }
}

impl AsyncWrite for AgentStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.lease.conn.metrics.up.inc_by(n as u64);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Connection for AgentStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}
