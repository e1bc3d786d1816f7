//! The stored form of an app: its configuration as JSON, with the client secret and the
//! webhook configuration sealed under the app's key and incarnation.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::super::app_config::{AppConfig, Webhook};
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
    /// Sealed with `["app", org, id, incarnation, "client_secret"]`.
    client_secret: Option<Sealed>,
    /// The webhook handshake with its header values ([`Webhook::to_sealed_json`]), sealed as
    /// a whole with `["app", org, id, incarnation, "webhook"]`.
    webhook: Option<Sealed>,
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

/// Fields of [`AppRecord`] kept outside the flattened configuration.
const APP_RECORD_OWN_FIELDS: &[&str] = &[
    "v",
    "org",
    "id",
    "client_secret",
    "webhook",
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
        let client_secret = app
            .client_secret
            .as_ref()
            .map(|s| key.seal_secret(&aad("client_secret"), s))
            .transpose()?;
        let webhook = app
            .webhook
            .as_ref()
            .map(|w| key.seal(&aad("webhook"), &encode(&w.to_sealed_json())?))
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
            webhook,
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
        let mut fields = self.config;
        fields.insert("id".into(), Value::String(self.id.clone()));
        let mut config: AppConfig = serde_json::from_value(Value::Object(fields))
            .map_err(|e| corrupt(format!("configuration: {e}")))?;
        config.client_secret = self
            .client_secret
            .as_ref()
            .map(|s| open_secret(key, &name, &aad("client_secret"), s))
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
}
