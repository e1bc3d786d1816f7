//! Upgrade requests (WebSocket handshakes): each goes on a connection of its own, never a
//! pooled one, because after the upstream's `101` the connection is no longer HTTP and belongs
//! to the upgraded stream for its whole life.
//!
//! The connection is dialed like a tunnel's ([`Router::connect`]: the address guard on direct
//! routes, the agent's allowlist on agent routes), TLS is added for `https` URIs (verified as
//! the pools verify, ALPN `http/1.1` only: HTTP/2 has no `Upgrade`), and the request is sent
//! with hyper's HTTP/1.1 client connection with upgrades enabled, so the caller can take the
//! upgraded stream from the response with `hyper::upgrade::on`.

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderValue, HOST};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{tls_error, DirectError, Router, SendError, UpstreamBody};
use crate::policy::{authority_port, normalize_host, Host, Reach, Route};

/// What an upgrade connection needs besides the dialer.
pub(super) struct Upgrades {
    /// Verifies `https` upstreams; ALPN offers `http/1.1` only.
    tls: Arc<rustls::ClientConfig>,
    /// Time the upstream has to answer the handshake (as for pooled requests).
    response_timeout: Duration,
}

impl Upgrades {
    /// Upgrades verified with `tls` (its ALPN replaced), answered within `response_timeout`.
    pub(super) fn new(mut tls: rustls::ClientConfig, response_timeout: Duration) -> Self {
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Upgrades {
            tls: Arc::new(tls),
            response_timeout,
        }
    }
}

impl Router {
    /// Sends the upgrade request `req` (absolute `http` or `https` URI, headers prepared, its
    /// `Connection: upgrade` and `Upgrade` kept) on `route` over a new, unpooled HTTP/1.1
    /// connection. A `101` response carries the upgrade: `hyper::upgrade::on` yields the
    /// upstream stream.
    pub async fn upgrade(
        &self,
        route: &Route,
        reach: &Reach,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, SendError> {
        let timeout = self.upgrades.response_timeout;
        // Boxed: inline, this rare path's 5 KB would size the future of every request that
        // could take it (and the slot hyper keeps per client connection for that future).
        let upgrade = Box::pin(self.upgrade_inner(route, reach, req));
        match tokio::time::timeout(timeout, upgrade).await {
            Err(_) => Err(SendError::Timeout(timeout)),
            Ok(r) => r,
        }
    }

    async fn upgrade_inner(
        &self,
        route: &Route,
        reach: &Reach,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, SendError> {
        let (host, port, tls) = target(req.uri())?;
        let conn = self.connect(route, reach, &host, port).await?;
        // Origin-form on the wire, `Host` from the URI where the request has none
        // (intercepted requests; forwarded ones carry the one the policy saw).
        if !req.headers().contains_key(HOST) {
            if let Some(auth) = req.uri().authority() {
                let value = HeaderValue::from_str(auth.as_str())
                    .map_err(|_| SendError::Upstream("invalid authority".into()))?;
                req.headers_mut().insert(HOST, value);
            }
        }
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(path);
        if !tls {
            return exchange(conn, req).await;
        }
        let name = match &host {
            Host::Name(n) => rustls::pki_types::ServerName::try_from(n.clone())
                .map_err(|e| SendError::Upstream(format!("server name {n}: {e}")))?,
            Host::Ip(ip) => rustls::pki_types::ServerName::IpAddress((*ip).into()),
        };
        let stream = tokio_rustls::TlsConnector::from(self.upgrades.tls.clone())
            .connect(name, conn)
            .await
            .map_err(|e| match tls_error(&e) {
                Some(t) => SendError::Tls {
                    certificate: matches!(
                        t,
                        rustls::Error::InvalidCertificate(_)
                            | rustls::Error::InvalidCertRevocationList(_)
                    ),
                    detail: t.to_string(),
                },
                None => SendError::Upstream(format!("TLS handshake: {e}")),
            })?;
        exchange(stream, req).await
    }
}

/// The host, port and whether TLS is needed, from an absolute URI built by tollgate.
fn target(uri: &Uri) -> Result<(Host, u16, bool), SendError> {
    let bad = |detail: &str| {
        SendError::Dial(
            DirectError::Dns {
                host: uri.to_string(),
                detail: detail.into(),
            }
            .into(),
        )
    };
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(bad("not an absolute http(s) URI")),
    };
    let auth = uri.authority().ok_or_else(|| bad("no authority"))?;
    let port = authority_port(auth.as_str())
        .map_err(|_| bad("invalid port"))?
        .unwrap_or(if tls { 443 } else { 80 });
    let host = normalize_host(auth.host()).map_err(|e| bad(&e.to_string()))?;
    Ok((host, port, tls))
}

/// One request on `io` with upgrades enabled; the connection task runs until the exchange
/// (or the upgraded stream, once taken) is over.
async fn exchange<IO>(io: IO, req: Request<UpstreamBody>) -> Result<Response<Incoming>, SendError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| SendError::Upstream(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upgrade connection to the upstream failed");
        }
    });
    send.send_request(req)
        .await
        .map_err(|e| SendError::Upstream(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_come_from_the_absolute_uri() {
        let t = |u: &str| target(&u.parse().unwrap()).map(|(h, p, tls)| (h.to_string(), p, tls));
        assert_eq!(
            t("http://Example.com/ws").unwrap(),
            ("example.com".into(), 80, false)
        );
        assert_eq!(
            t("https://example.com:8443/ws").unwrap(),
            ("example.com".into(), 8443, true)
        );
        assert_eq!(t("https://[::1]/").unwrap(), ("[::1]".into(), 443, true));
        assert!(t("/ws").is_err());
    }
}
