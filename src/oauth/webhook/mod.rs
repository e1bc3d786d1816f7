//! The legacy webhook handshake (`handshake = "webhook"`, DESIGN "Legacy webhook handshake"):
//! for providers whose token endpoint is not RFC 6749 (JSON request bodies, nested responses,
//! extra API keys, `expires_in` as a string, an endpoint only reachable in a private network),
//! admins describe the code exchange and the refresh as HTTP request templates.
//!
//! The templates are part of the app's configuration ([`Webhook`], in `store::app_config`:
//! one type for input, views and storage; header values are write-only and sealed at rest).
//! Here is what they mean:
//! - [`validate`] (in `validate.rs`): every placeholder known and available, every URL allowed
//!   by the egress policy, every pointer well formed;
//! - [`Template::request`] renders a template into a request and [`Outputs::grant`] reads the
//!   response through its JSON pointers (RFC 6901) (in `render.rs`).
//!
//! The same templates describe revocation at providers without RFC 7009 (an app's
//! `revocation`, [`Step::Revoke`], sent by `oauth::revoke`): there `{access_token}` is an
//! input, `{client_id}` may also appear in the URL's path (GitHub's
//! `/applications/{client_id}/grant`), `DELETE` is a method, and `ok_json` instead of
//! `outputs` says whether the provider confirmed ([`validate_revocation`]).
//!
//! Templates use `{name}` placeholders in header values, form values and JSON string values
//! at any depth; `{{` and `}}` are literal braces. Unknown placeholders, and placeholders
//! that have no value in a template (`{refresh_token}` in the token request,
//! `{code_verifier}` without PKCE, `{client_secret}` without a secret), are rejected when the
//! app is saved, so a rendering failure at exchange time means the configuration changed
//! underneath (e.g. the client secret was removed), not a typo.

mod render;
mod validate;

pub use crate::store::app_config::{Outputs, Step, Template, TemplateAuth, Webhook};
pub(crate) use render::basic_credentials;
pub use render::Inputs;
pub use validate::{validate, validate_revocation, Context};

use crate::oauth::endpoint::FieldErrors;
use crate::policy::PolicySet;
use crate::store::AppConfig;

/// The revocation template of `config` (an app of `org` sending through `app_policy`),
/// checked by [`validate_revocation`]; refused next to an RFC 7009 `revocation_url`, which
/// it would silently override.
pub fn revocation_of(
    config: &AppConfig,
    org: &str,
    app_policy: &str,
    policies: &PolicySet,
    errs: &mut FieldErrors,
) -> Option<Template> {
    let template = config.revocation.as_ref()?;
    if config
        .revocation_url
        .as_deref()
        .is_some_and(|u| !u.is_empty())
    {
        errs.insert(
            "revocation".into(),
            "give revocation_url (RFC 7009) or revocation (a request template), not both".into(),
        );
        return None;
    }
    let ctx = Context {
        org,
        app_policy,
        policies,
        pkce: config.pkce,
        has_secret: config.client_secret.is_some(),
    };
    validate_revocation(template, &ctx, errs)
}

/// Every placeholder a template may name.
const PLACEHOLDERS: &[&str] = &[
    "client_id",
    "client_secret",
    "redirect_uri",
    "authorization_code",
    "code_verifier",
    "refresh_token",
    "access_token",
];

/// One piece of a template string.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Placeholder(&'a str),
}

/// Splits a template string; `{{` and `}}` are literal braces.
fn pieces(s: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find(['{', '}']) {
        if i > 0 {
            out.push(Piece::Text(&rest[..i]));
        }
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{{").or_else(|| tail.strip_prefix("}}")) {
            out.push(Piece::Text(&tail[..1]));
            rest = after;
        } else if tail.starts_with('}') {
            return Err("a lone '}' (write }} for a literal brace)".into());
        } else {
            let Some(end) = tail.find('}') else {
                return Err("an unclosed '{' (write {{ for a literal brace)".into());
            };
            out.push(Piece::Placeholder(&tail[1..end]));
            rest = &tail[end + 1..];
        }
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}
