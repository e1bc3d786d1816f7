//! Key management (issue 18): every key has an id, and the identity, session and store keys
//! rotate without an outage.
//!
//! Each rotating kind of key has a ring ([`ring::Ring`], the same code for every kind:
//! [`IdentityRing`], [`SessionRing`], [`StoreRing`]). The store key ring ([`store_key`]) seals
//! the store's secrets; a rotation re-seals every record in the background
//! (`crate::store::reseal`), and a store key is retired only once no record uses it. The session ring is `keys/session.key` and
//! `keys/session/`: a rotation signs new sessions with the new key, and older keys verify
//! the sessions they signed until they expire ([`session_key::SESSION_TTL`]) or are retired.
//!
//! The identity key ring lives next to the original key file: `keys/identity.key`
//! (created at first start, what platforms that mint their own tokens read) and, once rotated,
//! `keys/identity/<kid>.key` with `keys/identity/ring.json` naming the active key and when
//! each older one was superseded or retired. Caller tokens and agent credentials carry the
//! signing key's `kid`; a token without one (minted before, or by a platform) is verified
//! with the original key. Older keys keep verifying until they are retired, by hand
//! (`tollgate keys retire ID`) or automatically [`MAX_TOKEN_TTL`] after they were superseded.
//! A running server reads the ring again when it changes on disk ([`watch`]), so a rotation
//! made by `tollgate keys rotate identity`, by the operator API, or on another replica sharing
//! the keys directory applies without a restart.
//!
//! The interception CA rotates through a ring too ([`ca_ring`], in `data/ca/`): a new CA is
//! pending for an overlap during which clients learn to trust it, then signs the leaves.
//!
//! [`MAX_TOKEN_TTL`]: crate::identity::revoked::MAX_TOKEN_TTL

pub mod admin;
pub mod ca_ring;
pub mod ring;
pub mod session_key;
pub mod store_key;
pub mod watch;

pub use ring::{IdentityRing, KeyInfo, KeyState, Ring, RingError, RingKey};
pub use session_key::{SessionKey, SessionRing};

pub use ca_ring::{CaKey, CaRing};
pub use store_key::StoreRing;
