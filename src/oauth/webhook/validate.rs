//! Validation of the webhook handshake's templates, as part of an app's validation: every
//! problem is added to the app's field errors under `webhook.…` names.

use http::header::{HeaderName, HeaderValue};
use serde_json::Value;

use super::{pieces, Outputs, Piece, Step, Template, TemplateAuth, Webhook, PLACEHOLDERS};
use crate::oauth::endpoint::{check_url, token_endpoint_problem, FieldErrors};
use crate::policy::PolicySet;
use crate::store::app_config::MASKED_FORM_VALUE;

/// Headers a template may not set: tollgate frames the request itself (length, encoding,
/// connection management, `Host` from the URL), and proxy headers make no sense on a request
/// that is not sent to a proxy.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-connection",
];

/// Methods a template may use. `GET` carries no body (its inputs go in headers).
const METHODS: &[&str] = &["POST", "PUT", "PATCH", "GET"];

/// Methods a revocation template may use: also `DELETE` (GitHub's grant revocation).
const REVOKE_METHODS: &[&str] = &["POST", "PUT", "PATCH", "GET", "DELETE"];

/// What the rest of the app's configuration decides for the webhook's validation.
pub struct Context<'a> {
    /// The app's org (policies are scoped by org).
    pub org: &'a str,
    /// The app's `egress_policy`, used when the webhook names none.
    pub app_policy: &'a str,
    /// The policies in force.
    pub policies: &'a PolicySet,
    /// `{code_verifier}` exists only with PKCE.
    pub pkce: bool,
    /// `{client_secret}` exists only when the app has a secret (given now or stored).
    pub has_secret: bool,
}

/// Checks `spec`, adding every problem to `errs` under `webhook.…` field names; returns it
/// normalized (methods upper-case, URLs and the policy name trimmed) when it is valid.
pub fn validate(spec: &Webhook, ctx: &Context<'_>, errs: &mut FieldErrors) -> Option<Webhook> {
    let before = errs.len();
    let policy = match spec.egress_policy.as_deref().map(str::trim) {
        None => ctx.app_policy,
        Some("") => {
            errs.insert("webhook.egress_policy".into(), "must not be empty".into());
            ctx.app_policy
        }
        Some(p) => {
            if ctx.policies.policy_route(p).is_none() {
                errs.insert(
                    "webhook.egress_policy".into(),
                    format!("no policy named {p:?} is loaded"),
                );
            }
            p
        }
    };
    // Absent, the token template is the empty one.
    let token = if spec.token == Template::default() {
        errs.insert("webhook.token".into(), "required".into());
        None
    } else {
        validate_template(&spec.token, Step::Token, policy, ctx, errs)
    };
    let refresh = spec
        .refresh
        .as_ref()
        .map(|t| validate_template(t, Step::Refresh, policy, ctx, errs));
    if errs.len() != before {
        return None;
    }
    Some(Webhook {
        egress_policy: spec.egress_policy.as_deref().map(|p| p.trim().to_string()),
        token: token?,
        refresh: refresh.flatten(),
    })
}

/// Checks an app's revocation template, adding every problem to `errs` under
/// `revocation.…` names; returns it normalized when it is valid. Its requests go through the
/// app's own policy.
pub fn validate_revocation(
    t: &Template,
    ctx: &Context<'_>,
    errs: &mut FieldErrors,
) -> Option<Template> {
    validate_template(t, Step::Revoke, ctx.app_policy, ctx, errs)
}

fn validate_template(
    t: &Template,
    step: Step,
    policy: &str,
    ctx: &Context<'_>,
    errs: &mut FieldErrors,
) -> Option<Template> {
    let revoke = step == Step::Revoke;
    let field = |f: &str| match step {
        Step::Revoke => format!("revocation.{f}"),
        _ => format!("webhook.{}.{f}", step.name()),
    };
    let before = errs.len();
    let method = match t.method.trim() {
        "" => "POST".to_string(),
        m => m.to_ascii_uppercase(),
    };
    let methods = if revoke { REVOKE_METHODS } else { METHODS };
    if !methods.contains(&method.as_str()) {
        errs.insert(
            field("method"),
            format!("must be one of {}", methods.join(", ")),
        );
    }
    let url = t.url.trim();
    // A revocation URL may name the client in its path; the host stays fixed.
    let checked = match url.find("://").map(|i| i + 3) {
        Some(start) if revoke => {
            let path_at = url[start..].find('/').map_or(url.len(), |i| start + i);
            let (origin, path) = url.split_at(path_at);
            format!("{origin}{}", path.replace("{client_id}", "client-id"))
        }
        _ => url.to_string(),
    };
    if url.is_empty() {
        errs.insert(field("url"), "required".into());
    } else if checked.contains(['{', '}']) {
        let allowed = if revoke {
            "; {client_id} may appear in the URL's path"
        } else {
            ""
        };
        errs.insert(
            field("url"),
            format!("placeholders are allowed in headers, form and json, not in the URL{allowed}"),
        );
    } else if let Some((host, port)) = check_url(&field("url"), &checked, errs) {
        // The app's own policy is checked by the app's validation; a webhook policy that
        // does not exist is already reported under `webhook.egress_policy`.
        if ctx.policies.policy_route(policy).is_some() {
            if let Some(p) = token_endpoint_problem(ctx.policies, policy, ctx.org, &host, port) {
                errs.insert(field("url"), p);
            }
        }
    }
    let check = |text: &str, at: &str, errs: &mut FieldErrors, name: &str| {
        if let Err(e) = check_placeholders(text, step, ctx) {
            let place = if at.is_empty() {
                String::new()
            } else {
                format!("at {at}: ")
            };
            errs.entry(field(name)).or_insert(format!("{place}{e}"));
        }
    };
    for (name, value) in &t.headers {
        let lower = name.to_ascii_lowercase();
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            errs.insert(field("headers"), format!("{name:?} is not a header name"));
        } else if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("proxy-") {
            errs.insert(
                field("headers"),
                format!("{name:?} is set by tollgate and cannot be templated"),
            );
        }
        match value {
            None => {
                errs.insert(
                    field("headers"),
                    format!(
                        "{name:?} has no value (null keeps the stored value, and none is stored)"
                    ),
                );
            }
            Some(v) => {
                let v = v.expose();
                // Never quote the value: it is a secret.
                if HeaderValue::from_str(v).is_err() {
                    errs.insert(
                        field("headers"),
                        format!("the value of {name:?} is not a valid header value"),
                    );
                }
                check(v, name, errs, "headers");
            }
        }
    }
    if t.form.is_some() && t.json.is_some() {
        errs.insert(
            field("form"),
            "give either form or json as the body, not both".into(),
        );
    }
    if method == "GET" && (t.form.is_some() || t.json.is_some()) {
        errs.insert(field("method"), "a GET request has no body".into());
    }
    for (k, v) in t.form.iter().flatten() {
        if v == MASKED_FORM_VALUE {
            errs.insert(
                field("form"),
                format!(
                    "{k:?} has no value (null keeps the stored value while the URL stays on \
                     the same server, and none is kept here)"
                ),
            );
        }
        check(v, k, errs, "form");
    }
    if let Some(json) = &t.json {
        let mut strings = Vec::new();
        json_strings(json, String::new(), &mut strings);
        for (at, s) in strings {
            check(s, &at, errs, "json");
        }
    }
    match (step, &t.ok_json) {
        (Step::Revoke, ok) => {
            if !t.outputs.is_unset() {
                errs.insert(
                    field("outputs"),
                    "not used by a revocation template (ok_json reads its answer)".into(),
                );
            }
            if let Some(Err(e)) = ok.as_deref().map(check_pointer) {
                errs.insert(field("ok_json"), e);
            }
        }
        (_, Some(_)) => {
            errs.insert(field("ok_json"), "only for the revocation template".into());
        }
        (_, None) => validate_outputs(&t.outputs, &field("outputs"), errs),
    }
    match t.auth {
        TemplateAuth::Bearer if !revoke => {
            errs.insert(
                field("auth"),
                "\"bearer\" sends the user's access token: only for the revocation template".into(),
            );
        }
        TemplateAuth::Basic if !ctx.has_secret => {
            errs.insert(
                field("auth"),
                "\"basic\" needs a client_secret, and the app has none".into(),
            );
        }
        _ => {}
    }
    if errs.len() != before {
        return None;
    }
    Some(Template {
        method,
        url: url.to_string(),
        ..t.clone()
    })
}

fn validate_outputs(outputs: &Outputs, field: &str, errs: &mut FieldErrors) {
    // Absent, the outputs are the empty ones.
    if *outputs == Outputs::default() {
        errs.insert(
            field.into(),
            "required: JSON pointers for access_token and scope".into(),
        );
        return;
    }
    let pointers = [
        ("access_token", Some(&outputs.access_token), true),
        ("scope", Some(&outputs.scope), true),
        ("refresh_token", outputs.refresh_token.as_ref(), false),
        ("expires_in", outputs.expires_in.as_ref(), false),
    ];
    for (name, p, required) in pointers {
        let problem = match p.map(String::as_str) {
            None | Some("") if required => Some("required".to_string()),
            None => None,
            Some(p) => check_pointer(p).err(),
        };
        if let Some(e) = problem {
            errs.insert(format!("{field}.{name}"), e);
        }
    }
}

/// RFC 6901: `/`-separated reference tokens, `~` only as `~0` or `~1`. The empty pointer (the
/// whole document) is refused: no output can be the whole response.
fn check_pointer(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!(
            "{p:?} is not a JSON pointer (RFC 6901): it must start with '/', e.g. \"/access_token\""
        ));
    }
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!(
                "{p:?} is not a JSON pointer (RFC 6901): '~' must be followed by 0 or 1"
            ));
        }
    }
    Ok(())
}

/// Every string value in `v` with its JSON pointer.
fn json_strings<'a>(v: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match v {
        Value::String(s) => out.push((at, s)),
        Value::Array(list) => {
            for (i, x) in list.iter().enumerate() {
                json_strings(x, format!("{at}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (k, x) in map {
                let token = k.replace('~', "~0").replace('/', "~1");
                json_strings(x, format!("{at}/{token}"), out);
            }
        }
        _ => {}
    }
}

/// Whether every placeholder in `text` is known and has a value in `step` for this app.
fn check_placeholders(text: &str, step: Step, ctx: &Context<'_>) -> Result<(), String> {
    for piece in pieces(text)? {
        let Piece::Placeholder(name) = piece else {
            continue;
        };
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{name}}}; the inputs are {}",
                PLACEHOLDERS
                    .iter()
                    .map(|p| format!("{{{p}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let unavailable = match (name, step) {
            ("authorization_code" | "code_verifier", Step::Refresh | Step::Revoke) => {
                Some("is available only in the token request")
            }
            ("access_token", Step::Token | Step::Refresh) => {
                Some("is available only in the revocation request")
            }
            ("refresh_token", Step::Token) => {
                Some("is available only in the refresh request and in revocation")
            }
            ("code_verifier", _) if !ctx.pkce => Some("is available only when pkce is true"),
            ("client_secret", _) if !ctx.has_secret => {
                Some("needs a client_secret, and the app has none")
            }
            _ => None,
        };
        if let Some(why) = unavailable {
            return Err(format!("{{{name}}} {why}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::store::Secret;

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
[[policy]]
name = "onprem"
route = "agent:dc1"
  [[policy.allow]]
  hosts = ["idp.corp.example"]
  ports = [443]
"#
            .into(),
        )])
        .unwrap()
    }

    fn ctx(policies: &PolicySet) -> Context<'_> {
        Context {
            org: "acme",
            app_policy: "idp",
            policies,
            pkce: true,
            has_secret: false,
        }
    }

    fn good() -> Webhook {
        serde_json::from_value(serde_json::json!({
            "egress_policy": "onprem",
            "token": {
                "url": "https://idp.corp.example/handshake/token",
                "headers": {"X-Api-Key": "k-1"},
                "json": {"grant": {"code": "{authorization_code}", "verifier": "{code_verifier}"},
                         "client": "{client_id}", "back": ["{redirect_uri}"], "n": 1},
                "outputs": {"access_token": "/result/token", "scope": "/result/scopes",
                            "refresh_token": "/result/renew", "expires_in": "/result/ttl"}
            },
            "refresh": {
                "method": "put",
                "url": "https://idp.corp.example/handshake/refresh",
                "form": {"renew": "{refresh_token}", "literal": "{{x}}"},
                "outputs": {"access_token": "/token", "scope": "/scope"}
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_good_webhook_validates_and_is_normalized() {
        let p = policies();
        let mut errs = FieldErrors::new();
        let w = validate(&good(), &ctx(&p), &mut errs).expect("valid");
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(w.policy("idp"), "onprem");
        assert_eq!(w.token.method, "POST");
        assert_eq!(w.refresh.as_ref().unwrap().method, "PUT");
        assert_eq!(
            w.token.headers["X-Api-Key"].as_ref().unwrap().expose(),
            "k-1"
        );
    }

    #[test]
    fn each_invalid_part_is_named() {
        type Edit = fn(&mut Webhook);
        let cases: &[(&str, &str, &str, Edit)] = &[
            ("no token", "webhook.token", "required", |w| {
                w.token = Template::default()
            }),
            ("unknown placeholder", "webhook.token.json", "{nope}", |w| {
                w.token.json = Some(serde_json::json!({"a": {"b": ["{nope}"]}}))
            }),
            ("placeholder path", "webhook.token.json", "/a/b/0", |w| {
                w.token.json = Some(serde_json::json!({"a": {"b": ["{nope}"]}}))
            }),
            (
                "refresh in token",
                "webhook.token.headers",
                "refresh request",
                |w| {
                    w.token
                        .headers
                        .insert("X-R".into(), Some(Secret::new("{refresh_token}")));
                },
            ),
            (
                "code in refresh",
                "webhook.refresh.form",
                "token request",
                |w| {
                    w.refresh.as_mut().unwrap().form =
                        Some([("c".to_string(), "{authorization_code}".to_string())].into())
                },
            ),
            (
                "secret without one",
                "webhook.token.json",
                "client_secret",
                |w| w.token.json = Some(serde_json::json!({"s": "{client_secret}"})),
            ),
            ("unclosed brace", "webhook.refresh.form", "unclosed", |w| {
                w.refresh.as_mut().unwrap().form =
                    Some([("c".to_string(), "{refresh_token".to_string())].into())
            }),
            ("lone closing brace", "webhook.refresh.form", "lone", |w| {
                w.refresh.as_mut().unwrap().form =
                    Some([("c".to_string(), "x}".to_string())].into())
            }),
            ("both bodies", "webhook.token.form", "not both", |w| {
                w.token.form = Some(BTreeMap::new())
            }),
            ("get with body", "webhook.token.method", "no body", |w| {
                w.token.method = "GET".into()
            }),
            ("bad method", "webhook.token.method", "one of", |w| {
                w.token.method = "DELETE".into()
            }),
            ("port out of range", "webhook.token.url", "port", |w| {
                w.token.url = "https://idp.corp.example:70000/t".into()
            }),
            ("no url", "webhook.token.url", "required", |w| {
                w.token.url = String::new()
            }),
            (
                "placeholder in url",
                "webhook.token.url",
                "not in the URL",
                |w| w.token.url = "https://idp.corp.example/t?c={authorization_code}".into(),
            ),
            (
                "url outside policy",
                "webhook.token.url",
                "does not allow",
                |w| w.token.url = "https://other.example/t".into(),
            ),
            ("public http", "webhook.token.url", "https", |w| {
                w.token.url = "http://idp.corp.example/t".into()
            }),
            (
                "unknown policy",
                "webhook.egress_policy",
                "no policy",
                |w| w.egress_policy = Some("nope".into()),
            ),
            (
                "reserved header",
                "webhook.token.headers",
                "set by tollgate",
                |w| {
                    w.token
                        .headers
                        .insert("Content-Length".into(), Some(Secret::new("1")));
                },
            ),
            (
                "null header on create",
                "webhook.token.headers",
                "no value",
                |w| {
                    w.token.headers.insert("X-Other".into(), None);
                },
            ),
            ("no outputs", "webhook.token.outputs", "required", |w| {
                w.token.outputs = Outputs::default()
            }),
            (
                "no scope output",
                "webhook.token.outputs.scope",
                "required",
                |w| w.token.outputs.scope = String::new(),
            ),
            (
                "bad pointer",
                "webhook.refresh.outputs.access_token",
                "RFC 6901",
                |w| w.refresh.as_mut().unwrap().outputs.access_token = "token".into(),
            ),
            ("bad escape", "webhook.token.outputs.expires_in", "~", |w| {
                w.token.outputs.expires_in = Some("/a~2".into())
            }),
        ];
        let p = policies();
        for (name, field, needle, edit) in cases {
            let mut spec = good();
            edit(&mut spec);
            let mut errs = FieldErrors::new();
            assert!(validate(&spec, &ctx(&p), &mut errs).is_none(), "{name}");
            let msg = errs
                .get(*field)
                .unwrap_or_else(|| panic!("{name}: {errs:?}"));
            assert!(msg.contains(needle), "{name}: {msg}");
        }
        // Without PKCE there is no verifier.
        let mut errs = FieldErrors::new();
        let no_pkce = Context {
            pkce: false,
            ..ctx(&p)
        };
        assert!(validate(&good(), &no_pkce, &mut errs).is_none());
        assert!(errs["webhook.token.json"].contains("pkce"), "{errs:?}");
    }

    #[test]
    fn null_headers_keep_the_stored_value_case_insensitively() {
        let stored = good();
        let mut view = serde_json::to_value(&stored).unwrap();
        view["token"]["headers"] = serde_json::json!({"x-api-key": null, "X-New": null});
        let mut moved = view.clone();
        stored.restore_masked(&mut view, |a, b| a == b);
        let patch: Webhook = serde_json::from_value(view).unwrap();
        let h = &patch.token.headers;
        assert_eq!(h["x-api-key"].as_ref().map(Secret::expose), Some("k-1"));
        assert_eq!(h["X-New"], None);
        // A template sent to another server gets no stored secret back.
        moved["token"]["url"] = serde_json::json!("https://elsewhere.example/t");
        stored.restore_masked(&mut moved, |a, b| a == b);
        let patch: Webhook = serde_json::from_value(moved).unwrap();
        assert_eq!(patch.token.headers["x-api-key"], None);
    }

    #[test]
    fn revocation_templates_are_checked_with_their_own_rules() {
        let p = policies();
        let ctx = Context {
            has_secret: true,
            ..ctx(&p)
        };
        let good: Template = serde_json::from_value(serde_json::json!({
            "method": "delete",
            "url": "https://idp.example/applications/{client_id}/grant",
            "auth": "basic",
            "json": {"access_token": "{access_token}", "rt": "{refresh_token}"},
        }))
        .unwrap();
        let mut errs = FieldErrors::new();
        let t = validate_revocation(&good, &ctx, &mut errs).expect("valid");
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(t.method, "DELETE");
        type Edit = fn(&mut Template);
        let cases: &[(&str, &str, &str, Edit)] = &[
            ("code", "revocation.json", "token request", |t| {
                t.json = Some(serde_json::json!({"c": "{authorization_code}"}))
            }),
            ("host placeholder", "revocation.url", "path", |t| {
                t.url = "https://{client_id}.idp.example/grant".into()
            }),
            ("other url placeholder", "revocation.url", "path", |t| {
                t.url = "https://idp.example/r/{access_token}".into()
            }),
            ("outputs", "revocation.outputs", "ok_json", |t| {
                t.outputs.access_token = "/a".into()
            }),
            ("bad ok_json", "revocation.ok_json", "RFC 6901", |t| {
                t.ok_json = Some("ok".into())
            }),
            ("outside policy", "revocation.url", "does not allow", |t| {
                t.url = "https://other.example/revoke".into()
            }),
            ("bad method", "revocation.method", "one of", |t| {
                t.method = "TRACE".into()
            }),
        ];
        for (name, field, needle, edit) in cases {
            let mut t = good.clone();
            edit(&mut t);
            let mut errs = FieldErrors::new();
            assert!(validate_revocation(&t, &ctx, &mut errs).is_none(), "{name}");
            let msg = errs
                .get(*field)
                .unwrap_or_else(|| panic!("{name}: {errs:?}"));
            assert!(msg.contains(needle), "{name}: {msg}");
        }
        // Basic needs a secret; bearer and ok_json exist only for revocation.
        let mut errs = FieldErrors::new();
        let no_secret = Context {
            has_secret: false,
            ..ctx
        };
        assert!(validate_revocation(&good, &no_secret, &mut errs).is_none());
        assert!(
            errs["revocation.auth"].contains("client_secret"),
            "{errs:?}"
        );
        let mut hook = super::tests::good();
        hook.token.auth = TemplateAuth::Bearer;
        hook.token.ok_json = Some("/ok".into());
        let mut errs = FieldErrors::new();
        assert!(validate(&hook, &ctx, &mut errs).is_none());
        assert!(
            errs["webhook.token.auth"].contains("revocation"),
            "{errs:?}"
        );
        assert!(
            errs["webhook.token.ok_json"].contains("revocation"),
            "{errs:?}"
        );
    }
}
