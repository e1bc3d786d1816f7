//! The browser that takes part in a consent: its `tollgate_consent` cookie, the `csrf` field
//! of the Authorize form derived from it, and the hash of it a pending authorization keeps.
//!
//! The cookie is 256 random bits ([`random_id`]), set by the consent page (HttpOnly,
//! SameSite=Lax, `Path=/` so that `/oauth/callback` receives it). A page of another site can
//! neither read it nor compute `csrf`, so it cannot make a signed-in user's browser click
//! Authorize; and a callback from any other browser than the one that clicked Authorize (a
//! provider redirect forwarded to someone else, a login CSRF at the provider) does not carry
//! it. Both derivations are HMAC-SHA256 (ring) with fixed domain-separation labels, and both
//! checks are `ring::hmac::verify`, which compares in constant time.

use base64::Engine as _;
use ring::hmac;

use crate::store::{random_id, StoreError, BROWSER_TAG_LEN};

/// The cookie's name.
pub const COOKIE_NAME: &str = "tollgate_consent";

/// Length of a cookie value: [`random_id`]'s 256 bits in base64url.
const COOKIE_LEN: usize = 43;

/// Label of the `csrf` field's derivation.
const CSRF_LABEL: &[u8] = b"tollgate consent csrf v1\0";

/// Key of the browser tag: a fixed label, so the tag is a domain-separated SHA-256 hash.
const TAG_LABEL: &[u8] = b"tollgate consent browser v1";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A valid `tollgate_consent` cookie value.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsentCookie(String);

impl std::fmt::Debug for ConsentCookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConsentCookie(MASKED)")
    }
}

impl ConsentCookie {
    /// A fresh random cookie.
    pub fn new() -> Result<ConsentCookie, StoreError> {
        random_id().map(ConsentCookie)
    }

    /// The cookie a browser sent, if it has the shape of one tollgate sets.
    pub fn parse(value: &str) -> Option<ConsentCookie> {
        let ok = value.len() == COOKIE_LEN
            && value
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
        ok.then(|| ConsentCookie(value.to_owned()))
    }

    /// The value for `Set-Cookie`.
    pub fn value(&self) -> &str {
        &self.0
    }

    /// The Authorize form's `csrf` field for `ticket_id` in this browser.
    pub fn csrf(&self, ticket_id: &str) -> String {
        B64.encode(hmac::sign(&self.csrf_key(), &csrf_message(ticket_id)))
    }

    /// Whether `csrf` is this browser's field for `ticket_id` (constant time).
    pub fn csrf_matches(&self, ticket_id: &str, csrf: &str) -> bool {
        B64.decode(csrf)
            .is_ok_and(|tag| hmac::verify(&self.csrf_key(), &csrf_message(ticket_id), &tag).is_ok())
    }

    /// What a pending authorization keeps of this browser: a hash of the cookie.
    pub fn tag(&self) -> [u8; BROWSER_TAG_LEN] {
        let mut out = [0u8; BROWSER_TAG_LEN];
        out.copy_from_slice(hmac::sign(&tag_key(), self.0.as_bytes()).as_ref());
        out
    }

    /// Whether `tag` is this browser's (constant time).
    pub fn has_tag(&self, tag: &[u8; BROWSER_TAG_LEN]) -> bool {
        hmac::verify(&tag_key(), self.0.as_bytes(), tag).is_ok()
    }

    fn csrf_key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, self.0.as_bytes())
    }
}

fn csrf_message(ticket_id: &str) -> Vec<u8> {
    [CSRF_LABEL, ticket_id.as_bytes()].concat()
}

fn tag_key() -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, TAG_LABEL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_is_bound_to_the_cookie_and_the_ticket() {
        let a = ConsentCookie::new().unwrap();
        let b = ConsentCookie::new().unwrap();
        let csrf = a.csrf("ticket-1");
        assert!(a.csrf_matches("ticket-1", &csrf));
        assert!(!a.csrf_matches("ticket-2", &csrf));
        assert!(!b.csrf_matches("ticket-1", &csrf));
        assert!(!a.csrf_matches("ticket-1", ""));
        assert!(!a.csrf_matches("ticket-1", "not base64!"));
        assert_eq!(csrf.len(), 43);
    }

    #[test]
    fn tags_tell_browsers_apart_and_cookies_are_checked() {
        let a = ConsentCookie::new().unwrap();
        let b = ConsentCookie::new().unwrap();
        assert!(a.has_tag(&a.tag()));
        assert!(!b.has_tag(&a.tag()));
        assert!(ConsentCookie::parse(a.value()).is_some());
        assert!(ConsentCookie::parse("short").is_none());
        assert!(ConsentCookie::parse(&"a;".repeat(22)[..43]).is_none());
        assert_eq!(format!("{a:?}"), "ConsentCookie(MASKED)");
    }
}
