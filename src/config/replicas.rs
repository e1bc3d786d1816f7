//! `tollgate serve` settings for running as one of several replicas behind a load balancer:
//! `--shutdown-delay` (how long the listeners keep accepting after `/readyz` turned `503` on
//! SIGTERM, so the balancer's health check notices first). A flag group of its own
//! ([`ReplicaOverrides`], flattened into `serve`), resolved into [`Replicas`]; the file keys
//! live at the end of [`super::FileConfig`].

use std::time::Duration;

use super::FileConfig;

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
}

/// Validated replica settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replicas {
    /// Drain delay between `/readyz` turning `503` and the listeners closing.
    pub shutdown_delay: Duration,
}

impl Default for Replicas {
    fn default() -> Self {
        Replicas {
            shutdown_delay: DEFAULT_SHUTDOWN_DELAY,
        }
    }
}

impl Replicas {
    /// Flags over the file over the defaults; problems are added to `errors`.
    pub fn resolve(over: &ReplicaOverrides, file: &FileConfig, errors: &mut Vec<String>) -> Self {
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
        Replicas { shutdown_delay }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_defaults_accepts_zero_and_rejects_garbage() {
        let file = FileConfig::default();
        let mut errors = Vec::new();
        let r = Replicas::resolve(&ReplicaOverrides::default(), &file, &mut errors);
        assert_eq!(r, Replicas::default());
        let zero = ReplicaOverrides {
            shutdown_delay: Some("0s".into()),
        };
        assert_eq!(
            Replicas::resolve(&zero, &file, &mut errors).shutdown_delay,
            Duration::ZERO
        );
        assert!(errors.is_empty(), "{errors:?}");
        let bad = ReplicaOverrides {
            shutdown_delay: Some("soon".into()),
        };
        Replicas::resolve(&bad, &file, &mut errors);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("--shutdown-delay"), "{errors:?}");
    }
}
