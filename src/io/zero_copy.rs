//! `splice(2)` between two TCP sockets through a pipe, driven by tokio's readiness events.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use super::{idle_watchdog, Activity};

/// Pipe capacity asked for (the default is 64 KiB): fewer system calls per byte. If the
/// kernel refuses (pipe-max-size), the default is used.
const PIPE_SIZE: usize = 1024 * 1024;

/// A pipe; both ends close on drop.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Its capacity: the most one splice into it can move.
    size: usize,
}

fn pipe() -> io::Result<Pipe> {
    let mut fds: [libc::c_int; 2] = [-1, -1];
    // SAFETY: pipe2 writes two new descriptors into the array when it returns 0.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nothing else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on a descriptor we own; F_SETPIPE_SZ returns the new size or -1.
    let size = unsafe {
        libc::fcntl(
            write.as_raw_fd(),
            libc::F_SETPIPE_SZ,
            PIPE_SIZE as libc::c_int,
        )
    };
    let size = usize::try_from(size).unwrap_or(64 * 1024);
    Ok(Pipe { read, write, size })
}

/// One non-blocking splice(2) call.
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: a system call on descriptors we hold open; null offsets mean "current
    // position", the only valid choice for sockets and pipes.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Moves bytes from `src` to `dst` until `src` reaches EOF, then shuts down `dst`'s write
/// side (passing the half-close on).
///
/// Reading into the pipe and writing out of it are interleaved, not done in turns: while
/// `dst` is slow to take bytes, `src` keeps being read as long as the pipe has room, so the
/// sender's window stays open. A splice into a pipe that still holds bytes can fail with
/// EAGAIN because the *pipe* is full (its slots hold partial pages), which says nothing
/// about the socket; so that case waits for the pipe to drain instead of clearing the
/// socket's readiness, and only a splice into an empty pipe goes through `try_io`.
async fn one_way(
    src: &TcpStream,
    dst: &TcpStream,
    moved: &AtomicU64,
    activity: &Activity,
) -> io::Result<()> {
    let pipe = pipe()?;
    // Bytes in the pipe; whether the last fill attempt found the pipe full; EOF seen.
    let (mut buffered, mut pipe_full, mut eof) = (0usize, false, false);
    loop {
        if eof && buffered == 0 {
            // SAFETY: shutdown(2) on a socket we hold open; an error (peer gone) is moot.
            unsafe { libc::shutdown(dst.as_raw_fd(), libc::SHUT_WR) };
            return Ok(());
        }
        let can_fill = !eof && !pipe_full && buffered < pipe.size;
        let can_drain = buffered > 0;
        tokio::select! {
            biased;
            r = dst.writable(), if can_drain => {
                r?;
                match dst.try_io(Interest::WRITABLE, || {
                    splice(pipe.read.as_raw_fd(), dst.as_raw_fd(), buffered)
                }) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(m) => {
                        buffered -= m.min(buffered);
                        pipe_full = false;
                        activity.touch();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            r = src.readable(), if can_fill => {
                r?;
                let room = pipe.size - buffered;
                let result = if buffered == 0 {
                    // Empty pipe: EAGAIN can only mean the socket has nothing to read.
                    src.try_io(Interest::READABLE, || {
                        splice(src.as_raw_fd(), pipe.write.as_raw_fd(), room)
                    })
                } else {
                    match splice(src.as_raw_fd(), pipe.write.as_raw_fd(), room) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            // Pipe full, or the socket empty: wait for a drain either way;
                            // an empty pipe then asks the socket through `try_io`.
                            pipe_full = true;
                            continue;
                        }
                        other => other,
                    }
                };
                match result {
                    Ok(0) => eof = true,
                    Ok(n) => {
                        buffered += n;
                        moved.fetch_add(n as u64, Ordering::Relaxed);
                        activity.touch();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// [`super::splice`] for two TCP sockets. `early` holds bytes the client sent right after
/// its `CONNECT` head (already read by hyper); they go upstream first.
pub(super) async fn splice_sockets(
    client: TcpStream,
    early: Bytes,
    mut upstream: TcpStream,
    idle: Duration,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
) -> String {
    let activity = Activity::new();
    if !early.is_empty() {
        if let Err(e) = upstream.write_all(&early).await {
            return e.to_string();
        }
        up.fetch_add(early.len() as u64, Ordering::Relaxed);
    }
    let both = async {
        tokio::try_join!(
            one_way(&client, &upstream, &up, &activity),
            one_way(&upstream, &client, &down, &activity),
        )
    };
    tokio::select! {
        r = both => match r {
            Ok(_) => "closed".into(),
            Err(e) => e.to_string(),
        },
        () = idle_watchdog(&activity, idle) => "idle timeout".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    async fn pair(l: &TcpListener) -> (TcpStream, TcpStream) {
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn sockets_are_spliced_with_half_close_early_bytes_and_counts() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (mut client_app, client_proxy) = pair(&l).await;
        let (upstream_proxy, mut upstream_app) = pair(&l).await;
        let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let t = tokio::spawn(splice_sockets(
            client_proxy,
            Bytes::from_static(b"early:"),
            upstream_proxy,
            Duration::from_secs(60),
            up.clone(),
            down.clone(),
        ));
        let big = vec![7u8; 3 * 1024 * 1024 + 5];
        client_app.write_all(b"hello").await.unwrap();
        client_app.shutdown().await.unwrap();
        let mut got = Vec::new();
        upstream_app.read_to_end(&mut got).await.unwrap();
        assert_eq!(
            got, b"early:hello",
            "upstream sees EOF after the client half-closed"
        );
        upstream_app.write_all(&big).await.unwrap();
        upstream_app.shutdown().await.unwrap();
        let mut back = Vec::new();
        client_app.read_to_end(&mut back).await.unwrap();
        assert!(back == big, "{} bytes back", back.len());
        assert_eq!(t.await.unwrap(), "closed");
        assert_eq!(up.load(Ordering::Relaxed), 11);
        assert_eq!(down.load(Ordering::Relaxed), big.len() as u64);
    }

    /// A reader much slower than the writer: the pipe fills (EAGAIN from a splice into a
    /// non-empty pipe) and drains many times; every byte arrives, in order, both ways at
    /// once.
    #[tokio::test]
    async fn a_slow_reader_gets_every_byte_in_order_while_the_pipe_fills() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (client_app, client_proxy) = pair(&l).await;
        let (upstream_proxy, upstream_app) = pair(&l).await;
        let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let t = tokio::spawn(splice_sockets(
            client_proxy,
            Bytes::new(),
            upstream_proxy,
            Duration::from_secs(60),
            up.clone(),
            down.clone(),
        ));
        let len = 24 * 1024 * 1024;
        let pattern = |i: usize| (i % 251) as u8;
        let data: Vec<u8> = (0..len).map(pattern).collect();
        // Each side writes everything and reads everything, reading in small pieces
        // with a yield in between, so both pipes fill up while the other side writes.
        let side = |mut s: TcpStream, data: Vec<u8>| async move {
            let (mut r, mut w) = s.split();
            let write = async {
                w.write_all(&data).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let read = async {
                let mut got = Vec::with_capacity(data.len());
                let mut buf = [0u8; 4096];
                loop {
                    let n = r.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break got;
                    }
                    got.extend_from_slice(&buf[..n]);
                    tokio::task::yield_now().await;
                }
            };
            let ((), got) = tokio::join!(write, read);
            got
        };
        let (from_upstream, from_client) = tokio::join!(
            side(client_app, data.clone()),
            side(upstream_app, data.clone())
        );
        assert!(
            from_upstream == data,
            "client got {} bytes",
            from_upstream.len()
        );
        assert!(
            from_client == data,
            "upstream got {} bytes",
            from_client.len()
        );
        assert_eq!(t.await.unwrap(), "closed");
        assert_eq!(up.load(Ordering::Relaxed), len as u64);
        assert_eq!(down.load(Ordering::Relaxed), len as u64);
    }
}
