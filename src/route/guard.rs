//! The address guard: classifies every resolved address before the direct route dials it, and
//! refuses the ones a forward proxy must never reach on a caller's behalf — loopback, private,
//! link-local (cloud metadata at 169.254.169.254), CGNAT, multicast, broadcast, unspecified and
//! other non-global ranges — unless the winning policy rule explicitly allows private
//! destinations. The proxy's own listening sockets are refused always, so a request cannot
//! loop back into the proxy.
//!
//! IPv6 addresses that carry an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4,
//! Teredo) are classified by the IPv4 address they carry: the network may well translate
//! `64:ff9b::7f00:1` into `127.0.0.1`.
//!
//! The documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32,
//! 3fff::/20) are deliberately [`AddrClass::Public`]: they never reach anything real, and
//! keeping them public lets tests and example policies use them in `cidrs` rules the way real
//! public ranges are used.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;

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

impl AddrClass {
    /// Short lowercase name, used as the guard's refusal reason and in logs: `public`,
    /// `loopback`, `private`, `link-local`, `cgnat`, `multicast`, `broadcast`, `unspecified`,
    /// `reserved`.
    pub fn as_str(self) -> &'static str {
        match self {
            AddrClass::Public => "public",
            AddrClass::Loopback => "loopback",
            AddrClass::Private => "private",
            AddrClass::LinkLocal => "link-local",
            AddrClass::Cgnat => "cgnat",
            AddrClass::Multicast => "multicast",
            AddrClass::Broadcast => "broadcast",
            AddrClass::Unspecified => "unspecified",
            AddrClass::Reserved => "reserved",
        }
    }

    /// True for every class except [`AddrClass::Public`]: the direct route refuses these
    /// unless the winning rule allows private destinations.
    pub fn is_prohibited(self) -> bool {
        self != AddrClass::Public
    }
}

impl std::fmt::Display for AddrClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classifies an address, looking through IPv6 forms that embed an IPv4 address
/// (mapped, compatible, NAT64 64:ff9b::/96 and 64:ff9b:1::/48, 6to4 2002::/16, Teredo 2001::/32).
pub fn classify(ip: IpAddr) -> AddrClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// `true` when `ip` is inside `net/len` (IPv4).
fn in4(ip: u32, net: [u8; 4], len: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    ip & mask == u32::from_be_bytes(net) & mask
}

/// `true` when `ip` is inside `net/len` (IPv6).
fn in6(ip: u128, net: u128, len: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    ip & mask == net & mask
}

/// IPv4 special-purpose ranges (RFC 6890 registry) that are not globally reachable and not
/// covered by a more specific class. The documentation ranges are absent on purpose.
const RESERVED_V4: &[([u8; 4], u32)] = &[
    ([240, 0, 0, 0], 4), // RFC 1112 "future use" (255.255.255.255 is matched before)
    ([198, 18, 0, 0], 15), // RFC 2544 benchmarking
    ([192, 0, 0, 0], 24), // RFC 6890 IETF protocol assignments (DS-Lite, NAT64 discovery)
    ([192, 88, 99, 0], 24), // RFC 7526 deprecated 6to4 relay anycast
];

fn classify_v4(ip: Ipv4Addr) -> AddrClass {
    let a = u32::from(ip);
    // Ordered by specificity where ranges nest (255.255.255.255 inside 240/4).
    if in4(a, [0, 0, 0, 0], 8) {
        AddrClass::Unspecified
    } else if in4(a, [127, 0, 0, 0], 8) {
        AddrClass::Loopback
    } else if in4(a, [10, 0, 0, 0], 8)
        || in4(a, [172, 16, 0, 0], 12)
        || in4(a, [192, 168, 0, 0], 16)
    {
        AddrClass::Private
    } else if in4(a, [169, 254, 0, 0], 16) {
        AddrClass::LinkLocal
    } else if in4(a, [100, 64, 0, 0], 10) {
        AddrClass::Cgnat
    } else if in4(a, [224, 0, 0, 0], 4) {
        AddrClass::Multicast
    } else if a == u32::MAX {
        AddrClass::Broadcast
    } else if RESERVED_V4.iter().any(|&(net, len)| in4(a, net, len)) {
        AddrClass::Reserved
    } else {
        AddrClass::Public
    }
}

/// The IPv4 address in the low 32 bits.
fn low_v4(a: u128) -> Ipv4Addr {
    // Truncation is the point: keep bits 0..32.
    Ipv4Addr::from(a as u32)
}

/// IPv6 special-purpose ranges (RFC 6890 registry) that are not globally reachable and not
/// covered by a class above.
const RESERVED_V6: &[(u128, u32)] = &[
    (0x0100 << 112, 64),     // RFC 6666 discard-only
    (0x2001_0002 << 96, 48), // RFC 5180 benchmarking
    (0x2001_0010 << 96, 28), // RFC 4843 ORCHID (deprecated)
    (0x2001_0020 << 96, 28), // RFC 7343 ORCHIDv2
    (0x5f00 << 112, 16),     // RFC 9602 SRv6 SIDs
];

fn classify_v6(ip: Ipv6Addr) -> AddrClass {
    let a = u128::from(ip);
    if a == 0 {
        return AddrClass::Unspecified;
    }
    if a == 1 {
        return AddrClass::Loopback;
    }
    // IPv4-mapped ::ffff:0:0/96 and IPv4-compatible ::/96 (deprecated, but a stack may still
    // route it as IPv4).
    if in6(a, 0xffff_0000_0000, 96) || in6(a, 0, 96) {
        return classify_v4(low_v4(a));
    }
    // NAT64: the well-known prefix (RFC 6052) and the local-use prefix (RFC 8215), both read
    // from the low 32 bits (the /96 layout translators are normally configured with). A
    // translator using RFC 6052's /48 layout for 64:ff9b:1::/48 (IPv4 in bits 48..88, around
    // the zero `u` octet) is not modelled: reading both positions would refuse the ordinary
    // low-32-bit form of public addresses, whose bits 48..88 are zero ("0.0.0.0").
    if in6(a, 0x0064_ff9b << 96, 96) || in6(a, 0x0064_ff9b_0001 << 80, 48) {
        return classify_v4(low_v4(a));
    }
    // 6to4 (RFC 3056): 2002:AABB:CCDD::/48 carries AA.BB.CC.DD in bits 16..48.
    if in6(a, 0x2002 << 112, 16) {
        return classify_v4(Ipv4Addr::from((a >> 80) as u32));
    }
    // Teredo (RFC 4380): 2001:0:SSSS:SSSS:flags:port:CCCC:CCCC, server IPv4 in bits 32..64 from
    // the top, client IPv4 obfuscated (bitwise NOT) in the low 32 bits. Either one being
    // prohibited makes the address prohibited.
    if in6(a, 0x2001_0000 << 96, 32) {
        let server = classify_v4(Ipv4Addr::from((a >> 64) as u32));
        let client = classify_v4(Ipv4Addr::from(!(a as u32)));
        return if client.is_prohibited() {
            client
        } else {
            server
        };
    }
    if in6(a, 0xfe80 << 112, 10) {
        AddrClass::LinkLocal
    } else if in6(a, 0xfc00 << 112, 7) || in6(a, 0xfec0 << 112, 10) {
        // ULA, and deprecated site-local (RFC 3879) which meant the same thing.
        AddrClass::Private
    } else if in6(a, 0xff00 << 112, 8) {
        AddrClass::Multicast
    } else if in6(a, 0x2001_0db8 << 96, 32) || in6(a, 0x3fff << 112, 20) {
        // Documentation (RFC 3849, RFC 9637): public on purpose, see the module docs.
        AddrClass::Public
    } else if RESERVED_V6.iter().any(|&(net, len)| in6(a, net, len)) {
        AddrClass::Reserved
    } else if !in6(a, 0x2000 << 112, 3) {
        // Outside 2000::/3 nothing is allocated for global unicast; what is left there after
        // the forms above (e.g. the rest of ::/8) is not routable.
        AddrClass::Reserved
    } else {
        AddrClass::Public
    }
}

/// IPv4-mapped IPv6 addresses compared as IPv4 (a dual-stack socket treats them as such).
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Refuses prohibited addresses and the proxy's own listening sockets.
#[derive(Clone, Debug, Default)]
pub struct Guard {
    /// The proxy's own listening addresses (canonical form): dialing one would make the proxy
    /// talk to itself, a request loop. Shared: the guard is cloned into every dialer.
    own: Arc<[SocketAddr]>,
}

impl Guard {
    /// A guard that also refuses the given listening addresses of this process.
    pub fn new(own_listeners: Vec<SocketAddr>) -> Self {
        let own = own_listeners
            .into_iter()
            .map(|a| SocketAddr::new(canonical(a.ip()), a.port()))
            .collect();
        Self { own }
    }

    /// Checks one resolved address. `allow_private` comes from the winning rule.
    ///
    /// The proxy's own listeners are refused with reason `"proxy's own listener"` even when
    /// `allow_private` is set; other prohibited addresses are refused with their class name
    /// ([`AddrClass::as_str`]) unless `allow_private` is set.
    pub fn check(&self, addr: SocketAddr, allow_private: bool) -> Result<(), Prohibited> {
        if self.is_own_listener(addr) {
            return Err(Prohibited {
                addr,
                reason: OWN_LISTENER,
            });
        }
        let class = classify(addr.ip());
        if class.is_prohibited() && !allow_private {
            return Err(Prohibited {
                addr,
                reason: class.as_str(),
            });
        }
        Ok(())
    }

    /// True when a connection to `addr` would reach one of the proxy's listeners.
    ///
    /// Beyond equality: a listener on `0.0.0.0:P` or `[::]:P` accepts on every local address,
    /// so it is reached through any loopback or unspecified address (connecting to `0.0.0.0`
    /// reaches the local host on Linux) or any address assigned to a local interface, on port
    /// `P`; and connecting to an unspecified address on a listener's port is treated as reaching
    /// it whatever it is bound to.
    fn is_own_listener(&self, addr: SocketAddr) -> bool {
        let ip = canonical(addr.ip());
        let mut wildcard_port = false;
        for l in self.own.iter().filter(|l| l.port() == addr.port()) {
            if l.ip() == ip || ip.is_unspecified() {
                return true;
            }
            wildcard_port |= l.ip().is_unspecified();
        }
        wildcard_port && (ip.is_loopback() || is_local_address(ip))
    }
}

/// The refusal reason for the proxy's own listening addresses.
pub const OWN_LISTENER: &str = "proxy's own listener";

/// Whether `ip` is assigned to an interface of this host, asked of the kernel at the time of
/// the check by binding a UDP socket to it: binding succeeds only for a local address (no
/// packet is sent). Unlike a snapshot of the interface list taken at startup, this follows
/// addresses that DHCP or an operator add later. It costs one syscall pair and runs only when
/// the port being dialed is the port of a wildcard-bound listener.
///
/// Hosts with `ip_nonlocal_bind` enabled make every address look local here, which errs on the
/// side of refusing.
fn is_local_address(ip: IpAddr) -> bool {
    UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn classification_table() {
        use AddrClass::*;
        let cases: &[(&str, &str, AddrClass)] = &[
            // Loopback
            ("loopback 127.0.0.1", "127.0.0.1", Loopback),
            ("loopback top of /8", "127.255.255.254", Loopback),
            ("loopback ::1", "::1", Loopback),
            // Unspecified
            ("unspecified 0.0.0.0", "0.0.0.0", Unspecified),
            ("unspecified 0/8", "0.1.2.3", Unspecified),
            ("unspecified ::", "::", Unspecified),
            // IPv4-mapped / compatible
            ("mapped loopback", "::ffff:127.0.0.1", Loopback),
            ("mapped private", "::ffff:10.0.0.1", Private),
            ("mapped public", "::ffff:8.8.8.8", Public),
            ("mapped metadata", "::ffff:169.254.169.254", LinkLocal),
            ("mapped unspecified", "::ffff:0.0.0.0", Unspecified),
            ("compatible loopback", "::127.0.0.1", Loopback),
            ("compatible private", "::192.168.1.1", Private),
            ("compatible public", "::8.8.8.8", Public),
            // NAT64
            ("nat64 private", "64:ff9b::a00:1", Private),
            ("nat64 public", "64:ff9b::808:808", Public),
            ("nat64 loopback", "64:ff9b::127.0.0.1", Loopback),
            ("nat64 local-use loopback", "64:ff9b:1::7f00:1", Loopback),
            ("nat64 local-use public", "64:ff9b:1:abcd::808:808", Public),
            (
                "nat64 outside /96 and /48",
                "64:ff9b:0:0:1::808:808",
                Reserved,
            ),
            // 6to4
            ("6to4 loopback", "2002:7f00:1::", Loopback),
            ("6to4 metadata", "2002:a9fe:a9fe::", LinkLocal),
            ("6to4 private", "2002:c0a8:101::1", Private),
            ("6to4 public", "2002:808:808::1", Public),
            // Teredo
            (
                "teredo client 127.0.0.1",
                "2001:0:4136:e378:8000:63bf:80ff:fffe",
                Loopback,
            ),
            (
                "teredo public client and server",
                "2001:0:4136:e378:8000:63bf:3fff:fdd2",
                Public,
            ),
            (
                "teredo private server",
                "2001:0:a00:1:8000:63bf:3fff:fdd2",
                Private,
            ),
            // Link-local
            ("metadata 169.254.169.254", "169.254.169.254", LinkLocal),
            ("link-local low", "169.254.0.0", LinkLocal),
            ("link-local v6", "fe80::1", LinkLocal),
            ("link-local v6 top of /10", "febf::1", LinkLocal),
            // ULA / private
            ("aws metadata v6", "fd00:ec2::254", Private),
            ("ula fc00::", "fc00::1", Private),
            ("site-local fec0::", "fec0::1", Private),
            ("rfc1918 10/8", "10.255.255.255", Private),
            ("rfc1918 192.168/16", "192.168.0.1", Private),
            ("rfc1918 edge below 172.16/12", "172.15.255.255", Public),
            ("rfc1918 172.16.0.0", "172.16.0.0", Private),
            ("rfc1918 172.31.255.255", "172.31.255.255", Private),
            ("rfc1918 edge above 172.16/12", "172.32.0.0", Public),
            // CGNAT
            ("cgnat edge below", "100.63.255.255", Public),
            ("cgnat first", "100.64.0.0", Cgnat),
            ("cgnat last", "100.127.255.255", Cgnat),
            ("cgnat edge above", "100.128.0.0", Public),
            // Multicast / broadcast
            ("multicast 224.0.0.1", "224.0.0.1", Multicast),
            ("multicast 239.255.255.255", "239.255.255.255", Multicast),
            ("multicast ff02::1", "ff02::1", Multicast),
            ("multicast mapped", "::ffff:224.0.0.251", Multicast),
            ("broadcast", "255.255.255.255", Broadcast),
            // Reserved
            ("class E 240/4", "240.0.0.1", Reserved),
            ("class E top", "255.255.255.254", Reserved),
            ("benchmarking 198.18/15", "198.19.255.255", Reserved),
            ("benchmarking edge above", "198.20.0.0", Public),
            ("ietf 192.0.0.0/24", "192.0.0.170", Reserved),
            ("6to4 relay anycast", "192.88.99.1", Reserved),
            ("discard-only 100::/64", "100::1", Reserved),
            ("v6 benchmarking", "2001:2::1", Reserved),
            ("orchid v2", "2001:20::1", Reserved),
            ("unallocated v6", "4000::1", Reserved),
            ("ipv4-translated", "::ffff:0:7f00:1", Reserved),
            // Documentation ranges stay public
            ("doc 192.0.2/24", "192.0.2.1", Public),
            ("doc 198.51.100/24", "198.51.100.7", Public),
            ("doc 203.0.113/24", "203.0.113.9", Public),
            ("doc 2001:db8::/32", "2001:db8::1", Public),
            ("doc 3fff::/20", "3fff::1", Public),
            // Public
            ("google dns", "8.8.8.8", Public),
            ("cloudflare v6", "2606:4700::1", Public),
            ("public 1.1.1.1", "1.1.1.1", Public),
            ("public just below class E", "223.255.255.255", Public),
        ];
        assert!(cases.len() >= 40);
        for (name, addr, want) in cases {
            assert_eq!(classify(ip(addr)), *want, "{name} ({addr})");
        }
    }

    #[test]
    fn names_and_prohibition() {
        let all = [
            (AddrClass::Public, "public", false),
            (AddrClass::Loopback, "loopback", true),
            (AddrClass::Private, "private", true),
            (AddrClass::LinkLocal, "link-local", true),
            (AddrClass::Cgnat, "cgnat", true),
            (AddrClass::Multicast, "multicast", true),
            (AddrClass::Broadcast, "broadcast", true),
            (AddrClass::Unspecified, "unspecified", true),
            (AddrClass::Reserved, "reserved", true),
        ];
        for (class, name, prohibited) in all {
            assert_eq!(class.as_str(), name);
            assert_eq!(class.to_string(), name);
            assert_eq!(class.is_prohibited(), prohibited, "{name}");
        }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn guard_table() {
        let guard = Guard::new(vec![
            sa("127.0.0.1:3128"),
            sa("0.0.0.0:8080"),
            sa("[::1]:9000"),
        ]);
        let own = Err(OWN_LISTENER);
        // (name, address, allow_private, expected)
        let cases: &[(&str, &str, bool, Result<(), &str>)] = &[
            ("public allowed", "8.8.8.8:443", false, Ok(())),
            ("public v6 allowed", "[2606:4700::1]:443", false, Ok(())),
            ("loopback refused", "127.0.0.1:80", false, Err("loopback")),
            ("private refused", "10.0.0.1:443", false, Err("private")),
            (
                "metadata refused",
                "169.254.169.254:80",
                false,
                Err("link-local"),
            ),
            ("cgnat refused", "100.64.0.1:443", false, Err("cgnat")),
            (
                "mapped loopback refused",
                "[::ffff:127.0.0.1]:80",
                false,
                Err("loopback"),
            ),
            (
                "nat64 private refused",
                "[64:ff9b::a00:1]:443",
                false,
                Err("private"),
            ),
            ("private with allow_private", "10.0.0.1:443", true, Ok(())),
            ("loopback with allow_private", "127.0.0.1:80", true, Ok(())),
            (
                "metadata with allow_private",
                "169.254.169.254:80",
                true,
                Ok(()),
            ),
            ("own listener", "127.0.0.1:3128", false, own),
            (
                "own listener despite allow_private",
                "127.0.0.1:3128",
                true,
                own,
            ),
            (
                "own listener mapped form",
                "[::ffff:127.0.0.1]:3128",
                true,
                own,
            ),
            ("own listener via 0.0.0.0", "0.0.0.0:3128", true, own),
            ("own v6 listener", "[::1]:9000", true, own),
            ("other port on own ip", "127.0.0.1:3129", true, Ok(())),
            (
                "other loopback ip on own port",
                "127.0.0.2:3128",
                true,
                Ok(()),
            ),
            (
                "wildcard listener via 127.0.0.1",
                "127.0.0.1:8080",
                true,
                own,
            ),
            (
                "wildcard listener via 127.1.2.3",
                "127.1.2.3:8080",
                true,
                own,
            ),
            ("wildcard listener via ::1", "[::1]:8080", true, own),
            ("wildcard listener via ::", "[::]:8080", true, own),
            (
                "wildcard listener, public ip elsewhere",
                "8.8.8.8:8080",
                false,
                Ok(()),
            ),
            (
                "wildcard listener, other port",
                "127.0.0.1:8081",
                true,
                Ok(()),
            ),
        ];
        for (name, addr, allow_private, want) in cases {
            let got = guard.check(sa(addr), *allow_private).map_err(|p| {
                assert_eq!(p.addr, sa(addr), "{name}");
                p.reason
            });
            assert_eq!(got, *want, "{name}");
        }
    }

    #[test]
    fn local_address_probe() {
        // The sandbox may have nothing but loopback; 127.0.0.1 is assigned to `lo` everywhere.
        assert!(is_local_address(ip("127.0.0.1")));
        assert!(is_local_address(ip("::1")) || std::net::UdpSocket::bind("[::1]:0").is_err());
        // Documentation addresses are never assigned to this host.
        assert!(!is_local_address(ip("192.0.2.1")));
        assert!(!is_local_address(ip("2001:db8::1")));

        let guard = Guard::new(vec![sa("[::]:8443")]);
        assert!(guard.check(sa("192.0.2.1:8443"), false).is_ok());
        assert_eq!(
            guard.check(sa("127.0.0.1:8443"), true).unwrap_err().reason,
            OWN_LISTENER
        );
    }

    #[test]
    fn prohibited_display_names_address_and_reason() {
        let err = Guard::default()
            .check(sa("10.1.2.3:443"), false)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "address 10.1.2.3:443 is prohibited (private)"
        );
    }
}
