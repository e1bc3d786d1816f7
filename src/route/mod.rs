//! Routes to a destination: direct dialing behind the address guard (agent routes come with
//! the relay).

pub mod direct;
pub mod guard;
