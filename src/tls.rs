//! Certificates: the interception CA (generated on first start), the upstream client TLS
//! configuration, and, later, per-host leaves.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

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

/// Why the upstream TLS client configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    /// The `--upstream-ca-file` could not be read or holds no usable certificate.
    #[error("upstream CA file {path}: {detail}")]
    CaFile {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        detail: String,
    },
}

/// The rustls client configuration for connections tollgate originates itself (TLS
/// origination of plain-http requests, token and revocation endpoint calls): the Mozilla roots
/// shipped in `webpki-roots`, plus every certificate in `ca_file` (PEM) when given, so private
/// providers and test servers can be trusted without touching the host's trust store. Only
/// the ring provider is used.
pub fn upstream_client_config(
    ca_file: Option<&std::path::Path>,
) -> Result<std::sync::Arc<rustls::ClientConfig>, UpstreamTlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let err = |detail: String| UpstreamTlsError::CaFile {
            path: path.to_path_buf(),
            detail,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| err(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(e.to_string()))?;
        if certs.is_empty() {
            return Err(err("no PEM certificate in the file".into()));
        }
        let (added, _ignored) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(err("no certificate in the file could be parsed".into()));
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamTlsError::CaFile {
            path: ca_file.map(|p| p.to_path_buf()).unwrap_or_default(),
            detail: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}
