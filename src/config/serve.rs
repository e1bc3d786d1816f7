//! `tollgate serve` settings: flags, `TOLLGATE_*` environment variables and an optional
//! `tollgate.toml`, merged (flag/env > file > embedded default) and validated into a
//! [`Config`].
//!
//! [`FileConfig`] is the raw, strict (`deny_unknown_fields`) file shape; [`ServeOverrides`] is
//! what clap parsed; [`Config::resolve`] validates the merge and reports every problem at
//! once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::limits::{Limits, LimitsOverrides};
use super::login::{LoginConfig, LoginMode, LoginOverrides};
use super::replicas::{ReplicaOverrides, Replicas};
use super::store::StoreLocation;
use super::upstream::ProxyUrl;
use super::{
    duration_setting, load_toml_or_default, LogFormat, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
};
use crate::route::UpstreamProxy;

/// Default proxy listener (DESIGN: 127.0.0.1:3128).
pub const DEFAULT_PROXY_LISTEN: &str = "127.0.0.1:3128";
/// Default web listener (DESIGN: 127.0.0.1:8080).
pub const DEFAULT_WEB_LISTEN: &str = "127.0.0.1:8080";
/// Time a client has to send a complete request head (DESIGN default).
pub const DEFAULT_REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Time an upstream has to start its response once the request is sent. DESIGN is silent;
/// 60 s is generous for APIs and keeps a silent upstream from pinning a connection forever.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest request head accepted (DESIGN default: 64 KiB).
pub const DEFAULT_MAX_REQUEST_HEAD: usize = 64 * 1024;
/// Concurrent client connections before `503 overloaded` (DESIGN default).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// How long SIGTERM waits for in-flight requests (DESIGN default).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The optional `tollgate.toml`. Every key mirrors a `serve` flag (dashes become underscores).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `--data`.
    pub data: Option<PathBuf>,
    /// `--policies`.
    pub policies: Option<PathBuf>,
    /// `--proxy-listen`.
    pub proxy_listen: Option<String>,
    /// `--web-listen`.
    pub web_listen: Option<String>,
    /// `--relay-listen`.
    pub relay_listen: Option<String>,
    /// `--relay-cert`.
    pub relay_cert: Option<PathBuf>,
    /// `--relay-key`.
    pub relay_key: Option<PathBuf>,
    /// `--relay-keepalive`.
    pub relay_keepalive: Option<String>,
    /// `--revoked-agents`, as a list.
    pub revoked_agents: Option<Vec<String>>,
    /// `--public-url`.
    pub public_url: Option<String>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
    /// `--connect-timeout`, e.g. "10s".
    pub connect_timeout: Option<String>,
    /// `--upstream-timeout`.
    pub upstream_timeout: Option<String>,
    /// `--request-head-timeout`.
    pub request_head_timeout: Option<String>,
    /// `--idle-timeout`.
    pub idle_timeout: Option<String>,
    /// `--max-connections`.
    pub max_connections: Option<usize>,
    /// `--max-request-head` (bytes).
    pub max_request_head: Option<usize>,
    /// `--shutdown-grace`.
    pub shutdown_grace: Option<String>,
    /// `--upstream-ca-file`.
    pub upstream_ca_file: Option<PathBuf>,
    /// `--consent-user-header`.
    pub consent_user_header: Option<String>,
    /// `--ca-cert`.
    pub ca_cert: Option<PathBuf>,
    /// `--ca-key`.
    pub ca_key: Option<PathBuf>,
    /// `--web-header-timeout`.
    pub web_header_timeout: Option<String>,
    /// `--web-idle-timeout`.
    pub web_idle_timeout: Option<String>,
    /// `--web-max-connections`.
    pub web_max_connections: Option<usize>,
    /// `--relay-handshake-timeout`.
    pub relay_handshake_timeout: Option<String>,
    /// `--body-timeout`.
    pub body_timeout: Option<String>,
    /// `--max-connections-per-caller`.
    pub max_connections_per_caller: Option<usize>,
    /// `--metrics-listen`.
    pub metrics_listen: Option<String>,
    /// `--login`.
    pub login: Option<LoginMode>,
    /// `--login-user-header`.
    pub login_user_header: Option<String>,
    /// `--login-org-header`.
    pub login_org_header: Option<String>,
    /// `--login-roles-header`.
    pub login_roles_header: Option<String>,
    /// `--trusted-proxies`, as a list.
    pub trusted_proxies: Option<Vec<String>>,
    /// `--login-oidc-issuer`.
    pub login_oidc_issuer: Option<String>,
    /// `--login-oidc-client-id`.
    pub login_oidc_client_id: Option<String>,
    /// `--login-oidc-client-secret-file`.
    pub login_oidc_client_secret_file: Option<PathBuf>,
    /// `--login-oidc-user-claim`.
    pub login_oidc_user_claim: Option<String>,
    /// `--login-oidc-org-claim`.
    pub login_oidc_org_claim: Option<String>,
    /// `--login-oidc-roles-claim`.
    pub login_oidc_roles_claim: Option<String>,
    /// `--login-oidc-scopes`, as a list.
    pub login_oidc_scopes: Option<Vec<String>>,
    /// `--store`.
    pub store: Option<String>,
    /// `--upstream-proxy`.
    pub upstream_proxy: Option<ProxyUrl>,
    /// `--shutdown-delay`.
    pub shutdown_delay: Option<String>,
    /// `--proxy-protocol`.
    pub proxy_protocol: Option<bool>,
    /// `--relay-advertise`.
    pub relay_advertise: Option<String>,
    /// `--audit-retention`.
    pub audit_retention: Option<String>,
    /// `--max-token-ttl`.
    pub max_token_ttl: Option<String>,
    /// `[identity]`: OIDC issuers of workload tokens (file only).
    pub identity: Option<super::identity::IdentityFile>,
    /// `--otlp-endpoint`.
    pub otlp_endpoint: Option<String>,
    /// `--refresh-ahead`.
    pub refresh_ahead: Option<String>,
    /// `--events-webhook`.
    pub events_webhook: Option<String>,
    /// `--events-webhook-secret-file`.
    pub events_webhook_secret_file: Option<PathBuf>,
}

/// What the `serve` command line (and its environment variables) said; `None` = not given.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ServeOverrides {
    /// Optional settings file (TOML; keys as the flags, with underscores). [default: none]
    #[arg(long, env = "TOLLGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory: keys, CA, store. Created (mode 0700) on first start. [default: data]
    #[arg(long, env = "TOLLGATE_DATA")]
    pub data: Option<PathBuf>,
    /// Directory of policy files (`*.toml`), watched for changes. [default: policies]
    #[arg(long, env = "TOLLGATE_POLICIES")]
    pub policies: Option<PathBuf>,
    /// Proxy listener address [default: 127.0.0.1:3128].
    #[arg(long, env = "TOLLGATE_PROXY_LISTEN")]
    pub proxy_listen: Option<String>,
    /// Web listener (consent, admin API, health, metrics) [default: 127.0.0.1:8080].
    #[arg(long, env = "TOLLGATE_WEB_LISTEN")]
    pub web_listen: Option<String>,
    /// Relay listener for agents (off unless given).
    #[arg(long, env = "TOLLGATE_RELAY_LISTEN")]
    pub relay_listen: Option<String>,
    /// Relay TLS certificate chain (PEM) [default: minted from the tollgate CA at start].
    #[arg(long, env = "TOLLGATE_RELAY_CERT", requires = "relay_key")]
    pub relay_cert: Option<PathBuf>,
    /// Private key (PEM) of --relay-cert. [default: the key minted with the relay certificate]
    #[arg(long, env = "TOLLGATE_RELAY_KEY", requires = "relay_cert")]
    pub relay_key: Option<PathBuf>,
    /// HTTP/2 ping interval (and ping timeout) on agent connections [default: 10s].
    #[arg(long, env = "TOLLGATE_RELAY_KEEPALIVE")]
    pub relay_keepalive: Option<String>,
    /// Agent IDs refused at the relay (comma-separated). [default: none]
    #[arg(long, env = "TOLLGATE_REVOKED_AGENTS", value_delimiter = ',')]
    pub revoked_agents: Option<Vec<String>>,
    /// Public base URL of the web listener, used in consent URLs [default: http://WEB_LISTEN].
    #[arg(long, env = "TOLLGATE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Log format. [default: text]
    #[arg(long, env = "TOLLGATE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Upstream connect timeout [default: 10s].
    #[arg(long, env = "TOLLGATE_CONNECT_TIMEOUT")]
    pub connect_timeout: Option<String>,
    /// Time an upstream has to begin its response [default: 60s].
    #[arg(long, env = "TOLLGATE_UPSTREAM_TIMEOUT")]
    pub upstream_timeout: Option<String>,
    /// Time a client has to send its request head [default: 30s].
    #[arg(long, env = "TOLLGATE_REQUEST_HEAD_TIMEOUT")]
    pub request_head_timeout: Option<String>,
    /// Idle tunnel timeout [default: 15m].
    #[arg(long, env = "TOLLGATE_IDLE_TIMEOUT")]
    pub idle_timeout: Option<String>,
    /// Maximum concurrent client connections [default: 10000].
    #[arg(long, env = "TOLLGATE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Maximum request head size in bytes [default: 65536].
    #[arg(long, env = "TOLLGATE_MAX_REQUEST_HEAD")]
    pub max_request_head: Option<usize>,
    /// How long SIGTERM waits for in-flight requests [default: 30s].
    #[arg(long, env = "TOLLGATE_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<String>,
    /// Extra CA certificates (PEM) trusted for upstream TLS that tollgate originates and for
    /// provider endpoints, besides the built-in roots.
    /// [default: none (the built-in web PKI roots only)]
    #[arg(long, env = "TOLLGATE_UPSTREAM_CA_FILE")]
    pub upstream_ca_file: Option<PathBuf>,
    /// Trusted header (set by the platform's login proxy) that must equal the consent
    /// ticket's user on the consent pages. [default: none]
    #[arg(long, env = "TOLLGATE_CONSENT_USER_HEADER")]
    pub consent_user_header: Option<String>,
    /// Interception CA certificate (PEM) to use instead of the generated `DATA/ca/ca.pem`;
    /// needs --ca-key. [default: DATA/ca/ca.pem]
    #[arg(long, env = "TOLLGATE_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Private key (PKCS#8 PEM) of --ca-cert. [default: DATA/ca/ca.key]
    #[arg(long, env = "TOLLGATE_CA_KEY")]
    pub ca_key: Option<PathBuf>,
    /// Listener limits (web, relay, proxy bodies and per-caller connections).
    #[command(flatten)]
    pub limits: LimitsOverrides,
    /// Listener serving /metrics without auth, for an internal scrape network (its labels
    /// name apps and agents) [default: off; /metrics on the web listener needs an operator
    /// token].
    #[arg(long, env = "TOLLGATE_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Who is signing in at the pages (`--login*`, `--trusted-proxies`).
    #[command(flatten)]
    pub login: LoginOverrides,
    /// Where state lives: sled:DIR (embedded) or postgres://… (shared by replicas)
    /// [default: sled:DATA/store].
    #[arg(long, env = "TOLLGATE_STORE")]
    pub store: Option<String>,
    /// Parent HTTP proxy for direct routes, `http://[user:password@]host:port`: tollgate
    /// checks the address itself, then asks the parent to CONNECT to it [default: none].
    #[arg(long, env = "TOLLGATE_UPSTREAM_PROXY", hide_env_values = true)]
    pub upstream_proxy: Option<ProxyUrl>,
    /// Running as one of several replicas (`--shutdown-delay`, `--relay-advertise`), and
    /// retention (`--audit-retention`).
    #[command(flatten)]
    pub replicas: ReplicaOverrides,
    /// Longest lifetime (`exp` − `iat`) a caller token may have; longer ones are refused as
    /// invalid (`tollgate token mint` enforces the same cap). [default: 30d]
    #[arg(long, env = "TOLLGATE_MAX_TOKEN_TTL")]
    pub max_token_ttl: Option<String>,
    /// OpenTelemetry export (`--otlp-endpoint`).
    #[command(flatten)]
    pub otlp: super::otlp::OtlpOverrides,
    /// Grant health (`--refresh-ahead`).
    #[command(flatten)]
    pub health: super::events::HealthOverrides,
}

/// Validated server settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where keys, the CA and the store live.
    pub data_dir: PathBuf,
    /// Where admins keep policy files.
    pub policies_dir: PathBuf,
    /// Proxy listener.
    pub proxy_listen: SocketAddr,
    /// Web listener.
    pub web_listen: SocketAddr,
    /// Relay listener, when enabled.
    pub relay_listen: Option<SocketAddr>,
    /// Relay certificate chain and key files, instead of a certificate from the CA.
    pub relay_cert: Option<(PathBuf, PathBuf)>,
    /// HTTP/2 keep-alive on relay connections.
    pub relay_keepalive: Duration,
    /// Agent IDs refused at the relay.
    pub revoked_agents: Vec<String>,
    /// Base URL users reach the web listener at (no trailing slash); `None` = derive from the
    /// bound web address once it is known (so `127.0.0.1:0` works in tests).
    pub public_url: Option<String>,
    /// Log format.
    pub log_format: LogFormat,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Upstream response-head timeout.
    pub upstream_timeout: Duration,
    /// Client request-head timeout.
    pub request_head_timeout: Duration,
    /// Idle tunnel timeout.
    pub idle_timeout: Duration,
    /// Concurrent client connection limit.
    pub max_connections: usize,
    /// Request head size limit.
    pub max_request_head: usize,
    /// Operator-supplied interception CA (certificate, key); `None` = the generated one.
    pub ca: Option<(PathBuf, PathBuf)>,
    /// Drain period on SIGTERM.
    pub shutdown_grace: Duration,
    /// Extra upstream CA certificates (PEM file).
    pub upstream_ca_file: Option<PathBuf>,
    /// Listener limits (web, relay handshake, proxy bodies and per-caller connections).
    pub limits: Limits,
    /// Metrics listener (`/metrics` without auth), when enabled.
    pub metrics_listen: Option<SocketAddr>,
    /// Who is signing in at the pages (`--login`; `--consent-user-header` is an alias).
    pub login: LoginConfig,
    /// Where the store lives (sled directory or PostgreSQL URL).
    pub store: StoreLocation,
    /// Parent proxy of direct routes, when configured.
    pub upstream_proxy: Option<UpstreamProxy>,
    /// Running behind a load balancer: the drain delay, PROXY protocol headers.
    pub replicas: Replicas,
    /// Caller tokens with a longer lifetime are refused.
    pub max_token_ttl: Duration,
    /// `[[identity.issuer]]`: OIDC issuers whose workload tokens are callers too.
    pub issuers: Vec<super::identity::IssuerConfig>,
    /// The OTLP/HTTP traces URL spans are exported to (`--otlp-endpoint`); `None` = off.
    pub otlp_endpoint: Option<String>,
    /// The background refresher.
    pub health: super::events::GrantHealthConfig,
}

/// Every problem found while resolving the settings.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .0.join("\n  "))]
pub struct ConfigError(pub Vec<String>);

impl Config {
    /// Merges flags/env over the optional file over the defaults, and validates.
    pub fn resolve(over: &ServeOverrides) -> Result<Config, ConfigError> {
        let mut errors = Vec::new();
        let file: FileConfig = load_toml_or_default(over.config.as_deref(), &mut errors);
        let addr = |flag: &str,
                    v: Option<&String>,
                    f: Option<&String>,
                    d: &str,
                    errs: &mut Vec<String>| {
            let s = v.or(f).map(String::as_str).unwrap_or(d);
            s.parse::<SocketAddr>()
                .map_err(|_| {
                    errs.push(format!(
                        "--{flag}: {s:?} is not an address like 127.0.0.1:3128"
                    ))
                })
                .ok()
        };
        let dur = duration_setting;
        let proxy_listen = addr(
            "proxy-listen",
            over.proxy_listen.as_ref(),
            file.proxy_listen.as_ref(),
            DEFAULT_PROXY_LISTEN,
            &mut errors,
        );
        let web_listen = addr(
            "web-listen",
            over.web_listen.as_ref(),
            file.web_listen.as_ref(),
            DEFAULT_WEB_LISTEN,
            &mut errors,
        );
        let relay_listen = match over.relay_listen.as_ref().or(file.relay_listen.as_ref()) {
            None => None,
            Some(s) => addr("relay-listen", Some(s), None, "", &mut errors),
        };
        let relay_cert = match (
            over.relay_cert.clone().or(file.relay_cert.clone()),
            over.relay_key.clone().or(file.relay_key.clone()),
        ) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                errors.push("--relay-cert and --relay-key go together".into());
                None
            }
        };
        let relay_keepalive = dur(
            "relay-keepalive",
            over.relay_keepalive.as_ref(),
            file.relay_keepalive.as_ref(),
            crate::relay::DEFAULT_KEEPALIVE,
            &mut errors,
        );
        let revoked_agents: Vec<String> = over
            .revoked_agents
            .clone()
            .or(file.revoked_agents.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        for id in &revoked_agents {
            if !crate::policy::is_id(id) {
                errors.push(format!("--revoked-agents: {id:?} is not an agent ID"));
            }
        }
        let public_url = over.public_url.clone().or(file.public_url.clone());
        if let Some(u) = &public_url {
            if let Err(e) = validate_public_url(u) {
                errors.push(format!("--public-url: {e}"));
            }
        }
        let max_token_ttl = dur(
            "max-token-ttl",
            over.max_token_ttl.as_ref(),
            file.max_token_ttl.as_ref(),
            crate::identity::DEFAULT_MAX_TOKEN_TTL,
            &mut errors,
        );
        let connect_timeout = dur(
            "connect-timeout",
            over.connect_timeout.as_ref(),
            file.connect_timeout.as_ref(),
            DEFAULT_CONNECT_TIMEOUT,
            &mut errors,
        );
        let upstream_timeout = dur(
            "upstream-timeout",
            over.upstream_timeout.as_ref(),
            file.upstream_timeout.as_ref(),
            DEFAULT_UPSTREAM_TIMEOUT,
            &mut errors,
        );
        let request_head_timeout = dur(
            "request-head-timeout",
            over.request_head_timeout.as_ref(),
            file.request_head_timeout.as_ref(),
            DEFAULT_REQUEST_HEAD_TIMEOUT,
            &mut errors,
        );
        let idle_timeout = dur(
            "idle-timeout",
            over.idle_timeout.as_ref(),
            file.idle_timeout.as_ref(),
            DEFAULT_IDLE_TIMEOUT,
            &mut errors,
        );
        let shutdown_grace = dur(
            "shutdown-grace",
            over.shutdown_grace.as_ref(),
            file.shutdown_grace.as_ref(),
            DEFAULT_SHUTDOWN_GRACE,
            &mut errors,
        );
        let max_connections = over
            .max_connections
            .or(file.max_connections)
            .unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            errors.push("--max-connections must be at least 1".into());
        }
        let max_request_head = over
            .max_request_head
            .or(file.max_request_head)
            .unwrap_or(DEFAULT_MAX_REQUEST_HEAD);
        // hyper refuses read buffers below 8 KiB.
        if max_request_head < 8192 {
            errors.push("--max-request-head must be at least 8192 bytes".into());
        }
        let upstream_ca_file = over
            .upstream_ca_file
            .clone()
            .or(file.upstream_ca_file.clone());
        if let Some(p) = &upstream_ca_file {
            if !p.is_file() {
                errors.push(format!(
                    "--upstream-ca-file: {} is not a readable file",
                    p.display()
                ));
            }
        }
        // Consent links are built from the public URL; from `0.0.0.0`/`::` they would point
        // at an address no browser can open.
        if let (None, Some(a)) = (&public_url, web_listen) {
            if a.ip().is_unspecified() {
                errors.push(format!(
                    "--web-listen {a} listens on every interface, so tollgate cannot derive the \
                     URL users reach its pages at (consent links would point at {a}); set \
                     --public-url to that URL (e.g. https://tollgate.example.com)"
                ));
            }
        }
        // The URL users reach the pages at; `None` when it is already reported invalid.
        let derived_url = match (&public_url, web_listen) {
            (Some(u), _) => validate_public_url(u).ok().map(|()| u.clone()),
            (None, Some(a)) => Some(format!("http://{a}")),
            (None, None) => None,
        };
        let limits = Limits::resolve(&over.limits, &file, &mut errors);
        let replicas = Replicas::resolve(
            &over.replicas,
            over.login.trusted_proxies.as_ref(),
            &file,
            &mut errors,
        );
        let login = super::login::resolve(
            &over.login,
            &file,
            over.consent_user_header
                .as_ref()
                .or(file.consent_user_header.as_ref()),
            derived_url.as_deref(),
            &mut errors,
        );
        let ca = match (
            over.ca_cert.clone().or(file.ca_cert),
            over.ca_key.clone().or(file.ca_key),
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => {
                errors.push("--ca-cert needs --ca-key (give both or neither)".into());
                None
            }
            (None, Some(_)) => {
                errors.push("--ca-key needs --ca-cert (give both or neither)".into());
                None
            }
        };
        let metrics_listen = match over
            .metrics_listen
            .as_ref()
            .or(file.metrics_listen.as_ref())
        {
            None => None,
            Some(s) => addr("metrics-listen", Some(s), None, "", &mut errors),
        };
        let data_dir = over
            .data
            .clone()
            .or(file.data.clone())
            .unwrap_or_else(|| PathBuf::from("data"));
        let store = StoreLocation::resolve(
            over.store.as_ref(),
            file.store.as_ref(),
            &data_dir,
            &mut errors,
        );
        let upstream_proxy = super::upstream::resolve(
            over.upstream_proxy.as_ref(),
            file.upstream_proxy.as_ref(),
            &mut errors,
        );
        let issuers = super::identity::resolve(file.identity.as_ref(), &mut errors);
        let otlp_endpoint =
            super::otlp::resolve(&over.otlp, file.otlp_endpoint.as_ref(), &mut errors);
        let health_file = super::events::HealthFile {
            refresh_ahead: file.refresh_ahead.as_ref(),
            events_webhook: file.events_webhook.as_ref(),
            events_webhook_secret_file: file.events_webhook_secret_file.as_ref(),
        };
        let health = super::events::resolve(&over.health, health_file, &mut errors);
        if !errors.is_empty() {
            // One report per problem (`--trusted-proxies` is read by two flag groups).
            let mut seen = std::collections::HashSet::new();
            errors.retain(|e| seen.insert(e.clone()));
            return Err(ConfigError(errors));
        }
        // The unwraps below cannot fail: every `None` above pushed an error and returned.
        Ok(Config {
            data_dir,
            policies_dir: over
                .policies
                .clone()
                .or(file.policies)
                .unwrap_or_else(|| PathBuf::from("policies")),
            proxy_listen: proxy_listen.expect("checked above"),
            web_listen: web_listen.expect("checked above"),
            relay_listen,
            relay_cert,
            relay_keepalive,
            revoked_agents,
            public_url: public_url.map(|u| u.trim_end_matches('/').to_string()),
            log_format: over.log_format.or(file.log_format).unwrap_or_default(),
            max_token_ttl,
            connect_timeout,
            upstream_timeout,
            request_head_timeout,
            idle_timeout,
            max_connections,
            max_request_head,
            shutdown_grace,
            ca,
            upstream_ca_file,
            limits,
            metrics_listen,
            login,
            store,
            upstream_proxy,
            replicas,
            issuers,
            otlp_endpoint,
            health,
        })
    }
}

fn validate_public_url(u: &str) -> Result<(), String> {
    let uri: http::Uri = u.parse().map_err(|_| format!("{u:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") if uri.authority().is_some() => Ok(()),
        _ => Err(format!("{u:?} must be an http:// or https:// URL")),
    }
}

#[cfg(test)]
mod tests;
