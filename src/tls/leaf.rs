//! Leaf certificates for intercepted hosts ([`LeafCache`]): minted on demand, signed by the
//! CA, with the CONNECT host as the only SAN, cached in a bounded LRU map, renewed before they
//! expire, minted once per host however many connections ask at the same time. The CA that
//! signs can be replaced while the server runs ([`LeafCache::set_ca`], a CA rotation): the
//! cache is flushed, and tunnels already open keep the leaf they were handed.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use rcgen::KeyPair;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, StoresServerSessions};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use super::ca::mint_leaf;
use super::{provider, Ca, TlsError, ALPN, LEAF_RENEW_BEFORE, LEAF_VALIDITY, SESSION_CACHE_SIZE};
use crate::clock::Clock;
use crate::policy::Host;

/// A minted leaf and the server configuration that presents it.
pub struct Leaf {
    /// rustls server configuration: this leaf, ALPN `h2` and `http/1.1`.
    pub config: Arc<ServerConfig>,
    /// The leaf certificate.
    pub cert: CertificateDer<'static>,
    /// End of validity.
    pub not_after: SystemTime,
}

impl fmt::Debug for Leaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leaf")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Presents one certificate whatever the client's SNI says: the CONNECT target decided the
/// host, and a client may send no SNI at all (IP literals).
#[derive(Debug)]
struct OneCert(Arc<CertifiedKey>);

impl ResolvesServerCert for OneCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// One host's entry: empty while the first caller mints (the others wait on the cell), or
/// after a failed mint (the next caller retries).
#[derive(Default)]
struct Slot {
    leaf: tokio::sync::OnceCell<Arc<Leaf>>,
}

impl Slot {
    /// False once the leaf is due for renewal.
    fn usable_at(&self, now: SystemTime) -> bool {
        match self.leaf.get() {
            None => true,
            Some(leaf) => leaf.not_after > now + LEAF_RENEW_BEFORE,
        }
    }
}

/// Leaf certificates per host: minted on first use, cached (bounded LRU), renewed before they
/// expire, minted once per host even when many connections ask at the same moment.
///
/// All leaves share one ECDSA P-256 key generated when the cache is created: the key never
/// leaves the process, which also holds the CA key, so per-leaf keys would add no protection
/// and would make a cold mint several times slower.
pub struct LeafCache {
    /// The signer; replaced by a CA rotation. Read for each mint, never held across an await.
    ca: RwLock<Arc<Ca>>,
    /// The key every leaf certifies (rcgen form, for minting).
    leaf_key: KeyPair,
    /// The same key, rustls form, for serving.
    signing_key: Arc<dyn rustls::sign::SigningKey>,
    /// Shared TLS session cache for resumption across all leaves.
    sessions: Arc<dyn StoresServerSessions>,
    /// Crypto provider for every server configuration.
    provider: Arc<CryptoProvider>,
    /// host → slot, least recently used evicted beyond capacity.
    slots: Mutex<lru::LruCache<Host, Arc<Slot>>>,
    /// Leaves minted so far (for metrics and tests).
    mints: AtomicU64,
    /// The time leaves are minted at and checked for renewal against.
    clock: Clock,
}

impl fmt::Debug for LeafCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeafCache")
            .field("ca", &*self.ca())
            .field("mints", &self.mints.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl LeafCache {
    /// A cache signing with `ca`, holding at most `capacity` hosts (at least 1).
    pub fn new(ca: Arc<Ca>, capacity: usize) -> Result<LeafCache, TlsError> {
        let provider = provider();
        let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let signing_key = provider.key_provider.load_private_key(der)?;
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Ok(LeafCache {
            ca: RwLock::new(ca),
            leaf_key,
            signing_key,
            sessions: rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_SIZE),
            provider,
            slots: Mutex::new(lru::LruCache::new(capacity)),
            mints: AtomicU64::new(0),
            clock: Clock::system(),
        })
    }

    /// The CA leaves are signed by.
    pub fn ca(&self) -> Arc<Ca> {
        self.ca.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Makes `ca` sign the leaves from now on and flushes the cache, unless `ca` is the CA that
    /// signs already (same certificate). Leaves already handed out (open tunnels) are kept by
    /// their connections; a mint under way finishes with whichever CA it read, into a slot
    /// no longer in the cache. Returns whether the CA changed.
    pub fn set_ca(&self, ca: Arc<Ca>) -> bool {
        {
            let mut current = self.ca.write().unwrap_or_else(|e| e.into_inner());
            if current.cert_der() == ca.cert_der() {
                return false;
            }
            *current = ca;
            // Flushed before the new CA is readable: no request finds an old leaf after it.
            self.lock().clear();
        }
        true
    }

    /// Leaves minted since the cache was created.
    pub fn mints(&self) -> u64 {
        self.mints.load(Ordering::Relaxed)
    }

    /// Hosts currently cached.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no host is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The server configuration presenting `host`'s leaf (minted or renewed as needed).
    pub async fn server_config(&self, host: &Host) -> Result<Arc<ServerConfig>, TlsError> {
        let now = self.clock.now_time()?;
        Ok(self.leaf_at(host, now).await?.config.clone())
    }

    /// `host`'s leaf as of `now` (a parameter so renewal can be tested without waiting a week).
    pub async fn leaf_at(&self, host: &Host, now: SystemTime) -> Result<Arc<Leaf>, TlsError> {
        let slot = {
            let mut slots = self.lock();
            match slots.get(host) {
                Some(slot) if slot.usable_at(now) => slot.clone(),
                _ => {
                    let slot = Arc::new(Slot::default());
                    slots.put(host.clone(), slot.clone());
                    slot
                }
            }
        };
        let leaf = slot
            .leaf
            .get_or_try_init(|| async { self.mint(host, now) })
            .await?;
        Ok(leaf.clone())
    }

    fn mint(&self, host: &Host, now: SystemTime) -> Result<Arc<Leaf>, TlsError> {
        let cert = mint_leaf(&self.ca(), &self.leaf_key, host, now)?;
        let certified = CertifiedKey::new(vec![cert.clone()], self.signing_key.clone());
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(OneCert(Arc::new(certified))));
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        config.session_storage = self.sessions.clone();
        self.mints.fetch_add(1, Ordering::Relaxed);
        Ok(Arc::new(Leaf {
            config: Arc::new(config),
            cert,
            not_after: now + LEAF_VALIDITY,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<Host, Arc<Slot>>> {
        // A panic while holding the lock cannot leave the map inconsistent (each operation is
        // a single call), so a poisoned lock is still usable.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Duration;

    use crate::tls::generate_ca;

    fn generated_ca() -> Arc<Ca> {
        let (cert, key) = generate_ca().unwrap();
        let ca = Ca::from_pem(&cert, Path::new("ca.pem"), &key, Path::new("ca.key"));
        Arc::new(ca.unwrap())
    }

    fn parse(der: &[u8]) -> x509_parser::certificate::X509Certificate<'_> {
        x509_parser::parse_x509_certificate(der).unwrap().1
    }

    #[tokio::test]
    async fn leaves_have_the_host_as_san_short_validity_and_are_cached() {
        let ca = generated_ca();
        let cache = LeafCache::new(ca.clone(), 10).unwrap();
        let name = Host::Name("api.example.com".into());
        let now = Clock::system().now_time().unwrap();
        let leaf = cache.leaf_at(&name, now).await.unwrap();
        let cert = parse(&leaf.cert);
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            format!("{:?}", san.value.general_names),
            "[DNSName(\"api.example.com\")]"
        );
        assert!(
            cert.extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .server_auth
        );
        let days = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp())
            / 86_400;
        assert_eq!(days, 7, "7 days and the 1 h backdate, rounded down");
        let ca_cert = parse(ca.cert_der());
        assert_eq!(cert.issuer(), ca_cert.subject());

        let again = cache.leaf_at(&name, now).await.unwrap();
        assert!(Arc::ptr_eq(&leaf, &again));
        assert_eq!(cache.mints(), 1);

        let ip = Host::Ip("127.0.0.1".parse().unwrap());
        let leaf = cache.leaf_at(&ip, now).await.unwrap();
        let cert = parse(&leaf.cert);
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            format!("{:?}", san.value.general_names),
            "[IPAddress([127, 0, 0, 1])]"
        );
        let v6 = Host::Ip("2001:db8::1".parse().unwrap());
        let leaf = cache.leaf_at(&v6, now).await.unwrap();
        let cert = parse(&leaf.cert);
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert!(matches!(
            san.value.general_names[0],
            x509_parser::extensions::GeneralName::IPAddress(b) if b.len() == 16
        ));
        assert_eq!(cache.mints(), 3);
    }

    #[tokio::test]
    async fn leaves_are_renewed_when_less_than_a_day_remains() {
        let ca = generated_ca();
        let cache = LeafCache::new(ca, 10).unwrap();
        let host = Host::Name("renew.example".into());
        let t0 = Clock::system().now_time().unwrap();
        let first = cache.leaf_at(&host, t0).await.unwrap();
        let day = Duration::from_secs(86_400);
        let kept = cache.leaf_at(&host, t0 + 5 * day).await.unwrap();
        assert!(Arc::ptr_eq(&first, &kept), "5 days in: still fresh");
        let renewed = cache.leaf_at(&host, t0 + 6 * day + day / 2).await.unwrap();
        assert!(!Arc::ptr_eq(&first, &renewed), "6.5 days in: renewed");
        assert!(renewed.not_after > first.not_after);
        assert_eq!(cache.mints(), 2);
    }

    #[tokio::test]
    async fn cache_is_bounded_least_recently_used_first() {
        let ca = generated_ca();
        let cache = LeafCache::new(ca, 2).unwrap();
        let h = |n: &str| Host::Name(n.into());
        let now = Clock::system().now_time().unwrap();
        cache.leaf_at(&h("a.test"), now).await.unwrap();
        cache.leaf_at(&h("b.test"), now).await.unwrap();
        cache.leaf_at(&h("a.test"), now).await.unwrap(); // a is now the most recent
        cache.leaf_at(&h("c.test"), now).await.unwrap(); // evicts b
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.mints(), 3);
        cache.leaf_at(&h("a.test"), now).await.unwrap();
        assert_eq!(cache.mints(), 3, "a stayed");
        cache.leaf_at(&h("b.test"), now).await.unwrap();
        assert_eq!(cache.mints(), 4, "b was evicted");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_for_one_host_mint_once() {
        let ca = generated_ca();
        let cache = Arc::new(LeafCache::new(ca, 10).unwrap());
        let host = Host::Name("busy.example".into());
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let (cache, host) = (cache.clone(), host.clone());
                tokio::spawn(async move { cache.server_config(&host).await.unwrap() })
            })
            .collect();
        let configs: Vec<_> = futures_util::future::join_all(tasks)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert!(configs.iter().all(|c| Arc::ptr_eq(c, &configs[0])));
        assert_eq!(cache.mints(), 1);
        assert_eq!(
            configs[0].alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[tokio::test]
    async fn a_new_ca_flushes_the_cache_and_handed_out_leaves_stay() {
        let first = generated_ca();
        let (cert, key) = crate::tls::generate_ca_named("second CA").unwrap();
        let second = Ca::from_pem(&cert, Path::new("2.pem"), &key, Path::new("2.key"));
        let second = Arc::new(second.unwrap());
        let cache = LeafCache::new(first.clone(), 10).unwrap();
        let host = Host::Name("api.example.com".into());
        let now = Clock::system().now_time().unwrap();
        let old = cache.leaf_at(&host, now).await.unwrap();
        assert!(!cache.set_ca(first.clone()), "the same CA changes nothing");
        assert_eq!(cache.len(), 1);
        assert!(cache.set_ca(second.clone()));
        assert!(cache.is_empty());
        let new = cache.leaf_at(&host, now).await.unwrap();
        assert!(!Arc::ptr_eq(&old, &new));
        let issuer = |leaf: &Leaf| parse(&leaf.cert).issuer().to_string();
        assert_eq!(issuer(&new), parse(second.cert_der()).subject().to_string());
        assert_eq!(issuer(&old), parse(first.cert_der()).subject().to_string());
        assert_eq!(cache.ca().cert_der(), second.cert_der());
    }
}
