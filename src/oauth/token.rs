//! Talking to a provider with the `oauth2` crate: the authorization URL, the code exchange
//! and the refresh; plus RFC 7009 revocation (by hand, see [`TokenClient::revoke`]); all sent
//! through [`Egress`] (the app's policy, the
//! address guard, no redirects, never through injection).
//!
//! Real providers bend RFC 6749 §5.1 in ways the `oauth2` crate rejects: `expires_in` as a
//! string, `token_type` missing, errors delivered with status 200, JSON sent as `text/plain`.
//! Rather than fork the crate's response types, the custom HTTP client ([`ProviderHttp`])
//! normalizes the response before the crate parses it ([`normalize_response`]): the crate
//! still owns the protocol (request encoding, client authentication, PKCE, error parsing),
//! and the leniency lives in one small, tested function. A 5xx is reported as a transport
//! failure, so it is always treated as transient.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use base64::Engine as _;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::StatusCode;
use oauth2::basic::BasicClient;
use oauth2::{
    AsyncHttpClient, AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    EndpointNotSet, EndpointSet, HttpRequest, HttpResponse, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, RefreshToken, RequestTokenError, Scope, TokenResponse, TokenUrl,
};
use serde_json::{Map, Value};

use super::egress::{Egress, EgressError};
use super::grant::{seconds, Grant, TokenError};
use super::webhook::{Inputs, Template, Webhook};
use crate::store::{App, ClientAuth, Handshake, Secret, TokenSet};

/// The `oauth2` client type for one app: authorization and token endpoints set.
type AppClient =
    BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// The client that only builds authorization URLs: webhook-handshake apps have no token
/// endpoint for the crate to know.
type AuthorizeClient =
    BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet>;

/// Builds authorization URLs and talks to token and revocation endpoints.
pub struct TokenClient {
    /// The egress path every provider call takes.
    egress: Arc<Egress>,
    /// `{public_url}/oauth/callback`, the same for every app.
    redirect_uri: String,
}

impl TokenClient {
    /// A client sending through `egress`, with the redirect URI of this deployment.
    pub fn new(egress: Arc<Egress>, redirect_uri: String) -> Self {
        TokenClient {
            egress,
            redirect_uri,
        }
    }

    /// The redirect URI registered at providers.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    fn client(&self, app: &App) -> Result<AppClient, TokenError> {
        let token_url = app
            .token_url
            .clone()
            .ok_or_else(|| TokenError::Config(format!("app {:?} has no token_url", app.id)))?;
        let token_url = TokenUrl::new(token_url)
            .map_err(|e| TokenError::Config(format!("token_url of app {:?}: {e}", app.id)))?;
        Ok(self.authorize_client(app)?.set_token_uri(token_url))
    }

    fn authorize_client(&self, app: &App) -> Result<AuthorizeClient, TokenError> {
        let cfg = |what: &str, e: &dyn std::fmt::Display| {
            TokenError::Config(format!("{what} of app {:?}: {e}", app.id))
        };
        let mut client = BasicClient::new(ClientId::new(app.client_id.clone()))
            .set_auth_uri(
                AuthUrl::new(app.authorize_url.clone()).map_err(|e| cfg("authorize_url", &e))?,
            )
            .set_redirect_uri(
                RedirectUrl::new(self.redirect_uri.clone()).map_err(|e| cfg("redirect_uri", &e))?,
            )
            .set_auth_type(match app.client_auth {
                ClientAuth::Basic => AuthType::BasicAuth,
                ClientAuth::Post => AuthType::RequestBody,
            });
        if let Some(secret) = &app.client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.expose().to_string()));
        }
        Ok(client)
    }

    /// The provider URL the user's browser is sent to: `response_type=code`, `client_id`,
    /// `redirect_uri`, `state`, the S256 challenge of `pkce_verifier` when given, `scope`
    /// (space-separated, omitted when empty) and the app's `authorize_params`.
    pub fn authorize_url(
        &self,
        app: &App,
        state: &str,
        pkce_verifier: Option<&Secret>,
    ) -> Result<String, TokenError> {
        let client = self.authorize_client(app)?;
        let state = state.to_string();
        let mut req = client
            .authorize_url(move || CsrfToken::new(state))
            .add_scopes(app.scopes.iter().cloned().map(Scope::new));
        if let Some(v) = pkce_verifier {
            let verifier = PkceCodeVerifier::new(v.expose().to_string());
            req = req.set_pkce_challenge(PkceCodeChallenge::from_code_verifier_sha256(&verifier));
        }
        for (k, v) in &app.authorize_params {
            req = req.add_extra_param(k.clone(), v.clone());
        }
        let (url, _) = req.url();
        Ok(url.to_string())
    }

    /// Exchanges an authorization code (RFC 6749 §4.1.3, or the app's webhook template).
    pub async fn exchange_code(
        &self,
        app: &App,
        code: &str,
        pkce_verifier: Option<&Secret>,
        redirect_uri: &str,
    ) -> Result<Grant, TokenError> {
        if app.handshake == Handshake::Webhook {
            let inputs = Inputs {
                client_id: &app.client_id,
                client_secret: app.client_secret.as_ref(),
                redirect_uri,
                authorization_code: Some(code),
                code_verifier: pkce_verifier,
                refresh_token: None,
            };
            let webhook = webhook_of(app)?;
            return self
                .send_webhook(app, webhook, &webhook.token, &inputs)
                .await;
        }
        let client = self.client(app)?;
        let redirect = RedirectUrl::new(redirect_uri.to_string())
            .map_err(|e| TokenError::Config(e.to_string()))?;
        let mut req = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .set_redirect_uri(Cow::Owned(redirect));
        if let Some(v) = pkce_verifier {
            req = req.set_pkce_verifier(PkceCodeVerifier::new(v.expose().to_string()));
        }
        let http = ProviderHttp::new(&self.egress, app);
        let resp = req.request_async(&http).await.map_err(map_error)?;
        Ok(grant_of(&resp))
    }

    /// Whether tokens of `app` can be refreshed at all: always with the standard handshake,
    /// only with a refresh template with the webhook one. Without, an expired token means the
    /// user consents again.
    pub fn can_refresh(&self, app: &App) -> bool {
        match app.handshake {
            Handshake::Standard => true,
            Handshake::Webhook => webhook_of(app).is_ok_and(|w| w.refresh.is_some()),
        }
    }

    /// Refreshes (RFC 6749 §6, or the app's webhook refresh template).
    pub async fn refresh(&self, app: &App, refresh_token: &Secret) -> Result<Grant, TokenError> {
        if app.handshake == Handshake::Webhook {
            let webhook = webhook_of(app)?;
            let Some(template) = &webhook.refresh else {
                return Err(TokenError::Config(format!(
                    "app {:?} has no webhook refresh template",
                    app.id
                )));
            };
            let inputs = Inputs {
                client_id: &app.client_id,
                client_secret: app.client_secret.as_ref(),
                redirect_uri: &self.redirect_uri,
                authorization_code: None,
                code_verifier: None,
                refresh_token: Some(refresh_token),
            };
            return self.send_webhook(app, webhook, template, &inputs).await;
        }
        let client = self.client(app)?;
        let rt = RefreshToken::new(refresh_token.expose().to_string());
        let http = ProviderHttp::new(&self.egress, app);
        let resp = client
            .exchange_refresh_token(&rt)
            .request_async(&http)
            .await
            .map_err(map_error)?;
        Ok(grant_of(&resp))
    }

    /// Revokes a user's tokens at the provider (RFC 7009), refresh token first (which, per
    /// §2.1, should also invalidate the access tokens of the grant), then the access token.
    /// Failures are logged and returned as a [`Revocation`] for the pages to show, never as
    /// an error: the grant is deleted whatever the provider says.
    ///
    /// Built by hand rather than with `oauth2`'s `revoke_token`: the crate refuses any
    /// revocation endpoint that is not `https`, while DESIGN allows `http` for loopback and
    /// private providers, as for the token endpoint. The request is a form POST with the
    /// same client authentication the token endpoint uses.
    pub async fn revoke(&self, app: &App, tokens: &TokenSet) -> Revocation {
        let Some(url) = &app.revocation_url else {
            return Revocation::NotSupported;
        };
        let mut list = Vec::new();
        if let Some(rt) = &tokens.refresh_token {
            list.push(("refresh_token", rt));
        }
        // A grant kept as `needs_consent` has no access token left to revoke.
        if !tokens.access_token.expose().is_empty() {
            list.push(("access_token", &tokens.access_token));
        }
        let mut outcome = Revocation::Confirmed;
        for (kind, token) in list {
            let result = match revocation_request(app, url, kind, token) {
                Ok(req) => self.egress.send(&app.egress_policy, &app.org, req).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(resp) if resp.status().is_success() => tracing::info!(
                    org = %app.org, app = %app.id, user = %tokens.user, kind,
                    "token revoked at the provider"
                ),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    tracing::warn!(
                        org = %app.org, app = %app.id, user = %tokens.user, kind, status,
                        "the provider refused to revoke a token"
                    );
                    outcome = outcome.worst(Revocation::Refused { status });
                }
                Err(e) => {
                    tracing::warn!(
                        org = %app.org, app = %app.id, user = %tokens.user, kind, error = %e,
                        "token revocation at the provider failed"
                    );
                    outcome = outcome.worst(Revocation::Failed {
                        reason: e.to_string(),
                    });
                }
            }
        }
        outcome
    }
}

/// What the provider said when asked to revoke a user's tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revocation {
    /// The provider answered 2xx to every revocation request.
    Confirmed,
    /// The app has no way to revoke at its provider (no revocation endpoint).
    NotSupported,
    /// The provider answered with this non-2xx status.
    Refused {
        /// The HTTP status of the provider's answer.
        status: u16,
    },
    /// The provider could not be reached or the request could not be built.
    Failed {
        /// Why, for people; never a token.
        reason: String,
    },
}

impl Revocation {
    /// Of two outcomes of one revocation, the one to report: any failure beats a success.
    fn worst(self, other: Revocation) -> Revocation {
        match self {
            Revocation::Confirmed | Revocation::NotSupported => other,
            failed => failed,
        }
    }

    /// Whether the provider confirmed the revocation.
    pub fn confirmed(&self) -> bool {
        matches!(self, Revocation::Confirmed)
    }
}

impl TokenClient {
    /// One webhook-handshake request through the webhook's policy, read through its outputs.
    /// 5xx is transient, as for the standard handshake.
    async fn send_webhook(
        &self,
        app: &App,
        webhook: &Webhook,
        template: &Template,
        inputs: &Inputs<'_>,
    ) -> Result<Grant, TokenError> {
        let req = template.request(inputs)?;
        let policy = webhook.policy(&app.egress_policy);
        let resp = self.egress.send(policy, &app.org, req).await?;
        let status = resp.status().as_u16();
        if resp.status().is_server_error() {
            return Err(TokenError::Transport(EgressError::ServerError(status)));
        }
        template.outputs.grant(status, resp.body())
    }
}

/// The app's webhook handshake.
fn webhook_of(app: &App) -> Result<&Webhook, TokenError> {
    app.webhook
        .as_ref()
        .ok_or_else(|| TokenError::Config(format!("app {:?} has no webhook handshake", app.id)))
}

/// An RFC 7009 §2.1 request: `token` and `token_type_hint` in a form body, the client
/// authenticated as at the token endpoint (RFC 6749 §2.3.1: Basic with form-encoded id and
/// secret, or both in the body).
fn revocation_request(
    app: &App,
    url: &str,
    kind: &str,
    token: &Secret,
) -> Result<HttpRequest, EgressError> {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("token", token.expose())
        .append_pair("token_type_hint", kind);
    let mut req = http::Request::builder()
        .method(http::Method::POST)
        .uri(url)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(http::header::ACCEPT, "application/json");
    match (&app.client_auth, &app.client_secret) {
        (ClientAuth::Basic, Some(secret)) => {
            let enc =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let pair = format!("{}:{}", enc(&app.client_id), enc(secret.expose()));
            let value = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            );
            req = req.header(http::header::AUTHORIZATION, value);
        }
        (_, secret) => {
            form.append_pair("client_id", &app.client_id);
            if let Some(s) = secret {
                form.append_pair("client_secret", s.expose());
            }
        }
    }
    req.body(form.finish().into_bytes())
        .map_err(|_| EgressError::BadUrl(url.to_string()))
}

fn grant_of(resp: &oauth2::basic::BasicTokenResponse) -> Grant {
    Grant {
        access_token: Secret::new(resp.access_token().secret().clone()),
        refresh_token: resp
            .refresh_token()
            .map(|r| Secret::new(r.secret().clone())),
        token_type: Some(resp.token_type().as_ref().to_ascii_lowercase()),
        expires_in: resp.expires_in().map(|d| d.as_secs()),
        scopes: resp
            .scopes()
            .map(|s| s.iter().map(|x| x.to_string()).collect()),
    }
}

fn map_error(e: RequestTokenError<EgressError, oauth2::basic::BasicErrorResponse>) -> TokenError {
    match e {
        RequestTokenError::ServerResponse(r) => TokenError::Provider {
            code: r.error().as_ref().to_string(),
            description: r.error_description().cloned(),
        },
        RequestTokenError::Request(e) => TokenError::Transport(e),
        // Only the field path and the kind of problem: serde's message can quote the value,
        // and the body may hold a token, so neither is kept.
        RequestTokenError::Parse(e, _body) => {
            let inner = e.inner().to_string();
            TokenError::InvalidResponse(if inner.starts_with("missing field") {
                inner.split(" at line").next().unwrap_or(&inner).to_string()
            } else {
                format!("unexpected value at {}", e.path())
            })
        }
        RequestTokenError::Other(s) => TokenError::InvalidResponse(s),
    }
}

/// The `oauth2` crate's HTTP client for one app: [`Egress`] under the app's policy, plus
/// [`normalize_response`].
pub struct ProviderHttp<'a> {
    egress: &'a Egress,
    policy: String,
    org: String,
}

impl<'a> ProviderHttp<'a> {
    fn new(egress: &'a Egress, app: &App) -> Self {
        ProviderHttp {
            egress,
            policy: app.egress_policy.clone(),
            org: app.org.clone(),
        }
    }
}

impl<'c> AsyncHttpClient<'c> for ProviderHttp<'_> {
    type Error = EgressError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, EgressError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let resp = self.egress.send(&self.policy, &self.org, request).await?;
            normalize_response(resp)
        })
    }
}

/// Makes a provider's response acceptable to the `oauth2` crate without changing its
/// meaning (DESIGN "Token responses"):
/// - 5xx → an error (transient, never parsed as a token response);
/// - a JSON object under another content type (`text/plain`, none) → `application/json`;
/// - `{"error": ...}` with status 200 → status 400, so it is parsed as the error it is;
/// - on success: `token_type` lowercased, `bearer` when missing; `expires_in` as a numeric
///   string → number (an unusable value is dropped: unknown lifetime); `scope` as a JSON
///   array → space-separated.
///
/// Anything that is not a JSON object is passed through for the crate to reject.
pub fn normalize_response(resp: HttpResponse) -> Result<HttpResponse, EgressError> {
    let status = resp.status();
    if status.is_server_error() {
        return Err(EgressError::ServerError(status.as_u16()));
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(&body) else {
        return Ok(HttpResponse::from_parts(parts, body));
    };
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if obj.contains_key("error") {
        if parts.status.is_success() {
            parts.status = StatusCode::BAD_REQUEST;
        }
    } else if parts.status.is_success() {
        parts.status = StatusCode::OK;
        normalize_token_fields(&mut obj);
    }
    let body = serde_json::to_vec(&Value::Object(obj)).unwrap_or(body);
    Ok(HttpResponse::from_parts(parts, body))
}

fn normalize_token_fields(obj: &mut Map<String, Value>) {
    let token_type = match obj.get("token_type") {
        Some(Value::String(s)) => s.to_ascii_lowercase(),
        _ => "bearer".to_string(),
    };
    obj.insert("token_type".into(), Value::String(token_type));
    let expires_in = match obj.get("expires_in") {
        None | Some(Value::Null) => None,
        // A negative lifetime: already expired.
        Some(n @ Value::Number(_)) => seconds(n).or(Some(0)),
        Some(v) => seconds(v),
    };
    match expires_in {
        Some(n) => obj.insert("expires_in".into(), Value::from(n)),
        None => obj.remove("expires_in"),
    };
    if let Some(Value::Array(list)) = obj.get("scope") {
        let joined: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
        let joined = joined.join(" ");
        obj.insert("scope".into(), Value::String(joined));
    }
    if obj.get("refresh_token").is_some_and(Value::is_null) {
        obj.remove("refresh_token");
    }
    if obj.get("scope").is_some_and(Value::is_null) {
        obj.remove("scope");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, ct: Option<&str>, body: &str) -> HttpResponse {
        let mut b = http::Response::builder().status(status);
        if let Some(ct) = ct {
            b = b.header(CONTENT_TYPE, ct);
        }
        b.body(body.as_bytes().to_vec()).unwrap()
    }

    fn json(r: &HttpResponse) -> Value {
        serde_json::from_slice(r.body()).unwrap()
    }

    #[test]
    fn normalization_table() {
        struct Case {
            name: &'static str,
            input: HttpResponse,
            status: u16,
            check: fn(&Value),
        }
        let cases = [
            Case {
                name: "expires_in as string",
                input: resp(
                    200,
                    Some("application/json"),
                    r#"{"access_token":"a","token_type":"Bearer","expires_in":"3600"}"#,
                ),
                status: 200,
                check: |v| assert_eq!(v["expires_in"], 3600),
            },
            Case {
                name: "missing token_type",
                input: resp(200, Some("application/json"), r#"{"access_token":"a"}"#),
                status: 200,
                check: |v| assert_eq!(v["token_type"], "bearer"),
            },
            Case {
                name: "uppercase token_type",
                input: resp(
                    200,
                    Some("application/json"),
                    r#"{"access_token":"a","token_type":"BEARER"}"#,
                ),
                status: 200,
                check: |v| assert_eq!(v["token_type"], "bearer"),
            },
            Case {
                name: "error with status 200",
                input: resp(
                    200,
                    Some("application/json"),
                    r#"{"error":"invalid_grant"}"#,
                ),
                status: 400,
                check: |v| assert_eq!(v["error"], "invalid_grant"),
            },
            Case {
                name: "JSON as text/plain",
                input: resp(
                    200,
                    Some("text/plain"),
                    r#"{"access_token":"a","token_type":"bearer"}"#,
                ),
                status: 200,
                check: |v| assert_eq!(v["access_token"], "a"),
            },
            Case {
                name: "garbage expires_in dropped",
                input: resp(200, None, r#"{"access_token":"a","expires_in":"soon"}"#),
                status: 200,
                check: |v| assert!(v.get("expires_in").is_none()),
            },
            Case {
                name: "scope as array",
                input: resp(200, None, r#"{"access_token":"a","scope":["x","y"]}"#),
                status: 200,
                check: |v| assert_eq!(v["scope"], "x y"),
            },
        ];
        for c in cases {
            let out = normalize_response(c.input).unwrap();
            assert_eq!(out.status().as_u16(), c.status, "{}", c.name);
            assert_eq!(
                out.headers()[CONTENT_TYPE],
                "application/json",
                "{}",
                c.name
            );
            (c.check)(&json(&out));
        }
    }

    #[test]
    fn server_errors_are_transport_errors_and_non_json_passes_through() {
        assert!(matches!(
            normalize_response(resp(503, None, r#"{"error":"temporarily_unavailable"}"#)),
            Err(EgressError::ServerError(503))
        ));
        let out = normalize_response(resp(200, Some("text/html"), "<html>")).unwrap();
        assert_eq!(out.headers()[CONTENT_TYPE], "text/html");
    }
}
