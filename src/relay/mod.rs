//! The agent relay, server side (in `tollgate serve`): egress into private networks through
//! agents that dial out.
//!
//! Policies with `route = "agent:ID"` reach hosts inside a private network where an agent
//! ([`crate::agent`], `tollgate agent run`, the same binary) runs. The agent opens no inbound
//! port: it dials the relay listener over TLS, authenticates with a credential from
//! `tollgate agent enroll`, and the connection is turned around — tollgate becomes the HTTP/2
//! client, the agent the server — so that tollgate can open tunnels *into* the network as
//! HTTP/2 `CONNECT host:port` streams.
//!
//! - [`credential`]: minting and verifying agent credentials (never interchangeable with
//!   caller tokens), and which are revoked;
//! - [`control`]: operators' view of agents: those connected here, and revocations kept in
//!   the store, followed through its change events;
//! - [`handshake`]: the first frames on a relay connection (credential in, verdict out),
//!   spoken by both sides;
//! - [`listener`]: the TLS listener, authentication and the HTTP/2 turnaround;
//! - [`registry`]: connected agents, least-loaded choice, and [`Registry::dial`], the
//!   dialer the proxy (tunnels, forwarded requests) and the OAuth token calls use;
//! - [`stream`]: a tunnel through an agent as a byte stream;
//! - [`severable`]: a relay connection's stream that a revocation can cut, tunnels and all;
//! - [`metrics`]: connections, tunnels, bytes and failures per agent;
//! - [`replicas`]: this replica's heartbeat in the store, and the live replica list told to
//!   every connected agent, so agents keep a session to every replica;
//! - [`renewal`]: each session's credential renewed on the session at two thirds of its
//!   lifetime, and the session cut when its credential expires unrenewed.
//!
//! The agent process uses [`handshake`], [`credential::peek`], the renewal headers and the
//! HTTP/2 window constants below, and nothing here uses the agent.

pub mod control;
pub mod credential;
pub mod handshake;
pub mod listener;
pub mod metrics;
pub mod registry;
pub mod renewal;
pub mod replicas;
pub mod severable;
pub mod stream;

pub use control::{AgentControl, ConnectedAgent};
pub use listener::{
    certificate_names, run, RelayError, RelayListener, RelaySettings, CONNECTION_WINDOW,
    DEFAULT_KEEPALIVE, MAX_FRAME_SIZE, MAX_TUNNELS_PER_CONNECTION, SOCKET_BUFFER, STREAM_WINDOW,
};
pub use registry::{AgentDialError, AgentFailure, Registry};
pub use stream::AgentStream;
