//! The app lifecycle an org's admins drive (admin API, `tollgate app`): create, update,
//! enable, disable, reset, delete, and revoking one user's authorization, each with its audit
//! event and, where tokens are dropped, their best-effort revocation at the provider in the
//! background (RFC 7009). An admin acts only on its own org: another org's app is simply not
//! found. `web::admin` translates HTTP to these calls and back.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::app::{self, AppConfig, FieldErrors};
use super::OAuth;
use crate::identity::Caller;
use crate::store::{App, AuditEvent, Authorization, StoreError, TokenSet};

/// What an admin operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No app with that id in the admin's org.
    #[error("no app {0:?} in your organization")]
    NotFound(String),
    /// Create: the id is taken in the org.
    #[error("app {0:?} already exists in your organization")]
    Exists(String),
    /// Revoke: the user holds no tokens for the app.
    #[error("user {user:?} has not authorized app {app:?}")]
    NotAuthorized {
        /// App id.
        app: String,
        /// The user.
        user: String,
    },
    /// The update moves provider endpoints (named) to another host without sending the
    /// client secret: the stored one must not follow them there.
    #[error(
        "changing the host of {} needs client_secret in the same request",
        .0.join(", ")
    )]
    SecretRequired(Vec<String>),
    /// The configuration is invalid; every bad field is named.
    #[error("invalid fields: {}", .0.keys().cloned().collect::<Vec<_>>().join(", "))]
    Invalid(FieldErrors),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An app as admins see it: the configuration (its serializer masks the secrets) and what
/// the store and the policies in force say about it.
#[derive(Debug, Serialize)]
pub struct AppView<'a> {
    /// The configuration, secrets masked.
    #[serde(flatten)]
    pub config: &'a AppConfig,
    /// Whether a client secret is stored (its value never leaves the store).
    pub client_secret_set: bool,
    /// Disabled apps keep their tokens but inject nothing.
    pub enabled: bool,
    /// Bumped by every reset and every move of a provider endpoint to another host.
    pub generation: u64,
    /// The redirect URI to register at the provider (the same for every app).
    pub redirect_uri: &'a str,
    /// How many users hold tokens.
    pub authorized_users: usize,
    /// `ok`, or `broken` when `problems` is not empty.
    pub status: &'static str,
    /// Why token requests would be refused under the policies in force now.
    pub problems: Vec<String>,
    /// Creation time, Unix seconds.
    pub created_at: u64,
    /// Last change, Unix seconds.
    pub updated_at: u64,
}

/// The lifecycle operations, as one admin of one org.
pub struct AppAdmin<'a> {
    /// Store, index, tokens and policies.
    oauth: &'a OAuth,
    /// The admin acting: its org bounds what it sees, its user is recorded in the audit log.
    admin: &'a Caller,
}

impl OAuth {
    /// The app lifecycle as `admin` (who must hold the `admin` role; the caller checks).
    pub fn admin<'a>(&'a self, admin: &'a Caller) -> AppAdmin<'a> {
        AppAdmin { oauth: self, admin }
    }
}

type AdminResult<T> = Result<T, AdminError>;

impl AppAdmin<'_> {
    /// The org's apps.
    pub async fn list(&self) -> AdminResult<Vec<App>> {
        Ok(self.oauth.store.list_apps(&self.admin.org).await?)
    }

    /// One app of the org.
    pub async fn get(&self, id: &str) -> AdminResult<App> {
        self.oauth
            .store
            .get_app(&self.admin.org, id)
            .await?
            .ok_or_else(|| AdminError::NotFound(id.to_string()))
    }

    /// How `app` is shown.
    pub async fn view<'v>(&'v self, app: &'v App) -> AdminResult<AppView<'v>> {
        let authorized_users = self
            .oauth
            .store
            .count_authorizations(&app.org, &app.id)
            .await?;
        let problems = app::problems(app, &self.oauth.policies.current());
        Ok(AppView {
            config: &app.config,
            client_secret_set: app.client_secret.is_some(),
            enabled: app.enabled,
            generation: app.generation,
            redirect_uri: self.oauth.tokens.redirect_uri(),
            authorized_users,
            status: if problems.is_empty() { "ok" } else { "broken" },
            problems,
            created_at: app.created_at,
            updated_at: app.updated_at,
        })
    }

    /// Creates an app from an admin's document (README "Outbound applications").
    pub async fn create(&self, doc: &Map<String, Value>) -> AdminResult<App> {
        let org = &self.admin.org;
        let id = doc.get("id").and_then(Value::as_str);
        let taken = self.taken_domains(id).await?;
        let config = app::new_app(doc, org, &self.oauth.policies.current(), &taken)
            .map_err(AdminError::Invalid)?;
        let id = config.id.clone();
        // The store's create is the one (atomic) duplicate check.
        let app = match self.oauth.store.create_app(App::new(org, config)).await {
            Err(StoreError::Conflict) => return Err(AdminError::Exists(id)),
            other => other?,
        };
        self.audit(
            "app.create",
            &app.id,
            json!({"name": app.name, "domains": app.domains}),
        )
        .await;
        Ok(app)
    }

    /// Changes the fields `patch` sets ([`app::patched`] has the rules).
    ///
    /// An update that moves a provider endpoint (`authorize_url`, `token_url`,
    /// `revocation_url`, a webhook request URL, the revocation template's URL) to another host must send `client_secret`
    /// too ([`AdminError::SecretRequired`]) when the app has one, and starts a new generation
    /// in the same write: the users' tokens belong to the old provider and are dropped (and
    /// revoked there), so no stored refresh token is ever sent to the new host.
    pub async fn update(&self, id: &str, patch: &Map<String, Value>) -> AdminResult<App> {
        // Unknown and mistyped fields are reported before the app is looked up.
        app::parse(patch).map_err(AdminError::Invalid)?;
        let stored = self.get(id).await?;
        let taken = self.taken_domains(Some(id)).await?;
        let config = app::patched(&stored, patch, &self.oauth.policies.current(), &taken)
            .map_err(AdminError::Invalid)?;
        let moved = moved_endpoints(&stored.config, &config);
        let secret_sent = patch.get("client_secret").is_some_and(|v| !v.is_null());
        if !moved.is_empty() && stored.client_secret.is_some() && !secret_sent {
            return Err(AdminError::SecretRequired(moved));
        }
        let (app, dropped) = if moved.is_empty() {
            let app = App { config, ..stored };
            (self.oauth.store.update_app(app).await?, Vec::new())
        } else {
            // Read before the move: afterwards the old generation's tokens are gone.
            let tokens = self.oauth.store.list_tokens(&self.admin.org, id).await?;
            let next = App {
                config,
                ..stored.clone()
            };
            let app = self.oauth.store.update_app_new_generation(next).await?;
            self.revoke_in_background(stored, tokens);
            (app, moved)
        };
        // Field names only: values (the secret above all) never go to the audit log.
        let changed: Vec<&String> = patch.keys().collect();
        let mut detail = json!({ "changed": changed });
        if !dropped.is_empty() {
            detail["moved"] = json!(dropped);
            detail["generation"] = json!(app.generation);
        }
        self.audit("app.update", id, detail).await;
        Ok(app)
    }

    /// Enables (stored tokens usable again, consents may start) or disables the app.
    pub async fn set_enabled(&self, id: &str, enabled: bool) -> AdminResult<App> {
        self.get(id).await?;
        let app = self
            .oauth
            .store
            .set_app_enabled(&self.admin.org, id, enabled)
            .await?;
        let action = if enabled { "app.enable" } else { "app.disable" };
        self.audit(action, id, json!({})).await;
        Ok(app)
    }

    /// Deletes every user's tokens and invalidates pending consents (the generation is
    /// bumped); the configuration stays. The tokens are revoked at the provider.
    pub async fn reset(&self, id: &str) -> AdminResult<App> {
        self.get(id).await?;
        let tokens = self.oauth.store.list_tokens(&self.admin.org, id).await?;
        let app = self.oauth.store.reset_app(&self.admin.org, id).await?;
        self.audit("app.reset", id, json!({"generation": app.generation}))
            .await;
        self.revoke_in_background(app.clone(), tokens);
        Ok(app)
    }

    /// Deletes the app with its configuration and every token; the tokens are revoked at the
    /// provider.
    pub async fn delete(&self, id: &str) -> AdminResult<()> {
        let app = self.get(id).await?;
        // Read before deleting: afterwards the tokens (and the client secret) are gone.
        let tokens = self.oauth.store.list_tokens(&self.admin.org, id).await?;
        self.oauth.store.delete_app(&self.admin.org, id).await?;
        self.audit("app.delete", id, json!({})).await;
        self.revoke_in_background(app, tokens);
        Ok(())
    }

    /// The users who authorized the app (never token values).
    pub async fn authorizations(&self, id: &str) -> AdminResult<Vec<Authorization>> {
        self.get(id).await?;
        Ok(self
            .oauth
            .store
            .list_authorizations(&self.admin.org, id)
            .await?)
    }

    /// Revokes one user's tokens for the app at the provider, then deletes them
    /// ([`OAuth::disconnect`], the same as the user's own Disconnect).
    pub async fn revoke(&self, id: &str, user: &str) -> AdminResult<()> {
        let app = self.get(id).await?;
        let done = self
            .oauth
            .disconnect(&app, user, &self.admin.user, "authorization.revoke")
            .await?;
        match done {
            Some(_) => Ok(()),
            None => Err(AdminError::NotAuthorized {
                app: id.to_string(),
                user: user.to_string(),
            }),
        }
    }

    /// The org's most recent audit events, at most `limit`.
    pub async fn audit_log(&self, limit: usize) -> AdminResult<Vec<AuditEvent>> {
        Ok(self.oauth.store.list_audit(&self.admin.org, limit).await?)
    }

    /// The org's audit events that pass `query`'s filters (its `org` is always the
    /// admin's), newest first.
    pub async fn query_audit(
        &self,
        query: &crate::store::AuditQuery,
    ) -> AdminResult<Vec<AuditEvent>> {
        let query = crate::store::AuditQuery {
            org: self.admin.org.clone(),
            ..query.clone()
        };
        Ok(self.oauth.store.query_audit(&query).await?)
    }

    /// Domain patterns of the org's other apps → owning app id.
    async fn taken_domains(&self, except: Option<&str>) -> AdminResult<BTreeMap<String, String>> {
        let mut taken = BTreeMap::new();
        for app in self.oauth.store.list_apps(&self.admin.org).await? {
            if Some(app.id.as_str()) == except {
                continue;
            }
            for d in &app.domains {
                taken.insert(d.clone(), app.id.clone());
            }
        }
        Ok(taken)
    }

    /// Appends an audit event; a failure is logged, never returned (the change is made).
    async fn audit(&self, action: &str, target: &str, detail: Value) {
        let event = AuditEvent::new(&self.admin.org, &self.admin.user, action, target, detail);
        if let Err(e) = self.oauth.store.append_audit(event).await {
            tracing::error!(error = %e, action, "could not append an audit event");
        }
    }

    /// Revokes `tokens` at the app's provider in the background (RFC 7009 or the app's
    /// revocation template, best effort); nothing to do when the app has neither.
    fn revoke_in_background(&self, app: App, tokens: Vec<TokenSet>) {
        let client = self.oauth.tokens.clone();
        if !client.can_revoke(&app) || tokens.is_empty() {
            return;
        }
        tokio::spawn(async move {
            for t in &tokens {
                client.revoke(&app, t).await;
            }
        });
    }
}

/// The provider endpoints of `new` that reach another server (scheme, host, port) than in
/// `old`, by field name. An endpoint added where there was none counts (tokens would be sent
/// there); one removed does not.
pub fn moved_endpoints(old: &AppConfig, new: &AppConfig) -> Vec<String> {
    let moved = |was: Option<&str>, now: Option<&str>| match (was, now) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(a), Some(b)) => !app::same_origin(a, b),
    };
    let mut out = Vec::new();
    let fields = [
        (
            "authorize_url",
            Some(old.authorize_url.as_str()),
            Some(new.authorize_url.as_str()),
        ),
        (
            "token_url",
            old.token_url.as_deref(),
            new.token_url.as_deref(),
        ),
        (
            "revocation_url",
            old.revocation_url.as_deref(),
            new.revocation_url.as_deref(),
        ),
    ];
    for (name, was, now) in fields {
        if moved(was, now) {
            out.push(name.to_string());
        }
    }
    let old_hook = old.webhook.as_ref();
    for (step, t) in new.webhook.iter().flat_map(|w| w.templates()) {
        let was = old_hook
            .and_then(|w| w.templates().find(|(s, _)| *s == step))
            .map(|(_, t)| t.url.as_str());
        if moved(was, Some(&t.url)) {
            out.push(format!("webhook.{}.url", step.name()));
        }
    }
    let was = old.revocation.as_ref().map(|t| t.url.as_str());
    if moved(was, new.revocation.as_ref().map(|t| t.url.as_str())) {
        out.push("revocation.url".into());
    }
    out
}
