//! `tollgate serve`'s grant-health settings: `--refresh-ahead` (the background refresher,
//! `oauth::refresher`) and `--events-webhook` / `--events-webhook-secret-file` (grant events
//! to the operator's endpoint, `oauth::events::webhook`). A flag group of its own
//! ([`HealthOverrides`], flattened into `serve`), resolved into [`GrantHealthConfig`]; the
//! file keys are `refresh_ahead`, `events_webhook` and `events_webhook_secret_file` at the
//! end of `super::FileConfig`. The webhook secret is read once, here, at start.

use std::path::PathBuf;
use std::time::Duration;

use crate::oauth::endpoint::{check_url, FieldErrors};

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
    /// Where grant events (`connected`, `disconnected`, `refresh_failed`, `needs_consent`,
    /// `recovered`) are POSTed, signed (https://, or http:// for loopback and private
    /// addresses; needs --events-webhook-secret-file) [default: off].
    #[arg(long, env = "TOLLGATE_EVENTS_WEBHOOK")]
    pub events_webhook: Option<String>,
    /// File holding the secret that signs each event (HMAC-SHA256, `Tollgate-Signature`);
    /// read at start, surrounding whitespace ignored [default: none].
    #[arg(long, env = "TOLLGATE_EVENTS_WEBHOOK_SECRET_FILE")]
    pub events_webhook_secret_file: Option<PathBuf>,
}

/// The grant-health keys of the settings file.
#[derive(Debug, Default, Clone, Copy)]
pub struct HealthFile<'a> {
    /// `refresh_ahead`.
    pub refresh_ahead: Option<&'a String>,
    /// `events_webhook`.
    pub events_webhook: Option<&'a String>,
    /// `events_webhook_secret_file`.
    pub events_webhook_secret_file: Option<&'a PathBuf>,
}

/// The secret that signs webhook deliveries; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(pub Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(redacted)")
    }
}

/// `--events-webhook`, validated, with its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// The receiver's URL.
    pub url: String,
    /// The HMAC key, from `--events-webhook-secret-file`.
    pub secret: WebhookSecret,
}

/// Validated grant-health settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantHealthConfig {
    /// The refresh-ahead window; `None` = the background refresher is off.
    pub refresh_ahead: Option<Duration>,
    /// The events webhook; `None` = events are not delivered anywhere.
    pub webhook: Option<WebhookConfig>,
}

impl Default for GrantHealthConfig {
    fn default() -> Self {
        GrantHealthConfig {
            refresh_ahead: Some(DEFAULT_REFRESH_AHEAD),
            webhook: None,
        }
    }
}

/// Flags over the file's keys over the defaults; problems are added to `errors`.
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
    let webhook = webhook(
        over.events_webhook.as_ref().or(file.events_webhook),
        over.events_webhook_secret_file
            .as_ref()
            .or(file.events_webhook_secret_file),
        errors,
    );
    GrantHealthConfig {
        refresh_ahead,
        webhook,
    }
}

/// The webhook's URL (checked like provider endpoints) and secret (read now).
fn webhook(
    url: Option<&String>,
    secret_file: Option<&PathBuf>,
    errors: &mut Vec<String>,
) -> Option<WebhookConfig> {
    let Some(url) = url else {
        if secret_file.is_some() {
            errors.push("--events-webhook-secret-file is set without --events-webhook".into());
        }
        return None;
    };
    let mut errs = FieldErrors::new();
    if url.is_empty() || check_url("events_webhook", url, &mut errs).is_none() {
        let why = errs
            .into_values()
            .next()
            .unwrap_or_else(|| "is empty".into());
        errors.push(format!("--events-webhook {url:?}: {why}"));
        return None;
    }
    let Some(path) = secret_file else {
        errors.push(
            "--events-webhook needs --events-webhook-secret-file: events are always signed".into(),
        );
        return None;
    };
    let secret = match std::fs::read(path) {
        Ok(bytes) => bytes.trim_ascii().to_vec(),
        Err(e) => {
            errors.push(format!(
                "--events-webhook-secret-file {}: {e}",
                path.display()
            ));
            return None;
        }
    };
    if secret.len() < 16 {
        errors.push(format!(
            "--events-webhook-secret-file {}: the secret must be at least 16 bytes",
            path.display()
        ));
        return None;
    }
    Some(WebhookConfig {
        url: url.clone(),
        secret: WebhookSecret(secret),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_minutes_by_default_and_off() {
        let mut errors = Vec::new();
        let d = resolve(
            &HealthOverrides::default(),
            HealthFile::default(),
            &mut errors,
        );
        assert_eq!(d, GrantHealthConfig::default());
        for off in ["0", "off", "0s"] {
            let over = HealthOverrides {
                refresh_ahead: Some(off.into()),
                ..Default::default()
            };
            let got = resolve(&over, HealthFile::default(), &mut errors);
            assert_eq!(got.refresh_ahead, None);
        }
        let file = "90s".to_string();
        let in_file = HealthFile {
            refresh_ahead: Some(&file),
            ..Default::default()
        };
        let from_file = resolve(&HealthOverrides::default(), in_file, &mut errors);
        assert_eq!(from_file.refresh_ahead, Some(Duration::from_secs(90)));
        assert!(errors.is_empty(), "{errors:?}");
        let bad = HealthOverrides {
            refresh_ahead: Some("soon".into()),
            ..Default::default()
        };
        resolve(&bad, HealthFile::default(), &mut errors);
        assert_eq!(errors.len(), 1, "{errors:?}");
    }

    fn webhook_of(url: &str, secret: Option<&str>) -> Result<WebhookConfig, Vec<String>> {
        let dir = tempfile::tempdir().map_err(|e| vec![e.to_string()])?;
        let path = dir.path().join("secret");
        if let Some(s) = secret {
            std::fs::write(&path, s).map_err(|e| vec![e.to_string()])?;
        }
        let over = HealthOverrides {
            events_webhook: Some(url.into()),
            events_webhook_secret_file: Some(path),
            ..Default::default()
        };
        let mut errors = Vec::new();
        let c = resolve(&over, HealthFile::default(), &mut errors);
        c.webhook.ok_or(errors)
    }

    #[test]
    fn webhook_needs_a_secret_and_https_off_the_local_network() {
        let ok = webhook_of("https://hooks.example/tollgate", Some("0123456789abcdef\n"))
            .expect("valid");
        assert_eq!(ok.secret.0, b"0123456789abcdef");
        assert!(
            !format!("{ok:?}").contains("0123456789"),
            "the secret is never printed"
        );
        webhook_of("http://127.0.0.1:9/events", Some("0123456789abcdef")).expect("loopback");
        webhook_of("http://10.1.2.3/events", Some("0123456789abcdef")).expect("private");
        let e = webhook_of("http://hooks.example/events", Some("0123456789abcdef"))
            .expect_err("plain http");
        assert!(e[0].contains("https"), "{e:?}");
        let e = webhook_of("https://hooks.example/e", None).expect_err("no secret file");
        assert!(e[0].contains("secret-file"), "{e:?}");
        let e = webhook_of("https://hooks.example/e", Some("short")).expect_err("short");
        assert!(e[0].contains("16 bytes"), "{e:?}");
        let over = HealthOverrides {
            events_webhook: Some("https://hooks.example/e".into()),
            ..Default::default()
        };
        let mut errors = Vec::new();
        resolve(&over, HealthFile::default(), &mut errors);
        assert!(
            errors[0].contains("needs --events-webhook-secret-file"),
            "{errors:?}"
        );
    }
}
