//! Rendering a template into a request ([`Template::request`]) and reading the response
//! through the output pointers ([`Outputs::grant`]).

use base64::Engine as _;
use http::header::{HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::Method;
use serde_json::Value;

use super::{pieces, Outputs, Piece, Template, TemplateAuth};
use crate::oauth::grant::{seconds, Grant, TokenError};
use crate::store::Secret;

/// What the placeholders of one exchange stand for.
pub struct Inputs<'a> {
    /// `{client_id}`.
    pub client_id: &'a str,
    /// `{client_secret}`.
    pub client_secret: Option<&'a Secret>,
    /// `{redirect_uri}`.
    pub redirect_uri: &'a str,
    /// `{authorization_code}` (token step).
    pub authorization_code: Option<&'a str>,
    /// `{code_verifier}` (token step, PKCE).
    pub code_verifier: Option<&'a Secret>,
    /// `{refresh_token}` (refresh step, revocation).
    pub refresh_token: Option<&'a Secret>,
    /// `{access_token}` (revocation), also the token of `auth = "bearer"`.
    pub access_token: Option<&'a Secret>,
}

impl<'a> Inputs<'a> {
    /// The inputs every request has: the client and the redirect URI; the rest empty.
    pub fn of_client(
        client_id: &'a str,
        client_secret: Option<&'a Secret>,
        redirect_uri: &'a str,
    ) -> Self {
        Inputs {
            client_id,
            client_secret,
            redirect_uri,
            authorization_code: None,
            code_verifier: None,
            refresh_token: None,
            access_token: None,
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        match name {
            "client_id" => Some(self.client_id),
            "client_secret" => self.client_secret.map(Secret::expose),
            "redirect_uri" => Some(self.redirect_uri),
            "authorization_code" => self.authorization_code,
            "code_verifier" => self.code_verifier.map(Secret::expose),
            "refresh_token" => self.refresh_token.map(Secret::expose),
            "access_token" => self.access_token.map(Secret::expose),
            _ => None,
        }
    }
}

/// Substitutes the inputs into `text`.
fn render(text: &str, inputs: &Inputs<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    for piece in pieces(text)? {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Placeholder(name) => out.push_str(
                inputs
                    .get(name)
                    .ok_or_else(|| format!("{{{name}}} has no value here"))?,
            ),
        }
    }
    Ok(out)
}

fn render_json(v: &Value, inputs: &Inputs<'_>) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => Value::String(render(s, inputs)?),
        Value::Array(list) => Value::Array(
            list.iter()
                .map(|x| render_json(x, inputs))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, x)| Ok((k.clone(), render_json(x, inputs)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// `Authorization: Basic` for a client (RFC 6749 §2.3.1: id and secret form-encoded first).
pub(crate) fn basic_credentials(client_id: &str, secret: &Secret) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", enc(client_id), enc(secret.expose()));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// The URL with `{client_id}` substituted, percent-encoded as a path segment (validation
/// allows no other placeholder there, and that one only in revocation templates).
fn render_url(url: &str, inputs: &Inputs<'_>) -> String {
    if !url.contains("{client_id}") {
        return url.to_string();
    }
    let id: String = url::form_urlencoded::byte_serialize(inputs.client_id.as_bytes()).collect();
    url.replace("{client_id}", &id.replace('+', "%20"))
}

impl Template {
    /// The request for `inputs`: rendered URL, headers and body, `Accept: application/json`
    /// unless the template sets its own, the body's content type, and the `auth` header.
    pub fn request(&self, inputs: &Inputs<'_>) -> Result<http::Request<Vec<u8>>, TokenError> {
        let config = |e: String| TokenError::Config(format!("request template: {e}"));
        let method = Method::from_bytes(self.method.as_bytes())
            .map_err(|_| config(format!("invalid method {:?}", self.method)))?;
        let url = render_url(&self.url, inputs);
        let mut req = http::Request::builder().method(method).uri(&url);
        let (content_type, body) = match (&self.form, &self.json) {
            (Some(form), _) => {
                let mut ser = url::form_urlencoded::Serializer::new(String::new());
                for (k, v) in form {
                    ser.append_pair(k, &render(v, inputs).map_err(config)?);
                }
                (
                    Some("application/x-www-form-urlencoded"),
                    ser.finish().into_bytes(),
                )
            }
            (None, Some(json)) => {
                let rendered = render_json(json, inputs).map_err(config)?;
                (
                    Some("application/json"),
                    serde_json::to_vec(&rendered).map_err(|e| config(e.to_string()))?,
                )
            }
            (None, None) => (None, Vec::new()),
        };
        let headers = req
            .headers_mut()
            .ok_or_else(|| config(format!("invalid URL {:?}", self.url)))?;
        if let Some(ct) = content_type {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let auth = match self.auth {
            TemplateAuth::None => None,
            TemplateAuth::Basic => Some(basic_credentials(
                inputs.client_id,
                inputs
                    .client_secret
                    .ok_or_else(|| config("auth = \"basic\" needs a client_secret".into()))?,
            )),
            TemplateAuth::Bearer => Some(format!(
                "Bearer {}",
                inputs
                    .access_token
                    .ok_or_else(|| config("auth = \"bearer\" needs an access token".into()))?
                    .expose()
            )),
        };
        if let Some(auth) = auth {
            let value = HeaderValue::from_str(&auth)
                .map_err(|_| config("the credentials are not a header value".into()))?;
            headers.insert(AUTHORIZATION, value);
        }
        for (name, value) in &self.headers {
            let value = value
                .as_ref()
                .ok_or_else(|| config(format!("header {name:?} has no value")))?;
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| config(format!("{name:?} is not a header name")))?;
            // The rendered value can hold a token or code: never quote it in the error.
            let value = HeaderValue::from_str(&render(value.expose(), inputs).map_err(config)?)
                .map_err(|_| {
                    config(format!(
                        "the rendered value of {name} is not a header value"
                    ))
                })?;
            headers.insert(name, value);
        }
        req.body(body)
            .map_err(|_| config(format!("invalid URL {:?}", self.url)))
    }
}

impl Outputs {
    /// Reads a handshake response. 5xx responses never get here (they are transport errors).
    /// A non-2xx status, or a 2xx whose body has a string `error`, is a provider error with
    /// the body's `error` code (`http_<status>` when it has none); otherwise every output is
    /// read through its pointer, and a missing or mistyped required one names the pointer.
    pub fn grant(&self, status: u16, body: &[u8]) -> Result<Grant, TokenError> {
        let json: Option<Value> = serde_json::from_slice(body).ok();
        let error = json
            .as_ref()
            .and_then(|v| v.get("error"))
            .and_then(Value::as_str);
        if !(200..300).contains(&status) || error.is_some() {
            let code = match error {
                Some(e) => e.to_string(),
                None if (300..400).contains(&status) => {
                    format!("http_{status} (redirects are not followed)")
                }
                None => format!("http_{status}"),
            };
            let description = json
                .as_ref()
                .and_then(|v| v.get("error_description"))
                .and_then(Value::as_str)
                .map(str::to_string);
            return Err(TokenError::Provider { code, description });
        }
        let Some(json) = json else {
            return Err(TokenError::InvalidResponse(
                "the handshake response is not JSON".into(),
            ));
        };
        let invalid = |p: &str, name: &str, what: &str| {
            TokenError::InvalidResponse(format!("{what} at {p:?} ({name})"))
        };
        let present = |p: &str| json.pointer(p).filter(|v| !v.is_null());
        let access_token = match present(&self.access_token) {
            Some(Value::String(s)) if !s.is_empty() => Secret::new(s.clone()),
            Some(_) => {
                return Err(invalid(
                    &self.access_token,
                    "access_token",
                    "not a non-empty string",
                ))
            }
            None => return Err(invalid(&self.access_token, "access_token", "no value")),
        };
        let scopes = match present(&self.scope) {
            Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
            Some(Value::Array(list)) => list
                .iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| invalid(&self.scope, "scope", "not a list of strings"))?,
            Some(_) => {
                return Err(invalid(
                    &self.scope,
                    "scope",
                    "not a string or a list of strings",
                ))
            }
            None => return Err(invalid(&self.scope, "scope", "no value")),
        };
        let refresh_token = match self.refresh_token.as_deref().and_then(present) {
            None => None,
            Some(Value::String(s)) if !s.is_empty() => Some(Secret::new(s.clone())),
            Some(_) => {
                let p = self.refresh_token.as_deref().unwrap_or_default();
                return Err(invalid(p, "refresh_token", "not a non-empty string"));
            }
        };
        let expires_in = match self.expires_in.as_deref() {
            None => None,
            Some(p) => match present(p) {
                None => None,
                Some(v) => Some(
                    seconds(v)
                        .ok_or_else(|| invalid(p, "expires_in", "not a number of seconds"))?,
                ),
            },
        };
        Ok(Grant {
            access_token,
            refresh_token,
            token_type: Some("bearer".into()),
            expires_in,
            scopes: Some(scopes),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::webhook::Webhook;

    #[test]
    fn templates_render_every_input_and_literal_braces() {
        let w: Webhook = serde_json::from_value(serde_json::json!({
            "token": {
                "method": "POST",
                "url": "https://idp.corp.example/handshake/token",
                "headers": {"X-Api-Key": "k-1"},
                "json": {"grant": {"code": "{authorization_code}", "verifier": "{code_verifier}"},
                         "client": "{client_id}", "back": ["{redirect_uri}"], "n": 1},
                "outputs": {"access_token": "/result/token", "scope": "/result/scopes"}
            },
            "refresh": {
                "method": "PUT",
                "url": "https://idp.corp.example/handshake/refresh",
                "form": {"renew": "{refresh_token}", "literal": "{{x}}"},
                "outputs": {"access_token": "/token", "scope": "/scope"}
            }
        }))
        .unwrap();
        let verifier = Secret::new("ver");
        let inputs = Inputs {
            client_id: "cid",
            client_secret: None,
            redirect_uri: "https://tg/oauth/callback",
            authorization_code: Some("code-1"),
            code_verifier: Some(&verifier),
            refresh_token: None,
            access_token: None,
        };
        let req = w.token.request(&inputs).unwrap();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.headers()["x-api-key"], "k-1");
        assert_eq!(req.headers()[CONTENT_TYPE], "application/json");
        let body: Value = serde_json::from_slice(req.body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"grant": {"code": "code-1", "verifier": "ver"},
                               "client": "cid", "back": ["https://tg/oauth/callback"], "n": 1})
        );
        let rt = Secret::new("rt&1");
        let inputs = Inputs {
            authorization_code: None,
            code_verifier: None,
            refresh_token: Some(&rt),
            ..inputs
        };
        let req = w.refresh.as_ref().unwrap().request(&inputs).unwrap();
        assert_eq!(req.method(), Method::PUT);
        assert_eq!(
            std::str::from_utf8(req.body()).unwrap(),
            "literal=%7Bx%7D&renew=rt%261"
        );
    }

    #[test]
    fn responses_are_read_through_the_pointers() {
        let outputs = Outputs {
            access_token: "/result/token".into(),
            scope: "/result/scopes".into(),
            refresh_token: Some("/result/renew".into()),
            expires_in: Some("/result/ttl".into()),
        };
        struct Case {
            name: &'static str,
            status: u16,
            body: &'static str,
            check: fn(Result<Grant, TokenError>),
        }
        let cases = [
            Case {
                name: "nested with string ttl",
                status: 200,
                body: r#"{"result":{"token":"at","scopes":["a","b"],"renew":"rt","ttl":"3"}}"#,
                check: |g| {
                    let g = g.unwrap();
                    assert_eq!(g.access_token.expose(), "at");
                    assert_eq!(g.refresh_token.unwrap().expose(), "rt");
                    assert_eq!(g.expires_in, Some(3));
                    assert_eq!(g.scopes.unwrap(), ["a", "b"]);
                },
            },
            Case {
                name: "numeric ttl, spaced scopes, optional outputs absent",
                status: 201,
                body: r#"{"result":{"token":"at","scopes":"a b","ttl":60.0}}"#,
                check: |g| {
                    let g = g.unwrap();
                    assert!(g.refresh_token.is_none());
                    assert_eq!(g.expires_in, Some(60));
                    assert_eq!(g.scopes.unwrap(), ["a", "b"]);
                },
            },
            Case {
                name: "missing access token names the pointer",
                status: 200,
                body: r#"{"result":{}}"#,
                check: |g| {
                    let e = g.unwrap_err().to_string();
                    assert!(
                        e.contains("\"/result/token\"") && e.contains("access_token"),
                        "{e}"
                    );
                },
            },
            Case {
                name: "missing scope names the pointer",
                status: 200,
                body: r#"{"result":{"token":"at"}}"#,
                check: |g| assert!(g.unwrap_err().to_string().contains("/result/scopes")),
            },
            Case {
                name: "garbage ttl",
                status: 200,
                body: r#"{"result":{"token":"at","scopes":"a","ttl":"soon"}}"#,
                check: |g| assert!(g.unwrap_err().to_string().contains("expires_in")),
            },
            Case {
                name: "error with 200",
                status: 200,
                body: r#"{"error":"invalid_grant"}"#,
                check: |g| assert_eq!(g.unwrap_err().provider_code(), Some("invalid_grant")),
            },
            Case {
                name: "4xx without a code",
                status: 403,
                body: "forbidden",
                check: |g| assert_eq!(g.unwrap_err().provider_code(), Some("http_403")),
            },
            Case {
                name: "not JSON",
                status: 200,
                body: "<html>",
                check: |g| assert!(g.unwrap_err().to_string().contains("not JSON")),
            },
        ];
        for c in cases {
            let r = outputs.grant(c.status, c.body.as_bytes());
            eprintln!("case: {}", c.name);
            (c.check)(r);
        }
    }

    #[test]
    fn revocation_templates_render_the_url_and_the_auth() {
        let t: Template = serde_json::from_value(serde_json::json!({
            "method": "DELETE",
            "url": "https://api.example/applications/{client_id}/grant",
            "auth": "basic",
            "json": {"access_token": "{access_token}"},
        }))
        .unwrap();
        let (secret, at) = (Secret::new("s:1"), Secret::new("at-1"));
        let inputs = Inputs {
            client_id: "id/1",
            client_secret: Some(&secret),
            redirect_uri: "https://tg/oauth/callback",
            authorization_code: None,
            code_verifier: None,
            refresh_token: None,
            access_token: Some(&at),
        };
        let req = t.request(&inputs).unwrap();
        assert_eq!(req.method(), Method::DELETE);
        assert_eq!(
            req.uri().to_string(),
            "https://api.example/applications/id%2F1/grant"
        );
        // base64("id%2F1:s%3A1")
        assert_eq!(req.headers()[AUTHORIZATION], "Basic aWQlMkYxOnMlM0Ex");
        assert_eq!(req.body(), br#"{"access_token":"at-1"}"#);
        let bearer = Template {
            auth: TemplateAuth::Bearer,
            json: None,
            ..t
        };
        let req = bearer.request(&inputs).unwrap();
        assert_eq!(req.headers()[AUTHORIZATION], "Bearer at-1");
        let none = Inputs {
            access_token: None,
            ..inputs
        };
        assert!(bearer.request(&none).is_err());
    }
}
