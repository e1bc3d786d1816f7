//! The consent flow driven as a browser would: the consent page, its Authorize button, the
//! provider's `/authorize`, and back to tollgate's `/oauth/callback`.

use std::net::SocketAddr;

use super::{web_request, Resp};

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
    let page = web_request(web, "GET", &path, None, None).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let post = web_request(web, "POST", &path, None, None).await;
    assert_eq!(post.status, 303, "{}", post.text());
    let (at, authorize) = split(&post.header("location").unwrap());
    assert_eq!(at, idp, "consent redirected elsewhere than the provider");
    let at_idp = web_request(idp, "GET", &authorize, None, None).await;
    assert_eq!(at_idp.status, 302, "{}", at_idp.text());
    let (back, callback_path) = split(&at_idp.header("location").unwrap());
    assert_eq!(back, web, "provider redirected elsewhere than tollgate");
    let code = url::form_urlencoded::parse(callback_path.split_once('?').unwrap().1.as_bytes())
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("code in the callback");
    Browsed {
        callback: web_request(web, "GET", &callback_path, None, None).await,
        callback_path,
        code,
    }
}
