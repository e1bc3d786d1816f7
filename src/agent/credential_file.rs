//! The agent's credential and its file (`--credential-file`), which renewals over the relay
//! connection replace ([`crate::relay::renewal`] says why the relay offers them).
//!
//! Every new relay connection authenticates with the [`CredentialFile::current`] credential.
//! A renewal offer names (by `jti`) the credential it replaces; the agent takes it only if
//! that is the one it holds, so that however many sessions are offered one at about the same
//! time, one offer is taken and the others are answered with the credential taken. Taking
//! one writes the file atomically — a temporary file in the same directory, mode 0600,
//! synced, renamed over the old one, the directory synced — so a reader (or a restart of the
//! agent) sees the old credential or the new one, never a mix. Live sessions carry on: the
//! relay associates the new expiry with them.
//!
//! [`watch`] logs a warning once five sixths of the credential's lifetime passed without a
//! renewal (a relay that predates renewal, or renewals failing), and an error at expiry.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Credential;
use crate::clock::Clock;
use crate::relay::credential::peek;

/// How an offer was answered.
#[derive(Debug)]
pub enum Offer {
    /// Taken, written and in use: `204`.
    Taken,
    /// The agent holds another credential than the one the offer replaces (another session
    /// renewed it): `200` with this one.
    Kept(Credential),
    /// Not a credential of this agent: `400`.
    Invalid(&'static str),
    /// The file could not be written; the old credential stays in use: `500`.
    NotSaved(String),
}

/// The agent's current credential and the file it lives in.
pub struct CredentialFile {
    /// `--credential-file`, rewritten on each renewal.
    path: PathBuf,
    /// This agent's ID: an offer for another ID is refused.
    agent: String,
    /// The credential new connections use. Held across the whole of an offer (check, write,
    /// swap), so offers are taken one at a time.
    current: Mutex<Credential>,
}

impl std::fmt::Debug for CredentialFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialFile")
            .field("path", &self.path)
            .field("agent", &self.agent)
            .finish_non_exhaustive()
    }
}

impl CredentialFile {
    /// `credential`, read from `path` at start, for agent `agent`.
    pub fn new(path: PathBuf, agent: String, credential: Credential) -> Self {
        CredentialFile {
            path,
            agent,
            current: Mutex::new(credential),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Credential> {
        // Replaced whole under the lock: a panic elsewhere leaves a usable credential.
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The credential a new relay connection presents.
    pub fn current(&self) -> Credential {
        self.lock().clone()
    }

    /// An offer of `offered` replacing the credential whose `jti` is `replaces`. Blocking (it
    /// writes the file): run it off the connection's task.
    pub fn offer(&self, replaces: &str, offered: &str) -> Offer {
        let Some(new) = peek(offered) else {
            return Offer::Invalid("not an agent credential");
        };
        if new.agent != self.agent {
            return Offer::Invalid("a credential for another agent");
        }
        let mut current = self.lock();
        if peek(current.expose()).is_none_or(|held| held.jti != replaces) {
            return Offer::Kept(current.clone());
        }
        let text = format!("{}\n", offered.trim());
        if let Err(e) = write_atomically(&self.path, text.as_bytes()) {
            let e = format!("{}: {e}", self.path.display());
            tracing::error!(error = %e,
                "cannot write the renewed credential; the current one stays in use");
            return Offer::NotSaved(e);
        }
        *current = Credential::new(offered.trim().to_string());
        tracing::info!(expires_at = new.expires_at, file = %self.path.display(),
            "credential renewed by the relay");
        Offer::Taken
    }
}

/// Replaces `path` with `contents`: a temporary file in the same directory (mode 0600),
/// synced, renamed over `path`, then the directory synced.
pub fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the credential file has no name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn now_ms() -> u64 {
    Clock::system().now_nanos().unwrap_or(0) / 1_000_000
}

/// Logs loudly when the credential is not renewed in time: a warning five sixths into its
/// lifetime, an error at its expiry. Until `shutdown`, or the credential never expires.
pub async fn watch(file: Arc<CredentialFile>, shutdown: CancellationToken) {
    loop {
        let Some(held) = peek(file.current().expose()) else {
            return;
        };
        let Some(exp) = held.expires_at else {
            return;
        };
        let (iat_ms, exp_ms) = (held.issued_at * 1000, exp.saturating_mul(1000));
        let warn_ms = iat_ms + exp_ms.saturating_sub(iat_ms) / 6 * 5;
        let (at, expired) = match now_ms() {
            now if now < warn_ms => (warn_ms, false),
            now if now < exp_ms => {
                tracing::warn!(
                    expires_at = exp,
                    "the credential was not renewed by the relay yet and expires soon"
                );
                (exp_ms, false)
            }
            _ => (0, true),
        };
        if expired {
            tracing::error!(
                expires_at = exp,
                "the credential expired without a renewal: the relay refuses this agent; \
                 enroll it again (tollgate agent enroll) and replace --credential-file"
            );
            return;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()))) => {}
        }
        // Then again with whichever credential is held by now (a renewed one starts over).
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IdentityKey;
    use crate::relay::credential::enroll;

    fn credential(id: &str) -> String {
        let key = IdentityKey::from_bytes(b"0123456789abcdef0123456789abcdef-test-key");
        enroll(&key, id, Some(Duration::from_secs(60))).unwrap()
    }

    #[test]
    fn one_offer_is_taken_and_written_atomically_the_others_get_it_back() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.jwt");
        let first = credential("a");
        std::fs::write(&path, &first).unwrap();
        let file = CredentialFile::new(path.clone(), "a".into(), Credential::new(first.clone()));
        let first_jti = peek(&first).unwrap().jti;

        let second = credential("a");
        assert!(matches!(file.offer(&first_jti, &second), Offer::Taken));
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), second);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(file.current().expose(), second);
        // Another session offers a replacement of the first credential too: declined, with
        // the credential taken.
        match file.offer(&first_jti, &credential("a")) {
            Offer::Kept(c) => assert_eq!(c.expose(), second),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            file.offer(&peek(&second).unwrap().jti, &credential("b")),
            Offer::Invalid(_)
        ));
        assert!(matches!(file.offer("x", "garbage"), Offer::Invalid(_)));
        // Nothing left behind but the file.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);

        // An unwritable file: the current credential stays.
        let gone = CredentialFile::new(
            dir.path().join("missing/agent.jwt"),
            "a".into(),
            Credential::new(first.clone()),
        );
        assert!(matches!(
            gone.offer(&first_jti, &credential("a")),
            Offer::NotSaved(_)
        ));
        assert_eq!(gone.current().expose(), first);
    }
}
