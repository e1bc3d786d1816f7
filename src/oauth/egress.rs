//! tollgate's own outbound HTTP calls to OAuth providers (token, refresh, revocation), sent
//! the way a caller's request would be: the URL must be allowed by the app's `egress_policy`
//! (`PolicySet::decide_in_policy`, deny rules first), the destination is dialed through the
//! [`Router`] on the policy's route (direct: resolve once, address guard, dial the checked
//! address; agent: through the relay), TLS is verified
//! against the upstream roots, no redirect is ever followed, and nothing here passes through
//! token injection. One request per connection: these calls are rare and short.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, HOST};
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::policy::watch::Policies;
use crate::policy::{Decision, DenyReason, Host};
use crate::route::{DialError, Router};

/// How long a finished provider connection may take to close cleanly before it is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest response body accepted from a provider: token responses are a few hundred bytes;
/// anything near this is not a token response and must not be buffered without bound.
const MAX_RESPONSE_BODY: usize = 1024 * 1024;

/// Why an outbound call to a provider failed before an HTTP response arrived.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// The URL is not an absolute http(s) URL.
    #[error("invalid URL {0:?}")]
    BadUrl(String),
    /// The app's egress policy does not allow the destination.
    #[error("egress policy {policy:?} does not allow {target} ({reason})")]
    Denied {
        /// The policy.
        policy: String,
        /// `host:port`.
        target: String,
        /// The decision's reason.
        reason: DenyReason,
    },
    /// The route could not be dialed: resolution, the address guard or the connection
    /// failed, or the agent is not connected or could not open the tunnel.
    #[error(transparent)]
    Dial(#[from] DialError),
    /// The TLS handshake failed (certificate not trusted, wrong name, ...).
    #[error("TLS with {host}: {detail}")]
    Tls {
        /// The server name.
        host: String,
        /// The handshake error.
        detail: String,
    },
    /// The HTTP exchange failed.
    #[error("HTTP exchange failed: {0}")]
    Http(String),
    /// No complete response within the timeout.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// The provider answered with a server error (5xx): transient by definition.
    #[error("provider answered HTTP {0}")]
    ServerError(u16),
}

/// Sends requests to providers through tollgate's own egress path.
pub struct Egress {
    /// The live policy set; every call is decided against the app's `egress_policy`.
    policies: Arc<Policies>,
    /// Dials the policy's route (direct behind the address guard, or through an agent).
    router: Arc<Router>,
    /// Roots for `https://` provider endpoints (webpki roots plus `--upstream-ca-file`).
    tls: Arc<rustls::ClientConfig>,
    /// Budget for one whole call (dial, TLS, request, response body).
    timeout: Duration,
}

impl Egress {
    /// An egress path dialing through `router`, deciding with `policies`.
    pub fn new(
        policies: Arc<Policies>,
        router: Arc<Router>,
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Self {
        Egress {
            policies,
            router,
            tls,
            timeout,
        }
    }

    /// Sends `req` (absolute URI) under `policy` for a caller of `org` and returns the whole
    /// response. Redirects are returned as they are, never followed.
    pub async fn send(
        &self,
        policy: &str,
        org: &str,
        req: Request<Vec<u8>>,
    ) -> Result<Response<Vec<u8>>, EgressError> {
        match tokio::time::timeout(self.timeout, self.send_inner(policy, org, req)).await {
            Ok(r) => r,
            Err(_) => Err(EgressError::Timeout(self.timeout)),
        }
    }

    async fn send_inner(
        &self,
        policy: &str,
        org: &str,
        req: Request<Vec<u8>>,
    ) -> Result<Response<Vec<u8>>, EgressError> {
        let uri = req.uri().clone();
        let bad = || EgressError::BadUrl(uri.to_string());
        let (tls, host, port) = super::endpoint::endpoint(&uri.to_string()).map_err(|_| bad())?;
        let auth = uri.authority().ok_or_else(bad)?;
        let decision = self
            .policies
            .current()
            .decide_in_policy(policy, org, &host, port);
        let reach = decision.reach();
        let route = match decision {
            Decision::Allow { route, .. } => route,
            Decision::Deny { reason, .. } => {
                return Err(EgressError::Denied {
                    policy: policy.to_string(),
                    target: format!("{host}:{port}"),
                    reason,
                })
            }
        };
        // Direct: resolve once, guard, dial. Agent: the agent resolves and applies its own
        // allowlist, as for every other use of an agent route.
        let stream = self.router.connect(&route, &reach, &host, port).await?;
        let (mut parts, body) = req.into_parts();
        // Origin-form on the wire; Host from the URL, never from the caller.
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        parts.uri = Uri::try_from(path).map_err(|_| bad())?;
        let host_header = HeaderValue::from_str(auth.as_str()).map_err(|_| bad())?;
        parts.headers.insert(HOST, host_header);
        let req = Request::from_parts(parts, Full::new(Bytes::from(body)));
        if tls {
            let name = match &host {
                Host::Name(n) => rustls::pki_types::ServerName::try_from(n.clone()),
                Host::Ip(ip) => Ok(rustls::pki_types::ServerName::IpAddress((*ip).into())),
            }
            .map_err(|_| bad())?;
            let tls_stream = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, stream)
                .await
                .map_err(|e| EgressError::Tls {
                    host: host.to_string(),
                    detail: e.to_string(),
                })?;
            exchange(tls_stream, req).await
        } else {
            exchange(stream, req).await
        }
    }
}

/// One HTTP/1.1 request on a fresh connection; the response body is read whole (bounded).
async fn exchange<IO>(io: IO, req: Request<Full<Bytes>>) -> Result<Response<Vec<u8>>, EgressError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| EgressError::Http(e.to_string()))?;
    // A clean close once the exchange is over: our half-close first (FIN, TLS close_notify,
    // or the end of an agent's stream), then whatever the peer still sends, up to its own
    // close. Dropping the connection at once would reset an agent's stream before the
    // agent saw the end, and the agent would log the tunnel as failed. Bounded.
    tokio::spawn(tokio::time::timeout(CLOSE_TIMEOUT, async move {
        let Ok(parts) = conn.without_shutdown().await else {
            return;
        };
        let mut io = parts.io.into_inner();
        if io.shutdown().await.is_err() {
            return;
        }
        let mut sink = [0u8; 1024];
        while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
    }));
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| EgressError::Http(e.to_string()))?;
    drop(send);
    let (parts, body) = resp.into_parts();
    let body = Limited::new(body, MAX_RESPONSE_BODY)
        .collect()
        .await
        .map_err(|e| EgressError::Http(format!("reading the response: {e}")))?
        .to_bytes();
    Ok(Response::from_parts(parts, body.to_vec()))
}

/// Workload issuers' JWKS (`[[identity.issuer]]`) are fetched as provider calls are: under
/// the entry's `egress_policy`, behind the address guard, no redirects.
impl crate::identity::JwksFetch for Egress {
    fn get<'a>(
        &'a self,
        policy: &'a str,
        org: &'a str,
        url: &'a str,
    ) -> crate::identity::issuer::FetchFuture<'a> {
        Box::pin(async move {
            let req = Request::get(url)
                .header(http::header::ACCEPT, "application/json")
                .body(Vec::new())
                .map_err(|e| format!("{url:?}: {e}"))?;
            let resp = self
                .send(policy, org, req)
                .await
                .map_err(|e| e.to_string())?;
            if resp.status() != http::StatusCode::OK {
                return Err(format!("{url} answered {}", resp.status()));
            }
            Ok(resp.into_body())
        })
    }
}
