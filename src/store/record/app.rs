//! The stored form of an app: its configuration as JSON, with the client secret and the
//! webhook configuration sealed under the app's key and incarnation.
//!
//! The client secret is also bound to the hosts it is sent to: the token endpoint's and the
//! revocation endpoint's. Those URLs are stored in the clear beside it, so without the
//! binding someone who can write the store but not read the key could point `token_url` at
//! a host of theirs and have tollgate deliver the secret there. With it, a secret kept across
//! a change of either host without being sealed again does not open. Records sealed before
//! the binding ([`SECRET_BINDING_LEGACY`]) open only through [`AppRecord::reseal_legacy`],
//! which the store's migration applies once.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::super::app_config::{AppConfig, Template, Webhook};
use super::super::model::App;
use super::super::seal::{Aad, Sealed, StoreKey};
use super::super::StoreError;
use super::{app_name, decode_keyed, encode, open_secret, FORMAT_VERSION};

/// Stored form of an [`App`]: the lifecycle state, the two secrets sealed, and the rest of
/// the configuration as [`AppConfig`] serializes it (secrets masked), flattened. This is the
/// layout format version 1 has always had, so records written before `AppConfig` existed
/// read unchanged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AppRecord {
    v: u32,
    pub(crate) org: String,
    pub(crate) id: String,
    /// Sealed with [`secret_aad`]: `["app", org, id, incarnation, "client_secret",
    /// token endpoint host, revocation endpoint host]`.
    client_secret: Option<Sealed>,
    /// How `client_secret` is bound: [`SECRET_BINDING`] for this build's associated data,
    /// absent ([`SECRET_BINDING_LEGACY`]) in records sealed without the endpoint hosts.
    #[serde(default)]
    secret_binding: u32,
    /// The webhook handshake with its header values ([`Webhook::to_sealed_json`]), sealed as
    /// a whole with `["app", org, id, incarnation, "webhook"]`.
    webhook: Option<Sealed>,
    /// The revocation template with its header and body values
    /// ([`Template::to_sealed_json`]), sealed as a whole with `["app", org, id, incarnation,
    /// "revocation"]`: its URL receives the client secret and tokens, so it cannot be
    /// changed in the store without the key. Absent in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revocation: Option<Sealed>,
    pub(crate) enabled: bool,
    pub(crate) generation: u64,
    pub(crate) incarnation: u64,
    pub(crate) created_at: u64,
    pub(crate) updated_at: u64,
    /// The other [`AppConfig`] fields; unknown ones are refused when the record is opened.
    #[serde(flatten)]
    config: Map<String, Value>,
}

pub(super) fn app_aad(org: &str, id: &str, incarnation: u64, field: &str) -> Aad {
    Aad::new(&[
        b"app",
        org.as_bytes(),
        id.as_bytes(),
        &incarnation.to_be_bytes(),
        field.as_bytes(),
    ])
}

/// `secret_binding` of records sealed before the endpoint hosts were bound.
pub(crate) const SECRET_BINDING_LEGACY: u32 = 0;

/// `secret_binding` of records this build seals: the hosts are part of the associated data.
pub(crate) const SECRET_BINDING: u32 = 2;

/// Associated data of the client secret: the app, and the hosts the secret is sent to.
fn secret_aad(
    org: &str,
    id: &str,
    incarnation: u64,
    token_url: Option<&str>,
    revocation_url: Option<&str>,
) -> Aad {
    Aad::new(&[
        b"app",
        org.as_bytes(),
        id.as_bytes(),
        &incarnation.to_be_bytes(),
        b"client_secret",
        endpoint_host(token_url).as_bytes(),
        endpoint_host(revocation_url).as_bytes(),
    ])
}

/// The host an endpoint URL names, as the URL parser normalizes it (lowercase, IDN in
/// punycode), so that only a change of host, not of spelling, path or port, unbinds the
/// secret. No URL is the empty string; an unparsable one stays as written (any change to it
/// then unbinds).
fn endpoint_host(url: Option<&str>) -> String {
    match url {
        None => String::new(),
        Some(u) => url::Url::parse(u)
            .ok()
            .and_then(|p| p.host_str().map(str::to_owned))
            .unwrap_or_else(|| u.to_owned()),
    }
}

/// A string field of the flattened configuration.
fn config_str<'a>(config: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    config.get(field).and_then(Value::as_str)
}

/// Fields of [`AppRecord`] kept outside the flattened configuration.
const APP_RECORD_OWN_FIELDS: &[&str] = &[
    "v",
    "org",
    "id",
    "client_secret",
    "secret_binding",
    "webhook",
    "revocation",
    "enabled",
    "generation",
    "incarnation",
    "created_at",
    "updated_at",
];

impl AppRecord {
    /// Seals `app` (its `incarnation` is part of the associated data).
    pub(crate) fn seal(app: &App, key: &StoreKey) -> Result<AppRecord, StoreError> {
        let aad = |field| app_aad(&app.org, &app.id, app.incarnation, field);
        let secret_aad = secret_aad(
            &app.org,
            &app.id,
            app.incarnation,
            app.config.token_url.as_deref(),
            app.config.revocation_url.as_deref(),
        );
        let client_secret = app
            .client_secret
            .as_ref()
            .map(|s| key.seal_secret(&secret_aad, s))
            .transpose()?;
        let webhook = app
            .webhook
            .as_ref()
            .map(|w| key.seal(&aad("webhook"), &encode(&w.to_sealed_json())?))
            .transpose()?;
        let revocation = app
            .revocation
            .as_ref()
            .map(|t| key.seal(&aad("revocation"), &encode(&t.to_sealed_json())?))
            .transpose()?;
        let Value::Object(mut config) = serde_json::to_value(&app.config)
            .map_err(|e| StoreError::Io(format!("encoding an app: {e}")))?
        else {
            return Err(StoreError::Io("encoding an app: not an object".into()));
        };
        config.retain(|k, _| !APP_RECORD_OWN_FIELDS.contains(&k.as_str()));
        Ok(AppRecord {
            v: FORMAT_VERSION,
            org: app.org.clone(),
            id: app.id.clone(),
            client_secret,
            secret_binding: SECRET_BINDING,
            webhook,
            revocation,
            enabled: app.enabled,
            generation: app.generation,
            incarnation: app.incarnation,
            created_at: app.created_at,
            updated_at: app.updated_at,
            config,
        })
    }

    /// Decodes the `apps` value stored under `(org, id)` without opening secrets.
    pub(crate) fn decode(org: &str, id: &str, bytes: &[u8]) -> Result<AppRecord, StoreError> {
        decode_keyed(&app_name(org, id), bytes, |rec: &AppRecord| {
            rec.org == org && rec.id == id
        })
    }

    /// Opens the secrets and returns the model.
    pub(crate) fn open(self, key: &StoreKey) -> Result<App, StoreError> {
        let name = app_name(&self.org, &self.id);
        let corrupt = |reason: String| StoreError::Corrupt {
            record: name.clone(),
            reason,
        };
        let aad = |field| app_aad(&self.org, &self.id, self.incarnation, field);
        if self.client_secret.is_some() && self.secret_binding != SECRET_BINDING {
            return Err(corrupt(format!(
                "client secret: sealed without its endpoint binding (binding {}, this build \
                 opens {SECRET_BINDING}); the store migration re-seals such records",
                self.secret_binding
            )));
        }
        let secret_aad = self.secret_aad();
        let mut fields = self.config;
        fields.insert("id".into(), Value::String(self.id.clone()));
        let mut config: AppConfig = serde_json::from_value(Value::Object(fields))
            .map_err(|e| corrupt(format!("configuration: {e}")))?;
        config.client_secret = self
            .client_secret
            .as_ref()
            .map(|s| open_secret(key, &name, &secret_aad, s))
            .transpose()?;
        config.webhook = self
            .webhook
            .as_ref()
            .map(|w| {
                let plain = key
                    .open(&aad("webhook"), w)
                    .map_err(|e| corrupt(format!("webhook: {e}")))?;
                serde_json::from_slice::<Webhook>(&plain)
                    .map_err(|e| corrupt(format!("webhook: sealed value unreadable ({e})")))
            })
            .transpose()?;
        config.revocation = self
            .revocation
            .as_ref()
            .map(|t| {
                let plain = key
                    .open(&aad("revocation"), t)
                    .map_err(|e| corrupt(format!("revocation: {e}")))?;
                serde_json::from_slice::<Template>(&plain)
                    .map_err(|e| corrupt(format!("revocation: sealed value unreadable ({e})")))
            })
            .transpose()?;
        Ok(App {
            org: self.org,
            config,
            enabled: self.enabled,
            generation: self.generation,
            incarnation: self.incarnation,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }

    /// The client secret's associated data for this record's current endpoints.
    fn secret_aad(&self) -> Aad {
        secret_aad(
            &self.org,
            &self.id,
            self.incarnation,
            config_str(&self.config, "token_url"),
            config_str(&self.config, "revocation_url"),
        )
    }

    /// Every sealed field with its associated data (the store key re-seal moves them; a
    /// client secret sealed before the endpoint binding keeps that binding).
    pub(crate) fn sealed_fields(&mut self) -> Vec<(Aad, &mut Sealed)> {
        let secret_aad = if self.secret_binding == SECRET_BINDING_LEGACY {
            app_aad(&self.org, &self.id, self.incarnation, "client_secret")
        } else {
            self.secret_aad()
        };
        let webhook_aad = app_aad(&self.org, &self.id, self.incarnation, "webhook");
        let mut out = Vec::new();
        if let Some(s) = self.client_secret.as_mut() {
            out.push((secret_aad, s));
        }
        if let Some(w) = self.webhook.as_mut() {
            out.push((webhook_aad, w));
        }
        out
    }

    /// A record sealed before the endpoint binding, with its client secret sealed again under
    /// the binding to its current endpoints; `None` when it already is (so a re-run changes
    /// nothing). The store migration's step; nothing else opens the old binding.
    pub(crate) fn reseal_legacy(mut self, key: &StoreKey) -> Result<Option<AppRecord>, StoreError> {
        if self.secret_binding == SECRET_BINDING {
            return Ok(None);
        }
        if self.secret_binding != SECRET_BINDING_LEGACY {
            return Err(StoreError::Corrupt {
                record: app_name(&self.org, &self.id),
                reason: format!("unknown secret binding {}", self.secret_binding),
            });
        }
        if let Some(sealed) = &self.client_secret {
            let legacy = app_aad(&self.org, &self.id, self.incarnation, "client_secret");
            let name = app_name(&self.org, &self.id);
            let secret = open_secret(key, &name, &legacy, sealed)?;
            self.client_secret = Some(key.seal_secret(&self.secret_aad(), &secret)?);
        }
        self.secret_binding = SECRET_BINDING;
        Ok(Some(self))
    }
}

/// The JSON of an app record as builds before the endpoint binding (and before `AppConfig`)
/// wrote it: every field flat, the webhook sealed as one value, the client secret `sk-1`
/// sealed with `["app", org, id, incarnation, "client_secret"]`.
#[cfg(test)]
pub(crate) fn legacy_app_json(
    key: &StoreKey,
    org: &str,
    id: &str,
    incarnation: u64,
    token_url: Option<&str>,
) -> Value {
    use super::super::model::Secret;
    let aad = |field| app_aad(org, id, incarnation, field);
    let secret = key
        .seal_secret(&aad("client_secret"), &Secret::new("sk-1"))
        .unwrap();
    let webhook = serde_json::json!({
        "token": {"method": "POST", "url": "https://idp.example/t",
                  "headers": {"X-Api-Key": "k-1"}, "json": {"c": "{authorization_code}"},
                  "outputs": {"access_token": "/t", "scope": "/s"}}
    });
    let webhook = key
        .seal(&aad("webhook"), &serde_json::to_vec(&webhook).unwrap())
        .unwrap();
    serde_json::json!({
        "v": 1, "org": org, "id": id, "name": "Legacy", "description": "",
        "approval_prompt": "Allow?", "authorize_url": "https://idp.example/a",
        "token_url": token_url, "client_id": "c", "client_secret": secret,
        "scopes": ["read"], "access_token_ttl": null, "pkce": true,
        "egress_policy": "idp", "domains": ["api.example"], "upstream_tls": true,
        "client_auth": "basic", "authorize_params": {}, "issuer": null,
        "revocation_url": null, "handshake": "webhook", "webhook": webhook,
        "enabled": true, "generation": 2, "incarnation": incarnation, "created_at": 10,
        "updated_at": 11
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::contract::sample_app;

    fn key() -> StoreKey {
        StoreKey::from_hex_text(&"c3".repeat(32)).unwrap()
    }

    /// The stored JSON of `app`, changed by `edit`, opened again.
    fn reopen_edited(app: &App, edit: impl FnOnce(&mut Value)) -> Result<App, StoreError> {
        let mut v = serde_json::to_value(AppRecord::seal(app, &key()).unwrap()).unwrap();
        edit(&mut v);
        let bytes = serde_json::to_vec(&v).unwrap();
        AppRecord::decode(&app.org, &app.id, &bytes)?.open(&key())
    }

    fn reason(r: Result<App, StoreError>) -> String {
        match r {
            Err(StoreError::Corrupt { reason, .. }) => reason,
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn the_client_secret_is_bound_to_the_token_and_revocation_endpoint_hosts() {
        let mut app = sample_app("acme", "github");
        app.config.revocation_url = Some("https://github.com/revoke".into());
        let same = reopen_edited(&app, |_| {}).unwrap();
        assert_eq!(
            same.client_secret.as_ref().unwrap().expose(),
            "sk-PLAINTEXT-123"
        );
        // Another path or port on the same host: the secret still opens.
        let path = reopen_edited(&app, |v| {
            v["token_url"] = json!("https://GitHub.com:8443/other/token")
        })
        .unwrap();
        assert_eq!(
            path.client_secret.as_ref().unwrap().expose(),
            "sk-PLAINTEXT-123"
        );
        // The token endpoint moved to another host in the stored record, without re-sealing.
        let r = reopen_edited(&app, |v| {
            v["token_url"] = json!("https://evil.example/login/oauth/access_token")
        });
        assert!(reason(r).contains("does not open"));
        let r = reopen_edited(&app, |v| v["token_url"] = Value::Null);
        assert!(reason(r).contains("does not open"));
        let r = reopen_edited(&app, |v| {
            v["revocation_url"] = json!("https://evil.example/revoke")
        });
        assert!(reason(r).contains("does not open"));
    }

    #[test]
    fn a_client_secret_copied_into_another_app_record_does_not_open() {
        let github = sample_app("acme", "github");
        let other = App {
            incarnation: github.incarnation,
            ..sample_app("acme", "gitlab")
        };
        let sealed = serde_json::to_value(AppRecord::seal(&github, &key()).unwrap()).unwrap();
        let r = reopen_edited(&other, |v| {
            v["client_secret"] = sealed["client_secret"].clone()
        });
        assert!(reason(r).contains("does not open"));
    }
}
