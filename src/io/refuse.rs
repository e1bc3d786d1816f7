//! Answering connections over a listener's cap (the proxy's `--max-connections`, the web
//! listener's `--web-max-connections`) with a fixed `503` and closing them, in bounded work:
//! at most [`MAX_REFUSALS`] short tasks at once, each done within [`REFUSAL_TIME`]; beyond,
//! a connection is closed unanswered. A flood over the cap thus costs a bounded number of
//! tasks and file descriptors.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Connections being answered at once, per listener.
pub const MAX_REFUSALS: usize = 64;

/// How long a refused connection is kept: reading the request head (at most
/// [`HEAD_WAIT`]), writing the answer, and reading what the client still sends.
const REFUSAL_TIME: Duration = Duration::from_secs(1);

/// How long to wait for the request head before answering: a client still writing its request
/// may not read an early answer, and one that sends nothing gets the answer after this.
const HEAD_WAIT: Duration = Duration::from_millis(200);

/// A raw `503 Service Unavailable` closing the connection, with `proxy_status` as its
/// `Proxy-Status` and `body` (JSON) as its body: the answer of a connection over a cap, on
/// which no HTTP server runs.
pub fn raw_503(proxy_status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nProxy-Status: {proxy_status}\r\n\
         Content-Type: application/json\r\nCache-Control: no-store\r\nContent-Length: {}\r\n\
         Connection: close\r\nRetry-After: 1\r\n\r\n{body}",
        body.len(),
    )
    .into_bytes()
}

/// The refusals of one listener.
pub struct Refusals {
    /// One permit per refusal in progress.
    slots: Arc<Semaphore>,
    /// The raw HTTP/1.1 answer (`503` with `Proxy-Status`, JSON and `Connection: close`).
    answer: Bytes,
}

impl Refusals {
    /// Refusals answering with `answer`.
    pub fn new(answer: impl Into<Bytes>) -> Self {
        Refusals {
            slots: Arc::new(Semaphore::new(MAX_REFUSALS)),
            answer: answer.into(),
        }
    }

    /// Answers `stream` and closes it, in a short task; closes it at once when
    /// [`MAX_REFUSALS`] are in progress.
    pub fn refuse(&self, stream: TcpStream) {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            drop(stream);
            return;
        };
        let answer = self.answer.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REFUSAL_TIME, answer_and_close(stream, &answer)).await;
            drop(slot);
        });
    }
}

/// Reads the request head (for up to [`HEAD_WAIT`]), writes `answer`, then reads until the
/// client closes: closing with unread bytes would reset the connection before the client has
/// read the answer.
async fn answer_and_close(mut stream: TcpStream, answer: &[u8]) -> std::io::Result<()> {
    let mut head = [0u8; 4096];
    let _ = tokio::time::timeout(HEAD_WAIT, async {
        let mut seen = 0;
        while seen < head.len() && !head[..seen].windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut head[seen..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen += n,
            }
        }
    })
    .await;
    stream.write_all(answer).await?;
    stream.shutdown().await?;
    while stream.read(&mut head).await? > 0 {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn answers_then_closes_and_bounds_the_work() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let refusals = Refusals::new(&b"HTTP/1.1 503 Service Unavailable\r\n\r\n"[..]);
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        refusals.refuse(server);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert!(got.starts_with(b"HTTP/1.1 503"));
        // With every slot taken, the next connection is closed unanswered.
        let free = refusals.slots.available_permits() as u32;
        let _taken = refusals.slots.clone().try_acquire_many_owned(free).unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        refusals.refuse(server);
        let mut got = Vec::new();
        let _ = client.read_to_end(&mut got).await;
        assert!(got.is_empty());
    }
}
