//! Revoking a user's tokens at the provider, best effort, when a grant is deleted
//! (disconnect, admin revoke, reset, delete, an endpoint move): [`TokenClient::revoke`].
//!
//! Two ways, by the app's configuration:
//! - `revocation`, a request template (the webhook handshake's [`Template`], rendered with
//!   `{client_id}`, `{client_secret}`, `{access_token}`, `{refresh_token}`), for providers
//!   without RFC 7009: GitHub's `DELETE /applications/{client_id}/grant`, Slack's
//!   `auth.revoke`. One request; 2xx confirms, and with `ok_json` the JSON value at that
//!   pointer must also be `true` (Slack answers failures with 200 and `{"ok": false}`);
//! - `revocation_url`, RFC 7009: the refresh token, then the access token.
//!
//! Neither: [`Revocation::NotSupported`]. Every outcome is logged and returned for the pages
//! to show, never as an error: the grant is deleted whatever the provider says.

use http::header::CONTENT_TYPE;
use oauth2::HttpRequest;
use serde_json::Value;

use super::egress::EgressError;
use super::token::TokenClient;
use super::webhook::{basic_credentials, Inputs, Template};
use crate::store::{App, ClientAuth, Secret, TokenSet};

/// What the provider said when asked to revoke a user's tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revocation {
    /// The provider answered 2xx to every revocation request.
    Confirmed,
    /// The app has no way to revoke at its provider (no `revocation_url` nor `revocation`).
    NotSupported,
    /// The provider answered with this non-2xx status, or (with `ok_json`) a 2xx whose
    /// answer did not confirm.
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
    /// Whether `app` can revoke at its provider at all.
    pub fn can_revoke(&self, app: &App) -> bool {
        app.revocation.is_some() || app.revocation_url.is_some()
    }

    /// Revokes a user's tokens at the provider: with the app's `revocation` template when it
    /// has one, else by RFC 7009 at `revocation_url` (refresh token first, which per §2.1
    /// should also invalidate the grant's access tokens, then the access token), else
    /// [`Revocation::NotSupported`].
    ///
    /// RFC 7009 is built by hand rather than with `oauth2`'s `revoke_token`: the crate
    /// refuses any revocation endpoint that is not `https`, while DESIGN allows `http` for
    /// loopback and private providers, as for the token endpoint. The request is a form POST
    /// with the same client authentication the token endpoint uses.
    pub async fn revoke(&self, app: &App, tokens: &TokenSet) -> Revocation {
        // A grant kept as `needs_consent` has no token left to revoke.
        let has_access = !tokens.access_token.expose().is_empty();
        if !has_access && tokens.refresh_token.is_none() {
            return Revocation::NotSupported;
        }
        if let Some(template) = &app.revocation {
            let outcome = self.revoke_by_template(app, template, tokens).await;
            log_outcome(app, tokens, "template", &outcome);
            return outcome;
        }
        let Some(url) = &app.revocation_url else {
            return Revocation::NotSupported;
        };
        let mut list = Vec::new();
        if let Some(rt) = &tokens.refresh_token {
            list.push(("refresh_token", rt));
        }
        if has_access {
            list.push(("access_token", &tokens.access_token));
        }
        let mut outcome = Revocation::Confirmed;
        for (kind, token) in list {
            let result = match revocation_request(app, url, kind, token) {
                Ok(req) => self.egress.send(&app.egress_policy, &app.org, req).await,
                Err(e) => Err(e),
            };
            let one = match result {
                Ok(resp) if resp.status().is_success() => Revocation::Confirmed,
                Ok(resp) => Revocation::Refused {
                    status: resp.status().as_u16(),
                },
                Err(e) => Revocation::Failed {
                    reason: e.to_string(),
                },
            };
            log_outcome(app, tokens, kind, &one);
            outcome = outcome.worst(one);
        }
        outcome
    }

    /// One request rendered from the app's template, read by its `ok_json`.
    async fn revoke_by_template(
        &self,
        app: &App,
        template: &Template,
        tokens: &TokenSet,
    ) -> Revocation {
        let inputs = Inputs {
            refresh_token: tokens.refresh_token.as_ref(),
            access_token: Some(&tokens.access_token),
            ..Inputs::of_client(
                &app.client_id,
                app.client_secret.as_ref(),
                &self.redirect_uri,
            )
        };
        let req = match template.request(&inputs) {
            Ok(req) => req,
            Err(e) => {
                return Revocation::Failed {
                    reason: e.to_string(),
                }
            }
        };
        let resp = match self.egress.send(&app.egress_policy, &app.org, req).await {
            Ok(resp) => resp,
            Err(e) => {
                return Revocation::Failed {
                    reason: e.to_string(),
                }
            }
        };
        let status = resp.status().as_u16();
        if !resp.status().is_success() {
            return Revocation::Refused { status };
        }
        match &template.ok_json {
            None => Revocation::Confirmed,
            Some(pointer) => {
                let body: Option<Value> = serde_json::from_slice(resp.body()).ok();
                let confirmed = body.as_ref().and_then(|b| b.pointer(pointer));
                if confirmed == Some(&Value::Bool(true)) {
                    Revocation::Confirmed
                } else {
                    // The provider's own error code, when it gives one, for the log.
                    let error = body
                        .as_ref()
                        .and_then(|b| b.get("error"))
                        .and_then(Value::as_str)
                        .map(|e| e.chars().take(64).collect::<String>());
                    tracing::warn!(
                        org = %app.org, app = %app.id, status, pointer, error = error.as_deref(),
                        "the provider's answer did not confirm the revocation"
                    );
                    Revocation::Refused { status }
                }
            }
        }
    }
}

/// One revocation request's outcome in the log (never a token).
fn log_outcome(app: &App, tokens: &TokenSet, kind: &str, outcome: &Revocation) {
    match outcome {
        Revocation::Confirmed => tracing::info!(
            org = %app.org, app = %app.id, user = %tokens.user, kind,
            "token revoked at the provider"
        ),
        Revocation::NotSupported => {}
        Revocation::Refused { status } => tracing::warn!(
            org = %app.org, app = %app.id, user = %tokens.user, kind, status,
            "the provider refused to revoke a token"
        ),
        Revocation::Failed { reason } => tracing::warn!(
            org = %app.org, app = %app.id, user = %tokens.user, kind, error = %reason,
            "token revocation at the provider failed"
        ),
    }
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
            req = req.header(
                http::header::AUTHORIZATION,
                basic_credentials(&app.client_id, secret),
            );
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
