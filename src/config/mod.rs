//! Settings of the two long-running commands, each merged from flags, environment variables
//! and an optional TOML file (flag/env > file > default) and validated in two steps, as in
//! rathole: a raw, strict (`deny_unknown_fields`) file shape, then a validated type, with
//! every problem reported at once.
//!
//! - [`serve`]: `tollgate serve` (`TOLLGATE_*`, `tollgate.toml`) → [`Config`];
//! - [`agent`]: `tollgate agent run` (`TOLLGATE_AGENT_*`) → [`crate::agent::AgentConfig`].
//!
//! This module holds what both share: the file loader, duration parsing and the defaults
//! both use.

use std::path::Path;
use std::time::Duration;

pub mod agent;
pub mod events;
pub mod identity;
pub mod limits;
pub mod login;
pub mod otlp;
pub mod replicas;
pub mod serve;
pub mod store;
pub mod upstream;

pub use crate::logging::LogFormat;
pub use serve::{
    Config, ConfigError, FileConfig, ServeOverrides, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_REQUEST_HEAD, DEFAULT_PROXY_LISTEN, DEFAULT_REQUEST_HEAD_TIMEOUT,
    DEFAULT_SHUTDOWN_GRACE, DEFAULT_UPSTREAM_TIMEOUT, DEFAULT_WEB_LISTEN,
};

/// Connect timeout to an upstream (DESIGN default).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A tunnel with no bytes either way for this long is closed (DESIGN default: 15 min).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Reads an optional TOML settings file; a file that cannot be read or parsed adds its
/// `FILE:LINE: message` to `errors` and yields the defaults, so every problem is reported at
/// once. Shared by `serve` and `agent run`.
pub(crate) fn load_toml_or_default<T: serde::de::DeserializeOwned + Default>(
    path: Option<&Path>,
    errors: &mut Vec<String>,
) -> T {
    let Some(path) = path else {
        return T::default();
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            errors.push(format!("{}: {e}", path.display()));
            return T::default();
        }
    };
    toml::from_str(&text).unwrap_or_else(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(0);
        errors.push(format!("{}:{line}: {}", path.display(), e.message()));
        T::default()
    })
}

/// A positive duration from the flag (or its variable), else the file, else `default`; an
/// invalid one adds an error naming `--flag` and yields `default`.
pub(crate) fn duration_setting(
    flag: &str,
    value: Option<&String>,
    file: Option<&String>,
    default: Duration,
    errors: &mut Vec<String>,
) -> Duration {
    match value.or(file) {
        None => default,
        Some(s) => match humantime::parse_duration(s) {
            Ok(x) if !x.is_zero() => x,
            _ => {
                errors.push(format!(
                    "--{flag}: {s:?} is not a positive duration like 10s"
                ));
                default
            }
        },
    }
}

/// Writes `contents` to `name` in `dir` and returns its path (config tests' files).
#[cfg(test)]
pub(crate) fn write_test_file(
    dir: &std::path::Path,
    name: &str,
    contents: &str,
) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}
