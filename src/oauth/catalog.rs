//! The provider catalog: `providers/*.toml`, embedded in the binary, each file one provider's
//! OAuth endpoints, default scopes, parameters and quirks written as data. An app is created
//! from an entry by filling its `{placeholders}` (a Microsoft tenant, an Atlassian site) and
//! adding what only the admin knows (id, client id and secret, egress policy).
//!
//! `tollgate app providers`, `tollgate app create --provider`, `GET /v1/providers` and the
//! console's "create from catalog" all read this one module.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::endpoint::FieldErrors;

/// The files of `providers/`, embedded at build time.
const FILES: &[(&str, &str)] = &[
    (
        "atlassian.toml",
        include_str!("../../providers/atlassian.toml"),
    ),
    ("github.toml", include_str!("../../providers/github.toml")),
    ("gitlab.toml", include_str!("../../providers/gitlab.toml")),
    ("google.toml", include_str!("../../providers/google.toml")),
    ("hubspot.toml", include_str!("../../providers/hubspot.toml")),
    ("linear.toml", include_str!("../../providers/linear.toml")),
    (
        "microsoft.toml",
        include_str!("../../providers/microsoft.toml"),
    ),
    ("notion.toml", include_str!("../../providers/notion.toml")),
    (
        "salesforce.toml",
        include_str!("../../providers/salesforce.toml"),
    ),
    ("slack.toml", include_str!("../../providers/slack.toml")),
];

/// One provider of the catalog.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// The catalog id (`github`), used by `--provider`.
    pub id: String,
    /// Display name, the default app `name`.
    pub name: String,
    /// One line for listings, the default app `description`.
    pub description: String,
    /// The provider's documentation the entry was written from (each file says what was re-checked).
    pub docs: String,
    /// Placeholders the admin must fill at create time (`tenant`, `site`), with what each is.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Values of `params` used when the admin gives none (`gitlab.com` for a GitLab
    /// instance); a param without one is required.
    #[serde(default)]
    pub defaults: BTreeMap<String, String>,
    /// The provider's known quirks that tollgate does not act on (yet), in one sentence
    /// each: shown by `tollgate app providers`, `GET /v1/providers` and the console, so
    /// nobody meets them by surprise.
    #[serde(default)]
    pub quirks: Vec<String>,
    /// The app fields this entry sets, in the admin API's JSON shape, with `{name}`
    /// placeholders in string values.
    app: toml::Table,
}

/// Why an app could not be made from a catalog entry.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CatalogError {
    /// No provider with this id.
    #[error("no provider {0:?} in the catalog (see `tollgate app providers`)")]
    UnknownProvider(String),
    /// A placeholder the entry needs was not given.
    #[error("provider {provider:?} needs the parameter {param:?}: {what}")]
    MissingParam {
        /// The provider id.
        provider: String,
        /// The parameter name.
        param: String,
        /// What the parameter is.
        what: String,
    },
    /// A parameter the entry does not have.
    #[error("provider {provider:?} has no parameter {param:?} (it has: {known})")]
    UnknownParam {
        /// The provider id.
        provider: String,
        /// The parameter name.
        param: String,
        /// The entry's parameters, comma-separated.
        known: String,
    },
    /// A parameter value that is not a host name, tenant or domain.
    #[error("the parameter {param:?} of provider {provider:?} must be a host name, tenant id or domain (letters, digits, '.', '-', '_')")]
    InvalidParam {
        /// The provider id.
        provider: String,
        /// The parameter name.
        param: String,
    },
}

impl CatalogError {
    /// The parameter the error is about, for field errors.
    pub fn param(&self) -> Option<&str> {
        match self {
            CatalogError::UnknownProvider(_) => None,
            CatalogError::MissingParam { param, .. }
            | CatalogError::UnknownParam { param, .. }
            | CatalogError::InvalidParam { param, .. } => Some(param),
        }
    }
}

/// Every provider, sorted by id; parsed once. A file that does not parse is a build defect,
/// caught by the test that parses every file.
pub fn providers() -> &'static [Provider] {
    static ALL: OnceLock<Vec<Provider>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut all: Vec<Provider> = FILES
            .iter()
            .filter_map(|(name, text)| match toml::from_str(text) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::error!(file = name, error = %e, "a catalog file does not parse");
                    None
                }
            })
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    })
}

/// The provider with this id.
pub fn provider(id: &str) -> Result<&'static Provider, CatalogError> {
    providers()
        .iter()
        .find(|p| p.id == id)
        .ok_or_else(|| CatalogError::UnknownProvider(id.to_string()))
}

impl Provider {
    /// The app document (admin API JSON) this entry gives, with `params` filled in. The
    /// caller adds `id`, `client_id`, `client_secret`, `egress_policy` and whatever it
    /// overrides, then creates the app through `oauth::admin` like any other.
    pub fn app_document(
        &self,
        params: &BTreeMap<String, String>,
    ) -> Result<Map<String, Value>, CatalogError> {
        if let Some(unknown) = params.keys().find(|k| !self.params.contains_key(*k)) {
            return Err(CatalogError::UnknownParam {
                provider: self.id.clone(),
                param: unknown.clone(),
                known: self.params.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        }
        let mut given = self.defaults.clone();
        given.extend(
            params
                .iter()
                .filter(|(_, v)| !v.trim().is_empty())
                .map(|(k, v)| (k.clone(), v.trim().to_string())),
        );
        for (param, what) in &self.params {
            match given.get(param) {
                None => {
                    return Err(CatalogError::MissingParam {
                        provider: self.id.clone(),
                        param: param.clone(),
                        what: what.clone(),
                    })
                }
                // Values land in URLs and host patterns: no URL syntax of their own.
                Some(v) if !is_param_value(v) => {
                    return Err(CatalogError::InvalidParam {
                        provider: self.id.clone(),
                        param: param.clone(),
                    })
                }
                Some(_) => {}
            }
        }
        let mut doc = Map::new();
        doc.insert("name".into(), Value::String(self.name.clone()));
        doc.insert(
            "description".into(),
            Value::String(self.description.clone()),
        );
        doc.insert(
            "approval_prompt".into(),
            Value::String(format!(
                "Connect your {} account: requests you make through tollgate to {} will be \
                 made as you, with the access you grant on the next page.",
                self.name, self.name
            )),
        );
        for (k, v) in &self.app {
            doc.insert(k.clone(), fill(to_json(v), &given));
        }
        Ok(doc)
    }

    /// The entry as `GET /v1/providers` shows it: everything but the app fields' values
    /// are as written (placeholders unfilled).
    pub fn view(&self) -> Value {
        let params: Vec<Value> = self
            .params
            .iter()
            .map(|(name, what)| {
                json!({"name": name, "description": what, "default": self.defaults.get(name)})
            })
            .collect();
        json!({
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "docs": self.docs,
            "params": params,
            "quirks": self.quirks,
            "app": to_json(&toml::Value::Table(self.app.clone())),
        })
    }
}

/// A parameter value: a host name, tenant id or domain (letters, digits, `.`, `-`, `_`).
fn is_param_value(v: &str) -> bool {
    v.len() <= 253
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// An admin's create document with `"provider": ID` (and `"provider_params": {...}`) made
/// into a plain app document: the entry's fields, overridden by every other field the
/// document gives. A document without `provider` is returned as it is. Errors name the field
/// (`provider`, `provider_params`, `provider_params.<name>`).
pub fn expand(doc: &Map<String, Value>) -> Result<Map<String, Value>, FieldErrors> {
    let Some(id) = doc.get("provider") else {
        return Ok(doc.clone());
    };
    let field = |k: &str, msg: String| FieldErrors::from([(k.to_string(), msg)]);
    let Some(id) = id.as_str() else {
        return Err(field("provider", "must be a catalog id (a string)".into()));
    };
    let provider = provider(id).map_err(|e| field("provider", e.to_string()))?;
    let mut params = BTreeMap::new();
    match doc.get("provider_params") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let Some(v) = v.as_str() else {
                    return Err(field(
                        &format!("provider_params.{k}"),
                        "must be a string".into(),
                    ));
                };
                params.insert(k.clone(), v.to_string());
            }
        }
        Some(_) => {
            return Err(field(
                "provider_params",
                "must be an object of name: value".into(),
            ))
        }
    }
    let mut out = provider
        .app_document(&params)
        .map_err(|e| match e.param() {
            Some(p) => field(&format!("provider_params.{p}"), e.to_string()),
            None => field("provider", e.to_string()),
        })?;
    for (k, v) in doc {
        if k != "provider" && k != "provider_params" {
            out.insert(k.clone(), v.clone());
        }
    }
    Ok(out)
}

/// The catalog as a Markdown table (docs/providers.md holds it; a test keeps them in step).
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| id | name | parameters | revocation | documentation |\n|---|---|---|---|---|\n",
    );
    for p in providers() {
        let params: Vec<String> = p
            .params
            .keys()
            .map(|k| match p.defaults.get(k) {
                Some(d) => format!("`{k}` (default `{d}`)"),
                None => format!("`{k}` (required)"),
            })
            .collect();
        let revocation = if p.app.contains_key("revocation") {
            "template"
        } else if p.app.contains_key("revocation_url") {
            "RFC 7009"
        } else {
            "none"
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | <{}> |\n",
            p.id,
            p.name,
            if params.is_empty() {
                "-".to_string()
            } else {
                params.join(", ")
            },
            revocation,
            p.docs
        ));
    }
    out
}

/// A TOML value as JSON.
fn to_json(v: &toml::Value) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Replaces `{name}` in every string of `v` with `params[name]`.
fn fill(v: Value, params: &BTreeMap<String, String>) -> Value {
    match v {
        Value::String(s) => {
            let mut out = s;
            for (k, val) in params {
                out = out.replace(&format!("{{{k}}}"), val);
            }
            Value::String(out)
        }
        Value::Array(a) => Value::Array(a.into_iter().map(|x| fill(x, params)).collect()),
        Value::Object(o) => {
            Value::Object(o.into_iter().map(|(k, x)| (k, fill(x, params))).collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::app::new_app;
    use crate::policy::PolicySet;

    /// Every URL string in a document.
    fn urls(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) if s.starts_with("https://") => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|x| urls(x, out)),
            Value::Object(o) => o.values().for_each(|x| urls(x, out)),
            _ => {}
        }
    }

    /// A policy `p` allowing port 443 of every host the document names.
    fn policy_for(doc: &Map<String, Value>) -> PolicySet {
        let mut found = Vec::new();
        urls(&Value::Object(doc.clone()), &mut found);
        let hosts: Vec<String> = found
            .iter()
            .filter_map(|u| url::Url::parse(u).ok()?.host_str().map(str::to_string))
            .map(|h| format!("{h:?}"))
            .collect();
        let text = format!(
            "[[policy]]\nname = \"p\"\nroute = \"direct\"\n  [[policy.allow]]\n  hosts = [{}]\n  ports = [443]\n",
            hosts.join(", ")
        );
        PolicySet::from_sources(&[("p.toml".into(), text)]).unwrap()
    }

    /// The fields only the admin knows.
    fn admin_fields(doc: &mut Map<String, Value>, id: &str) {
        doc.insert("id".into(), json!(id));
        doc.insert("client_id".into(), json!("client-1"));
        doc.insert("client_secret".into(), json!("secret-1"));
        doc.insert("egress_policy".into(), json!("p"));
    }

    #[test]
    fn every_file_parses_and_makes_a_valid_app() {
        assert_eq!(providers().len(), FILES.len());
        assert_eq!(providers().len(), 10);
        for p in providers() {
            assert!(p.docs.starts_with("https://"), "{}", p.id);
            let text = FILES.iter().find(|(n, _)| *n == format!("{}.toml", p.id));
            let (_, text) = text.unwrap_or_else(|| panic!("{} is not in {{id}}.toml", p.id));
            assert!(
                text.starts_with('#') && text.contains("https://"),
                "{}",
                p.id
            );
            for d in p.defaults.keys() {
                assert!(
                    p.params.contains_key(d),
                    "{}: default of no param {d}",
                    p.id
                );
            }
            // Every required param given, the defaults for the others.
            let params: BTreeMap<String, String> = p
                .params
                .keys()
                .filter(|k| !p.defaults.contains_key(*k))
                .map(|k| (k.clone(), "contoso.example".to_string()))
                .collect();
            let mut doc = p.app_document(&params).unwrap();
            let text = Value::Object(doc.clone()).to_string();
            for param in p.params.keys() {
                assert!(!text.contains(&format!("{{{param}}}")), "{text}");
            }
            admin_fields(&mut doc, &p.id);
            let policies = policy_for(&doc);
            let app = new_app(&doc, "acme", &policies, &BTreeMap::new())
                .unwrap_or_else(|e| panic!("{}: {e:?}", p.id));
            assert_eq!(app.name, p.name);
            assert!(!app.domains.is_empty());
        }
    }

    #[test]
    fn params_are_filled_defaulted_and_checked() {
        let gitlab = provider("gitlab").unwrap();
        let doc = gitlab.app_document(&BTreeMap::new()).unwrap();
        assert_eq!(doc["token_url"], "https://gitlab.com/oauth/token");
        assert_eq!(doc["domains"], json!(["gitlab.com"]));
        let own = BTreeMap::from([("instance".to_string(), "git.corp.example".to_string())]);
        let doc = gitlab.app_document(&own).unwrap();
        assert_eq!(
            doc["revocation_url"],
            "https://git.corp.example/oauth/revoke"
        );
        let entra = provider("microsoft").unwrap();
        let e = entra.app_document(&BTreeMap::new()).unwrap_err();
        assert_eq!(e.param(), Some("tenant"));
        assert!(e.to_string().contains("tenant"), "{e}");
        let bad = BTreeMap::from([("tenant".to_string(), "a/b?c".to_string())]);
        assert!(matches!(
            entra.app_document(&bad),
            Err(CatalogError::InvalidParam { .. })
        ));
        let other = BTreeMap::from([("site".to_string(), "x".to_string())]);
        assert!(matches!(
            gitlab.app_document(&other),
            Err(CatalogError::UnknownParam { .. })
        ));
        let google = provider("google").unwrap().app_document(&BTreeMap::new());
        assert_eq!(
            google.unwrap()["authorize_params"]["access_type"],
            "offline"
        );
        assert!(matches!(
            provider("nope"),
            Err(CatalogError::UnknownProvider(_))
        ));
        let view = provider("salesforce").unwrap().view();
        assert_eq!(view["params"][0]["default"], "login.salesforce.com");
        assert!(view["quirks"].as_array().is_some_and(|q| !q.is_empty()));
    }

    #[test]
    fn a_create_document_naming_a_provider_is_expanded() {
        let doc = json!({"provider": "microsoft", "provider_params": {"tenant": "contoso.example"},
                         "id": "graph", "scopes": ["User.Read"]});
        let out = expand(doc.as_object().unwrap()).unwrap();
        assert_eq!(out["scopes"], json!(["User.Read"]));
        assert_eq!(
            out["token_url"],
            "https://login.microsoftonline.com/contoso.example/oauth2/v2.0/token"
        );
        assert!(!out.contains_key("provider") && !out.contains_key("provider_params"));
        let missing = json!({"provider": "microsoft", "id": "graph"});
        let e = expand(missing.as_object().unwrap()).unwrap_err();
        assert!(e["provider_params.tenant"].contains("tenant"), "{e:?}");
        let unknown = json!({"provider": "myspace"});
        assert!(expand(unknown.as_object().unwrap()).unwrap_err()["provider"].contains("myspace"));
        let plain = json!({"id": "x"});
        assert_eq!(
            expand(plain.as_object().unwrap()).unwrap(),
            *plain.as_object().unwrap()
        );
    }

    #[test]
    fn docs_providers_md_lists_the_catalog() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/providers.md"))
                .unwrap();
        assert!(
            doc.contains(&markdown_table()),
            "docs/providers.md is out of step with providers/; its table should be:\n{}",
            markdown_table()
        );
    }
}
