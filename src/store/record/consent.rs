//! The stored form of consent tickets and pending authorizations (the PKCE verifier sealed).

use serde::{Deserialize, Serialize};

use super::super::model::{ConsentTicket, PendingAuthorization};
use super::super::seal::{Aad, Sealed, StoreKey};
use super::super::StoreError;
use super::{decode_keyed, open_secret, pending_name, ticket_name, FORMAT_VERSION};

/// What a ticket or pending authorization is bound to: usable until `expires_at`, and only
/// while its app still has this incarnation and generation.
pub(crate) struct Binding<'a> {
    /// The app's org.
    pub(crate) org: &'a str,
    /// The app's id.
    pub(crate) app: &'a str,
    /// The app's incarnation at issue.
    pub(crate) incarnation: u64,
    /// The app's generation at issue.
    pub(crate) generation: u64,
    /// Expiry, Unix seconds.
    pub(crate) expires_at: u64,
}

/// A stored ticket or pending authorization: the store checks and sweeps both alike.
pub(crate) trait ConsentRecord {
    /// What the record is bound to.
    fn binding(&self) -> Binding<'_>;
}

impl ConsentRecord for TicketRecord {
    fn binding(&self) -> Binding<'_> {
        Binding {
            org: &self.org,
            app: &self.app,
            incarnation: self.incarnation,
            generation: self.generation,
            expires_at: self.expires_at,
        }
    }
}

impl ConsentRecord for PendingRecord {
    fn binding(&self) -> Binding<'_> {
        Binding {
            org: &self.org,
            app: &self.app,
            incarnation: self.incarnation,
            generation: self.generation,
            expires_at: self.expires_at,
        }
    }
}

/// Stored form of a [`ConsentTicket`] (no secrets).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TicketRecord {
    v: u32,
    id: String,
    org: String,
    user: String,
    app: String,
    generation: u64,
    incarnation: u64,
    expires_at: u64,
}

impl TicketRecord {
    /// The stored form of `t`.
    pub(crate) fn new(t: &ConsentTicket) -> TicketRecord {
        TicketRecord {
            v: FORMAT_VERSION,
            id: t.id.clone(),
            org: t.org.clone(),
            user: t.user.clone(),
            app: t.app.clone(),
            generation: t.generation,
            incarnation: t.incarnation,
            expires_at: t.expires_at,
        }
    }

    /// Decodes the `tickets` value stored under `id`.
    pub(crate) fn decode(id: &str, bytes: &[u8]) -> Result<TicketRecord, StoreError> {
        decode_keyed(&ticket_name(id), bytes, |rec: &TicketRecord| rec.id == id)
    }

    /// The model.
    pub(crate) fn into_ticket(self) -> ConsentTicket {
        ConsentTicket {
            id: self.id,
            org: self.org,
            user: self.user,
            app: self.app,
            generation: self.generation,
            incarnation: self.incarnation,
            expires_at: self.expires_at,
        }
    }
}

/// Stored form of a [`PendingAuthorization`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PendingRecord {
    v: u32,
    state: String,
    org: String,
    user: String,
    app: String,
    generation: u64,
    incarnation: u64,
    /// Sealed with `["pending", state, "pkce_verifier"]`.
    pkce_verifier: Option<Sealed>,
    redirect_uri: String,
    expires_at: u64,
}

fn pending_aad(state: &str, field: &str) -> Aad {
    Aad::new(&[b"pending", state.as_bytes(), field.as_bytes()])
}

impl PendingRecord {
    /// Seals `p`.
    pub(crate) fn seal(
        p: &PendingAuthorization,
        key: &StoreKey,
    ) -> Result<PendingRecord, StoreError> {
        Ok(PendingRecord {
            v: FORMAT_VERSION,
            state: p.state.clone(),
            org: p.org.clone(),
            user: p.user.clone(),
            app: p.app.clone(),
            generation: p.generation,
            incarnation: p.incarnation,
            pkce_verifier: p
                .pkce_verifier
                .as_ref()
                .map(|v| key.seal_secret(&pending_aad(&p.state, "pkce_verifier"), v))
                .transpose()?,
            redirect_uri: p.redirect_uri.clone(),
            expires_at: p.expires_at,
        })
    }

    /// Decodes the `pending` value stored under `state` without opening secrets.
    pub(crate) fn decode(state: &str, bytes: &[u8]) -> Result<PendingRecord, StoreError> {
        decode_keyed(&pending_name(state), bytes, |rec: &PendingRecord| {
            rec.state == state
        })
    }

    /// Opens the secret and returns the model.
    pub(crate) fn open(self, key: &StoreKey) -> Result<PendingAuthorization, StoreError> {
        let name = pending_name(&self.state);
        let pkce_verifier = self
            .pkce_verifier
            .as_ref()
            .map(|v| open_secret(key, &name, &pending_aad(&self.state, "pkce_verifier"), v))
            .transpose()?;
        Ok(PendingAuthorization {
            state: self.state,
            org: self.org,
            user: self.user,
            app: self.app,
            generation: self.generation,
            incarnation: self.incarnation,
            pkce_verifier,
            redirect_uri: self.redirect_uri,
            expires_at: self.expires_at,
        })
    }
}
