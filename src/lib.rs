//! tollgate: an egress forward proxy for workloads that call external HTTP APIs on behalf of
//! users.
//!
//! A request flows through the modules in a fixed order (see `proxy`):
//!
//! 1. [`identity`] turns `Proxy-Authorization` into a [`identity::Caller`] (org + user).
//! 2. [`policy`] decides, from the admin-edited TOML files, whether the destination is allowed
//!    for that caller's org and by which route.
//! 3. [`route`]'s `Router`, the one dial point, reaches the destination: directly, behind the
//!    address guard that classifies every resolved address before it is dialed; or through a
//!    tunnel of an agent inside a private network ([`relay`], `route = "agent:ID"`). It owns
//!    the pooled upstream connections.
//! 4. [`oauth`] injects the user's bearer token when the host belongs to an outbound
//!    application of the caller's org (refreshing it, or answering `401` with a consent URL);
//!    tokens come from the provider's RFC 6749 token endpoint or, for legacy providers, from
//!    request templates (`oauth::webhook`). [`web`] serves the consent pages and the OAuth
//!    callback, and the admin API.
//! 5. `proxy` runs these steps as one pipeline (`proxy::pipeline`) for absolute-form requests
//!    and intercepted ones, or splices a `CONNECT` tunnel; it logs one decision line per
//!    request and turns every failure into a synthetic response with `Proxy-Status`.
//!    An upstream `401 invalid_token` on an injected request gets one refresh and one replay.
//! 6. For the `CONNECT`s that must be seen (token injection), `proxy::intercept` terminates
//!    TLS with a per-host leaf from [`tls`] and forwards each inner request over verified TLS,
//!    directly or through the agent; every other `CONNECT` stays a blind tunnel.
//!
//! Around the request path: [`relay`] is the server side of agents (registry, handshake,
//! relay listener) and [`agent`] the agent process (`tollgate agent run`); both pump bytes
//! with [`io`], as the proxy's tunnels do, and neither uses `proxy`. [`config`] turns flags,
//! environment and files into validated settings for `serve` and `agent run`; [`cli`] holds
//! the subcommands `main` calls; [`server`] binds the listeners; [`tls`] holds the CA and
//! certificates, [`datadir`] the keys on disk. [`demo`] holds the TEST-GRADE provider and fixtures of
//! `tollgate demo`.

pub mod identity;
pub mod policy;
pub mod route;

pub mod agent;
pub mod cli;
pub mod clock;
pub mod config;
pub mod datadir;
pub mod demo;
pub mod denials;
pub mod explain;
pub mod fdlimit;
pub mod io;
pub mod keys;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod oauth;
pub mod otel;
pub mod proxy;
pub mod relay;
pub mod revoke;
pub mod server;
pub mod store;
pub mod tls;
pub mod web;
