//! Consent tickets and pending authorizations in sled: at most one live ticket per
//! (org, app, user) through the `consent_owners` index, lookups by hash, and single-use
//! consumption atomically with checking the record against its app.

use sled::transaction::Transactional;
use sled::Tree;

use super::super::model::ConsentTicket;
use super::super::record::{
    app_key, encode, lookup_hash, ticket_owner_key, ConsentRecord, Kind, TicketRecord,
};
use super::super::StoreResult;
use super::{abort, app_version, io, tx_error, SledStore};

/// What [`SledStore::issue_ticket_now`] found.
enum Issued {
    /// A live ticket for the same (org, app, user, app version): handed out again.
    Existing(ConsentTicket),
    /// None: the candidate was stored (replacing any other of the owner).
    New,
}

impl SledStore {
    /// `Store::issue_ticket`: the live ticket of the candidate's (org, app, user) if it is
    /// for the same app version and unexpired, else the candidate, replacing the old one; in
    /// one transaction, so concurrent `401`s agree on one ticket.
    pub(super) fn issue_ticket_now(&self, ticket: ConsentTicket) -> StoreResult<ConsentTicket> {
        let now = self.clock.now()?;
        let owner = ticket_owner_key(&ticket.org, &ticket.app, &ticket.user);
        let hash = lookup_hash(Kind::Ticket, &ticket.id);
        let fresh = encode(&TicketRecord::seal(&ticket, &hash, &self.key)?)?;
        let issued = (&self.tickets, &self.ticket_owners)
            .transaction(|(tickets, owners)| {
                if let Some(old) = owners.get(&owner)? {
                    if let Some(bytes) = tickets.get(&old)? {
                        let reusable = TicketRecord::decode(&old, &bytes)
                            .ok()
                            .filter(|rec| rec.reusable_for(&ticket, now))
                            .and_then(|rec| rec.open(&old, &self.key).ok());
                        if let Some(existing) = reusable {
                            return Ok(Issued::Existing(existing));
                        }
                        // Expired, for another app version, or unreadable: replaced.
                        tickets.remove(&old)?;
                    }
                }
                tickets.insert(&hash[..], fresh.as_slice())?;
                owners.insert(owner.as_slice(), &hash[..])?;
                Ok(Issued::New)
            })
            .map_err(tx_error)?;
        Ok(match issued {
            Issued::Existing(existing) => existing,
            Issued::New => ticket,
        })
    }

    /// `Store::get_ticket`.
    pub(super) fn get_ticket_now(&self, id: &str) -> StoreResult<Option<ConsentTicket>> {
        let hash = lookup_hash(Kind::Ticket, id);
        let Some(bytes) = self.tickets.get(hash).map_err(io)? else {
            return Ok(None);
        };
        let rec = TicketRecord::decode(&hash, &bytes)?;
        let b = rec.binding();
        if self.clock.now()? >= b.expires_at
            || self.current_version(b.org, b.app)? != Some((b.incarnation, b.generation))
        {
            return Ok(None);
        }
        rec.open(&hash, &self.key).map(Some)
    }

    /// `Store::take_ticket`: removes the ticket and its owner entry.
    pub(super) fn take_ticket_now(&self, id: &str) -> StoreResult<Option<ConsentTicket>> {
        let hash = lookup_hash(Kind::Ticket, id);
        let taken = self.take_consent(&self.tickets, &hash, |b| TicketRecord::decode(&hash, b))?;
        let Some(rec) = taken else {
            return Ok(None);
        };
        // The owner entry goes with it, unless a newer ticket has taken its place.
        let owner = rec.owner_key();
        let _ = self
            .ticket_owners
            .compare_and_swap(owner, Some(&hash[..]), None as Option<&[u8]>)
            .map_err(io)?;
        rec.open(&hash, &self.key).map(Some)
    }

    /// Removes a consent record (ticket or pending) stored under `hash` atomically with
    /// checking it, returning its decoded form only if it is unexpired and its app is still
    /// at the same incarnation and generation. A stale or expired record is removed all the
    /// same.
    pub(super) fn take_consent<R: ConsentRecord>(
        &self,
        tree: &Tree,
        hash: &[u8],
        decode: impl Fn(&[u8]) -> StoreResult<R>,
    ) -> StoreResult<Option<R>> {
        let now = self.clock.now()?;
        (tree, &self.apps)
            .transaction(|(records, apps)| {
                let Some(bytes) = records.remove(hash)? else {
                    return Ok(None);
                };
                let rec = match decode(&bytes) {
                    Ok(rec) => rec,
                    Err(e) => return abort(e),
                };
                let b = rec.binding();
                if now >= b.expires_at {
                    return Ok(None);
                }
                let current = match app_version(b.org, b.app, apps.get(app_key(b.org, b.app))?) {
                    Ok(current) => current,
                    Err(e) => return abort(e),
                };
                let usable = current == Some((b.incarnation, b.generation));
                Ok(usable.then_some(rec))
            })
            .map_err(tx_error)
    }

    /// How many consent tickets and pending authorizations are stored, live or not (for
    /// tests and diagnostics: a flood of `401`s must not grow them).
    pub fn consent_record_counts(&self) -> StoreResult<(usize, usize)> {
        Ok((self.tickets.len(), self.pending.len()))
    }
}
