//! The stored form of a user's token set (grant): keys, version, and the access and refresh
//! tokens sealed under the grant's full key.

use serde::{Deserialize, Serialize};

use super::super::model::{Authorization, TokenSet};
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
            // Not stored yet: the grant-health work keeps it outside the sealed fields.
            health: Default::default(),
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
