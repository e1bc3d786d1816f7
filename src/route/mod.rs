//! Routes to a destination: direct dialing behind the address guard. Agent routes dial
//! through [`crate::agent::relay::Registry::dial`]: the agent resolves and checks addresses
//! against its own allowlist.
//!
//! [`guard`] decides which addresses may be dialed ([`classify`], [`Guard`]); [`direct`]
//! resolves a destination once, has every answer checked, and connects only to a checked
//! address ([`DirectDialer`]).

pub mod direct;
pub mod guard;

pub use direct::{DialError, DirectDialer, Resolve, StaticResolver, SystemResolver};
pub use guard::{classify, AddrClass, Guard, Prohibited};
