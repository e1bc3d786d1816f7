//! The webhook-handshake fixture: the real `tollgate` with the `LOCAL` policy, the in-process
//! provider's legacy endpoints (`/handshake/token`, `/handshake/refresh`) and an app `crm` whose
//! handshake is `webhook`, and what a runner and a browser do with them.

use std::time::Duration;

use serde_json::{json, Value};

use super::consent::{browse, Browsed};
use super::provider::Provider;
use super::*;

pub const API_KEY: &str = "k-HOOK-SECRET";

pub const DEADLINE: Duration = Duration::from_secs(15);

/// Where the provider's legacy answer keeps each output.
pub fn outputs() -> Value {
    json!({
        "access_token": "/result/token",
        "scope": "/result/scopes",
        "refresh_token": "/result/renew",
        "expires_in": "/result/ttl",
    })
}

/// A webhook app whose token and refresh requests match the provider's legacy endpoints.
/// `{{legacy}}` is a literal `{legacy}`; `webhook.egress_policy` is left to its default (the
/// app's own policy).
pub fn app_spec(p: &Provider) -> Value {
    json!({
        "id": "legacy",
        "name": "Legacy CRM",
        "description": "Records kept by the legacy CRM",
        "approval_prompt": "Allow the runner to use the legacy CRM?",
        "handshake": "webhook",
        "authorize_url": format!("{}/authorize", p.issuer()),
        "issuer": p.issuer(),
        "client_id": "client-1",
        "scopes": ["read", "write"],
        "egress_policy": "local",
        "domains": ["localhost"],
        "upstream_tls": false,
        "webhook": {
            "token": {
                "method": "POST",
                "url": format!("{}/handshake/token", p.issuer()),
                "headers": {"X-Api-Key": API_KEY, "X-Client": "{client_id}"},
                "json": {
                    "grant": {"code": "{authorization_code}", "verifier": "{code_verifier}"},
                    "client": "{client_id}",
                    "redirect": "{redirect_uri}",
                    "tag": "{{legacy}}",
                },
                "outputs": outputs(),
            },
            "refresh": {
                "url": format!("{}/handshake/refresh", p.issuer()),
                "headers": {"X-Api-Key": API_KEY},
                "json": {"renew": "{refresh_token}"},
                "outputs": outputs(),
            },
        },
    })
}

pub struct Env {
    pub tg: Tollgate,
    pub p: Provider,
    pub admin: String,
}

pub async fn setup(tweak: impl FnOnce(&mut Value, &Provider)) -> Env {
    let (tg, p, admin) = super::oauth::start_with_app(&[], app_spec, tweak).await;
    Env { tg, p, admin }
}

// Not every test binary that builds this module calls both.
#[allow(unused_imports)]
pub use super::oauth::{bearer_of, now};

/// The single access token the provider has issued and not revoked.
pub fn only_access_token(p: &Provider) -> String {
    let issued: Vec<String> = p.with(|s| s.access_tokens.iter().cloned().collect());
    assert_eq!(issued.len(), 1, "{issued:?}");
    issued[0].clone()
}

/// Seconds between `obtained_at` and `expires_at` of an authorization.
pub fn lifetime(a: &Value) -> u64 {
    super::unix_time(&a["expires_at"]).unwrap() - super::unix_time(&a["obtained_at"]).unwrap()
}

impl Env {
    /// A runner's request to the API through the proxy.
    pub async fn call(&self, user: &str) -> Resp {
        let pa = self.tg.bearer("acme", user);
        proxy_request(
            self.tg.proxy,
            "GET",
            &format!("http://localhost:{}/records", self.p.api.port()),
            &[
                ("proxy-authorization", &pa),
                ("authorization", "Bearer client-own-token"),
            ],
            "",
        )
        .await
    }

    /// A call that must answer `401 authorization_required`; returns the consent URL.
    pub async fn consent_url(&self, user: &str) -> String {
        let r = self.call(user).await;
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(r.json()["error"], "authorization_required", "{}", r.text());
        r.json()["consent_url"].as_str().unwrap().to_string()
    }

    /// Runs the consent of `user` in a browser; returns what it saw.
    pub async fn browse(&self, user: &str) -> Browsed {
        let url = self.consent_url(user).await;
        browse(self.tg.web, self.p.addr, &url).await
    }

    /// The whole consent for `user`; asserts success.
    pub async fn consent(&self, user: &str) {
        let b = self.browse(user).await;
        assert_eq!(b.callback.status, 200, "{}", b.callback.text());
    }

    pub async fn authorizations(&self) -> Vec<Value> {
        let r = web_request(
            self.tg.web,
            "GET",
            "/v1/apps/legacy/authorizations",
            Some(&self.admin),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["authorizations"].as_array().unwrap().clone()
    }

    pub async fn authorization(&self, user: &str) -> Option<Value> {
        self.authorizations()
            .await
            .into_iter()
            .find(|a| a["user"] == user)
    }

    /// Polls until every one of `users`' tokens is past its `expires_at` (so certainly due
    /// for refresh, whatever the rounding of the margin).
    pub async fn wait_expired(&self, users: &[&str]) {
        let ok = wait_until(DEADLINE, async || {
            let list = self.authorizations().await;
            users.iter().all(|u| {
                list.iter()
                    .find(|a| a["user"] == *u)
                    .and_then(|a| super::unix_time(&a["expires_at"]))
                    .is_some_and(|exp| now() >= exp)
            })
        })
        .await;
        assert!(ok, "tokens of {users:?} never expired");
    }

    pub async fn app(&self) -> Value {
        let r = web_request(
            self.tg.web,
            "GET",
            "/v1/apps/legacy",
            Some(&self.admin),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    pub async fn patch(&self, body: &Value) -> Resp {
        web_request(
            self.tg.web,
            "PATCH",
            "/v1/apps/legacy",
            Some(&self.admin),
            Some(body),
        )
        .await
    }

    pub fn violations(&self) -> Vec<String> {
        self.p.with(|s| s.violations.clone())
    }

    pub fn assert_no_secrets_logged(&self) {
        let logs = self.tg.logs();
        for s in [API_KEY, "AT-secret", "RT-secret", "sk-CLIENT-SECRET"] {
            assert!(!logs.contains(s), "{s} logged:\n{logs}");
        }
    }
}

/// The value of header `name` in a JSON object of headers, whatever the case of its name.
pub fn header_entry<'a>(headers: &'a Value, name: &str) -> Option<&'a Value> {
    headers
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}
