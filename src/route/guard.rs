//! Address guard (STUB).

use std::net::{IpAddr, SocketAddr};

/// What kind of address an IP is, for the address guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrClass {
    /// Globally routable; allowed by default.
    Public,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// RFC 1918, IPv6 ULA fc00::/7.
    Private,
    /// 169.254.0.0/16 (incl. 169.254.169.254), fe80::/10.
    LinkLocal,
    /// 100.64.0.0/10.
    Cgnat,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 0.0.0.0/8, ::.
    Unspecified,
    /// Other special-purpose ranges that are never a public API (240.0.0.0/4, 198.18.0.0/15,
    /// 192.0.0.0/24, ...).
    Reserved,
}

/// Classifies an address, looking through IPv6 forms that embed an IPv4 address
/// (mapped, compatible, NAT64 64:ff9b::/96 and 64:ff9b:1::/48, 6to4 2002::/16, Teredo 2001::/32).
pub fn classify(ip: IpAddr) -> AddrClass {
    let _ = ip;
    todo!()
}

/// Refuses prohibited addresses and the proxy's own listening sockets.
#[derive(Clone, Debug, Default)]
pub struct Guard {}

impl Guard {
    /// A guard that also refuses the given listening addresses of this process.
    pub fn new(own_listeners: Vec<SocketAddr>) -> Self {
        let _ = own_listeners;
        todo!()
    }

    /// Checks one resolved address. `allow_private` comes from the winning rule.
    pub fn check(&self, addr: SocketAddr, allow_private: bool) -> Result<(), Prohibited> {
        let _ = (addr, allow_private);
        todo!()
    }
}

/// An address the guard refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("address {addr} is prohibited ({reason})")]
pub struct Prohibited {
    /// The refused address.
    pub addr: SocketAddr,
    /// Its class, or "proxy's own listener".
    pub reason: &'static str,
}

impl AddrClass {
    /// TEMP
    pub fn as_str(&self) -> &'static str {
        todo!()
    }
    /// TEMP
    pub fn is_prohibited(&self) -> bool {
        todo!()
    }
}
