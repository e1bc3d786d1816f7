//! The one layout of every page tollgate serves to people (consent, sign-in, my connections,
//! the admin console): server-rendered HTML that needs no JavaScript, every dynamic value
//! escaped with [`esc`], and the security headers of [`harden`]: `Cache-Control: no-store`,
//! `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer`, `nosniff`, and a CSP that allows
//! no script and exactly the one style block below (by hash).

use std::sync::OnceLock;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

/// The only style on the pages; the CSP allows exactly this block (by hash).
const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;\
padding:0 1rem;color:#222;line-height:1.5}h1{font-size:1.4rem}dl{display:grid;\
grid-template-columns:max-content 1fr;gap:.25rem 1rem}dt{font-weight:600}\
.prompt{border-left:4px solid #36c;padding:.5rem 1rem;background:#f4f7fc}\
button{font-size:1rem;padding:.5rem 1.5rem;background:#36c;color:#fff;border:0;\
border-radius:4px;cursor:pointer}.error{border-left:4px solid #c33;padding:.5rem 1rem;\
background:#fcf4f4}.warning{border-left:4px solid #c90;padding:.5rem 1rem;background:#fdf8ec}\
body.wide{max-width:72rem;margin-top:1rem}.wide nav ul{list-style:none;padding:0;display:flex;\
flex-wrap:wrap;gap:.25rem 1.25rem}.wide [aria-current]{font-weight:700}.scroll{overflow-x:auto}\
.wide table{border-collapse:collapse;width:100%}.wide caption{text-align:left;font-weight:600;\
padding:.25rem 0}.wide th,.wide td{text-align:left;padding:.35rem .6rem;\
border-bottom:1px solid #ddd;vertical-align:top}.wide label{display:block;font-weight:600;\
margin-top:.75rem}.wide input:not([type=hidden]):not([type=checkbox]),.wide select{\
font-size:1rem;padding:.35rem;width:100%;max-width:32rem;box-sizing:border-box}\
.wide .hint{color:#555;font-size:.9rem;margin:.1rem 0}.wide .field-error{color:#a00;margin:.1rem 0}\
.wide .danger{background:#c33}.wide .status{border-left:4px solid #393;padding:.5rem 1rem;\
background:#f2faf2}:focus-visible{outline:3px solid #36c;outline-offset:2px}\
.wide form.row{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:end}\
.wide form.row label{margin-top:0}";

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// `'sha256-...'` of [`STYLE`], computed once.
fn style_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let digest = ring::digest::digest(&ring::digest::SHA256, STYLE.as_bytes());
        format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
        )
    })
}

/// `scheme://host[:port]` of a URL, for the CSP `form-action` (browsers apply it to the
/// redirect that follows the form POST).
pub fn origin_of(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    Some(format!("{}://{}", uri.scheme_str()?, uri.authority()?))
}

/// The security headers every consent response carries.
pub fn harden(resp: &mut Response, form_target: Option<&str>) {
    let form_action = match form_target.and_then(origin_of) {
        Some(o) => format!("'self' {o}"),
        None => "'self'".to_string(),
    };
    let csp = format!(
        "default-src 'none'; style-src {}; form-action {form_action}; frame-ancestors 'none'; \
         base-uri 'none'",
        style_hash()
    );
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
}

/// A complete page. `body` must already be escaped.
pub fn page(status: StatusCode, title: &str, body: &str, form_target: Option<&str>) -> Response {
    render(status, title, body, form_target, "")
}

/// A complete page in the wide layout (the admin console: navigation, tables that scroll
/// sideways on a phone, labelled form fields). `body` must already be escaped.
pub fn wide_page(status: StatusCode, title: &str, body: &str) -> Response {
    render(status, title, body, None, " class=\"wide\"")
}

/// The page around `body`; `body_attrs` are the `<body>` tag's attributes (a constant).
fn render(
    status: StatusCode,
    title: &str,
    body: &str,
    form_target: Option<&str>,
    body_attrs: &str,
) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · tollgate</title><style>{STYLE}</style></head><body{body_attrs}>\n{body}\n\
         </body></html>\n",
        esc(title)
    );
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response();
    harden(&mut resp, form_target);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert(\"x\" & 'y')</script>"),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
    }

    #[test]
    fn csp_allows_the_provider_as_form_target_and_no_script() {
        let mut r = StatusCode::OK.into_response();
        harden(&mut r, Some("https://idp.example:8443/authorize?x=1"));
        let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(
            csp.contains("form-action 'self' https://idp.example:8443;"),
            "{csp}"
        );
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(!csp.contains("script-src"), "{csp}");
        assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
    }
}
