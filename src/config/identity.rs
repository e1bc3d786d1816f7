//! `[identity]` in the config file: the OIDC issuers whose workload tokens (GitHub Actions,
//! GitLab CI, ...) tollgate accepts as callers besides its own HS256 tokens.
//!
//! ```toml
//! [[identity.issuer]]
//! issuer = "https://token.actions.githubusercontent.com"
//! jwks_url = "https://token.actions.githubusercontent.com/.well-known/jwks"
//! egress_policy = "github-oidc"
//! audience = "https://tollgate.example.com"
//! org_claim = "repository_owner"
//! user_claim = "actor"
//! user_prefix = "gha:"
//! roles = []
//! [identity.issuer.require]
//! repository_owner_id = "1234567"
//! ```
//!
//! [`IdentityFile`] is the strict file shape; [`resolve`] validates it into
//! [`IssuerConfig`]s, adding every problem to the caller's list. An issuer shared by many
//! tenants ([`SHARED_ISSUERS`]) without a `require` table is refused: anyone with a
//! repository there could mint a token it accepts.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::identity::{MAX_CLAIM_CHARS, MAX_ROLES};

/// Issuers that sign tokens for anyone with an account there: an entry for one of them must
/// say, in `require`, which of their tokens are this deployment's.
pub const SHARED_ISSUERS: &[&str] = &[
    "https://token.actions.githubusercontent.com",
    "https://gitlab.com",
    "https://app.terraform.io",
    "https://accounts.google.com",
    "https://oidc.buildkite.com",
    "https://agent.buildkite.com",
];

/// Most issuer entries: each is looked up by `iss` on every verification that misses the
/// cache.
const MAX_ISSUERS: usize = 32;
/// Most `require` conditions on one issuer, and accepted values per condition.
const MAX_REQUIRE: usize = 32;

/// The `[identity]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityFile {
    /// `[[identity.issuer]]` entries.
    #[serde(default)]
    pub issuer: Vec<IssuerFile>,
}

/// One `[[identity.issuer]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerFile {
    /// The `iss` claim, exactly.
    issuer: String,
    /// Where the signing keys are published.
    jwks_url: String,
    /// The policy the JWKS fetch is decided under.
    egress_policy: String,
    /// The `aud` the tokens must carry.
    audience: String,
    /// Every caller of this issuer is in this org...
    org: Option<String>,
    /// ...or in the org this claim names.
    org_claim: Option<String>,
    /// The claim naming the user (default `sub`).
    user_claim: Option<String>,
    /// Put before the user claim, so that issuers' users never meet people's.
    user_prefix: Option<String>,
    /// Roles every caller of this issuer holds (never read from the token).
    #[serde(default)]
    roles: Vec<String>,
    /// Claim conditions: claim name → accepted value or values.
    #[serde(default)]
    require: BTreeMap<String, OneOrMany>,
}

/// A `require` value: one accepted value or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Where a caller's org comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrgSource {
    /// The same org for every token of the issuer.
    Fixed(String),
    /// The named claim (dotted paths reach into nested objects).
    Claim(String),
}

/// A validated issuer entry.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// The `iss` claim tokens must carry, exactly; also how a token finds its entry.
    pub issuer: String,
    /// The JWKS URL (http or https).
    pub jwks_url: String,
    /// The policy the JWKS fetch is decided under (with the address guard).
    pub egress_policy: String,
    /// The `aud` tokens must carry: a token minted for another service is refused.
    pub audience: String,
    /// The caller's org.
    pub org: OrgSource,
    /// The claim naming the user.
    pub user_claim: String,
    /// Prefix of every user of this issuer (`gha:`): a CI actor never receives a person's
    /// tokens.
    pub user_prefix: String,
    /// Roles granted to every caller of this issuer.
    pub roles: Vec<String>,
    /// Every condition must hold: the claim (string, number or boolean, as text) equals one
    /// of the values.
    pub require: Vec<(String, Vec<String>)>,
}

/// Validates the `[identity]` table; problems are added to `errors`, prefixed `identity.issuer[N]`.
pub fn resolve(file: Option<&IdentityFile>, errors: &mut Vec<String>) -> Vec<IssuerConfig> {
    let Some(file) = file else {
        return Vec::new();
    };
    if file.issuer.len() > MAX_ISSUERS {
        errors.push(format!(
            "identity.issuer: at most {MAX_ISSUERS} entries, found {}",
            file.issuer.len()
        ));
        return Vec::new();
    }
    let mut out: Vec<IssuerConfig> = Vec::new();
    for (i, f) in file.issuer.iter().enumerate() {
        let mut problems = Vec::new();
        if let Some(c) = one(f, &mut problems) {
            if out.iter().any(|o| o.issuer == c.issuer) {
                problems.push(format!("issuer {:?} is configured twice", c.issuer));
            } else if problems.is_empty() {
                out.push(c);
            }
        }
        errors.extend(
            problems
                .into_iter()
                .map(|p| format!("identity.issuer[{i}] ({}): {p}", f.issuer)),
        );
    }
    out
}

fn one(f: &IssuerFile, problems: &mut Vec<String>) -> Option<IssuerConfig> {
    let name_ok = |s: &str| {
        !s.is_empty() && s.chars().count() <= MAX_CLAIM_CHARS && !s.chars().any(char::is_control)
    };
    if !http_url(&f.issuer) {
        problems.push("issuer must be an http(s) URL".into());
    }
    if !http_url(&f.jwks_url) {
        problems.push("jwks_url must be an http(s) URL".into());
    }
    if !name_ok(&f.egress_policy) {
        problems.push("egress_policy must name a policy".into());
    }
    if !name_ok(&f.audience) {
        problems.push("audience must be set".into());
    }
    let org = match (&f.org, &f.org_claim) {
        (Some(o), None) if name_ok(o) => Some(OrgSource::Fixed(o.clone())),
        (None, Some(c)) if name_ok(c) => Some(OrgSource::Claim(c.clone())),
        _ => {
            problems.push("exactly one of org and org_claim must be set".into());
            None
        }
    };
    let user_claim = f.user_claim.clone().unwrap_or_else(|| "sub".into());
    if !name_ok(&user_claim) {
        problems.push("user_claim must name a claim".into());
    }
    let user_prefix = f.user_prefix.clone().unwrap_or_default();
    if !name_ok(&user_prefix) || user_prefix.chars().count() > MAX_CLAIM_CHARS / 2 {
        problems.push(format!(
            "user_prefix must be set (for example \"gha:\"), at most {} characters, so that \
             this issuer's users never share a name with a person",
            MAX_CLAIM_CHARS / 2
        ));
    }
    if f.roles.len() > MAX_ROLES || !f.roles.iter().all(|r| name_ok(r)) {
        problems.push(format!(
            "roles: at most {MAX_ROLES}, each 1 to {MAX_CLAIM_CHARS} characters"
        ));
    }
    let mut require = Vec::new();
    for (claim, values) in &f.require {
        let values = match values {
            OneOrMany::One(v) => vec![v.clone()],
            OneOrMany::Many(v) => v.clone(),
        };
        if !name_ok(claim) || values.is_empty() || values.len() > MAX_REQUIRE {
            problems.push(format!(
                "require.{claim}: 1 to {MAX_REQUIRE} accepted values"
            ));
        }
        require.push((claim.clone(), values));
    }
    if require.len() > MAX_REQUIRE {
        problems.push(format!("require: at most {MAX_REQUIRE} conditions"));
    }
    let shared = SHARED_ISSUERS.contains(&f.issuer.trim_end_matches('/'));
    if shared && require.is_empty() {
        problems.push(
            "this issuer signs tokens for anyone with an account there: add \
             [identity.issuer.require] conditions (for GitHub Actions, repository_owner_id)"
                .into(),
        );
    }
    Some(IssuerConfig {
        issuer: f.issuer.clone(),
        jwks_url: f.jwks_url.clone(),
        egress_policy: f.egress_policy.clone(),
        audience: f.audience.clone(),
        org: org?,
        user_claim,
        user_prefix,
        roles: f.roles.clone(),
        require,
    })
}

/// An absolute http(s) URL with a host.
fn http_url(s: &str) -> bool {
    s.parse::<http::Uri>().is_ok_and(|u| {
        matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some_and(|h| !h.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Vec<IssuerConfig>, Vec<String>) {
        #[derive(Deserialize)]
        struct Top {
            identity: IdentityFile,
        }
        let top: Top = toml::from_str(text).unwrap();
        let mut errors = Vec::new();
        (resolve(Some(&top.identity), &mut errors), errors)
    }

    const GHA: &str = r#"
        [[identity.issuer]]
        issuer = "https://token.actions.githubusercontent.com"
        jwks_url = "https://token.actions.githubusercontent.com/.well-known/jwks"
        egress_policy = "oidc"
        audience = "https://tollgate.example"
        org_claim = "repository_owner"
        user_claim = "actor"
        user_prefix = "gha:"
        roles = ["ci"]
    "#;

    #[test]
    fn shared_issuer_needs_require() {
        let (found, errors) = parse(GHA);
        assert!(found.is_empty());
        assert!(errors[0].contains("require"), "{errors:?}");
        let (found, errors) = parse(&format!(
            "{GHA}\n[identity.issuer.require]\nrepository_owner_id = \"42\"\nref = [\"a\", \"b\"]\n"
        ));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(found[0].org, OrgSource::Claim("repository_owner".into()));
        assert_eq!(found[0].require.len(), 2);
        assert_eq!(found[0].roles, ["ci"]);
    }

    #[test]
    fn every_problem_is_named() {
        let (found, errors) = parse(
            r#"
            [[identity.issuer]]
            issuer = "not a url"
            jwks_url = "ftp://x"
            egress_policy = ""
            audience = ""
            org = "a"
            org_claim = "b"
        "#,
        );
        assert!(found.is_empty());
        for needle in [
            "issuer must",
            "jwks_url",
            "egress_policy",
            "audience",
            "org_claim",
            "user_prefix",
        ] {
            assert!(
                errors.iter().any(|e| e.contains(needle)),
                "{needle}: {errors:?}"
            );
        }
    }
}
