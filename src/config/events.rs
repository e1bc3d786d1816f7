//! `tollgate serve`'s grant-health settings: `--refresh-ahead` (the background refresher,
//! `oauth::refresher`). A flag group of its own ([`HealthOverrides`], flattened into
//! `serve`), resolved into [`GrantHealthConfig`]; the file key is `refresh_ahead` at the end
//! of `super::FileConfig`. (The events webhook's flags will join this group.)

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
}

/// Validated grant-health settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantHealthConfig {
    /// The refresh-ahead window; `None` = the background refresher is off.
    pub refresh_ahead: Option<Duration>,
}

impl Default for GrantHealthConfig {
    fn default() -> Self {
        GrantHealthConfig {
            refresh_ahead: Some(DEFAULT_REFRESH_AHEAD),
        }
    }
}

/// Flags over the file's `refresh_ahead` over the default; problems are added to `errors`.
pub fn resolve(
    over: &HealthOverrides,
    file: Option<&String>,
    errors: &mut Vec<String>,
) -> GrantHealthConfig {
    let refresh_ahead = match over.refresh_ahead.as_ref().or(file) {
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
    GrantHealthConfig { refresh_ahead }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_minutes_by_default_and_off() {
        let mut errors = Vec::new();
        let d = resolve(&HealthOverrides::default(), None, &mut errors);
        assert_eq!(d, GrantHealthConfig::default());
        for off in ["0", "off", "0s"] {
            let over = HealthOverrides {
                refresh_ahead: Some(off.into()),
            };
            assert_eq!(resolve(&over, None, &mut errors).refresh_ahead, None);
        }
        let file = "90s".to_string();
        let from_file = resolve(&HealthOverrides::default(), Some(&file), &mut errors);
        assert_eq!(from_file.refresh_ahead, Some(Duration::from_secs(90)));
        assert!(errors.is_empty(), "{errors:?}");
        let bad = HealthOverrides {
            refresh_ahead: Some("soon".into()),
        };
        resolve(&bad, None, &mut errors);
        assert_eq!(errors.len(), 1, "{errors:?}");
    }
}
