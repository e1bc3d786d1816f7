//! The policies the integration tests run under, each written once, and where the shipped
//! ones are.

use std::path::Path;

/// The policy files that ship with tollgate (`policies/`).
pub fn shipped() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/policies"))
}

/// acme may reach loopback test servers directly (by address, and `localhost` as a private
/// name); beta may reach `localhost` but not as a private address (the guard refuses it);
/// acme's `*.corp.example` goes through agent `onprem-1`; `*.blocked.example` and
/// `127.0.0.99` are denied to everyone.
pub const LOOPBACK: &str = r#"
[[policy]]
name = "acme-loopback"
description = "acme may reach loopback test servers"
orgs = ["acme"]
route = "direct"

  [[policy.allow]]
  cidrs = ["127.0.0.0/8"]
  ports = ["1024-65535"]

  [[policy.allow]]
  hosts = ["localhost"]
  ports = ["1024-65535"]
  private = true

[[policy]]
name = "beta-public"
orgs = ["beta"]
route = "direct"

  [[policy.allow]]
  hosts = ["localhost"]
  ports = ["1024-65535"]

[[policy]]
name = "onprem"
orgs = ["acme"]
route = "agent:onprem-1"

  [[policy.allow]]
  hosts = ["*.corp.example"]
  ports = [80, 443]

[[deny]]
hosts = ["*.blocked.example"]
cidrs = ["127.0.0.99/32"]
"#;

/// Line of the `[[deny]]` header in [`LOOPBACK`] (decisions name their rule as FILE:LINE).
pub fn loopback_deny_line() -> usize {
    LOOPBACK
        .lines()
        .position(|l| l.trim() == "[[deny]]")
        .unwrap()
        + 1
}

/// A policy for tests with this provider on loopback: `localhost` by name (for apps' APIs)
/// and loopback CIDRs (for the provider's endpoints), both direct.
pub const LOCAL: &str = r#"
[[policy]]
name = "local"
route = "direct"

  [[policy.allow]]
  hosts = ["localhost"]
  ports = ["1-65535"]
  private = true

  [[policy.allow]]
  cidrs = ["127.0.0.0/8"]
  ports = ["1-65535"]
"#;

/// [`LOCAL`] narrowed to `localhost` by name: loopback addresses (where the provider's
/// endpoints listen) are no longer allowed.
pub const LOCAL_BY_NAME: &str = r#"
[[policy]]
name = "local"
route = "direct"
  [[policy.allow]]
  hosts = ["localhost"]
  ports = ["1-65535"]
  private = true
"#;

/// acme reaches loopback (by address and as `localhost`) through agent `onprem-1` only;
/// `127.0.0.99` is denied to everyone, before any agent is asked.
pub const AGENT_LOOPBACK: &str = r#"
[[policy]]
name = "onprem"
orgs = ["acme"]
route = "agent:onprem-1"

  [[policy.allow]]
  cidrs = ["127.0.0.0/8"]
  ports = ["1024-65535"]

  [[policy.allow]]
  hosts = ["localhost"]
  ports = ["1024-65535"]

[[deny]]
cidrs = ["127.0.0.99/32"]
"#;
