//! The stored form of consent tickets and pending authorizations.
//!
//! Neither a ticket id nor a `state` is ever stored in the clear: both are looked up by
//! [`lookup_hash`] (SHA-256 over a domain-separation label and the value), which is the
//! record's key. A ticket keeps its id only sealed, bound to the hash and to (org, app, user),
//! so that a repeated `401` can give the same consent URL; a pending authorization keeps its
//! PKCE verifier sealed, bound to the hash and to (org, app, user). The hashing lives here,
//! below the `Store` trait, so every backend stores the same thing.

use serde::{Deserialize, Serialize};

use super::super::model::{ConsentTicket, PendingAuthorization, BROWSER_TAG_LEN};
use super::super::seal::{push_len_prefixed, Aad, Sealed, StoreKey};
use super::super::StoreError;
use super::{decode, open_secret, FORMAT_VERSION};

/// Length of a [`lookup_hash`].
pub(crate) const LOOKUP_LEN: usize = 32;

/// Domain-separation label of a ticket id's hash.
const TICKET_LABEL: &[u8] = b"tollgate consent ticket v1\0";

/// Domain-separation label of a `state`'s hash.
const PENDING_LABEL: &[u8] = b"tollgate pending state v1\0";

/// Which kind of consent record a lookup hash is for.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    /// A consent ticket, by its id.
    Ticket,
    /// A pending authorization, by its `state`.
    Pending,
}

/// The store key of a ticket (`id`) or pending authorization (`state`): SHA-256 of a label
/// naming the kind, then the value.
pub(crate) fn lookup_hash(kind: Kind, value: &str) -> [u8; LOOKUP_LEN] {
    let label = match kind {
        Kind::Ticket => TICKET_LABEL,
        Kind::Pending => PENDING_LABEL,
    };
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(label);
    ctx.update(value.as_bytes());
    let mut out = [0u8; LOOKUP_LEN];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Key of the one live ticket of (org, app, user) in the owners index.
pub(crate) fn ticket_owner_key(org: &str, app: &str, user: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(12 + org.len() + app.len() + user.len());
    for part in [org, app, user] {
        push_len_prefixed(&mut k, part.as_bytes());
    }
    k
}

/// Name of a consent record in errors: the kind and the first bytes of its hash (never the
/// id or state).
pub(crate) fn consent_name(kind: Kind, hash: &[u8]) -> String {
    let prefix: String = hash.iter().take(4).map(|b| format!("{b:02x}")).collect();
    match kind {
        Kind::Ticket => format!("ticket/{prefix}…"),
        Kind::Pending => format!("pending/{prefix}…"),
    }
}

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

/// The fields tickets and pending authorizations share, in their stored form.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Bound {
    org: String,
    user: String,
    app: String,
    generation: u64,
    incarnation: u64,
    expires_at: u64,
}

/// The [`Bound`] of a model record (a ticket or pending authorization).
macro_rules! bound_of {
    ($r:expr) => {
        Bound {
            org: $r.org.clone(),
            user: $r.user.clone(),
            app: $r.app.clone(),
            generation: $r.generation,
            incarnation: $r.incarnation,
            expires_at: $r.expires_at,
        }
    };
}

impl Bound {
    /// The ticket `id` with these fields.
    pub(crate) fn into_ticket(self, id: String) -> ConsentTicket {
        ConsentTicket {
            id,
            org: self.org,
            user: self.user,
            app: self.app,
            generation: self.generation,
            incarnation: self.incarnation,
            expires_at: self.expires_at,
        }
    }

    /// The owners-index key of a ticket with these fields.
    pub(crate) fn owner_key(&self) -> Vec<u8> {
        ticket_owner_key(&self.org, &self.app, &self.user)
    }

    fn binding(&self) -> Binding<'_> {
        Binding {
            org: &self.org,
            app: &self.app,
            incarnation: self.incarnation,
            generation: self.generation,
            expires_at: self.expires_at,
        }
    }

    /// AAD of a sealed field: the kind, the lookup hash and (org, app, user), so a record
    /// moved to another key or edited to name another user does not open.
    fn aad(&self, kind: &[u8], hash: &[u8], field: &str) -> Aad {
        Aad::new(&[
            kind,
            hash,
            self.org.as_bytes(),
            self.app.as_bytes(),
            self.user.as_bytes(),
            field.as_bytes(),
        ])
    }
}

/// Stored form of a [`ConsentTicket`], under its [`lookup_hash`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TicketRecord {
    v: u32,
    /// Who and what it is for.
    bound: Bound,
    /// The ticket id, sealed with `["ticket", hash, org, app, user, "id"]`.
    id: Sealed,
}

impl ConsentRecord for TicketRecord {
    fn binding(&self) -> Binding<'_> {
        self.bound.binding()
    }
}

impl TicketRecord {
    /// Seals `t` for storage under `hash` (its [`lookup_hash`]).
    pub(crate) fn seal(
        t: &ConsentTicket,
        hash: &[u8],
        key: &StoreKey,
    ) -> Result<TicketRecord, StoreError> {
        let bound = bound_of!(t);
        let id = key.seal(&bound.aad(b"ticket", hash, "id"), t.id.as_bytes())?;
        Ok(TicketRecord {
            v: FORMAT_VERSION,
            bound,
            id,
        })
    }

    /// Decodes the value stored under `hash`, without opening the id.
    pub(crate) fn decode(hash: &[u8], bytes: &[u8]) -> Result<TicketRecord, StoreError> {
        decode(&consent_name(Kind::Ticket, hash), bytes)
    }

    /// Opens the id and returns the model; a record that does not belong under `hash` (moved,
    /// edited, another key) is corrupt.
    pub(crate) fn open(self, hash: &[u8], key: &StoreKey) -> Result<ConsentTicket, StoreError> {
        let name = consent_name(Kind::Ticket, hash);
        let aad = self.bound.aad(b"ticket", hash, "id");
        let id = open_secret(key, &name, &aad, &self.id)?;
        if lookup_hash(Kind::Ticket, id.expose()) != hash {
            return Err(StoreError::Corrupt {
                record: name,
                reason: "the sealed id does not hash to the record's key".into(),
            });
        }
        Ok(self.bound.into_ticket(id.expose().to_owned()))
    }

    /// The sealed id with its associated data, for the record stored under `hash` (the
    /// store key re-seal moves it).
    pub(crate) fn sealed_fields(&mut self, hash: &[u8]) -> Vec<(Aad, &mut Sealed)> {
        vec![(self.bound.aad(b"ticket", hash, "id"), &mut self.id)]
    }

    /// Whether this stored ticket can be handed out again instead of `candidate`: the same
    /// (org, app, user) and app version, and not expired at `now`.
    pub(crate) fn reusable_for(&self, candidate: &ConsentTicket, now: u64) -> bool {
        let b = &self.bound;
        (&b.org, &b.app, &b.user) == (&candidate.org, &candidate.app, &candidate.user)
            && (b.incarnation, b.generation) == (candidate.incarnation, candidate.generation)
            && now < b.expires_at
    }

    /// The owners-index key of this ticket.
    pub(crate) fn owner_key(&self) -> Vec<u8> {
        self.bound.owner_key()
    }
}

/// Stored form of a [`PendingAuthorization`], under the [`lookup_hash`] of its `state`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PendingRecord {
    v: u32,
    /// Who and what it is for.
    bound: Bound,
    /// Sealed with `["pending", hash, org, app, user, "pkce_verifier"]`.
    pkce_verifier: Option<Sealed>,
    redirect_uri: String,
    /// The browser's cookie hash, sealed with `["pending", hash, org, app, user, "browser"]`:
    /// every pending authorization has a sealed field bound to its user.
    browser: Sealed,
}

impl ConsentRecord for PendingRecord {
    fn binding(&self) -> Binding<'_> {
        self.bound.binding()
    }
}

impl PendingRecord {
    /// Seals `p` for storage under `hash` (the [`lookup_hash`] of its state).
    pub(crate) fn seal(
        p: &PendingAuthorization,
        hash: &[u8],
        key: &StoreKey,
    ) -> Result<PendingRecord, StoreError> {
        let bound = bound_of!(p);
        let pkce_verifier = p
            .pkce_verifier
            .as_ref()
            .map(|v| key.seal_secret(&bound.aad(b"pending", hash, "pkce_verifier"), v))
            .transpose()?;
        let browser = key.seal(&bound.aad(b"pending", hash, "browser"), &p.browser)?;
        Ok(PendingRecord {
            v: FORMAT_VERSION,
            bound,
            pkce_verifier,
            redirect_uri: p.redirect_uri.clone(),
            browser,
        })
    }

    /// Decodes the value stored under `hash` without opening secrets.
    pub(crate) fn decode(hash: &[u8], bytes: &[u8]) -> Result<PendingRecord, StoreError> {
        decode(&consent_name(Kind::Pending, hash), bytes)
    }

    /// Every sealed field with its associated data, for the record stored under `hash` (the
    /// store key re-seal moves them).
    pub(crate) fn sealed_fields(&mut self, hash: &[u8]) -> Vec<(Aad, &mut Sealed)> {
        let browser = self.bound.aad(b"pending", hash, "browser");
        let mut out = Vec::new();
        if let Some(v) = self.pkce_verifier.as_mut() {
            out.push((self.bound.aad(b"pending", hash, "pkce_verifier"), v));
        }
        out.push((browser, &mut self.browser));
        out
    }

    /// Opens the secret and returns the model for `state` (whose hash is `hash`).
    pub(crate) fn open(
        self,
        state: &str,
        hash: &[u8],
        key: &StoreKey,
    ) -> Result<PendingAuthorization, StoreError> {
        let name = consent_name(Kind::Pending, hash);
        let pkce_verifier = self
            .pkce_verifier
            .as_ref()
            .map(|v| {
                let aad = self.bound.aad(b"pending", hash, "pkce_verifier");
                open_secret(key, &name, &aad, v)
            })
            .transpose()?;
        let aad = self.bound.aad(b"pending", hash, "browser");
        let browser = key
            .open(&aad, &self.browser)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                <[u8; BROWSER_TAG_LEN]>::try_from(b).map_err(|_| "invalid browser hash".into())
            })
            .map_err(|reason| StoreError::Corrupt {
                record: name,
                reason,
            })?;
        let b = self.bound;
        Ok(PendingAuthorization {
            state: state.to_owned(),
            org: b.org,
            user: b.user,
            app: b.app,
            generation: b.generation,
            incarnation: b.incarnation,
            pkce_verifier,
            redirect_uri: self.redirect_uri,
            browser,
            expires_at: b.expires_at,
        })
    }
}
