//! `--login oidc`: tollgate as an OpenID Connect relying party of the platform's IdP.
//!
//! - Discovery: `{issuer}/.well-known/openid-configuration`, whose `issuer` must equal the
//!   configured one exactly (OpenID Connect Discovery §4.3). Fetched at start, again while it
//!   has not succeeded (at most every [`RETRY_AFTER`]), and refreshed after
//!   [`DISCOVERY_TTL`] (the last good one stays in use while the IdP cannot be reached).
//! - The authorization code flow with PKCE (S256), `state` and a nonce, built and exchanged
//!   with the `oauth2` crate; its HTTP client is [`IdpHttp`], a direct hyper-util client
//!   (the IdP is the platform's own service, not egress) with the platform roots plus
//!   `--upstream-ca-file`, HTTP/1.1, no redirects, a timeout, a bounded body, and at most
//!   [`MAX_IDP_CALLS`] requests in flight (a callback costs one: anyone can send callbacks).
//! - The ID token is verified with `jsonwebtoken` against the IdP's JWKS (asymmetric
//!   algorithms only), checking `iss`, `aud` (and `azp` when there are several audiences),
//!   `exp` with a small leeway, and the nonce. The JWKS is cached in a
//!   [`crate::identity::jwks::KeyCache`] (shared with workload issuers); an unknown `kid`
//!   refetches it at most once per [`JWKS_REFETCH`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AsyncHttpClient, AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    EndpointNotSet, EndpointSet, ExtraTokenFields, HttpRequest, HttpResponse, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, StandardRevocableToken, StandardTokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use super::header::{roles_of, valid_name};
use super::session::LoginState;
use super::SignedIn;
use crate::config::login::OidcLogin;
use crate::identity::jwks::{claim as lookup, KeyCache, Lookup};

/// Time for one request to the IdP, connect to last body byte.
const IDP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest IdP response read (discovery, JWKS, token response).
const MAX_IDP_BODY: usize = 256 * 1024;
/// A failed discovery is retried on demand, at most this often.
const RETRY_AFTER: Duration = Duration::from_secs(10);
/// A good discovery is refreshed after this long (endpoints rarely move; they may).
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// Requests to the IdP in flight at once; beyond, a sign-in step fails at once.
const MAX_IDP_CALLS: usize = 64;
/// An unknown `kid` refetches the JWKS at most this often.
const JWKS_REFETCH: Duration = Duration::from_secs(60);
/// Clock skew tolerated on `exp`, `nbf` and `iat` (seconds).
const LEEWAY: u64 = 60;
/// The signature algorithms accepted for ID tokens (never `none` or an HMAC keyed with the
/// client secret).
const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Why a sign-in failed. Shown to the person as a generic message; logged in full.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The IdP could not be reached, timed out or answered with an error status.
    #[error("IdP request failed: {0}")]
    Http(String),
    /// Discovery said something unusable.
    #[error("discovery: {0}")]
    Discovery(String),
    /// The code exchange failed.
    #[error("token exchange: {0}")]
    Exchange(String),
    /// The ID token did not verify.
    #[error("ID token: {0}")]
    IdToken(String),
    /// A claim the settings name is missing or unusable.
    #[error("ID token claim {0:?} is missing or not a usable name")]
    Claim(String),
}

/// The endpoints discovery gave (the IdP's OpenID configuration, the parts tollgate uses).
#[derive(Debug, Clone, Deserialize)]
pub struct Discovered {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Vec<String>,
}

/// The token response's `id_token`, which `oauth2`'s standard response does not keep.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IdTokenField {
    id_token: Option<String>,
}
impl ExtraTokenFields for IdTokenField {}

type IdTokenResponse = StandardTokenResponse<IdTokenField, BasicTokenType>;

/// The `oauth2` client with the authorization and token endpoints set, keeping `id_token`.
type RpClient = oauth2::Client<
    BasicErrorResponse,
    IdTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// The last good discovery with when it was fetched, and when a fetch was last tried (to
/// space out retries).
type DiscoveryCache = (Option<(Arc<Discovered>, Instant)>, Option<Instant>);

/// The relying party.
pub struct Oidc {
    /// What `--login-oidc-*` said.
    cfg: OidcLogin,
    /// `{public_url}/login/callback`.
    redirect_uri: String,
    /// Talks to the IdP.
    http: IdpHttp,
    /// The last good discovery, and when discovery was last tried.
    discovered: Mutex<DiscoveryCache>,
    /// The IdP's signing keys.
    jwks: KeyCache,
}

impl Oidc {
    /// A relying party for `cfg`, reaching the IdP with `tls` (platform roots plus
    /// `--upstream-ca-file`).
    pub fn new(cfg: OidcLogin, public_url: &str, tls: rustls::ClientConfig) -> Oidc {
        Oidc {
            cfg,
            redirect_uri: format!("{public_url}/login/callback"),
            http: IdpHttp::new(tls),
            discovered: Mutex::new((None, None)),
            // A failed fetch is retried on the next sign-in (sign-ins are few).
            jwks: KeyCache::new(JWKS_REFETCH, Duration::ZERO),
        }
    }

    /// The issuer (for logs).
    pub fn issuer(&self) -> &str {
        &self.cfg.issuer
    }

    /// Discovery: the cached one while fresh, else fetched now (unless a fetch failed moments
    /// ago); a failed refresh keeps the last good one.
    pub async fn discover(&self) -> Result<Arc<Discovered>, OidcError> {
        let mut d = self.discovered.lock().await;
        let good = d.0.as_ref().map(|(found, _)| found.clone());
        if let Some((found, at)) = &d.0 {
            if at.elapsed() < DISCOVERY_TTL {
                return Ok(found.clone());
            }
        }
        if d.1.is_some_and(|at| at.elapsed() < RETRY_AFTER) {
            return good.ok_or_else(|| {
                OidcError::Discovery(
                    "failed moments ago (see the log above); retried shortly".into(),
                )
            });
        }
        d.1 = Some(Instant::now());
        match self.fetch_discovery().await {
            Ok(found) => {
                let found = Arc::new(found);
                d.0 = Some((found.clone(), Instant::now()));
                Ok(found)
            }
            Err(e) => match good {
                Some(found) => {
                    tracing::warn!(error = %e, "OIDC discovery refresh failed; keeping the last one");
                    Ok(found)
                }
                None => Err(e),
            },
        }
    }

    /// `{issuer}/.well-known/openid-configuration`, checked.
    async fn fetch_discovery(&self) -> Result<Discovered, OidcError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.cfg.issuer.trim_end_matches('/')
        );
        let body = self.http.get(&url).await?;
        let found: Discovered = serde_json::from_slice(&body)
            .map_err(|e| OidcError::Discovery(format!("not an OpenID configuration: {e}")))?;
        if found.issuer != self.cfg.issuer {
            return Err(OidcError::Discovery(format!(
                "the IdP calls itself {:?}, not {:?}",
                found.issuer, self.cfg.issuer
            )));
        }
        let tls_required = self.cfg.issuer.starts_with("https://");
        for (what, url) in [
            ("authorization_endpoint", &found.authorization_endpoint),
            ("token_endpoint", &found.token_endpoint),
            ("jwks_uri", &found.jwks_uri),
        ] {
            if !(url.starts_with("https://") || !tls_required && url.starts_with("http://")) {
                return Err(OidcError::Discovery(format!(
                    "{what} {url:?} is not an https URL"
                )));
            }
        }
        Ok(found)
    }

    fn client(&self, d: &Discovered) -> Result<RpClient, OidcError> {
        let bad = |e: &dyn std::fmt::Display| OidcError::Discovery(e.to_string());
        let mut client = oauth2::Client::new(ClientId::new(self.cfg.client_id.clone()))
            .set_auth_uri(AuthUrl::new(d.authorization_endpoint.clone()).map_err(|e| bad(&e))?)
            .set_token_uri(TokenUrl::new(d.token_endpoint.clone()).map_err(|e| bad(&e))?)
            .set_redirect_uri(RedirectUrl::new(self.redirect_uri.clone()).map_err(|e| bad(&e))?);
        if let Some(secret) = &self.cfg.client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.clone()));
            // `client_secret_basic` is the default (and what discovery assumes when silent).
            let methods = &d.token_endpoint_auth_methods_supported;
            if !methods.is_empty()
                && !methods.iter().any(|m| m == "client_secret_basic")
                && methods.iter().any(|m| m == "client_secret_post")
            {
                client = client.set_auth_type(AuthType::RequestBody);
            }
        }
        Ok(client)
    }

    /// The IdP's authorization URL for a sign-in in progress.
    pub async fn authorize_url(&self, login: &LoginState) -> Result<String, OidcError> {
        let d = self.discover().await?;
        let client = self.client(&d)?;
        let state = login.state.clone();
        let verifier = PkceCodeVerifier::new(login.verifier.clone());
        let (url, _) = client
            .authorize_url(move || CsrfToken::new(state))
            .add_scope(Scope::new("openid".into()))
            .add_scopes(self.cfg.scopes.iter().cloned().map(Scope::new))
            .set_pkce_challenge(PkceCodeChallenge::from_code_verifier_sha256(&verifier))
            .add_extra_param("nonce", login.nonce.clone())
            .url();
        Ok(url.to_string())
    }

    /// Exchanges `code` and verifies the ID token: who signed in.
    pub async fn finish(&self, login: &LoginState, code: &str) -> Result<SignedIn, OidcError> {
        let d = self.discover().await?;
        let client = self.client(&d)?;
        let resp = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .set_pkce_verifier(PkceCodeVerifier::new(login.verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Exchange(describe(&e)))?;
        let id_token = resp
            .extra_fields()
            .id_token
            .as_deref()
            .ok_or_else(|| OidcError::IdToken("the token response has no id_token".into()))?;
        let claims = self.verify(&d, id_token, &login.nonce).await?;
        self.signed_in(&claims)
    }

    /// The claims of a verified ID token.
    async fn verify(
        &self,
        d: &Discovered,
        id_token: &str,
        nonce: &str,
    ) -> Result<Map<String, Value>, OidcError> {
        let bad = |e: &dyn std::fmt::Display| OidcError::IdToken(e.to_string());
        let header = jsonwebtoken::decode_header(id_token).map_err(|e| bad(&e))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(bad(&format!("algorithm {:?} is not accepted", header.alg)));
        }
        let jwk = self.key(d, header.kid.as_deref(), header.alg).await?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| bad(&e))?;
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&self.cfg.issuer]);
        v.set_audience(&[&self.cfg.client_id]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.leeway = LEEWAY;
        v.validate_nbf = true;
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(id_token, &key, &v).map_err(|e| bad(&e))?;
        let claims = data.claims;
        let token_nonce = claims.get("nonce").and_then(Value::as_str);
        if token_nonce.map(str::as_bytes) != Some(nonce.as_bytes()) {
            return Err(bad(&"the nonce is not this sign-in's"));
        }
        // With several audiences, the token must have been issued to tollgate (Core §3.1.3.7).
        if claims
            .get("aud")
            .and_then(Value::as_array)
            .is_some_and(|a| a.len() > 1)
            && claims.get("azp").and_then(Value::as_str) != Some(self.cfg.client_id.as_str())
        {
            return Err(bad(&"several audiences and azp is not tollgate"));
        }
        Ok(claims)
    }

    /// The signing key for `kid` (or the only key fit for `alg` when the token names none),
    /// refetching the JWKS once when it is not known.
    async fn key(
        &self,
        d: &Discovered,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Jwk, OidcError> {
        if let Lookup::Fetch = self.jwks.lookup(kid, alg) {
            self.jwks
                .refresh(|| async { self.http.get(&d.jwks_uri).await.map_err(|e| e.to_string()) })
                .await
                .map_err(OidcError::Http)?;
        }
        match self.jwks.lookup(kid, alg) {
            Lookup::Found(jwk) => Ok(*jwk),
            _ => Err(OidcError::IdToken(format!(
                "no key {kid:?} in the IdP's JWKS"
            ))),
        }
    }

    /// The signed-in person the claims name.
    fn signed_in(&self, claims: &Map<String, Value>) -> Result<SignedIn, OidcError> {
        let name = |claim: &str| {
            lookup(claims, claim)
                .and_then(Value::as_str)
                .and_then(valid_name)
                .map(str::to_string)
                .ok_or_else(|| OidcError::Claim(claim.to_string()))
        };
        let user = name(&self.cfg.user_claim)?;
        let org = match &self.cfg.org_claim {
            None => None,
            Some(c) => Some(name(c)?),
        };
        let roles = match &self.cfg.roles_claim {
            None => Vec::new(),
            Some(c) => {
                let roles = match lookup(claims, c) {
                    None => Some(Vec::new()),
                    Some(Value::String(s)) => roles_of(s.split([' ', ','])),
                    Some(Value::Array(a)) => {
                        let strings: Option<Vec<&str>> = a.iter().map(Value::as_str).collect();
                        strings.and_then(|s| roles_of(s.into_iter()))
                    }
                    Some(_) => None,
                };
                roles.ok_or_else(|| OidcError::Claim(c.clone()))?
            }
        };
        Ok(SignedIn { user, org, roles })
    }
}

/// An `oauth2` error, without anything secret (the crate's messages carry no token).
fn describe<RE: std::error::Error + 'static>(
    e: &oauth2::RequestTokenError<RE, BasicErrorResponse>,
) -> String {
    match e {
        oauth2::RequestTokenError::ServerResponse(r) => format!("the IdP answered {}", r.error()),
        oauth2::RequestTokenError::Request(e) => e.to_string(),
        oauth2::RequestTokenError::Parse(e, _) => format!("unparsable token response: {e}"),
        oauth2::RequestTokenError::Other(s) => s.clone(),
    }
}

/// The HTTP client for the IdP.
pub struct IdpHttp {
    /// Pooled connections to the IdP.
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// [`MAX_IDP_CALLS`] permits.
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl IdpHttp {
    fn new(mut tls: rustls::ClientConfig) -> IdpHttp {
        // HTTP/1.1 only: hyper-rustls refuses a config with ALPN already set, and offers none
        // for HTTP/1-only connectors.
        tls.alpn_protocols = Vec::new();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(IDP_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        IdpHttp {
            client: Client::builder(TokioExecutor::new()).build(connector),
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IDP_CALLS)),
        }
    }

    /// Sends `req`, reads at most [`MAX_IDP_BODY`] bytes, within [`IDP_TIMEOUT`].
    async fn send(&self, req: HttpRequest) -> Result<HttpResponse, OidcError> {
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return Err(OidcError::Http(format!(
                "{MAX_IDP_CALLS} requests to the IdP already in flight"
            )));
        };
        let (parts, body) = req.into_parts();
        let req = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| OidcError::Http(e.to_string()))?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_IDP_BODY)
                .collect()
                .await
                .map_err(|e| OidcError::Http(format!("reading the response: {e}")))?
                .to_bytes();
            Ok(HttpResponse::from_parts(parts, body.to_vec()))
        };
        tokio::time::timeout(IDP_TIMEOUT, exchange)
            .await
            .map_err(|_| OidcError::Http("timed out".into()))?
    }

    /// `GET url` → the body of a 200.
    async fn get(&self, url: &str) -> Result<Vec<u8>, OidcError> {
        let req = http::Request::get(url)
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|e| OidcError::Http(format!("{url:?}: {e}")))?;
        let resp = self.send(req).await?;
        if resp.status() != http::StatusCode::OK {
            return Err(OidcError::Http(format!("{url} answered {}", resp.status())));
        }
        Ok(resp.into_body())
    }
}

impl<'c> AsyncHttpClient<'c> for IdpHttp {
    type Error = OidcError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, OidcError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_claims() {
        let claims: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "sub": "u1", "realm_access": {"roles": ["a", "b"]}, "https://x.example/org": "acme"
        }))
        .unwrap();
        assert_eq!(lookup(&claims, "sub"), Some(&Value::from("u1")));
        assert_eq!(
            lookup(&claims, "realm_access.roles")
                .and_then(Value::as_array)
                .map(Vec::len),
            Some(2)
        );
        assert_eq!(
            lookup(&claims, "https://x.example/org"),
            Some(&Value::from("acme"))
        );
        assert_eq!(lookup(&claims, "realm_access.missing"), None);
    }
}
