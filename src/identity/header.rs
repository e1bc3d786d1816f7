//! `Proxy-Authorization` parsing: `Bearer <jwt>` or `Basic base64(user:<jwt>)`, taken apart into
//! the token and the optional Basic user before any verification.

use std::borrow::Cow;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

use super::{IdentityError, MAX_HEADER_LEN};

/// Basic credentials as clients send them; padding is tolerated either way because some
/// hand-rolled clients strip it.
const BASIC_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A header value taken apart, not yet verified.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Credentials<'a> {
    /// The JWT (borrowed from a Bearer header, decoded from a Basic one).
    pub(super) token: Cow<'a, str>,
    /// The Basic user part when it is non-empty: it must then equal the token's `sub`.
    pub(super) user: Option<String>,
}

/// Parses a `Proxy-Authorization` (or `Authorization`) header value. Scheme names are
/// case-insensitive; surrounding whitespace is tolerated.
pub(super) fn parse(value: &[u8]) -> Result<Credentials<'_>, IdentityError> {
    if value.len() > MAX_HEADER_LEN {
        return Err(IdentityError::Malformed);
    }
    let value = value.trim_ascii();
    if value.is_empty() {
        return Err(IdentityError::Missing);
    }
    let (scheme, rest) = match value.iter().position(|&b| b == b' ') {
        Some(i) => (&value[..i], value[i..].trim_ascii_start()),
        None => return Err(IdentityError::Malformed),
    };
    if rest.is_empty() {
        return Err(IdentityError::Malformed);
    }
    if scheme.eq_ignore_ascii_case(b"bearer") {
        let token = std::str::from_utf8(rest).map_err(|_| IdentityError::Malformed)?;
        Ok(Credentials {
            token: Cow::Borrowed(token),
            user: None,
        })
    } else if scheme.eq_ignore_ascii_case(b"basic") {
        let decoded = BASIC_B64
            .decode(rest)
            .map_err(|_| IdentityError::Malformed)?;
        let text = String::from_utf8(decoded).map_err(|_| IdentityError::Malformed)?;
        // RFC 7617: the user-id cannot contain ':'; the password (our token) could.
        let (user, token) = text.split_once(':').ok_or(IdentityError::Malformed)?;
        if token.is_empty() {
            return Err(IdentityError::Malformed);
        }
        Ok(Credentials {
            token: Cow::Owned(token.to_owned()),
            user: (!user.is_empty()).then(|| user.to_owned()),
        })
    } else {
        Err(IdentityError::Malformed)
    }
}
