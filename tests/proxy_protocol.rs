//! PROXY protocol v2 (`--proxy-protocol`) with hand-built headers: from a trusted peer the
//! proxy's access line names the client the header names; a header from an untrusted peer
//! closes the connection unanswered; the relay's pre-auth cap per source counts the clients
//! the headers name, not the balancer. (Through real HAProxy: tests/replicas.rs.)

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::agent::{metric, start_tollgate};
use common::policies::LOOPBACK as POLICY;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A v2 `PROXY` header for TCP over IPv4 from `src` to `dst`.
pub fn v2_header(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(s), SocketAddr::V4(d)) = (src, dst) else {
        panic!("IPv4 only");
    };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend([0x21, 0x11, 0, 12]);
    h.extend(s.ip().octets());
    h.extend(d.ip().octets());
    h.extend(s.port().to_be_bytes());
    h.extend(d.port().to_be_bytes());
    h
}

/// Sends `header` then a proxied GET to `up` on a new connection to `proxy`; the whole
/// answer (empty when the connection was closed unanswered).
async fn get_after(proxy: SocketAddr, header: &[u8], up: SocketAddr, auth: &str) -> String {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(header).await.unwrap();
    let req = format!(
        "GET http://{up}/ HTTP/1.1\r\nHost: {up}\r\nProxy-Authorization: {auth}\r\n\
         Connection: close\r\n\r\n"
    );
    // The server may already have closed the connection (refused header).
    let _ = s.write_all(req.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn the_access_line_names_the_client_a_trusted_balancer_names() {
    let up = echo_upstream().await;
    let tg = Tollgate::start(POLICY, &["--proxy-protocol"]);
    let a = auth(&tg, "acme");
    let client: SocketAddr = "203.0.113.9:5555".parse().unwrap();
    let answer = get_after(tg.proxy, &v2_header(client, tg.proxy), up, &a).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let logged = wait_until(Duration::from_secs(5), async || {
        tg.logs().contains("203.0.113.9:5555")
    })
    .await;
    assert!(
        logged,
        "the access line does not name the client:\n{}",
        tg.logs()
    );
    // Without a header, a trusted peer is its own client.
    let answer = get_after(tg.proxy, b"", up, &a).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_header_from_an_untrusted_peer_is_refused() {
    let up = echo_upstream().await;
    let tg = Tollgate::start(
        POLICY,
        &["--proxy-protocol", "--trusted-proxies", "10.0.0.0/8"],
    );
    let a = auth(&tg, "acme");
    let client: SocketAddr = "203.0.113.9:5555".parse().unwrap();
    let answer = get_after(tg.proxy, &v2_header(client, tg.proxy), up, &a).await;
    assert_eq!(answer, "", "a spoofed client was served");
    assert!(!tg.logs().contains("203.0.113.9"), "{}", tg.logs());
    // Direct clients are served as before.
    let answer = get_after(tg.proxy, b"", up, &a).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn the_relay_caps_pending_connections_per_named_client() {
    let (tg, relay) = start_tollgate(&["--proxy-protocol"]);
    let refused = "tollgate_agent_auth_failures_total{reason=\"source_limit\"}";
    let pending = tollgate::relay::listener::MAX_PENDING_PER_SOURCE;
    // As many half-open connections as one source may hold, each from another client: the
    // balancer's own address is not what is counted.
    let mut held = Vec::new();
    for i in 0..=pending {
        let client: SocketAddr = format!("198.51.100.{}:4000", i + 1).parse().unwrap();
        let mut s = TcpStream::connect(relay).await.unwrap();
        s.write_all(&v2_header(client, relay)).await.unwrap();
        held.push(s);
    }
    // Then more than that from one client: the cap applies to it.
    for _ in 0..=pending {
        let client: SocketAddr = "198.51.100.200:4000".parse().unwrap();
        let mut s = TcpStream::connect(relay).await.unwrap();
        s.write_all(&v2_header(client, relay)).await.unwrap();
        held.push(s);
    }
    let capped = wait_until(Duration::from_secs(5), async || {
        metric(&tg, refused).await == 1.0
    })
    .await;
    assert!(
        capped,
        "{refused} = {} (want exactly one: the 17th from one client)",
        metric(&tg, refused).await
    );
}
