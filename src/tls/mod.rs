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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

mod ca;
mod leaf;

pub use ca::{generate_ca, generate_ca_named, Ca};
pub use leaf::{Leaf, LeafCache};

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
    /// The host clock is unusable, so no validity period can be set.
    #[error(transparent)]
    Clock(#[from] crate::clock::ClockError),
}

fn invalid(path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// A pooled HTTP/1.1 client over TCP or TLS, for tollgate's own calls that are not egress:
/// the admin API from the CLI, the OTLP exporter, the events webhook.
pub type Http1Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

/// An [`Http1Client`] verifying servers with `tls` (e.g. [`upstream_client_config`]; without
/// ALPN, which the connector sets).
pub fn http1_client(tls: ClientConfig) -> Http1Client {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector)
}

/// The crypto provider used everywhere (DESIGN: one crypto library, ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
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
