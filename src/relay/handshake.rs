//! The first bytes on a relay connection, inside TLS and before HTTP/2: the agent says who it
//! is, the relay answers whether it is accepted. Only then is the connection turned around
//! (tollgate the HTTP/2 client, the agent the server).
//!
//! Framing is deliberately small: the agent sends [`MAGIC`] then one frame, the relay answers
//! with one frame; a frame is a 4-byte big-endian length and that many bytes of JSON, at most
//! [`MAX_FRAME`]. A fixed magic means a stray TLS client (a browser, a scanner) is refused at
//! the first bytes instead of being parsed as a credential.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What an agent sends first, so a non-agent is told apart before any parsing.
pub const MAGIC: &[u8; 8] = b"TGRELAY1";

/// Largest frame accepted either way. A credential is a few hundred bytes.
pub const MAX_FRAME: usize = 16 * 1024;

/// ALPN protocol both sides offer, so a TLS client for something else fails the handshake.
pub const ALPN: &[u8] = b"tollgate-relay/1";

/// The agent's introduction.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// The credential from `tollgate agent enroll` (never logged).
    pub credential: String,
    /// Random per agent process: connections of one instance share it, so a reconnecting
    /// instance can replace its own stale connection without touching another instance's.
    pub instance: String,
    /// Which of the instance's connections this is (0..connections).
    pub slot: u32,
    /// The agent's version, for the relay's logs.
    pub version: String,
}

/// The relay's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Welcome {
    /// Accepted: HTTP/2 follows on this connection.
    pub ok: bool,
    /// Why not, as a code (`invalid_credential`, `revoked`, `expired`, `bad_hello`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Human message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Errors reading or writing handshake frames.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The connection failed or closed early.
    #[error("relay handshake I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The peer is not speaking this protocol.
    #[error("relay handshake: {0}")]
    Protocol(&'static str),
    /// The frame is not the JSON expected.
    #[error("relay handshake: malformed frame: {0}")]
    Json(#[from] serde_json::Error),
}

/// Writes one length-prefixed JSON frame.
pub async fn write_frame<W, T>(w: &mut W, value: &T) -> Result<(), HandshakeError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let body = serde_json::to_vec(value)?;
    if body.len() > MAX_FRAME {
        return Err(HandshakeError::Protocol("frame too large"));
    }
    let len = u32::try_from(body.len()).map_err(|_| HandshakeError::Protocol("frame too large"))?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    w.write_all(&out).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one length-prefixed JSON frame.
pub async fn read_frame<R, T>(r: &mut R) -> Result<T, HandshakeError>
where
    R: AsyncRead + Unpin,
    T: for<'de> Deserialize<'de>,
{
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(HandshakeError::Protocol("frame too large"));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(serde_json::from_slice(&body)?)
}

/// Agent side: magic + hello.
pub async fn send_hello<W: AsyncWrite + Unpin>(
    w: &mut W,
    hello: &Hello,
) -> Result<(), HandshakeError> {
    w.write_all(MAGIC).await?;
    write_frame(w, hello).await
}

/// Relay side: checks the magic, then reads the hello and checks its shape (before any
/// credential is verified).
pub async fn read_hello<R: AsyncRead + Unpin>(r: &mut R) -> Result<Hello, HandshakeError> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).await?;
    if &magic != MAGIC {
        return Err(HandshakeError::Protocol("not a tollgate agent"));
    }
    let hello: Hello = read_frame(r).await?;
    let instance = &hello.instance;
    if instance.is_empty()
        || instance.len() > 64
        || !instance.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(HandshakeError::Protocol(
            "the instance must be 1 to 64 letters and digits",
        ));
    }
    Ok(hello)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hello_and_welcome_round_trip() {
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        let hello = Hello {
            credential: "c".into(),
            instance: "i".into(),
            slot: 1,
            version: "v".into(),
        };
        send_hello(&mut a, &hello).await.unwrap();
        let got = read_hello(&mut b).await.unwrap();
        assert_eq!((got.credential.as_str(), got.slot), ("c", 1));
        write_frame(
            &mut b,
            &Welcome {
                ok: false,
                error: Some("revoked".into()),
                message: None,
            },
        )
        .await
        .unwrap();
        let w: Welcome = read_frame(&mut a).await.unwrap();
        assert!(!w.ok);
        assert_eq!(w.error.as_deref(), Some("revoked"));
    }

    #[tokio::test]
    async fn strangers_and_oversized_frames_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(matches!(
            read_hello(&mut b).await,
            Err(HandshakeError::Protocol(_))
        ));
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(MAGIC).await.unwrap();
        a.write_all(&(1u32 << 30).to_be_bytes()).await.unwrap();
        assert!(matches!(
            read_hello(&mut b).await,
            Err(HandshakeError::Protocol("frame too large"))
        ));
        // A malformed instance is refused as a bad hello, before any credential check.
        for instance in ["", "has space", &"x".repeat(65)] {
            let (mut a, mut b) = tokio::io::duplex(64 * 1024);
            let hello = Hello {
                credential: "c".into(),
                instance: instance.into(),
                slot: 0,
                version: "v".into(),
            };
            send_hello(&mut a, &hello).await.unwrap();
            assert!(
                matches!(read_hello(&mut b).await, Err(HandshakeError::Protocol(_))),
                "{instance:?}"
            );
        }
    }
}
