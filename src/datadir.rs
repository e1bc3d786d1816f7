//! The data directory: created on first start (mode 0700) with the identity signing key, the
//! store encryption key, the session key (signs the pages' sign-in cookies) and the
//! interception CA. Later starts reuse what is there; a missing
//! piece is generated, an unreadable one is an error (never silently replaced, since replacing
//! a key would invalidate every token or sealed record).
//!
//! Everything in it is private to the user tollgate runs as: at every start the tree is
//! walked and every directory set to 0700 and every file to 0600 (the store's own files
//! included, which sled would create 0755/0644), each change logged; and the process umask
//! becomes 0077, so what sled writes later (snapshots, blobs) is born private.

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

    /// Creates whatever is missing: directories (0700), keys (0600), the CA; then makes every
    /// path under the directory private (see the module docs) and sets the umask to 0077.
    pub fn prepare(root: &Path) -> Result<DataDir, DataDirError> {
        restrict_umask();
        let mut d = DataDir::at(root);
        for dir in [
            root.to_path_buf(),
            root.join("keys"),
            root.join("ca"),
            root.join(STORE_DIR),
        ] {
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
            // Public, but inside a private directory: 0600 like the rest (`ca export` prints it).
            write_secret(&d.ca_cert, cert.as_bytes())?;
            d.created.push(d.ca_cert.clone());
        }
        for fixed in make_private(root)? {
            tracing::warn!(
                path = %fixed.path.display(),
                from = format_args!("{:o}", fixed.from),
                to = format_args!("{:o}", fixed.to),
                "data directory: tightened permissions (readable by other users)"
            );
        }
        Ok(d)
    }
}

/// The store's directory inside the data directory (sled's files).
pub const STORE_DIR: &str = "store";

/// Mode of every directory under the data directory.
const DIR_MODE: u32 = 0o700;

/// Mode of every file under the data directory.
const FILE_MODE: u32 = 0o600;

/// A path whose mode [`make_private`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixed {
    /// The path.
    pub path: PathBuf,
    /// Its permission bits before.
    pub from: u32,
    /// Its permission bits now.
    pub to: u32,
}

/// Sets every directory under `root` (itself included) to 0700 and every file to 0600, and
/// returns what it changed. Symbolic links below `root` are neither followed nor changed (a
/// link in the data directory is the operator's doing; its target is theirs to protect);
/// `root` itself is followed when it is one. Other special files are left alone. Failing to change a mode is an error: tollgate does not run on a
/// data directory it cannot make private.
pub fn make_private(root: &Path) -> Result<Vec<Fixed>, DataDirError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataDirError::Io { path, source }
    };
    let mut fixed = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = if path == root {
            fs::metadata(&path)
        } else {
            fs::symlink_metadata(&path)
        }
        .map_err(io(&path))?;
        let want = if meta.is_dir() {
            DIR_MODE
        } else if meta.is_file() {
            FILE_MODE
        } else {
            continue;
        };
        let from = meta.permissions().mode() & 0o7777;
        if from != want {
            fs::set_permissions(&path, fs::Permissions::from_mode(want)).map_err(io(&path))?;
            fixed.push(Fixed {
                path: path.clone(),
                from,
                to: want,
            });
        }
        if meta.is_dir() {
            for entry in fs::read_dir(&path).map_err(io(&path))? {
                stack.push(entry.map_err(io(&path))?.path());
            }
        }
    }
    Ok(fixed)
}

/// Sets the process umask to 0077: files and directories created from now on (by sled, by
/// key rotation) are private to the user tollgate runs as.
pub fn restrict_umask() {
    // SAFETY: umask(2) only swaps the process's file mode creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
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

    #[test]
    fn make_private_tightens_every_file_and_directory_and_reports_it() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("data");
        DataDir::prepare(&root).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let set = |p: &Path, m: u32| fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
        let store = root.join(STORE_DIR);
        assert_eq!(mode(&store), 0o700, "created before sled opens it");
        assert_eq!(make_private(&root).unwrap(), Vec::<Fixed>::new());

        fs::create_dir(store.join("blobs")).unwrap();
        set(&store.join("blobs"), 0o755);
        fs::write(store.join("db"), b"x").unwrap();
        set(&store.join("db"), 0o644);
        set(&root, 0o711);
        let outside = tmp.path().join("outside");
        fs::write(&outside, b"y").unwrap();
        set(&outside, 0o644);
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();

        let mut fixed = make_private(&root).unwrap();
        fixed.sort_by(|a, b| a.path.cmp(&b.path));
        let got: Vec<_> = fixed
            .iter()
            .map(|f| (f.path.clone(), f.from, f.to))
            .collect();
        assert_eq!(
            got,
            vec![
                (root.clone(), 0o711, 0o700),
                (store.join("blobs"), 0o755, 0o700),
                (store.join("db"), 0o644, 0o600),
            ]
        );
        assert_eq!(mode(&outside), 0o644, "a symlink's target is not touched");
        assert_eq!(make_private(&root).unwrap(), Vec::<Fixed>::new());

        // A data directory reached through a link is walked all the same.
        let via = tmp.path().join("via");
        std::os::unix::fs::symlink(&root, &via).unwrap();
        set(&store.join("db"), 0o640);
        let fixed = make_private(&via).unwrap();
        assert_eq!(fixed.len(), 1, "{fixed:?}");
        assert_eq!(mode(&store.join("db")), 0o600);
    }
}
