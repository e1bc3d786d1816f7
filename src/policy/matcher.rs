//! The compiled policy set and the decision.
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
use std::fs;
use std::hash::Hash;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use ipnet::IpNet;

use super::fasthash::FastHash;
use super::host::fold_mapped;
use super::model::{parse_file, FileDef, HostPattern, PortSet, RuleDef};
use super::{Host, PolicyError};

/// How an allowed destination is reached.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// Dialed by the proxy itself, behind the address guard.
    Direct,
    /// Through the agent with this ID (`route = "agent:ID"`).
    Agent(Arc<str>),
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Direct => f.write_str("direct"),
            Route::Agent(id) => write!(f, "agent:{id}"),
        }
    }
}

/// Which kind of rule matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleKind {
    /// An exact host name.
    ExactHost,
    /// A `*.suffix` pattern.
    SuffixHost,
    /// A CIDR (the target was an IP literal).
    Cidr,
}

impl fmt::Display for RuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuleKind::ExactHost => "exact host",
            RuleKind::SuffixHost => "host suffix",
            RuleKind::Cidr => "cidr",
        })
    }
}

/// Where a rule was written: `file:line`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleRef {
    /// File name relative to the policies directory.
    pub file: Arc<str>,
    /// 1-based line of the `[[policy.allow]]` / `[[deny]]` header.
    pub line: usize,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// The answer to "may this caller reach this destination?" (smokescreen's decide()): allowed
/// through a policy's rule and route, or denied for a reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// An allow rule of a policy visible to the caller won, and no `[[deny]]` rule matched.
    Allow {
        /// Name of the policy whose rule won: logged, and shown by `policy explain`.
        policy: Arc<str>,
        /// The winning `[[policy.allow]]` rule, logged as `file:line`.
        rule: RuleRef,
        /// How the rule matched (exact name, suffix or CIDR), for `policy explain` and tests.
        kind: RuleKind,
        /// How the destination is reached: the winning policy's route.
        route: Route,
        /// The address guard may let private/loopback/... addresses through: the winning rule
        /// has `private = true` or is a CIDR rule (its CIDR contains the literal target).
        allow_private: bool,
    },
    /// The destination is refused.
    Deny {
        /// Why: the access line's `reason` and the error body's.
        reason: DenyReason,
        /// The policy that refused, when one did (none refuses for the reasons of today:
        /// `[[deny]]` rules belong to no policy).
        policy: Option<Arc<str>>,
        /// The rule that refused (the matching `[[deny]]` rule), when one did.
        rule: Option<RuleRef>,
    },
}

/// Why a [`Decision`] denies. A closed set of fixed codes, so the access line's `reason`
/// field stays one of a few known strings; what the code is about (the rule, the policy)
/// travels in the decision beside it. Finer rules add variants here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// A `[[deny]]` rule matched.
    DenyRule,
    /// No allow rule of a policy visible to the caller matched the host.
    NoMatchingRule,
    /// Allow rules matched the host, but none of them the port.
    PortNotAllowed,
    /// [`PolicySet::decide_in_policy`] was asked about a policy that does not exist.
    UnknownPolicy,
}

impl DenyReason {
    /// The reason as logged and returned in error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::DenyRule => "deny rule",
            DenyReason::NoMatchingRule => "no matching rule",
            DenyReason::PortNotAllowed => "port not allowed",
            DenyReason::UnknownPolicy => "unknown policy",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// [`Decision::reason`] of an allowed destination.
const REASON_ALLOWED: &str = "allowed";

impl Decision {
    /// A denial that no rule made (no match, wrong port, unknown policy).
    pub(super) fn denied(reason: DenyReason) -> Self {
        Decision::Deny {
            reason,
            policy: None,
            rule: None,
        }
    }

    /// Whether the destination may be reached.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }

    /// The access line's `reason`: "allowed", or the [`DenyReason`].
    pub fn reason(&self) -> &'static str {
        match self {
            Decision::Allow { .. } => REASON_ALLOWED,
            Decision::Deny { reason, .. } => reason.as_str(),
        }
    }

    /// The policy that allowed or refused, if any.
    pub fn policy(&self) -> Option<&Arc<str>> {
        match self {
            Decision::Allow { policy, .. } => Some(policy),
            Decision::Deny { policy, .. } => policy.as_ref(),
        }
    }

    /// The rule that allowed or refused, if any.
    pub fn rule(&self) -> Option<&RuleRef> {
        match self {
            Decision::Allow { rule, .. } => Some(rule),
            Decision::Deny { rule, .. } => rule.as_ref(),
        }
    }

    /// The route of an allowed destination.
    pub fn route(&self) -> Option<&Route> {
        match self {
            Decision::Allow { route, .. } => Some(route),
            Decision::Deny { .. } => None,
        }
    }

    /// Whether the address guard lets private addresses through (false when denied).
    pub fn allow_private(&self) -> bool {
        matches!(
            self,
            Decision::Allow {
                allow_private: true,
                ..
            }
        )
    }
}

/// A policy as loaded: what `tollgate policy explain` and listings show about it.
#[derive(Clone, Debug)]
pub struct PolicyInfo {
    /// The unique name.
    pub name: Arc<str>,
    /// The `description`, if the file gives one.
    pub description: Option<Arc<str>>,
    /// How destinations it allows are reached.
    pub route: Route,
    /// The organizations it applies to; `None` = every organization.
    pub orgs: Option<Box<[Arc<str>]>>,
    /// Where its `[[policy]]` header is.
    pub defined_at: RuleRef,
    /// Number of `[[policy.allow]]` rules.
    pub allow_rules: usize,
}

impl PolicyInfo {
    /// Whether callers of `org` may use this policy.
    pub fn visible_to(&self, org: &str) -> bool {
        // Linear: an `orgs` list is short, and comparing a few strings beats hashing one.
        self.orgs
            .as_ref()
            .is_none_or(|orgs| orgs.iter().any(|o| **o == *org))
    }
}

/// Index of a rule in `PolicySet::allow_rules` / `deny_rules`; also its precedence among
/// equally specific rules (rules are numbered in file-name, then position order). Ids and
/// policy indices are only ever produced by `compile`, together with the vectors they index,
/// so indexing with them cannot go out of bounds.
type RuleId = u32;

type Table<K> = HashMap<K, Box<[RuleId]>, FastHash>;

#[derive(Debug)]
struct AllowRule {
    policy: u32,
    at: RuleRef,
    ports: PortSet,
    private: bool,
}

#[derive(Debug)]
struct DenyRule {
    at: RuleRef,
    /// `None`: every port.
    ports: Option<PortSet>,
}

/// Lookup tables over the host patterns and CIDRs of one kind of rule (allow or deny).
#[derive(Debug, Default)]
struct Index {
    exact: Table<Box<str>>,
    suffix: Table<Box<str>>,
    /// Length of the longest suffix in `suffix`: longer tails of a name cannot match, so the
    /// walk skips them (bounds the work for names made of many labels).
    max_suffix_len: usize,
    /// Longest prefix first.
    v4: Vec<(u8, Table<u32>)>,
    /// Longest prefix first.
    v6: Vec<(u8, Table<u128>)>,
}

#[derive(Default)]
struct IndexBuilder {
    exact: HashMap<Box<str>, Vec<RuleId>>,
    suffix: HashMap<Box<str>, Vec<RuleId>>,
    v4: HashMap<u8, HashMap<u32, Vec<RuleId>>>,
    v6: HashMap<u8, HashMap<u128, Vec<RuleId>>>,
}

impl IndexBuilder {
    /// Adds the patterns of rule `id`. Rules must be added in precedence order.
    fn add(&mut self, id: RuleId, rule: &RuleDef) {
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

    fn build(self) -> Index {
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
    fn find<R>(&self, host: &Host, mut f: impl FnMut(RuleKind, RuleId) -> Option<R>) -> Option<R> {
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

/// What [`read_dir_files`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DirFiles {
    /// `(file name, contents)` of the files that could be read, sorted by name.
    pub sources: Vec<(String, String)>,
    /// Files that could not be read (line 0).
    pub unreadable: Vec<PolicyError>,
    /// Problems with the directory itself (named by its path, line 0).
    pub dir_errors: Vec<PolicyError>,
}

#[cfg(test)]
impl DirFiles {
    fn into_errors(self) -> Vec<PolicyError> {
        let mut errors = self.dir_errors;
        errors.extend(self.unreadable);
        errors
    }
}

/// Reads the `*.toml` files of `dir`: `(file name, contents)` for every regular, non-hidden
/// `*.toml` file (editors' lock and swap files are hidden), sorted by name.
pub(crate) fn read_dir_files(dir: &Path) -> DirFiles {
    let dir_err = |message: String| PolicyError {
        file: dir.display().to_string(),
        line: 0,
        message,
    };
    let mut found = DirFiles {
        sources: Vec::new(),
        unreadable: Vec::new(),
        dir_errors: Vec::new(),
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            found
                .dir_errors
                .push(dir_err(format!("cannot read the policy directory: {e}")));
            return found;
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                found
                    .dir_errors
                    .push(dir_err(format!("cannot list the policy directory: {e}")));
                continue;
            }
        };
        let os_name = entry.file_name();
        let Some(name) = os_name.to_str() else {
            if os_name.as_encoded_bytes().ends_with(b".toml") {
                found
                    .dir_errors
                    .push(dir_err(format!("file name {os_name:?} is not UTF-8")));
            }
            continue;
        };
        if !name.ends_with(".toml") || name.starts_with('.') {
            continue;
        }
        // Follows symlinks (Kubernetes ConfigMap volumes are made of them).
        match fs::metadata(entry.path()) {
            Ok(m) if m.is_file() => names.push(name.to_owned()),
            Ok(_) => {}
            Err(e) => found.unreadable.push(PolicyError {
                file: name.to_owned(),
                line: 0,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    names.sort();
    for name in names {
        match fs::read_to_string(dir.join(&name)) {
            Ok(src) => found.sources.push((name, src)),
            Err(e) => found.unreadable.push(PolicyError {
                file: name,
                line: 0,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    found
}

/// A validated, compiled set of policy files. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct PolicySet {
    policies: Vec<PolicyInfo>,
    by_name: HashMap<Arc<str>, u32, FastHash>,
    allow_rules: Vec<AllowRule>,
    allow: Index,
    deny_rules: Vec<DenyRule>,
    deny: Index,
    files: usize,
}

impl PolicySet {
    /// The set that denies everything (no valid set ever loaded).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Loads every `*.toml` file in `dir` (sorted by name). All errors of all files are
    /// returned at once; the set is built only when there are none.
    pub fn load_dir(dir: &Path) -> Result<Self, Vec<PolicyError>> {
        Self::build_from(&read_dir_files(dir))
    }

    /// Reads the policy files of `dir` without validating them (tests of the directory rules).
    #[cfg(test)]
    pub fn read_sources(dir: &Path) -> Result<Vec<(String, String)>, Vec<PolicyError>> {
        let found = read_dir_files(dir);
        if found.dir_errors.is_empty() && found.unreadable.is_empty() {
            Ok(found.sources)
        } else {
            Err(found.into_errors())
        }
    }

    /// Same as `load_dir`, from (file name, contents) pairs, already in file-name order.
    pub fn from_sources(files: &[(String, String)]) -> Result<Self, Vec<PolicyError>> {
        Self::build(files, Vec::new())
    }

    /// `load_dir` after reading: directory problems first, then every file's errors (the
    /// unreadable ones included) in file-name order.
    pub(crate) fn build_from(found: &DirFiles) -> Result<Self, Vec<PolicyError>> {
        let built = Self::build(&found.sources, found.unreadable.clone());
        if found.dir_errors.is_empty() {
            return built;
        }
        let mut errors = found.dir_errors.clone();
        errors.extend(built.err().unwrap_or_default());
        Err(errors)
    }

    /// Validates `files` and compiles them if neither they nor `unreadable` (files that could
    /// not be read) have errors. Errors come out in file-name order, each file's by line.
    fn build(
        files: &[(String, String)],
        unreadable: Vec<PolicyError>,
    ) -> Result<Self, Vec<PolicyError>> {
        let mut errors = unreadable;
        let mut defs = Vec::with_capacity(files.len());
        let mut first_def: HashMap<Arc<str>, (&str, usize)> = HashMap::new();
        for (file, src) in files {
            let start = errors.len();
            let def = parse_file(file, src, &mut errors);
            for p in &def.policies {
                match first_def.get(&p.name) {
                    Some((f, l)) => errors.push(PolicyError {
                        file: file.clone(),
                        line: p.line,
                        message: format!(
                            "duplicate policy name {:?}: already defined at {f}:{l}",
                            p.name
                        ),
                    }),
                    None => {
                        first_def.insert(p.name.clone(), (file, p.line));
                    }
                }
            }
            // Per file, in reading order (stable: same-line errors keep their order).
            errors[start..].sort_by_key(|e| e.line);
            defs.push((file.as_str(), def));
        }
        if errors.is_empty() {
            return Ok(Self::compile(defs));
        }
        // Unreadable files (line 0) take their place in file-name order; the sort is stable,
        // so each file's errors keep their line order.
        errors.sort_by(|a, b| a.file.cmp(&b.file));
        Err(errors)
    }

    fn compile(files: Vec<(&str, FileDef)>) -> Self {
        let mut set = PolicySet {
            files: files.len(),
            ..Self::default()
        };
        let mut allow = IndexBuilder::default();
        let mut deny = IndexBuilder::default();
        for (file, def) in files {
            let file: Arc<str> = file.into();
            let at = |line| RuleRef {
                file: file.clone(),
                line,
            };
            for rule in &def.deny {
                // Ids are indices; a set with more than u32::MAX rules cannot be parsed
                // from files in memory, so the truncation cannot happen.
                deny.add(set.deny_rules.len() as RuleId, rule);
                set.deny_rules.push(DenyRule {
                    at: at(rule.line),
                    ports: rule.ports.clone(),
                });
            }
            for p in def.policies {
                let index = set.policies.len() as u32;
                for rule in &p.allow {
                    allow.add(set.allow_rules.len() as RuleId, rule);
                    set.allow_rules.push(AllowRule {
                        policy: index,
                        at: at(rule.line),
                        ports: rule.ports.clone().unwrap_or_else(PortSet::default_allow),
                        private: rule.private,
                    });
                }
                set.by_name.insert(p.name.clone(), index);
                set.policies.push(PolicyInfo {
                    name: p.name,
                    description: p.description,
                    route: p.route,
                    orgs: p.orgs.map(Into::into),
                    defined_at: at(p.line),
                    allow_rules: p.allow.len(),
                });
            }
        }
        set.allow = allow.build();
        set.deny = deny.build();
        set
    }

    /// The decision for a caller of `org` reaching `host:port`.
    pub fn decide(&self, org: &str, host: &Host, port: u16) -> Decision {
        self.decide_among(None, org, host, port)
    }

    /// The decision restricted to the named policy (deny rules still apply first); used for
    /// an outbound application's `egress_policy`. `org` scoping applies.
    pub fn decide_in_policy(&self, policy: &str, org: &str, host: &Host, port: u16) -> Decision {
        match self.by_name.get(policy) {
            Some(&index) => self.decide_among(Some(index), org, host, port),
            None => self
                .deny_decision(host, port)
                .unwrap_or_else(|| Decision::denied(DenyReason::UnknownPolicy)),
        }
    }

    /// The `[[deny]]` rule that refuses `host:port`, if any. Besides its use in the decision,
    /// this lets a dialer check the addresses a name resolved to against deny CIDRs.
    pub fn denied_by(&self, host: &Host, port: u16) -> Option<&RuleRef> {
        self.deny.find(host, |_, id| {
            let rule = &self.deny_rules[id as usize];
            rule.ports
                .as_ref()
                .is_none_or(|p| p.contains(port))
                .then_some(&rule.at)
        })
    }

    fn deny_decision(&self, host: &Host, port: u16) -> Option<Decision> {
        self.denied_by(host, port).map(|rule| Decision::Deny {
            reason: DenyReason::DenyRule,
            policy: None,
            rule: Some(rule.clone()),
        })
    }

    fn decide_among(&self, only: Option<u32>, org: &str, host: &Host, port: u16) -> Decision {
        if let Some(d) = self.deny_decision(host, port) {
            return d;
        }
        let mut port_refused = false;
        let winner = self.allow.find(host, |kind, id| {
            let rule = &self.allow_rules[id as usize];
            if only.is_some_and(|p| p != rule.policy) {
                return None;
            }
            let policy = &self.policies[rule.policy as usize];
            if !policy.visible_to(org) {
                return None;
            }
            if !rule.ports.contains(port) {
                port_refused = true;
                return None;
            }
            Some((kind, rule, policy))
        });
        match winner {
            Some((kind, rule, policy)) => Decision::Allow {
                policy: policy.name.clone(),
                rule: rule.at.clone(),
                kind,
                route: policy.route.clone(),
                allow_private: rule.private || kind == RuleKind::Cidr,
            },
            None if port_refused => Decision::denied(DenyReason::PortNotAllowed),
            None => Decision::denied(DenyReason::NoMatchingRule),
        }
    }

    /// The route of the named policy, if it exists.
    pub fn policy_route(&self, policy: &str) -> Option<Route> {
        self.policy(policy).map(|p| p.route.clone())
    }

    /// The named policy, if it exists (for `policy explain` and listings).
    pub fn policy(&self, name: &str) -> Option<&PolicyInfo> {
        self.by_name.get(name).map(|&i| &self.policies[i as usize])
    }

    /// Every policy, in file-name then position order.
    pub fn policies(&self) -> &[PolicyInfo] {
        &self.policies
    }

    /// Number of policies in the set.
    pub fn policy_count(&self) -> usize {
        self.policies.len()
    }

    /// Number of files the set was loaded from.
    pub fn file_count(&self) -> usize {
        self.files
    }

    /// Number of `[[deny]]` rules in the set.
    #[cfg(test)]
    pub fn deny_rule_count(&self) -> usize {
        self.deny_rules.len()
    }
}
