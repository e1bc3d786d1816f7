//! The stored form of a user's token set (grant): keys, version, and the access and refresh
//! tokens sealed under the grant's full key.

use serde::{Deserialize, Serialize};

use super::super::grant_health::{later, GrantRef, HealthUpdate};
use super::super::model::{Authorization, GrantHealth, GrantState, TokenSet};
use super::super::seal::{Aad, Sealed, StoreKey};
use super::super::StoreError;
use super::{decode_keyed, open_secret, TokenKey, FORMAT_VERSION};

/// Stored form of a [`TokenSet`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenRecord {
    v: u32,
    org: String,
    app: String,
    user: String,
    incarnation: u64,
    generation: u64,
    /// The grant's version ([`TokenSet::version`]); records written before versions existed
    /// read as 0.
    #[serde(default)]
    version: u64,
    /// Sealed with `["token", org, app, incarnation, generation, user, "access_token"]`.
    access_token: Sealed,
    /// Sealed like `access_token`, field `"refresh_token"`.
    refresh_token: Option<Sealed>,
    token_type: Option<String>,
    scopes: Vec<String>,
    expires_at: Option<u64>,
    obtained_at: u64,
    /// The grant's health ([`GrantHealth`]), in the clear next to the sealed tokens: never
    /// a secret. Left out while it is the default, so grants that never had any read and
    /// write as before.
    #[serde(default, skip_serializing_if = "HealthRecord::is_default")]
    health: HealthRecord,
}

/// Stored form of a [`GrantHealth`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthRecord {
    /// `ok`, `refresh_failing` or `needs_consent`.
    #[serde(default, skip_serializing_if = "StateRecord::is_ok")]
    state: StateRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failing_since: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_refreshed_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_used_at: Option<u64>,
}

/// Stored form of a [`GrantState`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StateRecord {
    #[default]
    Ok,
    RefreshFailing,
    NeedsConsent,
}

impl StateRecord {
    fn is_ok(&self) -> bool {
        *self == StateRecord::Ok
    }
}

impl HealthRecord {
    fn is_default(&self) -> bool {
        *self == HealthRecord::default()
    }

    fn new(h: &GrantHealth) -> HealthRecord {
        HealthRecord {
            state: match h.state {
                GrantState::Ok => StateRecord::Ok,
                GrantState::RefreshFailing => StateRecord::RefreshFailing,
                GrantState::NeedsConsent => StateRecord::NeedsConsent,
            },
            last_error: h.last_error.clone(),
            failing_since: h.failing_since,
            last_refreshed_at: h.last_refreshed_at,
            last_used_at: h.last_used_at,
        }
    }

    fn model(&self) -> GrantHealth {
        GrantHealth {
            state: match self.state {
                StateRecord::Ok => GrantState::Ok,
                StateRecord::RefreshFailing => GrantState::RefreshFailing,
                StateRecord::NeedsConsent => GrantState::NeedsConsent,
            },
            last_error: self.last_error.clone(),
            failing_since: self.failing_since,
            last_refreshed_at: self.last_refreshed_at,
            last_used_at: self.last_used_at,
        }
    }
}

fn token_aad(k: &TokenKey, field: &str) -> Aad {
    Aad::new(&[
        b"token",
        k.org.as_bytes(),
        k.app.as_bytes(),
        &k.incarnation.to_be_bytes(),
        &k.generation.to_be_bytes(),
        k.user.as_bytes(),
        field.as_bytes(),
    ])
}

impl TokenRecord {
    /// The key this token set is stored under for the given app incarnation.
    pub(crate) fn key_of(t: &TokenSet, incarnation: u64) -> TokenKey {
        TokenKey {
            org: t.org.clone(),
            app: t.app.clone(),
            incarnation,
            generation: t.generation,
            user: t.user.clone(),
        }
    }

    /// Seals `t` for the app incarnation `incarnation`.
    pub(crate) fn seal(
        t: &TokenSet,
        incarnation: u64,
        key: &StoreKey,
    ) -> Result<TokenRecord, StoreError> {
        let k = Self::key_of(t, incarnation);
        Ok(TokenRecord {
            v: FORMAT_VERSION,
            org: t.org.clone(),
            app: t.app.clone(),
            user: t.user.clone(),
            incarnation,
            generation: t.generation,
            version: t.version,
            access_token: key.seal_secret(&token_aad(&k, "access_token"), &t.access_token)?,
            refresh_token: t
                .refresh_token
                .as_ref()
                .map(|r| key.seal_secret(&token_aad(&k, "refresh_token"), r))
                .transpose()?,
            token_type: t.token_type.clone(),
            scopes: t.scopes.clone(),
            expires_at: t.expires_at,
            obtained_at: t.obtained_at,
            health: HealthRecord::new(&t.health),
        })
    }

    /// Decodes the `tokens` value stored under `k` without opening secrets.
    pub(crate) fn decode(k: &TokenKey, bytes: &[u8]) -> Result<TokenRecord, StoreError> {
        decode_keyed(&k.name(), bytes, |rec: &TokenRecord| {
            rec.org == k.org
                && rec.app == k.app
                && rec.user == k.user
                && rec.incarnation == k.incarnation
                && rec.generation == k.generation
        })
    }

    /// Opens the secrets and returns the model.
    pub(crate) fn open(self, key: &StoreKey) -> Result<TokenSet, StoreError> {
        let k = TokenKey {
            org: self.org,
            app: self.app,
            incarnation: self.incarnation,
            generation: self.generation,
            user: self.user,
        };
        let name = k.name();
        let access_token = open_secret(
            key,
            &name,
            &token_aad(&k, "access_token"),
            &self.access_token,
        )?;
        let refresh_token = self
            .refresh_token
            .as_ref()
            .map(|r| open_secret(key, &name, &token_aad(&k, "refresh_token"), r))
            .transpose()?;
        Ok(TokenSet {
            org: k.org,
            app: k.app,
            user: k.user,
            generation: k.generation,
            version: self.version,
            access_token,
            refresh_token,
            token_type: self.token_type,
            scopes: self.scopes,
            expires_at: self.expires_at,
            obtained_at: self.obtained_at,
            health: self.health.model(),
        })
    }

    /// The grant's version.
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// Sets the grant's version (the store does, on every write).
    pub(crate) fn set_version(&mut self, version: u64) {
        self.version = version;
    }

    /// Every sealed field with its associated data (the store key re-seal moves them).
    pub(crate) fn sealed_fields(&mut self) -> Vec<(Aad, &mut Sealed)> {
        let k = TokenKey {
            org: self.org.clone(),
            app: self.app.clone(),
            incarnation: self.incarnation,
            generation: self.generation,
            user: self.user.clone(),
        };
        let mut out = vec![(token_aad(&k, "access_token"), &mut self.access_token)];
        if let Some(r) = self.refresh_token.as_mut() {
            out.push((token_aad(&k, "refresh_token"), r));
        }
        out
    }

    /// The key of the grant `g` names.
    pub(crate) fn key_of_ref(g: &GrantRef) -> TokenKey {
        TokenKey {
            org: g.org.clone(),
            app: g.app.clone(),
            incarnation: g.incarnation,
            generation: g.generation,
            user: g.user.clone(),
        }
    }

    /// A health-only write: applies `update` unless `g` names another version. Returns the
    /// health before and after (version and tokens stay), or `None` for another version.
    pub(crate) fn apply_health(
        &mut self,
        g: &GrantRef,
        update: &HealthUpdate,
    ) -> Option<(GrantHealth, GrantHealth)> {
        if g.version.is_some_and(|v| v != self.version) {
            return None;
        }
        let before = self.health.model();
        let after = update.apply(&before);
        self.health = HealthRecord::new(&after);
        Some((before, after))
    }

    /// A token write over `stored`: keeps the later "last used" of the two, so a refresh
    /// that read the grant before a "last used" write does not undo it.
    pub(crate) fn keep_last_used(&mut self, stored: &TokenRecord) {
        self.health.last_used_at = later(self.health.last_used_at, stored.health.last_used_at);
    }

    /// Whether the grant still authorizes anything: not one the provider refused for good
    /// (kept as `needs_consent` for the pages, left out of authorization listings).
    pub(crate) fn is_live(&self) -> bool {
        self.health.state != StateRecord::NeedsConsent
    }

    /// The listing view: no secret is opened.
    pub(crate) fn authorization(self) -> Authorization {
        Authorization {
            user: self.user,
            scopes: self.scopes,
            expires_at: self.expires_at,
            obtained_at: self.obtained_at,
        }
    }
}
