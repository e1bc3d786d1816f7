//! Who is signing in at the pages: the one place the web handlers ask.
//!
//! Today the only login is the platform's login header (`--consent-user-header`): when it is
//! configured, its value names the signed-in user; when it is not, anyone holding a link is
//! accepted ([`Visitor::Anyone`], development only).

use axum::http::HeaderMap;

use super::WebState;

/// A person signed in at the pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    /// The user, compared with a ticket's user.
    pub user: String,
    /// The org, when the login provides one; compared with a ticket's org.
    pub org: Option<String>,
    /// Roles, when the login provides them (for the admin pages).
    pub roles: Vec<String>,
}

/// Who is making a request to a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visitor {
    /// No login is configured (`--login none`): nobody is asked who they are.
    Anyone,
    /// Signed in.
    User(SignedIn),
    /// A login is configured, but this request carries no (trusted) sign-in.
    Anonymous,
}

impl Visitor {
    /// Whether this visitor may act for `user` of `org`: anyone without a login, else the
    /// signed-in user must be `user`, and of `org` when the login names an org.
    pub fn may_act_for(&self, org: &str, user: &str) -> bool {
        match self {
            Visitor::Anyone => true,
            Visitor::User(s) => s.user == user && s.org.as_deref().is_none_or(|o| o == org),
            Visitor::Anonymous => false,
        }
    }

    /// The signed-in user, for logs.
    pub fn user(&self) -> Option<&str> {
        match self {
            Visitor::User(s) => Some(&s.user),
            _ => None,
        }
    }
}

/// Who sent `headers`.
pub fn visitor(state: &WebState, headers: &HeaderMap) -> Visitor {
    let Some(name) = state.oauth.consent_user_header.as_ref() else {
        return Visitor::Anyone;
    };
    match headers.get(name).and_then(|v| v.to_str().ok()) {
        Some(user) if !user.is_empty() => Visitor::User(SignedIn {
            user: user.to_string(),
            org: None,
            roles: Vec::new(),
        }),
        _ => Visitor::Anonymous,
    }
}
