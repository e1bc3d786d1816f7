//! Outbound application configuration as admins write it (admin API JSON, `app apply` TOML):
//! the raw, strict input shape ([`AppSpec`], unknown fields rejected) and its validation,
//! which names every invalid field at once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::webhook::{self, Webhook, WebhookSpec};
use crate::policy::{normalize_host, parse_host_pattern, Host, HostPattern, PolicySet};
use crate::route::guard::classify;
use crate::store::{ClientAuth, Handshake};

/// Parameters tollgate sets itself on the authorization request; admins may not override them.
const RESERVED_AUTHORIZE_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "state",
    "scope",
    "code_challenge",
    "code_challenge_method",
];

/// Longest accepted free-text field (name, description, approval prompt).
const MAX_TEXT: usize = 4096;

/// An outbound application as submitted. Every field is optional here so that the same type
/// serves create (where required fields are checked) and PATCH (merged over the stored app).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// Slug, unique in the org.
    pub id: Option<String>,
    /// Shown on the consent page and in listings.
    pub name: Option<String>,
    /// Shown on the consent page and in listings.
    pub description: Option<String>,
    /// Text shown on the consent page before the user goes to the provider.
    pub approval_prompt: Option<String>,
    /// Provider's authorization endpoint.
    pub authorize_url: Option<String>,
    /// Provider's token endpoint.
    pub token_url: Option<String>,
    /// OAuth client id.
    pub client_id: Option<String>,
    /// OAuth client secret; write-only.
    pub client_secret: Option<String>,
    /// Requested scopes; empty = no `scope` parameter.
    pub scopes: Option<Vec<String>>,
    /// Lifetime assumed when the provider sends no `expires_in`, seconds.
    pub access_token_ttl: Option<i64>,
    /// S256 PKCE (default true).
    pub pkce: Option<bool>,
    /// Policy whose rules and route token calls use.
    pub egress_policy: Option<String>,
    /// Host patterns whose requests get this app's token.
    pub domains: Option<Vec<String>>,
    /// TLS origination for plain-http requests to `domains` (default true).
    pub upstream_tls: Option<bool>,
    /// `basic` (default) or `post`.
    pub client_auth: Option<ClientAuth>,
    /// Extra query parameters on the authorization request.
    pub authorize_params: Option<BTreeMap<String, String>>,
    /// Expected `iss` on the callback (RFC 9207).
    pub issuer: Option<String>,
    /// RFC 7009 revocation endpoint.
    pub revocation_url: Option<String>,
    /// `standard` (default) or `webhook`.
    pub handshake: Option<Handshake>,
    /// Request templates of the webhook handshake; required with `handshake = "webhook"`.
    pub webhook: Option<WebhookSpec>,
}

/// A validated configuration, ready to store.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidApp {
    /// Slug.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Display description.
    pub description: String,
    /// Consent text.
    pub approval_prompt: String,
    /// Authorization endpoint.
    pub authorize_url: String,
    /// Token endpoint; `None` for the webhook handshake.
    pub token_url: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client secret, when given (required on create).
    pub client_secret: Option<String>,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Fallback lifetime.
    pub access_token_ttl: Option<u64>,
    /// PKCE on.
    pub pkce: bool,
    /// Egress policy name.
    pub egress_policy: String,
    /// Normalized domain patterns.
    pub domains: Vec<String>,
    /// TLS origination.
    pub upstream_tls: bool,
    /// Client authentication.
    pub client_auth: ClientAuth,
    /// Extra authorize parameters.
    pub authorize_params: BTreeMap<String, String>,
    /// Expected issuer.
    pub issuer: Option<String>,
    /// Revocation endpoint.
    pub revocation_url: Option<String>,
    /// Handshake kind.
    pub handshake: Handshake,
    /// The webhook handshake's templates (with `handshake = "webhook"` only).
    pub webhook: Option<Webhook>,
}

/// Field name → what is wrong with it; every invalid field at once.
pub type FieldErrors = BTreeMap<String, String>;

/// Checks a complete spec for `org`. `policies` is the set in force (the egress policy must
/// exist and allow the token endpoint); `taken_domains` are the patterns of the org's other
/// apps, with the app that owns each; `secret_stored` says a client secret is already stored
/// (an update that omits `client_secret` keeps it).
pub fn validate(
    spec: &AppSpec,
    org: &str,
    policies: &PolicySet,
    taken_domains: &BTreeMap<String, String>,
    secret_stored: bool,
) -> Result<ValidApp, FieldErrors> {
    let mut errs = FieldErrors::new();
    let required = |name: &str, v: &Option<String>, errs: &mut FieldErrors| -> String {
        match v.as_deref().map(str::trim) {
            Some(s) if !s.is_empty() => {
                if s.len() > MAX_TEXT {
                    errs.insert(name.into(), format!("longer than {MAX_TEXT} characters"));
                }
                s.to_string()
            }
            _ => {
                errs.insert(name.into(), "required".into());
                String::new()
            }
        }
    };
    let id = required("id", &spec.id, &mut errs);
    if !id.is_empty() && !is_slug(&id) {
        errs.insert(
            "id".into(),
            "must be a slug: lowercase letters, digits and '-', at most 63 characters".into(),
        );
    }
    let name = required("name", &spec.name, &mut errs);
    let approval_prompt = required("approval_prompt", &spec.approval_prompt, &mut errs);
    let description = spec.description.clone().unwrap_or_default();
    if description.len() > MAX_TEXT {
        errs.insert(
            "description".into(),
            format!("longer than {MAX_TEXT} characters"),
        );
    }
    let handshake = spec.handshake.unwrap_or_default();
    let standard = handshake == Handshake::Standard;
    let authorize_url = required("authorize_url", &spec.authorize_url, &mut errs);
    check_url("authorize_url", &authorize_url, &mut errs);
    // The standard handshake talks to `token_url`; the webhook one sends its own templates,
    // and a `token_url` there would be silently unused, so it is refused.
    let (token_url, token_target) = if standard {
        let url = required("token_url", &spec.token_url, &mut errs);
        let target = check_url("token_url", &url, &mut errs);
        (Some(url), target)
    } else {
        if spec.token_url.as_deref().is_some_and(|u| !u.is_empty()) {
            errs.insert(
                "token_url".into(),
                "not used by the webhook handshake (its requests are webhook.token and \
                 webhook.refresh): set it to null"
                    .into(),
            );
        }
        (None, None)
    };
    let client_id = required("client_id", &spec.client_id, &mut errs);
    let client_secret = match spec.client_secret.as_deref() {
        Some("") => {
            errs.insert("client_secret".into(), "must not be empty".into());
            None
        }
        Some(s) => Some(s.to_string()),
        None => {
            if standard && !secret_stored {
                errs.insert("client_secret".into(), "required".into());
            }
            None
        }
    };
    let scopes = match &spec.scopes {
        None => {
            errs.insert("scopes".into(), "required (may be [])".into());
            Vec::new()
        }
        Some(s) => {
            if let Some(bad) = s.iter().find(|x| {
                x.is_empty()
                    || x.chars()
                        .any(|c| c.is_whitespace() || c == '"' || c == '\\')
            }) {
                errs.insert("scopes".into(), format!("invalid scope {bad:?}"));
            }
            s.clone()
        }
    };
    let access_token_ttl = match spec.access_token_ttl {
        None => None,
        Some(t) if t > 0 => Some(t as u64),
        Some(_) => {
            errs.insert(
                "access_token_ttl".into(),
                "must be a positive number of seconds".into(),
            );
            None
        }
    };
    let pkce = spec.pkce.unwrap_or(true);
    let egress_policy = required("egress_policy", &spec.egress_policy, &mut errs);
    let webhook = match (&spec.webhook, standard) {
        (None, true) => None,
        (Some(_), true) => {
            errs.insert("webhook".into(), "only for handshake = \"webhook\"".into());
            None
        }
        (None, false) => {
            errs.insert(
                "webhook".into(),
                "required with handshake = \"webhook\": the token request template".into(),
            );
            None
        }
        (Some(w), false) => {
            let ctx = webhook::Context {
                org,
                app_policy: &egress_policy,
                policies,
                pkce,
                has_secret: client_secret.is_some() || secret_stored,
            };
            webhook::validate(w, &ctx, &mut errs)
        }
    };
    if !egress_policy.is_empty() {
        let problem = match &token_target {
            Some((host, port)) => {
                token_endpoint_problem(policies, &egress_policy, org, host, *port)
            }
            None => policies
                .policy_route(&egress_policy)
                .is_none()
                .then(|| format!("no policy named {egress_policy:?} is loaded")),
        };
        if let Some(p) = problem {
            errs.insert("egress_policy".into(), p);
        }
    }
    let mut domains = Vec::new();
    match &spec.domains {
        None => {
            errs.insert("domains".into(), "required".into());
        }
        Some(list) if list.is_empty() => {
            errs.insert(
                "domains".into(),
                "at least one host pattern is required".into(),
            );
        }
        Some(list) => {
            for d in list {
                match normalize_pattern(d) {
                    Ok(p) => {
                        if let Some(owner) = taken_domains.get(&p) {
                            errs.insert(
                                "domains".into(),
                                format!("{p:?} already belongs to app {owner:?} in this org"),
                            );
                        } else if !domains.contains(&p) {
                            domains.push(p);
                        }
                    }
                    Err(e) => {
                        errs.insert("domains".into(), e);
                    }
                }
            }
        }
    }
    let authorize_params = spec.authorize_params.clone().unwrap_or_default();
    if let Some(k) = authorize_params
        .keys()
        .find(|k| RESERVED_AUTHORIZE_PARAMS.contains(&k.as_str()))
    {
        errs.insert(
            "authorize_params".into(),
            format!("{k:?} is set by tollgate and cannot be overridden"),
        );
    }
    let issuer = spec.issuer.clone().filter(|s| !s.is_empty());
    if let Some(i) = &issuer {
        if !(i.starts_with("https://") || i.starts_with("http://")) {
            errs.insert("issuer".into(), "must be an https URL (RFC 9207)".into());
        }
    }
    let revocation_url = spec.revocation_url.clone().filter(|s| !s.is_empty());
    if let Some(r) = &revocation_url {
        check_url("revocation_url", r, &mut errs);
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(ValidApp {
        id,
        name,
        description,
        approval_prompt,
        authorize_url,
        token_url,
        client_id,
        client_secret,
        scopes,
        access_token_ttl,
        pkce,
        egress_policy,
        domains,
        upstream_tls: spec.upstream_tls.unwrap_or(true),
        client_auth: spec.client_auth.unwrap_or_default(),
        authorize_params,
        issuer,
        revocation_url,
        handshake,
        webhook,
    })
}

fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

/// An absolute `http`/`https` URL without user information → (uses TLS, host, port).
/// The one parser for provider endpoints: app validation, `/readyz` problems and provider
/// calls all read URLs through it.
pub fn endpoint(url: &str) -> Result<(bool, Host, u16), String> {
    let parsed: http::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    let (Some(scheme), Some(auth)) = (parsed.scheme_str(), parsed.authority()) else {
        return Err(format!("{url:?} is not an absolute URL"));
    };
    if auth.as_str().contains('@') {
        return Err("must not contain user information".into());
    }
    let tls = match scheme {
        "https" => true,
        "http" => false,
        _ => return Err("must be an https URL".into()),
    };
    let host = normalize_host(auth.host()).map_err(|e| e.to_string())?;
    let port = auth.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok((tls, host, port))
}

/// Why `policy` does not (or no longer) let `org` reach the token endpoint at `host:port`.
pub fn token_endpoint_problem(
    policies: &PolicySet,
    policy: &str,
    org: &str,
    host: &Host,
    port: u16,
) -> Option<String> {
    if policies.policy_route(policy).is_none() {
        return Some(format!("no policy named {policy:?} is loaded"));
    }
    let d = policies.decide_in_policy(policy, org, host, port);
    (!d.is_allowed()).then(|| {
        format!(
            "policy {policy:?} does not allow the token endpoint {host}:{port} for org {org:?} ({})",
            d.reason()
        )
    })
}

/// `https://`, or `http://` only for loopback and private hosts (test and in-network servers).
/// Returns the host and port when the URL is valid.
pub(super) fn check_url(field: &str, url: &str, errs: &mut FieldErrors) -> Option<(Host, u16)> {
    if url.is_empty() {
        return None;
    }
    let (tls, host, port) = match endpoint(url) {
        Ok(e) => e,
        Err(e) => {
            errs.insert(field.into(), e);
            return None;
        }
    };
    let local = match &host {
        Host::Ip(ip) => classify(*ip).is_prohibited(),
        Host::Name(n) => n == "localhost" || n.ends_with(".localhost"),
    };
    if !tls && !local {
        errs.insert(
            field.into(),
            "must be https (http is accepted only for loopback and private addresses)".into(),
        );
        return None;
    }
    Some((host, port))
}

/// A domain pattern: an exact name or `*.suffix`, in the grammar of policy host patterns.
pub fn normalize_pattern(p: &str) -> Result<String, String> {
    if let Ok(Host::Ip(_)) = normalize_host(p) {
        return Err(format!("{p:?} is an IP address; domains are host names"));
    }
    Ok(match parse_host_pattern(p)? {
        HostPattern::Exact(n) => n,
        HostPattern::Suffix(n) => format!("*.{n}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies() -> PolicySet {
        PolicySet::from_sources(&[(
            "p.toml".into(),
            r#"
[[policy]]
name = "idp"
route = "direct"
  [[policy.allow]]
  hosts = ["idp.example"]
  ports = [443]
  [[policy.allow]]
  cidrs = ["127.0.0.1/32"]
  ports = [9000]
"#
            .into(),
        )])
        .unwrap()
    }

    fn good() -> AppSpec {
        AppSpec {
            id: Some("github".into()),
            name: Some("GitHub".into()),
            approval_prompt: Some("Allow?".into()),
            authorize_url: Some("https://idp.example/authorize".into()),
            token_url: Some("https://idp.example/token".into()),
            client_id: Some("c".into()),
            client_secret: Some("s".into()),
            scopes: Some(vec![]),
            egress_policy: Some("idp".into()),
            domains: Some(vec!["API.GitHub.com.".into(), "*.github.example".into()]),
            ..Default::default()
        }
    }

    #[test]
    fn a_good_spec_validates_with_defaults_and_normalized_domains() {
        let v = validate(&good(), "acme", &policies(), &BTreeMap::new(), false).unwrap();
        assert_eq!(v.domains, ["api.github.com", "*.github.example"]);
        assert!(v.pkce && v.upstream_tls);
        assert_eq!(v.client_auth, ClientAuth::Basic);
        assert!(v.scopes.is_empty());
    }

    #[test]
    fn each_invalid_field_is_named() {
        type Edit = fn(&mut AppSpec);
        let cases: &[(&str, &str, Edit)] = &[
            ("id not a slug", "id", |s| s.id = Some("Bad Id".into())),
            ("id missing", "id", |s| s.id = None),
            ("name empty", "name", |s| s.name = Some(" ".into())),
            ("prompt missing", "approval_prompt", |s| {
                s.approval_prompt = None
            }),
            ("authorize http public", "authorize_url", |s| {
                s.authorize_url = Some("http://idp.example/a".into())
            }),
            ("authorize not a url", "authorize_url", |s| {
                s.authorize_url = Some("not a url".into())
            }),
            ("token url ftp", "token_url", |s| {
                s.token_url = Some("ftp://idp.example/t".into())
            }),
            ("secret empty", "client_secret", |s| {
                s.client_secret = Some(String::new())
            }),
            ("secret missing", "client_secret", |s| {
                s.client_secret = None
            }),
            ("scopes missing", "scopes", |s| s.scopes = None),
            ("scope with space", "scopes", |s| {
                s.scopes = Some(vec!["a b".into()])
            }),
            ("ttl zero", "access_token_ttl", |s| {
                s.access_token_ttl = Some(0)
            }),
            ("ttl negative", "access_token_ttl", |s| {
                s.access_token_ttl = Some(-5)
            }),
            ("policy unknown", "egress_policy", |s| {
                s.egress_policy = Some("nope".into())
            }),
            ("token endpoint outside policy", "egress_policy", |s| {
                s.token_url = Some("https://other.example/token".into())
            }),
            ("domains empty", "domains", |s| s.domains = Some(vec![])),
            ("domain star", "domains", |s| {
                s.domains = Some(vec!["*".into()])
            }),
            ("domain ip", "domains", |s| {
                s.domains = Some(vec!["10.0.0.1".into()])
            }),
            ("reserved authorize param", "authorize_params", |s| {
                s.authorize_params = Some([("state".to_string(), "x".to_string())].into())
            }),
            ("webhook without templates", "webhook", |s| {
                s.handshake = Some(Handshake::Webhook)
            }),
            ("webhook with token_url", "token_url", |s| {
                s.handshake = Some(Handshake::Webhook)
            }),
            ("templates on a standard app", "webhook", |s| {
                s.webhook = Some(WebhookSpec::default())
            }),
        ];
        for (name, field, edit) in cases {
            let mut spec = good();
            edit(&mut spec);
            let errs =
                validate(&spec, "acme", &policies(), &BTreeMap::new(), false).expect_err(name);
            assert!(errs.contains_key(*field), "{name}: {errs:?}");
        }
    }

    #[test]
    fn a_webhook_app_needs_templates_instead_of_a_token_url_and_a_secret() {
        let mut spec = good();
        spec.handshake = Some(Handshake::Webhook);
        spec.token_url = None;
        spec.client_secret = None;
        spec.webhook = Some(
            serde_json::from_value(serde_json::json!({
                "token": {
                    "url": "https://idp.example/handshake",
                    "json": {"code": "{authorization_code}", "secret": "{client_secret}"},
                    "outputs": {"access_token": "/t", "scope": "/s"}
                }
            }))
            .unwrap(),
        );
        // `{client_secret}` needs a secret: given now, or already stored.
        let errs = validate(&spec, "acme", &policies(), &BTreeMap::new(), false).unwrap_err();
        assert!(
            errs["webhook.token.json"].contains("client_secret"),
            "{errs:?}"
        );
        let v = validate(&spec, "acme", &policies(), &BTreeMap::new(), true).unwrap();
        assert_eq!(v.token_url, None);
        let w = v.webhook.expect("templates kept");
        assert_eq!(w.policy(&v.egress_policy), "idp");
        assert_eq!(w.token.method, "POST");
    }

    #[test]
    fn http_is_accepted_for_loopback_and_domains_are_exclusive_per_org() {
        let mut spec = good();
        spec.authorize_url = Some("http://127.0.0.1:9000/authorize".into());
        spec.token_url = Some("http://127.0.0.1:9000/token".into());
        assert!(validate(&spec, "acme", &policies(), &BTreeMap::new(), false).is_ok());
        let taken = BTreeMap::from([("api.github.com".to_string(), "other".to_string())]);
        let errs = validate(&good(), "acme", &policies(), &taken, false).unwrap_err();
        assert!(errs["domains"].contains("other"));
        // On update the secret may be omitted (the stored one is kept).
        let mut spec = good();
        spec.client_secret = None;
        assert!(validate(&spec, "acme", &policies(), &BTreeMap::new(), true).is_ok());
    }
}
