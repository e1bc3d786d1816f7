//! PROXY protocol v2 on the proxy and relay listeners (`--proxy-protocol`): behind a load
//! balancer, every connection comes from the balancer, and the header it sends first names
//! the real client, which per-source caps and access lines then see.
//!
//! Only a peer in `--trusted-proxies` may send one (anyone else could claim any address): a
//! header from another peer closes the connection. A trusted peer may also connect without
//! one (a direct client on the balancer's host). The header is recognised by peeking at its
//! 12-byte signature, which no HTTP request or TLS handshake starts with, then read exactly
//! (at most [`MAX_HEADER`] bytes, within the header timeout), so the socket is left at the
//! first byte of the client's own data and stays a plain `TcpStream` (tunnels keep
//! `splice(2)`). Parsing is the `ppp` crate's. A `LOCAL` header (the balancer's own health
//! check) keeps the peer's address.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Time a peer has to send the whole header (and the first bytes that show there is none).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest header accepted: the fixed 16 bytes, addresses (at most 216 for UNIX sockets) and
/// the TLVs a balancer adds (HAProxy's unique ID, TLS details), with room to spare.
pub const MAX_HEADER: usize = 16 + 1024;

/// Wait between peeks while a header's first 16 bytes arrive in pieces (rare: a balancer
/// sends the header in one segment).
const PEEK_AGAIN: Duration = Duration::from_millis(5);

/// The v2 signature.
const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Why a connection was closed before its first byte reached the server.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderRefused {
    /// A PROXY header from a peer outside `--trusted-proxies`.
    #[error("PROXY protocol header from an untrusted peer")]
    Untrusted,
    /// Not a valid v2 header.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(String),
    /// Longer than [`MAX_HEADER`].
    #[error("PROXY protocol header longer than {MAX_HEADER} bytes")]
    TooLong,
    /// Not complete within the header timeout.
    #[error("PROXY protocol header not complete within the timeout")]
    Timeout,
    /// The connection failed.
    #[error("reading a PROXY protocol header: {0}")]
    Io(String),
}

/// The listeners' PROXY protocol setting.
#[derive(Debug, Clone)]
pub struct ProxyHeaders {
    /// Off: no peeking at all, as before the flag existed.
    enabled: bool,
    /// Peers that may send a header.
    trusted: Vec<IpNet>,
    /// Time for the header.
    timeout: Duration,
}

impl ProxyHeaders {
    /// No PROXY protocol: every connection's peer is its client.
    pub fn off() -> ProxyHeaders {
        ProxyHeaders {
            enabled: false,
            trusted: Vec::new(),
            timeout: HEADER_TIMEOUT,
        }
    }

    /// Headers accepted from `trusted` peers.
    pub fn from(trusted: Vec<IpNet>) -> ProxyHeaders {
        ProxyHeaders {
            enabled: true,
            trusted,
            timeout: HEADER_TIMEOUT,
        }
    }

    /// The client of a connection from `peer`: the address its PROXY header names, or the
    /// peer itself. The stream is left at the client's first byte.
    pub async fn client(
        &self,
        stream: &mut TcpStream,
        peer: SocketAddr,
    ) -> Result<SocketAddr, HeaderRefused> {
        if !self.enabled {
            return Ok(peer);
        }
        tokio::time::timeout(self.timeout, self.read(stream, peer))
            .await
            .unwrap_or(Err(HeaderRefused::Timeout))
    }

    async fn read(
        &self,
        stream: &mut TcpStream,
        peer: SocketAddr,
    ) -> Result<SocketAddr, HeaderRefused> {
        let io = |e: std::io::Error| HeaderRefused::Io(e.to_string());
        let mut head = [0u8; 16];
        loop {
            let n = stream.peek(&mut head).await.map_err(io)?;
            let m = n.min(SIGNATURE.len());
            if n == 0 || head[..m] != SIGNATURE[..m] {
                // No header (or the client left): the server reads the stream as it is.
                return Ok(peer);
            }
            if n == head.len() {
                break;
            }
            tokio::time::sleep(PEEK_AGAIN).await;
        }
        if !self.trusted.iter().any(|n| n.contains(&peer.ip())) {
            return Err(HeaderRefused::Untrusted);
        }
        let len = 16 + usize::from(u16::from_be_bytes([head[14], head[15]]));
        if len > MAX_HEADER {
            return Err(HeaderRefused::TooLong);
        }
        let mut header = vec![0u8; len];
        stream.read_exact(&mut header).await.map_err(io)?;
        client_of(&header, peer)
    }
}

/// The client a complete v2 header names (`peer` for `LOCAL`, or an address family without
/// IP addresses).
fn client_of(bytes: &[u8], peer: SocketAddr) -> Result<SocketAddr, HeaderRefused> {
    use ppp::v2::{Addresses, Command, Header};
    let header = Header::try_from(bytes).map_err(|e| HeaderRefused::Malformed(e.to_string()))?;
    if header.command == Command::Local {
        return Ok(peer);
    }
    Ok(match header.addresses {
        Addresses::IPv4(a) => SocketAddr::from((a.source_address, a.source_port)),
        Addresses::IPv6(a) => SocketAddr::from((a.source_address, a.source_port)),
        Addresses::Unspecified | Addresses::Unix(_) => peer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// A v2 `PROXY` header for TCP from `src` to `dst` (by `ppp`'s builder; the integration
    /// tests build theirs by hand).
    fn v2_header(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
        use ppp::v2::{Builder, Command, Protocol, Version};
        Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, (src, dst))
            .build()
            .unwrap()
    }

    /// What `headers` makes of a connection on which the client sends `bytes` (then
    /// `rest`), and what the server reads after it.
    async fn accept_with(
        headers: &ProxyHeaders,
        bytes: Vec<u8>,
    ) -> (Result<SocketAddr, HeaderRefused>, Vec<u8>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&bytes).await.unwrap();
            s.shutdown().await.unwrap();
            // Held open until the server is done.
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink).await;
        });
        let (mut stream, peer) = listener.accept().await.unwrap();
        let result = headers.client(&mut stream, peer).await;
        let mut rest = Vec::new();
        if result.is_ok() {
            stream.read_to_end(&mut rest).await.unwrap();
        }
        drop(stream);
        client.await.unwrap();
        (result, rest)
    }

    fn loopback() -> Vec<IpNet> {
        vec!["127.0.0.0/8".parse().unwrap()]
    }

    #[tokio::test]
    async fn a_trusted_peer_names_the_client_and_the_stream_starts_after_the_header() {
        let client: SocketAddr = "203.0.113.7:41000".parse().unwrap();
        let mut bytes = v2_header(client, "10.0.0.1:3128".parse().unwrap());
        bytes.extend(b"GET http://x/ HTTP/1.1\r\n\r\n");
        let (got, rest) = accept_with(&ProxyHeaders::from(loopback()), bytes).await;
        assert_eq!(got, Ok(client));
        assert_eq!(rest, b"GET http://x/ HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn without_a_header_the_peer_is_the_client_and_nothing_is_consumed() {
        let bytes = b"GET http://x/ HTTP/1.1\r\n\r\n".to_vec();
        let (got, rest) = accept_with(&ProxyHeaders::from(loopback()), bytes.clone()).await;
        assert_eq!(got.unwrap().ip().to_string(), "127.0.0.1");
        assert_eq!(rest, bytes);
    }

    #[tokio::test]
    async fn an_untrusted_peer_sending_a_header_is_refused() {
        let client: SocketAddr = "203.0.113.7:41000".parse().unwrap();
        let bytes = v2_header(client, "10.0.0.1:3128".parse().unwrap());
        let others = vec!["10.0.0.0/8".parse().unwrap()];
        let (got, _) = accept_with(&ProxyHeaders::from(others), bytes).await;
        assert_eq!(got, Err(HeaderRefused::Untrusted));
    }

    #[tokio::test]
    async fn malformed_too_long_local_and_off() {
        let trusted = ProxyHeaders::from(loopback());
        // Version 3.
        let mut bad = v2_header("1.2.3.4:5".parse().unwrap(), "5.6.7.8:9".parse().unwrap());
        bad[12] = 0x31;
        let (got, _) = accept_with(&trusted, bad).await;
        assert!(matches!(got, Err(HeaderRefused::Malformed(_))), "{got:?}");
        // A length beyond the bound.
        let mut long = SIGNATURE.to_vec();
        long.extend([0x21, 0x11, 0xff, 0xff]);
        let (got, _) = accept_with(&trusted, long).await;
        assert_eq!(got, Err(HeaderRefused::TooLong));
        // LOCAL (a health check): the peer itself.
        let mut local = SIGNATURE.to_vec();
        local.extend([0x20, 0x00, 0, 0]);
        let (got, _) = accept_with(&trusted, local).await;
        assert_eq!(got.unwrap().ip().to_string(), "127.0.0.1");
        // A header that stops half-way: refused at the deadline.
        let partial = ProxyHeaders {
            timeout: Duration::from_millis(200),
            ..ProxyHeaders::from(loopback())
        };
        let (got, _) = accept_with(&partial, SIGNATURE[..10].to_vec()).await;
        assert_eq!(got, Err(HeaderRefused::Timeout));
        // Off: nothing is read, whatever comes.
        let header = v2_header("1.2.3.4:5".parse().unwrap(), "5.6.7.8:9".parse().unwrap());
        let (got, rest) = accept_with(&ProxyHeaders::off(), header.clone()).await;
        assert_eq!(got.unwrap().ip().to_string(), "127.0.0.1");
        assert_eq!(rest, header);
    }
}
