//! CSRF protection for every form of the pages (the admin console, my connections): a token
//! bound to the signed-in person (user and org), signed with the session keys (those of the
//! `tollgate_session` cookie, so key rotation keeps it valid while the older key verifies),
//! sent in the hidden [`FIELD`] of each form and checked before a POST changes anything.
//!
//! Another site can make a signed-in browser send a form here (with the session cookie, or
//! through the platform's login proxy that adds the identity headers), but it cannot read a
//! page to learn the token, nor compute it without the key. Tokens are the same for one
//! person while the key signs, so any open page's form stays usable. Under `--login none`
//! (nobody signed in, development only) "my connections" binds it to the person the page was
//! asked for; the console is not served then.

use serde::{Deserialize, Serialize};

use super::login::session::{Purpose, SessionKeys};
use super::login::SignedIn;
use super::page::esc;
use super::WebState;

/// The form field carrying the token.
pub const FIELD: &str = "csrf";

/// What a token is bound to.
#[derive(Serialize, Deserialize, PartialEq, Eq)]
struct Bound {
    /// The user.
    u: String,
    /// The org, when the login names one.
    o: Option<String>,
}

fn bound(who: &SignedIn) -> Bound {
    Bound {
        u: who.user.clone(),
        o: who.org.clone(),
    }
}

/// The token for `who`'s forms (`None` only if it cannot be encoded, which a bounded name
/// never hits).
pub fn token(state: &WebState, who: &SignedIn) -> Option<String> {
    token_with(&state.login.keys(), who)
}

/// Whether `sent` (the form's [`FIELD`]) is a token for `who`.
pub fn valid(state: &WebState, who: &SignedIn, sent: Option<&str>) -> bool {
    valid_with(&state.login.keys(), who, sent)
}

fn token_with(keys: &SessionKeys, who: &SignedIn) -> Option<String> {
    keys.seal(Purpose::Csrf, &bound(who))
}

fn valid_with(keys: &SessionKeys, who: &SignedIn, sent: Option<&str>) -> bool {
    sent.and_then(|t| keys.open::<Bound>(Purpose::Csrf, t))
        .is_some_and(|b| b == bound(who))
}

/// The hidden input carrying `token`, for inside a `<form method="post">`.
pub fn hidden(token: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{FIELD}\" value=\"{}\">",
        esc(token)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(user: &str, org: Option<&str>) -> SignedIn {
        SignedIn {
            user: user.into(),
            org: org.map(Into::into),
            roles: vec!["admin".into()],
        }
    }

    #[test]
    fn tokens_are_bound_to_the_person_and_the_keys() {
        let keys = SessionKeys::from_bytes(b"first key");
        let alice = person("alice", Some("acme"));
        let t = token_with(&keys, &alice).unwrap();
        assert!(valid_with(&keys, &alice, Some(&t)));
        assert!(!valid_with(&keys, &person("bob", Some("acme")), Some(&t)));
        assert!(!valid_with(
            &keys,
            &person("alice", Some("globex")),
            Some(&t)
        ));
        assert!(!valid_with(&keys, &person("alice", None), Some(&t)));
        assert!(!valid_with(&keys, &alice, None));
        assert!(!valid_with(&keys, &alice, Some("")));
        // Another key does not verify it; after a rotation the older key still does.
        let other = SessionKeys::from_bytes(b"other key");
        assert!(!valid_with(&other, &alice, Some(&t)));
        let rotated = SessionKeys::from_bytes(b"second key").accept_older(b"first key");
        assert!(valid_with(&rotated, &alice, Some(&t)));
        // A session cookie (another purpose) is no token.
        let session = keys.seal(Purpose::Session, &bound(&alice)).unwrap();
        assert!(!valid_with(&keys, &alice, Some(&session)));
    }
}
