//! Compilation: validated files become a [`PolicySet`], the policies as listed plus the
//! rule vectors and the lookup tables (`index`) a decision queries. Loading a directory is
//! read (`files`) → parse (`parse`) → compile (here); every error of every file comes out at
//! once, and a set is built only when there are none.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use ipnet::IpNet;

use super::fasthash::FastHash;
use super::files::{read_dir_files, DirFiles};
use super::host::Host;
use super::index::{Index, IndexBuilder, RuleId};
use super::limits::{GlobCache, Limits};
use super::model::{FileDef, PolicyError, PortSet, Route, RuleRef};
use super::parse::parse_file;
use super::ratelimit::LimitDef;

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
    /// `mode = "report"`: what its rules would deny its `orgs` is allowed, logged as
    /// `would_deny`.
    pub report: bool,
    /// `upstream_proxy` (default true): `false` makes its direct routes bypass the parent
    /// proxy (`--upstream-proxy`).
    pub upstream_proxy: bool,
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

/// A `[[policy.allow]]` rule as a decision needs it.
#[derive(Debug)]
pub(super) struct AllowRule {
    /// Index of its policy in `PolicySet::policies` (org scoping, the route, the name).
    pub(super) policy: u32,
    /// Where it is written, reported by the decision.
    pub(super) at: RuleRef,
    /// The ports it allows (80 and 443 when the file gives none).
    pub(super) ports: PortSet,
    /// `private = true`: the address guard lets private addresses through.
    pub(super) private: bool,
    /// Its `methods` and `paths`; `None`: every request to the host and port.
    pub(super) limits: Option<Limits>,
}

/// A `[[deny]]` rule as a decision needs it.
#[derive(Debug)]
pub(super) struct DenyRule {
    /// Where it is written, reported by the decision.
    pub(super) at: RuleRef,
    /// The ports it denies; `None`: every port.
    pub(super) ports: Option<PortSet>,
}

/// A validated, compiled set of policy files. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct PolicySet {
    /// Every policy, in file-name then position order (an allow rule's `policy` indexes it).
    pub(super) policies: Vec<PolicyInfo>,
    /// Policy name → index in `policies`, for `decide_in_policy` and lookups by name.
    pub(super) by_name: HashMap<Arc<str>, u32, FastHash>,
    /// Every allow rule, in precedence order (the `allow` index holds their ids).
    pub(super) allow_rules: Vec<AllowRule>,
    /// Lookup tables over the allow rules' hosts and CIDRs.
    pub(super) allow: Index,
    /// Every `[[deny]]` rule, in precedence order (the `deny` index holds their ids).
    pub(super) deny_rules: Vec<DenyRule>,
    /// Lookup tables over the deny rules' hosts and CIDRs.
    pub(super) deny: Index,
    /// Org → the first report-mode policy that names it: whose route a destination no rule
    /// allows takes for that org (usually empty; looked up only to relax a denial).
    pub(super) report_orgs: HashMap<Arc<str>, u32, FastHash>,
    /// The allow rules with `cidrs`, in precedence order, with their networks: a name no
    /// host rule allows is allowed on a direct route when every address it resolves to is
    /// inside them (`decide::resolved_cidrs`). Empty in most sets.
    pub(super) cidr_rules: Vec<(RuleId, Arc<[IpNet]>)>,
    /// The `[[limit]]` blocks, in file-name then position order (usually none).
    pub(super) limits: Vec<LimitDef>,
    /// Number of files loaded, for the reload log line and `/readyz`.
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
        let mut first_limit: HashMap<Arc<str>, (&str, usize)> = HashMap::new();
        let mut globs = GlobCache::new();
        for (file, src) in files {
            let start = errors.len();
            let def = parse_file(file, src, &mut errors, &mut globs);
            for l in &def.limits {
                match first_limit.get(&l.name) {
                    Some((f, line)) => errors.push(PolicyError {
                        file: file.clone(),
                        line: l.at.line,
                        message: format!(
                            "duplicate limit name {:?}: already defined at {f}:{line}",
                            l.name
                        ),
                    }),
                    None => {
                        first_limit.insert(l.name.clone(), (file, l.at.line));
                    }
                }
            }
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
            for mut l in def.limits {
                l.at = at(l.at.line);
                set.limits.push(l);
            }
            for p in def.policies {
                let index = set.policies.len() as u32;
                let allow_rules = p.allow.len();
                for rule in p.allow {
                    let id = set.allow_rules.len() as RuleId;
                    allow.add(id, &rule);
                    if !rule.cidrs.is_empty() {
                        set.cidr_rules.push((id, rule.cidrs.as_slice().into()));
                    }
                    set.allow_rules.push(AllowRule {
                        policy: index,
                        at: at(rule.line),
                        ports: rule.ports.unwrap_or_else(PortSet::default_allow),
                        private: rule.private,
                        limits: rule.limits,
                    });
                }
                set.by_name.insert(p.name.clone(), index);
                if p.report {
                    for org in p.orgs.iter().flatten() {
                        set.report_orgs.entry(org.clone()).or_insert(index);
                    }
                }
                set.policies.push(PolicyInfo {
                    name: p.name,
                    description: p.description,
                    route: p.route,
                    orgs: p.orgs.map(Into::into),
                    defined_at: at(p.line),
                    allow_rules,
                    report: p.report,
                    upstream_proxy: p.upstream_proxy,
                });
            }
        }
        set.allow = allow.build();
        set.deny = deny.build();
        set
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

    /// The `[[limit]]` blocks that count a request of a caller of `org` to `host`.
    pub fn limits_for<'a>(
        &'a self,
        org: &'a str,
        host: &'a Host,
    ) -> impl Iterator<Item = &'a LimitDef> + 'a {
        self.limits.iter().filter(move |l| l.applies(org, host))
    }

    /// Number of `[[deny]]` rules in the set.
    #[cfg(test)]
    pub fn deny_rule_count(&self) -> usize {
        self.deny_rules.len()
    }
}
