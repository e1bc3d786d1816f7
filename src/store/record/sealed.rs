//! The store key re-seal's view of the records: which tables hold sealed values, in the
//! order the re-seal walks them ([`Table::ALL`]), and, for one stored value, the ids of the
//! keys that sealed it ([`kids`]) or the value sealed again with the sealing key
//! ([`reseal`]). Only the sealed fields change; every other field is written back as read.

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::super::seal::{Aad, Sealed, StoreKey};
use super::super::StoreError;
use super::{
    decode, encode, AppRecord, KeyCheckRecord, PendingRecord, TicketRecord, TokenRecord,
    KEY_CHECK_KEY,
};

/// A kind of record that holds sealed values, by the table (sled tree) it is stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    /// Apps: client secrets and webhooks.
    Apps,
    /// Users' token sets.
    Tokens,
    /// Consent tickets' ids.
    Tickets,
    /// Pending authorizations' PKCE verifiers and browser hashes.
    Pending,
    /// The key-check record (the only sealed value in `meta`).
    Meta,
}

impl Table {
    /// Every table, in the order the re-seal walks them.
    pub(crate) const ALL: [Table; 5] = [
        Table::Apps,
        Table::Tokens,
        Table::Tickets,
        Table::Pending,
        Table::Meta,
    ];

    /// The table's name, in progress records and logs.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Table::Apps => "apps",
            Table::Tokens => "tokens",
            Table::Tickets => "consent_tickets",
            Table::Pending => "consent_pending",
            Table::Meta => "meta",
        }
    }

    /// Whether the value stored under `key` in this table is a sealed record (in `meta`, only
    /// the key check is).
    pub(crate) fn holds_sealed(self, key: &[u8]) -> bool {
        self != Table::Meta || key == KEY_CHECK_KEY
    }
}

/// A stored record with sealed fields.
trait Sealable: Serialize + DeserializeOwned {
    /// Every sealed field with its associated data; `key` is what the record is stored under.
    fn fields(&mut self, key: &[u8]) -> Vec<(Aad, &mut Sealed)>;
}

impl Sealable for AppRecord {
    fn fields(&mut self, _: &[u8]) -> Vec<(Aad, &mut Sealed)> {
        self.sealed_fields()
    }
}

impl Sealable for TokenRecord {
    fn fields(&mut self, _: &[u8]) -> Vec<(Aad, &mut Sealed)> {
        self.sealed_fields()
    }
}

impl Sealable for TicketRecord {
    fn fields(&mut self, key: &[u8]) -> Vec<(Aad, &mut Sealed)> {
        self.sealed_fields(key)
    }
}

impl Sealable for PendingRecord {
    fn fields(&mut self, key: &[u8]) -> Vec<(Aad, &mut Sealed)> {
        self.sealed_fields(key)
    }
}

impl Sealable for KeyCheckRecord {
    fn fields(&mut self, _: &[u8]) -> Vec<(Aad, &mut Sealed)> {
        self.sealed_fields()
    }
}

/// The record's name in errors: the table and the hex of the key it is stored under.
fn name(table: Table, key: &[u8]) -> String {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}/{hex}", table.name())
}

fn kids_as<T: Sealable>(table: Table, k: &[u8], bytes: &[u8], sk: &StoreKey) -> KidsResult {
    let name = name(table, k);
    let mut rec: T = decode(&name, bytes)?;
    rec.fields(k)
        .into_iter()
        .map(|(_, sealed)| {
            sk.kid_of(sealed).map_err(|e| StoreError::Corrupt {
                record: name.clone(),
                reason: e.to_string(),
            })
        })
        .collect()
}

fn reseal_as<T: Sealable>(
    table: Table,
    k: &[u8],
    bytes: &[u8],
    sk: &StoreKey,
) -> Result<Option<Vec<u8>>, StoreError> {
    let name = name(table, k);
    let mut rec: T = decode(&name, bytes)?;
    let mut changed = false;
    for (aad, sealed) in rec.fields(k) {
        if let Some(new) = sk.reseal(&name, &aad, sealed)? {
            *sealed = new;
            changed = true;
        }
    }
    changed.then(|| encode(&rec)).transpose()
}

type KidsResult = Result<BTreeSet<String>, StoreError>;

/// The ids of the keys that sealed the value stored under `k` in `table`.
pub(crate) fn kids(table: Table, k: &[u8], bytes: &[u8], sk: &StoreKey) -> KidsResult {
    match table {
        Table::Apps => kids_as::<AppRecord>(table, k, bytes, sk),
        Table::Tokens => kids_as::<TokenRecord>(table, k, bytes, sk),
        Table::Tickets => kids_as::<TicketRecord>(table, k, bytes, sk),
        Table::Pending => kids_as::<PendingRecord>(table, k, bytes, sk),
        Table::Meta => kids_as::<KeyCheckRecord>(table, k, bytes, sk),
    }
}

/// The value stored under `k` in `table` with every field the sealing key did not seal
/// sealed again with it; `None` when there is none.
pub(crate) fn reseal(
    table: Table,
    k: &[u8],
    bytes: &[u8],
    sk: &StoreKey,
) -> Result<Option<Vec<u8>>, StoreError> {
    match table {
        Table::Apps => reseal_as::<AppRecord>(table, k, bytes, sk),
        Table::Tokens => reseal_as::<TokenRecord>(table, k, bytes, sk),
        Table::Tickets => reseal_as::<TicketRecord>(table, k, bytes, sk),
        Table::Pending => reseal_as::<PendingRecord>(table, k, bytes, sk),
        Table::Meta => reseal_as::<KeyCheckRecord>(table, k, bytes, sk),
    }
}
