//! The agent relay: egress into private networks through agents that dial out.
//!
//! Policies with `route = "agent:ID"` reach hosts inside a private network where an agent
//! (`tollgate agent run`, the same binary) runs. The agent opens no inbound port: it dials
//! tollgate's relay listener over TLS, authenticates with a credential from
//! `tollgate agent enroll`, and the connection is turned around — tollgate becomes the HTTP/2
//! client, the agent the server — so that tollgate can open tunnels *into* the network as
//! HTTP/2 `CONNECT host:port` streams.
//!
//! Relay side (in `tollgate serve`):
//! - [`credential`]: minting and verifying agent credentials (never interchangeable with
//!   caller tokens);
//! - [`handshake`]: the first frames on a relay connection (credential in, verdict out);
//! - [`relay`]: the TLS listener, authentication and the HTTP/2 turnaround;
//! - [`registry`]: connected agents, least-loaded choice, and [`relay::Registry::dial`], the
//!   dialer the proxy (tunnels, forwarded requests) and the OAuth token calls use;
//! - [`metrics`]: connections, tunnels, bytes and failures per agent.
//!
//! Agent side (`tollgate agent run`):
//! - [`run`]: relay connections with backoff, the HTTP/2 server, one tunnel per stream;
//! - [`allow`]: the agent's own allowlist, checked before and after DNS.

pub mod allow;
pub mod credential;
pub mod handshake;
pub mod metrics;
pub mod registry;
pub mod relay;
pub mod run;
