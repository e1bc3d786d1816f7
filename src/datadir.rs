//! The data directory: created on first start (mode 0700) with the identity signing key, the
//! store encryption key, the session key (signs the pages' sign-in cookies) and the
//! interception CA. Later starts reuse what is there; a missing
//! piece is generated, an unreadable one is an error (never silently replaced, since replacing
//! a key would invalidate every token or sealed record).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};

/// Errors preparing the data directory.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// A file or directory could not be created or read.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The CA could not be generated.
    #[error("generating the interception CA: {0}")]
    Ca(String),
    /// The system random generator failed.
    #[error("system random generator failed")]
    Random,
}

/// Paths inside a prepared data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    /// The directory itself.
    pub root: PathBuf,
    /// HS256 key for caller tokens and agent credentials.
    pub identity_key: PathBuf,
    /// AEAD key for sealed store records.
    pub store_key: PathBuf,
    /// HMAC key for the pages' session cookies (`web::login::session`).
    pub session_key: PathBuf,
    /// Interception CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// Interception CA private key (PEM, 0600).
    pub ca_key: PathBuf,
    /// What this call created (for the first-start banner).
    pub created: Vec<PathBuf>,
}

impl DataDir {
    /// Paths of an existing (or future) data directory, without touching the disk.
    pub fn at(root: &Path) -> DataDir {
        DataDir {
            root: root.to_path_buf(),
            identity_key: root.join("keys").join("identity.key"),
            store_key: root.join("keys").join("store.key"),
            session_key: root.join("keys").join("session.key"),
            ca_cert: root.join("ca").join("ca.pem"),
            ca_key: root.join("ca").join("ca.key"),
            created: Vec::new(),
        }
    }

    /// Creates whatever is missing: directories (0700), keys (0600), the CA.
    pub fn prepare(root: &Path) -> Result<DataDir, DataDirError> {
        let mut d = DataDir::at(root);
        for dir in [root.to_path_buf(), root.join("keys"), root.join("ca")] {
            if !dir.exists() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&dir)
                    .map_err(|source| DataDirError::Io {
                        path: dir.clone(),
                        source,
                    })?;
                // The umask may have masked bits of the mode; set it exactly.
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(|source| {
                    DataDirError::Io {
                        path: dir.clone(),
                        source,
                    }
                })?;
            }
        }
        for key in [
            d.identity_key.clone(),
            d.store_key.clone(),
            d.session_key.clone(),
        ] {
            if !key.exists() {
                write_secret(&key, random_key_text()?.as_bytes())?;
                d.created.push(key);
            }
        }
        if !d.ca_cert.exists() || !d.ca_key.exists() {
            let (cert, key) =
                crate::tls::generate_ca().map_err(|e| DataDirError::Ca(e.to_string()))?;
            write_secret(&d.ca_key, key.as_bytes())?;
            write_file(&d.ca_cert, cert.as_bytes(), 0o644)?;
            d.created.push(d.ca_cert.clone());
        }
        Ok(d)
    }
}

/// 32 random bytes, hex-encoded: the text stored in a key file.
pub fn random_key_text() -> Result<String, DataDirError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| DataDirError::Random)?;
    let mut s: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    s.push('\n');
    Ok(s)
}

/// Reads a key file's text, trimmed of surrounding whitespace (the keys themselves are read
/// by their owners: `identity::load_key_file`, the store's key loader).
#[cfg(test)]
fn read_key_text(path: &Path) -> Result<String, DataDirError> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| DataDirError::Io {
            path: path.to_path_buf(),
            source,
        })
}

fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), DataDirError> {
    write_file(path, bytes, 0o600)
}

/// Writes a new file with `mode` (refusing to overwrite) and syncs it.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), DataDirError> {
    let io = |source| DataDirError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_creates_keys_and_ca_with_safe_modes_and_reuses_them() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("data");
        let d = DataDir::prepare(&root).unwrap();
        assert_eq!(d.created.len(), 4);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&d.identity_key), 0o600);
        assert_eq!(mode(&d.store_key), 0o600);
        assert_eq!(mode(&d.session_key), 0o600);
        assert_eq!(mode(&d.ca_key), 0o600);
        let key = read_key_text(&d.identity_key).unwrap();
        assert_eq!(key.len(), 64);
        assert!(fs::read_to_string(&d.ca_cert)
            .unwrap()
            .contains("BEGIN CERTIFICATE"));

        let again = DataDir::prepare(&root).unwrap();
        assert!(again.created.is_empty());
        assert_eq!(read_key_text(&again.identity_key).unwrap(), key);
    }
}
