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
use serde_json::{Map, Value};

/// The files of `providers/`, embedded at build time.
const FILES: &[(&str, &str)] = &[("github.toml", include_str!("../../providers/github.toml"))];

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
    /// The provider's documentation the entry was checked against.
    pub docs: String,
    /// Placeholders the admin must fill at create time (`tenant`, `site`), with what each is.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
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
        for (param, what) in &self.params {
            if params.get(param).is_none_or(|v| v.is_empty()) {
                return Err(CatalogError::MissingParam {
                    provider: self.id.clone(),
                    param: param.clone(),
                    what: what.clone(),
                });
            }
        }
        let mut doc = Map::new();
        doc.insert("name".into(), Value::String(self.name.clone()));
        doc.insert(
            "description".into(),
            Value::String(self.description.clone()),
        );
        for (k, v) in &self.app {
            doc.insert(k.clone(), fill(to_json(v), params));
        }
        Ok(doc)
    }
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

    #[test]
    fn every_file_parses() {
        assert_eq!(providers().len(), FILES.len());
    }

    #[test]
    fn github_gives_an_app_document() {
        let doc = provider("github")
            .unwrap()
            .app_document(&BTreeMap::new())
            .unwrap();
        assert_eq!(doc["name"], "GitHub");
        assert_eq!(
            doc["token_url"],
            "https://github.com/login/oauth/access_token"
        );
        assert!(matches!(
            provider("nope"),
            Err(CatalogError::UnknownProvider(_))
        ));
    }
}
