//! Apps: creation, listing, update, enable/disable, and org isolation.

use super::*;

#[tokio::test]
async fn app_round_trip_sets_store_fields() {
    let (_tmp, _clock, s) = fresh();
    let created = s.create_app(app("acme", "github")).await.unwrap();
    assert!(created.enabled);
    assert_eq!(created.generation, 1);
    assert_ne!(created.incarnation, 99);
    assert_eq!((created.created_at, created.updated_at), (T0, T0));
    let got = s.get_app("acme", "github").await.unwrap().unwrap();
    assert_eq!(got, created);
    assert_eq!(
        got.client_secret.as_ref().unwrap().expose(),
        "sk-PLAINTEXT-123"
    );
    assert_eq!(got.webhook, app("acme", "github").webhook);
    assert_eq!(s.get_app("acme", "gitlab").await.unwrap(), None);
    let mut no_secrets = app("acme", "plain");
    no_secrets.config.client_secret = None;
    no_secrets.config.webhook = None;
    let created2 = s.create_app(no_secrets).await.unwrap();
    assert_eq!(s.get_app("acme", "plain").await.unwrap().unwrap(), created2);
}

#[tokio::test]
async fn usable_as_a_shared_trait_object() {
    let (_tmp, _clock, s) = fresh();
    let store: Arc<dyn Store> = Arc::new(s);
    let a = store.create_app(app("acme", "github")).await.unwrap();
    let shared = store.clone();
    let got = tokio::spawn(async move { shared.get_app("acme", "github").await })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, Some(a));
}

#[tokio::test]
async fn duplicate_create_is_a_conflict() {
    let (_tmp, _clock, s) = fresh();
    let first = s.create_app(app("acme", "github")).await.unwrap();
    let mut again = app("acme", "github");
    again.config.client_id = "other".into();
    assert_eq!(s.create_app(again).await.unwrap_err(), StoreError::Conflict);
    assert_eq!(s.get_app("acme", "github").await.unwrap().unwrap(), first);
    // Same id in another org is another app.
    s.create_app(app("globex", "github")).await.unwrap();
}

#[tokio::test]
async fn list_apps_per_org_and_all() {
    let (_tmp, _clock, s) = fresh();
    for (org, id) in [
        ("acme", "zeta"),
        ("acme", "alpha"),
        ("globex", "mid"),
        ("acme2", "x"),
    ] {
        s.create_app(app(org, id)).await.unwrap();
    }
    let ids = |v: Vec<App>| {
        v.into_iter()
            .map(|a| format!("{}/{}", a.org, a.id))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(s.list_apps("acme").await.unwrap()),
        ["acme/alpha", "acme/zeta"]
    );
    assert_eq!(
        ids(s.list_apps("nobody").await.unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(s.list_all_apps().await.unwrap()),
        ["acme/alpha", "acme/zeta", "acme2/x", "globex/mid"]
    );
}

#[tokio::test]
async fn update_replaces_config_and_keeps_state() {
    let (_tmp, clock, s) = fresh();
    let created = s.create_app(app("acme", "github")).await.unwrap();
    s.set_app_enabled("acme", "github", false).await.unwrap();
    s.reset_app("acme", "github").await.unwrap();
    clock.advance(10);
    let mut change = app("acme", "github");
    change.config.name = "GitHub Enterprise".into();
    change.config.client_secret = Some(Secret::new("sk-rotated"));
    change.config.scopes = vec![];
    let updated = s.update_app(change).await.unwrap();
    assert_eq!(updated.name, "GitHub Enterprise");
    assert_eq!(
        updated.client_secret.as_ref().unwrap().expose(),
        "sk-rotated"
    );
    assert!(!updated.enabled);
    assert_eq!(updated.generation, 2);
    assert_eq!(updated.incarnation, created.incarnation);
    assert_eq!(updated.created_at, T0);
    assert_eq!(updated.updated_at, T0 + 10);
    assert_eq!(s.get_app("acme", "github").await.unwrap().unwrap(), updated);
    assert_eq!(
        s.update_app(app("acme", "nope")).await.unwrap_err(),
        StoreError::NotFound
    );
}

#[tokio::test]
async fn enable_disable_keeps_tokens() {
    let (_tmp, _clock, s) = fresh();
    let a = s.create_app(app("acme", "github")).await.unwrap();
    assert!(put_token(&s, &a, "alice", "at-1").await);
    let off = s.set_app_enabled("acme", "github", false).await.unwrap();
    assert!(!off.enabled);
    assert_eq!(off.generation, a.generation);
    assert!(current(&s, &a, "alice").await.is_some());
    assert!(
        s.set_app_enabled("acme", "github", true)
            .await
            .unwrap()
            .enabled
    );
    assert_eq!(
        current(&s, &a, "alice")
            .await
            .unwrap()
            .access_token
            .expose(),
        "at-1"
    );
    assert_eq!(
        s.set_app_enabled("acme", "nope", true).await.unwrap_err(),
        StoreError::NotFound
    );
}

#[tokio::test]
async fn orgs_are_isolated() {
    let (_tmp, _clock, s) = fresh();
    let a = s.create_app(app("acme", "github")).await.unwrap();
    assert!(put_token(&s, &a, "alice", "at-acme").await);
    assert_eq!(s.get_app("globex", "github").await.unwrap(), None);
    assert!(s.list_apps("globex").await.unwrap().is_empty());
    assert_eq!(
        s.get_token("globex", "github", a.incarnation, a.generation, "alice")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.list_authorizations("globex", "github").await.unwrap_err(),
        StoreError::NotFound
    );
    // Even an app with the same id in the other org does not see the tokens.
    let g = s.create_app(app("globex", "github")).await.unwrap();
    assert_eq!(current(&s, &g, "alice").await, None);
    assert_eq!(
        s.get_token("globex", "github", a.incarnation, a.generation, "alice")
            .await
            .unwrap(),
        None
    );
    assert_eq!(s.count_authorizations("globex", "github").await.unwrap(), 0);
    assert!(!s.delete_token("globex", "github", "alice").await.unwrap());
    assert!(current(&s, &a, "alice").await.is_some());
}
