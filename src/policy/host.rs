//! Host normalization: the one place that turns a host as written (in a request target, a
//! `CONNECT` authority or a policy file) into the canonical form every comparison uses.
//!
//! Names are lowercased, lose one trailing dot and go through IDNA (UTS #46) to punycode, then
//! must pass a strict charset. IP literals are recognized in every form a client library might
//! accept, following the WHATWG URL host parser: if the last label "ends in a number" the whole
//! host must be an IPv4 address in inet_aton form (`127.1`, `2130706433`, `0x7f.0.0.1`,
//! `0177.0.0.1`) or it is rejected, so no string can reach a resolver as a name while a client
//! would have treated it as an address. IPv4-mapped IPv6 (`[::ffff:7f00:1]`) is folded to IPv4
//! so CIDR rules see one canonical address.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

/// Longest DNS name in presentation form without the trailing dot (RFC 1035 §2.3.4).
pub const MAX_NAME_LEN: usize = 253;
/// Longest DNS label (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;
/// Inputs longer than this are refused before any conversion work: IDNA can shrink its input
/// (ignored code points), so the limit is generous, but it bounds the work an attacker-chosen
/// host can cause.
const MAX_INPUT_LEN: usize = 1024;
/// How much of a rejected host is echoed back in [`HostError::host`].
const MAX_ECHO_LEN: usize = 80;

/// Normalizes a host as found in a request target, `CONNECT` authority or policy file.
/// Accepts bracketed IPv6 (`[::1]`), IPv4 in every inet_aton form (`127.1`, `2130706433`,
/// `0x7f.0.0.1`, `0177.0.0.1`), IDN names (converted to punycode), any case, a trailing dot.
pub fn normalize_host(input: &str) -> Result<Host, HostError> {
    let err = |reason| HostError {
        host: truncate(input),
        reason,
    };
    if input.is_empty() {
        return Err(err("empty host"));
    }
    if input.len() > MAX_INPUT_LEN {
        return Err(err("host too long"));
    }
    // The canonical dotted-decimal form (what most clients send for an address) needs no
    // IDNA pass: the standard parser accepts exactly four decimal octets without leading
    // zeros, which every other reading also takes as this address.
    if let Ok(v4) = input.parse::<Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(v4)));
    }
    if let Some(inner) = input.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| err("unterminated IPv6 literal"))?;
        let v6: Ipv6Addr = inner.parse().map_err(|_| err("invalid IPv6 address"))?;
        return Ok(Host::Ip(fold_mapped(v6)));
    }
    if input.contains(':') {
        // Unbracketed IPv6 is what `Uri::host()`-style splitting or a policy author may hand
        // us; it cannot be a name, so it is either an address or an error.
        let v6: Ipv6Addr = input.parse().map_err(|_| err("invalid character ':'"))?;
        return Ok(Host::Ip(fold_mapped(v6)));
    }
    match normalize_name_or_ipv4(input).map_err(err)? {
        NameOrV4::V4(a) => Ok(Host::Ip(IpAddr::V4(a))),
        NameOrV4::Name(n) => Ok(Host::Name(n)),
    }
}

/// Folds an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) to the IPv4 address it carries.
pub(crate) fn fold_mapped(v6: Ipv6Addr) -> IpAddr {
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

pub(crate) enum NameOrV4 {
    Name(String),
    V4(Ipv4Addr),
}

/// The name path of [`normalize_host`] (no brackets, no colons): IDNA, then the WHATWG
/// "ends in a number" split between IPv4 and names, then the strict name checks.
pub(crate) fn normalize_name_or_ipv4(input: &str) -> Result<NameOrV4, &'static str> {
    // IDNA first, as WHATWG does: it lowercases, maps full-width digits and dots to ASCII
    // (so `１２７。０。０。１` is caught as an address below) and validates `xn--` labels.
    let ascii = idna::domain_to_ascii(input).map_err(|_| "invalid internationalized name")?;
    if ends_in_a_number(&ascii) {
        return parse_ipv4(&ascii)
            .map(NameOrV4::V4)
            .ok_or("ends in a number but is not a valid IPv4 address");
    }
    let name = match ascii.strip_suffix('.') {
        Some(stripped) => stripped.to_owned(),
        None => ascii,
    };
    check_name(&name)?;
    Ok(NameOrV4::Name(name))
}

/// Strict checks on an already lowercased ASCII name without the trailing dot.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty host");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("name longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > MAX_LABEL_LEN {
            return Err("label longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err("invalid character (allowed: letters, digits, '-', '_', '.')");
        }
    }
    Ok(())
}

/// WHATWG URL "ends in a number checker": the last label (ignoring one trailing dot) is all
/// decimal digits, or parses as an IPv4 number (`0x..` hex).
fn ends_in_a_number(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return false;
    }
    let last = host.rsplit('.').next().unwrap_or(host);
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    parse_ipv4_number(last).is_some()
}

/// WHATWG URL IPv4 parser (inet_aton forms): 1 to 4 parts, the last part fills the remaining
/// bytes, each part decimal, `0x` hex or leading-zero octal. One trailing dot is allowed.
fn parse_ipv4(host: &str) -> Option<Ipv4Addr> {
    let host = host.strip_suffix('.').unwrap_or(host);
    let mut parts = [0u64; 4];
    let mut count = 0;
    for part in host.split('.') {
        if count == 4 {
            return None;
        }
        parts[count] = parse_ipv4_number(part)?;
        count += 1;
    }
    let (last, init) = parts[..count].split_last()?;
    if init.iter().any(|&p| p > 255) {
        return None;
    }
    // The last part covers the 5 - count low bytes: `127.1` is 127.0.0.1.
    let last_bits = 8 * (5 - count as u32);
    if *last >= 1u64 << last_bits {
        return None;
    }
    let mut addr = *last;
    for (i, &p) in init.iter().enumerate() {
        addr |= p << (24 - 8 * i as u32);
    }
    u32::try_from(addr).ok().map(Ipv4Addr::from)
}

/// One inet_aton part: `0x`/`0X` hex (empty digits = 0), leading `0` octal, else decimal.
/// Values that do not fit in 32 bits are refused (no part may exceed that).
fn parse_ipv4_number(part: &str) -> Option<u64> {
    if part.is_empty() {
        return None;
    }
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            if hex.is_empty() {
                return Some(0);
            }
            (hex, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (part, 10)
        };
    // from_str_radix would accept a leading '+', inet_aton forms do not.
    if !digits.bytes().all(|b| (b as char).is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix)
        .ok()
        .filter(|&v| v <= u64::from(u32::MAX))
}

/// The port written in an authority (`[user@]host[:port]`, as in a request target, a `CONNECT`
/// line or a URL): `None` when none is written, or an empty one (`host:`, which RFC 3986
/// §3.2.3 allows). The `http` crate reads a port it cannot hold in a `u16` as no port at all,
/// which would silently send `host:99999` to a default port; this reads the text itself and
/// refuses what [`parse_port`] refuses. The one port reader for authorities.
pub fn authority_port(authority: &str) -> Result<Option<u16>, PortError> {
    // After the user information and an IPv6 literal's brackets, a ':' starts the port.
    let rest = authority.rsplit_once('@').map_or(authority, |(_, r)| r);
    let rest = rest.rsplit_once(']').map_or(rest, |(_, r)| r);
    match rest.rsplit_once(':') {
        None | Some((_, "")) => Ok(None),
        Some((_, port)) => parse_port(port).map(Some),
    }
}

/// A port as written after the colon of a request target, `CONNECT` authority or URL: decimal
/// digits naming 1-65535. Port 0, a number above 65535 and anything else are refused, never
/// read as a default port.
pub fn parse_port(port: &str) -> Result<u16, PortError> {
    port.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| port.parse::<u16>().ok())
        .flatten()
        .filter(|&p| p != 0)
        .ok_or_else(|| PortError {
            port: truncate(port),
        })
}

/// Why a port is not acceptable (see [`parse_port`]).
#[derive(Debug, thiserror::Error)]
#[error("invalid port {port:?}: ports are 1-65535")]
pub struct PortError {
    /// The port as given (truncated for display).
    pub port: String,
}

fn truncate(s: &str) -> String {
    if s.len() <= MAX_ECHO_LEN {
        return s.to_owned();
    }
    let mut end = MAX_ECHO_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Host {
        Host::Ip(s.parse().unwrap())
    }
    fn name(s: &str) -> Host {
        Host::Name(s.to_owned())
    }

    #[test]
    fn accepted_forms() {
        let cases: &[(&str, &str, Host)] = &[
            ("plain name", "api.github.com", name("api.github.com")),
            ("uppercase", "API.GitHub.COM", name("api.github.com")),
            ("trailing dot", "api.github.com.", name("api.github.com")),
            ("single label", "localhost", name("localhost")),
            ("underscore", "_acme.example", name("_acme.example")),
            ("hyphen", "my-host.example", name("my-host.example")),
            ("idn", "bücher.example", name("xn--bcher-kva.example")),
            (
                "idn uppercase",
                "BÜCHER.example",
                name("xn--bcher-kva.example"),
            ),
            (
                "punycode kept",
                "xn--bcher-kva.example",
                name("xn--bcher-kva.example"),
            ),
            ("fullwidth dot", "abc\u{3002}com", name("abc.com")),
            ("digits not last", "123.example", name("123.example")),
            ("hexish last label", "a.0xg", name("a.0xg")),
            ("letters after digits", "a.1b", name("a.1b")),
            ("ipv4 dotted", "127.0.0.1", v4("127.0.0.1")),
            ("ipv4 trailing dot", "127.0.0.1.", v4("127.0.0.1")),
            ("ipv4 two parts", "127.1", v4("127.0.0.1")),
            ("ipv4 three parts", "10.1.257", v4("10.1.1.1")),
            ("ipv4 one decimal", "2130706433", v4("127.0.0.1")),
            ("ipv4 one hex", "0x7f000001", v4("127.0.0.1")),
            ("ipv4 hex part", "0x7f.0.0.1", v4("127.0.0.1")),
            ("ipv4 uppercase hex", "0X7F.0.0.1", v4("127.0.0.1")),
            ("ipv4 hex two parts", "0x7f.1", v4("127.0.0.1")),
            ("ipv4 octal", "0177.0.0.1", v4("127.0.0.1")),
            ("ipv4 octal zero parts", "0177.00.000.01", v4("127.0.0.1")),
            ("ipv4 empty hex is zero", "0x.0.0.1", v4("0.0.0.1")),
            ("ipv4 zero", "0", v4("0.0.0.0")),
            ("ipv4 max", "4294967295", v4("255.255.255.255")),
            ("ipv4 metadata", "169.254.169.254", v4("169.254.169.254")),
            ("ipv4 fullwidth digits", "１２７.０.０.１", v4("127.0.0.1")),
            ("ipv6 loopback", "[::1]", Host::Ip("::1".parse().unwrap())),
            ("ipv6 unbracketed", "::1", Host::Ip("::1".parse().unwrap())),
            (
                "ipv6 documentation",
                "[2001:DB8::1]",
                Host::Ip("2001:db8::1".parse().unwrap()),
            ),
            ("ipv6 mapped hex", "[::ffff:7f00:1]", v4("127.0.0.1")),
            ("ipv6 mapped dotted", "[::ffff:127.0.0.1]", v4("127.0.0.1")),
            (
                "ipv6 compatible not folded",
                "[::7f00:1]",
                Host::Ip("::7f00:1".parse().unwrap()),
            ),
        ];
        for (case, input, want) in cases {
            match normalize_host(input) {
                Ok(got) => assert_eq!(&got, want, "case {case:?} ({input:?})"),
                Err(e) => panic!("case {case:?} ({input:?}): unexpected error {e}"),
            }
        }
    }

    #[test]
    fn rejected_forms() {
        let long_label = format!("{}.example", "a".repeat(64));
        let long_name = format!("{}.example", ["abcdefghi"; 25].join("."));
        let huge = "a".repeat(2000);
        let cases: &[(&str, &str, &str)] = &[
            ("empty", "", "empty host"),
            ("only dot", ".", "empty"),
            ("double trailing dot", "a.com..", "empty label"),
            ("leading dot", ".a.com", "empty label"),
            ("inner empty label", "a..com", "empty label"),
            ("space", "a b.com", "invalid character"),
            ("star", "*.example.com", "invalid character"),
            ("slash", "a/b", "invalid character"),
            ("percent", "a%41.com", "invalid character"),
            ("at sign", "user@host", "invalid character"),
            ("ipv4 five parts", "1.2.3.4.5", "not a valid IPv4"),
            ("ipv4 part too big", "256.0.0.1", "not a valid IPv4"),
            ("ipv4 last too big", "1.2.3.256", "not a valid IPv4"),
            ("ipv4 two parts overflow", "1.16777216", "not a valid IPv4"),
            ("ipv4 decimal overflow", "4294967296", "not a valid IPv4"),
            (
                "ipv4 huge decimal",
                "99999999999999999999999",
                "not a valid IPv4",
            ),
            ("ipv4 bad octal", "09.0.0.1", "not a valid IPv4"),
            ("ipv4 empty part", "1..2", "not a valid IPv4"),
            ("ipv4 plus sign", "+1.2.3.4", "not a valid IPv4"),
            ("name ending in number", "example.123", "not a valid IPv4"),
            ("name ending in hex", "example.0x1f", "not a valid IPv4"),
            ("name ending in bad octal", "example.09", "not a valid IPv4"),
            ("name ending in empty hex", "example.0x", "not a valid IPv4"),
            ("ipv6 unterminated", "[::1", "unterminated"),
            ("ipv6 garbage", "[::g]", "invalid IPv6"),
            ("ipv6 zone", "[fe80::1%25eth0]", "invalid IPv6"),
            ("ipv4 in brackets", "[127.0.0.1]", "invalid IPv6"),
            ("host with port", "example.com:443", "invalid character ':'"),
            ("bad punycode", "xn--zz.example", "internationalized"),
            ("label too long", &long_label, "label longer than 63"),
            ("name too long", &long_name, "longer than 253"),
            ("input too long", &huge, "too long"),
        ];
        for (case, input, want) in cases {
            match normalize_host(input) {
                Ok(got) => panic!("case {case:?} ({input:?}): accepted as {got:?}"),
                Err(e) => assert!(
                    e.reason.contains(want),
                    "case {case:?} ({input:?}): reason {:?} lacks {want:?}",
                    e.reason
                ),
            }
        }
    }

    #[test]
    fn boundaries_are_accepted() {
        let label63 = format!("{}.example", "a".repeat(63));
        assert_eq!(
            normalize_host(&label63).unwrap(),
            Host::Name(label63.clone())
        );
        // 4 labels of 63 + 3 dots = 255 is too long; 253 exactly is fine.
        let name253 =
            format!("{}.{}", "a".repeat(63), vec!["b".repeat(63); 3].join("."))[..253].to_owned();
        assert_eq!(name253.len(), 253);
        assert!(!name253.ends_with('.'));
        assert_eq!(
            normalize_host(&name253).unwrap(),
            Host::Name(name253.clone())
        );
        assert_eq!(
            normalize_host(&format!("{name253}.")).unwrap(),
            Host::Name(name253)
        );
    }

    #[test]
    fn error_echo_is_truncated() {
        let e = normalize_host(&format!("{}é/", "a".repeat(79))).unwrap_err();
        assert!(e.host.len() <= MAX_ECHO_LEN + 3, "{}", e.host);
        assert!(e.to_string().starts_with("invalid host"));
    }

    #[test]
    fn display_round_trips() {
        for input in ["api.github.com", "127.0.0.1", "[2001:db8::1]"] {
            let h = normalize_host(input).unwrap();
            assert_eq!(normalize_host(&h.to_string()).unwrap(), h, "{input}");
        }
    }

    #[test]
    fn ports_are_1_to_65535_in_decimal() {
        for (input, want) in [("1", 1), ("80", 80), ("0443", 443), ("65535", 65535)] {
            assert_eq!(parse_port(input).unwrap(), want, "{input}");
        }
        for input in [
            "0",
            "65536",
            "99999",
            "",
            "+80",
            "-1",
            "8o",
            " 80",
            "18446744073709551616",
        ] {
            let err = parse_port(input).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("invalid port {input:?}: ports are 1-65535")
            );
        }
    }

    #[test]
    fn authority_ports_are_read_from_the_text() {
        let cases: &[(&str, &str, Option<u16>)] = &[
            ("none", "example.com", Some(80)),
            ("explicit", "example.com:8080", Some(8080)),
            ("empty", "example.com:", Some(80)),
            ("max", "example.com:65535", Some(65535)),
            ("above max", "example.com:99999", None),
            ("zero", "example.com:0", None),
            ("ipv6 none", "[::1]", Some(80)),
            ("ipv6", "[::1]:8443", Some(8443)),
            ("ipv6 above max", "[::1]:65536", None),
            ("userinfo", "u:p@example.com", Some(80)),
            ("userinfo and port", "u:p@example.com:81", Some(81)),
        ];
        for (name, text, want) in cases {
            let auth: http::uri::Authority = text.parse().unwrap();
            let read = authority_port(auth.as_str()).map(|p| p.unwrap_or(80)).ok();
            assert_eq!(read, *want, "{name}");
        }
    }
}
