//! `tollgate serve` settings for running as one of several replicas behind a load balancer:
//! `--shutdown-delay` (how long the listeners keep accepting after `/readyz` turned `503` on
//! SIGTERM, so the balancer's health check notices first), `--proxy-protocol` (the proxy
//! and relay listeners take a PROXY protocol v2 header from `--trusted-proxies` peers, the
//! flag the web listener's login headers use), `--relay-advertise` (the relay
//! URL this replica gives agents, so they keep a session to every replica), and retention
//! (`--audit-retention`, on every store). A flag group of its own
//! ([`ReplicaOverrides`], flattened into `serve`), resolved into [`Replicas`]; the file keys
//! live at the end of [`super::FileConfig`].

use std::time::Duration;

use ipnet::IpNet;

use super::login::{default_trusted_proxies, parse_cidrs};
use super::FileConfig;
use crate::store::replicas::DEFAULT_AUDIT_RETENTION;

/// Time the listeners keep accepting after `/readyz` turned `503`: longer than a balancer
/// needs to see a failed check (HAProxy's default `inter 2s` with `fall 2`).
pub const DEFAULT_SHUTDOWN_DELAY: Duration = Duration::from_secs(5);

/// The replica flags; `None` = not given.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ReplicaOverrides {
    /// On SIGTERM, how long `/readyz` answers 503 while the listeners still accept, before
    /// they stop and requests in flight drain; `0s` for none [default: 5s].
    #[arg(long, env = "TOLLGATE_SHUTDOWN_DELAY")]
    pub shutdown_delay: Option<String>,
    /// The proxy and relay listeners accept a PROXY protocol v2 header (sent by a load
    /// balancer, e.g. HAProxy's `send-proxy-v2`) from `--trusted-proxies` peers, and see the
    /// client it names; a header from any other peer closes the connection [default: off].
    #[arg(long, env = "TOLLGATE_PROXY_PROTOCOL")]
    pub proxy_protocol: bool,
    /// Relay URL this replica tells agents (https://HOST:PORT, reachable from the agents;
    /// agents check the relay certificate against the name in their own --relay)
    /// [default: https://RELAY-LISTEN; for a wildcard address the public URL's host].
    #[arg(long, env = "TOLLGATE_RELAY_ADVERTISE")]
    pub relay_advertise: Option<String>,
    /// How long audit events are kept; older ones are deleted every hour [default: 90d].
    #[arg(long, env = "TOLLGATE_AUDIT_RETENTION")]
    pub audit_retention: Option<String>,
}

/// Validated replica settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replicas {
    /// Drain delay between `/readyz` turning `503` and the listeners closing.
    pub shutdown_delay: Duration,
    /// Whether the proxy and relay listeners take PROXY protocol v2 headers.
    pub proxy_protocol: bool,
    /// Who may send them (`--trusted-proxies`, default loopback).
    pub trusted_proxies: Vec<IpNet>,
    /// The advertised relay URL; `None` = derived from the relay listener at bind time.
    pub relay_advertise: Option<String>,
    /// How long audit events are kept.
    pub audit_retention: Duration,
}

impl Default for Replicas {
    fn default() -> Self {
        Replicas {
            shutdown_delay: DEFAULT_SHUTDOWN_DELAY,
            proxy_protocol: false,
            trusted_proxies: default_trusted_proxies(),
            relay_advertise: None,
            audit_retention: DEFAULT_AUDIT_RETENTION,
        }
    }
}

impl Replicas {
    /// Flags over the file over the defaults; `trusted` is `--trusted-proxies` as given (the
    /// login group's flag); problems are added to `errors`.
    pub fn resolve(
        over: &ReplicaOverrides,
        trusted: Option<&Vec<String>>,
        file: &FileConfig,
        errors: &mut Vec<String>,
    ) -> Self {
        let shutdown_delay = match over
            .shutdown_delay
            .as_ref()
            .or(file.shutdown_delay.as_ref())
        {
            None => DEFAULT_SHUTDOWN_DELAY,
            // Zero is allowed: a replica nobody balances need not wait.
            Some(s) => humantime::parse_duration(s).unwrap_or_else(|_| {
                errors.push(format!(
                    "--shutdown-delay: {s:?} is not a duration like 5s (0s for none)"
                ));
                DEFAULT_SHUTDOWN_DELAY
            }),
        };
        let trusted_proxies = match trusted.or(file.trusted_proxies.as_ref()) {
            None => default_trusted_proxies(),
            // The login group may report the same problems: `Config::resolve` drops repeats.
            Some(list) => parse_cidrs(list, errors),
        };
        let audit_retention = super::duration_setting(
            "audit-retention",
            over.audit_retention.as_ref(),
            file.audit_retention.as_ref(),
            DEFAULT_AUDIT_RETENTION,
            errors,
        );
        let relay_advertise = over
            .relay_advertise
            .clone()
            .or(file.relay_advertise.clone());
        if let Some(url) = &relay_advertise {
            if let Err(e) = super::agent::parse_relay_url(url) {
                errors.push(format!("--relay-advertise: {e}"));
            } else if url.len() > crate::store::replicas::MAX_RELAY_URL {
                errors.push("--relay-advertise: the URL is too long".into());
            }
        }
        Replicas {
            shutdown_delay,
            proxy_protocol: over.proxy_protocol || file.proxy_protocol.unwrap_or(false),
            trusted_proxies,
            relay_advertise,
            audit_retention,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_defaults_accepts_zero_and_rejects_garbage() {
        let file = FileConfig::default();
        let mut errors = Vec::new();
        let r = Replicas::resolve(&ReplicaOverrides::default(), None, &file, &mut errors);
        assert_eq!(r, Replicas::default());
        let zero = ReplicaOverrides {
            shutdown_delay: Some("0s".into()),
            ..Default::default()
        };
        assert_eq!(
            Replicas::resolve(&zero, None, &file, &mut errors).shutdown_delay,
            Duration::ZERO
        );
        assert!(errors.is_empty(), "{errors:?}");
        let bad = ReplicaOverrides {
            shutdown_delay: Some("soon".into()),
            ..Default::default()
        };
        Replicas::resolve(&bad, None, &file, &mut errors);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("--shutdown-delay"), "{errors:?}");
    }

    #[test]
    fn proxy_protocol_trusts_the_trusted_proxies_flag() {
        let file = FileConfig::default();
        let mut errors = Vec::new();
        let over = ReplicaOverrides {
            proxy_protocol: true,
            ..Default::default()
        };
        let list = vec!["10.0.0.0/8".to_string(), "192.0.2.7".to_string()];
        let r = Replicas::resolve(&over, Some(&list), &file, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(r.proxy_protocol);
        assert_eq!(r.trusted_proxies.len(), 2);
        assert_eq!(r.trusted_proxies[1].to_string(), "192.0.2.7/32");
        let bad = vec!["nope".to_string()];
        Replicas::resolve(&over, Some(&bad), &file, &mut errors);
        assert_eq!(errors.len(), 1, "{errors:?}");
    }

    #[test]
    fn the_advertised_url_is_an_https_relay_url_and_retention_a_duration() {
        let file = FileConfig {
            relay_advertise: Some("https://file:1".into()),
            ..Default::default()
        };
        let mut errors = vec![];
        let over = ReplicaOverrides {
            relay_advertise: Some("https://10.0.0.1:8443".into()),
            audit_retention: Some("30d".into()),
            ..Default::default()
        };
        let r = Replicas::resolve(&over, None, &file, &mut errors);
        assert_eq!(r.relay_advertise.as_deref(), Some("https://10.0.0.1:8443"));
        assert_eq!(r.audit_retention, Duration::from_secs(30 * 86_400));
        let r = Replicas::resolve(&ReplicaOverrides::default(), None, &file, &mut errors);
        assert_eq!(r.relay_advertise.as_deref(), Some("https://file:1"));
        assert_eq!(r.audit_retention, DEFAULT_AUDIT_RETENTION);
        assert!(errors.is_empty(), "{errors:?}");
        let bad = ReplicaOverrides {
            relay_advertise: Some("http://10.0.0.1:8443".into()),
            audit_retention: Some("forever".into()),
            ..Default::default()
        };
        Replicas::resolve(&bad, None, &FileConfig::default(), &mut errors);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors.iter().any(|e| e.starts_with("--relay-advertise:")));
        assert!(errors.iter().any(|e| e.starts_with("--audit-retention:")));
    }
}
