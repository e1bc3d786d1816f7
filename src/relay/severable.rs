//! A relay connection's byte stream that can be cut from outside: once its token is
//! cancelled, every read and write fails. hyper runs an HTTP/2 client connection on a task of
//! its own that lives as long as a stream on it does, so dropping the connection handle does
//! not close a connection with open tunnels; cutting the stream under it does, and every
//! tunnel on it fails at once (a revoked agent, shutdown).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// `inner`, until `cut` is cancelled.
pub struct Severable<S> {
    /// The TLS stream to the agent.
    inner: S,
    /// Ready once the token is cancelled; polled with every read and write so that a
    /// connection waiting for bytes wakes when it is cut.
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<S> Severable<S> {
    /// Wraps `inner`; cancelling `cut` severs it.
    pub fn new(inner: S, cut: CancellationToken) -> Self {
        Severable {
            inner,
            cut: Box::pin(cut.cancelled_owned()),
        }
    }

    fn is_cut(&mut self, cx: &mut Context<'_>) -> bool {
        self.cut.as_mut().poll(cx).is_ready()
    }
}

fn severed() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "relay connection closed")
}

impl<S: AsyncRead + Unpin> AsyncRead for Severable<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.is_cut(cx) {
            return Poll::Ready(Err(severed()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Severable<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.is_cut(cx) {
            return Poll::Ready(Err(severed()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.is_cut(cx) {
            return Poll::Ready(Err(severed()));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_waiting_reader_fails_when_the_stream_is_cut() {
        let (a, mut b) = tokio::io::duplex(64);
        let cut = CancellationToken::new();
        let mut s = Severable::new(a, cut.clone());
        b.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).await.unwrap();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 1];
            s.read(&mut buf).await
        });
        cut.cancel();
        let e = reader.await.unwrap().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted);
    }
}
