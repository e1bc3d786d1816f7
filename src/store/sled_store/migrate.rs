//! Versioned migrations of the sled store, run by [`SledStore::open`] before it serves.
//!
//! The store keeps its schema version in the `meta` tree ([`SCHEMA_VERSION_KEY`], a u64
//! big-endian; absent = 0, the layout every store had before migrations existed).
//! [`MIGRATIONS`] is the ordered list of steps; step `n` brings the store from version `n - 1`
//! to `n`. At open, every step above the stored version runs in order, and the version is
//! written (and flushed) after each step's writes are flushed. A store whose version is above
//! what this build knows is refused: an older build must not misread records it cannot know.
//!
//! Crash safety: the version moves only after a step finished, so a crash in the middle of a
//! step re-runs that whole step at the next start. Every step must therefore be idempotent
//! and resumable: it recognises records it already converted and leaves them alone, and it
//! changes one record at a time atomically (compare-and-swap, see [`rewrite_tree`]), so a
//! half-done step is a mix of old and new records that the re-run finishes. Progress is
//! logged per step (records seen and changed), every [`PROGRESS_EVERY`] records for long ones.
//!
//! Adding a step: write it in its own file under `migrate/`, append it to [`MIGRATIONS`] with
//! the next version, and give it a test that writes the old form, opens, checks the new form,
//! and opens again to see nothing change.

use std::time::Instant;

use sled::transaction::ConflictableTransactionError;
use sled::{IVec, Tree};

use super::super::{StoreError, StoreResult};
use super::{io, tx_error, SledStore, TREE_META};

mod app_secret_endpoint;
mod consent_hashed_keys;

/// Key of the schema version in the `meta` tree.
pub(super) const SCHEMA_VERSION_KEY: &[u8] = b"schema-version";

/// How many records a step handles between two progress lines.
pub(super) const PROGRESS_EVERY: usize = 10_000;

/// One migration step.
pub(super) struct Migration {
    /// The schema version the store has once this step is done: its place in the list, from 1.
    pub(super) version: u64,
    /// What the step does, for the logs.
    pub(super) name: &'static str,
    /// Applies the step. Idempotent and resumable (see the module docs); reports every record
    /// it looks at to the [`Progress`].
    pub(super) apply: fn(&SledStore, &mut Progress) -> StoreResult<()>,
}

/// The steps of this build, in order. Append only; never reorder or remove one (a store
/// records how many it has run).
pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "re-seal app client secrets bound to their endpoint hosts",
        apply: app_secret_endpoint::apply,
    },
    Migration {
        version: 2,
        name: "consent tickets and pending authorizations keyed by hash",
        apply: consent_hashed_keys::apply,
    },
];

/// A step's progress: records seen and changed, logged as it goes.
pub(super) struct Progress {
    /// The step's version, for the log lines.
    version: u64,
    /// The step's name, for the log lines.
    name: &'static str,
    /// Records looked at so far.
    seen: usize,
    /// Records rewritten so far.
    changed: usize,
    /// When the step started, for the final line.
    started: Instant,
}

impl Progress {
    fn new(step: &Migration) -> Progress {
        Progress {
            version: step.version,
            name: step.name,
            seen: 0,
            changed: 0,
            started: Instant::now(),
        }
    }

    /// Counts one record, `changed` when the step rewrote it.
    pub(super) fn record(&mut self, changed: bool) {
        self.seen += 1;
        self.changed += usize::from(changed);
        if self.seen.is_multiple_of(PROGRESS_EVERY) {
            tracing::info!(
                version = self.version,
                step = self.name,
                seen = self.seen,
                changed = self.changed,
                "store migration in progress"
            );
        }
    }
}

/// What a step does with one record (see [`rewrite_tree`]).
pub(super) enum Rewrite {
    /// Already in the new form, or not this step's business.
    Keep,
    /// Replace the value under the same key.
    Replace(Vec<u8>),
    /// Store the value under another key and remove the old one (re-keying).
    // No shipped step re-keys yet; the tests exercise it for the ones that will.
    #[cfg_attr(not(test), allow(dead_code))]
    Move(Vec<u8>, Vec<u8>),
}

/// Runs `f` over every record of `tree` and applies what it returns, one record at a time:
/// each change is atomic and applies only if the record is still the one `f` saw, so a
/// concurrent writer (there is none at open, but tests may) or a re-run never loses a write.
pub(super) fn rewrite_tree(
    tree: &Tree,
    progress: &mut Progress,
    mut f: impl FnMut(&[u8], &[u8]) -> StoreResult<Rewrite>,
) -> StoreResult<()> {
    for item in tree.iter() {
        let (key, value) = item.map_err(io)?;
        let changed = match f(&key, &value)? {
            Rewrite::Keep => false,
            Rewrite::Replace(new) => tree
                .compare_and_swap(&key, Some(&value), Some(new))
                .map_err(io)?
                .is_ok(),
            Rewrite::Move(new_key, new) => move_record(tree, &key, &value, &new_key, new)?,
        };
        progress.record(changed);
    }
    Ok(())
}

/// Moves `old_key` (if it still holds `old`) to `new_key` with `new`, in one transaction.
fn move_record(
    tree: &Tree,
    old_key: &[u8],
    old: &IVec,
    new_key: &[u8],
    new: Vec<u8>,
) -> StoreResult<bool> {
    tree.transaction(|t| {
        if t.get(old_key)?.as_ref() != Some(old) {
            return Ok(false);
        }
        t.remove(old_key)?;
        t.insert(new_key, new.as_slice())?;
        Ok::<_, ConflictableTransactionError<StoreError>>(true)
    })
    .map_err(tx_error)
}

impl SledStore {
    /// Brings the store to the last version of [`MIGRATIONS`].
    pub(super) fn migrate(&self) -> StoreResult<u64> {
        self.migrate_with(MIGRATIONS)
    }

    /// Runs the `steps` above the stored version, in order, recording each as done once its
    /// writes are durable. Returns the version the store is at.
    pub(super) fn migrate_with(&self, steps: &[Migration]) -> StoreResult<u64> {
        let meta = self.db.open_tree(TREE_META).map_err(io)?;
        let latest = steps.last().map_or(0, |s| s.version);
        let stored = read_version(&meta)?;
        if stored > latest {
            return Err(StoreError::Corrupt {
                record: "meta/schema-version".into(),
                reason: format!(
                    "the store is at schema version {stored}, newer than this build knows \
                     ({latest}); run a newer tollgate"
                ),
            });
        }
        if stored < latest {
            tracing::info!(from = stored, to = latest, "store: migrating");
        }
        for step in steps.iter().filter(|s| s.version > stored) {
            let mut progress = Progress::new(step);
            tracing::info!(
                version = step.version,
                step = step.name,
                "store migration: start"
            );
            (step.apply)(self, &mut progress).map_err(|e| {
                tracing::error!(version = step.version, step = step.name, error = %e,
                    "store migration failed; it runs again at the next start");
                e
            })?;
            // The step's writes first, then the version: a crash in between re-runs the step.
            self.db.flush().map_err(io)?;
            meta.insert(SCHEMA_VERSION_KEY, &step.version.to_be_bytes())
                .map_err(io)?;
            self.db.flush().map_err(io)?;
            tracing::info!(
                version = step.version,
                step = step.name,
                seen = progress.seen,
                changed = progress.changed,
                ms = u64::try_from(progress.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                "store migration: done"
            );
        }
        Ok(stored.max(latest))
    }
}

/// The schema version stored in `meta` (0 when absent).
fn read_version(meta: &Tree) -> StoreResult<u64> {
    match meta.get(SCHEMA_VERSION_KEY).map_err(io)? {
        None => Ok(0),
        Some(bytes) => {
            let raw: [u8; 8] = bytes.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                record: "meta/schema-version".into(),
                reason: "not an 8-byte version".into(),
            })?;
            Ok(u64::from_be_bytes(raw))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::contract::T0;
    use crate::store::StoreKey;

    const TEST_TREE: &str = "migration-test";

    fn open(dir: &std::path::Path) -> SledStore {
        let key = StoreKey::from_hex_text(&"a1".repeat(32)).unwrap();
        SledStore::open_with_clock(dir, key, ManualClock::new(T0).clock()).unwrap()
    }

    fn test_tree(s: &SledStore) -> Tree {
        s.db.open_tree(TEST_TREE).unwrap()
    }

    /// Counts how many times a step ran, in the test tree (so it survives a reopen).
    fn bump(s: &SledStore, name: &[u8]) -> StoreResult<u64> {
        let t = test_tree(s);
        let n = t.get(name).map_err(io)?.map_or(0, |v| u64::from(v[0])) + 1;
        t.insert(name, &[u8::try_from(n).unwrap_or(u8::MAX)])
            .map_err(io)?;
        Ok(n)
    }

    /// Step 1: uppercases every `r/*` value (idempotent: uppercase stays uppercase). Fails
    /// after `fail-after` changes when that key is set, like a crash in the middle.
    fn upper(s: &SledStore, p: &mut Progress) -> StoreResult<()> {
        bump(s, b"ran/1")?;
        let t = test_tree(s);
        let fail_after = t.get(b"fail-after").map_err(io)?.map(|v| usize::from(v[0]));
        let mut changed = 0;
        rewrite_tree(&t, p, |k, v| {
            if !k.starts_with(b"r/") {
                return Ok(Rewrite::Keep);
            }
            if fail_after.is_some_and(|n| changed >= n) {
                return Err(StoreError::Io("simulated crash".into()));
            }
            let up = v.to_ascii_uppercase();
            if up == v {
                return Ok(Rewrite::Keep);
            }
            changed += 1;
            Ok(Rewrite::Replace(up))
        })
    }

    /// Step 2: re-keys `r/x` to `s/x` (idempotent: moved records no longer match).
    fn rekey(s: &SledStore, p: &mut Progress) -> StoreResult<()> {
        bump(s, b"ran/2")?;
        rewrite_tree(&test_tree(s), p, |k, v| {
            Ok(match k.strip_prefix(b"r/") {
                Some(rest) => Rewrite::Move([b"s/", rest].concat(), v.to_vec()),
                None => Rewrite::Keep,
            })
        })
    }

    const STEPS: &[Migration] = &[
        Migration {
            version: 1,
            name: "uppercase",
            apply: upper,
        },
        Migration {
            version: 2,
            name: "rekey",
            apply: rekey,
        },
    ];

    fn version(s: &SledStore) -> u64 {
        read_version(&s.db.open_tree(TREE_META).unwrap()).unwrap()
    }

    fn get(s: &SledStore, k: &[u8]) -> Option<Vec<u8>> {
        test_tree(s).get(k).unwrap().map(|v| v.to_vec())
    }

    #[test]
    fn the_shipped_steps_are_numbered_from_one_without_gaps() {
        for (i, step) in MIGRATIONS.iter().enumerate() {
            assert_eq!(step.version, i as u64 + 1, "{}", step.name);
        }
    }

    #[tokio::test]
    async fn a_fresh_store_is_at_the_latest_version_and_reopening_runs_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let latest = MIGRATIONS.last().map_or(0, |s| s.version);
        let s = open(&dir);
        assert_eq!(version(&s), latest);
        s.close().await.unwrap();
        let s = open(&dir);
        assert_eq!(version(&s), latest);
    }

    #[tokio::test]
    async fn steps_run_once_in_order_and_a_crashed_step_resumes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let s = open(&dir);
        // Back to a store from before any migration, with records in the old form.
        s.db.open_tree(TREE_META)
            .unwrap()
            .remove(SCHEMA_VERSION_KEY)
            .unwrap();
        let t = test_tree(&s);
        for k in ["a", "b", "c", "d"] {
            t.insert(format!("r/{k}"), k.as_bytes()).unwrap();
        }
        // The first run crashes in step 1 after two records.
        t.insert(b"fail-after", &[2]).unwrap();
        let err = s.migrate_with(STEPS).unwrap_err();
        assert_eq!(err, StoreError::Io("simulated crash".into()));
        assert_eq!(version(&s), 0, "a failed step is not recorded as done");
        let upper_now = ["a", "b", "c", "d"]
            .iter()
            .filter(|k| get(&s, format!("r/{k}").as_bytes()) == Some(k.to_uppercase().into()))
            .count();
        assert_eq!(upper_now, 2, "half done, as after a crash");

        // Restart: step 1 re-runs and finishes, step 2 runs.
        t.remove(b"fail-after").unwrap();
        assert_eq!(s.migrate_with(STEPS).unwrap(), 2);
        assert_eq!(version(&s), 2);
        for k in ["a", "b", "c", "d"] {
            assert_eq!(get(&s, format!("r/{k}").as_bytes()), None);
            assert_eq!(
                get(&s, format!("s/{k}").as_bytes()),
                Some(k.to_uppercase().into_bytes())
            );
        }
        assert_eq!(get(&s, b"ran/1"), Some(vec![2]));
        assert_eq!(get(&s, b"ran/2"), Some(vec![1]));

        // Once more (a reopen): nothing runs.
        assert_eq!(s.migrate_with(STEPS).unwrap(), 2);
        assert_eq!(get(&s, b"ran/1"), Some(vec![2]));
        assert_eq!(get(&s, b"ran/2"), Some(vec![1]));
    }

    #[tokio::test]
    async fn a_store_from_a_newer_build_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let s = open(&tmp.path().join("store"));
        s.db.open_tree(TREE_META)
            .unwrap()
            .insert(SCHEMA_VERSION_KEY, &99u64.to_be_bytes())
            .unwrap();
        match s.migrate_with(STEPS) {
            Err(StoreError::Corrupt { record, reason }) => {
                assert_eq!(record, "meta/schema-version");
                assert!(reason.contains("newer"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}
