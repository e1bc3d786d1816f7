//! The agent's own allowlist: which destinations inside the private network tollgate may
//! reach through it. tollgate's policies decide who may use the agent; this list is the
//! private network owner's say, enforced where the network is.
//!
//! Entries are exact host names, `*.suffix` patterns (any name below `suffix`, not `suffix`
//! itself, as in policies), IP addresses and CIDRs. A name is allowed when it matches a host
//! entry, or when every address it resolves to lies in a CIDR entry. As with the address
//! guard, the name is resolved once and only checked addresses are dialed.
//!
//! Some addresses are refused even for an allowed name unless they are listed explicitly:
//! cloud metadata services (169.254.169.254 and friends) need an entry for exactly that
//! address; other link-local, loopback, unspecified, multicast and broadcast addresses need a
//! CIDR entry lying inside that range (so `0.0.0.0/0` or `10.0.0.0/8` never unlock
//! `169.254.169.254`, and a name cannot be pointed at the agent host's own loopback).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::policy::{normalize_host, parse_cidr, parse_host_pattern, Host, HostPattern};
use crate::route::guard::{classify, AddrClass};

/// Cloud instance metadata addresses: refused unless listed exactly.
pub const METADATA_ADDRESSES: [IpAddr; 4] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)), // AWS, GCP, Azure, OpenStack, DigitalOcean
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),   // AWS ECS task metadata
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)), // Alibaba Cloud
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)), // AWS IMDS over IPv6
];

/// Why a destination was refused, for the agent's 403 answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// `destination_denied` (not in the list) or `destination_ip_prohibited` (a special
    /// address that is not listed explicitly).
    pub code: &'static str,
    /// Human reason.
    pub message: String,
}

impl Refusal {
    fn denied(message: String) -> Self {
        Refusal {
            code: "destination_denied",
            message,
        }
    }

    fn prohibited(message: String) -> Self {
        Refusal {
            code: "destination_ip_prohibited",
            message,
        }
    }
}

/// How a target matched before resolution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetMatch {
    /// By a host entry (shown): every address it resolves to is acceptable unless special.
    Name(String),
    /// Not by name: every resolved address must lie in a CIDR entry.
    Addresses,
    /// An IP literal inside the CIDR entry shown.
    Ip(String),
}

/// A compiled allowlist.
#[derive(Clone, Debug, Default)]
pub struct Allowlist {
    exact: HashSet<String>,
    /// Suffixes with their leading dot (`.corp.example`).
    suffixes: Vec<String>,
    cidrs: Vec<IpNet>,
    /// The entries as written, for the startup log.
    entries: Vec<String>,
}

impl Allowlist {
    /// Parses entries; every bad entry is reported, naming it.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Allowlist, Vec<String>> {
        let mut list = Allowlist::default();
        let mut errors = Vec::new();
        for raw in entries {
            let e = raw.as_ref().trim();
            match list.add(e) {
                Ok(()) => list.entries.push(e.to_string()),
                Err(msg) => errors.push(format!("allow entry {e:?}: {msg}")),
            }
        }
        if errors.is_empty() {
            Ok(list)
        } else {
            Err(errors)
        }
    }

    fn add(&mut self, e: &str) -> Result<(), String> {
        if e.is_empty() {
            return Err("empty".into());
        }
        // The grammar of policy files: CIDRs (mapped IPv6 folded to IPv4, as addresses are
        // when matched), exact names and `*.suffix`; an address alone is a /32 or /128.
        if e.contains('/') {
            self.cidrs.push(parse_cidr(e)?);
            return Ok(());
        }
        if !e.contains('*') {
            if let Ok(Host::Ip(ip)) = normalize_host(e) {
                self.cidrs.push(IpNet::from(ip));
                return Ok(());
            }
        }
        match parse_host_pattern(e)? {
            HostPattern::Exact(n) => {
                self.exact.insert(n);
            }
            HostPattern::Suffix(n) => self.suffixes.push(format!(".{n}")),
        }
        Ok(())
    }

    /// The entries as given.
    pub fn entries(&self) -> &[String] {
        &self.entries
    }

    /// True when nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// First check, before any DNS: may this target be reached at all?
    pub fn check_target(&self, host: &Host) -> Result<TargetMatch, Refusal> {
        match host {
            Host::Ip(ip) => {
                let ip = ip.to_canonical();
                match self.cidrs.iter().find(|n| n.contains(&ip)) {
                    Some(net) => {
                        self.check_special(ip)?;
                        Ok(TargetMatch::Ip(net.to_string()))
                    }
                    None => Err(Refusal::denied(format!(
                        "{ip} is not in the agent's allowlist"
                    ))),
                }
            }
            Host::Name(name) => {
                if self.exact.contains(name) {
                    return Ok(TargetMatch::Name(name.clone()));
                }
                if let Some(s) = self.suffixes.iter().find(|s| name.ends_with(s.as_str())) {
                    return Ok(TargetMatch::Name(format!("*{s}")));
                }
                if self.cidrs.is_empty() {
                    return Err(Refusal::denied(format!(
                        "{name} is not in the agent's allowlist"
                    )));
                }
                Ok(TargetMatch::Addresses)
            }
        }
    }

    /// Second check, for each address a name resolved to.
    pub fn check_address(&self, matched: &TargetMatch, ip: IpAddr) -> Result<(), Refusal> {
        let ip = ip.to_canonical();
        self.check_special(ip)?;
        match matched {
            TargetMatch::Name(_) | TargetMatch::Ip(_) => Ok(()),
            TargetMatch::Addresses => {
                if self.cidrs.iter().any(|n| n.contains(&ip)) {
                    Ok(())
                } else {
                    Err(Refusal::denied(format!(
                        "the name is not in the agent's allowlist and resolves to {ip}, \
                         which is not either"
                    )))
                }
            }
        }
    }

    /// Refuses special addresses that no entry lists explicitly.
    fn check_special(&self, ip: IpAddr) -> Result<(), Refusal> {
        if is_metadata(ip) {
            let exact = self
                .cidrs
                .iter()
                .any(|n| n.prefix_len() == n.max_prefix_len() && n.addr() == ip);
            return if exact {
                Ok(())
            } else {
                Err(Refusal::prohibited(format!(
                    "{ip} is a cloud metadata address; the agent reaches it only when it is \
                     listed exactly"
                )))
            };
        }
        let class = classify(ip);
        let special = matches!(
            class,
            AddrClass::LinkLocal
                | AddrClass::Loopback
                | AddrClass::Unspecified
                | AddrClass::Multicast
                | AddrClass::Broadcast
        );
        if !special {
            return Ok(());
        }
        let listed = self.cidrs.iter().any(|n| {
            n.contains(&ip) && classify(n.network()) == class && classify(n.broadcast()) == class
        });
        if listed {
            Ok(())
        } else {
            Err(Refusal::prohibited(format!(
                "{ip} is a {class} address; the agent reaches it only when a CIDR inside the \
                 {class} range lists it"
            )))
        }
    }
}

fn is_metadata(ip: IpAddr) -> bool {
    METADATA_ADDRESSES.contains(&ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str) -> Host {
        normalize_host(s).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bad_entries_are_all_reported_by_name() {
        let errs =
            Allowlist::parse(&["ok.example", "*", "10.0.0.1/8", "a*b", "", "x/99"]).unwrap_err();
        assert_eq!(errs.len(), 5, "{errs:?}");
        assert!(errs[1].contains("10.0.0.1/8") && errs[1].contains("10.0.0.0/8"));
    }

    #[test]
    fn target_table() {
        let list = Allowlist::parse(&[
            "db.corp.example",
            "*.svc.corp.example",
            "10.20.0.0/16",
            "192.168.1.7",
            "127.0.0.0/8",
            "169.254.169.254",
        ])
        .unwrap();
        let cases: &[(&str, &str, Result<(), &str>)] = &[
            ("exact name", "db.corp.example", Ok(())),
            ("exact name, other case", "DB.Corp.Example.", Ok(())),
            ("suffix, one label", "a.svc.corp.example", Ok(())),
            ("suffix, deep", "a.b.svc.corp.example", Ok(())),
            ("suffix itself", "svc.corp.example", Ok(())), // by address: cidrs exist
            ("ip in cidr", "10.20.3.4", Ok(())),
            ("single ip", "192.168.1.7", Ok(())),
            ("ip outside", "10.21.0.1", Err("destination_denied")),
            ("loopback listed inside its range", "127.0.0.1", Ok(())),
            ("metadata listed exactly", "169.254.169.254", Ok(())),
            ("other link-local", "169.254.1.1", Err("destination_denied")),
        ];
        for (name, target, want) in cases {
            let got = list
                .check_target(&host(target))
                .map(|_| ())
                .map_err(|r| r.code);
            assert_eq!(got, *want, "{name}");
        }
    }

    #[test]
    fn special_addresses_need_explicit_entries() {
        let broad = Allowlist::parse(&["0.0.0.0/0", "::/0", "*.corp.example"]).unwrap();
        let by_name = broad.check_target(&host("a.corp.example")).unwrap();
        for (addr, want) in [
            ("10.1.2.3", None),
            ("8.8.8.8", None),
            ("169.254.169.254", Some("destination_ip_prohibited")),
            ("169.254.170.2", Some("destination_ip_prohibited")),
            ("100.100.100.200", Some("destination_ip_prohibited")),
            ("fd00:ec2::254", Some("destination_ip_prohibited")),
            ("169.254.3.3", Some("destination_ip_prohibited")),
            ("fe80::1", Some("destination_ip_prohibited")),
            ("127.0.0.1", Some("destination_ip_prohibited")),
            ("::1", Some("destination_ip_prohibited")),
            ("::ffff:127.0.0.1", Some("destination_ip_prohibited")),
            ("0.0.0.0", Some("destination_ip_prohibited")),
            ("224.0.0.1", Some("destination_ip_prohibited")),
        ] {
            let got = broad
                .check_address(&by_name, ip(addr))
                .err()
                .map(|r| r.code);
            assert_eq!(got, want, "{addr}");
            let lit = broad
                .check_target(&Host::Ip(ip(addr)))
                .err()
                .map(|r| r.code);
            assert_eq!(lit, want, "literal {addr}");
        }
        // A /16 inside link-local unlocks link-local but not the metadata address in it.
        let ll = Allowlist::parse(&["169.254.0.0/16"]).unwrap();
        assert!(ll.check_target(&Host::Ip(ip("169.254.3.3"))).is_ok());
        assert_eq!(
            ll.check_target(&Host::Ip(ip("169.254.169.254")))
                .unwrap_err()
                .code,
            "destination_ip_prohibited"
        );
    }

    #[test]
    fn names_not_listed_must_resolve_inside_cidrs() {
        let list = Allowlist::parse(&["10.20.0.0/16"]).unwrap();
        let m = list.check_target(&host("anything.example")).unwrap();
        assert_eq!(m, TargetMatch::Addresses);
        assert!(list.check_address(&m, ip("10.20.1.1")).is_ok());
        assert_eq!(
            list.check_address(&m, ip("10.30.1.1")).unwrap_err().code,
            "destination_denied"
        );
        // A mapped IPv6 CIDR is folded to IPv4 like policy CIDRs, so it matches the
        // (canonical) addresses names resolve to.
        let mapped = Allowlist::parse(&["::ffff:10.20.0.0/112"]).unwrap();
        let m = mapped.check_target(&host("anything.example")).unwrap();
        assert!(mapped.check_address(&m, ip("10.20.1.1")).is_ok());
        let names_only = Allowlist::parse(&["db.corp"]).unwrap();
        assert_eq!(
            names_only
                .check_target(&host("other.corp"))
                .unwrap_err()
                .code,
            "destination_denied"
        );
        let empty = Allowlist::parse::<&str>(&[]).unwrap();
        assert!(empty.is_empty());
        assert!(empty.check_target(&host("db.corp")).is_err());
    }
}
