//! Policy file parsing: raw serde types (strict, with byte spans) and their validation into
//! the checked definitions of `model`.
//!
//! Parsing is deliberately per item: the document is first parsed into a spanned TOML tree
//! (which also recovers from syntax errors), then every `[[policy]]`, `[[policy.allow]]` and
//! `[[deny]]` table is deserialized on its own with `deny_unknown_fields`. One bad key
//! therefore hides nothing else: every problem of every item, of every file, is reported at
//! once as `FILE:LINE: message`.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net};
use serde::de::{self, DeserializeOwned, Deserializer, IgnoredAny, Visitor};
use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::host::{normalize_host, normalize_name_or_ipv4, Host, NameOrV4};
use super::limits::{
    check_method, check_path_pattern, compile_paths_cached, GlobCache, Limits, READ_ONLY_METHODS,
};
use super::model::{
    is_id, FileDef, HostPattern, PolicyDef, PolicyError, PortSet, Route, RuleDef, MAX_ID_LEN,
};

// ---------------------------------------------------------------------------------------------
// Raw types: exactly what a file may contain, nothing more.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    route: Spanned<String>,
    #[serde(default)]
    orgs: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    mode: Option<Spanned<String>>,
    #[serde(default)]
    upstream_proxy: Option<Spanned<bool>>,
    /// Validated separately, rule by rule (see the module docs); listed here so that serde
    /// accepts the key and names it in "expected one of" messages.
    #[serde(default)]
    #[allow(dead_code)]
    allow: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllow {
    #[serde(default)]
    hosts: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    cidrs: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    ports: Option<Spanned<Vec<Spanned<RawPort>>>>,
    #[serde(default)]
    private: Option<bool>,
    #[serde(default)]
    methods: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    read_only: Option<Spanned<bool>>,
    #[serde(default)]
    paths: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeny {
    #[serde(default)]
    hosts: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    cidrs: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    ports: Option<Spanned<Vec<Spanned<RawPort>>>>,
}

/// A `ports` entry: `443` or `"8000-8100"` (or `"443"`). Checked in `validate_ports` so the
/// message can name the value.
enum RawPort {
    Number(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawPort;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number or a \"LOW-HIGH\" range string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawPort, E> {
                Ok(RawPort::Number(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawPort, E> {
                Ok(RawPort::Number(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawPort, E> {
                Ok(RawPort::Text(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing and validation.

/// Byte offset → 1-based line.
struct Lines(Vec<usize>);

impl Lines {
    fn new(src: &str) -> Self {
        Lines(
            src.bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .map(|(i, _)| i)
                .collect(),
        )
    }

    fn line(&self, offset: usize) -> usize {
        self.0.partition_point(|&nl| nl < offset) + 1
    }
}

/// Collects the errors of one file.
pub(super) struct Ctx<'a> {
    file: &'a str,
    lines: Lines,
    errors: &'a mut Vec<PolicyError>,
    /// The path matchers compiled so far in this load.
    globs: &'a mut GlobCache,
}

impl Ctx<'_> {
    pub(super) fn err_at(&mut self, offset: usize, message: impl Into<String>) {
        let line = self.lines.line(offset);
        self.err_line(line, message);
    }

    pub(super) fn err_line(&mut self, line: usize, message: impl Into<String>) {
        self.errors.push(PolicyError {
            file: self.file.to_owned(),
            line,
            message: message.into(),
        });
    }

    /// A deserialization error of an item whose header is at `fallback` (used when the error
    /// has no span of its own).
    fn serde_err(&mut self, e: &toml::de::Error, fallback: usize) {
        match e.span() {
            Some(span) => self.err_at(span.start, e.message()),
            None => self.err_line(fallback, e.message()),
        }
    }
}

/// Parses and validates one file. Problems are appended to `errors`; the returned definition
/// is only meaningful when none were.
pub(crate) fn parse_file(
    file: &str,
    src: &str,
    errors: &mut Vec<PolicyError>,
    globs: &mut GlobCache,
) -> FileDef {
    let mut cx = Ctx {
        file,
        lines: Lines::new(src),
        errors,
        globs,
    };
    let mut def = FileDef::default();
    let (doc, syntax) = DeTable::parse_recoverable(src);
    if !syntax.is_empty() {
        // Recovery can report one mistake several times; keep each (line, message) once,
        // in reading order.
        let mut syntax: Vec<_> = syntax
            .iter()
            .map(|e| (e.span().map_or(0, |s| s.start), e.message()))
            .collect();
        syntax.sort_by_key(|&(start, _)| start);
        let mut seen = HashSet::new();
        for (start, message) in syntax {
            let line = cx.lines.line(start);
            if seen.insert((line, message)) {
                cx.err_line(line, format!("TOML syntax error: {message}"));
            }
        }
        // The recovered tree may be missing keys; validating it would add misleading errors.
        return def;
    }
    for (key, value) in doc.get_ref().iter() {
        match key.get_ref().as_ref() {
            "policy" => {
                for item in array_of_tables(&mut cx, "policy", value) {
                    if let Some(p) = parse_policy(&mut cx, item) {
                        def.policies.push(p);
                    }
                }
            }
            "deny" => {
                for item in array_of_tables(&mut cx, "deny", value) {
                    if let Some(r) = parse_deny(&mut cx, item) {
                        def.deny.push(r);
                    }
                }
            }
            "limit" => {
                for item in array_of_tables(&mut cx, "limit", value) {
                    if let Some(l) = super::ratelimit::parse_limit(&mut cx, item) {
                        def.limits.push(l);
                    }
                }
            }
            other => cx.err_at(
                key.span().start,
                format!(
                    "unknown key `{other}` (a policy file holds [[policy]], [[deny]] and [[limit]] tables)"
                ),
            ),
        }
    }
    def
}

/// The tables of an array of tables, or an error when `key` was written as something else.
fn array_of_tables<'v, 'i>(
    cx: &mut Ctx<'_>,
    key: &str,
    value: &'v Spanned<DeValue<'i>>,
) -> Vec<&'v Spanned<DeValue<'i>>> {
    let hint = format!("`{key}` must be an array of tables: write [[{key}]]");
    let DeValue::Array(items) = value.get_ref() else {
        cx.err_at(value.span().start, hint);
        return Vec::new();
    };
    let mut tables = Vec::new();
    for item in items.iter() {
        if item.get_ref().is_table() {
            tables.push(item);
        } else {
            cx.err_at(item.span().start, hint.clone());
        }
    }
    tables
}

fn parse_policy(cx: &mut Ctx<'_>, item: &Spanned<DeValue<'_>>) -> Option<PolicyDef> {
    let line = cx.lines.line(item.span().start);
    let raw = RawPolicy::deserialize(ValueDeserializer::from(item.clone()));
    // Rules are checked even when the policy's own keys are wrong: all errors at once.
    let mut allow = Vec::new();
    if let Some(rules) = item.get_ref().get("allow") {
        for rule in array_of_tables(cx, "policy.allow", rules) {
            if let Some(r) = parse_allow(cx, rule) {
                allow.push(r);
            }
        }
    }
    let raw = match raw {
        Ok(raw) => raw,
        Err(e) => {
            cx.serde_err(&e, line);
            return None;
        }
    };
    let mut ok = true;
    let name = raw.name.get_ref();
    if !is_id(name) {
        ok = false;
        cx.err_at(
            raw.name.span().start,
            format!(
                "invalid policy name {name:?}: use 1 to {MAX_ID_LEN} lowercase letters, digits and '-'"
            ),
        );
    }
    let route = match parse_route(raw.route.get_ref()) {
        Ok(r) => Some(r),
        Err(m) => {
            cx.err_at(raw.route.span().start, m);
            None
        }
    };
    let orgs = match raw.orgs {
        None => None,
        Some(list) => {
            let span = list.span();
            let list = list.into_inner();
            if list.is_empty() {
                ok = false;
                cx.err_at(
                    span.start,
                    "empty `orgs` list: the policy would apply to no one (omit `orgs` to make it apply to every organization)",
                );
            }
            let mut orgs: Vec<Arc<str>> = Vec::with_capacity(list.len());
            for org in list {
                if org.get_ref().trim().is_empty() || org.get_ref().trim() != org.get_ref() {
                    ok = false;
                    cx.err_at(
                        org.span().start,
                        format!("invalid organization {:?} in `orgs`", org.get_ref()),
                    );
                } else if !orgs.iter().any(|o| **o == **org.get_ref()) {
                    orgs.push(org.get_ref().as_str().into());
                }
            }
            Some(orgs)
        }
    };
    let report = match raw
        .mode
        .as_ref()
        .map(|m| (m.get_ref().as_str(), m.span().start))
    {
        None | Some(("enforce", _)) => false,
        Some(("report", at)) => {
            if orgs.is_none() {
                ok = false;
                cx.err_at(
                    at,
                    "mode = \"report\" needs an `orgs` list: report mode relaxes a policy for the organizations it names, never for everyone",
                );
            }
            true
        }
        Some((other, at)) => {
            ok = false;
            cx.err_at(
                at,
                format!("invalid mode {other:?}: expected \"enforce\" (the default) or \"report\""),
            );
            false
        }
    };
    let upstream_proxy = raw.upstream_proxy.as_ref().is_none_or(|u| *u.get_ref());
    if let (Some(u), Some(Route::Agent(_))) = (&raw.upstream_proxy, &route) {
        ok = false;
        cx.err_at(
            u.span().start,
            "`upstream_proxy` applies to direct routes only: an agent route never uses the parent proxy",
        );
    }
    Some(PolicyDef {
        line,
        report,
        upstream_proxy,
        name: name.as_str().into(),
        description: raw.description.map(Into::into),
        route: route.filter(|_| ok)?,
        orgs,
        allow,
    })
}

/// Deserializes one table into its raw type `T`, with the line of its header; a failure is
/// reported (at its own span, or that line) and yields `None`.
pub(super) fn raw_item<T: DeserializeOwned>(
    cx: &mut Ctx<'_>,
    item: &Spanned<DeValue<'_>>,
) -> Option<(usize, T)> {
    let line = cx.lines.line(item.span().start);
    match T::deserialize(ValueDeserializer::from(item.clone())) {
        Ok(raw) => Some((line, raw)),
        Err(e) => {
            cx.serde_err(&e, line);
            None
        }
    }
}

fn parse_allow(cx: &mut Ctx<'_>, item: &Spanned<DeValue<'_>>) -> Option<RuleDef> {
    let (line, raw) = raw_item::<RawAllow>(cx, item)?;
    let private = raw.private.unwrap_or(false);
    let limits = parse_limits(cx, raw.methods, raw.read_only, raw.paths);
    let mut rule = build_rule(
        cx,
        line,
        "allow rule",
        raw.hosts,
        raw.cidrs,
        raw.ports,
        private,
    )?;
    rule.limits = limits.ok()?;
    Some(rule)
}

/// The checked entries of a `methods` or `paths` list, each once; an empty list and each bad
/// entry are reported.
fn checked_list(
    cx: &mut Ctx<'_>,
    list: Spanned<Vec<Spanned<String>>>,
    key: &str,
    every: &str,
    check: impl Fn(&str) -> Result<Box<str>, String>,
) -> Vec<Box<str>> {
    if list.get_ref().is_empty() {
        cx.err_at(
            list.span().start,
            format!(
                "empty `{key}` list: the rule would allow no request (omit `{key}` to allow {every})"
            ),
        );
    }
    let mut v: Vec<Box<str>> = Vec::new();
    for item in list.get_ref() {
        match check(item.get_ref()) {
            Ok(x) if v.contains(&x) => {}
            Ok(x) => v.push(x),
            Err(e) => cx.err_at(item.span().start, e),
        }
    }
    v
}

/// The `methods`, `read_only` and `paths` of an allow rule: `Ok(None)` when it has none,
/// `Err(())` when an error was reported.
fn parse_limits(
    cx: &mut Ctx<'_>,
    methods: Option<Spanned<Vec<Spanned<String>>>>,
    read_only: Option<Spanned<bool>>,
    paths: Option<Spanned<Vec<Spanned<String>>>>,
) -> Result<Option<Limits>, ()> {
    let before = cx.errors.len();
    let mut allowed = None;
    if let (Some(m), Some(r)) = (&methods, &read_only) {
        let at = m.span().start.max(r.span().start);
        cx.err_at(
            at,
            "`read_only` and `methods` in one rule: `read_only = true` stands for methods GET, HEAD and OPTIONS; keep one",
        );
    } else if read_only.is_some_and(|r| *r.get_ref()) {
        allowed = Some(READ_ONLY_METHODS.iter().map(|&m| m.into()).collect());
    } else if let Some(list) = methods {
        let v = checked_list(cx, list, "methods", "every method", check_method);
        allowed = Some(v.into());
    }
    let mut globs = None;
    if let Some(list) = paths {
        let at = list.span().start;
        let v = checked_list(cx, list, "paths", "every path", |p| {
            check_path_pattern(p).map(|()| p.into())
        });
        if cx.errors.len() == before {
            match compile_paths_cached(cx.globs, v) {
                Ok(g) => globs = Some(g),
                Err(e) => cx.err_at(at, e),
            }
        }
    }
    if cx.errors.len() != before {
        return Err(());
    }
    Ok((allowed.is_some() || globs.is_some()).then_some(Limits {
        methods: allowed,
        paths: globs,
    }))
}

fn parse_deny(cx: &mut Ctx<'_>, item: &Spanned<DeValue<'_>>) -> Option<RuleDef> {
    let (line, raw) = raw_item::<RawDeny>(cx, item)?;
    build_rule(
        cx,
        line,
        "deny rule",
        raw.hosts,
        raw.cidrs,
        raw.ports,
        false,
    )
}

fn build_rule(
    cx: &mut Ctx<'_>,
    line: usize,
    what: &str,
    hosts: Option<Vec<Spanned<String>>>,
    cidrs: Option<Vec<Spanned<String>>>,
    ports: Option<Spanned<Vec<Spanned<RawPort>>>>,
    private: bool,
) -> Option<RuleDef> {
    let before = cx.errors.len();
    let hosts = hosts.unwrap_or_default();
    let cidrs = cidrs.unwrap_or_default();
    if hosts.is_empty() && cidrs.is_empty() {
        cx.err_line(
            line,
            format!("{what} has neither `hosts` nor `cidrs`: it would match nothing"),
        );
    }
    let mut rule = RuleDef {
        line,
        hosts: Vec::with_capacity(hosts.len()),
        cidrs: Vec::with_capacity(cidrs.len()),
        ports: None,
        private,
        limits: None,
    };
    for h in &hosts {
        match parse_host_pattern(h.get_ref()) {
            Ok(p) if rule.hosts.contains(&p) => {}
            Ok(p) => rule.hosts.push(p),
            Err(m) => cx.err_at(h.span().start, m),
        }
    }
    for c in &cidrs {
        match parse_cidr(c.get_ref()) {
            Ok(n) if rule.cidrs.contains(&n) => {}
            Ok(n) => rule.cidrs.push(n),
            Err(m) => cx.err_at(c.span().start, m),
        }
    }
    if let Some(ports) = ports {
        rule.ports = validate_ports(cx, what, ports);
    }
    (cx.errors.len() == before).then_some(rule)
}

fn validate_ports(
    cx: &mut Ctx<'_>,
    what: &str,
    ports: Spanned<Vec<Spanned<RawPort>>>,
) -> Option<PortSet> {
    if ports.get_ref().is_empty() {
        let hint = if what == "deny rule" {
            "omit `ports` to deny every port"
        } else {
            "omit `ports` for the default 80 and 443"
        };
        cx.err_at(ports.span().start, format!("empty `ports` list ({hint})"));
        return None;
    }
    let mut ranges = Vec::with_capacity(ports.get_ref().len());
    for p in ports.get_ref() {
        match parse_port(p.get_ref()) {
            Ok(r) => ranges.push(r),
            Err(m) => cx.err_at(p.span().start, m),
        }
    }
    Some(PortSet(ranges.into()))
}

fn parse_port(p: &RawPort) -> Result<(u16, u16), String> {
    fn one(n: i64, shown: &dyn fmt::Display) -> Result<u16, String> {
        u16::try_from(n)
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("invalid port {shown}: ports are 1-65535"))
    }
    match p {
        RawPort::Number(n) => one(*n, n).map(|p| (p, p)),
        RawPort::Text(s) => {
            let num = |t: &str| -> Result<u16, String> {
                if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!(
                        "invalid port {s:?}: expected a number or a \"LOW-HIGH\" range such as \"8000-8100\""
                    ));
                }
                one(t.parse().unwrap_or(i64::MAX), &format_args!("{s:?}"))
            };
            match s.split_once('-') {
                None => num(s).map(|p| (p, p)),
                Some((lo, hi)) => {
                    let (lo, hi) = (num(lo)?, num(hi)?);
                    if lo > hi {
                        return Err(format!(
                            "invalid port range {s:?}: the start is greater than the end"
                        ));
                    }
                    Ok((lo, hi))
                }
            }
        }
    }
}

/// `direct` or `agent:ID`.
pub(crate) fn parse_route(s: &str) -> Result<Route, String> {
    if s == "direct" {
        return Ok(Route::Direct);
    }
    match s.strip_prefix("agent:") {
        Some(id) if is_id(id) => Ok(Route::Agent(id.into())),
        _ => Err(format!(
            "invalid route {s:?}: expected \"direct\" or \"agent:ID\" (ID made of lowercase letters, digits and '-')"
        )),
    }
}

/// Characters that signal an attempt at a glob form we do not support.
const GLOB_CHARS: &[char] = &['*', '?', '[', ']', '{', '}', '!'];

/// An exact name or `*.suffix`, normalized like request hosts.
pub(crate) fn parse_host_pattern(p: &str) -> Result<HostPattern, String> {
    const FORMS: &str = "only exact names and `*.suffix` patterns are supported";
    if p == "*" {
        return Err(
            "host pattern \"*\" would match every host; list the names or `*.suffix` patterns you mean"
                .to_owned(),
        );
    }
    if let Some(suffix) = p.strip_prefix("*.") {
        if suffix.is_empty() || suffix == "." {
            return Err(format!(
                "invalid host pattern {p:?}: empty suffix after `*.`"
            ));
        }
        if suffix.contains(GLOB_CHARS) || suffix.contains(':') {
            return Err(format!("invalid host pattern {p:?}: {FORMS}"));
        }
        return match normalize_name_or_ipv4(suffix) {
            Ok(NameOrV4::Name(n)) => Ok(HostPattern::Suffix(n)),
            Ok(NameOrV4::V4(_)) => Err(format!(
                "invalid host pattern {p:?}: a wildcard over an IP address; use `cidrs`"
            )),
            Err(reason) => Err(format!("invalid host pattern {p:?}: {reason}")),
        };
    }
    if p.contains(GLOB_CHARS) && !p.starts_with('[') {
        return Err(format!(
            "invalid host pattern {p:?}: {FORMS} (`*` only as the whole first label)"
        ));
    }
    match normalize_host(p) {
        Ok(Host::Name(n)) => Ok(HostPattern::Exact(n)),
        Ok(Host::Ip(ip)) => {
            let bits = if ip.is_ipv4() { 32 } else { 128 };
            Err(format!(
                "host pattern {p:?} is an IP address: put it in `cidrs` as \"{ip}/{bits}\""
            ))
        }
        Err(e) => Err(format!("invalid host pattern {p:?}: {}", e.reason)),
    }
}

/// `ADDRESS/PREFIX` (or a bare address, meaning /32 or /128) with no host bits set.
/// IPv4-mapped IPv6 networks are folded to IPv4, as request hosts are.
pub(crate) fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let net = match s.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => match s.parse::<IpAddr>() {
            Ok(ip) => IpNet::from(ip),
            Err(_) => {
                return Err(format!(
                    "invalid CIDR {s:?}: expected ADDRESS/PREFIX such as \"203.0.113.0/24\" or \"2001:db8::/32\""
                ))
            }
        },
    };
    if net.addr() != net.network() {
        return Err(format!(
            "CIDR {s:?} has host bits set; did you mean \"{}\"?",
            net.trunc()
        ));
    }
    Ok(fold_mapped_net(net))
}

/// `::ffff:a.b.c.d/p` with p ≥ 96 → `a.b.c.d/(p-96)`.
fn fold_mapped_net(net: IpNet) -> IpNet {
    if let IpNet::V6(n) = net {
        if n.prefix_len() >= 96 {
            if let Some(v4) = n.addr().to_ipv4_mapped() {
                if let Ok(v4net) = Ipv4Net::new(v4, n.prefix_len() - 96) {
                    return IpNet::V4(v4net);
                }
            }
        }
    }
    net
}
