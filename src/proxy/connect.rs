//! `CONNECT` tunnels: the policy decided and the dial succeeded before the client saw `200`;
//! here the bytes are copied both ways until both sides are done (half-close is passed on:
//! EOF from one side shuts down the write half of the other) or nothing moved for the idle
//! timeout.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Copy buffer per direction. 64 KiB keeps bulk transfers near loopback speed.
const TUNNEL_BUFFER: usize = 64 * 1024;

/// Last time any byte moved on a tunnel, in milliseconds since the tunnel started.
struct Activity {
    base: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A stream that records activity on every successful read or write.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    /// Bytes read from this side (= sent on towards the other side).
    read: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if matches!(r, Poll::Ready(Ok(()))) && n > 0 {
            self.activity.touch();
            self.read.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
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
    let activity = Arc::new(Activity {
        base: Instant::now(),
        last_ms: AtomicU64::new(0),
    });
    let mut client = Tracked {
        inner: client,
        activity: activity.clone(),
        read: up,
    };
    let mut upstream = Tracked {
        inner: upstream,
        activity: activity.clone(),
        read: down,
    };
    let copy = tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut upstream,
        TUNNEL_BUFFER,
        TUNNEL_BUFFER,
    );
    let watchdog = async {
        loop {
            let deadline = activity.last() + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    tokio::select! {
        r = copy => match r {
            Ok(_) => "closed".into(),
            Err(e) => e.to_string(),
        },
        () = watchdog => "idle timeout".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn half_close_is_passed_on_and_bytes_counted() {
        let (client_app, client_proxy) = tokio::io::duplex(1024);
        let (upstream_proxy, upstream_app) = tokio::io::duplex(1024);
        let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let t = tokio::spawn(splice(
            client_proxy,
            upstream_proxy,
            Duration::from_secs(60),
            up.clone(),
            down.clone(),
        ));
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
