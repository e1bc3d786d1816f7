//! `tollgate agent run` settings: flags, `TOLLGATE_AGENT_*` variables and an optional TOML
//! file, merged (flag/env > file > default) and validated into an [`AgentConfig`], every
//! problem reported at once. The validated type lives with the agent process that consumes
//! it ([`crate::agent`]); this module only builds it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::Deserialize;

use super::{
    duration_setting, load_toml_or_default, LogFormat, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
};
use crate::agent::allow::Allowlist;
use crate::agent::{AgentConfig, Credential};
use crate::relay::credential::agent_id_problem;
use crate::relay::handshake;
use crate::relay::DEFAULT_KEEPALIVE;

/// Relay connections kept by default.
pub const DEFAULT_CONNECTIONS: u32 = 2;
/// How long SIGTERM lets open tunnels finish.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// `tollgate agent run` flags (each with a `TOLLGATE_AGENT_*` variable and a key in
/// `--config`).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct AgentArgs {
    /// Settings file (TOML; keys as the flags, with underscores; `allow` is a list).
    #[arg(long, env = "TOLLGATE_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// The relay listener, as https://HOST:PORT.
    #[arg(long, env = "TOLLGATE_AGENT_RELAY")]
    pub relay: Option<String>,
    /// This agent's ID (as in `route = "agent:ID"` and `agent enroll --id`).
    #[arg(long, env = "TOLLGATE_AGENT_ID")]
    pub id: Option<String>,
    /// File holding the credential printed by `tollgate agent enroll`.
    #[arg(long, env = "TOLLGATE_AGENT_CREDENTIAL_FILE")]
    pub credential_file: Option<PathBuf>,
    /// CA certificate(s) to verify the relay with (`tollgate ca export`); default: the
    /// platform's public roots.
    #[arg(long, env = "TOLLGATE_AGENT_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Destinations tollgate may reach through this agent: host names, `*.suffix`, IPs and
    /// CIDRs (repeatable, or comma-separated). Replaces the config file's list.
    #[arg(long = "allow", env = "TOLLGATE_AGENT_ALLOW", value_delimiter = ',')]
    pub allow: Vec<String>,
    /// Relay connections to keep [default: 2].
    #[arg(long, env = "TOLLGATE_AGENT_CONNECTIONS")]
    pub connections: Option<u32>,
    /// Connect timeout towards destinations [default: 10s].
    #[arg(long, env = "TOLLGATE_AGENT_CONNECT_TIMEOUT")]
    pub connect_timeout: Option<String>,
    /// HTTP/2 keep-alive ping interval (and ping timeout) [default: 10s].
    #[arg(long, env = "TOLLGATE_AGENT_KEEPALIVE")]
    pub keepalive: Option<String>,
    /// How long SIGTERM lets open tunnels finish [default: 30s].
    #[arg(long, env = "TOLLGATE_AGENT_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<String>,
    /// Idle tunnel timeout [default: 15m].
    #[arg(long, env = "TOLLGATE_AGENT_IDLE_TIMEOUT")]
    pub idle_timeout: Option<String>,
    /// Log format.
    #[arg(long, env = "TOLLGATE_AGENT_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

/// The optional agent settings file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    /// `--relay`.
    relay: Option<String>,
    /// `--id`.
    id: Option<String>,
    /// `--credential-file`.
    credential_file: Option<PathBuf>,
    /// `--ca-file`.
    ca_file: Option<PathBuf>,
    /// `--allow`, as a list (the flag replaces it).
    allow: Option<Vec<String>>,
    /// `--connections`.
    connections: Option<u32>,
    /// `--connect-timeout`, e.g. "10s".
    connect_timeout: Option<String>,
    /// `--keepalive`.
    keepalive: Option<String>,
    /// `--drain-timeout`.
    drain_timeout: Option<String>,
    /// `--idle-timeout`.
    idle_timeout: Option<String>,
    /// `--log-format`.
    log_format: Option<LogFormat>,
}

/// Every problem found in the agent's settings.
#[derive(Debug, thiserror::Error)]
#[error("invalid agent configuration:\n  {}", .0.join("\n  "))]
pub struct AgentConfigError(pub Vec<String>);

/// Merges flags/env over the optional file, reads the credential and CA, and validates.
/// Every problem is reported at once.
pub fn resolve(args: &AgentArgs) -> Result<AgentConfig, AgentConfigError> {
    let mut errors = Vec::new();
    let file: FileConfig = load_toml_or_default(args.config.as_deref(), &mut errors);
    let dur = |flag, v: &Option<String>, f: &Option<String>, d, errs: &mut Vec<String>| {
        duration_setting(flag, v.as_ref(), f.as_ref(), d, errs)
    };
    let connect_timeout = dur(
        "connect-timeout",
        &args.connect_timeout,
        &file.connect_timeout,
        DEFAULT_CONNECT_TIMEOUT,
        &mut errors,
    );
    let keepalive = dur(
        "keepalive",
        &args.keepalive,
        &file.keepalive,
        DEFAULT_KEEPALIVE,
        &mut errors,
    );
    let drain_timeout = dur(
        "drain-timeout",
        &args.drain_timeout,
        &file.drain_timeout,
        DEFAULT_DRAIN_TIMEOUT,
        &mut errors,
    );
    let idle_timeout = dur(
        "idle-timeout",
        &args.idle_timeout,
        &file.idle_timeout,
        DEFAULT_IDLE_TIMEOUT,
        &mut errors,
    );
    let relay = args.relay.clone().or(file.relay);
    let relay = match relay.as_deref().map(parse_relay_url) {
        None => {
            errors.push("--relay is required (https://HOST:PORT of the relay listener)".into());
            None
        }
        Some(Err(e)) => {
            errors.push(format!("--relay: {e}"));
            None
        }
        Some(Ok(r)) => Some(r),
    };
    let id = args.id.clone().or(file.id);
    match &id {
        None => errors.push("--id is required".into()),
        Some(id) => errors.extend(agent_id_problem(id).map(|p| format!("--id: {p}"))),
    }
    let credential_file = args.credential_file.clone().or(file.credential_file);
    let credential = match credential_file.clone() {
        None => {
            errors.push("--credential-file is required (from `tollgate agent enroll`)".into());
            None
        }
        Some(p) => match std::fs::read_to_string(&p) {
            Ok(s) if !s.trim().is_empty() => Some(Credential::new(s.trim().to_string())),
            Ok(_) => {
                errors.push(format!("{}: the credential file is empty", p.display()));
                None
            }
            Err(e) => {
                errors.push(format!("{}: {e}", p.display()));
                None
            }
        },
    };
    let tls = match client_tls(args.ca_file.clone().or(file.ca_file).as_deref()) {
        Ok(t) => Some(t),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let entries = if args.allow.is_empty() {
        file.allow.unwrap_or_default()
    } else {
        args.allow.clone()
    };
    let allow = match Allowlist::parse(&entries) {
        Ok(a) => Some(a),
        Err(e) => {
            errors.extend(e);
            None
        }
    };
    let connections = args
        .connections
        .or(file.connections)
        .unwrap_or(DEFAULT_CONNECTIONS);
    if connections == 0 || connections > 64 {
        errors.push("--connections must be between 1 and 64".into());
    }

    let (
        Some((relay_host, relay_port, server_name)),
        Some(id),
        Some(credential),
        Some(tls),
        Some(allow),
    ) = (relay, id, credential, tls, allow)
    else {
        return Err(AgentConfigError(errors));
    };
    if !errors.is_empty() {
        return Err(AgentConfigError(errors));
    }
    Ok(AgentConfig {
        relay_host,
        relay_port,
        server_name,
        tls,
        id,
        credential,
        allow: Arc::new(allow),
        connections,
        connect_timeout,
        keepalive,
        drain_timeout,
        idle_timeout,
        log_format: args.log_format.or(file.log_format).unwrap_or_default(),
        // Present whenever the credential is (it was read from it).
        credential_file: credential_file.unwrap_or_default(),
    })
}

/// `https://host[:port]` → (host, port, TLS server name).
pub(crate) fn parse_relay_url(s: &str) -> Result<(String, u16, ServerName<'static>), String> {
    let uri: http::Uri = s.parse().map_err(|_| format!("{s:?} is not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!(
            "{s:?} must be an https:// URL (the relay speaks TLS)"
        ));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{s:?} has no host"))?;
    let port = crate::policy::authority_port(authority.as_str())
        .map_err(|_| format!("{s:?}: the port must be from 1 to 65535"))?
        .unwrap_or(443);
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let server_name = match host.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(host.clone())
            .map_err(|_| format!("{host:?} is not a valid host name"))?,
    };
    Ok((host, port, server_name))
}

fn client_tls(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("{}: no certificate in the file", path.display()));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    // AES-128-GCM first: every tunnelled byte is encrypted once on each side, and it costs
    // fewer rounds than AES-256 for the same TLS 1.3 security level the relay needs.
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![handshake::ALPN.to_vec()];
    Ok(Arc::new(tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_urls() {
        let (h, p, _) = parse_relay_url("https://relay.example:8443").unwrap();
        assert_eq!((h.as_str(), p), ("relay.example", 8443));
        let (h, p, n) = parse_relay_url("https://[::1]").unwrap();
        assert_eq!((h.as_str(), p), ("::1", 443));
        assert!(matches!(n, ServerName::IpAddress(_)));
        assert!(parse_relay_url("http://relay.example").is_err());
        assert!(parse_relay_url("relay.example:443").is_err());
        for bad in [
            "https://relay.example:0",
            "https://relay.example:65536",
            "https://[::1]:99999",
        ] {
            let err = parse_relay_url(bad).unwrap_err();
            assert!(err.contains("1 to 65535"), "{bad}: {err}");
        }
    }

    #[test]
    fn config_errors_are_reported_together() {
        let args = AgentArgs {
            relay: Some("http://x".into()),
            id: Some("Bad ID".into()),
            allow: vec!["*".into()],
            connections: Some(0),
            keepalive: Some("never".into()),
            ..Default::default()
        };
        let err = resolve(&args).unwrap_err();
        // relay, id, credential-file, allow, connections, keepalive
        assert_eq!(err.0.len(), 6, "{err}");
    }

    #[test]
    fn config_file_and_flags_merge() {
        let dir = tempfile::tempdir().unwrap();
        let cred = crate::config::write_test_file(dir.path(), "cred", "token\n");
        let cfg = crate::config::write_test_file(
            dir.path(),
            "agent.toml",
            &format!(
                "relay = \"https://127.0.0.1:9443\"\nid = \"onprem-1\"\ncredential_file = {:?}\nallow = [\"*.corp\", \"10.0.0.0/8\"]\nconnections = 3\n",
                cred.display().to_string()
            ),
        );
        let args = AgentArgs {
            config: Some(cfg.clone()),
            connections: Some(4),
            ..Default::default()
        };
        let c = resolve(&args).unwrap();
        assert_eq!(c.connections, 4, "flag wins");
        assert_eq!(c.allow.entries(), ["*.corp", "10.0.0.0/8"]);
        assert_eq!(format!("{:?}", c.credential), "Credential(MASKED)");
        std::fs::write(&cfg, "relay = \"https://x\"\nallowed = []\n").unwrap();
        let err = resolve(&AgentArgs {
            config: Some(cfg),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains(":2:") && err.contains("allowed"), "{err}");
    }
}
