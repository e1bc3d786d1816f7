//! The parent proxy (`--upstream-proxy URL`): direct routes reach the network through a
//! corporate HTTP proxy.
//!
//! tollgate still resolves the name once and the address guard checks every answer
//! ([`super::direct`]); only then, instead of connecting to the checked address, it connects
//! to the parent and asks it to `CONNECT` to that address (an IP literal, never the name, so
//! the parent cannot resolve it elsewhere). Whatever runs on the connection afterwards —
//! a tunnel's bytes, TLS to the origin, a forwarded or injected request — runs inside that
//! `CONNECT`: nothing is ever sent to the parent as an absolute-form request, so a token
//! injected into a request over TLS to the origin is never visible to the parent.
//!
//! The URL may carry Basic credentials (`http://user:password@proxy:3128`); they are kept
//! only as the ready `Proxy-Authorization` value, never shown by `Debug` or `Display`.

use std::io;
use std::net::SocketAddr;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::DirectDialer;

/// Largest `CONNECT` response head accepted from the parent.
const MAX_HEAD: usize = 8 * 1024;

/// A parent HTTP proxy.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamProxy {
    /// The parent's host (name or IP literal, as written).
    host: String,
    /// The parent's port.
    port: u16,
    /// `Basic base64(user:password)` when the URL has credentials.
    auth: Option<String>,
}

impl std::fmt::Display for UpstreamProxy {
    /// `http://host:port`, without the credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}:{}", self.host, self.port)
    }
}

impl std::fmt::Debug for UpstreamProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamProxy")
            .field("url", &self.to_string())
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl UpstreamProxy {
    /// Parses `http://[user[:password]@]host[:port]` (port 3128 when omitted; percent-encoded
    /// credentials decoded). Errors never repeat the URL, which may hold a password.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or("the upstream proxy URL must start with http://")?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err("the upstream proxy URL must have no path".into());
        }
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let authority: http::uri::Authority = hostport
            .parse()
            .map_err(|_| "the upstream proxy URL has an invalid host")?;
        let port = match crate::policy::authority_port(authority.as_str()) {
            Ok(p) => p.unwrap_or(3128),
            Err(_) => return Err("the upstream proxy URL has an invalid port".into()),
        };
        let host = authority.host();
        if host.is_empty() {
            return Err("the upstream proxy URL has no host".into());
        }
        let auth = match userinfo {
            None => None,
            Some(u) => {
                let decoded = percent_decode(u)
                    .ok_or("the upstream proxy URL has invalid percent-encoding")?;
                let b64 = base64::engine::general_purpose::STANDARD.encode(decoded);
                Some(format!("Basic {b64}"))
            }
        };
        Ok(UpstreamProxy {
            host: host.trim_start_matches('[').trim_end_matches(']').into(),
            port,
            auth,
        })
    }

    /// The `CONNECT` request for `target`.
    fn connect_request(&self, target: SocketAddr) -> String {
        let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(a) = &self.auth {
            req.push_str("Proxy-Authorization: ");
            req.push_str(a);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        req
    }

    /// A connection to `target` through the parent: TCP to the parent, `CONNECT target`,
    /// a `2xx` answer. The response head is read byte by byte, so no byte the origin sends
    /// first (an SSH or SMTP banner) is lost.
    pub async fn connect(&self, target: SocketAddr) -> io::Result<TcpStream> {
        let mut stream = TcpStream::connect((self.host.as_str(), self.port)).await?;
        stream.set_nodelay(true)?;
        stream
            .write_all(self.connect_request(target).as_bytes())
            .await?;
        let mut head = Vec::with_capacity(256);
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() >= MAX_HEAD {
                return Err(io::Error::other(format!(
                    "upstream proxy {self}: response head over {MAX_HEAD} bytes"
                )));
            }
            if stream.read(&mut byte).await? == 0 {
                return Err(io::Error::other(format!(
                    "upstream proxy {self} closed the connection before answering CONNECT"
                )));
            }
            head.push(byte[0]);
        }
        let line = head
            .split(|&b| b == b'\r')
            .next()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        let status = line.split(' ').nth(1).unwrap_or_default();
        if status.len() == 3 && status.starts_with('2') {
            return Ok(stream);
        }
        Err(io::Error::other(format!(
            "upstream proxy {self} refused CONNECT: {}",
            line.chars().take(200).collect::<String>()
        )))
    }
}

impl DirectDialer {
    /// Reaches checked addresses through `parent` instead of connecting to them directly.
    pub fn with_upstream_proxy(mut self, parent: Option<UpstreamProxy>) -> Self {
        if let Some(p) = &parent {
            tracing::info!(parent = %p, "direct routes go through the upstream proxy");
        }
        self.parent = parent.map(std::sync::Arc::new);
        self
    }

    /// A connection to the checked address `addr`: through the parent when there is one and
    /// `parent` is true (false: the policy has `upstream_proxy = false`), else directly.
    pub(super) async fn open(&self, addr: SocketAddr, parent: bool) -> io::Result<TcpStream> {
        match &self.parent {
            Some(p) if parent => p.connect(addr).await,
            _ => TcpStream::connect(addr).await,
        }
    }
}

/// `%XX` decoding; `None` for a malformed escape.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_never_show_the_password() {
        let p = UpstreamProxy::parse("http://bob:s%40cret@proxy.corp:8080/").unwrap();
        assert_eq!(p.to_string(), "http://proxy.corp:8080");
        let debug = format!("{p:?}");
        assert!(
            !debug.contains("cret") && !debug.contains("Ym9i"),
            "{debug}"
        );
        let req = p.connect_request("10.0.0.1:443".parse().unwrap());
        let b64 = base64::engine::general_purpose::STANDARD.encode("bob:s@cret");
        assert_eq!(
            req,
            format!(
                "CONNECT 10.0.0.1:443 HTTP/1.1\r\nHost: 10.0.0.1:443\r\n\
                 Proxy-Authorization: Basic {b64}\r\n\r\n"
            )
        );
        let p = UpstreamProxy::parse("http://[::1]").unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.auth.is_none()),
            ("::1", 3128, true)
        );
        let req = p.connect_request("[2001:db8::1]:443".parse().unwrap());
        assert!(
            req.starts_with("CONNECT [2001:db8::1]:443 HTTP/1.1\r\n"),
            "{req}"
        );
        for bad in [
            "https://proxy:3128",
            "proxy:3128",
            "http://u:secret@proxy:0",
            "http://u:secret@proxy/path",
            "http://u:%zz@proxy",
        ] {
            let e = UpstreamProxy::parse(bad).unwrap_err();
            assert!(!e.contains("secret"), "{e}");
        }
    }
}
