//! `tollgate app ...`: the admin API from the shell. Human-readable tables by default,
//! `--json` for scripts. Server and token come from `--server` / `--token` or
//! `TOLLGATE_URL` / `TOLLGATE_TOKEN`. App files (TOML or JSON) are read as the admin API's
//! app document (`AppConfig`): the same fields, checked here before they are sent.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Map, Value};

/// Where and as whom to talk to the admin API.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Base URL of tollgate's web listener.
    #[arg(
        long,
        env = "TOLLGATE_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub server: String,
    /// Caller token with the admin role.
    #[arg(long, env = "TOLLGATE_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `tollgate app` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AppCommand {
    /// Create an app from a TOML or JSON file, or from a catalog entry (`--provider`).
    Create {
        /// The app file (`.toml` or `.json`); with `--provider`, fields overriding the entry.
        #[arg(short = 'f', long = "file", required_unless_present = "provider")]
        file: Option<PathBuf>,
        /// The catalog entry and the admin's fields.
        #[command(flatten)]
        catalog: super::providers::FromCatalog,
    },
    /// List the provider catalog (`app create --provider`), or show one entry.
    Providers {
        /// A catalog id: show that entry with its parameters.
        id: Option<String>,
    },
    /// List the org's apps.
    List,
    /// Show one app.
    Show {
        /// App id.
        id: String,
    },
    /// Change fields of an app, from a file and/or `--set field=value`.
    Update {
        /// App id.
        id: String,
        /// File with the fields to change.
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        /// `field=value` (value parsed as JSON when it is valid JSON, else a string).
        #[arg(long = "set", value_name = "FIELD=VALUE")]
        set: Vec<String>,
    },
    /// Make stored tokens usable again and allow new consents.
    Enable {
        /// App id.
        id: String,
    },
    /// Keep tokens but stop using them; no new consent can start.
    Disable {
        /// App id.
        id: String,
    },
    /// Delete every user's tokens and invalidate pending consents; keep the configuration.
    Reset {
        /// App id.
        id: String,
    },
    /// Delete the app, its configuration (including the client secret) and all tokens.
    Delete {
        /// App id.
        id: String,
    },
    /// Create the app in the file, or update it if it exists.
    Apply {
        /// The app file (`.toml` or `.json`).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// List users who authorized the app (never token values).
    Authorizations {
        /// App id.
        id: String,
    },
    /// Delete one user's tokens for the app.
    Revoke {
        /// App id.
        id: String,
        /// The user.
        user: String,
    },
}

/// Runs an `app` subcommand.
pub async fn run(target: &Target, cmd: AppCommand) -> anyhow::Result<()> {
    // The embedded catalog: no server, no token.
    if let AppCommand::Providers { id } = &cmd {
        return super::providers::run(id.as_deref(), target.json);
    }
    let api = Api::new(target)?;
    match cmd {
        AppCommand::Create { file, catalog } => {
            let file = file.as_deref().map(load_app_file).transpose()?;
            let body = catalog.document(file)?;
            let app = api.call(Method::POST, "/v1/apps", Some(body)).await?;
            print_app(target.json, &app);
        }
        AppCommand::Providers { id } => super::providers::run(id.as_deref(), target.json)?,
        AppCommand::List => {
            let out = api.call(Method::GET, "/v1/apps", None).await?;
            if target.json {
                println!("{}", pretty(&out));
            } else {
                print_table(&out["apps"]);
            }
        }
        AppCommand::Show { id } => {
            let app = api.call(Method::GET, &app_path(&id, ""), None).await?;
            print_app(target.json, &app);
        }
        AppCommand::Update { id, file, set } => {
            let mut body = match &file {
                Some(f) => load_app_file(f)?,
                None => Map::new(),
            };
            for kv in &set {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--set takes FIELD=VALUE, got {kv:?}"))?;
                let value = serde_json::from_str(v).unwrap_or_else(|_| json!(v));
                body.insert(k.to_string(), value);
            }
            if body.is_empty() {
                bail!("nothing to update: give -f FILE and/or --set FIELD=VALUE");
            }
            check_fields(&body)?;
            let app = api
                .call(Method::PATCH, &app_path(&id, ""), Some(body))
                .await?;
            print_app(target.json, &app);
        }
        AppCommand::Enable { id } => {
            let app = api
                .call(Method::POST, &app_path(&id, "/enable"), None)
                .await?;
            print_app(target.json, &app);
        }
        AppCommand::Disable { id } => {
            let app = api
                .call(Method::POST, &app_path(&id, "/disable"), None)
                .await?;
            print_app(target.json, &app);
        }
        AppCommand::Reset { id } => {
            let app = api
                .call(Method::POST, &app_path(&id, "/reset"), None)
                .await?;
            print_app(target.json, &app);
        }
        AppCommand::Delete { id } => {
            api.call(Method::DELETE, &app_path(&id, ""), None).await?;
            if target.json {
                println!("{}", json!({"deleted": id}));
            } else {
                println!("deleted app {id} with its configuration and every user's tokens");
            }
        }
        AppCommand::Apply { file } => {
            let body = load_app_file(&file)?;
            let id = body
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("{}: the file must set `id`", file.display()))?
                .to_string();
            let exists = api.get_optional(&app_path(&id, "")).await?.is_some();
            let app = if exists {
                api.call(Method::PATCH, &app_path(&id, ""), Some(body))
                    .await?
            } else {
                api.call(Method::POST, "/v1/apps", Some(body)).await?
            };
            if !target.json {
                println!("{} app {id}", if exists { "updated" } else { "created" });
            }
            print_app(target.json, &app);
        }
        AppCommand::Authorizations { id } => {
            let out = api
                .call(Method::GET, &app_path(&id, "/authorizations"), None)
                .await?;
            if target.json {
                println!("{}", pretty(&out));
            } else {
                println!("{:<24} {:<20} {:<20} SCOPES", "USER", "EXPIRES", "OBTAINED");
                for a in out["authorizations"].as_array().into_iter().flatten() {
                    println!(
                        "{:<24} {:<20} {:<20} {}",
                        a["user"].as_str().unwrap_or("-"),
                        a["expires_at"].as_str().unwrap_or("unknown"),
                        a["obtained_at"].as_str().unwrap_or("-"),
                        join(&a["scopes"]),
                    );
                }
            }
        }
        AppCommand::Revoke { id, user } => {
            let path = format!("{}/{}", app_path(&id, "/authorizations"), encode(&user));
            api.call(Method::DELETE, &path, None).await?;
            if target.json {
                println!("{}", json!({"revoked": user, "app": id}));
            } else {
                println!("revoked {user}'s authorization of {id}");
            }
        }
    }
    Ok(())
}

/// The apps of the token's org, as the admin API lists them (for `policy explain`).
pub async fn fetch_apps(server: &str, token: &str) -> anyhow::Result<Vec<Value>> {
    let api = Api::new(&Target {
        server: server.to_string(),
        token: Some(token.to_string()),
        json: true,
    })?;
    let out = api.call(Method::GET, "/v1/apps", None).await?;
    Ok(out["apps"].as_array().cloned().unwrap_or_default())
}

fn app_path(id: &str, suffix: &str) -> String {
    format!("/v1/apps/{}{suffix}", encode(id))
}

/// Percent-encodes a path segment.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Reads an app file (TOML or JSON) and resolves secrets given as `{ env = "NAME" }` or
/// `{ file = "PATH" }` (`client_secret`, and the header values of the webhook handshake's
/// templates) so a secret never has to be written in the file itself.
pub fn load_app_file(path: &Path) -> anyhow::Result<Map<String, Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: Value = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?
    } else {
        let t: toml::Value =
            toml::from_str(&text).map_err(|e| anyhow!("{}: {}", path.display(), e.message()))?;
        serde_json::to_value(t)?
    };
    let Value::Object(mut map) = value else {
        bail!("{}: expected a table of app fields", path.display());
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    if let Some(secret) = map.get_mut("client_secret") {
        resolve_secret("client_secret", secret, dir)?;
    }
    for step in ["token", "refresh"] {
        let headers = map
            .get_mut("webhook")
            .and_then(|w| w.get_mut(step))
            .and_then(|t| t.get_mut("headers"))
            .and_then(Value::as_object_mut);
        for (name, value) in headers.into_iter().flatten() {
            resolve_secret(&format!("webhook.{step}.headers.{name}"), value, dir)?;
        }
    }
    check_fields(&map).with_context(|| path.display().to_string())?;
    Ok(map)
}

/// Reads `doc` as an app configuration, the way the server will, so an unknown or mistyped
/// field is reported before anything is sent. Whether the values are valid (policies,
/// domains taken) only the server can say.
fn check_fields(doc: &Map<String, Value>) -> anyhow::Result<()> {
    let Err(fields) = crate::oauth::app::parse(doc) else {
        return Ok(());
    };
    let mut msg = String::from("invalid fields:");
    for (k, v) in fields {
        msg.push_str(&format!("\n  {k}: {v}"));
    }
    Err(anyhow!(msg))
}

/// Replaces `{ env = "NAME" }` / `{ file = "PATH" }` (relative to the app file's directory)
/// with the secret it names; strings and `null` (keep the stored value) stay as they are.
fn resolve_secret(field: &str, value: &mut Value, dir: &Path) -> anyhow::Result<()> {
    let usage =
        || anyhow!("{field} must be a string, {{ env = \"NAME\" }} or {{ file = \"PATH\" }}");
    let resolved = match &*value {
        Value::String(_) | Value::Null => return Ok(()),
        Value::Object(o) => match (o.get("env"), o.get("file"), o.len()) {
            (Some(Value::String(name)), None, 1) => std::env::var(name)
                .with_context(|| format!("{field}: environment variable {name} is not set"))?,
            (None, Some(Value::String(f)), 1) => {
                let p = dir.join(f);
                std::fs::read_to_string(&p)
                    .with_context(|| format!("{field}: reading {}", p.display()))?
                    .trim()
                    .to_string()
            }
            _ => return Err(usage()),
        },
        _ => return Err(usage()),
    };
    *value = Value::String(resolved);
    Ok(())
}

/// A client of one server's admin API.
pub(crate) struct Api {
    /// The web listener's base URL, without a trailing `/`.
    base: String,
    /// The admin caller token sent as `Authorization: Bearer`.
    token: String,
    /// HTTP/1.1 over TCP or TLS (the web listener may sit behind a TLS proxy).
    client: crate::tls::Http1Client,
}

impl Api {
    pub(crate) fn new(target: &Target) -> anyhow::Result<Api> {
        let token = target
            .token
            .clone()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| anyhow!("no token: pass --token or set TOLLGATE_TOKEN (mint one with `tollgate token mint --role admin`, or `--role operator` for `agent revoke`)"))?;
        let client = crate::tls::http1_client(crate::tls::upstream_client_config(None)?);
        Ok(Api {
            base: target.server.trim_end_matches('/').to_string(),
            token,
            client,
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Map<String, Value>>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let url = format!("{}{path}", self.base);
        let mut req = Request::builder()
            .method(method)
            .uri(&url)
            .header("authorization", format!("Bearer {}", self.token));
        let bytes = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Bytes::from(Value::Object(b).to_string())
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(bytes)).context("building the request")?;
        let resp = self
            .client
            .request(req)
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        let value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)
                .unwrap_or_else(|_| json!({"message": String::from_utf8_lossy(&body)}))
        };
        Ok((status, value))
    }

    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Map<String, Value>>,
    ) -> anyhow::Result<Value> {
        let (status, value) = self.send(method, path, body).await?;
        if status.is_success() {
            return Ok(value);
        }
        let mut msg = format!(
            "{} ({})",
            value["message"].as_str().unwrap_or("request failed"),
            status.as_u16()
        );
        if let Some(fields) = value["fields"].as_object() {
            for (k, v) in fields {
                msg.push_str(&format!("\n  {k}: {}", v.as_str().unwrap_or_default()));
            }
        }
        Err(anyhow!(msg))
    }

    async fn get_optional(&self, path: &str) -> anyhow::Result<Option<Value>> {
        let (status, value) = self.send(Method::GET, path, None).await?;
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(value)),
            s => Err(anyhow!(
                "{} ({})",
                value["message"].as_str().unwrap_or("request failed"),
                s.as_u16()
            )),
        }
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

fn join(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn print_table(apps: &Value) {
    println!(
        "{:<20} {:<24} {:<8} {:<6} {:<8} DOMAINS",
        "ID", "NAME", "ENABLED", "USERS", "STATUS"
    );
    for a in apps.as_array().into_iter().flatten() {
        println!(
            "{:<20} {:<24} {:<8} {:<6} {:<8} {}",
            a["id"].as_str().unwrap_or("-"),
            a["name"].as_str().unwrap_or("-"),
            a["enabled"].as_bool().unwrap_or(false),
            a["authorized_users"].as_u64().unwrap_or(0),
            a["status"].as_str().unwrap_or("-"),
            join(&a["domains"]),
        );
    }
}

fn print_app(as_json: bool, app: &Value) {
    if as_json {
        println!("{}", pretty(app));
        return;
    }
    let Some(map) = app.as_object() else {
        return;
    };
    for (k, v) in map {
        let shown = match v {
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            Value::Array(_) if k == "domains" || k == "scopes" => join(v),
            other => other.to_string(),
        };
        println!("{k:<18} {shown}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_an_app_file_come_from_the_environment_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key.txt"), "k-from-file\n").unwrap();
        std::env::set_var("TOLLGATE_TEST_CLIENT_SECRET", "s-from-env");
        let file = dir.path().join("app.toml");
        std::fs::write(
            &file,
            r#"
id = "legacy"
client_secret = { env = "TOLLGATE_TEST_CLIENT_SECRET" }
handshake = "webhook"
[webhook.token]
url = "https://idp.corp.example/handshake/token"
headers = { "X-Api-Key" = { file = "key.txt" }, "X-Plain" = "p" }
json = { code = "{authorization_code}" }
"#,
        )
        .unwrap();
        let map = load_app_file(&file).unwrap();
        assert_eq!(map["client_secret"], "s-from-env");
        let headers = &map["webhook"]["token"]["headers"];
        assert_eq!(headers["X-Api-Key"], "k-from-file");
        assert_eq!(headers["X-Plain"], "p");

        std::fs::write(
            &file,
            "[webhook.refresh]\nheaders = { \"X-Api-Key\" = { file = \"missing.txt\" } }\n",
        )
        .unwrap();
        let err = load_app_file(&file).unwrap_err().to_string();
        assert!(err.contains("webhook.refresh.headers.X-Api-Key"), "{err}");
    }
}
