//! [`AppConfig`]: an outbound application's configuration, the one shape that the admin API
//! (create, PATCH, GET), `tollgate app apply` files, the CLI and the store all read and write.
//!
//! It lives with the store's records because the store keeps it (and seals its secrets);
//! what it means to be valid is decided by `oauth::app`, and the webhook handshake's
//! templates are checked and rendered by `oauth::webhook`.
//!
//! Serde is the whole interface, and it is masked by construction:
//! - deserializing reads an admin's document: every field may be absent (validation names
//!   what is missing, all at once) and unknown fields are refused;
//! - serializing writes what the API shows: the client secret is skipped, and the values of
//!   the webhook templates' headers, form fields and JSON body are written as `null` (names
//!   and the body's shape visible, values never: they hold API keys as often as
//!   placeholders). There is no way to serialize the secrets; the store seals them one by one
//!   ([`AppConfig::client_secret`], [`Webhook::to_sealed_json`] and, for the revocation
//!   template, [`Template::to_sealed_json`]);
//! - a PATCH that sends a masked view back gets the stored values in place of its `null`s
//!   ([`Webhook::restore_masked`]), unless the template now points somewhere else.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::Error as _;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::model::Secret;

/// How the client authenticates at the token endpoint (RFC 6749 §2.3.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// HTTP Basic with the client id and secret (the RFC's default).
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body, for providers that reject Basic.
    Post,
}

/// How the authorization code is exchanged for tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Handshake {
    /// RFC 6749 token endpoint.
    #[default]
    Standard,
    /// Legacy custom handshake described by request templates ([`AppConfig::webhook`]).
    Webhook,
}

/// An outbound application's configuration, as admins write it and as it is stored.
///
/// Absent fields take the defaults below; `oauth::app::validate` then checks every field and
/// normalizes (trims, lowercases domains, drops empty optional URLs). A value that passed it
/// is what the rest of tollgate uses. `Debug` masks the secrets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppConfig {
    /// Slug, unique within the org; names the app in URLs, the CLI and the audit log.
    pub id: String,
    /// Human name shown on the consent page and in listings.
    pub name: String,
    /// Longer text shown on the consent page and in listings.
    pub description: String,
    /// Text shown on the consent page before the user is sent to the provider.
    pub approval_prompt: String,
    /// Provider's authorization endpoint, where the user's browser is redirected.
    pub authorize_url: String,
    /// Provider's token endpoint; `None` only for a webhook handshake, whose requests are
    /// described in `webhook` instead.
    pub token_url: Option<String>,
    /// OAuth client id registered at the provider.
    pub client_id: String,
    /// OAuth client secret: write-only (never serialized), sealed at rest. `None` for public
    /// clients (PKCE only), and in a PATCH that keeps the stored one.
    #[serde(skip_serializing)]
    pub client_secret: Option<Secret>,
    /// Scopes requested on consent; empty means no `scope` parameter is sent.
    pub scopes: Vec<String>,
    /// Lifetime in seconds assumed when the provider returns no `expires_in`.
    #[serde(deserialize_with = "lifetime")]
    pub access_token_ttl: Option<u64>,
    /// Whether to use S256 PKCE on the authorization code flow.
    pub pkce: bool,
    /// Egress policy whose route carries this app's token-endpoint calls.
    pub egress_policy: String,
    /// Host patterns whose requests get this app's token injected.
    pub domains: Vec<String>,
    /// For plain-http requests to `domains`, connect upstream over TLS (TLS origination).
    pub upstream_tls: bool,
    /// How the client authenticates at the token endpoint.
    pub client_auth: ClientAuth,
    /// Extra query parameters for the authorization request (e.g. `access_type=offline`).
    pub authorize_params: BTreeMap<String, String>,
    /// Expected `iss` on the callback (RFC 9207); unchecked when `None`.
    pub issuer: Option<String>,
    /// RFC 7009 endpoint used to revoke tokens best-effort on reset, delete and revoke.
    pub revocation_url: Option<String>,
    /// Standard token endpoint or the legacy webhook handshake.
    pub handshake: Handshake,
    /// The webhook handshake's request templates (with `handshake = "webhook"` only).
    pub webhook: Option<Webhook>,
    /// Whether a caller may read its own access token (`GET /v1/me/tokens/{app}`, `tollgate
    /// token get`): for code that calls the provider itself rather than through the proxy.
    /// Off by default: a token that leaves tollgate can no longer be confined by policy.
    pub expose_token: bool,
    /// Revocation at a provider without RFC 7009 (GitHub's `DELETE
    /// /applications/{client_id}/grant`, Slack's `auth.revoke`), as a request template with
    /// `{access_token}` and `{refresh_token}` among its inputs; used instead of
    /// `revocation_url` when set. Sealed at rest as a whole, like `webhook`.
    pub revocation: Option<Template>,
}

impl Default for AppConfig {
    /// What an absent field means: PKCE and TLS origination on, everything else empty.
    fn default() -> Self {
        AppConfig {
            id: String::new(),
            name: String::new(),
            description: String::new(),
            approval_prompt: String::new(),
            authorize_url: String::new(),
            token_url: None,
            client_id: String::new(),
            client_secret: None,
            scopes: Vec::new(),
            access_token_ttl: None,
            pkce: true,
            egress_policy: String::new(),
            domains: Vec::new(),
            upstream_tls: true,
            client_auth: ClientAuth::default(),
            authorize_params: BTreeMap::new(),
            issuer: None,
            revocation_url: None,
            handshake: Handshake::default(),
            webhook: None,
            expose_token: false,
            revocation: None,
        }
    }
}

/// The legacy webhook handshake: the code exchange and the refresh as HTTP request templates.
/// Sealed at rest as a whole (its header values are secrets).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// Policy whose rules and route the handshake requests use; the app's `egress_policy`
    /// when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_policy: Option<String>,
    /// The code exchange. Required: absent, it is the empty template, which validation
    /// reports as missing.
    #[serde(default)]
    pub token: Template,
    /// The refresh; without it users consent again when the token expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<Template>,
}

/// One request template. `Debug` shows header names only, and no body.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// `POST` (when empty), `PUT`, `PATCH` or `GET`; upper-case once validated.
    #[serde(default)]
    pub method: String,
    /// Absolute URL; `https`, or `http` for loopback and private servers.
    #[serde(default)]
    pub url: String,
    /// Extra headers (API keys...). The values are secrets: written as `null`, sealed at
    /// rest. `None` appears only in a PATCH, where it keeps the stored value of the header
    /// of that name; validation refuses one that nothing filled.
    #[serde(default, serialize_with = "names_only")]
    pub headers: BTreeMap<String, Option<Secret>>,
    /// A form body (`application/x-www-form-urlencoded`); exclusive with `json`. The values
    /// are write-only: written as `null`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "form_names_only",
        deserialize_with = "form_values"
    )]
    pub form: Option<BTreeMap<String, String>>,
    /// A JSON body; exclusive with `form`. Write-only: its shape is shown (object keys,
    /// array lengths) with every value `null`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "json_shape_only"
    )]
    pub json: Option<Value>,
    /// Where the results are in the response. Required in the handshake's templates:
    /// absent, it is empty, which validation reports as missing. Not used by a revocation
    /// template (see `ok_json`).
    #[serde(default, skip_serializing_if = "Outputs::is_unset")]
    pub outputs: Outputs,
    /// Client authentication added to the request: HTTP Basic with the client id and secret,
    /// or the user's access token as a bearer token (revocation only).
    #[serde(default, skip_serializing_if = "TemplateAuth::is_none")]
    pub auth: TemplateAuth,
    /// Revocation only: a JSON pointer into the response that must be `true` for the
    /// provider to have confirmed (Slack answers failures with 200 and `{"ok": false}`).
    /// Without it, any 2xx confirms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok_json: Option<String>,
}

/// How a template's request authenticates, beyond what its headers say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplateAuth {
    /// Nothing added.
    #[default]
    None,
    /// `Authorization: Basic` with the client id and secret (RFC 6749 §2.3.1).
    Basic,
    /// `Authorization: Bearer` with the user's access token (revocation only).
    Bearer,
}

impl TemplateAuth {
    fn is_none(&self) -> bool {
        *self == TemplateAuth::None
    }
}

/// JSON pointers (RFC 6901) into a handshake response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outputs {
    /// Pointer to the access token (a non-empty string). Required.
    #[serde(default)]
    pub access_token: String,
    /// Pointer to the granted scopes: a space-separated string or a list. Required.
    #[serde(default)]
    pub scope: String,
    /// Pointer to the refresh token; absent or `null` in a response = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Pointer to the lifetime in seconds (number or numeric string); absent or `null` in a
    /// response = unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
}

/// Which request a template is; decides the placeholders it may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The code exchange.
    Token,
    /// The refresh.
    Refresh,
    /// The revocation at the provider ([`AppConfig::revocation`]).
    Revoke,
}

impl Step {
    /// `token` or `refresh`, as in the field names.
    pub fn name(self) -> &'static str {
        match self {
            Step::Token => "token",
            Step::Refresh => "refresh",
            Step::Revoke => "revocation",
        }
    }
}

impl Outputs {
    /// Whether no pointer is set (a revocation template, or a template missing them).
    pub fn is_unset(&self) -> bool {
        *self == Outputs::default()
    }
}

impl Webhook {
    /// The policy the handshake requests are sent under.
    pub fn policy<'a>(&'a self, app_policy: &'a str) -> &'a str {
        self.egress_policy.as_deref().unwrap_or(app_policy)
    }

    /// Every template with its step.
    pub fn templates(&self) -> impl Iterator<Item = (Step, &Template)> {
        std::iter::once((Step::Token, &self.token))
            .chain(self.refresh.as_ref().map(|t| (Step::Refresh, t)))
    }

    /// For a PATCH: in `view` (the `webhook` of the merged document, JSON), every `null`
    /// where `self` (the stored handshake) has a value takes the stored value: header values
    /// (names compared case-insensitively), form values and JSON body values. So an admin
    /// can send back what `GET` showed without knowing the secrets. A template whose URL
    /// `same_target` says points elsewhere now gets nothing back: its secrets must be sent
    /// again, or they would follow the URL to the new host.
    pub fn restore_masked(&self, view: &mut Value, same_target: impl Fn(&str, &str) -> bool) {
        for (step, stored) in self.templates() {
            if let Some(t) = view.get_mut(step.name()) {
                stored.restore_masked(t, &same_target);
            }
        }
    }

    /// The handshake as JSON with its header values: the plaintext the store seals, and
    /// nothing else. [`Webhook`]'s own serialization masks them.
    pub(crate) fn to_sealed_json(&self) -> Value {
        // Plain strings, maps and JSON values: serializing cannot fail.
        let mut json = serde_json::to_value(self).unwrap_or(Value::Null);
        for (step, template) in self.templates() {
            if let Some(Value::Object(t)) = json.get_mut(step.name()) {
                *t = template.sealed_fields();
            }
        }
        json
    }
}

impl Template {
    /// For a PATCH: in `view` (this template's JSON in the merged document), every `null`
    /// where `self` (the stored template) has a value takes the stored value: header values
    /// (names compared case-insensitively), form values and JSON body values. Nothing is
    /// restored when `same_target` says the view's URL points elsewhere now: the secrets
    /// must be sent again, or they would follow the URL to the new host.
    pub fn restore_masked(&self, view: &mut Value, same_target: impl Fn(&str, &str) -> bool) {
        let Value::Object(t) = view else {
            return;
        };
        let url = t.get("url").and_then(Value::as_str).unwrap_or_default();
        if !same_target(url, &self.url) {
            return;
        }
        if let Some(Value::Object(headers)) = t.get_mut("headers") {
            for (name, value) in headers.iter_mut() {
                let old = self
                    .headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name));
                if let (true, Some((_, Some(secret)))) = (value.is_null(), old) {
                    *value = Value::from(secret.expose());
                }
            }
        }
        let plain = self.sealed_fields();
        for body in ["form", "json"] {
            if let (Some(new), Some(old)) = (t.get_mut(body), plain.get(body)) {
                fill_nulls(new, old);
            }
        }
    }

    /// The template as JSON with its header, form and JSON body values: the plaintext the
    /// store seals, and nothing else. [`Template`]'s own serialization masks them.
    pub(crate) fn to_sealed_json(&self) -> Value {
        Value::Object(self.sealed_fields())
    }

    fn sealed_fields(&self) -> serde_json::Map<String, Value> {
        // Plain strings, maps and JSON values: serializing cannot fail.
        let Ok(Value::Object(mut t)) = serde_json::to_value(self) else {
            return serde_json::Map::new();
        };
        if let Some(Value::Object(headers)) = t.get_mut("headers") {
            for (name, value) in &self.headers {
                let value = value.as_ref().map(|v| Value::from(v.expose()));
                headers.insert(name.clone(), value.unwrap_or(Value::Null));
            }
        }
        if let Some(form) = &self.form {
            let form = form
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.as_str())));
            t.insert("form".into(), Value::Object(form.collect()));
        }
        if let Some(body) = &self.json {
            t.insert("json".into(), body.clone());
        }
        t
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Template")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("form", &self.form.as_ref().map(|_| "..."))
            .field("json", &self.json.as_ref().map(|_| "..."))
            .field("outputs", &self.outputs)
            .field("auth", &self.auth)
            .field("ok_json", &self.ok_json)
            .finish()
    }
}

/// A lifetime in seconds. Zero or less is read as 0, which validation refuses with the other
/// invalid fields (a parse error would stop at this one).
fn lifetime<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<i64>::deserialize(d) {
        Ok(n) => Ok(n.map(|n| u64::try_from(n).unwrap_or(0))),
        Err(_) => Err(D::Error::custom("must be a positive number of seconds")),
    }
}

/// Every `null` in `new` where `old` has a value at the same place takes that value.
fn fill_nulls(new: &mut Value, old: &Value) {
    match (new, old) {
        (new @ Value::Null, old) => *new = old.clone(),
        (Value::Object(n), Value::Object(o)) => {
            for (k, v) in n.iter_mut() {
                if let Some(ov) = o.get(k) {
                    fill_nulls(v, ov);
                }
            }
        }
        (Value::Array(n), Value::Array(o)) => {
            for (v, ov) in n.iter_mut().zip(o) {
                fill_nulls(v, ov);
            }
        }
        _ => {}
    }
}

/// A JSON value's shape: objects and arrays kept, every other value `null`.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        _ => Value::Null,
    }
}

/// What a form value sent as `null` (masked) reads as until a PATCH fills it with the stored
/// value; validation refuses one left over. A NUL byte, which no form value needs.
pub const MASKED_FORM_VALUE: &str = "\0";

/// Reads a form whose values may be `null` (a masked view sent back) as
/// [`MASKED_FORM_VALUE`].
fn form_values<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    let form = Option::<BTreeMap<String, Option<String>>>::deserialize(d)?;
    Ok(form.map(|f| {
        f.into_iter()
            .map(|(k, v)| (k, v.unwrap_or_else(|| MASKED_FORM_VALUE.to_string())))
            .collect()
    }))
}

/// Serializes a JSON body as its [`shape`].
fn json_shape_only<S: Serializer>(json: &Option<Value>, s: S) -> Result<S::Ok, S::Error> {
    json.as_ref().map(shape).serialize(s)
}

/// Serializes a form with every value `null`.
fn form_names_only<S: Serializer>(
    form: &Option<BTreeMap<String, String>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let Some(form) = form else {
        return s.serialize_none();
    };
    let mut map = s.serialize_map(Some(form.len()))?;
    for name in form.keys() {
        map.serialize_entry(name, &())?;
    }
    map.end()
}

/// Serializes a header map with every value `null`.
fn names_only<S: Serializer>(
    headers: &BTreeMap<String, Option<Secret>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(headers.len()))?;
    for name in headers.keys() {
        map.serialize_entry(name, &())?;
    }
    map.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AppConfig {
        serde_json::from_value(serde_json::json!({
            "id": "legacy",
            "client_secret": "sk-PLAIN",
            "handshake": "webhook",
            "webhook": {"token": {
                "url": "https://idp.example/t",
                "headers": {"X-Key": "hook-PLAIN"},
                "json": {"code": "{authorization_code}", "key": ["json-PLAIN"]},
                "outputs": {"access_token": "/t", "scope": "/s"}
            }, "refresh": {
                "url": "https://idp.example/r",
                "form": {"rt": "{refresh_token}", "key": "form-PLAIN"},
                "outputs": {"access_token": "/t", "scope": "/s"}
            }}
        }))
        .unwrap()
    }

    #[test]
    fn absent_fields_take_the_defaults_and_unknown_ones_are_refused() {
        let c: AppConfig = serde_json::from_str(r#"{"id": "x"}"#).unwrap();
        assert!(c.pkce && c.upstream_tls);
        assert_eq!(c.handshake, Handshake::Standard);
        let e = serde_json::from_str::<AppConfig>(r#"{"scope": "x"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `scope`"), "{e}");
    }

    #[test]
    fn serializing_masks_the_secrets_and_debug_too() {
        let c = config();
        let shown = serde_json::to_value(&c).unwrap();
        assert!(shown.get("client_secret").is_none(), "{shown}");
        assert_eq!(
            shown["webhook"]["token"]["headers"],
            serde_json::json!({"X-Key": null})
        );
        // Body values too: names and shape visible, values never.
        assert_eq!(
            shown["webhook"]["token"]["json"],
            serde_json::json!({"code": null, "key": [null]})
        );
        assert_eq!(
            shown["webhook"]["refresh"]["form"],
            serde_json::json!({"rt": null, "key": null})
        );
        for text in [shown.to_string(), format!("{c:?}")] {
            assert!(!text.contains("PLAIN"), "{text}");
        }
        // Only the sealing path sees the header value, and it reads back as it was.
        let w = c.webhook.unwrap();
        let sealed = w.to_sealed_json();
        assert_eq!(sealed["token"]["headers"]["X-Key"], "hook-PLAIN");
        assert_eq!(sealed["token"]["json"]["key"][0], "json-PLAIN");
        assert_eq!(sealed["refresh"]["form"]["key"], "form-PLAIN");
        assert_eq!(serde_json::from_value::<Webhook>(sealed).unwrap(), w);
    }

    /// A masked view sent back gets the stored values, unless its URL moved elsewhere; a
    /// form value left masked reads as the marker validation refuses.
    #[test]
    fn a_masked_view_sent_back_gets_the_stored_values() {
        let w = config().webhook.unwrap();
        let mut view = serde_json::to_value(&w).unwrap();
        view["refresh"]["url"] = "https://elsewhere.example/r".into();
        w.restore_masked(&mut view, |a, b| a == b);
        let back: Webhook = serde_json::from_value(view).unwrap();
        assert_eq!(back.token, w.token);
        let form = back.refresh.unwrap().form.unwrap();
        assert_eq!(form["key"], MASKED_FORM_VALUE);
    }

    #[test]
    fn enums_serialize_lowercase() {
        assert_eq!(
            serde_json::to_string(&ClientAuth::Post).unwrap(),
            "\"post\""
        );
        assert_eq!(
            serde_json::to_string(&Handshake::Webhook).unwrap(),
            "\"webhook\""
        );
        assert_eq!(
            serde_json::from_str::<ClientAuth>("\"basic\"").unwrap(),
            ClientAuth::Basic
        );
    }
}
