//! `tollgate policy explain`: the decision the proxy would make for a caller of an org, with
//! the policy, rule (file:line), route, and what the address guard would say about the
//! addresses the name resolves to now.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use serde_json::json;

use crate::oauth::index::DomainTable;
use crate::policy::{normalize_host, Host, PolicySet, Route};
use crate::route::guard::{classify, Guard};

/// Parses a target given as a URL (`http://host[:port]/...`, `https://host`) or `host:port`.
pub fn parse_target(target: &str) -> anyhow::Result<(Host, u16)> {
    let (authority, default_port) = if let Some((scheme, rest)) = target.split_once("://") {
        let port = match scheme.to_ascii_lowercase().as_str() {
            "http" => 80,
            "https" => 443,
            other => bail!("unsupported scheme {other:?} (use http, https or host:port)"),
        };
        let auth = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let auth = auth.rsplit('@').next().unwrap_or(auth);
        (auth.to_string(), Some(port))
    } else {
        (target.to_string(), None)
    };
    let auth: http::uri::Authority = authority
        .parse()
        .map_err(|_| anyhow!("{target:?} is not a URL or host:port"))?;
    let port = auth
        .port_u16()
        .or(default_port)
        .ok_or_else(|| anyhow!("{target:?} needs a port (host:port) or a URL scheme"))?;
    let host = normalize_host(auth.host())?;
    Ok((host, port))
}

/// The app (as listed by the admin API) whose `domains` cover `host`, decided as injection
/// decides it ([`DomainTable`]).
pub fn app_for<'a>(apps: &'a [serde_json::Value], host: &Host) -> Option<&'a serde_json::Value> {
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
    target: &str,
    as_json: bool,
    resolve: bool,
    apps: Option<&[serde_json::Value]>,
) -> anyhow::Result<bool> {
    let set = PolicySet::load_dir(dir).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow!("policies are invalid:\n{}", lines.join("\n"))
    })?;
    let (host, port) = parse_target(target)?;
    let d = set.decide(org, &host, port);

    // What the guard would do with the addresses as they resolve now.
    let mut addresses = Vec::new();
    if resolve && d.route() == Some(&Route::Direct) {
        let ips: Vec<std::net::IpAddr> = match &host {
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
                .check(SocketAddr::new(ip, port), d.allow_private())
                .is_err();
            addresses.push(json!({
                "address": ip.to_string(),
                "class": classify(ip).as_str(),
                "guard": if refused { "refused" } else { "ok" },
            }));
        }
    }
    let guard_refuses = addresses.iter().any(|a| a["guard"] == "refused");
    let allowed = d.is_allowed() && !guard_refuses;
    let out = json!({
        "org": org,
        "user": user,
        "target": format!("{host}:{port}"),
        "decision": if allowed { "allowed" } else { "denied" },
        "reason": if guard_refuses { "address guard: resolves to a prohibited address" } else { d.reason() },
        "policy": d.policy().map(|p| p.as_ref()),
        "rule": d.rule().map(|r| r.to_string()),
        "route": d.route().map(|r| r.to_string()),
        "private_allowed": d.allow_private(),
        "app": match apps {
            None => serde_json::Value::Null,
            Some(list) => match app_for(list, &host) {
                None => json!({"id": null}),
                Some(a) => json!({"id": a["id"], "name": a["name"], "enabled": a["enabled"]}),
            },
        },
        "addresses": addresses,
    });
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&out).context("encoding")?
        );
        return Ok(allowed);
    }
    let s = |k: &str| match &out[k] {
        serde_json::Value::String(v) => v.clone(),
        serde_json::Value::Bool(b) => b.to_string(),
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
    match (&out["app"], apps) {
        (_, None) => println!(
            "app:      unknown (give --server/--token or TOLLGATE_URL/TOLLGATE_TOKEN with an admin token of the org to see which app injects)"
        ),
        (a, Some(_)) if a["id"].is_null() => {
            println!("app:      none (no outbound application of {org} covers this host)")
        }
        (a, Some(_)) => println!(
            "app:      {} ({}){}: its token is injected{}",
            a["id"].as_str().unwrap_or_default(),
            a["name"].as_str().unwrap_or_default(),
            if a["enabled"] == false { ", disabled" } else { "" },
            if a["enabled"] == false { " nowhere: requests get 403 app_disabled" } else { "" }
        ),
    }
    for a in out["addresses"].as_array().into_iter().flatten() {
        match a.get("error") {
            Some(e) => println!("address:  {}", e.as_str().unwrap_or_default()),
            None => println!(
                "address:  {} ({}) guard {}",
                a["address"].as_str().unwrap_or_default(),
                a["class"].as_str().unwrap_or_default(),
                a["guard"].as_str().unwrap_or_default()
            ),
        }
    }
    Ok(allowed)
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
}
