//! Direct dials under a decision's [`Reach`]: the address guard with the rule's say on
//! private addresses, a name allowed through `cidrs` rules connected only when every address
//! it resolved to is inside them, and the parent proxy skipped for policies with
//! `upstream_proxy = false`. The name is resolved once; the addresses checked are the ones
//! dialed.

use std::net::SocketAddr;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::direct::{DirectDialer, DirectError};
use crate::policy::{Host, Reach};

impl DirectDialer {
    /// Dials `host:port` as `reach` allows: [`dial`](Self::dial) plus the `cidrs` condition
    /// and the parent proxy choice.
    pub async fn dial_reach(
        &self,
        host: &Host,
        port: u16,
        reach: &Reach,
    ) -> Result<(TcpStream, SocketAddr), DirectError> {
        let deadline = Instant::now() + self.connect_timeout();
        let addrs = self.resolve_within(host, port, reach, deadline).await?;
        self.connect_until_via(host, port, &addrs, deadline, !reach.bypass_parent)
            .await
    }

    /// The checked addresses of `host:port` under `reach` (resolved once, every one through
    /// the guard, and inside `reach.within` when set), for the dial or for an explanation.
    pub async fn resolve_within(
        &self,
        host: &Host,
        port: u16,
        reach: &Reach,
        deadline: Instant,
    ) -> Result<Vec<SocketAddr>, DirectError> {
        let addrs = self
            .resolve_checked_until(host, port, reach.private, deadline)
            .await?;
        if let Some(within) = &reach.within {
            if let Some(addr) = addrs.iter().find(|a| !within.contains(a.ip())) {
                return Err(DirectError::OutsideCidrs {
                    addr: *addr,
                    rule: within.rule.to_string(),
                });
            }
        }
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::policy::{RuleRef, Within};
    use crate::route::{Guard, StaticResolver, UpstreamProxy};

    fn within(nets: &[&str]) -> Option<Within> {
        Some(Within {
            nets: nets.iter().map(|n| n.parse().unwrap()).collect(),
            rule: RuleRef {
                file: "p.toml".into(),
                line: 7,
            },
        })
    }

    fn dialer() -> DirectDialer {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let r = StaticResolver::new()
            .with("inside.test", [ip("127.0.0.1")])
            .with("mapped.test", [ip("::ffff:127.0.0.1")])
            .with("outside.test", [ip("127.0.0.2")])
            .with("mixed.test", [ip("127.0.0.1"), ip("127.0.0.2")]);
        DirectDialer::new(Arc::new(r), Guard::default(), Duration::from_secs(5))
    }

    #[tokio::test]
    async fn a_cidr_allowed_name_connects_only_when_every_address_is_inside() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let d = dialer();
        let reach = Reach {
            private: true,
            bypass_parent: false,
            within: within(&["127.0.0.1/32"]),
        };
        for name in ["inside.test", "mapped.test"] {
            let (_s, addr) = d
                .dial_reach(&Host::Name(name.into()), port, &reach)
                .await
                .unwrap();
            assert_eq!(addr, l.local_addr().unwrap(), "{name}");
            l.accept().await.unwrap();
        }
        for (name, bad) in [("outside.test", "127.0.0.2"), ("mixed.test", "127.0.0.2")] {
            match d.dial_reach(&Host::Name(name.into()), port, &reach).await {
                Err(e @ DirectError::OutsideCidrs { addr, .. }) => {
                    assert_eq!(addr.ip().to_string(), bad, "{name}");
                    assert_eq!(e.code(), "destination_denied");
                    assert_eq!(
                        e.to_string(),
                        format!("{bad}:{port} is outside the cidrs of rule p.toml:7")
                    );
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        // Nothing was dialed for the refused names.
        let accepted = tokio::time::timeout(Duration::from_millis(100), l.accept()).await;
        assert!(accepted.is_err(), "a refused name was dialed");
        // The guard still applies: inside the CIDR but without `private`, loopback is refused.
        let strict = Reach {
            private: false,
            ..reach
        };
        let r = d
            .dial_reach(&Host::Name("inside.test".into()), port, &strict)
            .await;
        assert!(matches!(r, Err(DirectError::Prohibited(_))), "{r:?}");
    }

    /// A parent that answers every `CONNECT` with `403`: a dial through it fails, a dial that
    /// bypasses it reaches the origin.
    #[tokio::test]
    async fn bypass_parent_skips_the_upstream_proxy() {
        let parent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let parent_addr = parent.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = parent.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 403 Forbidden\r\n\r\n").await;
            }
        });
        let origin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = origin.local_addr().unwrap().port();
        let d = dialer().with_upstream_proxy(Some(
            UpstreamProxy::parse(&format!("http://{parent_addr}")).unwrap(),
        ));
        let host = Host::Name("inside.test".into());
        let through = Reach {
            private: true,
            ..Reach::default()
        };
        let r = d.dial_reach(&host, port, &through).await;
        assert!(matches!(r, Err(DirectError::Io { .. })), "{r:?}");
        let bypass = Reach {
            bypass_parent: true,
            ..through
        };
        let (_s, addr) = d.dial_reach(&host, port, &bypass).await.unwrap();
        assert_eq!(addr, origin.local_addr().unwrap());
        origin.accept().await.unwrap();
    }
}
