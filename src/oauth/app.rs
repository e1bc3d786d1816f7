//! An outbound application's configuration ([`AppConfig`], one serde type for the admin API,
//! `app apply` files, the CLI and the store): reading an admin's document into it, naming
//! every unknown or mistyped field ([`parse`]); a PATCH merged over the stored app
//! ([`patched`]); and validation, which names every invalid field at once and normalizes
//! ([`validate`]). Also what is wrong with a saved app under the policies in force now
//! ([`problems`]).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::endpoint::check_url;
pub use super::endpoint::{endpoint, same_origin, token_endpoint_problem, FieldErrors};
use super::webhook;
use crate::policy::{normalize_host, parse_host_pattern, Host, HostPattern, PolicySet};
use crate::store::App;
pub use crate::store::{AppConfig, ClientAuth, Handshake};

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

/// Lists a document must state rather than leave to a default: `scopes: []` is a choice,
/// silence is not; an app without `domains` is pointless.
const STATED_LISTS: &[(&str, &str)] =
    &[("scopes", "required (may be [])"), ("domains", "required")];

/// Reads an admin's document (a JSON object: the admin API body, an `app apply` file) into a
/// configuration. Each key is read on its own first, so every unknown or mistyped field is
/// named, not only the first one serde meets. A field given as `null` is absent: it takes its
/// default, or is reported as missing by [`validate`].
pub fn parse(doc: &Map<String, Value>) -> Result<AppConfig, FieldErrors> {
    let mut present = doc.clone();
    present.retain(|_, v| !v.is_null());
    let mut errs = FieldErrors::new();
    for (k, v) in &present {
        let one = Map::from_iter([(k.clone(), v.clone())]);
        if let Err(e) = serde_json::from_value::<AppConfig>(Value::Object(one)) {
            // The key itself unknown: say so plainly. A nested problem (an unknown field
            // inside `webhook`, say) keeps serde's message, which names the inner field.
            let msg = e.to_string();
            let msg = if msg.starts_with(&format!("unknown field `{k}`")) {
                "unknown field".to_string()
            } else {
                msg
            };
            errs.insert(k.clone(), msg);
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    serde_json::from_value(Value::Object(present)).map_err(|e| {
        // Every key parsed alone, so this is not expected; still name something.
        FieldErrors::from([("body".to_string(), e.to_string())])
    })
}

/// A new app from a create document, validated.
pub fn new_app(
    doc: &Map<String, Value>,
    org: &str,
    policies: &PolicySet,
    taken_domains: &BTreeMap<String, String>,
) -> Result<AppConfig, FieldErrors> {
    let config = parse(doc)?;
    let unstated = STATED_LISTS
        .iter()
        .filter(|(k, _)| doc.get(*k).is_none_or(Value::is_null));
    with_errors(unstated, validate(config, org, policies, taken_domains))
}

/// `checked`, failed also by the `missing` fields.
fn with_errors<'a>(
    missing: impl Iterator<Item = &'a (&'a str, &'a str)>,
    checked: Result<AppConfig, FieldErrors>,
) -> Result<AppConfig, FieldErrors> {
    let mut errs: FieldErrors = missing
        .map(|(k, why)| (k.to_string(), why.to_string()))
        .collect();
    match checked {
        Ok(config) if errs.is_empty() => Ok(config),
        Ok(_) => Err(errs),
        Err(more) => {
            errs.extend(more);
            Err(errs)
        }
    }
}

/// `stored` with the fields a PATCH document sets, validated (README "Updating an app"):
///
/// - a field absent from `patch` keeps its stored value, and so does a `client_secret` or a
///   webhook header, form or JSON body value sent as `null` (the API never shows them, so an
///   admin can send back what `GET` showed; not when the template's URL moved to another
///   origin); any other field sent as `null` takes its default (or is missing);
/// - a PATCH that switches `handshake` drops what only the old handshake uses, unless it sends
///   that field itself: `token_url` when switching to `webhook`, the `webhook` templates when
///   switching to `standard`. Otherwise the stored value would make the switch fail
///   validation and the admin would have to send an explicit `null`;
/// - `id` cannot change.
pub fn patched(
    stored: &App,
    patch: &Map<String, Value>,
    policies: &PolicySet,
    taken_domains: &BTreeMap<String, String>,
) -> Result<AppConfig, FieldErrors> {
    let changes = parse(patch)?;
    if patch.contains_key("id") && changes.id != stored.id {
        return Err(FieldErrors::from([(
            "id".to_string(),
            "cannot be changed; create a new app instead".to_string(),
        )]));
    }
    // The stored configuration as the API shows it (secrets masked), with the patch on top.
    let mut merged = match serde_json::to_value(&stored.config) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    if patch.contains_key("handshake") && changes.handshake != stored.handshake {
        let dropped = match changes.handshake {
            Handshake::Webhook => "token_url",
            Handshake::Standard => "webhook",
        };
        if !patch.contains_key(dropped) {
            merged.remove(dropped);
        }
    }
    merged.extend(patch.clone());
    if let (Some(w), Some(view)) = (&stored.webhook, merged.get_mut("webhook")) {
        w.restore_masked(view, same_origin);
    }
    if let (Some(r), Some(view)) = (&stored.revocation, merged.get_mut("revocation")) {
        r.restore_masked(view, same_origin);
    }
    let mut config = parse(&merged)?;
    if config.client_secret.is_none() {
        config.client_secret = stored.client_secret.clone();
    }
    let cleared = STATED_LISTS
        .iter()
        .filter(|(k, _)| patch.get(*k).is_some_and(Value::is_null));
    with_errors(
        cleared,
        validate(config, &stored.org, policies, taken_domains),
    )
}

/// Checks a configuration for `org` and returns it normalized: text trimmed, domains
/// normalized and deduplicated, empty optional URLs dropped, webhook methods upper-case.
/// `policies` is the set in force (the egress policy must exist and allow the token
/// endpoint); `taken_domains` are the patterns of the org's other apps, with the app that
/// owns each.
pub fn validate(
    config: AppConfig,
    org: &str,
    policies: &PolicySet,
    taken_domains: &BTreeMap<String, String>,
) -> Result<AppConfig, FieldErrors> {
    let mut errs = FieldErrors::new();
    let required = |name: &str, v: &str, errs: &mut FieldErrors| -> String {
        let s = v.trim();
        if s.is_empty() {
            errs.insert(name.into(), "required".into());
        } else if s.len() > MAX_TEXT {
            errs.insert(name.into(), format!("longer than {MAX_TEXT} characters"));
        }
        s.to_string()
    };
    let id = required("id", &config.id, &mut errs);
    if !id.is_empty() && !is_slug(&id) {
        errs.insert(
            "id".into(),
            "must be a slug: lowercase letters, digits and '-', at most 63 characters".into(),
        );
    }
    let name = required("name", &config.name, &mut errs);
    let approval_prompt = required("approval_prompt", &config.approval_prompt, &mut errs);
    if config.description.len() > MAX_TEXT {
        errs.insert(
            "description".into(),
            format!("longer than {MAX_TEXT} characters"),
        );
    }
    let standard = config.handshake == Handshake::Standard;
    let authorize_url = required("authorize_url", &config.authorize_url, &mut errs);
    check_url("authorize_url", &authorize_url, &mut errs);
    let token_url = config.token_url.as_deref().unwrap_or_default();
    // The standard handshake talks to `token_url`; the webhook one sends its own templates,
    // and a `token_url` there would be silently unused, so it is refused.
    let (token_url, token_target) = if standard {
        let url = required("token_url", token_url, &mut errs);
        let target = check_url("token_url", &url, &mut errs);
        (Some(url), target)
    } else {
        if !token_url.is_empty() {
            errs.insert(
                "token_url".into(),
                "not used by the webhook handshake (its requests are webhook.token and \
                 webhook.refresh): set it to null"
                    .into(),
            );
        }
        (None, None)
    };
    let client_id = required("client_id", &config.client_id, &mut errs);
    match &config.client_secret {
        Some(s) if s.expose().is_empty() => {
            errs.insert("client_secret".into(), "must not be empty".into());
        }
        None if standard => {
            errs.insert("client_secret".into(), "required".into());
        }
        _ => {}
    }
    if let Some(bad) = config.scopes.iter().find(|x| {
        x.is_empty()
            || x.chars()
                .any(|c| c.is_whitespace() || c == '"' || c == '\\')
    }) {
        errs.insert("scopes".into(), format!("invalid scope {bad:?}"));
    }
    if config.access_token_ttl == Some(0) {
        // Negative values are read as 0.
        errs.insert(
            "access_token_ttl".into(),
            "must be a positive number of seconds".into(),
        );
    }
    let egress_policy = required("egress_policy", &config.egress_policy, &mut errs);
    let webhook = match (&config.webhook, standard) {
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
                pkce: config.pkce,
                has_secret: config.client_secret.is_some(),
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
    if config.domains.is_empty() {
        errs.insert(
            "domains".into(),
            "at least one host pattern is required".into(),
        );
    }
    for d in &config.domains {
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
    if let Some(k) = config
        .authorize_params
        .keys()
        .find(|k| RESERVED_AUTHORIZE_PARAMS.contains(&k.as_str()))
    {
        errs.insert(
            "authorize_params".into(),
            format!("{k:?} is set by tollgate and cannot be overridden"),
        );
    }
    let issuer = config.issuer.clone().filter(|s| !s.is_empty());
    if let Some(i) = &issuer {
        if !(i.starts_with("https://") || i.starts_with("http://")) {
            errs.insert("issuer".into(), "must be an https URL (RFC 9207)".into());
        }
    }
    let revocation_url = config.revocation_url.clone().filter(|s| !s.is_empty());
    if let Some(r) = &revocation_url {
        check_url("revocation_url", r, &mut errs);
    }
    let revocation = webhook::revocation_of(&config, org, &egress_policy, policies, &mut errs);
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(AppConfig {
        id,
        name,
        approval_prompt,
        authorize_url,
        token_url,
        client_id,
        egress_policy,
        domains,
        issuer,
        revocation_url,
        webhook,
        revocation,
        ..config
    })
}

/// Problems with a saved app's configuration against the policies in force now (a policy
/// can disappear or change on reload after the app was saved): its token requests would be
/// refused. Shown in app views and `/readyz`.
pub fn problems(app: &App, policies: &PolicySet) -> Vec<String> {
    let endpoint_problem = |what: &str, url: &str, policy: &str| match endpoint(url) {
        Ok((_, host, port)) => token_endpoint_problem(policies, policy, &app.org, &host, port),
        Err(e) => Some(format!("{what}: {e}")),
    };
    let mut problems = Vec::new();
    if app.handshake == Handshake::Webhook {
        match &app.webhook {
            Some(w) => {
                let policy = w.policy(&app.egress_policy);
                for (step, t) in w.templates() {
                    let what = format!("webhook.{}.url", step.name());
                    problems.extend(endpoint_problem(&what, &t.url, policy));
                }
            }
            None => problems.push("the webhook handshake is missing".into()),
        }
    } else {
        problems.extend(match app.token_url.as_deref() {
            Some(url) => endpoint_problem("token_url", url, &app.egress_policy),
            None => Some("no token_url".into()),
        });
    }
    if problems.is_empty() && policies.policy_route(&app.egress_policy).is_none() {
        problems.push(format!("no policy named {:?} is loaded", app.egress_policy));
    }
    problems.dedup();
    problems
        .into_iter()
        .map(|p| format!("{p}: token requests will be refused"))
        .collect()
}

fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
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
    use serde_json::json;

    use super::*;

    fn policies(extra_hosts: &str) -> PolicySet {
        PolicySet::from_sources(&[(
            "p.toml".into(),
            format!(
                r#"
[[policy]]
name = "idp"
route = "direct"
  [[policy.allow]]
  hosts = ["idp.example"{extra_hosts}]
  ports = [443]
  [[policy.allow]]
  cidrs = ["127.0.0.1/32"]
  ports = [9000]
"#
            ),
        )])
        .unwrap()
    }

    fn good() -> Value {
        json!({
            "id": "github",
            "name": "GitHub",
            "approval_prompt": "Allow?",
            "authorize_url": "https://idp.example/authorize",
            "token_url": "https://idp.example/token",
            "client_id": "c",
            "client_secret": "s",
            "scopes": [],
            "egress_policy": "idp",
            "domains": ["API.GitHub.com.", "*.github.example"],
        })
    }

    fn webhook_app() -> Value {
        json!({
            "id": "legacy", "name": "Legacy", "approval_prompt": "Allow?",
            "authorize_url": "https://idp.example/authorize",
            "client_id": "c", "scopes": [], "egress_policy": "idp",
            "domains": ["api.example"], "handshake": "webhook",
            "webhook": {
                "token": {"url": "https://idp.example/token",
                          "headers": {"X-Key": "k-1"},
                          "json": {"code": "{authorization_code}"},
                          "outputs": {"access_token": "/t", "scope": "/s"}},
                "refresh": {"url": "https://refresh.example/r",
                            "form": {"rt": "{refresh_token}"},
                            "outputs": {"access_token": "/t", "scope": "/s"}}
            }
        })
    }

    fn create(doc: &Value, policies: &PolicySet) -> Result<AppConfig, FieldErrors> {
        new_app(doc.as_object().unwrap(), "acme", policies, &BTreeMap::new())
    }

    fn stored(doc: &Value) -> App {
        let both = policies(r#", "refresh.example""#);
        App::new("acme", create(doc, &both).expect("valid"))
    }

    fn patch(app: &App, doc: Value) -> Result<AppConfig, FieldErrors> {
        let both = policies(r#", "refresh.example""#);
        patched(app, doc.as_object().unwrap(), &both, &BTreeMap::new())
    }

    #[test]
    fn a_good_document_validates_with_defaults_and_normalized_domains() {
        let v = create(&good(), &policies("")).unwrap();
        assert_eq!(v.domains, ["api.github.com", "*.github.example"]);
        assert!(v.pkce && v.upstream_tls);
        assert_eq!(v.client_auth, ClientAuth::Basic);
        assert!(v.scopes.is_empty());
        assert_eq!(v.client_secret.unwrap().expose(), "s");
    }

    #[test]
    fn each_invalid_field_is_named() {
        type Edit = fn(&mut Value);
        let cases: &[(&str, &str, Edit)] = &[
            ("id not a slug", "id", |d| d["id"] = json!("Bad Id")),
            ("id missing", "id", |d| {
                drop(d.as_object_mut().unwrap().remove("id"))
            }),
            ("name empty", "name", |d| d["name"] = json!(" ")),
            ("prompt missing", "approval_prompt", |d| {
                drop(d.as_object_mut().unwrap().remove("approval_prompt"))
            }),
            ("authorize http public", "authorize_url", |d| {
                d["authorize_url"] = json!("http://idp.example/a")
            }),
            ("authorize not a url", "authorize_url", |d| {
                d["authorize_url"] = json!("not a url")
            }),
            ("authorize port too big", "authorize_url", |d| {
                d["authorize_url"] = json!("https://idp.example:99999/authorize")
            }),
            ("token port zero", "token_url", |d| {
                d["token_url"] = json!("https://idp.example:0/token")
            }),
            ("revocation port too big", "revocation_url", |d| {
                d["revocation_url"] = json!("https://idp.example:65536/revoke")
            }),
            ("token url ftp", "token_url", |d| {
                d["token_url"] = json!("ftp://idp.example/t")
            }),
            ("secret empty", "client_secret", |d| {
                d["client_secret"] = json!("")
            }),
            ("secret missing", "client_secret", |d| {
                drop(d.as_object_mut().unwrap().remove("client_secret"))
            }),
            ("scopes missing", "scopes", |d| {
                drop(d.as_object_mut().unwrap().remove("scopes"))
            }),
            ("scope with space", "scopes", |d| {
                d["scopes"] = json!(["a b"])
            }),
            ("ttl zero", "access_token_ttl", |d| {
                d["access_token_ttl"] = json!(0)
            }),
            ("ttl negative", "access_token_ttl", |d| {
                d["access_token_ttl"] = json!(-5)
            }),
            ("ttl not a number", "access_token_ttl", |d| {
                d["access_token_ttl"] = json!("1h")
            }),
            ("pkce mistyped", "pkce", |d| d["pkce"] = json!("yes")),
            ("unknown field", "scope", |d| d["scope"] = json!("repo")),
            ("policy unknown", "egress_policy", |d| {
                d["egress_policy"] = json!("nope")
            }),
            ("token endpoint outside policy", "egress_policy", |d| {
                d["token_url"] = json!("https://other.example/token")
            }),
            ("domains empty", "domains", |d| d["domains"] = json!([])),
            ("domains missing", "domains", |d| {
                drop(d.as_object_mut().unwrap().remove("domains"))
            }),
            ("domain star", "domains", |d| d["domains"] = json!(["*"])),
            ("domain ip", "domains", |d| {
                d["domains"] = json!(["10.0.0.1"])
            }),
            ("reserved authorize param", "authorize_params", |d| {
                d["authorize_params"] = json!({"state": "x"})
            }),
            ("webhook without templates", "webhook", |d| {
                d["handshake"] = json!("webhook")
            }),
            ("webhook with token_url", "token_url", |d| {
                d["handshake"] = json!("webhook")
            }),
            ("templates on a standard app", "webhook", |d| {
                d["webhook"] = json!({})
            }),
        ];
        for (name, field, edit) in cases {
            let mut doc = good();
            edit(&mut doc);
            let errs = create(&doc, &policies("")).expect_err(name);
            assert!(errs.contains_key(*field), "{name}: {errs:?}");
        }
        // A negative lifetime is named with the other invalid fields, not alone.
        let mut doc = good();
        doc["access_token_ttl"] = json!(-5);
        doc["name"] = json!("");
        let errs = create(&doc, &policies("")).unwrap_err();
        assert_eq!(errs["name"], "required");
        assert_eq!(
            errs["access_token_ttl"],
            "must be a positive number of seconds"
        );
    }

    #[test]
    fn unknown_fields_are_named_at_the_top_level_and_inside_the_webhook() {
        let doc = json!({"colour": "red", "webhook": {"token": {"body": {}}}});
        let errs = parse(doc.as_object().unwrap()).unwrap_err();
        assert_eq!(errs["colour"], "unknown field");
        assert!(errs["webhook"].contains("`body`"), "{errs:?}");
    }

    #[test]
    fn a_webhook_app_needs_templates_instead_of_a_token_url_and_a_secret() {
        let mut doc = webhook_app();
        doc["webhook"]["token"]["json"]["secret"] = json!("{client_secret}");
        // `{client_secret}` needs a secret.
        let errs = create(&doc, &policies(r#", "refresh.example""#)).unwrap_err();
        assert!(
            errs["webhook.token.json"].contains("client_secret"),
            "{errs:?}"
        );
        doc["client_secret"] = json!("s");
        let v = create(&doc, &policies(r#", "refresh.example""#)).unwrap();
        assert_eq!(v.token_url, None);
        let w = v.webhook.expect("templates kept");
        assert_eq!(w.policy(&v.egress_policy), "idp");
        assert_eq!(w.token.method, "POST");
    }

    #[test]
    fn http_is_accepted_for_loopback_and_domains_are_exclusive_per_org() {
        let mut doc = good();
        doc["authorize_url"] = json!("http://127.0.0.1:9000/authorize");
        doc["token_url"] = json!("http://127.0.0.1:9000/token");
        assert!(create(&doc, &policies("")).is_ok());
        let taken = BTreeMap::from([("api.github.com".to_string(), "other".to_string())]);
        let errs = new_app(good().as_object().unwrap(), "acme", &policies(""), &taken).unwrap_err();
        assert!(errs["domains"].contains("other"));
    }

    #[test]
    fn a_patch_keeps_what_it_does_not_send_and_what_it_sends_as_null() {
        let app = stored(&good());
        let v = patch(&app, json!({"name": "GitHub 2", "client_secret": null})).unwrap();
        assert_eq!(v.name, "GitHub 2");
        assert_eq!(v.client_secret.unwrap().expose(), "s");
        assert_eq!(v.domains, app.domains);
        let errs = patch(&app, json!({"id": "other"})).unwrap_err();
        assert!(errs["id"].contains("cannot be changed"), "{errs:?}");
        let errs = patch(&app, json!({"colour": "red"})).unwrap_err();
        assert_eq!(errs["colour"], "unknown field");
        // Any other null is the default, or missing.
        let mut doc = good();
        doc["pkce"] = json!(false);
        doc["description"] = json!("d");
        let app = stored(&doc);
        let v = patch(&app, json!({"pkce": null, "description": null})).unwrap();
        assert!(v.pkce && v.description.is_empty());
        let errs = patch(&app, json!({"scopes": null, "name": null})).unwrap_err();
        assert!(
            errs.contains_key("scopes") && errs["name"] == "required",
            "{errs:?}"
        );

        let hook = stored(&webhook_app());
        let mut shown = serde_json::to_value(&hook.config).unwrap()["webhook"].clone();
        assert_eq!(shown["token"]["headers"]["X-Key"], Value::Null);
        shown["token"]["json"]["note"] = json!("patched");
        let v = patch(&hook, json!({ "webhook": shown })).unwrap_or_else(|e| panic!("{e:?}"));
        let token = &v.webhook.unwrap().token;
        assert_eq!(token.headers["X-Key"].as_ref().unwrap().expose(), "k-1");
        assert_eq!(token.json.as_ref().unwrap()["note"], "patched");
    }

    #[test]
    fn switching_the_handshake_drops_the_old_handshakes_fields() {
        let app = stored(&good());
        let hook = webhook_app()["webhook"].clone();
        let v = patch(&app, json!({"handshake": "webhook", "webhook": hook})).unwrap();
        assert_eq!(v.token_url, None);
        let back = App::new("acme", v);
        let v = patch(
            &back,
            json!({"handshake": "standard", "token_url": "https://idp.example/token"}),
        )
        .unwrap();
        assert!(v.webhook.is_none());
        // Sent explicitly, the old field stays and is refused.
        let errs = patch(
            &back,
            json!({"handshake": "standard", "token_url": "https://idp.example/token",
                   "webhook": hook}),
        )
        .unwrap_err();
        assert!(errs.contains_key("webhook"), "{errs:?}");
    }

    /// A webhook app is checked by its template URLs under the webhook's policy, not by a
    /// token_url it does not have.
    #[test]
    fn problems_of_a_webhook_app_name_its_template_urls() {
        let app = stored(&webhook_app());
        assert!(app.token_url.is_none());
        assert_eq!(
            problems(&app, &policies(r#", "refresh.example""#)),
            Vec::<String>::new()
        );
        // A reload drops the refresh host: the refresh request would be refused.
        let problems = problems(&app, &policies(""));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("refresh.example:443"), "{problems:?}");
    }
}
