//! `tollgate policy explain`: the decision the proxy would make for a caller of an org, with
//! the policy, rule (file:line), route, and what the address guard would say about the
//! addresses the name resolves to now. The outbound application that would inject is found
//! in its own step, from the apps the caller passes in: it is not part of the decision.

use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;

use anyhow::{anyhow, Context};
use serde_json::{json, Value};

use crate::oauth::index::DomainTable;
use crate::policy::{
    normalize_host, normalize_path, parse_port, Decision, Host, PolicySet, RequestInfo, Route,
};
use crate::route::guard::{classify, Guard};

/// The TARGET of `policy explain`: a URL (`http://host[:port]/...`, `https://host`) or
/// `host:port`. It parses as the command line is read, so a malformed one (a port of 0 or
/// above 65535 included) is a usage error.
#[derive(Clone, Debug)]
pub struct Target {
    /// The destination host, normalized as the proxy normalizes request hosts.
    pub host: Host,
    /// The port as written, or the scheme's default.
    pub port: u16,
    /// The path of a URL target (without its query), as written.
    pub path: Option<String>,
    /// `--method`: decide one HTTP request (with the URL's path, or `/`) rather than the
    /// destination alone.
    pub method: Option<String>,
    /// Written as an `http://` URL: a plain-http request, which the proxy forwards over TLS
    /// to an app's domains with `upstream_tls` (port 80 becoming 443).
    pub plain_http: bool,
}

impl Target {
    /// The request to decide, when the target is one: a URL with a path, or a `--method`.
    /// Its method (default `GET`) and raw path (default `/`).
    fn request(&self) -> Option<(&str, &str)> {
        if self.method.is_none() && self.path.is_none() {
            return None;
        }
        Some((
            self.method.as_deref().unwrap_or("GET"),
            self.path.as_deref().unwrap_or("/"),
        ))
    }
}

/// Why a TARGET cannot be explained.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TargetError(String);

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(target: &str) -> Result<Self, TargetError> {
        let (host, port) = parse_target(target)?;
        // The path of a URL, without query or fragment; none for `host:port` or a bare
        // `https://host`.
        let path = target.split_once("://").and_then(|(_, rest)| {
            let start = rest.find('/')?;
            let path = rest[start..].split(['?', '#']).next().unwrap_or("/");
            Some(path.to_owned())
        });
        let plain_http = target
            .split_once("://")
            .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("http"));
        Ok(Target {
            host,
            port,
            path,
            method: None,
            plain_http,
        })
    }
}

/// Parses a target given as a URL (`http://host[:port]/...`, `https://host`) or `host:port`.
pub fn parse_target(target: &str) -> Result<(Host, u16), TargetError> {
    let fail = |m: String| TargetError(m);
    let (authority, default_port) = if let Some((scheme, rest)) = target.split_once("://") {
        let port = match scheme.to_ascii_lowercase().as_str() {
            "http" => 80,
            "https" => 443,
            other => {
                return Err(fail(format!(
                    "unsupported scheme {other:?} (use http, https or host:port)"
                )))
            }
        };
        let auth = rest.split(['/', '?', '#']).next().unwrap_or_default();
        (auth.rsplit('@').next().unwrap_or(auth), Some(port))
    } else {
        (target.rsplit('@').next().unwrap_or(target), None)
    };
    let auth: http::uri::Authority = authority
        .parse()
        .map_err(|_| fail(format!("{target:?} is not a URL or host:port")))?;
    // The port as written: `Authority::port` reads one above 65535 as no port at all.
    let written = authority
        .strip_prefix(auth.host())
        .and_then(|rest| rest.strip_prefix(':'))
        .filter(|p| !p.is_empty());
    let port = match written {
        Some(p) => parse_port(p).map_err(|e| fail(e.to_string()))?,
        None => default_port.ok_or_else(|| {
            fail(format!(
                "{target:?} needs a port (host:port) or a URL scheme"
            ))
        })?,
    };
    let host = normalize_host(auth.host()).map_err(|e| fail(e.to_string()))?;
    Ok((host, port))
}

/// The app (as listed by the admin API) whose `domains` cover `host`, decided as injection
/// decides it ([`DomainTable`]).
pub fn app_for<'a>(apps: &'a [Value], host: &Host) -> Option<&'a Value> {
    let Host::Name(name) = host else {
        return None;
    };
    let mut table = DomainTable::default();
    for app in apps {
        for d in app["domains"].as_array().into_iter().flatten() {
            if let Some(d) = d.as_str() {
                table.insert(d, app);
            }
        }
    }
    table.find(name).copied()
}

/// Prints the explanation. `apps` are the caller org's outbound applications when the admin
/// API could be asked (else the app line says so). Returns whether the destination is allowed.
pub fn run(
    dir: &Path,
    org: &str,
    user: Option<&str>,
    target: &Target,
    as_json: bool,
    resolve: bool,
    apps: Option<&[Value]>,
) -> anyhow::Result<bool> {
    let set = PolicySet::load_dir(dir).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow!("policies are invalid:\n{}", lines.join("\n"))
    })?;
    let (out, allowed) = explain(&set, org, user, target, resolve, apps);
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&out).context("encoding")?
        );
    } else {
        print_text(&out, org, user, apps.is_some());
    }
    Ok(allowed)
}

/// The explanation as JSON (the fields `policy explain --json` prints) and whether the
/// destination is allowed: the decision of `set` for a caller of `org`, with the addresses
/// the name resolves to now when `resolve`. The admin console shows the same object.
pub fn explain(
    set: &PolicySet,
    org: &str,
    user: Option<&str>,
    target: &Target,
    resolve: bool,
    apps: Option<&[Value]>,
) -> (Value, bool) {
    let host = &target.host;
    let port = &decided_port(target, apps);
    let request = target.request();
    let normalized = request.map(|(_, raw)| normalize_path(raw));
    let d = match (request, &normalized) {
        (Some((method, _)), Some(path)) => {
            let info = RequestInfo {
                method,
                path: path.as_deref().map_err(|e| *e),
            };
            set.decide_request(org, host, *port, &info)
        }
        _ => set.decide(org, host, *port),
    };
    let addresses = if resolve {
        guard_addresses(host, *port, &d)
    } else {
        Vec::new()
    };
    let guard_refuses = addresses.iter().any(|a| a["guard"] == "refused");
    let outside = addresses.iter().any(|a| a["cidrs"] == "outside");
    let allowed = d.is_allowed() && !guard_refuses && !outside;
    let reach = d.reach();
    let reason = if guard_refuses {
        "address guard: resolves to a prohibited address".to_string()
    } else if outside {
        "resolves to an address outside the cidrs rules (destination_denied)".to_string()
    } else {
        d.reason().to_string()
    };
    let out = json!({
        "org": org,
        "user": user,
        "target": format!("{host}:{port}"),
        "decision": match (allowed, d.would_deny()) {
            (true, Some(_)) => "would_deny (allowed: report mode)",
            (true, None) => "allowed",
            (false, _) => "denied",
        },
        "reason": reason,
        "policy": d.policy().map(|p| p.as_ref()),
        "rule": d.rule().map(|r| r.to_string()),
        "route": d.route().map(|r| r.to_string()),
        "private_allowed": d.allow_private(),
        "upstream_proxy": (d.route() == Some(&Route::Direct)).then_some(!reach.bypass_parent),
        "cidrs": reach.within.as_ref().map(|w| json!({
            "rule": w.rule.to_string(),
            "networks": w.nets.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })),
        "upstream_tls_port": (*port != target.port).then_some(*port),
        "limits": set.limits_for(org, host).map(|l| json!({
            "name": l.name.as_ref(),
            "rule": l.at.to_string(),
            "rate": l.describe(),
        })).collect::<Vec<_>>(),
        "method": request.map(|(m, _)| m),
        "path": normalized.as_ref().map(|p| match p {
            Ok(p) => p.to_string(),
            Err(e) => format!("undecidable: {e}"),
        }),
        "intercept": request.is_none() && d.inspect(),
        "app": apps.map_or(Value::Null, |list| app_json(list, host)),
        "addresses": addresses,
    });
    (out, allowed)
}

/// The port the proxy decides on for `target`: a plain-http request to the domains of an
/// app of `apps` with `upstream_tls` is forwarded over TLS, so port 80 becomes 443 (as
/// `proxy::forward` does before deciding).
pub fn decided_port(target: &Target, apps: Option<&[Value]>) -> u16 {
    let tls = target.plain_http
        && apps
            .and_then(|list| app_for(list, &target.host))
            .is_some_and(|a| a["upstream_tls"] == true);
    match (tls, target.port) {
        (true, 80) => 443,
        (_, port) => port,
    }
}

/// What the guard (and a `cidrs` condition) would do with the addresses `host` resolves to
/// now, when the decision routes it directly (an agent resolves on its side; a denial dials
/// nothing).
fn guard_addresses(host: &Host, port: u16, d: &Decision) -> Vec<Value> {
    let Decision::Allow {
        route: Route::Direct,
        allow_private,
        within,
        ..
    } = d
    else {
        return Vec::new();
    };
    let mut addresses = Vec::new();
    let ips: Vec<std::net::IpAddr> = match host {
        Host::Ip(ip) => vec![*ip],
        Host::Name(name) => {
            use std::net::ToSocketAddrs;
            match (name.as_str(), port).to_socket_addrs() {
                Ok(a) => a.map(|s| s.ip()).collect(),
                Err(e) => {
                    addresses.push(json!({"error": format!("does not resolve: {e}")}));
                    Vec::new()
                }
            }
        }
    };
    // The proxy's own guard (offline, it knows no listener addresses).
    let guard = Guard::default();
    for ip in ips {
        let refused = guard
            .check(SocketAddr::new(ip, port), *allow_private)
            .is_err();
        let mut a = json!({
            "address": ip.to_string(),
            "class": classify(ip).as_str(),
            "guard": if refused { "refused" } else { "ok" },
        });
        if let Some(w) = within {
            a["cidrs"] = json!(if w.contains(ip) { "inside" } else { "outside" });
        }
        addresses.push(a);
    }
    addresses
}

/// The `app` field: the app of `apps` that would inject for `host`, or `{"id": null}`.
fn app_json(apps: &[Value], host: &Host) -> Value {
    match app_for(apps, host) {
        None => json!({"id": null}),
        Some(a) => json!({"id": a["id"], "name": a["name"], "enabled": a["enabled"]}),
    }
}

/// The text form of `out`; `apps_known` when the admin API was asked about the apps.
fn print_text(out: &Value, org: &str, user: Option<&str>, apps_known: bool) {
    let s = |k: &str| match &out[k] {
        Value::String(v) => v.clone(),
        Value::Bool(b) => b.to_string(),
        _ => "-".into(),
    };
    println!("target:   {}", s("target"));
    println!(
        "caller:   org {org}{}",
        user.map(|u| format!(", user {u}")).unwrap_or_default()
    );
    println!("decision: {}", s("decision"));
    println!("reason:   {}", s("reason"));
    println!("policy:   {}", s("policy"));
    println!("rule:     {}", s("rule"));
    println!("route:    {}", s("route"));
    println!("private:  {}", s("private_allowed"));
    if let Some(p) = out["upstream_tls_port"].as_u64() {
        println!("port:     {p}: the app's upstream_tls forwards plain http over TLS");
    }
    if out["upstream_proxy"] == false {
        println!("parent:   bypassed (upstream_proxy = false)");
    }
    if let Some(c) = out["cidrs"].as_object() {
        let nets: Vec<&str> = c["networks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "cidrs:    the name is allowed by cidrs rule {} only if every address it resolves to is in {}",
            c["rule"].as_str().unwrap_or_default(),
            nets.join(", ")
        );
    }
    if out["method"].is_string() {
        println!("request:  {} {}", s("method"), s("path"));
    }
    if out["intercept"] == true {
        println!(
            "inspect:  the rule limits methods or paths: a CONNECT is intercepted and each request decided (clients must trust the tollgate CA)"
        );
    }
    for l in out["limits"].as_array().into_iter().flatten() {
        println!(
            "limit:    {} ({}) at {}: 429 rate_limited beyond it",
            l["name"].as_str().unwrap_or_default(),
            l["rate"].as_str().unwrap_or_default(),
            l["rule"].as_str().unwrap_or_default()
        );
    }
    let a = &out["app"];
    if !apps_known {
        println!(
            "app:      unknown (give --server/--token or TOLLGATE_URL/TOLLGATE_TOKEN with an admin token of the org to see which app injects)"
        );
    } else if a["id"].is_null() {
        println!("app:      none (no outbound application of {org} covers this host)");
    } else {
        let disabled = a["enabled"] == false;
        println!(
            "app:      {} ({}){}: its token is injected{}",
            a["id"].as_str().unwrap_or_default(),
            a["name"].as_str().unwrap_or_default(),
            if disabled { ", disabled" } else { "" },
            if disabled {
                " nowhere: requests get 403 app_disabled"
            } else {
                ""
            }
        );
    }
    for a in out["addresses"].as_array().into_iter().flatten() {
        match a.get("error") {
            Some(e) => println!("address:  {}", e.as_str().unwrap_or_default()),
            None => println!(
                "address:  {} ({}) guard {}{}",
                a["address"].as_str().unwrap_or_default(),
                a["class"].as_str().unwrap_or_default(),
                a["guard"].as_str().unwrap_or_default(),
                a["cidrs"]
                    .as_str()
                    .map(|c| format!(", {c} the cidrs"))
                    .unwrap_or_default()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_injecting_app_is_the_most_specific_domain_match() {
        let apps = vec![
            json!({"id": "wide", "domains": ["*.example.com"]}),
            json!({"id": "narrow", "domains": ["*.api.example.com"]}),
            json!({"id": "exact", "domains": ["v2.api.example.com"]}),
        ];
        let id = |h: &str| {
            app_for(&apps, &normalize_host(h).unwrap())
                .map(|a| a["id"].as_str().unwrap().to_string())
        };
        assert_eq!(id("v2.api.example.com").as_deref(), Some("exact"));
        assert_eq!(id("v1.api.example.com").as_deref(), Some("narrow"));
        assert_eq!(id("www.example.com").as_deref(), Some("wide"));
        assert_eq!(id("example.com"), None);
        assert_eq!(id("10.0.0.1"), None);
    }

    /// As `proxy::forward` does: plain http to an app's domains with `upstream_tls` is
    /// decided on port 443 when written for 80; https, other ports and other apps unchanged.
    #[test]
    fn explain_decides_on_the_port_upstream_tls_dials() {
        let apps = vec![
            json!({"id": "tls", "domains": ["api.example"], "upstream_tls": true}),
            json!({"id": "plain", "domains": ["plain.example"], "upstream_tls": false}),
        ];
        let port = |t: &str, apps: Option<&[Value]>| decided_port(&t.parse().unwrap(), apps);
        assert_eq!(port("http://api.example/v1", Some(&apps)), 443);
        assert_eq!(port("http://api.example:8080/v1", Some(&apps)), 8080);
        assert_eq!(port("http://plain.example/", Some(&apps)), 80);
        assert_eq!(port("http://other.example/", Some(&apps)), 80);
        assert_eq!(port("api.example:80", Some(&apps)), 80, "not plain http");
        assert_eq!(port("http://api.example/v1", None), 80, "apps unknown");
    }

    #[test]
    fn targets_parse_as_urls_or_host_port() {
        let cases: &[(&str, &str, u16)] = &[
            ("https://api.github.com/repos", "api.github.com", 443),
            ("http://example.com", "example.com", 80),
            ("http://user@example.com:8080/x", "example.com", 8080),
            ("api.github.com:443", "api.github.com", 443),
            ("[::1]:8443", "[::1]", 8443),
        ];
        for (input, host, port) in cases {
            let (h, p) = parse_target(input).unwrap();
            assert_eq!((h.to_string().as_str(), p), (*host, *port), "{input}");
        }
        assert!(parse_target("api.github.com").is_err());
        assert!(parse_target("ftp://x").is_err());
    }

    #[test]
    fn targets_with_a_port_out_of_range_are_refused() {
        for input in [
            "http://example.com:99999/",
            "https://example.com:65536",
            "http://example.com:0/",
            "example.com:0",
            "example.com:99999",
            "[::1]:70000",
            "http://example.com:18446744073709551616/",
        ] {
            let err = match parse_target(input) {
                Ok((h, p)) => panic!("{input}: accepted as {h}:{p}"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains("ports are 1-65535"), "{input}: {err}");
        }
        let (_, port) = parse_target("http://example.com:65535/").unwrap();
        assert_eq!(port, 65535);
    }
}
