//! Certificates and TLS configurations.
//!
//! - The interception CA: generated on first start into `data/ca/` ([`generate_ca`], ECDSA
//!   P-256, key mode 0600), or supplied by the operator (`--ca-cert` / `--ca-key`). Either way
//!   it is loaded and checked once at start by [`Ca::load`], which refuses a certificate that is
//!   not a CA, a key that does not belong to it, or a CA whose leaves would not verify.
//! - Leaf certificates for intercepted hosts ([`LeafCache`]): minted on demand, signed by the CA,
//!   with the CONNECT host as the only SAN (an IP SAN for IP literals), valid for
//!   [`LEAF_VALIDITY`] and renewed when less than [`LEAF_RENEW_BEFORE`] remains; kept in a
//!   bounded LRU map; minted once per host however many connections ask at the same time.
//! - The client configuration used towards upstreams ([`upstream_client_config`]): webpki roots
//!   plus an optional extra CA file (ALPN is set by whoever connects).
//!
//! Everything uses the `ring` provider explicitly, so nothing depends on a process-wide default.

use std::fmt;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, StoresServerSessions};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::policy::Host;

/// Leaves are valid this long. Short, so a leaked leaf is worth little; long enough that a
/// busy host is re-minted about once a week.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
/// A cached leaf with less than this left is replaced by a fresh one.
pub const LEAF_RENEW_BEFORE: Duration = Duration::from_secs(24 * 3600);
/// Leaves start this long before they are minted, for clients whose clocks run behind.
const LEAF_BACKDATE: Duration = Duration::from_secs(3600);
/// Hosts whose leaves are kept (least recently used evicted first). A leaf costs about 1 KiB.
pub const LEAF_CACHE_CAPACITY: usize = 10_000;
/// TLS sessions remembered for resumption, shared by every leaf's configuration (one cache per
/// leaf would cost the default 256 slots × 10 000 hosts).
const SESSION_CACHE_SIZE: usize = 4096;
/// Longest `CN` X.520 allows (ub-common-name); longer names are carried by the SAN alone.
const MAX_COMMON_NAME: usize = 64;

/// ALPN protocols offered to clients of intercepted connections.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Errors loading a CA, minting a leaf or building a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file's content is not acceptable; the message says why.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file (or a description when there is none).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// rustls refused a configuration or key.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The system random generator failed.
    #[error("system random generator failed")]
    Random,
}

fn invalid(path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The crypto provider used everywhere (DESIGN: one crypto library, ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Generates a self-signed ECDSA P-256 CA. Returns (certificate PEM, private key PEM).
pub fn generate_ca() -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "tollgate interception CA");
    dn.push(DnType::OrganizationName, "tollgate");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The interception CA: its certificate and the signer for leaves.
pub struct Ca {
    /// Signs leaves; holds the CA's subject (copied into each leaf's issuer) and key.
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, for `ca export` and for verifying our own leaves.
    cert_der: CertificateDer<'static>,
    /// Where the certificate was read from (shown in the banner).
    pub cert_path: PathBuf,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads and checks a CA certificate (PEM) and its private key (PKCS#8 PEM).
    ///
    /// Refused, with a message naming the file: unreadable or malformed files, a certificate
    /// that is not a CA (basicConstraints) or may not sign certificates (keyUsage), an expired
    /// CA, a key that does not match the certificate, and any CA whose freshly minted test leaf
    /// does not verify against it. A key file readable by group or others is logged as a
    /// warning.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Ca, TlsError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| TlsError::Io {
                path: p.to_path_buf(),
                source,
            })
        };
        let cert_pem = read(cert_path)?;
        let key_pem = read(key_path)?;
        warn_if_key_is_readable_by_others(key_path);
        Ca::from_pem(&cert_pem, cert_path, &key_pem, key_path)
    }

    /// [`Ca::load`] on PEM text; the paths are only used in error messages.
    pub fn from_pem(
        cert_pem: &str,
        cert_path: &Path,
        key_pem: &str,
        key_path: &Path,
    ) -> Result<Ca, TlsError> {
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| invalid(cert_path, format!("no PEM certificate found ({e})")))?;
        let check_host = check_ca_certificate(&cert_der, cert_path)?;
        if key_pem.contains("-----BEGIN EC PRIVATE KEY-----")
            || key_pem.contains("-----BEGIN RSA PRIVATE KEY-----")
        {
            return Err(invalid(
                key_path,
                "the key must be PKCS#8 PEM (\"BEGIN PRIVATE KEY\"); convert it with \
                 `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8`",
            ));
        }
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| invalid(key_path, format!("not a usable PKCS#8 PEM key ({e})")))?;
        let public = cert_public_key(&cert_der, cert_path)?;
        if public != key.public_key_raw() {
            return Err(invalid(
                key_path,
                format!(
                    "this key does not belong to the certificate {}",
                    cert_path.display()
                ),
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| {
            invalid(
                cert_path,
                format!("cannot sign with this CA certificate ({e})"),
            )
        })?;
        let ca = Ca {
            issuer,
            cert_der,
            cert_path: cert_path.to_path_buf(),
        };
        ca.self_check(check_host)?;
        Ok(ca)
    }

    /// The CA certificate (DER).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Mints a leaf for `host` and verifies it as a client would, so that a CA whose leaves
    /// clients would reject (e.g. a subject rcgen cannot copy byte for byte) fails at start,
    /// not per request. With no host (a CA constrained to IP ranges only), only the mint runs.
    fn self_check(&self, host: Option<String>) -> Result<(), TlsError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let Some(host) = host else {
            mint_leaf(
                self,
                &key,
                &Host::Name(SELF_CHECK_HOST.into()),
                SystemTime::now(),
            )?;
            return Ok(());
        };
        let der = mint_leaf(self, &key, &Host::Name(host.clone()), SystemTime::now())?;
        let mut roots = RootCertStore::empty();
        roots.add(self.cert_der.clone())?;
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider())
                .build()
                .map_err(|e| invalid(&self.cert_path, format!("unusable as a root ({e})")))?;
        let name =
            ServerName::try_from(host).map_err(|e| invalid(&self.cert_path, e.to_string()))?;
        verifier
            .verify_server_cert(&der, &[], &name, &[], UnixTime::now())
            .map_err(|e| {
                invalid(
                    &self.cert_path,
                    format!("a leaf signed by this CA does not verify against it ({e})"),
                )
            })?;
        Ok(())
    }
}

/// The name the start-up self-check mints a leaf for.
const SELF_CHECK_HOST: &str = "tollgate-self-check.invalid";

/// Checks what webpki does not check for a trust anchor but clients do: CA flag, keyCertSign,
/// validity; and what rcgen cannot copy (multi-valued RDNs). Returns the host name the
/// self-check may use: one inside the first permitted DNS subtree of a name-constrained CA,
/// none when the constraints permit IP ranges only.
fn check_ca_certificate(der: &CertificateDer<'_>, path: &Path) -> Result<Option<String>, TlsError> {
    let (_, x509) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| invalid(path, format!("not an X.509 certificate ({e})")))?;
    match x509.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {}
        Ok(_) => {
            return Err(invalid(
                path,
                "not a CA certificate (basicConstraints CA:FALSE or absent)",
            ))
        }
        Err(e) => return Err(invalid(path, format!("bad basicConstraints ({e})"))),
    }
    match x509.key_usage() {
        Ok(Some(ku)) if !ku.value.key_cert_sign() => {
            return Err(invalid(path, "keyUsage does not allow keyCertSign"))
        }
        Ok(_) => {}
        Err(e) => return Err(invalid(path, format!("bad keyUsage ({e})"))),
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if x509.validity().not_after.timestamp() <= now {
        return Err(invalid(path, "the CA certificate has expired"));
    }
    if x509.subject().iter().any(|rdn| rdn.iter().count() != 1) {
        return Err(invalid(
            path,
            "subjects with multi-valued or empty RDNs are not supported",
        ));
    }
    use x509_parser::extensions::GeneralName;
    match x509.name_constraints() {
        Ok(Some(nc)) => {
            let permitted = nc.value.permitted_subtrees.as_deref().unwrap_or_default();
            let dns = permitted.iter().find_map(|t| match t.base {
                GeneralName::DNSName(d) => Some(d.trim_start_matches('.')),
                _ => None,
            });
            Ok(match (dns, permitted.is_empty()) {
                (Some(d), _) => Some(format!("tollgate-self-check.{d}")),
                (None, true) => Some(SELF_CHECK_HOST.to_string()),
                (None, false) => None,
            })
        }
        Ok(None) => Ok(Some(SELF_CHECK_HOST.to_string())),
        Err(e) => Err(invalid(path, format!("bad nameConstraints ({e})"))),
    }
}

/// The subjectPublicKey bits of a certificate.
fn cert_public_key(der: &CertificateDer<'_>, path: &Path) -> Result<Vec<u8>, TlsError> {
    let (_, x509) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| invalid(path, format!("not an X.509 certificate ({e})")))?;
    Ok(x509.public_key().subject_public_key.data.to_vec())
}

fn warn_if_key_is_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "the interception CA key is readable by other users; chmod 600 it"
            );
        }
    }
}

/// A certificate for `host` signed by `ca`, carrying `key`'s public key.
fn mint_leaf(
    ca: &Ca,
    key: &KeyPair,
    host: &Host,
    now: SystemTime,
) -> Result<CertificateDer<'static>, TlsError> {
    sign_server_cert(ca, key, std::slice::from_ref(host), LEAF_VALIDITY, now)
}

/// A server certificate for `hosts` (DNS or IP SANs; the first is also the common name)
/// signed by `ca`, carrying `key`'s public key, valid from `now` (backdated a little) for
/// `validity`. Intercepted hosts' leaves and the relay listener's certificate both come
/// from here.
fn sign_server_cert(
    ca: &Ca,
    key: &KeyPair,
    hosts: &[Host],
    validity: Duration,
    now: SystemTime,
) -> Result<CertificateDer<'static>, TlsError> {
    let mut params = CertificateParams::default();
    for host in hosts {
        params.subject_alt_names.push(match host {
            Host::Name(n) => SanType::DnsName(n.clone().try_into()?),
            Host::Ip(ip) => SanType::IpAddress(*ip),
        });
    }
    let mut dn = DistinguishedName::new();
    if let Some(cn) = hosts.first().map(|h| match h {
        Host::Name(n) => n.clone(),
        Host::Ip(ip) => ip.to_string(),
    }) {
        if cn.len() <= MAX_COMMON_NAME {
            dn.push(DnType::CommonName, cn);
        }
    }
    dn.push(DnType::OrganizationName, "tollgate interception");
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    params.not_before = time::OffsetDateTime::from(now - LEAF_BACKDATE);
    params.not_after = time::OffsetDateTime::from(now + validity);
    let cert = params.signed_by(key, &ca.issuer)?;
    Ok(cert.der().clone())
}

impl Ca {
    /// A server certificate for `hosts` valid for `validity`, with a fresh P-256 key:
    /// (certificate, PKCS#8 key DER). Used for the relay listener.
    pub fn issue_server_cert(
        &self,
        hosts: &[Host],
        validity: Duration,
    ) -> Result<(CertificateDer<'static>, Vec<u8>), TlsError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert = sign_server_cert(self, &key, hosts, validity, SystemTime::now())?;
        Ok((cert, key.serialize_der()))
    }
}

/// 16 random bytes, positive. rcgen's default serial is derived from the public key, which
/// every leaf shares here; serials must differ per certificate (RFC 5280 §4.1.2.2).
fn random_serial() -> Result<SerialNumber, TlsError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| TlsError::Random)?;
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

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
    /// The signer.
    ca: Arc<Ca>,
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
}

impl fmt::Debug for LeafCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeafCache")
            .field("ca", &self.ca)
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
            ca,
            leaf_key,
            signing_key,
            sessions: rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_SIZE),
            provider,
            slots: Mutex::new(lru::LruCache::new(capacity)),
            mints: AtomicU64::new(0),
        })
    }

    /// The CA leaves are signed by.
    pub fn ca(&self) -> &Arc<Ca> {
        &self.ca
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
        Ok(self.leaf_at(host, SystemTime::now()).await?.config.clone())
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
        let cert = mint_leaf(&self.ca, &self.leaf_key, host, now)?;
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

/// The rustls client configuration for upstream TLS: the webpki roots plus every certificate in
/// `extra_ca_file` (PEM). No ALPN: the pooled clients' hyper-rustls connectors set it from the
/// protocols they enable (and refuse a configuration that already has some); provider calls
/// set `http/1.1` themselves.
pub fn upstream_client_config(extra_ca_file: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra_ca_file {
        let text = std::fs::read(path).map_err(|source| TlsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&text) {
            let cert = cert.map_err(|e| invalid(path, format!("bad PEM ({e})")))?;
            roots
                .add(cert)
                .map_err(|e| invalid(path, format!("unusable CA certificate ({e})")))?;
            added += 1;
        }
        if added == 0 {
            return Err(invalid(path, "no PEM certificate found"));
        }
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated_ca() -> Arc<Ca> {
        let (cert, key) = generate_ca().unwrap();
        let ca = Ca::from_pem(&cert, Path::new("ca.pem"), &key, Path::new("ca.key"));
        Arc::new(ca.unwrap())
    }

    fn parse(der: &[u8]) -> x509_parser::certificate::X509Certificate<'_> {
        x509_parser::parse_x509_certificate(der).unwrap().1
    }

    #[test]
    fn generated_ca_is_ecdsa_p256_with_a_private_key() {
        // The key file's mode is the data directory's business (datadir's tests).
        let (pem, key_pem) = generate_ca().unwrap();
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let cert = parse(&der);
        let spki = cert.public_key();
        assert_eq!(
            spki.algorithm.algorithm,
            x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
        );
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .unwrap();
        assert_eq!(curve, x509_parser::oid_registry::OID_EC_P256);
        assert!(cert.basic_constraints().unwrap().unwrap().value.ca);
        let key = KeyPair::from_pem(&key_pem).unwrap();
        assert_eq!(key.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);
    }

    #[tokio::test]
    async fn leaves_have_the_host_as_san_short_validity_and_are_cached() {
        let ca = generated_ca();
        let cache = LeafCache::new(ca.clone(), 10).unwrap();
        let name = Host::Name("api.example.com".into());
        let now = SystemTime::now();
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
        let t0 = SystemTime::now();
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
        let now = SystemTime::now();
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

    /// A CA made by the test, optionally broken, written to files.
    fn write_ca(dir: &Path, ca: bool, key_usages: Vec<KeyUsagePurpose>) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "Operator CA");
        params.distinguished_name.push(
            DnType::CountryName,
            rcgen::DnValue::PrintableString("DE".try_into().unwrap()),
        );
        if ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        params.key_usages = key_usages;
        let cert = params.self_signed(&key).unwrap();
        let (c, k) = (dir.join("ca.pem"), dir.join("ca.key"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn operator_ca_is_accepted_and_bad_ones_are_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        std::fs::create_dir(&good).unwrap();
        let (c, k) = write_ca(&good, true, vec![KeyUsagePurpose::KeyCertSign]);
        let ca = Ca::load(&c, &k).unwrap();
        assert_eq!(ca.cert_path, c);

        let not_ca = dir.path().join("not-ca");
        std::fs::create_dir(&not_ca).unwrap();
        let (c2, k2) = write_ca(&not_ca, false, vec![]);
        let err = Ca::load(&c2, &k2).unwrap_err().to_string();
        assert!(err.contains("not a CA certificate"), "{err}");

        let no_sign = dir.path().join("no-sign");
        std::fs::create_dir(&no_sign).unwrap();
        let (c3, k3) = write_ca(&no_sign, true, vec![KeyUsagePurpose::DigitalSignature]);
        let err = Ca::load(&c3, &k3).unwrap_err().to_string();
        assert!(err.contains("keyCertSign"), "{err}");

        // Key of another CA.
        let err = Ca::load(&c, &k3).unwrap_err().to_string();
        assert!(err.contains("does not belong"), "{err}");

        let sec1 = dir.path().join("sec1.key");
        std::fs::write(
            &sec1,
            "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = Ca::load(&c, &sec1).unwrap_err().to_string();
        assert!(err.contains("PKCS#8"), "{err}");

        let err = Ca::load(&dir.path().join("missing.pem"), &k)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.pem"), "{err}");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "hello").unwrap();
        let err = Ca::load(&garbage, &k).unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
    }

    #[tokio::test]
    async fn name_constrained_operator_ca_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "Constrained CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params.name_constraints = Some(rcgen::NameConstraints {
            permitted_subtrees: vec![rcgen::GeneralSubtree::DnsName("example.com".into())],
            excluded_subtrees: vec![],
        });
        let cert = params.self_signed(&key).unwrap();
        let (c, k) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        let ca = Arc::new(Ca::load(&c, &k).unwrap());
        let cache = LeafCache::new(ca, 4).unwrap();
        cache
            .server_config(&Host::Name("api.example.com".into()))
            .await
            .unwrap();
    }

    #[test]
    fn upstream_config_adds_the_extra_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _) = write_ca(dir.path(), true, vec![KeyUsagePurpose::KeyCertSign]);
        let base = upstream_client_config(None).unwrap();
        assert!(
            base.alpn_protocols.is_empty(),
            "ALPN is the connectors' to set"
        );
        upstream_client_config(Some(&c)).unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let err = upstream_client_config(Some(&empty))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
    }
}
