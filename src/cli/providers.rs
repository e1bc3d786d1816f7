//! The catalog side of `tollgate app`: `app providers` lists the embedded catalog (no server
//! needed: it is the binary's own), and `app create --provider ID` builds the create
//! document that names a catalog entry, sent through the admin API like every `app`
//! command (the server fills the entry in, so its catalog is the one that counts).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, Context};
use serde_json::{json, Map, Value};

use crate::oauth::catalog;

/// `app create --provider ...`: what only the admin knows, the rest comes from the entry.
#[derive(Debug, Default, clap::Args)]
pub struct FromCatalog {
    /// Create from this catalog entry (`tollgate app providers` lists them).
    #[arg(long, value_name = "ID")]
    pub provider: Option<String>,
    /// The new app's id.
    #[arg(long, requires = "provider")]
    pub id: Option<String>,
    /// OAuth client id registered at the provider.
    #[arg(long, requires = "provider")]
    pub client_id: Option<String>,
    /// File holding the OAuth client secret (trailing newline ignored).
    #[arg(long, value_name = "FILE", requires = "provider")]
    pub client_secret_file: Option<PathBuf>,
    /// A placeholder of the entry, `name=value` (e.g. `tenant=contoso.onmicrosoft.com`).
    #[arg(long = "param", value_name = "NAME=VALUE", requires = "provider")]
    pub params: Vec<String>,
    /// Egress policy carrying the app's token requests.
    #[arg(long, value_name = "POLICY", requires = "provider")]
    pub egress_policy: Option<String>,
    /// Scopes instead of the entry's defaults (comma- or space-separated).
    #[arg(long, value_name = "SCOPES", requires = "provider")]
    pub scopes: Option<String>,
}

impl FromCatalog {
    /// The create document naming the entry, `file` fields (when given) on top of the flags.
    pub fn document(&self, file: Option<Map<String, Value>>) -> anyhow::Result<Map<String, Value>> {
        let Some(provider) = &self.provider else {
            return file.ok_or_else(|| anyhow!("give -f FILE or --provider ID"));
        };
        // Fail here, with the list, rather than at the server.
        catalog::provider(provider)?;
        let mut params = Map::new();
        for kv in &self.params {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| anyhow!("--param takes NAME=VALUE, got {kv:?}"))?;
            params.insert(k.to_string(), json!(v));
        }
        let mut doc = Map::new();
        doc.insert("provider".into(), json!(provider));
        doc.insert("provider_params".into(), Value::Object(params));
        let fields = [
            ("id", self.id.clone()),
            ("client_id", self.client_id.clone()),
            ("egress_policy", self.egress_policy.clone()),
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                doc.insert(k.into(), json!(v));
            }
        }
        if let Some(f) = &self.client_secret_file {
            let secret = std::fs::read_to_string(f)
                .with_context(|| format!("reading the client secret from {}", f.display()))?;
            doc.insert("client_secret".into(), json!(secret.trim_end()));
        }
        if let Some(s) = &self.scopes {
            let scopes: Vec<&str> = s.split([',', ' ']).filter(|x| !x.is_empty()).collect();
            doc.insert("scopes".into(), json!(scopes));
        }
        doc.extend(file.unwrap_or_default());
        Ok(doc)
    }
}

/// `tollgate app providers [ID]`: the table (id, name, params, docs) with each entry's
/// quirks below it, or one entry in full; `--json` prints what `GET /v1/providers` returns.
pub fn run(id: Option<&str>, as_json: bool) -> anyhow::Result<()> {
    let list: Vec<&catalog::Provider> = match id {
        Some(id) => vec![catalog::provider(id)?],
        None => catalog::providers().iter().collect(),
    };
    if as_json {
        let views: Vec<Value> = list.iter().map(|p| p.view()).collect();
        let out = match id {
            Some(_) => views.into_iter().next().unwrap_or(Value::Null),
            None => json!({ "providers": views }),
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&out).unwrap_or_else(|_| out.to_string())
        );
        return Ok(());
    }
    println!("{:<12} {:<20} {:<36} DOCS", "ID", "NAME", "PARAMS");
    for p in list {
        println!(
            "{:<12} {:<20} {:<36} {}",
            p.id,
            p.name,
            params_column(&p.params, &p.defaults),
            p.docs
        );
        for q in &p.quirks {
            println!("    quirk: {q}");
        }
        if id.is_some() {
            for (name, what) in &p.params {
                println!("    param {name}: {what}");
            }
        }
    }
    Ok(())
}

/// `tenant`, `instance=gitlab.com` (a default), or `-`.
fn params_column(params: &BTreeMap<String, String>, defaults: &BTreeMap<String, String>) -> String {
    if params.is_empty() {
        return "-".into();
    }
    params
        .keys()
        .map(|k| match defaults.get(k) {
            Some(d) => format!("{k}={d}"),
            None => k.clone(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}
