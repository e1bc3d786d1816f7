//! The consent flow driven as a browser would: the consent page, its Authorize button, the
//! provider's `/authorize`, and back to tollgate's `/oauth/callback`.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;

use super::{send_one, Resp};

/// The consent cookie tollgate sets on the consent page.
pub const COOKIE: &str = "tollgate_consent";

/// A browser as far as the consent flow cares: the login header its platform proxy adds (if
/// any) and its `tollgate_consent` cookie, kept from the consent page as a browser keeps it.
#[derive(Clone, Default)]
pub struct Browser {
    /// Sent with every request to tollgate (e.g. the platform's login header).
    pub headers: Vec<(String, String)>,
    /// The `tollgate_consent` cookie, once a consent page set one.
    pub cookie: Option<String>,
}

impl Browser {
    /// A browser whose requests carry `headers`.
    pub fn with(headers: &[(&str, &str)]) -> Browser {
        Browser {
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cookie: None,
        }
    }

    /// A browser signed in as `user` through the `X-Forwarded-User` login header.
    pub fn signed_in(user: &str) -> Browser {
        Browser::with(&[("x-forwarded-user", user)])
    }

    /// One request to `addr` with this browser's headers and cookie.
    pub async fn request(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        form: Option<&str>,
    ) -> Resp {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string());
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(c) = &self.cookie {
            req = req.header("cookie", format!("{COOKIE}={c}"));
        }
        let body = match form {
            Some(f) => {
                req = req.header("content-type", "application/x-www-form-urlencoded");
                Bytes::from(f.to_string())
            }
            None => Bytes::new(),
        };
        send_one(addr, req.body(Full::new(body)).unwrap()).await
    }

    /// GET without following redirects.
    pub async fn get(&self, addr: SocketAddr, path: &str) -> Resp {
        self.request(addr, "GET", path, None).await
    }

    /// GET the consent page: keeps the cookie it sets and returns the page with its `csrf`
    /// field (when the page has the Authorize form).
    pub async fn open(&mut self, web: SocketAddr, path: &str) -> (Resp, Option<String>) {
        let page = self.get(web, path).await;
        for v in page.headers.get_all("set-cookie") {
            let v = v.to_str().unwrap();
            if let Some(rest) = v.strip_prefix(&format!("{COOKIE}=")) {
                self.cookie = Some(rest.split(';').next().unwrap().to_string());
            }
        }
        let csrf = csrf_of(&page.text());
        (page, csrf)
    }

    /// POST the Authorize form (with `csrf`, if given).
    pub async fn authorize(&self, web: SocketAddr, path: &str, csrf: Option<&str>) -> Resp {
        let form = csrf.map(|c| format!("csrf={c}"));
        self.request(web, "POST", path, Some(form.as_deref().unwrap_or("")))
            .await
    }

    /// Opens the consent page and clicks Authorize: the POST's answer (`303` to the provider
    /// when all went well).
    pub async fn consent(&mut self, web: SocketAddr, path: &str) -> Resp {
        let (page, csrf) = self.open(web, path).await;
        assert_eq!(page.status, 200, "{}", page.text());
        self.authorize(web, path, csrf.as_deref()).await
    }
}

/// The value of the hidden `csrf` field of a consent page.
pub fn csrf_of(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf\"")?;
    let rest = &html[at..];
    let v = rest.split("value=\"").nth(1)?;
    Some(v.split('"').next()?.to_string())
}

/// `http://host:port/path?q` → (address, `/path?q`).
pub fn split(url: &str) -> (SocketAddr, String) {
    let uri: hyper::Uri = url.parse().unwrap();
    let addr = uri
        .authority()
        .unwrap()
        .as_str()
        .replace("localhost", "127.0.0.1")
        .parse()
        .unwrap();
    (addr, uri.path_and_query().unwrap().to_string())
}

/// What the browser saw at the end of a consent.
pub struct Browsed {
    /// tollgate's answer to the callback.
    pub callback: Resp,
    /// The callback's origin-form target (for replays).
    pub callback_path: String,
    /// The authorization code the provider issued.
    pub code: String,
}

/// GET the consent page at `consent_url` (on `web`), POST it, follow the redirect to the
/// provider at `idp`, then follow the provider's redirect to the callback.
pub async fn browse(web: SocketAddr, idp: SocketAddr, consent_url: &str) -> Browsed {
    let (at, path) = split(consent_url);
    assert_eq!(at, web, "consent URL {consent_url} not on the web listener");
    let mut browser = Browser::default();
    let post = browser.consent(web, &path).await;
    assert_eq!(post.status, 303, "{}", post.text());
    let (at, authorize) = split(&post.header("location").unwrap());
    assert_eq!(at, idp, "consent redirected elsewhere than the provider");
    let at_idp = Browser::default().get(idp, &authorize).await;
    assert_eq!(at_idp.status, 302, "{}", at_idp.text());
    let (back, callback_path) = split(&at_idp.header("location").unwrap());
    assert_eq!(back, web, "provider redirected elsewhere than tollgate");
    let code = url::form_urlencoded::parse(callback_path.split_once('?').unwrap().1.as_bytes())
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("code in the callback");
    Browsed {
        callback: browser.get(web, &callback_path).await,
        callback_path,
        code,
    }
}
