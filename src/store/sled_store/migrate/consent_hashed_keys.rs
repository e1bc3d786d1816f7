//! Migration step 2: consent records written before tickets and `state` were kept by hash,
//! in the trees `tickets` (keyed by the plaintext ticket id) and `pending` (keyed by the
//! plaintext state).
//!
//! Live tickets are rewritten into `consent_tickets` / `consent_owners` (the newest per
//! (org, app, user)), so a consent URL handed out before the upgrade keeps working. Pending
//! authorizations cannot be rewritten: they carry no browser binding, so no callback could
//! ever complete them; they are dropped, with a logged count (their users click Authorize
//! again). Both old trees are then dropped, so the plaintext ids and states leave the store.
//! Resumable: a re-run after a crash skips owners already written, and once the old trees
//! are dropped finds nothing to do.

use std::collections::HashMap;

use serde::Deserialize;
use sled::Tree;

use super::super::super::model::ConsentTicket;
use super::super::super::record::{encode, lookup_hash, Bound, Kind, TicketRecord};
use super::super::super::seal::StoreKey;
use super::super::super::StoreResult;
use super::super::{io, SledStore};
use super::Progress;

/// The old ticket tree.
const LEGACY_TICKETS: &str = "tickets";
/// The old pending tree.
const LEGACY_PENDING: &str = "pending";

/// The step: moves the old consent trees of `s` into its hashed trees and drops them.
pub(in super::super) fn apply(s: &SledStore, progress: &mut Progress) -> StoreResult<()> {
    migrate_legacy_consents(
        &s.db,
        &s.tickets,
        &s.ticket_owners,
        &s.key,
        s.clock.now()?,
        progress,
    )
    .map(|_| ())
}

/// A ticket as the builds before hashed keys stored it.
#[derive(Deserialize)]
struct LegacyTicket {
    /// Format version (1).
    v: u32,
    /// The plaintext ticket id (also the key).
    id: String,
    /// Org, user, app, app version and expiry: the same fields as today's.
    #[serde(flatten)]
    bound: Bound,
}

/// What [`migrate_legacy_consents`] did.
#[derive(Debug, Default, PartialEq, Eq)]
struct Migrated {
    /// Live tickets rewritten under their hash.
    tickets: usize,
    /// Old tickets dropped: expired, unreadable, or superseded by a newer one of the same
    /// (org, app, user).
    tickets_dropped: usize,
    /// Old pending authorizations dropped.
    pending_dropped: usize,
}

/// Moves the old consent trees of `db` into `tickets` / `owners` (sealing ids under `key`)
/// and drops them. `now` decides which tickets are still live; every old record counts as
/// changed in `progress`.
fn migrate_legacy_consents(
    db: &sled::Db,
    tickets: &Tree,
    owners: &Tree,
    key: &StoreKey,
    now: u64,
    progress: &mut Progress,
) -> StoreResult<Migrated> {
    let names = db.tree_names();
    let has = |name: &str| names.iter().any(|n| n.as_ref() == name.as_bytes());
    let mut done = Migrated::default();
    if has(LEGACY_TICKETS) {
        let old = db.open_tree(LEGACY_TICKETS).map_err(io)?;
        let mut newest: HashMap<Vec<u8>, ConsentTicket> = HashMap::new();
        for item in old.iter() {
            let (k, v) = item.map_err(io)?;
            progress.record(true);
            let Some(t) = serde_json::from_slice::<LegacyTicket>(&v)
                .ok()
                .filter(|t| t.v == 1 && t.id.as_bytes() == &k[..])
            else {
                done.tickets_dropped += 1;
                continue;
            };
            let owner = t.bound.owner_key();
            let ticket = t.bound.into_ticket(t.id);
            if now >= ticket.expires_at {
                done.tickets_dropped += 1;
                continue;
            }
            match newest.get(&owner) {
                Some(kept) if kept.expires_at >= ticket.expires_at => done.tickets_dropped += 1,
                Some(_) => {
                    done.tickets_dropped += 1;
                    newest.insert(owner, ticket);
                }
                None => {
                    newest.insert(owner, ticket);
                }
            }
        }
        for (owner, ticket) in newest {
            if owners.get(&owner).map_err(io)?.is_some() {
                // Issued by this build already (a migration interrupted after the first
                // writes): the newer one stays.
                done.tickets_dropped += 1;
                continue;
            }
            let hash = lookup_hash(Kind::Ticket, &ticket.id);
            let bytes = encode(&TicketRecord::seal(&ticket, &hash, key)?)?;
            tickets.insert(hash, bytes).map_err(io)?;
            owners.insert(owner, &hash[..]).map_err(io)?;
            done.tickets += 1;
        }
        tickets.flush().map_err(io)?;
        db.drop_tree(LEGACY_TICKETS).map_err(io)?;
    }
    if has(LEGACY_PENDING) {
        done.pending_dropped = db.open_tree(LEGACY_PENDING).map_err(io)?.len();
        for _ in 0..done.pending_dropped {
            progress.record(true);
        }
        db.drop_tree(LEGACY_PENDING).map_err(io)?;
    }
    if done != Migrated::default() {
        tracing::info!(
            rewritten = done.tickets,
            tickets_dropped = done.tickets_dropped,
            pending_dropped = done.pending_dropped,
            "store: consent records moved to hashed keys; pending authorizations started \
             before the upgrade were dropped (their users click Authorize again)"
        );
    }
    Ok(done)
}
