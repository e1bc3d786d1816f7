//! Step 1: app client secrets sealed before they were bound to their endpoint hosts are
//! sealed again with the binding (see `record::app`). A record already bound is left as it
//! is, so a re-run after a crash finishes the rest; a record that cannot be decoded or whose
//! secret does not open is reported and left for the operator (it was unreadable before and
//! stays so; it must not stop the store from opening).

use super::super::super::record::{encode, parse_app_key, AppRecord};
use super::super::super::StoreResult;
use super::super::SledStore;
use super::{rewrite_tree, Progress, Rewrite};

/// Re-seals every legacy app record's client secret.
pub(super) fn apply(store: &SledStore, progress: &mut Progress) -> StoreResult<()> {
    rewrite_tree(&store.apps, progress, |key, value| {
        let Some((org, id)) = parse_app_key(key) else {
            tracing::warn!("store migration: skipping an app record with an unparsable key");
            return Ok(Rewrite::Keep);
        };
        let resealed =
            AppRecord::decode(&org, &id, value).and_then(|rec| rec.reseal_legacy(&store.key));
        match resealed {
            Ok(None) => Ok(Rewrite::Keep),
            Ok(Some(rec)) => Ok(Rewrite::Replace(encode(&rec)?)),
            Err(e) => {
                tracing::warn!(org, app = id, error = %e,
                    "store migration: cannot re-seal this app's client secret; left as it was");
                Ok(Rewrite::Keep)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::SCHEMA_VERSION_KEY;
    use crate::clock::ManualClock;
    use crate::store::contract::T0;
    use crate::store::record::{app_key, legacy_app_json};
    use crate::store::sled_store::{SledStore, TREE_META};
    use crate::store::{Store, StoreKey};

    fn key_a() -> StoreKey {
        StoreKey::from_hex_text(&"a1".repeat(32)).unwrap()
    }

    fn open(dir: &Path, clock: &ManualClock) -> SledStore {
        SledStore::open_with_clock(dir, key_a(), clock.clock()).unwrap()
    }

    #[tokio::test]
    async fn legacy_client_secrets_are_resealed_once_at_open_and_still_open() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let clock = ManualClock::new(T0);
        // A store as an older build left it: no schema version, a legacy app record (and one
        // that cannot be re-sealed, which must not stop the store from opening).
        let old = legacy_app_json(&key_a(), "acme", "gh", 7, Some("https://idp.example/t"));
        {
            let s = open(&dir, &clock);
            s.apps
                .insert(app_key("acme", "gh"), serde_json::to_vec(&old).unwrap())
                .unwrap();
            let mut broken = legacy_app_json(&key_a(), "acme", "broken", 8, None);
            broken["incarnation"] = 9.into();
            s.apps
                .insert(
                    app_key("acme", "broken"),
                    serde_json::to_vec(&broken).unwrap(),
                )
                .unwrap();
            s.db.open_tree(TREE_META)
                .unwrap()
                .remove(SCHEMA_VERSION_KEY)
                .unwrap();
            assert!(s.get_app("acme", "gh").await.is_err(), "unbound: refused");
            s.close().await.unwrap();
        }
        let s = open(&dir, &clock);
        let raw = s.apps.get(app_key("acme", "gh")).unwrap().unwrap();
        let rec: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(rec["secret_binding"], 2);
        assert_ne!(rec["client_secret"], old["client_secret"], "sealed again");
        assert_eq!(rec["webhook"], old["webhook"], "nothing else changed");
        let app = s.get_app("acme", "gh").await.unwrap().unwrap();
        assert_eq!(app.client_secret.as_ref().unwrap().expose(), "sk-1");
        assert!(s.get_app("acme", "broken").await.is_err());
        s.close().await.unwrap();

        // The second open changes nothing.
        let s = open(&dir, &clock);
        assert_eq!(s.apps.get(app_key("acme", "gh")).unwrap().unwrap(), raw);
        // Nor would the step itself, were it run again (a crash before the version moved).
        let mut p = super::super::Progress::new(&super::super::MIGRATIONS[0]);
        super::apply(&s, &mut p).unwrap();
        assert_eq!((p.seen, p.changed), (2, 0));
        assert_eq!(s.apps.get(app_key("acme", "gh")).unwrap().unwrap(), raw);
    }
}
