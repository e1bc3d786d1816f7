//! `tollgate serve`'s grant-health settings: `--refresh-ahead` (the background refresher,
//! `oauth::refresher`) and `--events-webhook` with `--events-webhook-secret-file` (grant
//! events, `oauth::events`). A flag group of its own ([`HealthOverrides`], flattened into
//! `serve`), resolved into [`GrantHealthConfig`]; the file keys are at the end of
//! `super::FileConfig`.

use std::path::PathBuf;
use std::time::Duration;

/// The default refresh-ahead window: grants are refreshed when less than this is left.
pub const DEFAULT_REFRESH_AHEAD: Duration = Duration::from_secs(5 * 60);

/// The grant-health flags; `None` = not given.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct HealthOverrides {
    /// Refresh users' grants in the background when less than this is left before the
    /// access token expires (and at least once a day); `0` or `off` disables the background
    /// refresher [default: 5m].
    #[arg(long, env = "TOLLGATE_REFRESH_AHEAD")]
    pub refresh_ahead: Option<String>,
    /// URL (http:// or https://) that receives grant events (connected, disconnected,
    /// refresh_failed, needs_consent, recovered) as signed JSON POSTs [default: off].
    #[arg(long, env = "TOLLGATE_EVENTS_WEBHOOK")]
    pub events_webhook: Option<String>,
    /// File holding the secret the events webhook's bodies are signed with (HMAC-SHA256,
    /// `Tollgate-Signature` header); required with --events-webhook.
    #[arg(long, env = "TOLLGATE_EVENTS_WEBHOOK_SECRET_FILE")]
    pub events_webhook_secret_file: Option<PathBuf>,
}

/// The events webhook, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsWebhook {
    /// Where events are POSTed.
    pub url: String,
    /// The signing secret's file (read at start; never logged).
    pub secret_file: PathBuf,
}

/// Validated grant-health settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantHealthConfig {
    /// The refresh-ahead window; `None` = the background refresher is off.
    pub refresh_ahead: Option<Duration>,
    /// The events webhook, when on.
    pub events_webhook: Option<EventsWebhook>,
}

impl Default for GrantHealthConfig {
    fn default() -> Self {
        GrantHealthConfig {
            refresh_ahead: Some(DEFAULT_REFRESH_AHEAD),
            events_webhook: None,
        }
    }
}

/// The file's grant-health keys.
#[derive(Debug, Default, Clone)]
pub struct HealthFile<'a> {
    /// `refresh_ahead`.
    pub refresh_ahead: Option<&'a String>,
    /// `events_webhook`.
    pub events_webhook: Option<&'a String>,
    /// `events_webhook_secret_file`.
    pub events_webhook_secret_file: Option<&'a PathBuf>,
}

/// Flags over the file over the defaults; problems are added to `errors`.
pub fn resolve(
    over: &HealthOverrides,
    file: HealthFile<'_>,
    errors: &mut Vec<String>,
) -> GrantHealthConfig {
    let refresh_ahead = match over.refresh_ahead.as_ref().or(file.refresh_ahead) {
        None => Some(DEFAULT_REFRESH_AHEAD),
        Some(s) if s == "off" || s == "0" => None,
        Some(s) => match humantime::parse_duration(s) {
            Ok(d) if d.is_zero() => None,
            Ok(d) => Some(d),
            Err(e) => {
                errors.push(format!("--refresh-ahead {s:?}: {e} (e.g. 5m, or off)"));
                None
            }
        },
    };
    let url = over.events_webhook.as_ref().or(file.events_webhook);
    let secret = over
        .events_webhook_secret_file
        .as_ref()
        .or(file.events_webhook_secret_file);
    let events_webhook = match (url, secret) {
        (None, None) => None,
        (None, Some(_)) => {
            errors.push("--events-webhook-secret-file needs --events-webhook".into());
            None
        }
        (Some(_), None) => {
            errors.push("--events-webhook needs --events-webhook-secret-file".into());
            None
        }
        (Some(url), Some(secret)) => match check_url(url) {
            Ok(()) => Some(EventsWebhook {
                url: url.clone(),
                secret_file: secret.clone(),
            }),
            Err(e) => {
                errors.push(format!("--events-webhook: {e}"));
                None
            }
        },
    };
    GrantHealthConfig {
        refresh_ahead,
        events_webhook,
    }
}

/// An http(s) URL without credentials (they would be logged with it).
fn check_url(u: &str) -> Result<(), String> {
    let uri: http::Uri = u.parse().map_err(|_| format!("{u:?} is not a URL"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(a)) if !a.as_str().contains('@') => Ok(()),
        (Some("http" | "https"), Some(_)) => Err("the URL must not carry credentials".into()),
        _ => Err(format!("{u:?} must be an http:// or https:// URL")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_off_and_pairs() {
        let mut errors = Vec::new();
        let none = HealthFile::default();
        let d = resolve(&HealthOverrides::default(), none.clone(), &mut errors);
        assert_eq!(d, GrantHealthConfig::default());
        for off in ["0", "off", "0s"] {
            let over = HealthOverrides {
                refresh_ahead: Some(off.into()),
                ..Default::default()
            };
            assert_eq!(
                resolve(&over, none.clone(), &mut errors).refresh_ahead,
                None
            );
        }
        assert!(errors.is_empty(), "{errors:?}");
        let half = HealthOverrides {
            events_webhook: Some("https://ops.example/hook".into()),
            ..Default::default()
        };
        resolve(&half, none.clone(), &mut errors);
        let bad = HealthOverrides {
            refresh_ahead: Some("soon".into()),
            events_webhook: Some("ftp://x".into()),
            events_webhook_secret_file: Some("s".into()),
        };
        resolve(&bad, none, &mut errors);
        assert_eq!(errors.len(), 3, "{errors:?}");
    }
}
