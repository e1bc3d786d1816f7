//! The stored form of each record: keys, versioned JSON values, sealed secrets.
//!
//! Nothing here knows sled; a later backend (PostgreSQL) can store the same JSON in a column
//! and reuse the sealing. The stored structs repeat the model's fields on purpose: a change to
//! the model must not silently change what is on disk, and every value carries `v`, the format
//! version, so a record written by another build is reported as [`StoreError::Corrupt`]
//! instead of being misread.
//!
//! Keys are built from length-prefixed parts (u32 big-endian length, then the bytes), with
//! numbers as fixed-width big-endian `u64`. No separator is needed, so an org, app id or user
//! containing `/` or NUL cannot make two keys collide, and a key's prefix selects exactly one
//! org, one app, or one app generation:
//!
//! | tree | key | value |
//! |---|---|---|
//! | `apps` | `org ‖ id` | [`AppRecord`] |
//! | `tokens` | `org ‖ app ‖ incarnation ‖ generation ‖ user` | [`TokenRecord`] |
//! | `consent_tickets` | SHA-256 of the ticket id ([`lookup_hash`]) | [`TicketRecord`] (id sealed) |
//! | `consent_owners` | `org ‖ app ‖ user` | the lookup hash of its one live ticket |
//! | `consent_pending` | SHA-256 of the state ([`lookup_hash`]) | [`PendingRecord`] |
//! | `audit` | `org ‖ seq` | [`AuditRecord`] |
//! | `meta` | `key-check` | [`KeyCheckRecord`] |

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::model::Secret;
use super::seal::{push_len_prefixed, Aad, Sealed, StoreKey};
use super::StoreError;

/// Format version of every record value written by this build.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// Key of the key-check record in the `meta` tree.
pub(crate) const KEY_CHECK_KEY: &[u8] = b"key-check";

/// What the key-check record seals; any fixed text works, it only has to open.
const KEY_CHECK_PLAINTEXT: &[u8] = b"tollgate store key check";

mod app;
mod audit;
mod consent;
pub(crate) mod sealed;
mod token;

#[cfg(test)]
pub(crate) use app::legacy_app_json;
pub(crate) use app::AppRecord;
pub(crate) use audit::AuditRecord;
pub(crate) use consent::{
    lookup_hash, ticket_owner_key, Binding, Bound, ConsentRecord, Kind, PendingRecord, TicketRecord,
};
pub(crate) use token::TokenRecord;

// ---------------------------------------------------------------------------------------------
// Keys and record names
// ---------------------------------------------------------------------------------------------

/// `apps` key of one app.
pub(crate) fn app_key(org: &str, id: &str) -> Vec<u8> {
    let mut k = app_org_prefix(org);
    push_len_prefixed(&mut k, id.as_bytes());
    k
}

/// Parses an `apps` key into `(org, id)`; `None` if it is not one this build wrote.
pub(crate) fn parse_app_key(key: &[u8]) -> Option<(String, String)> {
    let mut rest = key;
    let org = take_len_prefixed(&mut rest)?;
    let id = take_len_prefixed(&mut rest)?;
    rest.is_empty().then_some((org, id))
}

/// `apps` key prefix selecting every app of an org.
pub(crate) fn app_org_prefix(org: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + org.len());
    push_len_prefixed(&mut k, org.as_bytes());
    k
}

/// `tokens` key prefix selecting every token of an app, all incarnations and generations.
pub(crate) fn token_app_prefix(org: &str, app: &str) -> Vec<u8> {
    app_key(org, app)
}

/// `tokens` key prefix selecting the tokens of one app incarnation and generation.
pub(crate) fn token_gen_prefix(org: &str, app: &str, incarnation: u64, generation: u64) -> Vec<u8> {
    let mut k = token_app_prefix(org, app);
    k.extend_from_slice(&incarnation.to_be_bytes());
    k.extend_from_slice(&generation.to_be_bytes());
    k
}

/// `tokens` key of one user's token set.
pub(crate) fn token_key(
    org: &str,
    app: &str,
    incarnation: u64,
    generation: u64,
    user: &str,
) -> Vec<u8> {
    let mut k = token_gen_prefix(org, app, incarnation, generation);
    push_len_prefixed(&mut k, user.as_bytes());
    k
}

/// The parts of a `tokens` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenKey {
    /// Organization.
    pub(crate) org: String,
    /// App id.
    pub(crate) app: String,
    /// App incarnation the token belongs to.
    pub(crate) incarnation: u64,
    /// App generation the token belongs to.
    pub(crate) generation: u64,
    /// User.
    pub(crate) user: String,
}

impl TokenKey {
    /// Parses a `tokens` key; `None` if it is not one this build wrote.
    pub(crate) fn parse(key: &[u8]) -> Option<TokenKey> {
        let mut rest = key;
        let org = take_len_prefixed(&mut rest)?;
        let app = take_len_prefixed(&mut rest)?;
        let incarnation = take_u64(&mut rest)?;
        let generation = take_u64(&mut rest)?;
        let user = take_len_prefixed(&mut rest)?;
        if !rest.is_empty() {
            return None;
        }
        Some(TokenKey {
            org,
            app,
            incarnation,
            generation,
            user,
        })
    }

    /// The record name used in errors.
    pub(crate) fn name(&self) -> String {
        token_name(
            &self.org,
            &self.app,
            self.incarnation,
            self.generation,
            &self.user,
        )
    }
}

fn take_len_prefixed(rest: &mut &[u8]) -> Option<String> {
    let (len, tail) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    if tail.len() < len {
        return None;
    }
    let (part, tail) = tail.split_at(len);
    *rest = tail;
    String::from_utf8(part.to_vec()).ok()
}

fn take_u64(rest: &mut &[u8]) -> Option<u64> {
    let (n, tail) = rest.split_first_chunk::<8>()?;
    *rest = tail;
    Some(u64::from_be_bytes(*n))
}

/// `audit` key prefix selecting every event of an org.
pub(crate) fn audit_org_prefix(org: &str) -> Vec<u8> {
    app_org_prefix(org)
}

/// `audit` key of one event.
pub(crate) fn audit_key(org: &str, seq: u64) -> Vec<u8> {
    let mut k = audit_org_prefix(org);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Name of an app record in errors.
pub(crate) fn app_name(org: &str, id: &str) -> String {
    format!("app/{org}/{id}")
}

/// Name of a token record in errors.
pub(crate) fn token_name(
    org: &str,
    app: &str,
    incarnation: u64,
    generation: u64,
    user: &str,
) -> String {
    format!("token/{org}/{app}/{incarnation}/{generation}/{user}")
}

/// Name of an audit record in errors.
pub(crate) fn audit_name(key: &[u8]) -> String {
    let mut rest = key;
    match (take_len_prefixed(&mut rest), take_u64(&mut rest)) {
        (Some(org), Some(seq)) => format!("audit/{org}/{seq}"),
        _ => "audit/<unparsable key>".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/// Only the version, read before the full record so a record from another build is named as
/// such rather than as a confusing missing-field error.
#[derive(Deserialize)]
struct VersionProbe {
    v: Option<u32>,
}

/// Parses a stored value, checking the format version first.
pub(crate) fn decode<T: DeserializeOwned>(name: &str, bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        record: name.to_owned(),
        reason,
    };
    let probe: VersionProbe =
        serde_json::from_slice(bytes).map_err(|e| corrupt(format!("not a JSON record ({e})")))?;
    match probe.v {
        Some(FORMAT_VERSION) => {}
        Some(v) => {
            return Err(corrupt(format!(
                "unknown format version {v} (this build reads {FORMAT_VERSION})"
            )))
        }
        None => {
            return Err(corrupt(
                "no format version (written by an older build?)".into(),
            ))
        }
    }
    serde_json::from_slice(bytes).map_err(|e| corrupt(format!("invalid record ({e})")))
}

/// Serializes a stored value.
pub(crate) fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, StoreError> {
    // Fails only for maps with non-string keys, which no record has.
    serde_json::to_vec(record).map_err(|e| StoreError::Io(format!("encoding a record: {e}")))
}

fn open_secret(
    key: &StoreKey,
    name: &str,
    aad: &Aad,
    sealed: &Sealed,
) -> Result<Secret, StoreError> {
    key.open_secret(aad, sealed)
        .map_err(|e| StoreError::Corrupt {
            record: name.to_owned(),
            reason: e.to_string(),
        })
}

/// The record's fields do not match the key it is stored under: moved or hand-edited.
/// [`decode`], then `matches_key`: a record whose own fields name another key than the one it
/// is stored under is corrupt.
pub(crate) fn decode_keyed<T: DeserializeOwned>(
    name: &str,
    bytes: &[u8],
    matches_key: impl FnOnce(&T) -> bool,
) -> Result<T, StoreError> {
    let rec: T = decode(name, bytes)?;
    if matches_key(&rec) {
        Ok(rec)
    } else {
        Err(mismatch(name))
    }
}

fn mismatch(name: &str) -> StoreError {
    StoreError::Corrupt {
        record: name.to_owned(),
        reason: "record fields do not match its key".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Key check
// ---------------------------------------------------------------------------------------------

/// A fixed text sealed under the store key when the store is first opened, so opening it
/// later with another key fails at once instead of on the first token read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyCheckRecord {
    v: u32,
    check: Sealed,
}

/// Name of the key-check record in errors.
pub(crate) const KEY_CHECK_NAME: &str = "meta/key-check";

fn key_check_aad() -> Aad {
    Aad::new(&[b"meta", KEY_CHECK_KEY])
}

impl KeyCheckRecord {
    /// A new key-check record under `key`.
    pub(crate) fn seal(key: &StoreKey) -> Result<KeyCheckRecord, StoreError> {
        Ok(KeyCheckRecord {
            v: FORMAT_VERSION,
            check: key.seal(&key_check_aad(), KEY_CHECK_PLAINTEXT)?,
        })
    }

    /// The sealed check with its associated data (the store key re-seal moves it).
    pub(crate) fn sealed_fields(&mut self) -> Vec<(Aad, &mut Sealed)> {
        vec![(key_check_aad(), &mut self.check)]
    }

    /// Verifies that a stored key-check record opens under `key`.
    pub(crate) fn verify(bytes: &[u8], key: &StoreKey) -> Result<(), StoreError> {
        let rec: KeyCheckRecord = decode(KEY_CHECK_NAME, bytes)?;
        let corrupt = |reason: String| StoreError::Corrupt {
            record: KEY_CHECK_NAME.into(),
            reason,
        };
        let plain = key.open(&key_check_aad(), &rec.check).map_err(|e| {
            corrupt(format!(
                "the store key is not the one this store was written with: {e}"
            ))
        })?;
        if plain != KEY_CHECK_PLAINTEXT {
            return Err(corrupt("unexpected key-check text".into()));
        }
        Ok(())
    }
}

/// Agent revocations (tree `agent_revocations`, key: the agent ID), unsealed: no secret.
pub(crate) mod agent;
/// Caller-token revocations (tree `token_revocations`), unsealed: no secret.
pub(crate) mod token_revocation;

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::consent::consent_name;
    use super::*;

    /// A record as the builds before `AppConfig` wrote it (every field flat, the webhook
    /// sealed as one JSON value, the client secret without its endpoint binding) still opens,
    /// secrets included, once re-sealed by the migration's step.
    #[test]
    fn app_records_of_the_earlier_layout_still_open() {
        let key = StoreKey::from_hex_text(&"c3".repeat(32)).unwrap();
        let old = legacy_app_json(&key, "acme", "legacy", 5, None);
        let bytes = serde_json::to_vec(&old).unwrap();
        let legacy = AppRecord::decode("acme", "legacy", &bytes).unwrap();
        let (_, reason) = match legacy.clone().open(&key) {
            Err(StoreError::Corrupt { record, reason }) => (record, reason),
            other => panic!("{other:?}"),
        };
        assert!(reason.contains("endpoint binding"), "{reason}");
        let app = legacy
            .reseal_legacy(&key)
            .unwrap()
            .expect("re-sealed")
            .open(&key)
            .unwrap();
        assert_eq!(
            (app.generation, app.incarnation, app.updated_at),
            (2, 5, 11)
        );
        assert_eq!(app.client_secret.as_ref().unwrap().expose(), "sk-1");
        let headers = &app.webhook.as_ref().unwrap().token.headers;
        assert_eq!(headers["X-Api-Key"].as_ref().unwrap().expose(), "k-1");
        // Written back, it has the same layout plus the binding: nothing in the clear.
        let again = serde_json::to_value(AppRecord::seal(&app, &key).unwrap()).unwrap();
        let keys = |v: &Value| {
            let mut k = v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
            k.sort();
            k
        };
        let mut want = keys(&old);
        want.push("secret_binding".into());
        // Fields added to `AppConfig` since, written with their defaults.
        want.push("expose_token".into());
        want.sort();
        assert_eq!(keys(&again), want);
        assert!(!again.to_string().contains("k-1"));
    }

    #[test]
    fn token_keys_round_trip_and_prefixes_nest() {
        let k = token_key("acme", "gh", 7, 3, "alice@example.com");
        let parsed = TokenKey::parse(&k).unwrap();
        assert_eq!(
            parsed,
            TokenKey {
                org: "acme".into(),
                app: "gh".into(),
                incarnation: 7,
                generation: 3,
                user: "alice@example.com".into(),
            }
        );
        assert!(k.starts_with(&token_gen_prefix("acme", "gh", 7, 3)));
        assert!(k.starts_with(&token_app_prefix("acme", "gh")));
        assert!(!k.starts_with(&token_app_prefix("acme", "g")));
        assert!(!k.starts_with(&token_gen_prefix("acme", "gh", 7, 2)));
        assert_eq!(TokenKey::parse(&k[..k.len() - 1]), None);
    }

    #[test]
    fn keys_are_unambiguous_with_separators_in_ids() {
        assert_ne!(app_key("a/b", "c"), app_key("a", "b/c"));
        assert_ne!(app_key("a\0", "b"), app_key("a", "\0b"));
        // An org's prefix never selects another org whose name extends it.
        assert!(!app_key("acme2", "x").starts_with(&app_org_prefix("acme")));
    }

    #[test]
    fn decode_reports_version_problems() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct R {
            v: u32,
        }
        for (case, bytes, want) in [
            ("truncated", &br#"{"v":1"#[..], "not a JSON record"),
            ("no version", &br#"{"x":1}"#[..], "no format version"),
            (
                "future version",
                &br#"{"v":9}"#[..],
                "unknown format version 9",
            ),
        ] {
            match decode::<R>("app/acme/gh", bytes) {
                Err(StoreError::Corrupt { record, reason }) => {
                    assert_eq!(record, "app/acme/gh", "{case}");
                    assert!(reason.contains(want), "{case}: {reason}");
                }
                other => panic!("{case}: {other:?}"),
            }
        }
    }

    #[test]
    fn consent_records_are_keyed_by_a_hash_of_the_id() {
        let id = "abcdefghijklmnopqrstuvwxyz";
        let h = lookup_hash(Kind::Ticket, id);
        assert_ne!(h, lookup_hash(Kind::Pending, id), "kinds are separated");
        assert_eq!(h, lookup_hash(Kind::Ticket, id));
        let n = consent_name(Kind::Ticket, &h);
        assert!(n.starts_with("ticket/"), "{n}");
        assert!(!n.contains("abcd"), "{n}");
    }
}
