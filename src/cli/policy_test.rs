//! `tollgate policy test CASES.toml…`: runs request cases against the policy directory, so
//! that a policy repository can gate its own CI on what its policies allow and deny.
//!
//! A case file holds `[[case]]` tables (unknown keys are errors, and a file without a case
//! is one: a test that checks nothing must not pass):
//!
//! ```toml
//! [[case]]
//! org = "acme"
//! user = "alice"
//! url = "https://api.github.com/repos/acme/widgets"
//! method = "GET"
//! expect = "allow"                 # or "deny"
//! rule = "10-public-saas.toml:14"  # optional: the deciding rule, FILE:LINE
//! route = "direct"                 # optional, with expect = "allow"
//! app = "github"                   # optional: the app whose token would be injected
//! ```
//!
//! Each case is decided as the proxy decides the request (method and normalized path
//! included), from the files alone: names are not resolved, so the address guard is not part
//! of it. `app` needs the org's apps from the admin API (`--server`, `--token`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

use crate::explain::{app_for, decided_port, Target};
use crate::policy::{normalize_path, PolicySet, RequestInfo};

/// A case file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(default)]
    case: Vec<Spanned<Case>>,
}

/// One `[[case]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    org: String,
    user: String,
    url: String,
    method: String,
    expect: Expect,
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    app: Option<String>,
    #[serde(default)]
    rule: Option<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum Expect {
    Allow,
    Deny,
}

/// The outbound applications of one org, for `app` expectations.
pub struct Apps {
    /// The org the admin token belongs to.
    pub org: String,
    /// Its apps, as the admin API lists them.
    pub list: Vec<Value>,
}

/// The org claim of a caller token, read without verifying it (the admin API verifies it;
/// this only says which org's cases its apps can check).
pub fn token_org(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims["org"].as_str().map(str::to_owned)
}

/// Runs every case of every file; prints each failure and a summary. Fails when a case
/// fails or a file is invalid.
pub fn run(policies: &Path, files: &[PathBuf], apps: Option<&Apps>) -> anyhow::Result<()> {
    let set = PolicySet::load_dir(policies).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow!("policies are invalid:\n{}", lines.join("\n"))
    })?;
    let (mut total, mut failed) = (0, 0);
    for file in files {
        let src =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let name = file.display().to_string();
        let cases = parse(&name, &src)?;
        for (line, case) in cases {
            total += 1;
            if let Err(why) = check(&set, &case, apps) {
                failed += 1;
                println!(
                    "{name}:{line}: {} {} as {}/{}: {why}",
                    case.method, case.url, case.org, case.user
                );
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {total} cases failed");
    }
    println!("ok: {total} cases passed");
    Ok(())
}

/// The cases of one file with their lines.
fn parse(name: &str, src: &str) -> anyhow::Result<Vec<(usize, Case)>> {
    let line = |offset: usize| src[..offset.min(src.len())].matches('\n').count() + 1;
    let file: CaseFile = toml::from_str(src).map_err(|e| {
        let at = e.span().map_or(0, |s| line(s.start));
        anyhow!("{name}:{at}: {}", e.message())
    })?;
    if file.case.is_empty() {
        bail!("{name}:1: no [[case]] in the file");
    }
    let mut cases = Vec::with_capacity(file.case.len());
    for c in file.case {
        let at = line(c.span().start);
        let case = c.into_inner();
        if case.expect == Expect::Deny && (case.route.is_some() || case.app.is_some()) {
            bail!("{name}:{at}: `route` and `app` describe an allowed request: use them with expect = \"allow\"");
        }
        if !case.url.contains("://") {
            bail!(
                "{name}:{at}: url {:?} must be an http:// or https:// URL",
                case.url
            );
        }
        if let Err(e) = case.url.parse::<Target>() {
            bail!("{name}:{at}: {e}");
        }
        cases.push((at, case));
    }
    Ok(cases)
}

/// `Ok` when the case holds; else what went wrong.
fn check(set: &PolicySet, case: &Case, apps: Option<&Apps>) -> Result<(), String> {
    let target: Target = case.url.parse().map_err(|e| format!("{e}"))?;
    let normalized = normalize_path(target.path.as_deref().unwrap_or("/"));
    let info = RequestInfo {
        method: &case.method,
        path: normalized.as_deref().map_err(|e| *e),
    };
    let case_apps = apps
        .filter(|a| a.org == case.org)
        .map(|a| a.list.as_slice());
    let port = decided_port(&target, case_apps);
    let d = set.decide_request(&case.org, &target.host, port, &info);
    let mut got = format!(
        "{} ({}",
        if d.is_allowed() { "allow" } else { "deny" },
        d.reason()
    );
    if let Some(p) = d.policy() {
        let _ = write!(got, "; policy {p}");
    }
    if let Some(r) = d.rule() {
        let _ = write!(got, "; rule {r}");
    }
    if let Some(r) = d.route() {
        let _ = write!(got, "; route {r}");
    }
    if d.reach().within.is_some() {
        got.push_str("; if every address the name resolves to is inside the cidrs");
    }
    got.push(')');
    let mut wrong = Vec::new();
    if d.is_allowed() != (case.expect == Expect::Allow) {
        wrong.push(format!("expected {:?}", case.expect).to_lowercase());
    }
    if let Some(rule) = &case.rule {
        if d.rule().map(ToString::to_string).as_deref() != Some(rule.as_str()) {
            wrong.push(format!("expected rule {rule}"));
        }
    }
    if let Some(route) = &case.route {
        if d.route().map(ToString::to_string).as_deref() != Some(route.as_str()) {
            wrong.push(format!("expected route {route}"));
        }
    }
    if let Some(app) = &case.app {
        match apps.filter(|a| a.org == case.org) {
            None => wrong.push(format!(
                "expected app {app}, which cannot be checked without the apps of {}: give --server and --token (an admin token of {})",
                case.org, case.org
            )),
            Some(a) => {
                let found = app_for(&a.list, &target.host).and_then(|v| v["id"].as_str());
                if found != Some(app.as_str()) {
                    got.push_str(&format!("; app {}", found.unwrap_or("none")));
                    wrong.push(format!("expected app {app}"));
                }
            }
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("{}, got {got}", wrong.join(", ")))
    }
}
