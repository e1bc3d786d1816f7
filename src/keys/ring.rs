//! A key ring on disk, one per kind of key ([`RingKey`]: the identity key, the session key):
//! the original `keys/KIND.key`, the keys added by rotations in `keys/KIND/<kid>.key`, and
//! `keys/KIND/ring.json`, which names the active (signing) key and records when each key was
//! created, superseded and retired.
//!
//! Without `ring.json` the ring is the original key alone, active: a data directory from
//! before rotation existed reads as it always did. Every write goes to a temporary file in
//! the same directory, is synced, then renamed over the old one, so a reader (a replica's
//! [`super::watch`]) sees the old ring or the new one, never half of either. A rotation writes
//! the new key file before the ring that names it.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::identity::revoked::MAX_TOKEN_TTL;
use crate::identity::{generate_key_text, load_key_file, IdentityKey};

/// A kind of key that rotates through a [`Ring`].
pub trait RingKey: Clone + Send + Sync + 'static {
    /// The kind's name: the key file `keys/KIND.key`, the directory `keys/KIND/`, and what
    /// `tollgate keys rotate KIND` takes.
    const KIND: &'static str;
    /// Seconds a superseded key keeps verifying unless retired earlier: the longest lifetime
    /// of what it signed.
    const VERIFIES_FOR: u64;
    /// Reads a key file.
    fn load(path: &Path) -> std::io::Result<Self>;
    /// The key of a key file's text.
    fn from_text(text: &str) -> Self;
    /// The key's id, derived from it.
    fn kid(&self) -> String;
    /// A new key for a rotation: its key file's text and the key. By default a fresh random
    /// secret ([`generate_key_text`]); a kind whose key is not a secret string (the CA's
    /// certificate and key pair) makes its own.
    fn generate() -> std::io::Result<(String, Self)> {
        let text = generate_key_text();
        let key = Self::from_text(&text);
        Ok((text, key))
    }
}

impl RingKey for IdentityKey {
    const KIND: &'static str = "identity";
    const VERIFIES_FOR: u64 = MAX_TOKEN_TTL.as_secs();
    fn load(path: &Path) -> std::io::Result<Self> {
        load_key_file(path)
    }
    fn from_text(text: &str) -> Self {
        IdentityKey::from_bytes(text.as_bytes())
    }
    fn kid(&self) -> String {
        IdentityKey::kid(self)
    }
}

/// The identity key ring: caller tokens and agent credentials.
pub type IdentityRing = Ring<IdentityKey>;

/// Format version of `ring.json`.
const RING_VERSION: u32 = 1;

/// How long after a rotation the new key starts signing, in seconds: until then it only
/// verifies, so that every replica (which reads the ring every [`super::watch::WATCH_EVERY`])
/// knows it before the first token it signed arrives. The previous key signs meanwhile.
pub const SIGNING_DELAY_SECS: u64 = 3;

/// Why the ring could not be read or changed. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `ring.json` is not a ring this build reads, or names a key file that is missing.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why, for an operator.
        reason: String,
    },
    /// No key has this id.
    #[error("no key has id {0}")]
    Unknown(String),
    /// The active key cannot be retired: rotate first.
    #[error("key {0} signs: rotate before retiring it")]
    Active(String),
    /// The key is retired already.
    #[error("key {0} is retired already")]
    Retired(String),
}

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Signs new tokens and credentials, and verifies.
    Active,
    /// Verifies what it signed, until retired.
    Verifying,
    /// Verifies nothing (retired by hand, or [`RingKey::VERIFIES_FOR`] after it was
    /// superseded).
    Retired,
}

/// One key of the ring, as `keys list` shows it (no key material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// The key's id.
    pub kid: String,
    /// Where it is in its life at the time it was read.
    pub state: KeyState,
    /// Whether it is the original `keys/KIND.key` (which identity tokens without `kid` name).
    pub original: bool,
    /// Unix seconds it was added (absent for the original key).
    pub created_at: Option<u64>,
    /// Unix seconds another key replaced it for signing.
    pub superseded_at: Option<u64>,
    /// Unix seconds it was retired by hand.
    pub retired_at: Option<u64>,
}

/// `ring.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RingFile {
    v: u32,
    /// The signing key's id.
    active: String,
    /// Unix seconds from which `active` signs; before, `previous` does.
    #[serde(default)]
    signs_from: u64,
    /// The key that signed before `active`, until `signs_from`.
    #[serde(default)]
    previous: Option<String>,
    /// Every key but the original one (whose entry is optional: present once it was
    /// superseded or retired).
    keys: Vec<Entry>,
}

/// One key's record in `ring.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    kid: String,
    /// Whether this is `keys/KIND.key` (else `keys/KIND/<kid>.key`).
    #[serde(default)]
    original: bool,
    #[serde(default)]
    created_at: Option<u64>,
    #[serde(default)]
    superseded_at: Option<u64>,
    #[serde(default)]
    retired_at: Option<u64>,
}

/// The ring as read: every key with its record and, unless retired, its secret.
#[derive(Debug, Clone)]
pub struct Ring<K> {
    /// The `keys` directory.
    dir: PathBuf,
    /// The newest key's id, which signs from `signs_from`.
    active: String,
    /// Unix seconds from which `active` signs.
    signs_from: u64,
    /// The key that signs until `signs_from`.
    previous: Option<String>,
    /// The original key's id.
    original: String,
    /// Every key's record, the original's included.
    entries: Vec<Entry>,
    /// The secrets of keys not retired by hand, by id.
    secrets: Vec<(String, K)>,
}

impl<K: RingKey> Ring<K> {
    /// Reads the ring of the data directory whose `keys` directory is `keys_dir`.
    pub fn load(keys_dir: &Path) -> Result<Ring<K>, RingError> {
        let original_path = keys_dir.join(format!("{}.key", K::KIND));
        let original = K::load(&original_path).map_err(|source| RingError::Io {
            path: original_path.clone(),
            source,
        })?;
        let original_kid = original.kid();
        let ring_path = ring_path::<K>(keys_dir);
        let file = match fs::read(&ring_path) {
            Ok(bytes) => {
                serde_json::from_slice::<RingFile>(&bytes).map_err(|e| RingError::Invalid {
                    path: ring_path.clone(),
                    reason: e.to_string(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RingFile {
                v: RING_VERSION,
                active: original_kid.clone(),
                signs_from: 0,
                previous: None,
                keys: Vec::new(),
            },
            Err(source) => {
                return Err(RingError::Io {
                    path: ring_path,
                    source,
                })
            }
        };
        if file.v != RING_VERSION {
            return Err(RingError::Invalid {
                path: ring_path,
                reason: format!(
                    "format version {} (this build reads {RING_VERSION})",
                    file.v
                ),
            });
        }
        let mut entries = file.keys;
        if !entries.iter().any(|e| e.original) {
            entries.insert(
                0,
                Entry {
                    kid: original_kid.clone(),
                    original: true,
                    created_at: None,
                    superseded_at: None,
                    retired_at: None,
                },
            );
        }
        let mut secrets = Vec::new();
        for e in entries.iter().filter(|e| e.retired_at.is_none()) {
            let key = if e.original {
                original.clone()
            } else {
                let path = key_path::<K>(keys_dir, &e.kid);
                K::load(&path).map_err(|source| RingError::Io { path, source })?
            };
            if key.kid() != e.kid {
                return Err(RingError::Invalid {
                    path: ring_path,
                    reason: format!("the key file of {} holds another key", e.kid),
                });
            }
            secrets.push((e.kid.clone(), key));
        }
        if !secrets.iter().any(|(kid, _)| *kid == file.active) {
            return Err(RingError::Invalid {
                path: ring_path,
                reason: format!("the active key {} is not in the ring", file.active),
            });
        }
        Ok(Ring {
            dir: keys_dir.to_path_buf(),
            active: file.active,
            signs_from: file.signs_from,
            previous: file.previous,
            original: original_kid,
            entries,
            secrets,
        })
    }

    /// The key that signs new tokens and credentials at `now`: the newest key once its
    /// [`SIGNING_DELAY_SECS`] passed, the previous one until then.
    pub fn signing(&self, now: u64) -> &K {
        let kid = match &self.previous {
            Some(previous) if now < self.signs_from => previous,
            _ => &self.active,
        };
        // `load` checked that the newest key is among the secrets (and `retire` refuses the
        // previous one during the delay); the first key is the fallback only a bug could reach.
        self.secrets
            .iter()
            .find(|(k, _)| k == kid)
            .or_else(|| self.secrets.iter().find(|(k, _)| *k == self.active))
            .or(self.secrets.first())
            .map(|(_, k)| k)
            .expect("load keeps the active key's secret")
    }

    /// When the newest key starts signing, if that is after `now`: a watcher applies the ring
    /// again then.
    pub fn switches_at(&self, now: u64) -> Option<u64> {
        (self.previous.is_some() && now < self.signs_from).then_some(self.signs_from)
    }

    /// The id of the newest key (which signs, or will within [`SIGNING_DELAY_SECS`]).
    pub fn active_kid(&self) -> &str {
        &self.active
    }

    /// The keys that verify at `now`: not retired by hand, and not superseded more than
    /// [`RingKey::VERIFIES_FOR`] ago. The original key's id comes with it when it still
    /// verifies (it verifies identity tokens without `kid`).
    pub fn verifying(&self, now: u64) -> (Vec<K>, Option<String>) {
        let keys: Vec<K> = self
            .secrets
            .iter()
            .filter(|(kid, _)| self.state(kid, now) != KeyState::Retired)
            .map(|(_, k)| k.clone())
            .collect();
        let original =
            (self.state(&self.original, now) != KeyState::Retired).then(|| self.original.clone());
        (keys, original)
    }

    /// Every key with its state at `now`: the original first, then by creation.
    pub fn list(&self, now: u64) -> Vec<KeyInfo> {
        self.entries
            .iter()
            .map(|e| KeyInfo {
                kid: e.kid.clone(),
                state: self.state(&e.kid, now),
                original: e.original,
                created_at: e.created_at,
                superseded_at: e.superseded_at,
                retired_at: e.retired_at,
            })
            .collect()
    }

    fn state(&self, kid: &str, now: u64) -> KeyState {
        let Some(e) = self.entries.iter().find(|e| e.kid == kid) else {
            return KeyState::Retired;
        };
        if e.retired_at.is_some() {
            KeyState::Retired
        } else if e.kid == self.active {
            KeyState::Active
        } else if e
            .superseded_at
            .is_some_and(|at| at.saturating_add(K::VERIFIES_FOR) <= now)
        {
            KeyState::Retired
        } else {
            KeyState::Verifying
        }
    }

    /// Adds a new key and makes it the signing key; the previous one keeps verifying. Returns
    /// the new key's id.
    pub fn rotate(&mut self, now: u64) -> Result<String, RingError> {
        self.rotate_after(now, SIGNING_DELAY_SECS)
    }

    /// [`Ring::rotate`], with the new key signing `delay` seconds from `now` (the interception
    /// CA's overlap, during which clients learn to trust it).
    pub fn rotate_after(&mut self, now: u64, delay: u64) -> Result<String, RingError> {
        let sub = self.dir.join(K::KIND);
        let (text, key) = K::generate().map_err(|source| RingError::Io {
            path: sub.clone(),
            source,
        })?;
        let kid = key.kid();
        fs::create_dir_all(&sub).map_err(|source| RingError::Io {
            path: sub.clone(),
            source,
        })?;
        write_atomic(&key_path::<K>(&self.dir, &kid), text.as_bytes())?;
        let previous = self.active.clone();
        if let Some(e) = self.entries.iter_mut().find(|e| e.kid == previous) {
            e.superseded_at = Some(now);
        }
        self.previous = Some(previous);
        self.signs_from = now.saturating_add(delay);
        self.entries.push(Entry {
            kid: kid.clone(),
            original: false,
            created_at: Some(now),
            superseded_at: None,
            retired_at: None,
        });
        self.active = kid.clone();
        self.secrets.push((kid.clone(), key));
        self.save()?;
        Ok(kid)
    }

    /// Retires key `kid`: tokens and credentials it signed are refused from now on. Its key
    /// file is deleted (the original `KIND.key` is kept: first start would recreate it).
    pub fn retire(&mut self, kid: &str, now: u64) -> Result<(), RingError> {
        let signing_still = self.previous.as_deref() == Some(kid) && now < self.signs_from;
        let Some(e) = self.entries.iter_mut().find(|e| e.kid == kid) else {
            return Err(RingError::Unknown(kid.to_owned()));
        };
        if e.retired_at.is_some() {
            return Err(RingError::Retired(kid.to_owned()));
        }
        if kid == self.active || signing_still {
            return Err(RingError::Active(kid.to_owned()));
        }
        e.retired_at = Some(now);
        let original = e.original;
        self.secrets.retain(|(k, _)| k != kid);
        self.save()?;
        if !original {
            let path = key_path::<K>(&self.dir, kid);
            fs::remove_file(&path).map_err(|source| RingError::Io { path, source })?;
        }
        Ok(())
    }

    fn save(&self) -> Result<(), RingError> {
        let file = RingFile {
            v: RING_VERSION,
            active: self.active.clone(),
            signs_from: self.signs_from,
            previous: self.previous.clone(),
            keys: self.entries.clone(),
        };
        let path = ring_path::<K>(&self.dir);
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| RingError::Invalid {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&path, &bytes)
    }
}

/// `keys/KIND/ring.json`: what a watcher looks at.
pub fn ring_path<K: RingKey>(keys_dir: &Path) -> PathBuf {
    keys_dir.join(K::KIND).join("ring.json")
}

fn key_path<K: RingKey>(keys_dir: &Path, kid: &str) -> PathBuf {
    keys_dir.join(K::KIND).join(format!("{kid}.key"))
}

/// Writes `bytes` to `path` through a synced temporary file (mode 0600) renamed over it.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RingError> {
    let io = |source| RingError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        // The rename is durable once the directory is synced.
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn data() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("keys")).unwrap();
        fs::write(dir.path().join("keys/identity.key"), generate_key_text()).unwrap();
        dir
    }

    #[test]
    fn rotate_then_retire_by_hand_or_after_the_longest_token_lifetime() {
        let dir = data();
        let keys = dir.path().join("keys");
        let ring = IdentityRing::load(&keys).unwrap();
        let original = ring.signing(NOW).kid();
        assert_eq!(ring.list(NOW).len(), 1);
        assert_eq!(ring.verifying(NOW).1.as_deref(), Some(original.as_str()));

        let mut ring = ring;
        let second = ring.rotate(NOW).unwrap();
        let third = ring.rotate(NOW + 10).unwrap();
        // What is on disk reads the same.
        let ring = IdentityRing::load(&keys).unwrap();
        assert_eq!(ring.active_kid(), third);
        // The newest key signs once the delay passed; the one before it until then.
        assert_eq!(ring.signing(NOW + 10).kid(), second);
        assert_eq!(ring.signing(NOW + 10 + SIGNING_DELAY_SECS).kid(), third);
        let states: Vec<(String, KeyState)> = ring
            .list(NOW + 20)
            .into_iter()
            .map(|k| (k.kid, k.state))
            .collect();
        assert_eq!(
            states,
            [
                (original.clone(), KeyState::Verifying),
                (second.clone(), KeyState::Verifying),
                (third.clone(), KeyState::Active)
            ]
        );
        assert_eq!(ring.verifying(NOW + 20).0.len(), 3);
        // After the longest token lifetime, the superseded keys stop verifying by themselves.
        let later = NOW + 10 + MAX_TOKEN_TTL.as_secs();
        let (keys_later, original_later) = ring.verifying(later);
        assert_eq!(keys_later.len(), 1);
        assert_eq!(original_later, None);

        let mut ring = ring;
        assert!(matches!(
            ring.retire(&third, NOW),
            Err(RingError::Active(_))
        ));
        assert!(matches!(
            ring.retire("nope", NOW),
            Err(RingError::Unknown(_))
        ));
        assert!(matches!(
            ring.retire(&second, NOW + 11),
            Err(RingError::Active(_))
        ));
        ring.retire(&second, NOW + 30).unwrap();
        ring.retire(&original, NOW + 30).unwrap();
        assert!(matches!(
            ring.retire(&second, NOW),
            Err(RingError::Retired(_))
        ));
        assert!(!keys.join(format!("identity/{second}.key")).exists());
        assert!(
            keys.join("identity.key").exists(),
            "the original file stays"
        );
        let ring = IdentityRing::load(&keys).unwrap();
        let (verifying, original_now) = ring.verifying(NOW + 40);
        assert_eq!(verifying.len(), 1);
        assert_eq!(original_now, None);
        assert_eq!(ring.list(NOW + 40)[0].state, KeyState::Retired);
    }
}
