//! The lookup tables of a compiled set, and the query over them.
//!
//! Compilation turns the validated definitions into lookup tables, so a decision costs a few
//! hash probes whatever the number of rules:
//!
//! - exact names: one table from name to rules;
//! - `*.suffix`: one table from suffix to rules, probed with each tail of the name that starts
//!   after a dot, longest first (a tail longer than the longest suffix is skipped);
//! - CIDRs: per address family, one table per prefix length present, from masked network to
//!   rules, probed longest prefix first.
//!
//! Each table entry lists its rules in (file name, position) order, and the probes run from
//! most to least specific, so the first rule that passes the org and port filters is the
//! winner DESIGN.md asks for: exact > longer suffix > CIDR with longer prefix, ties to the
//! earlier file and rule. Hosts never compete with CIDRs: a name is matched against host
//! patterns only, an IP literal against CIDRs only.
//!
//! Why not globset, as DESIGN.md suggests: the only wildcard form is `*.suffix` (at any
//! depth), and a hash probe per label boundary answers it exactly. A `GlobSet` would report
//! *which* globs matched but not the most specific one, so the decision would still have to
//! collect every match into a `Vec` (an allocation per request) and rank them, and its
//! matching cost is not better than the few probes here (`benches/policy.rs` measures both).

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;

use ipnet::IpNet;

use super::fasthash::FastHash;
use super::host::{fold_mapped, Host};
use super::model::{HostPattern, RuleDef};

/// Which kind of rule matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleKind {
    /// An exact host name.
    ExactHost,
    /// A `*.suffix` pattern.
    SuffixHost,
    /// A CIDR (the target was an IP literal).
    Cidr,
    /// `cidrs` rules for a name that no host rule allows: allowed when every address the
    /// name resolves to is inside them (checked by the dialer).
    ResolvedCidr,
    /// No rule: a report-mode policy of the caller's org let a denied destination through
    /// (the decision's `rule` is the policy's header).
    ReportMode,
}

impl fmt::Display for RuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuleKind::ExactHost => "exact host",
            RuleKind::SuffixHost => "host suffix",
            RuleKind::Cidr => "cidr",
            RuleKind::ResolvedCidr => "cidr (every resolved address inside)",
            RuleKind::ReportMode => "report mode",
        })
    }
}

/// Index of a rule in `PolicySet::allow_rules` / `deny_rules`; also its precedence among
/// equally specific rules (rules are numbered in file-name, then position order). Ids and
/// policy indices are only ever produced by `compile`, together with the vectors they index,
/// so indexing with them cannot go out of bounds.
pub(super) type RuleId = u32;

type Table<K> = HashMap<K, Box<[RuleId]>, FastHash>;

/// Lookup tables over the host patterns and CIDRs of one kind of rule (allow or deny).
#[derive(Debug, Default)]
pub(super) struct Index {
    /// Exact name → rules.
    exact: Table<Box<str>>,
    /// `*.suffix` pattern's suffix → rules.
    suffix: Table<Box<str>>,
    /// Length of the longest suffix in `suffix`: longer tails of a name cannot match, so the
    /// walk skips them (bounds the work for names made of many labels).
    max_suffix_len: usize,
    /// IPv4 CIDRs: per prefix length, masked network → rules; longest prefix first.
    v4: Vec<(u8, Table<u32>)>,
    /// IPv6 CIDRs: per prefix length, masked network → rules; longest prefix first.
    v6: Vec<(u8, Table<u128>)>,
}

#[derive(Default)]
/// An [`Index`] being filled, rule by rule, in precedence order.
pub(super) struct IndexBuilder {
    /// Becomes `Index::exact`.
    exact: HashMap<Box<str>, Vec<RuleId>>,
    /// Becomes `Index::suffix`.
    suffix: HashMap<Box<str>, Vec<RuleId>>,
    /// Becomes `Index::v4`, keyed by prefix length.
    v4: HashMap<u8, HashMap<u32, Vec<RuleId>>>,
    /// Becomes `Index::v6`, keyed by prefix length.
    v6: HashMap<u8, HashMap<u128, Vec<RuleId>>>,
}

impl IndexBuilder {
    /// Adds the patterns of rule `id`. Rules must be added in precedence order.
    pub(super) fn add(&mut self, id: RuleId, rule: &RuleDef) {
        for h in &rule.hosts {
            let (table, name) = match h {
                HostPattern::Exact(n) => (&mut self.exact, n),
                HostPattern::Suffix(n) => (&mut self.suffix, n),
            };
            push_once(table.entry(name.as_str().into()).or_default(), id);
        }
        for net in &rule.cidrs {
            match net {
                IpNet::V4(n) => {
                    let table = self.v4.entry(n.prefix_len()).or_default();
                    push_once(table.entry(u32::from(n.network())).or_default(), id);
                }
                IpNet::V6(n) => {
                    let table = self.v6.entry(n.prefix_len()).or_default();
                    push_once(table.entry(u128::from(n.network())).or_default(), id);
                }
            }
        }
    }

    pub(super) fn build(self) -> Index {
        fn freeze<K: Eq + Hash>(t: HashMap<K, Vec<RuleId>>) -> Table<K> {
            t.into_iter().map(|(k, v)| (k, v.into())).collect()
        }
        fn by_prefix<K: Eq + Hash>(t: HashMap<u8, HashMap<K, Vec<RuleId>>>) -> Vec<(u8, Table<K>)> {
            let mut v: Vec<_> = t.into_iter().map(|(len, t)| (len, freeze(t))).collect();
            v.sort_by_key(|&(len, _)| std::cmp::Reverse(len));
            v
        }
        Index {
            max_suffix_len: self.suffix.keys().map(|k| k.len()).max().unwrap_or(0),
            exact: freeze(self.exact),
            suffix: freeze(self.suffix),
            v4: by_prefix(self.v4),
            v6: by_prefix(self.v6),
        }
    }
}

/// A rule lists a pattern once even if two of its patterns normalize to the same key.
fn push_once(ids: &mut Vec<RuleId>, id: RuleId) {
    if ids.last() != Some(&id) {
        ids.push(id);
    }
}

/// `len` leading one bits (`len` ≤ 32).
fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

/// `len` leading one bits (`len` ≤ 128).
fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

impl Index {
    /// Calls `f` on every rule matching `host`, most specific first, until it returns `Some`.
    pub(super) fn find<R>(
        &self,
        host: &Host,
        mut f: impl FnMut(RuleKind, RuleId) -> Option<R>,
    ) -> Option<R> {
        let mut first = |kind, ids: &[RuleId]| ids.iter().find_map(|&id| f(kind, id));
        match host {
            Host::Name(name) => {
                if let Some(r) = self
                    .exact
                    .get(name.as_str())
                    .and_then(|ids| first(RuleKind::ExactHost, ids))
                {
                    return Some(r);
                }
                if self.suffix.is_empty() {
                    return None;
                }
                // Tails after each dot, left to right: longest (most specific) first, and
                // never the name itself (`*.x` does not match `x`).
                for (i, _) in name.bytes().enumerate().filter(|&(_, b)| b == b'.') {
                    let tail = &name[i + 1..];
                    if tail.len() > self.max_suffix_len {
                        continue;
                    }
                    if let Some(r) = self
                        .suffix
                        .get(tail)
                        .and_then(|ids| first(RuleKind::SuffixHost, ids))
                    {
                        return Some(r);
                    }
                }
                None
            }
            Host::Ip(ip) => match fold_mapped_ip(*ip) {
                IpAddr::V4(a) => {
                    let a = u32::from(a);
                    self.v4.iter().find_map(|(len, t)| {
                        t.get(&(a & mask32(*len)))
                            .and_then(|ids| first(RuleKind::Cidr, ids))
                    })
                }
                IpAddr::V6(a) => {
                    let a = u128::from(a);
                    self.v6.iter().find_map(|(len, t)| {
                        t.get(&(a & mask128(*len)))
                            .and_then(|ids| first(RuleKind::Cidr, ids))
                    })
                }
            },
        }
    }
}

/// `Host::Ip` built by hand may carry a mapped address; policies hold the IPv4 form.
fn fold_mapped_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => fold_mapped(v6),
        v4 => v4,
    }
}
