//! Settings of a replica among several on one shared store: `--relay-advertise URL`
//! (`TOLLGATE_RELAY_ADVERTISE`, file key `relay_advertise`), the relay address this replica
//! gives agents so they keep a session to every replica; and retention,
//! `--audit-retention` (`TOLLGATE_AUDIT_RETENTION`, `audit_retention`), on every store.

use std::time::Duration;

use crate::store::replicas::DEFAULT_AUDIT_RETENTION;

/// What the command line (and its environment variables) said.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ReplicaOverrides {
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
pub struct ReplicaSettings {
    /// The advertised relay URL; `None` = derived from the relay listener at bind time.
    pub relay_advertise: Option<String>,
    /// How long audit events are kept.
    pub audit_retention: Duration,
}

impl Default for ReplicaSettings {
    fn default() -> Self {
        ReplicaSettings {
            relay_advertise: None,
            audit_retention: DEFAULT_AUDIT_RETENTION,
        }
    }
}

impl ReplicaSettings {
    /// The flags over the file (`relay_advertise`, `audit_retention`); problems go to
    /// `errors`.
    pub fn resolve(
        over: &ReplicaOverrides,
        file: Option<&String>,
        file_retention: Option<&String>,
        errors: &mut Vec<String>,
    ) -> ReplicaSettings {
        let audit_retention = super::duration_setting(
            "audit-retention",
            over.audit_retention.as_ref(),
            file_retention,
            DEFAULT_AUDIT_RETENTION,
            errors,
        );
        let relay_advertise = over.relay_advertise.clone().or(file.cloned());
        if let Some(url) = &relay_advertise {
            if let Err(e) = super::agent::parse_relay_url(url) {
                errors.push(format!("--relay-advertise: {e}"));
            } else if url.len() > crate::store::replicas::MAX_RELAY_URL {
                errors.push("--relay-advertise: the URL is too long".into());
            }
        }
        ReplicaSettings {
            relay_advertise,
            audit_retention,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advertised_url_is_an_https_relay_url() {
        let mut errors = vec![];
        let over = ReplicaOverrides {
            relay_advertise: Some("https://10.0.0.1:8443".into()),
            audit_retention: Some("30d".into()),
        };
        let file = "https://file:1".to_string();
        let s = ReplicaSettings::resolve(&over, Some(&file), None, &mut errors);
        assert_eq!(s.relay_advertise.as_deref(), Some("https://10.0.0.1:8443"));
        assert_eq!(s.audit_retention, Duration::from_secs(30 * 86_400));
        let none = ReplicaOverrides::default();
        let s = ReplicaSettings::resolve(&none, Some(&file), None, &mut errors);
        assert_eq!(s.relay_advertise.as_deref(), Some("https://file:1"));
        assert_eq!(
            s,
            ReplicaSettings {
                relay_advertise: s.relay_advertise.clone(),
                ..Default::default()
            }
        );
        assert!(errors.is_empty());
        let bad = ReplicaOverrides {
            relay_advertise: Some("http://10.0.0.1:8443".into()),
            audit_retention: Some("forever".into()),
        };
        ReplicaSettings::resolve(&bad, None, None, &mut errors);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors.iter().any(|e| e.starts_with("--relay-advertise:")));
        assert!(errors.iter().any(|e| e.starts_with("--audit-retention:")));
    }
}
