//! The address guard in-process: the proxy's direct dialer with a static resolver, so that a
//! table can name hosts that resolve to every kind of address without touching DNS.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tollgate::route::direct::{DirectDialer, StaticResolver};
use tollgate::route::guard::Guard;

/// The proxy's own listener, as the guard is told about it.
pub const OWN: &str = "127.0.0.1:3128";

/// A dialer whose resolver knows the `*.test` names of the table.
pub fn dialer() -> DirectDialer {
    let mut r = StaticResolver::new();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    r.insert("public.test", [ip("93.184.216.34")]);
    r.insert("loopback.test", [ip("127.0.0.1")]);
    r.insert("rfc1918.test", [ip("10.1.2.3")]);
    r.insert("metadata.test", [ip("169.254.169.254")]);
    r.insert("mixed.test", [ip("93.184.216.34"), ip("192.168.1.1")]);
    r.insert("mapped.test", [ip("::ffff:10.0.0.1")]);
    r.insert("ula.test", [ip("fd00::1")]);
    r.insert("cgnat.test", [ip("100.64.0.1")]);
    DirectDialer::new(
        Arc::new(r),
        Guard::new(vec![OWN.parse::<SocketAddr>().unwrap()]),
        Duration::from_secs(2),
    )
}
