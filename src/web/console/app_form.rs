//! Creating and editing apps in the console: `GET /admin/apps/new` (pick a provider of the
//! catalog, or blank), `POST /admin/apps` (create), `GET /admin/apps/{id}` (the app, its
//! actions and the edit form) and `POST /admin/apps/{id}` (update). The client secret is
//! write-only: never shown, and an empty field keeps the stored one. A form the lifecycle
//! refuses comes back with every field's message.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value};

use super::apps::status_line;
use super::{
    admin_error, console_page, field, param, posted, refuse, see_other, staff, Form, Role,
};
use super::{query_value, Staff};
use crate::oauth::admin::AdminError;
use crate::oauth::catalog;
use crate::store::App;
use crate::web::page::esc;
use crate::web::WebState;

/// Text fields of an app the forms edit: name, label, hint.
const TEXT_FIELDS: &[(&str, &str, &str)] = &[
    ("name", "Name", "Shown to users on the consent page."),
    ("description", "Description", ""),
    (
        "approval_prompt",
        "Approval prompt",
        "Shown on the consent page before the user is sent to the provider.",
    ),
    (
        "client_id",
        "Client id",
        "From the app registered at the provider.",
    ),
    (
        "client_secret",
        "Client secret",
        "Write-only: never shown. Leave empty to keep the stored one (or for a public client).",
    ),
    ("authorize_url", "Authorize URL", ""),
    ("token_url", "Token URL", ""),
    (
        "revocation_url",
        "Revocation URL",
        "RFC 7009; optional. Tokens are revoked there on reset, delete and revoke.",
    ),
    ("scopes", "Scopes", "Separated by spaces."),
    (
        "domains",
        "Domains",
        "Host patterns whose requests get the token, separated by spaces (*.example.com).",
    ),
    (
        "egress_policy",
        "Egress policy",
        "The policy whose route carries the token-endpoint calls.",
    ),
];

/// Fields whose value is a list (split on spaces and commas).
fn is_list(name: &str) -> bool {
    matches!(name, "scopes" | "domains")
}

/// The form value of `name` as the document's JSON value; `None` for an empty field.
fn doc_value(name: &str, text: &str) -> Option<Value> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    Some(if is_list(name) {
        Value::Array(
            text.split([' ', ',', '\n', '\r', '\t'])
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        )
    } else {
        Value::String(text.to_string())
    })
}

/// The form text of a stored app's field (never the secret).
fn stored_text(app: &App, name: &str) -> String {
    let c = &app.config;
    match name {
        "name" => c.name.clone(),
        "description" => c.description.clone(),
        "approval_prompt" => c.approval_prompt.clone(),
        "client_id" => c.client_id.clone(),
        "authorize_url" => c.authorize_url.clone(),
        "token_url" => c.token_url.clone().unwrap_or_default(),
        "revocation_url" => c.revocation_url.clone().unwrap_or_default(),
        "scopes" => c.scopes.join(" "),
        "domains" => c.domains.join(" "),
        "egress_policy" => c.egress_policy.clone(),
        _ => String::new(),
    }
}

/// `GET /admin/apps/new[?provider=ID|blank]`.
pub(super) async fn new_form(State(state): State<WebState>, parts: Parts) -> Response {
    let staff = or_refuse!(staff(&state, &parts, Role::Admin));
    match param(&parts, "provider") {
        None => pick_provider(&staff),
        Some(p) => create_form(&staff, &parts, &p, &Form::new(), &BTreeMap::new()),
    }
}

/// The first step: which provider (or blank).
fn pick_provider(staff: &Staff) -> Response {
    let mut options = String::new();
    for p in catalog::providers() {
        let _ = write!(
            options,
            "<option value=\"{}\">{} — {}</option>",
            esc(&p.id),
            esc(&p.name),
            esc(&p.description)
        );
    }
    let main = format!(
        "<form method=\"get\" action=\"/admin/apps/new\">\
         <label for=\"f-provider\">Provider</label>\
         <select id=\"f-provider\" name=\"provider\">{options}\
         <option value=\"blank\">Blank: every endpoint by hand</option></select>\
         <p><button type=\"submit\">Next</button></p></form>"
    );
    console_page(staff, "/admin", "Create an app", &main)
}

/// The create form for `provider` (`blank` for none), filled with `values` and `errors`.
fn create_form(
    staff: &Staff,
    parts: &Parts,
    provider: &str,
    values: &Form,
    errors: &BTreeMap<String, String>,
) -> Response {
    let entry = match provider {
        "blank" => None,
        id => match catalog::provider(id) {
            Ok(p) => Some(p),
            Err(e) => return refuse(parts, StatusCode::NOT_FOUND, "not_found", &e.to_string()),
        },
    };
    let v = |k: &str| values.get(k).map(String::as_str).unwrap_or_default();
    let mut fields = String::new();
    if !errors.is_empty() {
        let _ = write!(
            fields,
            "<div class=\"error\" role=\"alert\"><p>The app was not created:</p><ul>{}</ul></div>",
            errors
                .iter()
                .map(|(k, e)| format!("<li><code>{}</code>: {}</li>", esc(k), esc(e)))
                .collect::<String>()
        );
    }
    fields.push_str(&field(
        "id",
        "App id",
        v("id"),
        "A slug, unique in your organization (github, jira-cloud).",
        errors,
    ));
    if let Some(p) = entry {
        let _ = write!(
            fields,
            "<p>From the catalog: <strong>{}</strong> (<a href=\"{}\">provider documentation</a>). \
             Empty fields take the catalog's values.</p>",
            esc(&p.name),
            esc(&p.docs)
        );
        for (param, what) in &p.params {
            let name = format!("param.{param}");
            fields.push_str(&field(&name, param, v(&name), what, errors));
        }
    }
    for (name, label, hint) in TEXT_FIELDS {
        let from_catalog = matches!(
            *name,
            "name" | "description" | "authorize_url" | "token_url" | "revocation_url"
        );
        if entry.is_some() && from_catalog {
            continue;
        }
        let value = if *name == "client_secret" {
            ""
        } else {
            v(name)
        };
        fields.push_str(&field(name, label, value, hint, errors));
    }
    let main = format!(
        "<form method=\"post\" action=\"/admin/apps\">{}\
         <input type=\"hidden\" name=\"provider\" value=\"{}\">{fields}\
         <p><button type=\"submit\">Create app</button> <a href=\"/admin\">Cancel</a></p></form>",
        staff.csrf_field(),
        esc(provider)
    );
    let title = match entry {
        Some(p) => format!("Create an app: {}", p.name),
        None => "Create an app".to_string(),
    };
    let mut resp = console_page(staff, "/admin", &title, &main);
    if !errors.is_empty() {
        *resp.status_mut() = StatusCode::BAD_REQUEST;
    }
    resp
}

/// The document a create form gives: the catalog entry's (placeholders filled), overlaid
/// with every non-empty field.
fn create_doc(form: &Form) -> Result<Map<String, Value>, BTreeMap<String, String>> {
    let provider = form.get("provider").map_or("blank", String::as_str);
    let mut doc = match provider {
        "blank" => Map::new(),
        id => {
            let params: BTreeMap<String, String> = form
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix("param.")?.to_string(), v.clone())))
                .collect();
            let made = catalog::provider(id).and_then(|p| p.app_document(&params));
            match made {
                Ok(d) => d,
                Err(e) => {
                    let key = match e.param() {
                        Some(param) => format!("param.{param}"),
                        None => "provider".to_string(),
                    };
                    return Err(BTreeMap::from([(key, e.to_string())]));
                }
            }
        }
    };
    let names = std::iter::once("id").chain(TEXT_FIELDS.iter().map(|(n, _, _)| *n));
    for name in names {
        if let Some(v) = form.get(name).and_then(|t| doc_value(name, t)) {
            doc.insert(name.to_string(), v);
        }
    }
    Ok(doc)
}

/// `POST /admin/apps`: creates, or shows the form again with what is wrong.
pub(super) async fn create(State(state): State<WebState>, parts: Parts, body: Bytes) -> Response {
    let (staff, form) = or_refuse!(posted(&state, &parts, &body, Role::Admin));
    let provider = form
        .get("provider")
        .cloned()
        .unwrap_or_else(|| "blank".into());
    let doc = match create_doc(&form) {
        Ok(d) => d,
        Err(errors) => return create_form(&staff, &parts, &provider, &form, &errors),
    };
    match state.oauth.admin(&staff.caller).create(&doc).await {
        Ok(app) => see_other(&format!(
            "/admin/apps/{}?done=created",
            query_value(&app.id)
        )),
        Err(AdminError::Invalid(errors)) => create_form(&staff, &parts, &provider, &form, &errors),
        Err(e @ AdminError::Exists(_)) => {
            let errors = BTreeMap::from([("id".to_string(), e.to_string())]);
            create_form(&staff, &parts, &provider, &form, &errors)
        }
        Err(e) => admin_error(&parts, e),
    }
}

/// `GET /admin/apps/{id}`: the app, its actions, and the edit form.
pub(super) async fn show(
    State(state): State<WebState>,
    Path(id): Path<String>,
    parts: Parts,
) -> Response {
    let staff = or_refuse!(staff(&state, &parts, Role::Admin));
    match state.oauth.admin(&staff.caller).get(&id).await {
        Ok(app) => app_page(&state, &staff, &parts, &app, None, &BTreeMap::new()).await,
        Err(e) => admin_error(&parts, e),
    }
}

/// The app page; `values` re-fill the edit form after a refused update.
async fn app_page(
    state: &WebState,
    staff: &Staff,
    parts: &Parts,
    app: &App,
    values: Option<&Form>,
    errors: &BTreeMap<String, String>,
) -> Response {
    let admin = state.oauth.admin(&staff.caller);
    let view = match admin.view(app).await {
        Ok(v) => v,
        Err(e) => return admin_error(parts, e),
    };
    let id = esc(&app.id);
    let problems = if view.problems.is_empty() {
        String::new()
    } else {
        format!(
            "<div class=\"warning\" role=\"alert\"><p>Token requests would be refused:</p><ul>{}</ul></div>",
            view.problems
                .iter()
                .map(|p| format!("<li>{}</li>", esc(p)))
                .collect::<String>()
        )
    };
    let toggle = if app.enabled { "disable" } else { "enable" };
    let mut main = format!(
        "{}{problems}<dl><dt>Id</dt><dd><code>{id}</code></dd>\
         <dt>State</dt><dd>{}</dd><dt>Client secret</dt><dd>{}</dd>\
         <dt>Domains</dt><dd>{}</dd><dt>Authorizations</dt>\
         <dd><a href=\"/admin/apps/{id}/authorizations\">{} users</a></dd>\
         <dt>Generation</dt><dd>{}</dd><dt>Redirect URI</dt><dd><code>{}</code></dd>\
         <dt>Updated</dt><dd>{}</dd></dl>\n\
         <h2>Actions</h2><ul><li><a href=\"/admin/apps/{id}/{toggle}\">{}</a></li>\
         <li><a href=\"/admin/apps/{id}/reset\">Reset</a></li>\
         <li><a href=\"/admin/apps/{id}/delete\">Delete</a></li></ul>\n<h2>Edit</h2>",
        status_line(parts),
        if app.enabled { "Enabled" } else { "Disabled" },
        if view.client_secret_set {
            "set (write-only)"
        } else {
            "none"
        },
        esc(&app.domains.join(", ")),
        view.authorized_users,
        view.generation,
        esc(view.redirect_uri),
        super::time(Some(app.updated_at)),
        if app.enabled { "Disable" } else { "Enable" },
    );
    if !errors.is_empty() {
        let _ = write!(
            main,
            "<div class=\"error\" role=\"alert\"><p>Nothing was changed:</p><ul>{}</ul></div>",
            errors
                .iter()
                .map(|(k, e)| format!("<li><code>{}</code>: {}</li>", esc(k), esc(e)))
                .collect::<String>()
        );
    }
    let _ = write!(
        main,
        "<form method=\"post\" action=\"/admin/apps/{id}\">{}",
        staff.csrf_field()
    );
    for (name, label, hint) in TEXT_FIELDS {
        let value = match (values, *name) {
            (_, "client_secret") => String::new(),
            (Some(v), _) => v.get(*name).cloned().unwrap_or_default(),
            (None, _) => stored_text(app, name),
        };
        let hint = if *name == "client_secret" {
            "Write-only: never shown. Leave empty to keep the stored one; moving an endpoint \
             to another host needs it again."
        } else {
            hint
        };
        main.push_str(&field(name, label, &value, hint, errors));
    }
    main.push_str("<p><button type=\"submit\">Save changes</button></p></form>");
    let mut resp = console_page(staff, "/admin", &format!("App {}", app.name), &main);
    if !errors.is_empty() {
        *resp.status_mut() = StatusCode::BAD_REQUEST;
    }
    resp
}

/// The patch an edit form gives: the fields that differ from `app` (a non-empty secret
/// always; an emptied optional field as `null`, which clears it).
fn patch_of(app: &App, form: &Form) -> Map<String, Value> {
    let mut patch = Map::new();
    for (name, _, _) in TEXT_FIELDS {
        let Some(text) = form.get(*name) else {
            continue;
        };
        if *name == "client_secret" {
            if !text.is_empty() {
                patch.insert("client_secret".into(), Value::String(text.clone()));
            }
            continue;
        }
        let new = doc_value(name, text);
        let old = doc_value(name, &stored_text(app, name));
        if new != old {
            patch.insert(name.to_string(), new.unwrap_or(Value::Null));
        }
    }
    patch
}

/// `POST /admin/apps/{id}`: saves the changed fields, or shows the form again.
pub(super) async fn update(
    State(state): State<WebState>,
    Path(id): Path<String>,
    parts: Parts,
    body: Bytes,
) -> Response {
    let (staff, form) = or_refuse!(posted(&state, &parts, &body, Role::Admin));
    let admin = state.oauth.admin(&staff.caller);
    let app = match admin.get(&id).await {
        Ok(a) => a,
        Err(e) => return admin_error(&parts, e),
    };
    let patch = patch_of(&app, &form);
    if patch.is_empty() {
        return see_other(&format!("/admin/apps/{}?done=unchanged", query_value(&id)));
    }
    let errors = match admin.update(&id, &patch).await {
        Ok(_) => return see_other(&format!("/admin/apps/{}?done=updated", query_value(&id))),
        Err(AdminError::Invalid(errors)) => errors,
        Err(e @ AdminError::SecretRequired(_)) => {
            BTreeMap::from([("client_secret".to_string(), e.to_string())])
        }
        Err(e) => return admin_error(&parts, e),
    };
    app_page(&state, &staff, &parts, &app, Some(&form), &errors).await
}
