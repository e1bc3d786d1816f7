//! Which outbound application a request's host belongs to, per organization.
//!
//! Built from [`Store::list_all_apps`] at start and rebuilt after the store publishes an app
//! change (or the index missed events): it follows the store's change events, so no write
//! site invalidates it. The check per request is one atomic load (nothing published since the
//! last look); the snapshot is an `Arc` swapped atomically, so lookups never wait for a
//! rebuild except the first one after a change.
//!
//! Patterns are exact names or `*.suffix` (any depth below `suffix`, not `suffix` itself),
//! like policy hosts; the most specific wins: exact, then the longest suffix. Each org has
//! its own table, so an app of one org is never found for a caller of another.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::policy::Host;
use crate::store::{App, Changes, Seen, Store, StoreResult};

/// Domain patterns (exact names and `*.suffix`) → value, answering "which entry covers this
/// host name?" the way injection decides it: an exact name first, then the longest suffix.
/// Used for the live app index and by `policy explain`.
pub struct DomainTable<T> {
    /// Exact name → value.
    exact: HashMap<String, T>,
    /// `suffix` of `*.suffix` → value.
    suffix: HashMap<String, T>,
}

impl<T> Default for DomainTable<T> {
    fn default() -> Self {
        DomainTable {
            exact: HashMap::new(),
            suffix: HashMap::new(),
        }
    }
}

impl<T> DomainTable<T> {
    /// Adds a normalized pattern (`name` or `*.suffix`).
    pub fn insert(&mut self, pattern: &str, value: T) {
        match pattern.strip_prefix("*.") {
            Some(suffix) => self.suffix.insert(suffix.to_string(), value),
            None => self.exact.insert(pattern.to_string(), value),
        };
    }

    /// The entry covering `name`, if any.
    pub fn find(&self, name: &str) -> Option<&T> {
        if let Some(v) = self.exact.get(name) {
            return Some(v);
        }
        // Longest suffix first: walk the label boundaries left to right. The name itself is
        // not tried (`*.suffix` does not match `suffix`).
        let mut rest = name;
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            if let Some(v) = self.suffix.get(rest) {
                return Some(v);
            }
        }
        None
    }
}

/// One org's patterns.
type OrgTable = DomainTable<Arc<App>>;

/// An immutable snapshot of every org's table.
#[derive(Default)]
struct Snapshot {
    /// The `apps_version` the snapshot was read at (or later).
    version: u64,
    /// org → table.
    orgs: HashMap<String, OrgTable>,
    /// Every app, for listings that must not read the store each time (`/readyz`).
    apps: Vec<Arc<App>>,
}

/// The live index.
pub struct AppIndex {
    /// Where apps come from.
    store: Arc<dyn Store>,
    /// The store's change events; app changes move `apps_version`.
    changes: Changes,
    /// Bumped for every app change event (and missed events); a snapshot older than it is
    /// rebuilt.
    apps_version: AtomicU64,
    /// The current snapshot.
    snapshot: ArcSwap<Snapshot>,
    /// Serializes rebuilds, so a burst of requests after a change reads the store once.
    rebuild: tokio::sync::Mutex<()>,
}

impl AppIndex {
    /// An index over `store`, rebuilt after the store publishes an app change. Empty until
    /// [`AppIndex::refresh`] or the first lookup.
    pub fn new(store: Arc<dyn Store>) -> Self {
        AppIndex {
            changes: store.subscribe(),
            store,
            apps_version: AtomicU64::new(0),
            snapshot: ArcSwap::from_pointee(Snapshot {
                // Never equal to a real version, so the first lookup builds.
                version: u64::MAX,
                orgs: HashMap::new(),
                apps: Vec::new(),
            }),
            rebuild: tokio::sync::Mutex::new(()),
        }
    }

    /// Rebuilds now from the store.
    pub async fn refresh(&self) -> StoreResult<()> {
        let _g = self.rebuild.lock().await;
        self.rebuild_locked().await
    }

    async fn rebuild_locked(&self) -> StoreResult<()> {
        self.follow_changes();
        // Read the version first: a change that lands while we list is seen as a newer
        // version by the next lookup, which rebuilds again.
        let version = self.apps_version.load(Ordering::Acquire);
        let apps = self.store.list_all_apps().await?;
        self.snapshot.store(Arc::new(build(version, apps)));
        Ok(())
    }

    /// The app of `org` whose domains match `host`, if any (enabled or not: a disabled app
    /// still answers `403 app_disabled` for its domains).
    pub async fn lookup(&self, org: &str, host: &Host) -> StoreResult<Option<Arc<App>>> {
        let Host::Name(name) = host else {
            return Ok(None);
        };
        let snapshot = self.current().await?;
        Ok(find(&snapshot, org, name))
    }

    /// Every app of every org, as of the last change (no store read unless apps changed).
    pub async fn apps(&self) -> StoreResult<Vec<Arc<App>>> {
        Ok(self.current().await?.apps.clone())
    }

    /// Moves `apps_version` for every app change published since the last look.
    fn follow_changes(&self) {
        self.changes.catch_up(|seen| {
            let app_changed = match seen {
                Seen::Event(e) => e.change.is_app(),
                Seen::Missed => true,
            };
            if app_changed {
                self.apps_version.fetch_add(1, Ordering::AcqRel);
            }
        });
    }

    /// The snapshot, rebuilt first if the apps changed since it was taken.
    async fn current(&self) -> StoreResult<Arc<Snapshot>> {
        self.follow_changes();
        let wanted = self.apps_version.load(Ordering::Acquire);
        if self.snapshot.load().version != wanted {
            let _g = self.rebuild.lock().await;
            if self.snapshot.load().version != self.apps_version.load(Ordering::Acquire) {
                self.rebuild_locked().await?;
            }
        }
        Ok(self.snapshot.load_full())
    }
}

fn build(version: u64, apps: Vec<App>) -> Snapshot {
    let mut orgs: HashMap<String, OrgTable> = HashMap::new();
    let apps: Vec<Arc<App>> = apps.into_iter().map(Arc::new).collect();
    for app in &apps {
        let table = orgs.entry(app.org.clone()).or_default();
        for d in &app.domains {
            table.insert(d, app.clone());
        }
    }
    Snapshot {
        version,
        orgs,
        apps,
    }
}

fn find(snap: &Snapshot, org: &str, name: &str) -> Option<Arc<App>> {
    snap.orgs.get(org)?.find(name).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(org: &str, id: &str, domains: &[&str]) -> App {
        let config = crate::store::AppConfig {
            id: id.into(),
            name: id.into(),
            domains: domains.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        App {
            generation: 1,
            incarnation: 1,
            ..App::new(org, config)
        }
    }

    #[test]
    fn most_specific_pattern_wins_and_orgs_are_separate() {
        let snap = build(
            1,
            vec![
                app("acme", "broad", &["*.example.com"]),
                app("acme", "narrow", &["*.api.example.com"]),
                app("acme", "exact", &["x.api.example.com"]),
                app("other", "theirs", &["*.example.com", "only.other"]),
            ],
        );
        let id = |org, name| find(&snap, org, name).map(|a| a.id.clone());
        let cases = [
            (
                "exact beats suffixes",
                "acme",
                "x.api.example.com",
                Some("exact"),
            ),
            (
                "longer suffix wins",
                "acme",
                "y.api.example.com",
                Some("narrow"),
            ),
            ("any depth", "acme", "a.b.api.example.com", Some("narrow")),
            ("shorter suffix", "acme", "www.example.com", Some("broad")),
            ("suffix itself is not matched", "acme", "example.com", None),
            ("other org's exact", "acme", "only.other", None),
            (
                "other org has its own",
                "other",
                "www.example.com",
                Some("theirs"),
            ),
            ("unknown org", "nobody", "www.example.com", None),
        ];
        for (name, org, host, want) in cases {
            assert_eq!(id(org, host).as_deref(), want, "{name}");
        }
    }

    /// The index follows the store's change events: no caller tells it about a change.
    #[tokio::test]
    async fn follows_app_changes_without_being_told() {
        use crate::store::contract::sample_app;
        let tmp = tempfile::tempdir().unwrap();
        let key = crate::store::StoreKey::from_hex_text(&"a1".repeat(32)).unwrap();
        let store: Arc<dyn Store> =
            Arc::new(crate::store::SledStore::open(&tmp.path().join("store"), key).unwrap());
        let index = AppIndex::new(store.clone());
        let host = Host::Name("crm.example.com".into());
        assert!(index.lookup("acme", &host).await.unwrap().is_none());
        store.create_app(sample_app("acme", "crm")).await.unwrap();
        let found = index.lookup("acme", &host).await.unwrap().unwrap();
        assert!(found.enabled);
        store.set_app_enabled("acme", "crm", false).await.unwrap();
        let found = index.lookup("acme", &host).await.unwrap().unwrap();
        assert!(!found.enabled, "disable seen on the next lookup");
        store.delete_app("acme", "crm").await.unwrap();
        assert!(index.lookup("acme", &host).await.unwrap().is_none());
    }
}
