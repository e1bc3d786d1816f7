//! The interception CA: generated ([`generate_ca`]) or supplied by the operator, loaded and
//! checked once at start ([`Ca::load`]); and the server certificates it signs (intercepted
//! hosts' leaves, the relay listener's certificate).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::RootCertStore;

use super::{invalid, provider, TlsError, LEAF_BACKDATE, LEAF_VALIDITY, MAX_COMMON_NAME};
use crate::clock::Clock;
use crate::policy::Host;

/// Generates a self-signed ECDSA P-256 CA. Returns (certificate PEM, private key PEM).
pub fn generate_ca() -> Result<(String, String), TlsError> {
    generate_ca_named("tollgate interception CA")
}

/// [`generate_ca`] with the common name `cn`: a rotation gives each CA its own name, so that
/// people and clients tell the CAs of an overlap apart (and no two roots share a subject).
pub fn generate_ca_named(cn: &str) -> Result<(String, String), TlsError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "tollgate");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::from(Clock::system().now_time()?);
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
    /// Validity of the certificates it signs starts now by this clock.
    clock: Clock,
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
        let clock = Clock::system();
        let check_host = check_ca_certificate(&cert_der, cert_path, clock.now()?)?;
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
            clock,
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
        let now = self.clock.now_time()?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let Some(host) = host else {
            mint_leaf(self, &key, &Host::Name(SELF_CHECK_HOST.into()), now)?;
            return Ok(());
        };
        let der = mint_leaf(self, &key, &Host::Name(host.clone()), now)?;
        let mut roots = RootCertStore::empty();
        roots.add(self.cert_der.clone())?;
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider())
                .build()
                .map_err(|e| invalid(&self.cert_path, format!("unusable as a root ({e})")))?;
        let name =
            ServerName::try_from(host).map_err(|e| invalid(&self.cert_path, e.to_string()))?;
        verifier
            .verify_server_cert(&der, &[], &name, &[], unix_time(now))
            .map_err(|e| {
                invalid(
                    &self.cert_path,
                    format!("a leaf signed by this CA does not verify against it ({e})"),
                )
            })?;
        Ok(())
    }
}

/// `now` in rustls' form, for verifying as a client would at that time.
fn unix_time(now: SystemTime) -> UnixTime {
    UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default())
}

/// The name the start-up self-check mints a leaf for.
const SELF_CHECK_HOST: &str = "tollgate-self-check.invalid";

/// Checks what webpki does not check for a trust anchor but clients do: CA flag, keyCertSign,
/// validity; and what rcgen cannot copy (multi-valued RDNs). Returns the host name the
/// self-check may use: one inside the first permitted DNS subtree of a name-constrained CA,
/// none when the constraints permit IP ranges only.
fn check_ca_certificate(
    der: &CertificateDer<'_>,
    path: &Path,
    now: u64,
) -> Result<Option<String>, TlsError> {
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
    if x509.validity().not_after.timestamp() <= i64::try_from(now).unwrap_or(i64::MAX) {
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
pub(super) fn mint_leaf(
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
        let cert = sign_server_cert(self, &key, hosts, validity, self.clock.now_time()?)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::tls::{upstream_client_config, LeafCache};

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
