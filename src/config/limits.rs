//! `tollgate serve` listener limits (issue 13, "Listeners"): the web listener's header timeout,
//! idle timeout and connection cap, the relay's handshake deadline, and the proxy's body
//! timeout and per-caller connection cap. A flag group of its own ([`LimitsOverrides`],
//! flattened into `serve`), resolved into [`Limits`]; the file keys live at the end of
//! [`super::FileConfig`].

use std::time::Duration;

use super::{duration_setting, FileConfig};

/// Time a web client has to send a request head; also how long an idle keep-alive connection
/// stays open waiting for its next request (DESIGN: 10 s).
pub const DEFAULT_WEB_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A web connection on which no byte moved either way for this long is closed: a body that
/// stalls mid-way, a client that stopped reading its response. Longer than any web handler
/// waits on a provider (the OAuth callback's token exchange: connect 10 s + upstream 60 s).
pub const DEFAULT_WEB_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Concurrent web connections before `503 overloaded` (DESIGN: 1024).
pub const DEFAULT_WEB_MAX_CONNECTIONS: usize = 1024;
/// Time an agent has for TLS plus its credential on the relay.
pub const DEFAULT_RELAY_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to send the rest of a request body tollgate buffers (DESIGN: 30 s).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Live proxy connections one caller (org, user) may hold (DESIGN: 256).
pub const DEFAULT_MAX_CONNECTIONS_PER_CALLER: usize = 256;

/// The limits flags; `None` = not given.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct LimitsOverrides {
    /// Time a web client has to send its request head; an idle keep-alive web connection is
    /// closed after the same time [default: 10s].
    #[arg(long, env = "TOLLGATE_WEB_HEADER_TIMEOUT")]
    pub web_header_timeout: Option<String>,
    /// A web connection with no bytes moving either way for this long is closed [default: 2m].
    #[arg(long, env = "TOLLGATE_WEB_IDLE_TIMEOUT")]
    pub web_idle_timeout: Option<String>,
    /// Maximum concurrent web connections; beyond, `503 overloaded` [default: 1024].
    #[arg(long, env = "TOLLGATE_WEB_MAX_CONNECTIONS")]
    pub web_max_connections: Option<usize>,
    /// Time an agent has for TLS plus authentication on the relay [default: 5s].
    #[arg(long, env = "TOLLGATE_RELAY_HANDSHAKE_TIMEOUT")]
    pub relay_handshake_timeout: Option<String>,
    /// Time a client has to send a request body the proxy buffers (replayable bodies of
    /// injected requests) [default: 30s].
    #[arg(long, env = "TOLLGATE_BODY_TIMEOUT")]
    pub body_timeout: Option<String>,
    /// Maximum live proxy connections per caller (org, user); beyond, `503 overloaded`
    /// [default: 256].
    #[arg(long, env = "TOLLGATE_MAX_CONNECTIONS_PER_CALLER")]
    pub max_connections_per_caller: Option<usize>,
}

/// Validated listener limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Web request-head (and keep-alive idle) timeout.
    pub web_header_timeout: Duration,
    /// Web connection inactivity timeout (no bytes either way).
    pub web_idle_timeout: Duration,
    /// Web connection cap.
    pub web_max_connections: usize,
    /// Relay TLS + authentication deadline.
    pub relay_handshake_timeout: Duration,
    /// Timeout for the rest of a buffered request body.
    pub body_timeout: Duration,
    /// Live proxy connections per caller.
    pub max_connections_per_caller: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            web_header_timeout: DEFAULT_WEB_HEADER_TIMEOUT,
            web_idle_timeout: DEFAULT_WEB_IDLE_TIMEOUT,
            web_max_connections: DEFAULT_WEB_MAX_CONNECTIONS,
            relay_handshake_timeout: DEFAULT_RELAY_HANDSHAKE_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections_per_caller: DEFAULT_MAX_CONNECTIONS_PER_CALLER,
        }
    }
}

impl Limits {
    /// Flags over the file over the defaults; problems are added to `errors`.
    pub fn resolve(over: &LimitsOverrides, file: &FileConfig, errors: &mut Vec<String>) -> Self {
        // The setting named `$key` (flag `--$key` with dashes): a positive duration.
        macro_rules! duration {
            ($key:ident, $default:expr) => {
                duration_setting(
                    &stringify!($key).replace('_', "-"),
                    over.$key.as_ref(),
                    file.$key.as_ref(),
                    $default,
                    errors,
                )
            };
        }
        // The setting named `$key`: a count of at least 1.
        macro_rules! count {
            ($key:ident, $default:expr) => {{
                let n = over.$key.or(file.$key).unwrap_or($default);
                if n == 0 {
                    let flag = stringify!($key).replace('_', "-");
                    errors.push(format!("--{flag} must be at least 1"));
                }
                n
            }};
        }
        Limits {
            web_header_timeout: duration!(web_header_timeout, DEFAULT_WEB_HEADER_TIMEOUT),
            web_idle_timeout: duration!(web_idle_timeout, DEFAULT_WEB_IDLE_TIMEOUT),
            web_max_connections: count!(web_max_connections, DEFAULT_WEB_MAX_CONNECTIONS),
            relay_handshake_timeout: duration!(
                relay_handshake_timeout,
                DEFAULT_RELAY_HANDSHAKE_TIMEOUT
            ),
            body_timeout: duration!(body_timeout, DEFAULT_BODY_TIMEOUT),
            max_connections_per_caller: count!(
                max_connections_per_caller,
                DEFAULT_MAX_CONNECTIONS_PER_CALLER
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_design_and_flags_win() {
        let mut errors = Vec::new();
        let l = Limits::resolve(
            &LimitsOverrides::default(),
            &FileConfig::default(),
            &mut errors,
        );
        assert!(errors.is_empty());
        assert_eq!(l, Limits::default());
        assert_eq!(l.web_header_timeout, Duration::from_secs(10));
        assert_eq!(l.web_max_connections, 1024);
        assert_eq!(l.body_timeout, Duration::from_secs(30));
        assert_eq!(l.max_connections_per_caller, 256);
        assert_eq!(l.relay_handshake_timeout, Duration::from_secs(5));

        let file = FileConfig {
            web_max_connections: Some(10),
            body_timeout: Some("3s".into()),
            ..Default::default()
        };
        let over = LimitsOverrides {
            web_max_connections: Some(20),
            max_connections_per_caller: Some(0),
            web_header_timeout: Some("soon".into()),
            ..Default::default()
        };
        let l = Limits::resolve(&over, &file, &mut errors);
        assert_eq!(l.web_max_connections, 20);
        assert_eq!(l.body_timeout, Duration::from_secs(3));
        assert_eq!(errors.len(), 2, "{errors:?}");
    }
}
