//! The legacy webhook handshake (`handshake = "webhook"`, DESIGN "Legacy webhook handshake"):
//! for providers whose token endpoint is not RFC 6749 (JSON request bodies, nested responses,
//! extra API keys, `expires_in` as a string, an endpoint only reachable in a private network),
//! admins describe the code exchange and the refresh as HTTP request templates.
//!
//! Three shapes, as for the rest of an app's configuration:
//! - [`WebhookSpec`]: what admins submit (strict: unknown fields rejected). A header value may
//!   be `null` in a PATCH, meaning "keep the stored value", because header values are secrets
//!   and the API never returns them (see [`WebhookSpec::keep_headers_from`]);
//! - [`Webhook`]: validated by [`validate`] (every placeholder known and available, every
//!   URL allowed by the egress policy, every pointer well formed), and stored as JSON inside the
//!   app record, which the store seals as a whole;
//! - [`Template::request`] renders a template into a request and [`Outputs::grant`] reads the
//!   response through its JSON pointers (RFC 6901).
//!
//! Templates use `{name}` placeholders in header values, form values and JSON string values
//! at any depth; `{{` and `}}` are literal braces. Unknown placeholders, and placeholders
//! that have no value in a template (`{refresh_token}` in the token request,
//! `{code_verifier}` without PKCE, `{client_secret}` without a secret), are rejected when the
//! app is saved, so a rendering failure at exchange time means the configuration changed
//! underneath (e.g. the client secret was removed), not a typo.

use std::collections::BTreeMap;
use std::fmt;

use http::header::{HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use http::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::app::{check_url, token_endpoint_problem, FieldErrors};
use super::token::{seconds, Grant, TokenError};
use crate::policy::PolicySet;
use crate::store::Secret;

/// Every placeholder a template may name.
const PLACEHOLDERS: &[&str] = &[
    "client_id",
    "client_secret",
    "redirect_uri",
    "authorization_code",
    "code_verifier",
    "refresh_token",
];

/// Headers a template may not set: tollgate frames the request itself (length, encoding,
/// connection management, `Host` from the URL), and proxy headers make no sense on a request
/// that is not sent to a proxy.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-connection",
];

/// Methods a template may use. `GET` carries no body (its inputs go in headers).
const METHODS: &[&str] = &["POST", "PUT", "PATCH", "GET"];

/// The `webhook` object as admins submit it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// Policy whose rules and route the handshake requests use; the app's `egress_policy`
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_policy: Option<String>,
    /// The code exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<TemplateSpec>,
    /// The refresh; without it users consent again when the token expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<TemplateSpec>,
}

/// One request template as submitted.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    /// `POST` (default), `PUT`, `PATCH` or `GET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Absolute URL; `https`, or `http` for loopback and private servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Extra headers (API keys...). Values are secrets; `null` keeps the stored value.
    #[serde(default)]
    pub headers: BTreeMap<String, Option<String>>,
    /// A form body (`application/x-www-form-urlencoded`); exclusive with `json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form: Option<BTreeMap<String, String>>,
    /// A JSON body; exclusive with `form`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    /// Where the results are in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<OutputsSpec>,
}

impl fmt::Debug for TemplateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TemplateSpec")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("form", &self.form)
            .field("json", &self.json)
            .field("outputs", &self.outputs)
            .finish()
    }
}

/// The output map as submitted: JSON pointers into the response.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputsSpec {
    /// Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// Required; a space-separated string or an array of strings in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Optional; a number or a numeric string in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
}

impl WebhookSpec {
    /// For a PATCH: header values sent as `null` take the stored value of the header with
    /// the same name (case-insensitive) in the same template, so an admin can send back what
    /// `GET` showed without knowing the secrets.
    pub fn keep_headers_from(&mut self, stored: Option<&WebhookSpec>) {
        let pairs = [
            (&mut self.token, stored.and_then(|s| s.token.as_ref())),
            (&mut self.refresh, stored.and_then(|s| s.refresh.as_ref())),
        ];
        for (new, old) in pairs {
            let (Some(new), Some(old)) = (new.as_mut(), old) else {
                continue;
            };
            for (name, value) in new.headers.iter_mut() {
                if value.is_none() {
                    *value = old
                        .headers
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(name))
                        .and_then(|(_, v)| v.clone());
                }
            }
        }
    }
}

/// A validated handshake, as stored in the app record (sealed there as a whole).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// Policy for the handshake requests; the app's `egress_policy` when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_policy: Option<String>,
    /// The code exchange.
    pub token: Template,
    /// The refresh, when the provider has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<Template>,
}

/// A validated request template.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Upper-case method.
    pub method: String,
    /// Absolute URL.
    pub url: String,
    /// Header templates; the values are secrets.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Form body template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form: Option<BTreeMap<String, String>>,
    /// JSON body template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    /// JSON pointers into the response.
    pub outputs: Outputs,
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
            .finish()
    }
}

/// Validated JSON pointers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outputs {
    /// Pointer to the access token (a non-empty string).
    pub access_token: String,
    /// Pointer to the granted scopes.
    pub scope: String,
    /// Pointer to the refresh token; absent or `null` in a response = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Pointer to the lifetime in seconds; absent or `null` in a response = unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
}

/// Which of the two requests a template is; decides the placeholders it may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The code exchange.
    Token,
    /// The refresh.
    Refresh,
}

impl Step {
    /// `token` or `refresh`, as in the field names.
    pub fn name(self) -> &'static str {
        match self {
            Step::Token => "token",
            Step::Refresh => "refresh",
        }
    }
}

/// What the placeholders of one exchange stand for.
pub struct Inputs<'a> {
    /// `{client_id}`.
    pub client_id: &'a str,
    /// `{client_secret}`.
    pub client_secret: Option<&'a Secret>,
    /// `{redirect_uri}`.
    pub redirect_uri: &'a str,
    /// `{authorization_code}` (token step).
    pub authorization_code: Option<&'a str>,
    /// `{code_verifier}` (token step, PKCE).
    pub code_verifier: Option<&'a Secret>,
    /// `{refresh_token}` (refresh step).
    pub refresh_token: Option<&'a Secret>,
}

impl Inputs<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        match name {
            "client_id" => Some(self.client_id),
            "client_secret" => self.client_secret.map(Secret::expose),
            "redirect_uri" => Some(self.redirect_uri),
            "authorization_code" => self.authorization_code,
            "code_verifier" => self.code_verifier.map(Secret::expose),
            "refresh_token" => self.refresh_token.map(Secret::expose),
            _ => None,
        }
    }
}

/// What the rest of the app's configuration decides for the webhook's validation.
pub struct Context<'a> {
    /// The app's org (policies are scoped by org).
    pub org: &'a str,
    /// The app's `egress_policy`, used when the webhook names none.
    pub app_policy: &'a str,
    /// The policies in force.
    pub policies: &'a PolicySet,
    /// `{code_verifier}` exists only with PKCE.
    pub pkce: bool,
    /// `{client_secret}` exists only when the app has a secret (given now or stored).
    pub has_secret: bool,
}

/// Checks `spec`, adding every problem to `errs` under `webhook.…` field names.
pub fn validate(spec: &WebhookSpec, ctx: &Context<'_>, errs: &mut FieldErrors) -> Option<Webhook> {
    let before = errs.len();
    let policy = match spec.egress_policy.as_deref().map(str::trim) {
        None => ctx.app_policy,
        Some("") => {
            errs.insert("webhook.egress_policy".into(), "must not be empty".into());
            ctx.app_policy
        }
        Some(p) => {
            if ctx.policies.policy_route(p).is_none() {
                errs.insert(
                    "webhook.egress_policy".into(),
                    format!("no policy named {p:?} is loaded"),
                );
            }
            p
        }
    };
    let token = match &spec.token {
        Some(t) => validate_template(t, Step::Token, policy, ctx, errs),
        None => {
            errs.insert("webhook.token".into(), "required".into());
            None
        }
    };
    let refresh = spec
        .refresh
        .as_ref()
        .map(|t| validate_template(t, Step::Refresh, policy, ctx, errs));
    if errs.len() != before {
        return None;
    }
    Some(Webhook {
        egress_policy: spec.egress_policy.as_deref().map(|p| p.trim().to_string()),
        token: token?,
        refresh: refresh.flatten(),
    })
}

fn validate_template(
    t: &TemplateSpec,
    step: Step,
    policy: &str,
    ctx: &Context<'_>,
    errs: &mut FieldErrors,
) -> Option<Template> {
    let field = |f: &str| format!("webhook.{}.{f}", step.name());
    let before = errs.len();
    let method = t.method.as_deref().unwrap_or("POST").to_ascii_uppercase();
    if !METHODS.contains(&method.as_str()) {
        errs.insert(
            field("method"),
            format!("must be one of {}", METHODS.join(", ")),
        );
    }
    let url = t.url.as_deref().map(str::trim).unwrap_or_default();
    if url.is_empty() {
        errs.insert(field("url"), "required".into());
    } else if url.contains(['{', '}']) {
        errs.insert(
            field("url"),
            "placeholders are allowed in headers, form and json, not in the URL".into(),
        );
    } else if let Some((host, port)) = check_url(&field("url"), url, errs) {
        // The app's own policy is checked by the app's validation; a webhook policy that
        // does not exist is already reported under `webhook.egress_policy`.
        if ctx.policies.policy_route(policy).is_some() {
            if let Some(p) = token_endpoint_problem(ctx.policies, policy, ctx.org, &host, port) {
                errs.insert(field("url"), p);
            }
        }
    }
    let check = |text: &str, at: &str, errs: &mut FieldErrors, name: &str| {
        if let Err(e) = check_placeholders(text, step, ctx) {
            let place = if at.is_empty() {
                String::new()
            } else {
                format!("at {at}: ")
            };
            errs.entry(field(name)).or_insert(format!("{place}{e}"));
        }
    };
    let mut headers = BTreeMap::new();
    for (name, value) in &t.headers {
        let lower = name.to_ascii_lowercase();
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            errs.insert(field("headers"), format!("{name:?} is not a header name"));
        } else if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("proxy-") {
            errs.insert(
                field("headers"),
                format!("{name:?} is set by tollgate and cannot be templated"),
            );
        }
        match value {
            None => {
                errs.insert(
                    field("headers"),
                    format!(
                        "{name:?} has no value (null keeps the stored value, and none is stored)"
                    ),
                );
            }
            Some(v) => {
                // Never quote the value: it is a secret.
                if HeaderValue::from_str(v).is_err() {
                    errs.insert(
                        field("headers"),
                        format!("the value of {name:?} is not a valid header value"),
                    );
                }
                check(v, name, errs, "headers");
                headers.insert(name.clone(), v.clone());
            }
        }
    }
    if t.form.is_some() && t.json.is_some() {
        errs.insert(
            field("form"),
            "give either form or json as the body, not both".into(),
        );
    }
    if method == "GET" && (t.form.is_some() || t.json.is_some()) {
        errs.insert(field("method"), "a GET request has no body".into());
    }
    for (k, v) in t.form.iter().flatten() {
        check(v, k, errs, "form");
    }
    if let Some(json) = &t.json {
        let mut strings = Vec::new();
        json_strings(json, String::new(), &mut strings);
        for (at, s) in strings {
            check(s, &at, errs, "json");
        }
    }
    let outputs = validate_outputs(t.outputs.as_ref(), &field("outputs"), errs);
    if errs.len() != before {
        return None;
    }
    Some(Template {
        method,
        url: url.to_string(),
        headers,
        form: t.form.clone(),
        json: t.json.clone(),
        outputs: outputs?,
    })
}

fn validate_outputs(
    spec: Option<&OutputsSpec>,
    field: &str,
    errs: &mut FieldErrors,
) -> Option<Outputs> {
    let Some(spec) = spec else {
        errs.insert(
            field.into(),
            "required: JSON pointers for access_token and scope".into(),
        );
        return None;
    };
    let mut pointer = |name: &str, p: &Option<String>, required: bool| -> Option<String> {
        match p {
            None if required => {
                errs.insert(format!("{field}.{name}"), "required".into());
                None
            }
            None => None,
            Some(p) => match check_pointer(p) {
                Ok(()) => Some(p.clone()),
                Err(e) => {
                    errs.insert(format!("{field}.{name}"), e);
                    None
                }
            },
        }
    };
    let access_token = pointer("access_token", &spec.access_token, true);
    let scope = pointer("scope", &spec.scope, true);
    let refresh_token = pointer("refresh_token", &spec.refresh_token, false);
    let expires_in = pointer("expires_in", &spec.expires_in, false);
    Some(Outputs {
        access_token: access_token?,
        scope: scope?,
        refresh_token,
        expires_in,
    })
}

/// RFC 6901: `/`-separated reference tokens, `~` only as `~0` or `~1`. The empty pointer (the
/// whole document) is refused: no output can be the whole response.
fn check_pointer(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!(
            "{p:?} is not a JSON pointer (RFC 6901): it must start with '/', e.g. \"/access_token\""
        ));
    }
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!(
                "{p:?} is not a JSON pointer (RFC 6901): '~' must be followed by 0 or 1"
            ));
        }
    }
    Ok(())
}

/// Every string value in `v` with its JSON pointer.
fn json_strings<'a>(v: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match v {
        Value::String(s) => out.push((at, s)),
        Value::Array(list) => {
            for (i, x) in list.iter().enumerate() {
                json_strings(x, format!("{at}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (k, x) in map {
                let token = k.replace('~', "~0").replace('/', "~1");
                json_strings(x, format!("{at}/{token}"), out);
            }
        }
        _ => {}
    }
}

/// One piece of a template string.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Placeholder(&'a str),
}

/// Splits a template string; `{{` and `}}` are literal braces.
fn pieces(s: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find(['{', '}']) {
        if i > 0 {
            out.push(Piece::Text(&rest[..i]));
        }
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{{").or_else(|| tail.strip_prefix("}}")) {
            out.push(Piece::Text(&tail[..1]));
            rest = after;
        } else if tail.starts_with('}') {
            return Err("a lone '}' (write }} for a literal brace)".into());
        } else {
            let Some(end) = tail.find('}') else {
                return Err("an unclosed '{' (write {{ for a literal brace)".into());
            };
            out.push(Piece::Placeholder(&tail[1..end]));
            rest = &tail[end + 1..];
        }
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

/// Whether every placeholder in `text` is known and has a value in `step` for this app.
fn check_placeholders(text: &str, step: Step, ctx: &Context<'_>) -> Result<(), String> {
    for piece in pieces(text)? {
        let Piece::Placeholder(name) = piece else {
            continue;
        };
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{name}}}; the inputs are {}",
                PLACEHOLDERS
                    .iter()
                    .map(|p| format!("{{{p}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let unavailable = match (name, step) {
            ("authorization_code" | "code_verifier", Step::Refresh) => {
                Some("is available only in the token request")
            }
            ("refresh_token", Step::Token) => Some("is available only in the refresh request"),
            ("code_verifier", _) if !ctx.pkce => Some("is available only when pkce is true"),
            ("client_secret", _) if !ctx.has_secret => {
                Some("needs a client_secret, and the app has none")
            }
            _ => None,
        };
        if let Some(why) = unavailable {
            return Err(format!("{{{name}}} {why}"));
        }
    }
    Ok(())
}

/// Substitutes the inputs into `text`.
fn render(text: &str, inputs: &Inputs<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    for piece in pieces(text)? {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Placeholder(name) => out.push_str(
                inputs
                    .get(name)
                    .ok_or_else(|| format!("{{{name}}} has no value here"))?,
            ),
        }
    }
    Ok(out)
}

fn render_json(v: &Value, inputs: &Inputs<'_>) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => Value::String(render(s, inputs)?),
        Value::Array(list) => Value::Array(
            list.iter()
                .map(|x| render_json(x, inputs))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, x)| Ok((k.clone(), render_json(x, inputs)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

impl Webhook {
    /// The stored form (inside the sealed app record).
    pub fn to_stored(&self) -> Value {
        // Serializing plain strings, maps and JSON values cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Reads the stored form back.
    pub fn from_stored(v: &Value) -> Result<Webhook, String> {
        Webhook::deserialize(v).map_err(|e| format!("stored webhook handshake: {e}"))
    }

    /// As a spec: with header values (`reveal`, to merge a PATCH over), or with every header
    /// value `null` (the API view: names visible, values never).
    pub fn to_spec(&self, reveal: bool) -> WebhookSpec {
        let spec = |t: &Template| TemplateSpec {
            method: Some(t.method.clone()),
            url: Some(t.url.clone()),
            headers: t
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), reveal.then(|| v.clone())))
                .collect(),
            form: t.form.clone(),
            json: t.json.clone(),
            outputs: Some(OutputsSpec {
                access_token: Some(t.outputs.access_token.clone()),
                scope: Some(t.outputs.scope.clone()),
                refresh_token: t.outputs.refresh_token.clone(),
                expires_in: t.outputs.expires_in.clone(),
            }),
        };
        WebhookSpec {
            egress_policy: self.egress_policy.clone(),
            token: Some(spec(&self.token)),
            refresh: self.refresh.as_ref().map(spec),
        }
    }

    /// The policy the handshake requests are sent under.
    pub fn policy<'a>(&'a self, app_policy: &'a str) -> &'a str {
        self.egress_policy.as_deref().unwrap_or(app_policy)
    }

    /// Every template with its step.
    pub fn templates(&self) -> impl Iterator<Item = (Step, &Template)> {
        std::iter::once((Step::Token, &self.token))
            .chain(self.refresh.as_ref().map(|t| (Step::Refresh, t)))
    }
}

impl Template {
    /// The request for `inputs`: rendered headers and body, `Accept: application/json`
    /// unless the template sets its own, and the body's content type.
    pub fn request(&self, inputs: &Inputs<'_>) -> Result<http::Request<Vec<u8>>, TokenError> {
        let config = |e: String| TokenError::Config(format!("webhook handshake: {e}"));
        let method = Method::from_bytes(self.method.as_bytes())
            .map_err(|_| config(format!("invalid method {:?}", self.method)))?;
        let mut req = http::Request::builder().method(method).uri(&self.url);
        let (content_type, body) = match (&self.form, &self.json) {
            (Some(form), _) => {
                let mut ser = url::form_urlencoded::Serializer::new(String::new());
                for (k, v) in form {
                    ser.append_pair(k, &render(v, inputs).map_err(config)?);
                }
                (
                    Some("application/x-www-form-urlencoded"),
                    ser.finish().into_bytes(),
                )
            }
            (None, Some(json)) => {
                let rendered = render_json(json, inputs).map_err(config)?;
                (
                    Some("application/json"),
                    serde_json::to_vec(&rendered).map_err(|e| config(e.to_string()))?,
                )
            }
            (None, None) => (None, Vec::new()),
        };
        let headers = req
            .headers_mut()
            .ok_or_else(|| config(format!("invalid URL {:?}", self.url)))?;
        if let Some(ct) = content_type {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| config(format!("{name:?} is not a header name")))?;
            // The rendered value can hold a token or code: never quote it in the error.
            let value =
                HeaderValue::from_str(&render(value, inputs).map_err(config)?).map_err(|_| {
                    config(format!(
                        "the rendered value of {name} is not a header value"
                    ))
                })?;
            headers.insert(name, value);
        }
        req.body(body)
            .map_err(|_| config(format!("invalid URL {:?}", self.url)))
    }
}

impl Outputs {
    /// Reads a handshake response. 5xx responses never get here (they are transport errors).
    /// A non-2xx status, or a 2xx whose body has a string `error`, is a provider error with
    /// the body's `error` code (`http_<status>` when it has none); otherwise every output is
    /// read through its pointer, and a missing or mistyped required one names the pointer.
    pub fn grant(&self, status: u16, body: &[u8]) -> Result<Grant, TokenError> {
        let json: Option<Value> = serde_json::from_slice(body).ok();
        let error = json
            .as_ref()
            .and_then(|v| v.get("error"))
            .and_then(Value::as_str);
        if !(200..300).contains(&status) || error.is_some() {
            let code = match error {
                Some(e) => e.to_string(),
                None if (300..400).contains(&status) => {
                    format!("http_{status} (redirects are not followed)")
                }
                None => format!("http_{status}"),
            };
            let description = json
                .as_ref()
                .and_then(|v| v.get("error_description"))
                .and_then(Value::as_str)
                .map(str::to_string);
            return Err(TokenError::Provider { code, description });
        }
        let Some(json) = json else {
            return Err(TokenError::InvalidResponse(
                "the handshake response is not JSON".into(),
            ));
        };
        let invalid = |p: &str, name: &str, what: &str| {
            TokenError::InvalidResponse(format!("{what} at {p:?} ({name})"))
        };
        let present = |p: &str| json.pointer(p).filter(|v| !v.is_null());
        let access_token = match present(&self.access_token) {
            Some(Value::String(s)) if !s.is_empty() => Secret::new(s.clone()),
            Some(_) => {
                return Err(invalid(
                    &self.access_token,
                    "access_token",
                    "not a non-empty string",
                ))
            }
            None => return Err(invalid(&self.access_token, "access_token", "no value")),
        };
        let scopes = match present(&self.scope) {
            Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
            Some(Value::Array(list)) => list
                .iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| invalid(&self.scope, "scope", "not a list of strings"))?,
            Some(_) => {
                return Err(invalid(
                    &self.scope,
                    "scope",
                    "not a string or a list of strings",
                ))
            }
            None => return Err(invalid(&self.scope, "scope", "no value")),
        };
        let refresh_token = match self.refresh_token.as_deref().and_then(present) {
            None => None,
            Some(Value::String(s)) if !s.is_empty() => Some(Secret::new(s.clone())),
            Some(_) => {
                let p = self.refresh_token.as_deref().unwrap_or_default();
                return Err(invalid(p, "refresh_token", "not a non-empty string"));
            }
        };
        let expires_in = match self.expires_in.as_deref() {
            None => None,
            Some(p) => match present(p) {
                None => None,
                Some(v) => Some(
                    seconds(v)
                        .ok_or_else(|| invalid(p, "expires_in", "not a number of seconds"))?,
                ),
            },
        };
        Ok(Grant {
            access_token,
            refresh_token,
            token_type: Some("bearer".into()),
            expires_in,
            scopes: Some(scopes),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies() -> PolicySet {
        PolicySet::from_sources(&[(
            "p.toml".into(),
            r#"
[[policy]]
name = "idp"
route = "direct"
  [[policy.allow]]
  hosts = ["idp.example"]
  ports = [443]
[[policy]]
name = "onprem"
route = "agent:dc1"
  [[policy.allow]]
  hosts = ["idp.corp.example"]
  ports = [443]
"#
            .into(),
        )])
        .unwrap()
    }

    fn ctx(policies: &PolicySet) -> Context<'_> {
        Context {
            org: "acme",
            app_policy: "idp",
            policies,
            pkce: true,
            has_secret: false,
        }
    }

    fn good() -> WebhookSpec {
        serde_json::from_value(serde_json::json!({
            "egress_policy": "onprem",
            "token": {
                "url": "https://idp.corp.example/handshake/token",
                "headers": {"X-Api-Key": "k-1"},
                "json": {"grant": {"code": "{authorization_code}", "verifier": "{code_verifier}"},
                         "client": "{client_id}", "back": ["{redirect_uri}"], "n": 1},
                "outputs": {"access_token": "/result/token", "scope": "/result/scopes",
                            "refresh_token": "/result/renew", "expires_in": "/result/ttl"}
            },
            "refresh": {
                "method": "put",
                "url": "https://idp.corp.example/handshake/refresh",
                "form": {"renew": "{refresh_token}", "literal": "{{x}}"},
                "outputs": {"access_token": "/token", "scope": "/scope"}
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_good_webhook_validates_and_survives_the_store_round_trip() {
        let p = policies();
        let mut errs = FieldErrors::new();
        let w = validate(&good(), &ctx(&p), &mut errs).expect("valid");
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(w.policy("idp"), "onprem");
        assert_eq!(w.refresh.as_ref().unwrap().method, "PUT");
        assert_eq!(Webhook::from_stored(&w.to_stored()).unwrap(), w);
        // The view never shows header values; the revealed spec does.
        let view = serde_json::to_value(w.to_spec(false)).unwrap();
        assert_eq!(view["token"]["headers"]["X-Api-Key"], Value::Null);
        assert!(!view.to_string().contains("k-1"));
        assert_eq!(
            w.to_spec(true).token.unwrap().headers["X-Api-Key"].as_deref(),
            Some("k-1")
        );
        assert!(!format!("{w:?}").contains("k-1"));
    }

    #[test]
    fn each_invalid_part_is_named() {
        type Edit = fn(&mut WebhookSpec);
        let cases: &[(&str, &str, &str, Edit)] = &[
            ("no token", "webhook.token", "required", |w| w.token = None),
            ("unknown placeholder", "webhook.token.json", "{nope}", |w| {
                w.token.as_mut().unwrap().json = Some(serde_json::json!({"a": {"b": ["{nope}"]}}))
            }),
            ("placeholder path", "webhook.token.json", "/a/b/0", |w| {
                w.token.as_mut().unwrap().json = Some(serde_json::json!({"a": {"b": ["{nope}"]}}))
            }),
            (
                "refresh in token",
                "webhook.token.headers",
                "refresh request",
                |w| {
                    w.token
                        .as_mut()
                        .unwrap()
                        .headers
                        .insert("X-R".into(), Some("{refresh_token}".into()));
                },
            ),
            (
                "code in refresh",
                "webhook.refresh.form",
                "token request",
                |w| {
                    w.refresh.as_mut().unwrap().form =
                        Some([("c".to_string(), "{authorization_code}".to_string())].into())
                },
            ),
            (
                "secret without one",
                "webhook.token.json",
                "client_secret",
                |w| {
                    w.token.as_mut().unwrap().json =
                        Some(serde_json::json!({"s": "{client_secret}"}))
                },
            ),
            ("unclosed brace", "webhook.refresh.form", "unclosed", |w| {
                w.refresh.as_mut().unwrap().form =
                    Some([("c".to_string(), "{refresh_token".to_string())].into())
            }),
            ("lone closing brace", "webhook.refresh.form", "lone", |w| {
                w.refresh.as_mut().unwrap().form =
                    Some([("c".to_string(), "x}".to_string())].into())
            }),
            ("both bodies", "webhook.token.form", "not both", |w| {
                w.token.as_mut().unwrap().form = Some(BTreeMap::new())
            }),
            ("get with body", "webhook.token.method", "no body", |w| {
                w.token.as_mut().unwrap().method = Some("GET".into())
            }),
            ("bad method", "webhook.token.method", "one of", |w| {
                w.token.as_mut().unwrap().method = Some("DELETE".into())
            }),
            ("port out of range", "webhook.token.url", "port", |w| {
                w.token.as_mut().unwrap().url = Some("https://idp.corp.example:70000/t".into())
            }),
            ("no url", "webhook.token.url", "required", |w| {
                w.token.as_mut().unwrap().url = None
            }),
            (
                "placeholder in url",
                "webhook.token.url",
                "not in the URL",
                |w| {
                    w.token.as_mut().unwrap().url =
                        Some("https://idp.corp.example/t?c={authorization_code}".into())
                },
            ),
            (
                "url outside policy",
                "webhook.token.url",
                "does not allow",
                |w| w.token.as_mut().unwrap().url = Some("https://other.example/t".into()),
            ),
            ("public http", "webhook.token.url", "https", |w| {
                w.token.as_mut().unwrap().url = Some("http://idp.corp.example/t".into())
            }),
            (
                "unknown policy",
                "webhook.egress_policy",
                "no policy",
                |w| w.egress_policy = Some("nope".into()),
            ),
            (
                "reserved header",
                "webhook.token.headers",
                "set by tollgate",
                |w| {
                    w.token
                        .as_mut()
                        .unwrap()
                        .headers
                        .insert("Content-Length".into(), Some("1".into()));
                },
            ),
            (
                "null header on create",
                "webhook.token.headers",
                "no value",
                |w| {
                    w.token
                        .as_mut()
                        .unwrap()
                        .headers
                        .insert("X-Other".into(), None);
                },
            ),
            ("no outputs", "webhook.token.outputs", "required", |w| {
                w.token.as_mut().unwrap().outputs = None
            }),
            (
                "no scope output",
                "webhook.token.outputs.scope",
                "required",
                |w| w.token.as_mut().unwrap().outputs.as_mut().unwrap().scope = None,
            ),
            (
                "bad pointer",
                "webhook.refresh.outputs.access_token",
                "RFC 6901",
                |w| {
                    w.refresh
                        .as_mut()
                        .unwrap()
                        .outputs
                        .as_mut()
                        .unwrap()
                        .access_token = Some("token".into())
                },
            ),
            ("bad escape", "webhook.token.outputs.expires_in", "~", |w| {
                w.token
                    .as_mut()
                    .unwrap()
                    .outputs
                    .as_mut()
                    .unwrap()
                    .expires_in = Some("/a~2".into())
            }),
        ];
        let p = policies();
        for (name, field, needle, edit) in cases {
            let mut spec = good();
            edit(&mut spec);
            let mut errs = FieldErrors::new();
            assert!(validate(&spec, &ctx(&p), &mut errs).is_none(), "{name}");
            let msg = errs
                .get(*field)
                .unwrap_or_else(|| panic!("{name}: {errs:?}"));
            assert!(msg.contains(needle), "{name}: {msg}");
        }
        // Without PKCE there is no verifier.
        let mut errs = FieldErrors::new();
        let no_pkce = Context {
            pkce: false,
            ..ctx(&p)
        };
        assert!(validate(&good(), &no_pkce, &mut errs).is_none());
        assert!(errs["webhook.token.json"].contains("pkce"), "{errs:?}");
    }

    #[test]
    fn null_headers_keep_the_stored_value_case_insensitively() {
        let stored = good();
        let mut patch = good();
        let t = patch.token.as_mut().unwrap();
        t.headers.clear();
        t.headers.insert("x-api-key".into(), None);
        t.headers.insert("X-New".into(), None);
        patch.keep_headers_from(Some(&stored));
        let h = &patch.token.as_ref().unwrap().headers;
        assert_eq!(h["x-api-key"].as_deref(), Some("k-1"));
        assert_eq!(h["X-New"], None);
    }

    #[test]
    fn templates_render_every_input_and_literal_braces() {
        let p = policies();
        let w = validate(&good(), &ctx(&p), &mut FieldErrors::new()).unwrap();
        let verifier = Secret::new("ver");
        let inputs = Inputs {
            client_id: "cid",
            client_secret: None,
            redirect_uri: "https://tg/oauth/callback",
            authorization_code: Some("code-1"),
            code_verifier: Some(&verifier),
            refresh_token: None,
        };
        let req = w.token.request(&inputs).unwrap();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.headers()["x-api-key"], "k-1");
        assert_eq!(req.headers()[CONTENT_TYPE], "application/json");
        let body: Value = serde_json::from_slice(req.body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"grant": {"code": "code-1", "verifier": "ver"},
                               "client": "cid", "back": ["https://tg/oauth/callback"], "n": 1})
        );
        let rt = Secret::new("rt&1");
        let inputs = Inputs {
            authorization_code: None,
            code_verifier: None,
            refresh_token: Some(&rt),
            ..inputs
        };
        let req = w.refresh.as_ref().unwrap().request(&inputs).unwrap();
        assert_eq!(req.method(), Method::PUT);
        assert_eq!(
            std::str::from_utf8(req.body()).unwrap(),
            "literal=%7Bx%7D&renew=rt%261"
        );
    }

    #[test]
    fn responses_are_read_through_the_pointers() {
        let outputs = Outputs {
            access_token: "/result/token".into(),
            scope: "/result/scopes".into(),
            refresh_token: Some("/result/renew".into()),
            expires_in: Some("/result/ttl".into()),
        };
        struct Case {
            name: &'static str,
            status: u16,
            body: &'static str,
            check: fn(Result<Grant, TokenError>),
        }
        let cases = [
            Case {
                name: "nested with string ttl",
                status: 200,
                body: r#"{"result":{"token":"at","scopes":["a","b"],"renew":"rt","ttl":"3"}}"#,
                check: |g| {
                    let g = g.unwrap();
                    assert_eq!(g.access_token.expose(), "at");
                    assert_eq!(g.refresh_token.unwrap().expose(), "rt");
                    assert_eq!(g.expires_in, Some(3));
                    assert_eq!(g.scopes.unwrap(), ["a", "b"]);
                },
            },
            Case {
                name: "numeric ttl, spaced scopes, optional outputs absent",
                status: 201,
                body: r#"{"result":{"token":"at","scopes":"a b","ttl":60.0}}"#,
                check: |g| {
                    let g = g.unwrap();
                    assert!(g.refresh_token.is_none());
                    assert_eq!(g.expires_in, Some(60));
                    assert_eq!(g.scopes.unwrap(), ["a", "b"]);
                },
            },
            Case {
                name: "missing access token names the pointer",
                status: 200,
                body: r#"{"result":{}}"#,
                check: |g| {
                    let e = g.unwrap_err().to_string();
                    assert!(
                        e.contains("\"/result/token\"") && e.contains("access_token"),
                        "{e}"
                    );
                },
            },
            Case {
                name: "missing scope names the pointer",
                status: 200,
                body: r#"{"result":{"token":"at"}}"#,
                check: |g| assert!(g.unwrap_err().to_string().contains("/result/scopes")),
            },
            Case {
                name: "garbage ttl",
                status: 200,
                body: r#"{"result":{"token":"at","scopes":"a","ttl":"soon"}}"#,
                check: |g| assert!(g.unwrap_err().to_string().contains("expires_in")),
            },
            Case {
                name: "error with 200",
                status: 200,
                body: r#"{"error":"invalid_grant"}"#,
                check: |g| assert_eq!(g.unwrap_err().provider_code(), Some("invalid_grant")),
            },
            Case {
                name: "4xx without a code",
                status: 403,
                body: "forbidden",
                check: |g| assert_eq!(g.unwrap_err().provider_code(), Some("http_403")),
            },
            Case {
                name: "not JSON",
                status: 200,
                body: "<html>",
                check: |g| assert!(g.unwrap_err().to_string().contains("not JSON")),
            },
        ];
        for c in cases {
            let r = outputs.grant(c.status, c.body.as_bytes());
            eprintln!("case: {}", c.name);
            (c.check)(r);
        }
    }
}
