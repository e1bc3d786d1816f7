//! What refreshes and uses do to a grant's health ([`crate::store::grant_health`]):
//!
//! - a temporary refresh failure (network, 5xx, `temporarily_unavailable`, any answer but
//!   `invalid_grant`) marks the grant `refresh_failing` with the reason worded for people,
//!   for the version it failed on: the tokens stay and the next request or background round
//!   tries again;
//! - a successful refresh makes it `ok` again (`recovered` if it was failing);
//! - `invalid_grant` (after re-reading: another replica may have rotated the refresh token)
//!   keeps the grant's row as `needs_consent` with its tokens cleared, so pages can say why,
//!   while the proxy answers `401 authorization_required` for it and never injects it;
//! - every injection notes "last used" in memory ([`super::usage`]).
//!
//! Each change that this replica made is announced once, to the events sink if one is set
//! (`oauth::events`): the replica that wrote is the only one that knows the state moved.

use std::sync::Arc;

use super::super::events::{EventKind, GrantEvent};
use super::super::grant::TokenError;
use super::Injector;
use crate::store::grant_health::{needs_consent, refreshed};
use crate::store::{
    App, GrantHealth, GrantRef, GrantState, HealthUpdate, Secret, StoreError, TokenSet,
};

impl Injector {
    /// Which grant `t` is, under `app`'s incarnation; with its version when `versioned`.
    fn grant_ref(app: &App, t: &TokenSet, versioned: bool) -> GrantRef {
        GrantRef {
            org: app.org.clone(),
            app: app.id.clone(),
            user: t.user.clone(),
            incarnation: app.incarnation,
            generation: t.generation,
            version: versioned.then_some(t.version),
        }
    }

    /// Notes that a request used `t` now (memory only; written by the flush).
    pub(super) fn note_used(&self, app: &App, t: &TokenSet, now: u64) {
        let grant = super::usage::UseOf {
            org: &app.org,
            app: &app.id,
            user: &t.user,
            incarnation: app.incarnation,
            generation: t.generation,
        };
        self.usage.touch(grant, now);
    }

    /// The health a refresh of `current` at `now` stores with its new tokens.
    pub(super) fn refreshed_health(current: &TokenSet, now: u64) -> GrantHealth {
        refreshed(&current.health, now)
    }

    /// After a refresh of `previous` was stored: announces the recovery of a failing grant.
    pub(super) fn refresh_stored(&self, app: &App, previous: &TokenSet, stored: &TokenSet) {
        if previous.health.state == GrantState::RefreshFailing {
            self.emit(EventKind::Recovered, app, stored);
        }
    }

    /// Records a temporary refresh failure of `current` (best effort: a store failure here
    /// is logged, the caller's answer is the refresh's).
    pub(super) async fn note_refresh_failed(&self, app: &App, current: &TokenSet, e: &TokenError) {
        let Ok(at) = self.clock.now() else { return };
        let update = HealthUpdate::RefreshFailed {
            error: e.caller_reason(),
            at,
        };
        match self
            .store
            .update_grant_health(&Self::grant_ref(app, current, true), &update)
            .await
        {
            Ok(Some((before, after))) => {
                if before.state != GrantState::RefreshFailing {
                    let mut t = current.clone();
                    t.health = after;
                    self.emit(EventKind::RefreshFailed, app, &t);
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(org = %app.org, app = %app.id, error = %e, "storing a refresh failure failed")
            }
        }
    }

    /// The provider refused `current` for good: keeps the grant as `needs_consent` with its
    /// tokens cleared and already expired, unless another writer replaced it meanwhile.
    pub(super) async fn mark_needs_consent(
        &self,
        app: &App,
        current: &TokenSet,
        e: &TokenError,
    ) -> Result<(), StoreError> {
        let now = self.clock.now()?;
        let mut dead = current.clone();
        dead.access_token = Secret::new("");
        dead.refresh_token = None;
        dead.expires_at = Some(current.expires_at.map_or(now, |x| x.min(now)));
        dead.health = needs_consent(
            &current.health,
            &format!("the provider no longer accepts this authorization ({e})"),
            now,
        );
        if let Some(stored) = self
            .store
            .replace_token_if_current(dead, app.incarnation)
            .await?
        {
            self.emit(EventKind::NeedsConsent, app, &stored);
        }
        Ok(())
    }

    /// Announces `event` to the events sink, if there is one (consent and disconnect, which
    /// change grants outside the injector).
    pub(crate) fn announce(&self, event: GrantEvent) {
        if let Some(sink) = self.events.get() {
            sink(event);
        }
    }

    /// Announces `kind` for grant `t` to the events sink, if there is one.
    pub(crate) fn emit(&self, kind: EventKind, app: &App, t: &TokenSet) {
        if let Some(sink) = self.events.get() {
            let at = self.clock.now().unwrap_or(0);
            sink(GrantEvent::of(
                kind,
                &app.org,
                &app.id,
                &t.user,
                at,
                Some(&t.health),
            ));
        }
    }

    /// The "last used" coalescer, for the flush task.
    pub fn last_used(&self) -> Arc<super::usage::LastUsed> {
        self.usage.clone()
    }

    /// The background refresher's refresh of `user`'s grant: the request path's single-flight
    /// and store lease, with the refresher's test of whether it is still due (`window`
    /// seconds ahead of expiry, or a day since the last refresh), re-checked under the lock.
    pub async fn refresh_ahead(
        &self,
        app: &Arc<App>,
        user: &str,
        window: u64,
    ) -> Result<Arc<TokenSet>, super::InjectError> {
        self.refresh(app, user, None, Some(window)).await
    }

    /// Whether `t` can be refreshed at all (a refresh token, and a way to use it).
    pub fn refreshable(&self, app: &App, t: &TokenSet) -> bool {
        self.can_refresh(app, t)
    }

    /// Sends grant events to `sink` from now on (set once, at startup).
    pub fn set_events(&self, sink: super::super::events::EventSink) {
        let _ = self.events.set(sink);
    }
}
