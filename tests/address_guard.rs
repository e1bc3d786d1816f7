//! End-to-end table of the address guard as the proxy applies it: a target as a client writes
//! it (any literal form, or a name) → normalize → resolve once → classify → refuse or dial.

mod common;

use common::guard::dialer;
use tollgate::policy::normalize_host;
use tollgate::route::direct::DirectError;

/// (case name, target host as written, port, allow_private, expected: Some(reason fragment)
/// when refused by the guard, None when the guard lets it through).
const CASES: &[(&str, &str, u16, bool, Option<&str>)] = &[
    ("loopback dotted", "127.0.0.1", 80, false, Some("loopback")),
    (
        "loopback top of range",
        "127.255.255.254",
        80,
        false,
        Some("loopback"),
    ),
    (
        "loopback shorthand 127.1",
        "127.1",
        80,
        false,
        Some("loopback"),
    ),
    (
        "loopback decimal integer",
        "2130706433",
        80,
        false,
        Some("loopback"),
    ),
    (
        "loopback hex dotted",
        "0x7f.0.0.1",
        80,
        false,
        Some("loopback"),
    ),
    (
        "loopback hex shorthand",
        "0x7f.1",
        80,
        false,
        Some("loopback"),
    ),
    ("loopback octal", "0177.0.0.1", 80, false, Some("loopback")),
    (
        "loopback hex integer",
        "0x7f000001",
        80,
        false,
        Some("loopback"),
    ),
    (
        "loopback trailing dot",
        "127.0.0.1.",
        80,
        false,
        Some("loopback"),
    ),
    ("ipv6 loopback", "[::1]", 80, false, Some("loopback")),
    (
        "ipv4-mapped loopback",
        "[::ffff:127.0.0.1]",
        80,
        false,
        Some("loopback"),
    ),
    (
        "ipv4-mapped loopback hex",
        "[::ffff:7f00:1]",
        80,
        false,
        Some("loopback"),
    ),
    ("unspecified v4", "0.0.0.0", 80, false, Some("unspecified")),
    (
        "unspecified shorthand 0",
        "0",
        80,
        false,
        Some("unspecified"),
    ),
    ("unspecified v6", "[::]", 80, false, Some("unspecified")),
    ("rfc1918 10/8", "10.0.0.1", 80, false, Some("private")),
    (
        "rfc1918 172.16/12 low edge",
        "172.16.0.0",
        80,
        false,
        Some("private"),
    ),
    (
        "rfc1918 172.16/12 high edge",
        "172.31.255.255",
        80,
        false,
        Some("private"),
    ),
    ("just below 172.16/12", "172.15.255.255", 80, false, None),
    ("just above 172.16/12", "172.32.0.0", 80, false, None),
    (
        "rfc1918 192.168/16",
        "192.168.0.1",
        80,
        false,
        Some("private"),
    ),
    ("ula", "[fd00::1]", 80, false, Some("private")),
    (
        "metadata 169.254.169.254",
        "169.254.169.254",
        80,
        false,
        Some("link-local"),
    ),
    (
        "metadata decimal form",
        "2852039166",
        80,
        false,
        Some("link-local"),
    ),
    (
        "aws ipv6 metadata",
        "[fd00:ec2::254]",
        80,
        false,
        Some("private"),
    ),
    (
        "ipv6 link-local",
        "[fe80::1]",
        80,
        false,
        Some("link-local"),
    ),
    ("cgnat low edge", "100.64.0.0", 80, false, Some("cgnat")),
    (
        "cgnat high edge",
        "100.127.255.255",
        80,
        false,
        Some("cgnat"),
    ),
    ("below cgnat", "100.63.255.255", 80, false, None),
    ("above cgnat", "100.128.0.0", 80, false, None),
    ("multicast", "224.0.0.1", 80, false, Some("multicast")),
    ("broadcast", "255.255.255.255", 80, false, Some("broadcast")),
    (
        "nat64 embedding rfc1918",
        "[64:ff9b::a00:1]",
        80,
        false,
        Some("private"),
    ),
    (
        "nat64 embedding public",
        "[64:ff9b::808:808]",
        80,
        false,
        None,
    ),
    (
        "6to4 embedding loopback",
        "[2002:7f00:1::]",
        80,
        false,
        Some("loopback"),
    ),
    (
        "6to4 embedding metadata",
        "[2002:a9fe:a9fe::]",
        80,
        false,
        Some("link-local"),
    ),
    (
        "teredo client 127.0.0.1",
        "[2001:0:4136:e378:8000:63bf:80ff:fffe]",
        80,
        false,
        Some("loopback"),
    ),
    ("public v4", "8.8.8.8", 443, false, None),
    ("public v6", "[2606:4700::1]", 443, false, None),
    ("name resolving to public", "public.test", 443, false, None),
    (
        "name resolving to loopback",
        "loopback.test",
        443,
        false,
        Some("loopback"),
    ),
    (
        "name resolving to rfc1918",
        "rfc1918.test",
        443,
        false,
        Some("private"),
    ),
    (
        "name resolving to metadata",
        "metadata.test",
        80,
        false,
        Some("link-local"),
    ),
    (
        "name resolving to mapped rfc1918",
        "mapped.test",
        80,
        false,
        Some("private"),
    ),
    (
        "name resolving to ula",
        "ula.test",
        80,
        false,
        Some("private"),
    ),
    (
        "name resolving to cgnat",
        "cgnat.test",
        80,
        false,
        Some("cgnat"),
    ),
    (
        "name with mixed public and private answers",
        "mixed.test",
        80,
        false,
        Some("private"),
    ),
    ("private allowed by rule", "10.0.0.1", 80, true, None),
    (
        "name to loopback allowed by rule",
        "loopback.test",
        443,
        true,
        None,
    ),
    (
        "proxy's own port",
        "127.0.0.1",
        3128,
        false,
        Some("own listener"),
    ),
    (
        "proxy's own port even with private allowed",
        "127.0.0.1",
        3128,
        true,
        Some("own listener"),
    ),
    (
        "proxy's own port via shorthand",
        "127.1",
        3128,
        true,
        Some("own listener"),
    ),
    (
        "proxy's own port via mapped v6",
        "[::ffff:127.0.0.1]",
        3128,
        true,
        Some("own listener"),
    ),
];

#[tokio::test]
async fn address_guard_table() {
    assert!(CASES.len() >= 40, "the table must keep at least 40 cases");
    let d = dialer();
    let mut failures = Vec::new();
    for (name, target, port, allow_private, expected) in CASES {
        let host = match normalize_host(target) {
            Ok(h) => h,
            Err(e) => {
                failures.push(format!("{name}: {target:?} did not normalize: {e}"));
                continue;
            }
        };
        let got = d.resolve_checked(&host, *port, *allow_private).await;
        match (expected, got) {
            (None, Ok(_)) => {}
            (Some(frag), Err(DirectError::Prohibited(p))) if p.reason.contains(frag) => {}
            (exp, got) => failures.push(format!("{name}: expected {exp:?}, got {got:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
