//! Revocation endpoints that are not RFC 7009, as real providers have them, for apps with a
//! `revocation` template:
//! - GitHub style, `DELETE /applications/{client_id}/grant`: HTTP Basic client auth, the
//!   access token in a JSON body, `204` when revoked, `404` when the token is unknown;
//! - Slack style, `POST /api/auth.revoke`: the token itself as the bearer, always `200`,
//!   `{"ok": true, "revoked": true}` or `{"ok": false, "error": "invalid_auth"}`.
//!
//! Each request is recorded ([`StyledRevocation`]); a revoked token is also pushed to
//! `revoked` like the RFC 7009 endpoint's.

use super::*;

/// One request to a non-RFC 7009 revocation endpoint.
#[derive(Clone, Debug)]
pub struct StyledRevocation {
    pub method: String,
    pub path: String,
    /// `Authorization`, verbatim.
    pub authorization: String,
    pub content_type: String,
    pub body: String,
    /// Whether a live token was revoked.
    pub revoked: bool,
}

impl Provider {
    pub fn styled_revocations(&self) -> Vec<StyledRevocation> {
        self.with(|s| s.styled_revocations.clone())
    }

    /// Takes `token` out of the live set; whether it was live.
    fn take_token(s: &mut ProviderState, token: &str) -> bool {
        let live = s.access_tokens.remove(token);
        if live {
            s.revoked.push(token.to_string());
        }
        live
    }

    async fn record(req: Request<Incoming>) -> StyledRevocation {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let (method, path) = (req.method().to_string(), req.uri().path().to_string());
        let (authorization, content_type) = (header("authorization"), header("content-type"));
        let body = req.into_body().collect().await.unwrap().to_bytes();
        StyledRevocation {
            method,
            path,
            authorization,
            content_type,
            body: String::from_utf8_lossy(&body).into_owned(),
            revoked: false,
        }
    }

    pub(super) async fn github_style_revoke(
        &self,
        req: Request<Incoming>,
    ) -> Response<Full<Bytes>> {
        let mut seen = Self::record(req).await;
        let mut s = self.state.lock().unwrap();
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", s.client_id, s.client_secret))
        );
        let path_ok = seen.path == format!("/applications/{}/grant", s.client_id);
        let token = serde_json::from_str::<serde_json::Value>(&seen.body)
            .ok()
            .and_then(|b| b["access_token"].as_str().map(str::to_string));
        let answer = if seen.method != "DELETE" || !path_ok {
            text(404, "not found")
        } else if seen.authorization != basic {
            json(401, r#"{"message":"Requires authentication"}"#)
        } else {
            match token {
                Some(t) if Self::take_token(&mut s, &t) => {
                    seen.revoked = true;
                    text(204, "")
                }
                _ => json(404, r#"{"message":"Not Found"}"#),
            }
        };
        s.styled_revocations.push(seen);
        answer
    }

    pub(super) async fn slack_style_revoke(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let mut seen = Self::record(req).await;
        let mut s = self.state.lock().unwrap();
        let token = seen
            .authorization
            .strip_prefix("Bearer ")
            .map(str::to_string);
        let answer = match token {
            Some(t) if seen.method == "POST" && Self::take_token(&mut s, &t) => {
                seen.revoked = true;
                json(200, r#"{"ok":true,"revoked":true}"#)
            }
            _ => json(200, r#"{"ok":false,"error":"invalid_auth"}"#),
        };
        s.styled_revocations.push(seen);
        answer
    }
}
