//! Settings of a replica among several on one shared store: `--relay-advertise URL`
//! (`TOLLGATE_RELAY_ADVERTISE`, file key `relay_advertise`), the relay address this replica
//! gives agents so they keep a session to every replica.

/// What the command line (and its environment variables) said.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ReplicaOverrides {
    /// Relay URL this replica tells agents (https://HOST:PORT, reachable from the agents;
    /// agents check the relay certificate against the name in their own --relay)
    /// [default: https://RELAY-LISTEN; for a wildcard address the public URL's host].
    #[arg(long, env = "TOLLGATE_RELAY_ADVERTISE")]
    pub relay_advertise: Option<String>,
}

/// Validated replica settings.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplicaSettings {
    /// The advertised relay URL; `None` = derived from the relay listener at bind time.
    pub relay_advertise: Option<String>,
}

impl ReplicaSettings {
    /// The flags over the file; problems go to `errors`.
    pub fn resolve(
        over: &ReplicaOverrides,
        file: Option<&String>,
        errors: &mut Vec<String>,
    ) -> ReplicaSettings {
        let relay_advertise = over.relay_advertise.clone().or(file.cloned());
        if let Some(url) = &relay_advertise {
            if let Err(e) = super::agent::parse_relay_url(url) {
                errors.push(format!("--relay-advertise: {e}"));
            } else if url.len() > crate::store::replicas::MAX_RELAY_URL {
                errors.push("--relay-advertise: the URL is too long".into());
            }
        }
        ReplicaSettings { relay_advertise }
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
        };
        let file = "https://file:1".to_string();
        let s = ReplicaSettings::resolve(&over, Some(&file), &mut errors);
        assert_eq!(s.relay_advertise.as_deref(), Some("https://10.0.0.1:8443"));
        let s = ReplicaSettings::resolve(&ReplicaOverrides::default(), Some(&file), &mut errors);
        assert_eq!(s.relay_advertise.as_deref(), Some("https://file:1"));
        assert!(errors.is_empty());
        let bad = ReplicaOverrides {
            relay_advertise: Some("http://10.0.0.1:8443".into()),
        };
        ReplicaSettings::resolve(&bad, None, &mut errors);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("--relay-advertise:"));
    }
}
