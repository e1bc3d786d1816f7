//! `CONNECT` tunnels: the policy decided and the dial succeeded before the client saw `200`;
//! here the bytes are copied both ways until both sides are done (half-close is passed on:
//! EOF from one side shuts down the write half of the other) or nothing moved for the idle
//! timeout.
//!
//! On Linux, when both sides are plain TCP sockets (the usual case), bytes move with
//! `splice(2)` through a pipe and never enter user space: a user-space copy reads and writes
//! every byte once more than the direct path, which on loopback costs about half of the
//! throughput (BENCHMARKS.md). Elsewhere, or for other streams, [`splice`] copies through
//! 64 KiB buffers.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Copy buffer per direction. 64 KiB keeps bulk transfers near loopback speed. It is held
/// only while bytes are moving (see [`Direction`]), so idle tunnels cost a few hundred bytes
/// here, not 128 KiB: with 1 000s of idle tunnels (keep-alive connections of API clients,
/// agent tunnels) the buffers would otherwise dominate the proxy's memory.
const TUNNEL_BUFFER: usize = 64 * 1024;

/// Last time any byte moved on a tunnel, in milliseconds since the tunnel started.
pub struct Activity {
    base: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    /// Activity starting now.
    pub(crate) fn new() -> Self {
        Activity {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Records that bytes moved now.
    pub(super) fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Where a [`Counted`] stream reports the bytes it moves.
pub trait ByteCounter {
    /// `n` (more than 0) bytes were read from the stream.
    fn read(&self, n: u64);
    /// `n` (more than 0) bytes were written to the stream.
    fn written(&self, n: u64);
}

/// A stream that reports every byte read from or written to it to its counter: the tunnels'
/// [`Metered`] sides and the relay's agent streams.
pub struct Counted<S, C> {
    /// The stream.
    pub(crate) inner: S,
    /// Where the bytes moved are reported.
    pub(crate) counter: C,
}

impl<S, C: std::fmt::Debug> std::fmt::Debug for Counted<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counted")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + Unpin, C: ByteCounter + Unpin> AsyncRead for Counted<S, C> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if matches!(r, Poll::Ready(Ok(()))) && n > 0 {
            self.counter.read(n as u64);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin, C: ByteCounter + Unpin> AsyncWrite for Counted<S, C> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                self.counter.written(n as u64);
            }
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A tunnel side's counts: activity on every successful read or write (for the idle
/// timeout), the bytes read, and optionally those written, for the access line.
pub struct Meter {
    /// Touched on every byte moved, for the idle timeout.
    pub(crate) activity: Arc<Activity>,
    /// Bytes read from this side.
    pub(crate) read: Arc<AtomicU64>,
    /// Bytes written to this side, when counted here (a copied tunnel counts each direction
    /// as the other side's reads).
    pub(crate) written: Option<Arc<AtomicU64>>,
}

impl ByteCounter for Meter {
    fn read(&self, n: u64) {
        self.activity.touch();
        self.read.fetch_add(n, Ordering::Relaxed);
    }

    fn written(&self, n: u64) {
        self.activity.touch();
        if let Some(w) = &self.written {
            w.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// A stream that records activity and counts bytes ([`Meter`]). Used for both sides of a
/// copied tunnel and for the client side of an intercepted one.
pub type Metered<S> = Counted<S, Meter>;

/// Runs a tunnel between the upgraded client connection and the dialed `upstream`: zero-copy
/// between the two sockets where possible (see the module docs), else [`splice`]. Arguments
/// and result as for [`splice`].
pub async fn tunnel(
    client: Upgraded,
    upstream: TcpStream,
    idle: Duration,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
) -> String {
    #[cfg(target_os = "linux")]
    let client = match client.downcast::<TokioIo<canned::Canned<TcpStream>>>() {
        Ok(parts) => {
            return zero_copy::splice_sockets(
                parts.io.into_inner().into_inner(),
                parts.read_buf,
                upstream,
                idle,
                up,
                down,
            )
            .await
        }
        Err(client) => client,
    };
    splice(TokioIo::new(client), upstream, idle, up, down).await
}

/// The next connection on `listener`. A failed accept (usually EMFILE: out of file
/// descriptors) is logged and retried after a short pause instead of spinning. Shared by the
/// proxy, web and relay listeners.
pub async fn accept(listener: &tokio::net::TcpListener, name: &str) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                tracing::warn!(error = %e, listener = name, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Waits until no byte moved for `idle`.
pub async fn idle_watchdog(activity: &Activity, idle: Duration) {
    loop {
        let deadline = activity.last() + idle;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

/// Copies bytes between `client` and `upstream` until both directions finish, an error
/// occurs, or no byte moved for `idle`. Bytes are added to `up` (client → upstream) and
/// `down` as they move, so the counts are right however the tunnel ends. Returns why it
/// ended: "closed", "idle timeout" or the I/O error.
pub async fn splice<C, U>(
    client: C,
    upstream: U,
    idle: Duration,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
) -> String
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    splice_with_buffer(client, upstream, idle, up, down, TUNNEL_BUFFER).await
}

/// [`splice`] with a chosen copy buffer size per direction (held only while bytes move).
pub async fn splice_with_buffer<C, U>(
    client: C,
    upstream: U,
    idle: Duration,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
    buffer: usize,
) -> String
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Arc::new(Activity::new());
    let mut client = Metered {
        inner: client,
        counter: Meter {
            activity: activity.clone(),
            read: up,
            written: None,
        },
    };
    let mut upstream = Metered {
        inner: upstream,
        counter: Meter {
            activity: activity.clone(),
            read: down,
            written: None,
        },
    };
    let copy = copy_bidirectional(&mut client, &mut upstream, buffer);
    tokio::select! {
        r = copy => match r {
            Ok(_) => "closed".into(),
            Err(e) => e.to_string(),
        },
        () = idle_watchdog(&activity, idle) => "idle timeout".into(),
    }
}

/// One direction of a tunnel: read into a buffer, write it all out, repeat; at EOF shut the
/// writer down. Like tokio's `copy_bidirectional`, except that the buffer is allocated when a
/// read is attempted and released whenever the reader has nothing to give (the write side
/// being empty then), so an idle direction holds no buffer. Reads go into the buffer's
/// uninitialized capacity (`poll_read_buf`), so a fresh buffer costs a `malloc`, not a
/// 64 KiB `memset`.
struct Direction {
    /// Capacity of the buffer when one is allocated.
    size: usize,
    buf: Option<BytesMut>,
    /// Bytes of `buf` already written.
    pos: usize,
    /// The reader reached EOF.
    read_done: bool,
    /// Bytes were written since the last flush.
    need_flush: bool,
    /// Total bytes written.
    amt: u64,
}

impl Direction {
    fn new(size: usize) -> Self {
        Direction {
            size,
            buf: None,
            pos: 0,
            read_done: false,
            need_flush: false,
            amt: 0,
        }
    }

    fn pending(&self) -> usize {
        self.buf.as_ref().map_or(0, |b| b.len() - self.pos)
    }

    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.pending() == 0 && !self.read_done {
                let size = self.size;
                let buf = self
                    .buf
                    .get_or_insert_with(|| BytesMut::with_capacity(size));
                buf.clear();
                self.pos = 0;
                match tokio_util::io::poll_read_buf(reader.as_mut(), cx, buf) {
                    Poll::Pending => {
                        // Nothing to read and nothing buffered: give the memory back, and
                        // make sure what was written reaches the other side.
                        self.buf = None;
                        if self.need_flush {
                            ready!(writer.as_mut().poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(0)) => {
                        self.read_done = true;
                        self.buf = None;
                    }
                    Poll::Ready(Ok(_)) => {}
                }
            }
            while self.pending() > 0 {
                let Some(buf) = self.buf.as_ref() else { break };
                let n = ready!(writer.as_mut().poll_write(cx, &buf[self.pos..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "write zero bytes into the tunnel",
                    )));
                }
                self.pos += n;
                self.amt += n as u64;
                self.need_flush = true;
            }
            if self.read_done {
                ready!(writer.as_mut().poll_flush(cx))?;
                ready!(writer.as_mut().poll_shutdown(cx))?;
                return Poll::Ready(Ok(self.amt));
            }
        }
    }
}

/// Copies both ways until both directions reached EOF (each EOF shuts down the other side's
/// write half) or one fails. Returns the bytes copied (a → b, b → a).
async fn copy_bidirectional<A, B>(a: &mut A, b: &mut B, buffer: usize) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut a_to_b = Direction::new(buffer);
    let mut b_to_a = Direction::new(buffer);
    let mut done_ab = None;
    let mut done_ba = None;
    std::future::poll_fn(|cx| {
        if done_ab.is_none() {
            if let Poll::Ready(r) = a_to_b.poll_copy(cx, Pin::new(&mut *a), Pin::new(&mut *b)) {
                done_ab = Some(r?);
            }
        }
        if done_ba.is_none() {
            if let Poll::Ready(r) = b_to_a.poll_copy(cx, Pin::new(&mut *b), Pin::new(&mut *a)) {
                done_ba = Some(r?);
            }
        }
        match (done_ab, done_ba) {
            (Some(x), Some(y)) => Poll::Ready(Ok((x, y))),
            _ => Poll::Pending,
        }
    })
    .await
}

pub mod canned;
pub mod proxy_header;
pub mod refuse;
#[cfg(target_os = "linux")]
mod zero_copy;

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::task::JoinHandle;

    /// A running [`splice`] between two in-memory pipes, and the test's ends of them.
    struct Spliced {
        client_app: DuplexStream,
        upstream_app: DuplexStream,
        up: Arc<AtomicU64>,
        down: Arc<AtomicU64>,
        t: JoinHandle<String>,
    }

    /// Splices a client pipe of `client_cap` bytes to an upstream pipe of `upstream_cap`.
    fn spawn_splice(client_cap: usize, upstream_cap: usize) -> Spliced {
        let (client_app, client_proxy) = tokio::io::duplex(client_cap);
        let (upstream_proxy, upstream_app) = tokio::io::duplex(upstream_cap);
        let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let t = tokio::spawn(splice(
            client_proxy,
            upstream_proxy,
            Duration::from_secs(60),
            up.clone(),
            down.clone(),
        ));
        Spliced {
            client_app,
            upstream_app,
            up,
            down,
            t,
        }
    }

    #[tokio::test]
    async fn half_close_is_passed_on_and_bytes_counted() {
        let Spliced {
            client_app,
            upstream_app,
            up,
            down,
            t,
        } = spawn_splice(1024, 1024);
        let (mut cr, mut cw) = tokio::io::split(client_app);
        let (mut ur, mut uw) = tokio::io::split(upstream_app);
        cw.write_all(b"hello").await.unwrap();
        cw.shutdown().await.unwrap();
        let mut got = Vec::new();
        ur.read_to_end(&mut got).await.unwrap();
        assert_eq!(
            got, b"hello",
            "upstream sees EOF after the client half-closed"
        );
        // The other direction still works after the half-close.
        uw.write_all(b"world!").await.unwrap();
        uw.shutdown().await.unwrap();
        let mut back = Vec::new();
        cr.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"world!");
        let end = t.await.unwrap();
        assert_eq!(end, "closed");
        assert_eq!(
            (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed)),
            (5, 6)
        );
    }

    #[tokio::test]
    async fn bulk_both_ways_through_small_pipes_arrives_intact() {
        // Small pipes make every read and write partial and often pending, which exercises
        // releasing and re-allocating the copy buffers.
        let Spliced {
            client_app,
            upstream_app,
            up,
            down,
            t,
        } = spawn_splice(1000, 777);
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let (mut cr, mut cw) = tokio::io::split(client_app);
        let (mut ur, mut uw) = tokio::io::split(upstream_app);
        let (d1, d2) = (data.clone(), data.clone());
        let w1 = tokio::spawn(async move {
            cw.write_all(&d1).await.unwrap();
            cw.shutdown().await.unwrap();
        });
        let w2 = tokio::spawn(async move {
            uw.write_all(&d2).await.unwrap();
            uw.shutdown().await.unwrap();
        });
        let (mut at_up, mut at_client) = (Vec::new(), Vec::new());
        let (r1, r2) = tokio::join!(ur.read_to_end(&mut at_up), cr.read_to_end(&mut at_client));
        r1.unwrap();
        r2.unwrap();
        w1.await.unwrap();
        w2.await.unwrap();
        assert!(at_up == data && at_client == data);
        assert_eq!(t.await.unwrap(), "closed");
        assert_eq!(up.load(Ordering::Relaxed), data.len() as u64);
        assert_eq!(down.load(Ordering::Relaxed), data.len() as u64);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_tunnel_is_closed() {
        let (_client_app, client_proxy) = tokio::io::duplex(1024);
        let (upstream_proxy, _upstream_app) = tokio::io::duplex(1024);
        let end = splice(
            client_proxy,
            upstream_proxy,
            Duration::from_secs(900),
            Arc::default(),
            Arc::default(),
        )
        .await;
        assert_eq!(end, "idle timeout");
    }
}
