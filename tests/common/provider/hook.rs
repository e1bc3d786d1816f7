//! The provider's legacy, non-standard token exchange for the webhook handshake
//! (`POST /handshake/token`, `POST /handshake/refresh`): an API key header instead of client
//! authentication, JSON (or form) bodies in and out, nested outputs, the lifetime as a string.

use super::*;

impl Provider {
    pub fn hook_token_calls(&self) -> usize {
        self.with(|s| s.hook_token_calls)
    }

    pub fn hook_refresh_calls(&self) -> usize {
        self.with(|s| s.hook_refresh_calls)
    }

    /// The legacy handshake endpoints. Token: `{"grant":{"code","verifier"},"client",
    /// "redirect"}`; refresh: `{"renew"}`. Both answer
    /// `{"result":{"token","scopes":[..],"renew","ttl":"N"}}`.
    pub(super) async fn hook(
        &self,
        req: Request<Incoming>,
        kind: HookKind,
    ) -> Response<Full<Bytes>> {
        let name = kind.name();
        let method = req.method().clone();
        let headers: HashMap<String, String> = req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    v.to_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let content_type = headers.get("content-type").cloned().unwrap_or_default();
        let form = self.with(|s| s.hook_accepts_form);
        let (wanted, parsed) = if form {
            (
                "application/x-www-form-urlencoded",
                Some(hook_form_as_json(&body)),
            )
        } else {
            ("application/json", serde_json::from_slice(&body).ok())
        };
        let seen = HookRequest {
            headers: headers.clone(),
            body: parsed.clone().unwrap_or(serde_json::Value::Null),
        };
        let (mode, delay) = {
            let mut s = self.state.lock().unwrap();
            match kind {
                HookKind::Token => {
                    s.hook_token_calls += 1;
                    s.last_hook_token = Some(seen);
                }
                HookKind::Refresh => {
                    s.hook_refresh_calls += 1;
                    s.last_hook_refresh = Some(seen);
                }
            }
            if method != hyper::Method::POST {
                s.violations.push(format!("{name}: method {method}"));
                return json(405, r#"{"error":"method_not_allowed"}"#);
            }
            if headers.get(HOOK_API_KEY_HEADER) != Some(&s.hook_api_key) {
                s.violations.push(format!("{name}: bad api key"));
                return json(401, r#"{"error":"bad_api_key"}"#);
            }
            if !content_type.starts_with(wanted) {
                s.violations.push(format!(
                    "{name}: body sent as {content_type:?}, not {wanted}"
                ));
                return json(415, r#"{"error":"unsupported_media_type"}"#);
            }
            (s.refresh_mode, s.refresh_delay)
        };
        let Some(v) = parsed else {
            self.with(|s| s.violations.push(format!("{name}: body is not JSON")));
            return json(400, r#"{"error":"invalid_request"}"#);
        };
        let str_at = |ptr: &str| v.pointer(ptr).and_then(|x| x.as_str()).map(str::to_string);
        let old_rt = match kind {
            HookKind::Token => {
                let mut s = self.state.lock().unwrap();
                let code = str_at("/grant/code").unwrap_or_default();
                let Some(issued) = s.codes.remove(&code) else {
                    s.violations.push(format!("{name}: unknown or reused code"));
                    return json(400, r#"{"error":"invalid_grant"}"#);
                };
                if str_at("/redirect").as_ref() != Some(&issued.redirect_uri) {
                    s.violations.push(format!("{name}: redirect mismatch"));
                    return json(400, r#"{"error":"invalid_grant"}"#);
                }
                if str_at("/client").as_ref() != Some(&s.client_id) {
                    s.violations.push(format!("{name}: client mismatch"));
                    return json(401, r#"{"error":"invalid_client"}"#);
                }
                if let Some(challenge) = &issued.challenge {
                    let ok = issued.method.as_deref() == Some("S256")
                        && str_at("/grant/verifier").is_some_and(|v| {
                            let d = ring::digest::digest(&ring::digest::SHA256, v.as_bytes());
                            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref())
                                == *challenge
                        });
                    if !ok {
                        s.violations
                            .push(format!("{name}: PKCE verification failed"));
                        return json(400, r#"{"error":"invalid_grant"}"#);
                    }
                }
                None
            }
            HookKind::Refresh => {
                let rt = str_at("/renew").unwrap_or_default();
                self.with(|s| s.refresh_tokens_used.push(rt.clone()));
                if !delay.is_zero() {
                    // Simulated endpoint latency (the scenario under test).
                    tokio::time::sleep(delay).await;
                }
                if let Some(r) = self.refresh_by_mode(mode).await {
                    return r;
                }
                if !self.with(|s| s.refresh_tokens.contains(&rt)) {
                    return json(400, r#"{"error":"invalid_grant"}"#);
                }
                Some(rt)
            }
        };
        let mut s = self.state.lock().unwrap();
        let (at, new_rt) = Self::issue(&mut s);
        if let Some(old) = old_rt {
            if s.rotate_refresh {
                s.refresh_tokens.remove(&old);
            } else {
                s.refresh_tokens.remove(&new_rt);
            }
        }
        if let Some(c) = s.next_hook_response.take() {
            return canned(c, &at, &new_rt);
        }
        let mut result = serde_json::json!({
            "token": at, "scopes": ["read", "write"], "renew": new_rt,
        });
        if let (HookKind::Refresh, false) = (kind, s.rotate_refresh) {
            result.as_object_mut().unwrap().remove("renew");
        }
        if let Some(ttl) = &s.hook_ttl {
            result["ttl"] = ttl.clone().into();
        }
        json(200, &serde_json::json!({ "result": result }).to_string())
    }
}

/// Which legacy handshake endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum HookKind {
    Token,
    Refresh,
}

impl HookKind {
    fn name(self) -> &'static str {
        match self {
            HookKind::Token => "handshake/token",
            HookKind::Refresh => "handshake/refresh",
        }
    }
}

/// A legacy form body in the shape of the JSON one: `code` and `verifier` under `grant`,
/// `client`, `redirect` and `renew` at the top.
pub(super) fn hook_form_as_json(body: &[u8]) -> serde_json::Value {
    let mut v = serde_json::json!({});
    for (k, val) in url::form_urlencoded::parse(body).into_owned() {
        match k.as_str() {
            "code" | "verifier" => v["grant"][k] = val.into(),
            _ => v[k] = val.into(),
        }
    }
    v
}
