//! hyper answers a request it cannot parse by itself — a bare `400`, `414` or `431` with no
//! body — before any service sees it. Every error tollgate generates must carry
//! `Proxy-Status` and a JSON body, so [`Canned`] wraps a listener's connection and replaces
//! that automatic answer, on its way to the socket, by tollgate's own (the listener supplies
//! it: `proxy::errors::hyper_answer`; the connection closes after it, as hyper's does).
//!
//! hyper writes such an answer only when the previous exchange is complete, i.e. when every
//! request handed to the service has had its response head written. So the wrapper counts
//! the service's requests ([`Dispatched`], incremented by the service) and the final
//! response heads it sees start a write; a `400`/`414`/`431` head while the two are equal is
//! hyper's own. The count errs only towards leaving an answer as it is (a body chunk that
//! happens to start like a head makes the heads run ahead), never towards rewriting a
//! response the service produced.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Requests the service was given on one connection; the service increments it.
#[derive(Clone, Debug, Default)]
pub struct Dispatched(Arc<AtomicU64>);

impl Dispatched {
    /// Counts one request handed to the service.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A connection whose automatic hyper error answers are replaced by tollgate's.
pub struct Canned<S> {
    inner: S,
    /// The service's count of requests.
    dispatched: Dispatched,
    /// Final response heads seen at the start of a write.
    heads: u64,
    /// The replacement still to be written, and how much of it is.
    pending: Option<(Vec<u8>, usize)>,
    /// tollgate's answer in place of hyper's automatic one with this status, if any.
    answer: fn(u16) -> Option<Vec<u8>>,
    /// Set once hyper's answer was replaced: hyper closes the connection after it, so
    /// whatever else it writes (its answer again, after a `Pending`) is dropped.
    replaced: bool,
}

impl<S> Canned<S> {
    /// Wraps `inner`; the service must call `dispatched.inc()` for every request. `answer`
    /// gives the replacement of hyper's answer with a status (`None`: leave it).
    pub fn new(inner: S, dispatched: Dispatched, answer: fn(u16) -> Option<Vec<u8>>) -> Self {
        Canned {
            inner,
            answer,
            dispatched,
            heads: 0,
            pending: None,
            replaced: false,
        }
    }

    /// The wrapped connection (for zero-copy tunnels after an upgrade).
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Whether `buf` starts a response head; if it is hyper's own error answer, the
    /// replacement.
    fn inspect(&mut self, buf: &[u8]) -> Option<Vec<u8>> {
        let status = head_status(buf)?;
        if (100..200).contains(&status) {
            return None;
        }
        let own = self.heads == self.dispatched.get();
        self.heads += 1;
        if !own {
            return None;
        }
        (self.answer)(status)
    }
}

/// The status of an HTTP/1.x response head at the start of `buf`.
fn head_status(buf: &[u8]) -> Option<u16> {
    let rest = buf
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| buf.strip_prefix(b"HTTP/1.0 "))?;
    let digits = rest.get(..3)?;
    if rest.get(3) != Some(&b' ') || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

impl<S: AsyncWrite + Unpin> Canned<S> {
    /// Writes out the replacement, if one is pending.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, done)) = &mut self.pending {
            if *done == bytes.len() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> Canned<S> {
    /// Handles a write starting with `buf` itself when it must not reach the connection as
    /// is: a replacement still going out, hyper's answer (replaced, reported written whole),
    /// or anything after it. `None`: write `buf` through.
    fn take_over(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Option<Poll<io::Result<usize>>> {
        if let Poll::Ready(Err(e)) = self.drain(cx) {
            return Some(Poll::Ready(Err(e)));
        }
        if self.pending.is_some() {
            return Some(Poll::Pending);
        }
        if self.replaced {
            return Some(Poll::Ready(Ok(buf.len())));
        }
        let replacement = self.inspect(buf)?;
        self.pending = Some((replacement, 0));
        self.replaced = true;
        Some(match self.drain(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Canned<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Canned<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(done) = self.take_over(cx, buf) {
            return done;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &**b);
        if let Some(done) = self.take_over(cx, first) {
            return done;
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(status: u16) -> Option<Vec<u8>> {
        (status == 431).then(|| b"ours".to_vec())
    }

    #[test]
    fn only_hyper_answers_are_replaced() {
        let d = Dispatched::default();
        let mut c = Canned::new((), d.clone(), ours);
        // The service's own 431 (one request dispatched, its head not yet written).
        d.inc();
        assert!(c.inspect(b"HTTP/1.1 431 Too Large\r\n\r\n").is_none());
        // Body bytes are not heads.
        assert!(c.inspect(b"{\"error\":1}").is_none());
        // A 100 Continue is not a final head.
        d.inc();
        assert!(c.inspect(b"HTTP/1.1 100 Continue\r\n\r\n").is_none());
        assert!(c.inspect(b"HTTP/1.1 200 OK\r\n\r\n").is_none());
        // Every request answered: the next 431 is hyper's own.
        let raw = c.inspect(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n");
        assert_eq!(raw.as_deref(), Some(&b"ours"[..]));
        assert_eq!(head_status(b"HTTP/1.1 20 OK"), None);
    }
}
