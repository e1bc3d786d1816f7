//! Host normalization (STUB: to be implemented).

use std::fmt;
use std::net::IpAddr;

/// A destination host after normalization: a lowercase ASCII (punycode) name without a trailing
/// dot, or an IP address (IPv4-mapped IPv6 folded to IPv4).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name, normalized.
    Name(String),
    /// An IP literal in any accepted form, normalized to the address.
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V4(a)) => write!(f, "{a}"),
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
        }
    }
}

/// Why a host string is not acceptable.
#[derive(Debug, thiserror::Error)]
#[error("invalid host {host:?}: {reason}")]
pub struct HostError {
    /// The host as given (truncated for display).
    pub host: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Normalizes a host as found in a request target, `CONNECT` authority or policy file.
/// Accepts bracketed IPv6 (`[::1]`), IPv4 in every inet_aton form (`127.1`, `2130706433`,
/// `0x7f.0.0.1`, `0177.0.0.1`), IDN names (converted to punycode), any case, a trailing dot.
pub fn normalize_host(input: &str) -> Result<Host, HostError> {
    let _ = input;
    todo!("policy::host::normalize_host")
}
