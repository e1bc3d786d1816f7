//! The interception CA's ring (issue 18): the CA that signs the leaves of intercepted hosts
//! rotates through the same [`Ring`] as the identity and session keys, with the same
//! `ring.json` and the same rules, in the CA's own directory `data/ca/`:
//!
//! - the original entry is the CA generated at first start, `ca/ca.key` with its certificate
//!   `ca/ca.pem` beside it (the ring's `KIND.key` is `ca/ca.key`, so nothing moves);
//! - each rotation adds `ca/ca/<kid>.key`, one file (mode 0600) holding the new CA's
//!   certificate and its PKCS#8 key, both PEM, and `ca/ca/ring.json` names it;
//! - the id is the first 16 hex characters of the SHA-256 of the certificate (DER), the CA's
//!   fingerprint, so it names the same CA in every export.
//!
//! A CA is a certificate and key pair, not a secret string: it fits the ring through
//! [`RingKey::generate`] (rcgen makes the pair) and a key file that carries both halves.
//!
//! **Overlap.** Clients must trust a CA before it signs the leaves they see, so a new CA is
//! *pending* for [`CA_SWITCH_AFTER`] (or what the operator chose) after the rotation: the old
//! CA keeps signing, and `tollgate ca export --all` prints both so that clients can be given
//! both. Then the new CA signs and the old one stays *trusted* (exported) until it is retired
//! by hand: no CA stops being exported by itself, since agents and clients may pin it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::Serialize;

use super::ring::{KeyState, Ring, RingError, RingKey};
use crate::tls::{generate_ca_named, Ca, LeafCache, TlsError};

/// How long after a rotation the new CA starts signing, by default (seconds): a day, for the
/// new CA to reach every client's trust store (Teleport's rotation grace period is 30 hours).
/// `tollgate keys rotate ca --switch-after` chooses another (0: at once, for a leaked CA key).
pub const CA_SWITCH_AFTER: u64 = 24 * 3600;

/// One interception CA of the ring.
#[derive(Clone)]
pub struct CaKey {
    /// The CA's fingerprint id.
    kid: String,
    /// The certificate as exported (PEM).
    cert_pem: String,
    /// The private key (PKCS#8 PEM), to build the signer when none was built at load.
    key_pem: String,
    /// The checked signer, built when the key file was loaded.
    ca: Option<Arc<Ca>>,
}

impl std::fmt::Debug for CaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl CaKey {
    /// The CA's certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The signer for leaves: the one checked at load, or checked now.
    pub fn ca(&self) -> Result<Arc<Ca>, TlsError> {
        match &self.ca {
            Some(ca) => Ok(ca.clone()),
            None => Ok(Arc::new(Ca::from_pem(
                &self.cert_pem,
                Path::new(&self.kid),
                &self.key_pem,
                Path::new(&self.kid),
            )?)),
        }
    }

    /// Splits a key file's text into the certificate and the key; unchecked.
    fn parse(text: &str, cert_text: Option<&str>) -> CaKey {
        let cert_pem = pem_blocks(cert_text.unwrap_or(text), "CERTIFICATE");
        let key_pem = pem_blocks(text, "PRIVATE KEY");
        CaKey {
            kid: fingerprint(&cert_pem),
            cert_pem,
            key_pem,
            ca: None,
        }
    }
}

/// The `-----BEGIN {label}-----` … `-----END {label}-----` blocks of `text`, with their
/// lines (the PEM of that label, nothing else).
fn pem_blocks(text: &str, label: &str) -> String {
    let (begin, end) = (
        format!("-----BEGIN {label}-----"),
        format!("-----END {label}-----"),
    );
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line.trim() == begin {
            inside = true;
        }
        if inside {
            out.push_str(line.trim_end());
            out.push('\n');
        }
        if line.trim() == end {
            inside = false;
        }
    }
    out
}

/// The first 16 hex characters of the SHA-256 of the first certificate in `pem` (DER); of
/// the text itself when it holds none (such a key never loads: [`Ca::from_pem`] refuses it).
fn fingerprint(pem: &str) -> String {
    let der = CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|d| d.as_ref().to_vec())
        .unwrap_or_else(|_| pem.as_bytes().to_vec());
    let digest = ring::digest::digest(&ring::digest::SHA256, &der);
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl RingKey for CaKey {
    const KIND: &'static str = "ca";
    /// A superseded CA is exported until it is retired by hand.
    const VERIFIES_FOR: u64 = u64::MAX;

    /// `ca/ca/<kid>.key` holds the certificate and the key; the original `ca/ca.key` holds
    /// the key, and its certificate is `ca/ca.pem` beside it. The pair is checked as at start
    /// ([`Ca::from_pem`]).
    fn load(path: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        let cert_text = if text.contains("-----BEGIN CERTIFICATE-----") {
            None
        } else {
            Some(std::fs::read_to_string(path.with_extension("pem"))?)
        };
        let mut key = CaKey::parse(&text, cert_text.as_deref());
        let ca = Ca::from_pem(&key.cert_pem, path, &key.key_pem, path)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        key.ca = Some(Arc::new(ca));
        Ok(key)
    }

    /// Unchecked: the ring never builds a CA from text but through [`CaKey::generate`]; the
    /// signer is checked when first asked for ([`CaKey::ca`]).
    fn from_text(text: &str) -> Self {
        CaKey::parse(text, None)
    }

    fn kid(&self) -> String {
        self.kid.clone()
    }

    /// A new ECDSA P-256 CA (as at first start), named apart from the others.
    fn generate() -> std::io::Result<(String, Self)> {
        let mut tag = [0u8; 4];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut tag)
            .map_err(|_| std::io::Error::other("system random generator failed"))?;
        let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        let (cert_pem, key_pem) = generate_ca_named(&format!("tollgate interception CA {tag}"))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let text = format!("{cert_pem}{key_pem}");
        let mut key = CaKey::parse(&text, None);
        let ca = key.ca().map_err(|e| std::io::Error::other(e.to_string()))?;
        key.ca = Some(ca);
        Ok((text, key))
    }
}

/// The interception CA ring of a data directory.
pub type CaRing = Ring<CaKey>;

/// The directory of the CA ring: `DATA/ca` (its `ca.key` is the original entry).
pub fn ca_dir(data: &Path) -> PathBuf {
    data.join("ca")
}

/// The CA ring in `dir`, or none when the directory holds no CA (a data directory whose `ca/`
/// was removed because the operator supplies the CA).
pub fn load_if_present(dir: &Path) -> Result<Option<CaRing>, RingError> {
    if !dir.join("ca.key").exists() {
        return Ok(None);
    }
    CaRing::load(dir).map(Some)
}

/// Where a CA is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CaState {
    /// Signs the leaves now.
    Signing,
    /// Added by a rotation, signs from its switch time: clients should trust it already.
    Pending,
    /// Signed before; still exported (clients and agents may pin it) until retired.
    Trusted,
    /// Retired: no longer exported.
    Retired,
}

/// One CA as `keys list` and `ca export --all` show it (no key material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaInfo {
    /// The CA's id (fingerprint).
    pub kid: String,
    /// Where it is in its life.
    pub state: CaState,
    /// Whether it is the CA generated at first start (`ca/ca.pem`).
    pub original: bool,
    /// Unix seconds it was added (absent for the original).
    pub created_at: Option<u64>,
    /// Unix seconds a rotation superseded it.
    pub superseded_at: Option<u64>,
    /// Unix seconds it was retired.
    pub retired_at: Option<u64>,
    /// Unix seconds from which it signs, while pending.
    pub signs_at: Option<u64>,
}

/// Every CA of `ring` with its state at `now`: the original first, then by creation.
pub fn list(ring: &CaRing, now: u64) -> Vec<CaInfo> {
    let signing = ring.signing(now).kid();
    let switch = ring.switches_at(now);
    ring.list(now)
        .into_iter()
        .map(|k| {
            let state = if k.state == KeyState::Retired {
                CaState::Retired
            } else if k.kid == signing {
                CaState::Signing
            } else if k.state == KeyState::Active {
                CaState::Pending
            } else {
                CaState::Trusted
            };
            CaInfo {
                signs_at: switch.filter(|_| state == CaState::Pending),
                kid: k.kid,
                state,
                original: k.original,
                created_at: k.created_at,
                superseded_at: k.superseded_at,
                retired_at: k.retired_at,
            }
        })
        .collect()
}

/// The certificates of every CA not retired, in [`list`]'s order, each after a comment line
/// naming its id and state (PEM readers skip text outside the blocks): what clients trust.
pub fn export_all(ring: &CaRing, now: u64) -> String {
    let (keys, _) = ring.verifying(now);
    let mut out = String::new();
    for info in list(ring, now) {
        if info.state == CaState::Retired {
            continue;
        }
        let Some(key) = keys.iter().find(|k| k.kid == info.kid) else {
            continue;
        };
        let state = serde_json::to_value(info.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        out.push_str(&format!(
            "# tollgate interception CA kid={} state={state}\n",
            info.kid
        ));
        out.push_str(&key.cert_pem);
    }
    out
}

/// The CA the relay listener's certificate is minted from at start: the oldest CA not
/// retired, so that agents that pinned it (`--ca-file`) keep connecting across a rotation
/// until it is retired.
pub fn relay_ca(ring: &CaRing, now: u64) -> Result<Arc<Ca>, TlsError> {
    let (keys, _) = ring.verifying(now);
    let oldest = list(ring, now)
        .into_iter()
        .filter(|i| i.state != CaState::Retired)
        .find_map(|i| keys.iter().find(|k| k.kid == i.kid).cloned());
    oldest.unwrap_or_else(|| ring.signing(now).clone()).ca()
}

/// The CAs `serve` starts with from the ring in `DATA/ca`: the one that signs leaves now,
/// and the one the relay's certificate is minted from ([`relay_ca`]).
pub fn load_for_serve(data: &Path) -> Result<(Arc<Ca>, Arc<Ca>), TlsError> {
    let dir = ca_dir(data);
    let ring = CaRing::load(&dir).map_err(|e| TlsError::Invalid {
        path: dir.clone(),
        reason: e.to_string(),
    })?;
    let now = crate::clock::Clock::system().now()?;
    Ok((ring.signing(now).ca()?, relay_ca(&ring, now)?))
}

/// Makes the leaf cache sign with `ring`'s signing CA (flushing it when that changed): what a
/// server does with every version of the ring, its own rotations and the watched file's.
pub fn apply(leaves: &LeafCache, ring: &CaRing) {
    let now = crate::clock::Clock::system().now().unwrap_or(0);
    let key = ring.signing(now);
    match key.ca() {
        Ok(ca) => {
            if leaves.set_ca(ca) {
                tracing::warn!(kid = %key.kid, "interception CA switched; leaf cache flushed");
            }
        }
        Err(e) => {
            tracing::error!(kid = %key.kid, error = %e, "interception CA unusable; keeping the last")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn data() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        std::fs::create_dir_all(&ca).unwrap();
        let (cert, key) = crate::tls::generate_ca().unwrap();
        std::fs::write(ca.join("ca.pem"), cert).unwrap();
        std::fs::write(ca.join("ca.key"), key).unwrap();
        dir
    }

    fn states(ring: &CaRing, now: u64) -> Vec<CaState> {
        list(ring, now).into_iter().map(|i| i.state).collect()
    }

    #[test]
    fn the_generated_ca_is_the_original_a_rotation_is_pending_then_signs_then_retires() {
        let dir = data();
        let cadir = ca_dir(dir.path());
        let ring = CaRing::load(&cadir).unwrap();
        let original = ring.active_kid().to_owned();
        assert_eq!(original.len(), 16);
        let pem = std::fs::read_to_string(cadir.join("ca.pem")).unwrap();
        assert_eq!(ring.signing(NOW).cert_pem(), pem);
        assert_eq!(states(&ring, NOW), [CaState::Signing]);

        let mut ring = ring;
        let second = ring.rotate_after(NOW, 100).unwrap();
        let ring = CaRing::load(&cadir).unwrap();
        assert_eq!(states(&ring, NOW), [CaState::Signing, CaState::Pending]);
        assert_eq!(list(&ring, NOW)[1].signs_at, Some(NOW + 100));
        assert_eq!(ring.signing(NOW + 99).kid(), original);
        assert_eq!(ring.signing(NOW + 100).kid(), second);
        assert_eq!(
            states(&ring, NOW + 100),
            [CaState::Trusted, CaState::Signing]
        );
        // Both exported during the overlap and after the switch, each named.
        let all = export_all(&ring, NOW + 200);
        assert!(
            all.contains(&format!("kid={original} state=trusted")),
            "{all}"
        );
        assert!(
            all.contains(&format!("kid={second} state=signing")),
            "{all}"
        );
        assert_eq!(CertificateDer::pem_slice_iter(all.as_bytes()).count(), 2);
        // The new CA's file holds both halves, mode 0600, and is a working CA.
        let file = cadir.join(format!("ca/{second}.key"));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let signer = ring.signing(NOW + 100).ca().unwrap();
        assert!(x509_parser::parse_x509_certificate(signer.cert_der())
            .unwrap()
            .1
            .subject()
            .to_string()
            .contains("tollgate interception CA "));
        // The relay keeps the oldest CA not retired.
        let relay = relay_ca(&ring, NOW + 200).unwrap();
        assert_eq!(
            relay.cert_der(),
            ring.verifying(NOW).0[0].ca().unwrap().cert_der()
        );

        // The signing CA cannot be retired; the original can, after the switch.
        let mut ring = ring;
        assert!(matches!(
            ring.retire(&original, NOW + 50),
            Err(RingError::Active(_))
        ));
        assert!(matches!(
            ring.retire(&second, NOW + 200),
            Err(RingError::Active(_))
        ));
        ring.retire(&original, NOW + 200).unwrap();
        let ring = CaRing::load(&cadir).unwrap();
        assert_eq!(
            states(&ring, NOW + 300),
            [CaState::Retired, CaState::Signing]
        );
        let all = export_all(&ring, NOW + 300);
        assert_eq!(CertificateDer::pem_slice_iter(all.as_bytes()).count(), 1);
        assert!(all.contains(&second));
        assert!(cadir.join("ca.pem").exists(), "the original files stay");
        let relay = relay_ca(&ring, NOW + 300).unwrap();
        assert_eq!(
            relay.cert_der(),
            ring.signing(NOW + 300).ca().unwrap().cert_der()
        );
    }

    #[test]
    fn a_broken_ca_file_does_not_load() {
        let dir = data();
        let cadir = ca_dir(dir.path());
        let mut ring = CaRing::load(&cadir).unwrap();
        let second = ring.rotate_after(NOW, 0).unwrap();
        let file = cadir.join(format!("ca/{second}.key"));
        let text = std::fs::read_to_string(&file).unwrap();
        let cert_only = pem_blocks(&text, "CERTIFICATE");
        std::fs::write(&file, cert_only).unwrap();
        let err = CaRing::load(&cadir).unwrap_err().to_string();
        assert!(err.contains(&second), "{err}");
    }
}
