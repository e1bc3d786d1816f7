//! Policy hot reload: the live [`PolicySet`] behind an atomically swapped `Arc`, the status of
//! the last load for `/readyz`, and the task that reloads on directory changes and `SIGHUP`.
//!
//! The directory is watched, not the files: editors that save by writing a temporary file and
//! renaming it over the original (vim, most IDEs), and Kubernetes ConfigMap volumes (which swap
//! a symlinked `..data` directory), replace the inode a file watch would be attached to. Events
//! come in bursts (one save is several of them), so they are debounced; a reload whose files
//! are byte-for-byte those of the previous attempt is skipped, which keeps a `touch` or our own
//! reads from reloading and logging. A slow poll backs the watcher up on file systems that do
//! not deliver events (some network and container mounts).
//!
//! Whoever holds something decided under an older set (a live tunnel) follows the reloads:
//! [`Policies::generation`] says which set a decision was made under, and
//! [`Policies::subscribe`] wakes a task on every applied reload, so nothing has to poll.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::event::{EventKind, MetadataKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, watch as notify_watch};

use super::compile::PolicySet;
use super::files::{read_dir_files, DirFiles};

/// How long to wait after a directory event for the rest of its burst before reloading. Well
/// under the 2 s DESIGN.md allows for an edit to take effect.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Interval of the fallback poll (and of retries to start the watcher when the directory did
/// not exist yet). Only matters where file-system events are not delivered.
pub const POLL_INTERVAL: Duration = Duration::from_secs(30);

/// Outcome of the last load attempt, for `/readyz` and logs.
#[derive(Clone, Debug, Default)]
pub struct LoadStatus {
    /// A valid set has been loaded at least once (otherwise everything is denied).
    pub ever_loaded: bool,
    /// Errors of the last attempt (`FILE:LINE: message`), empty when it succeeded.
    pub last_errors: Vec<String>,
    /// Number of successful loads so far.
    pub generation: u64,
    /// Number of failed load attempts so far (for `tollgate_policy_reloads_total`).
    pub failed_reloads: u64,
    /// When a load last succeeded.
    pub last_success: Option<std::time::SystemTime>,
}

/// The live policy set: an `Arc` snapshot swapped atomically on reload, plus the load status.
pub struct Policies {
    /// Where the `*.toml` files are read from; watched by [`watch`].
    dir: PathBuf,
    /// The set in force. Requests take a snapshot with one atomic load and keep using it even
    /// if a reload swaps in a new set meanwhile.
    current: ArcSwap<PolicySet>,
    /// Outcome of the last attempt; read by `/readyz`.
    status: Mutex<LoadStatus>,
    /// Serializes reloads (a slow one must not swap an older set over a newer one) and holds
    /// what the last attempt read, so that a change-triggered reload that would read the
    /// same thing can be skipped. `None` before the first attempt.
    last_read: Mutex<Option<DirFiles>>,
    /// The watch loop is running: directory events (if the watcher could start) and SIGHUP
    /// are being listened for.
    watching: AtomicBool,
    /// The generation of the set in force, published after the set is swapped in, so a
    /// reader that sees generation `g` and then loads the set gets set `g` or a newer one;
    /// live tunnels subscribe to re-decide on each reload.
    reloads: notify_watch::Sender<u64>,
}

/// Whether a reload must happen even if the files did not change.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Explicit request (first load, `reload()`, SIGHUP): always rebuild and log.
    Force,
    /// Directory event or poll: only when the files changed.
    IfChanged,
}

impl Policies {
    /// Creates the handle and performs the first load. A failed first load leaves the
    /// empty (deny-all) set in force and the errors in the status.
    pub fn load(dir: PathBuf) -> Arc<Self> {
        let policies = Policies {
            dir,
            current: ArcSwap::from_pointee(PolicySet::empty()),
            status: Mutex::new(LoadStatus::default()),
            last_read: Mutex::new(None),
            watching: AtomicBool::new(false),
            reloads: notify_watch::Sender::new(0),
        };
        // The outcome is in the status and the logs.
        let _ = policies.reload_with(Mode::Force);
        Arc::new(policies)
    }

    /// The set in force (cheap: one atomic load).
    pub fn current(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    /// The generation of the set in force (the number of sets applied so far). Read it
    /// before [`current`](Self::current): a decision made on that snapshot is then at least
    /// as new as the generation recorded for it.
    pub fn generation(&self) -> u64 {
        *self.reloads.borrow()
    }

    /// A receiver that sees every applied reload (its value is the new generation). A failed
    /// reload, which keeps the set in force, does not wake it.
    pub fn subscribe(&self) -> notify_watch::Receiver<u64> {
        self.reloads.subscribe()
    }

    /// Reloads now. On error the previous set stays in force; the errors are logged and kept
    /// in the status. Returns the errors, if any.
    pub fn reload(&self) -> Result<(), Vec<String>> {
        self.reload_with(Mode::Force)
    }

    /// Status of the last load attempt.
    pub fn status(&self) -> LoadStatus {
        lock(&self.status).clone()
    }

    /// The directory being watched.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Whether [`watch`] is running and listening for directory events and SIGHUP.
    pub fn watching(&self) -> bool {
        self.watching.load(Ordering::Acquire)
    }

    fn reload_with(&self, mode: Mode) -> Result<(), Vec<String>> {
        let mut last_read = lock(&self.last_read);
        let found = read_dir_files(&self.dir);
        if mode == Mode::IfChanged && last_read.as_ref() == Some(&found) {
            tracing::debug!(dir = %self.dir.display(), "policy files unchanged");
            return self.last_result();
        }
        let loaded = PolicySet::build_from(&found);
        *last_read = Some(found);
        match loaded {
            Ok(set) => {
                let (policies, files) = (set.policy_count(), set.file_count());
                self.current.store(Arc::new(set));
                let mut status = lock(&self.status);
                status.ever_loaded = true;
                status.last_errors.clear();
                status.generation += 1;
                status.last_success = Some(std::time::SystemTime::now());
                self.reloads.send_replace(status.generation);
                tracing::info!(
                    dir = %self.dir.display(),
                    policies,
                    files,
                    generation = status.generation,
                    "policies loaded"
                );
                Ok(())
            }
            Err(errors) => {
                let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                for e in &errors {
                    tracing::error!(dir = %self.dir.display(), "policy error: {e}");
                }
                let mut status = lock(&self.status);
                status.failed_reloads += 1;
                if status.ever_loaded {
                    tracing::error!(
                        errors = errors.len(),
                        generation = status.generation,
                        "invalid policy files; keeping the previous set"
                    );
                } else {
                    tracing::error!(
                        errors = errors.len(),
                        "invalid policy files and no valid set loaded yet; denying everything"
                    );
                }
                status.last_errors.clone_from(&errors);
                Err(errors)
            }
        }
    }

    /// The result of the last attempt, as `reload` reports it.
    fn last_result(&self) -> Result<(), Vec<String>> {
        let status = lock(&self.status);
        if status.last_errors.is_empty() {
            Ok(())
        } else {
            Err(status.last_errors.clone())
        }
    }
}

/// A poisoned lock only means another reload panicked; the data (a status, a source list) is
/// still consistent enough to report and replace.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Watches the directory (notify, debounced) and SIGHUP, reloading on each change, until
/// `shutdown` resolves. A valid edit takes effect within 2 seconds.
pub async fn watch(policies: Arc<Policies>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut watcher = start_watcher(policies.dir(), tx.clone());
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot listen for SIGHUP, policy reloads by signal are off: {e}");
            None
        }
    };
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.tick().await; // The first tick is immediate; the first load already happened.
                       // An edit made between the first load and the watcher starting sent no event; without
                       // this it would wait for the poll (30 s). Edits from now on are seen by the watcher.
    reload_blocking(&policies, Mode::IfChanged).await;
    policies.watching.store(true, Ordering::Release);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(()) = events.recv() => {
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(DEBOUNCE) => {}
                }
                while events.try_recv().is_ok() {}
                reload_blocking(&policies, Mode::IfChanged).await;
            }
            () = next_hangup(&mut hup) => {
                tracing::info!("SIGHUP: reloading policies");
                reload_blocking(&policies, Mode::Force).await;
            }
            _ = poll.tick() => {
                if watcher.is_none() {
                    watcher = start_watcher(policies.dir(), tx.clone());
                }
                reload_blocking(&policies, Mode::IfChanged).await;
            }
        }
    }
    policies.watching.store(false, Ordering::Release);
    drop(watcher);
}

/// Reading and compiling files is blocking work; keep it off the async workers.
async fn reload_blocking(policies: &Arc<Policies>, mode: Mode) {
    let p = Arc::clone(policies);
    if let Err(e) = tokio::task::spawn_blocking(move || p.reload_with(mode)).await {
        tracing::error!("policy reload task failed: {e}");
    }
}

/// Resolves on the next SIGHUP; never when the signal could not be registered.
async fn next_hangup(hup: &mut Option<Signal>) {
    match hup {
        Some(s) => {
            if s.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// A non-recursive watcher on `dir` that sends `()` for every event that may change a file.
fn start_watcher(dir: &Path, tx: mpsc::UnboundedSender<()>) -> Option<RecommendedWatcher> {
    let handler = move |res: notify::Result<notify::Event>| match res {
        Ok(ev) if may_change_files(&ev.kind) => {
            // Fails only once `watch` has returned; nothing is left to tell.
            let _ = tx.send(());
        }
        Ok(_) => {}
        Err(e) => {
            // Possibly lost events (queue overflow): reload to be safe.
            tracing::warn!("policy directory watch error: {e}");
            let _ = tx.send(());
        }
    };
    let started = notify::recommended_watcher(handler)
        .and_then(|mut w| w.watch(dir, RecursiveMode::NonRecursive).map(|()| w));
    match started {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(
                dir = %dir.display(),
                "cannot watch the policy directory (retrying every {}s; SIGHUP reloads): {e}",
                POLL_INTERVAL.as_secs()
            );
            None
        }
    }
}

/// Reads (ours included) and access-time updates change nothing.
fn may_change_files(kind: &EventKind) -> bool {
    !matches!(
        kind,
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DESIGN's target is 2 s; the tests allow more so that a loaded CI machine does not make
    /// a timing target flaky (the watcher debounces 200 ms; it normally applies well within).
    const RELOAD_DEADLINE: Duration = Duration::from_secs(10);
    use std::fs;
    use std::time::Instant;

    use crate::policy::tests::allow_policy;

    fn one() -> String {
        allow_policy("one", "direct", &["one.example"])
    }

    fn two() -> String {
        one() + &allow_policy("two", "agent:edge-1", &["two.example"])
    }

    const BAD: &str = r#"
[[policy]]
name = "one"
route = "direct"
colour = "blue"
"#;

    /// Writes like an editor that saves through a temporary file and a rename.
    fn write_via_rename(dir: &Path, name: &str, contents: &str) {
        let tmp = dir.join(format!(".{name}.tmp"));
        fs::write(&tmp, contents).unwrap();
        fs::rename(&tmp, dir.join(name)).unwrap();
    }

    async fn eventually(what: &str, deadline: Duration, mut ok: impl FnMut() -> bool) {
        let start = Instant::now();
        while !ok() {
            assert!(start.elapsed() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn subscribers_see_applied_reloads_only() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.toml"), one()).unwrap();
        let p = Policies::load(dir.path().to_owned());
        assert_eq!(p.generation(), 1);
        let mut rx = p.subscribe();
        assert!(!rx.has_changed().unwrap());
        fs::write(dir.path().join("a.toml"), BAD).unwrap();
        p.reload().unwrap_err();
        assert!(!rx.has_changed().unwrap(), "a failed reload keeps the set");
        fs::write(dir.path().join("a.toml"), two()).unwrap();
        p.reload().unwrap();
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 2);
        assert_eq!(p.generation(), p.status().generation);
    }

    #[test]
    fn reload_swaps_good_edits_and_keeps_the_last_good_set() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.toml"), one()).unwrap();
        let p = Policies::load(dir.path().to_owned());
        let first = p.current();
        assert_eq!(first.policy_count(), 1);
        let s = p.status();
        assert!(s.ever_loaded && s.last_errors.is_empty());
        assert_eq!(s.generation, 1);

        fs::write(dir.path().join("a.toml"), two()).unwrap();
        p.reload().unwrap();
        assert_eq!(p.current().policy_count(), 2);
        assert_eq!(p.status().generation, 2);
        // A snapshot taken before the swap is unaffected.
        assert_eq!(first.policy_count(), 1);

        fs::write(dir.path().join("a.toml"), BAD).unwrap();
        let errors = p.reload().unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("a.toml:5: unknown field `colour`"),
            "{errors:?}"
        );
        assert_eq!(p.current().policy_count(), 2, "the last good set stays");
        let s = p.status();
        assert!(s.ever_loaded);
        assert_eq!(s.generation, 2);
        assert_eq!(s.last_errors, errors);

        fs::write(dir.path().join("a.toml"), one()).unwrap();
        p.reload().unwrap();
        assert_eq!(p.current().policy_count(), 1);
        assert!(p.status().last_errors.is_empty());
    }

    #[test]
    fn failed_first_load_denies_everything() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.toml"), BAD).unwrap();
        let p = Policies::load(dir.path().to_owned());
        assert_eq!(p.current().policy_count(), 0);
        let s = p.status();
        assert!(!s.ever_loaded);
        assert_eq!(s.generation, 0);
        assert_eq!(s.last_errors.len(), 1);
        let host = crate::policy::normalize_host("one.example").unwrap();
        assert!(!p.current().decide("acme", &host, 443).is_allowed());
    }

    #[test]
    fn missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = Policies::load(dir.path().join("nope"));
        let s = p.status();
        assert!(!s.ever_loaded);
        assert_eq!(s.last_errors.len(), 1);
        assert!(s.last_errors[0].contains(":0: cannot read the policy directory"));
    }

    #[test]
    fn unchanged_files_are_not_reloaded_by_events() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.toml"), one()).unwrap();
        let p = Policies::load(dir.path().to_owned());
        p.reload_with(Mode::IfChanged).unwrap();
        assert_eq!(
            p.status().generation,
            1,
            "nothing changed, nothing reloaded"
        );
        fs::write(dir.path().join("a.toml"), BAD).unwrap();
        assert!(p.reload_with(Mode::IfChanged).is_err());
        // Same broken files again: same errors reported, still no reload.
        assert!(p.reload_with(Mode::IfChanged).is_err());
        assert_eq!(p.status().generation, 1);
        // An explicit reload always rebuilds.
        fs::write(dir.path().join("a.toml"), one()).unwrap();
        p.reload().unwrap();
        p.reload().unwrap();
        assert_eq!(p.status().generation, 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watcher_applies_edits_within_two_seconds() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.toml"), one()).unwrap();
        let p = Policies::load(dir.path().to_owned());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(watch(p.clone(), async {
            let _ = stopped.await;
        }));
        eventually("the watcher to start", Duration::from_secs(5), || {
            p.watching()
        })
        .await;

        // A new file, written through a rename like an editor would.
        write_via_rename(dir.path(), "b.toml", &two().replace("\"one\"", "\"three\""));
        eventually("the new file to apply", RELOAD_DEADLINE, || {
            p.current().policy_count() == 3
        })
        .await;

        // An invalid edit: the status reports it, the set stays.
        write_via_rename(dir.path(), "a.toml", BAD);
        eventually("the error to be reported", RELOAD_DEADLINE, || {
            !p.status().last_errors.is_empty()
        })
        .await;
        assert_eq!(p.current().policy_count(), 3);

        // An in-place edit (no rename) that fixes it.
        fs::write(dir.path().join("a.toml"), one()).unwrap();
        eventually("the fix to apply", RELOAD_DEADLINE, || {
            p.status().last_errors.is_empty()
        })
        .await;
        assert_eq!(p.current().policy_count(), 3);

        // Deleting a file applies too.
        fs::remove_file(dir.path().join("b.toml")).unwrap();
        eventually("the deletion to apply", RELOAD_DEADLINE, || {
            p.current().policy_count() == 1
        })
        .await;

        // SIGHUP forces a reload even though nothing changed. The handler is installed
        // before `watching()` turns true, so the signal cannot kill the test process.
        let generation = p.status().generation;
        // SAFETY: kill(2) on our own pid with a signal we handle.
        assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGHUP) }, 0);
        eventually("SIGHUP to reload", RELOAD_DEADLINE, || {
            p.status().generation > generation
        })
        .await;

        stop.send(()).unwrap();
        task.await.unwrap();
        assert!(!p.watching());
    }
}
