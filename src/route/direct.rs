//! Direct dialing: the proxy itself connects to the destination, behind the address guard.
//!
//! The order is the one smokescreen taught: resolve the name **once**, classify **every**
//! answer, and connect only to the `SocketAddr`s that were checked. Checking one lookup and
//! dialing the result of another is the DNS-rebinding hole; accepting an answer that mixes
//! public and private addresses is the same hole with extra steps, so one prohibited address
//! refuses the whole destination.
//!
//! Like Go's `net.Dialer`, the connect timeout covers name resolution and every connection
//! attempt together. Addresses are tried in the resolver's order; each attempt gets an equal
//! share of the time left (at least 2 s, or all of it when less remains), so one black-holed
//! address cannot use up the whole budget.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::guard::{Guard, Prohibited};
pub use super::resolve::{Resolve, StaticResolver, SystemResolver};
use crate::policy::Host;

/// Why a direct dial failed. Maps 1:1 to proxy error codes. `Clone` (the I/O error is
/// shared) so an error found inside a client library's error chain can be reported as is.
#[derive(Clone, Debug, thiserror::Error)]
pub enum DirectError {
    /// Name did not resolve (`dns_error`).
    #[error("DNS lookup failed for {host}: {detail}")]
    Dns {
        /// The name looked up.
        host: String,
        /// Resolver message.
        detail: String,
    },
    /// The guard refused an address (`destination_ip_prohibited`).
    #[error(transparent)]
    Prohibited(#[from] Prohibited),
    /// Every address refused the connection (`connection_refused`).
    #[error("connection refused by {0}")]
    Refused(SocketAddr),
    /// Connect timed out (`connection_timeout`).
    #[error("connection to {0} timed out")]
    Timeout(String),
    /// A resolved address falls in a `[[deny]]` CIDR (`destination_denied`): deny rules
    /// hold for the addresses a name resolves to, not only for literal targets.
    #[error("{addr} is denied by deny rule {rule}")]
    DeniedAddress {
        /// The resolved address.
        addr: SocketAddr,
        /// The deny rule, `file:line`.
        rule: String,
    },
    /// A name allowed only through `cidrs` rules resolved to an address outside them
    /// (`destination_denied`): every address must be inside.
    #[error("{addr} is outside the cidrs of rule {rule}")]
    OutsideCidrs {
        /// The resolved address.
        addr: SocketAddr,
        /// The `cidrs` rule that allowed the name, `file:line`.
        rule: String,
    },
    /// Other I/O error while connecting (`connection_refused`-class 502).
    #[error("connecting to {addr}: {source}")]
    Io {
        /// Address being dialed.
        addr: String,
        /// The error.
        source: Arc<std::io::Error>,
    },
}

impl DirectError {
    /// The error code this failure is reported with, by the proxy and by an agent alike
    /// (DESIGN "Errors from the proxy itself"): a guard refusal is
    /// `destination_ip_prohibited`; a resolved address inside a `[[deny]]` CIDR is a deny
    /// match, `destination_denied`, like every other deny match.
    pub fn code(&self) -> &'static str {
        match self {
            DirectError::Dns { .. } => "dns_error",
            DirectError::Prohibited(_) => "destination_ip_prohibited",
            DirectError::DeniedAddress { .. } | DirectError::OutsideCidrs { .. } => {
                "destination_denied"
            }
            DirectError::Refused(_) | DirectError::Io { .. } => "connection_refused",
            DirectError::Timeout(_) => "connection_timeout",
        }
    }

    /// The HTTP status that goes with [`code`](Self::code).
    pub fn status(&self) -> http::StatusCode {
        match self {
            DirectError::Prohibited(_)
            | DirectError::DeniedAddress { .. }
            | DirectError::OutsideCidrs { .. } => http::StatusCode::FORBIDDEN,
            DirectError::Timeout(_) => http::StatusCode::GATEWAY_TIMEOUT,
            DirectError::Dns { .. } | DirectError::Refused(_) | DirectError::Io { .. } => {
                http::StatusCode::BAD_GATEWAY
            }
        }
    }
}

/// The shortest slice of the remaining time an attempt gets when several addresses share the
/// budget (Go's `saneMinimum`): below this, a healthy but distant server would be cut off.
const MIN_ATTEMPT: Duration = Duration::from_secs(2);

/// Dials destinations directly: resolve once, classify every address, connect only to a
/// checked address.
pub struct DirectDialer {
    /// Where names are looked up; once per dial.
    resolver: Arc<dyn Resolve>,
    /// Classifies every answer and knows the proxy's own listeners.
    guard: Guard,
    /// Budget for resolution plus all connection attempts.
    connect_timeout: Duration,
    /// Consulted for every resolved address of a name: `Some(rule)` refuses it.
    deny_check: Option<DenyCheck>,
    /// The parent proxy checked addresses are reached through (`super::parent`).
    pub(super) parent: Option<Arc<super::UpstreamProxy>>,
}

/// Answers whether an address is covered by a deny rule (returns the rule, `file:line`).
pub type DenyCheck = Arc<dyn Fn(SocketAddr) -> Option<String> + Send + Sync>;

impl std::fmt::Debug for DirectDialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectDialer")
            .field("guard", &self.guard)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl DirectDialer {
    /// A dialer using `resolver`, `guard` and a connect timeout.
    pub fn new(resolver: Arc<dyn Resolve>, guard: Guard, connect_timeout: Duration) -> Self {
        Self {
            resolver,
            guard,
            connect_timeout,
            deny_check: None,
            parent: None,
        }
    }

    /// The budget for resolution plus all connection attempts of one dial.
    pub(super) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Also refuses resolved addresses that `check` names a deny rule for.
    pub fn with_deny_check(mut self, check: DenyCheck) -> Self {
        self.deny_check = Some(check);
        self
    }

    /// Dials `host:port`. Returns the stream and the address actually connected to.
    ///
    /// An IP host is not resolved. A name is resolved once; if any answer is prohibited (see
    /// [`Guard::check`]) the whole destination is refused with [`DirectError::Prohibited`]
    /// before any connection is attempted. The stream has `TCP_NODELAY` set.
    pub async fn dial(
        &self,
        host: &Host,
        port: u16,
        allow_private: bool,
    ) -> Result<(TcpStream, SocketAddr), DirectError> {
        let deadline = Instant::now() + self.connect_timeout;
        let addrs = self
            .resolve_checked_until(host, port, allow_private, deadline)
            .await?;
        self.connect_until(host, port, &addrs, deadline).await
    }

    /// The first half of [`dial`](Self::dial): resolves `host` once and checks every address,
    /// returning the checked socket addresses in the order they would be tried (duplicates
    /// removed, IPv4-mapped IPv6 folded to IPv4). Useful to explain a decision without
    /// connecting.
    pub async fn resolve_checked(
        &self,
        host: &Host,
        port: u16,
        allow_private: bool,
    ) -> Result<Vec<SocketAddr>, DirectError> {
        let deadline = Instant::now() + self.connect_timeout;
        self.resolve_checked_until(host, port, allow_private, deadline)
            .await
    }

    /// [`resolve_checked`](Self::resolve_checked) within `deadline`, for callers that add
    /// their own check before [`connect_until`](Self::connect_until) under the same deadline.
    pub async fn resolve_checked_until(
        &self,
        host: &Host,
        port: u16,
        allow_private: bool,
        deadline: Instant,
    ) -> Result<Vec<SocketAddr>, DirectError> {
        let ips = match host {
            Host::Ip(ip) => vec![*ip],
            Host::Name(name) => {
                let dns = |detail: String| DirectError::Dns {
                    host: name.clone(),
                    detail,
                };
                match tokio::time::timeout_at(deadline, self.resolver.resolve(name)).await {
                    Err(_) => return Err(dns("lookup timed out".into())),
                    Ok(Err(e)) => return Err(dns(e.to_string())),
                    Ok(Ok(ips)) if ips.is_empty() => return Err(dns("no addresses".into())),
                    Ok(Ok(ips)) => ips,
                }
            }
        };
        let mut addrs: Vec<SocketAddr> = Vec::with_capacity(ips.len());
        for ip in ips {
            let addr = SocketAddr::new(ip.to_canonical(), port);
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        for addr in &addrs {
            self.guard.check(*addr, allow_private)?;
        }
        // Literal targets were matched against deny CIDRs by the policy already.
        if let (Host::Name(_), Some(check)) = (host, &self.deny_check) {
            for addr in &addrs {
                if let Some(rule) = check(*addr) {
                    return Err(DirectError::DeniedAddress { addr: *addr, rule });
                }
            }
        }
        Ok(addrs)
    }

    /// Tries `addrs` in order until one connects or the deadline passes.
    ///
    /// When every attempt fails, the error reported is the most telling one: a refusal (the
    /// host is there, the port is closed) over a timeout over any other I/O error (typically
    /// "network unreachable" for an address family the host has no route for).
    pub async fn connect_until(
        &self,
        host: &Host,
        port: u16,
        addrs: &[SocketAddr],
        deadline: Instant,
    ) -> Result<(TcpStream, SocketAddr), DirectError> {
        self.connect_until_via(host, port, addrs, deadline, true)
            .await
    }

    /// [`connect_until`](Self::connect_until), through the parent proxy (if any) only when
    /// `parent` is true.
    pub(super) async fn connect_until_via(
        &self,
        host: &Host,
        port: u16,
        addrs: &[SocketAddr],
        deadline: Instant,
        parent: bool,
    ) -> Result<(TcpStream, SocketAddr), DirectError> {
        let target = || format!("{host}:{port}");
        let mut refused = None;
        let mut timed_out = false;
        let mut other = None;
        for (i, &addr) in addrs.iter().enumerate() {
            let now = Instant::now();
            if now >= deadline {
                timed_out = true;
                break;
            }
            let remaining = deadline - now;
            // `addrs` is non-empty here and i < len, so the divisor is at least 1.
            let share = remaining / u32::try_from(addrs.len() - i).unwrap_or(u32::MAX);
            let budget = if share < MIN_ATTEMPT {
                MIN_ATTEMPT.min(remaining)
            } else {
                share
            };
            match tokio::time::timeout(budget, self.open(addr, parent)).await {
                Ok(Ok(stream)) => {
                    stream.set_nodelay(true).map_err(|source| DirectError::Io {
                        addr: addr.to_string(),
                        source: Arc::new(source),
                    })?;
                    return Ok((stream, addr));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    refused.get_or_insert(addr);
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::TimedOut => timed_out = true,
                Ok(Err(e)) => {
                    other.get_or_insert((addr, e));
                }
                Err(_elapsed) => timed_out = true,
            }
        }
        Err(if let Some(addr) = refused {
            DirectError::Refused(addr)
        } else if timed_out {
            DirectError::Timeout(target())
        } else if let Some((addr, source)) = other {
            DirectError::Io {
                addr: addr.to_string(),
                source: Arc::new(source),
            }
        } else {
            // Unreachable in practice (resolution never yields an empty list), but an empty
            // list is answered as a DNS failure rather than a panic.
            DirectError::Dns {
                host: host.to_string(),
                detail: "no addresses".into(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use std::future::Future;
    use std::net::IpAddr;
    use std::pin::Pin;

    use tokio::net::TcpListener;

    use super::super::guard::OWN_LISTENER;
    use super::*;

    const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// One classification for every side that reports a direct dial failure (the proxy, the
    /// agent): a guard refusal is `destination_ip_prohibited`, a deny match
    /// `destination_denied`.
    #[test]
    fn every_direct_error_has_one_code_and_status() {
        let addr: SocketAddr = "10.0.0.1:443".parse().unwrap();
        let prohibited = Guard::default().check(addr, false).unwrap_err();
        let cases: Vec<(DirectError, &str, u16)> = vec![
            (
                DirectError::Dns {
                    host: "x".into(),
                    detail: "nx".into(),
                },
                "dns_error",
                502,
            ),
            (prohibited.into(), "destination_ip_prohibited", 403),
            (
                DirectError::DeniedAddress {
                    addr,
                    rule: "deny.toml:1".into(),
                },
                "destination_denied",
                403,
            ),
            (DirectError::Refused(addr), "connection_refused", 502),
            (
                DirectError::Timeout("x:1".into()),
                "connection_timeout",
                504,
            ),
        ];
        for (e, code, status) in cases {
            assert_eq!((e.code(), e.status().as_u16()), (code, status), "{e:?}");
        }
    }

    fn dialer(resolver: impl Resolve, guard: Guard) -> DirectDialer {
        DirectDialer::new(Arc::new(resolver), guard, Duration::from_secs(5))
    }

    async fn listener() -> (TcpListener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        (l, a)
    }

    /// A port nothing listens on: bind, note the port, close.
    async fn closed_port() -> u16 {
        let (l, a) = listener().await;
        drop(l);
        a.port()
    }

    fn prohibited_reason(
        r: Result<impl std::fmt::Debug, DirectError>,
    ) -> (SocketAddr, &'static str) {
        match r {
            Err(DirectError::Prohibited(p)) => (p.addr, p.reason),
            other => panic!("expected Prohibited, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn ip_loopback_dials_with_allow_private() {
        let (l, addr) = listener().await;
        let d = dialer(StaticResolver::new(), Guard::default());
        let (stream, connected) = d
            .dial(&Host::Ip(LOCALHOST), addr.port(), true)
            .await
            .unwrap();
        assert_eq!(connected, addr);
        assert!(stream.nodelay().unwrap());
        let (_accepted, peer) = l.accept().await.unwrap();
        assert_eq!(peer, stream.local_addr().unwrap());
    }

    #[tokio::test]
    async fn ip_loopback_refused_without_allow_private() {
        let (_l, addr) = listener().await;
        let d = dialer(StaticResolver::new(), Guard::default());
        let r = d.dial(&Host::Ip(LOCALHOST), addr.port(), false).await;
        assert_eq!(prohibited_reason(r), (addr, "loopback"));
    }

    #[tokio::test]
    async fn name_to_loopback_refused_without_allow_private() {
        let (_l, addr) = listener().await;
        let d = dialer(
            StaticResolver::new().with("svc.test", [LOCALHOST]),
            Guard::default(),
        );
        let host = Host::Name("svc.test".into());
        let r = d.dial(&host, addr.port(), false).await;
        assert_eq!(prohibited_reason(r), (addr, "loopback"));
        let (_s, connected) = d.dial(&host, addr.port(), true).await.unwrap();
        assert_eq!(connected, addr);
    }

    #[tokio::test]
    async fn mixed_public_and_private_answer_refused() {
        let resolver = StaticResolver::new()
            .with("mixed.test", [ip("8.8.8.8"), ip("10.0.0.7")])
            .with("mixed6.test", [ip("2606:4700::1"), ip("::ffff:127.0.0.1")]);
        let d = dialer(resolver, Guard::default());
        let r = d.dial(&Host::Name("mixed.test".into()), 443, false).await;
        assert_eq!(
            prohibited_reason(r),
            ("10.0.0.7:443".parse().unwrap(), "private")
        );
        let r = d.dial(&Host::Name("mixed6.test".into()), 443, false).await;
        assert_eq!(
            prohibited_reason(r),
            ("127.0.0.1:443".parse().unwrap(), "loopback")
        );
    }

    #[tokio::test]
    async fn public_answers_pass_the_guard() {
        // Checked without connecting: the sandbox forbids traffic to non-loopback addresses.
        let resolver = StaticResolver::new().with(
            "api.test",
            [
                ip("8.8.8.8"),
                ip("2606:4700::1"),
                ip("8.8.8.8"),
                ip("::ffff:1.1.1.1"),
            ],
        );
        let d = dialer(resolver, Guard::default());
        let addrs = d
            .resolve_checked(&Host::Name("api.test".into()), 443, false)
            .await
            .unwrap();
        let want: Vec<SocketAddr> = ["8.8.8.8:443", "[2606:4700::1]:443", "1.1.1.1:443"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(addrs, want);
    }

    #[tokio::test]
    async fn metadata_address_refused() {
        let d = dialer(
            StaticResolver::new().with("metadata.test", [ip("169.254.169.254")]),
            Guard::default(),
        );
        let r = d.dial(&Host::Name("metadata.test".into()), 80, false).await;
        assert_eq!(prohibited_reason(r).1, "link-local");
        let r = d.dial(&Host::Ip(ip("64:ff9b::a9fe:a9fe")), 80, false).await;
        assert_eq!(prohibited_reason(r).1, "link-local");
    }

    #[tokio::test]
    async fn closed_port_is_refused() {
        let port = closed_port().await;
        let d = dialer(StaticResolver::new(), Guard::default());
        match d.dial(&Host::Ip(LOCALHOST), port, true).await {
            Err(DirectError::Refused(a)) => assert_eq!(a, SocketAddr::new(LOCALHOST, port)),
            other => panic!("expected Refused, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn addresses_tried_in_order() {
        // 127.0.0.2 is loopback too, but nothing listens there: refused, then the next one.
        let (_l, addr) = listener().await;
        let d = dialer(
            StaticResolver::new().with("two.test", [ip("127.0.0.2"), LOCALHOST]),
            Guard::default(),
        );
        let (_s, connected) = d
            .dial(&Host::Name("two.test".into()), addr.port(), true)
            .await
            .unwrap();
        assert_eq!(connected, addr);
    }

    #[tokio::test]
    async fn own_listener_refused_even_with_allow_private() {
        let (_l, addr) = listener().await;
        let d = dialer(
            StaticResolver::new().with("self.test", [LOCALHOST]),
            Guard::new(vec![addr]),
        );
        let r = d.dial(&Host::Ip(LOCALHOST), addr.port(), true).await;
        assert_eq!(prohibited_reason(r), (addr, OWN_LISTENER));
        let r = d
            .dial(&Host::Name("self.test".into()), addr.port(), true)
            .await;
        assert_eq!(prohibited_reason(r), (addr, OWN_LISTENER));
    }

    #[tokio::test]
    async fn own_wildcard_listener_refused_via_loopback() {
        let l = TcpListener::bind("0.0.0.0:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let d = dialer(
            StaticResolver::new(),
            Guard::new(vec![l.local_addr().unwrap()]),
        );
        let r = d.dial(&Host::Ip(LOCALHOST), port, true).await;
        assert_eq!(prohibited_reason(r).1, OWN_LISTENER);
    }

    #[tokio::test]
    async fn unknown_name_is_dns_error() {
        let d = dialer(StaticResolver::new(), Guard::default());
        match d.dial(&Host::Name("nowhere.test".into()), 443, false).await {
            Err(DirectError::Dns { host, .. }) => assert_eq!(host, "nowhere.test"),
            other => panic!("expected Dns, got {other:?}"),
        }
        let d = dialer(
            StaticResolver::new().with("empty.test", []),
            Guard::default(),
        );
        match d.dial(&Host::Name("empty.test".into()), 443, false).await {
            Err(DirectError::Dns { detail, .. }) => assert_eq!(detail, "no addresses"),
            other => panic!("expected Dns, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn unanswered_syn_times_out() {
        // A listener that never accepts, with its accept queue filled: Linux then drops further
        // SYNs, so a connect hangs like one to a black-holed address — without leaving loopback.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let _listener = socket.listen(0).unwrap();
        let mut fillers = Vec::new();
        let d = DirectDialer::new(
            Arc::new(StaticResolver::new()),
            Guard::default(),
            Duration::from_millis(300),
        );
        let started = Instant::now();
        loop {
            match d.dial(&Host::Ip(LOCALHOST), addr.port(), true).await {
                Ok((s, _)) => fillers.push(s),
                Err(DirectError::Timeout(target)) => {
                    assert_eq!(target, format!("127.0.0.1:{}", addr.port()));
                    break;
                }
                Err(e) => panic!("expected Timeout, got {e:?}"),
            }
            assert!(fillers.len() < 64, "accept queue never filled");
        }
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// Counts lookups and never answers for `hang.test`.
    struct Counting {
        inner: StaticResolver,
        calls: AtomicUsize,
    }

    impl Resolve for Counting {
        fn resolve(
            &self,
            name: &str,
        ) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + '_>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if name == "hang.test" {
                return Box::pin(std::future::pending());
            }
            self.inner.resolve(name)
        }
    }

    #[tokio::test]
    async fn resolves_exactly_once_per_dial() {
        let (_l, addr) = listener().await;
        let resolver = Arc::new(Counting {
            inner: StaticResolver::new().with("once.test", [ip("127.0.0.2"), LOCALHOST]),
            calls: AtomicUsize::new(0),
        });
        let d = DirectDialer::new(resolver.clone(), Guard::default(), Duration::from_secs(5));
        d.dial(&Host::Name("once.test".into()), addr.port(), true)
            .await
            .unwrap();
        assert_eq!(resolver.calls.load(Ordering::SeqCst), 1);
        d.dial(&Host::Ip(LOCALHOST), addr.port(), true)
            .await
            .unwrap();
        assert_eq!(
            resolver.calls.load(Ordering::SeqCst),
            1,
            "IP hosts are not resolved"
        );
    }

    #[tokio::test]
    async fn slow_resolution_counts_against_the_timeout() {
        let resolver = Counting {
            inner: StaticResolver::new(),
            calls: AtomicUsize::new(0),
        };
        let d = DirectDialer::new(
            Arc::new(resolver),
            Guard::default(),
            Duration::from_millis(50),
        );
        match d.dial(&Host::Name("hang.test".into()), 443, false).await {
            Err(DirectError::Dns { detail, .. }) => assert_eq!(detail, "lookup timed out"),
            other => panic!("expected Dns timeout, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn system_resolver_resolves_localhost() {
        // /etc/hosts: no network traffic.
        let ips = SystemResolver.resolve("localhost").await.unwrap();
        assert!(ips.iter().all(|ip| ip.is_loopback()), "{ips:?}");
        assert!(!ips.is_empty());
    }
}
