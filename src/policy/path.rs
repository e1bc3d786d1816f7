//! Request path normalization for `paths` rules: the one form a path is decided on, and
//! forwarded in.
//!
//! Normalizing (RFC 3986 §6.2.2): percent-encoded unreserved characters are decoded, other
//! percent-encodings are written with upper-case hex, and dot-segments are resolved. A path
//! whose meaning depends on how the origin server reads it is refused instead, because the
//! proxy and the origin could then disagree on what was allowed: an encoded `/` or `\`
//! (`%2F`, `%5C`), an encoded dot-segment (`%2e%2e`), a dot-segment with parameters (`..;`,
//! which Tomcat reads as `..`), an empty segment (`//`, which nginx merges), a raw `\`, or a
//! malformed percent-encoding. The common path needs none of this and is returned borrowed,
//! without allocating.

use std::borrow::Cow;
use std::fmt;

/// Why a path cannot be decided on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// It does not start with `/`.
    NotAbsolute,
    /// `%2F` or `%5C`: a separator that servers disagree about.
    EncodedSeparator,
    /// A dot-segment written with percent-encoding, or with `;` parameters.
    DisguisedDotSegment,
    /// An empty segment (`//`).
    EmptySegment,
    /// A raw backslash.
    Backslash,
    /// `%` not followed by two hex digits.
    BadPercentEncoding,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotAbsolute => "the path does not start with '/'",
            PathError::EncodedSeparator => "the path holds an encoded '/' or '\\' (%2F, %5C)",
            PathError::DisguisedDotSegment => {
                "the path holds an encoded dot-segment or a dot-segment with parameters"
            }
            PathError::EmptySegment => "the path holds an empty segment ('//')",
            PathError::Backslash => "the path holds a '\\'",
            PathError::BadPercentEncoding => "the path holds a malformed percent-encoding",
        })
    }
}

impl std::error::Error for PathError {}

/// The normalized form of `raw` (a request path, without the query), borrowed when `raw` is
/// already normalized.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(PathError::NotAbsolute);
    };
    let b = raw.as_bytes();
    let plain = !b.contains(&b'%')
        && !b.contains(&b'\\')
        && !b.windows(2).any(|w| w == b"/." || w == b"//");
    if plain {
        return Ok(Cow::Borrowed(raw));
    }
    let count = rest.split('/').count();
    let mut out: Vec<Cow<'_, str>> = Vec::with_capacity(count);
    for (i, seg) in rest.split('/').enumerate() {
        let last = i + 1 == count;
        let (decoded, encoded) = decode_segment(seg)?;
        match &*decoded {
            "." | ".." if encoded => return Err(PathError::DisguisedDotSegment),
            "." => {}
            ".." => {
                out.pop();
            }
            "" if !last => return Err(PathError::EmptySegment),
            d if d.starts_with(".;") || d.starts_with("..;") => {
                return Err(PathError::DisguisedDotSegment)
            }
            _ => {
                out.push(decoded);
                continue;
            }
        }
        // A dot-segment at the end leaves the path ending in '/'.
        if last {
            out.push(Cow::Borrowed(""));
        }
    }
    let mut path = String::with_capacity(raw.len());
    for seg in &out {
        path.push('/');
        path.push_str(seg);
    }
    if path.is_empty() {
        path.push('/');
    }
    Ok(if path == raw {
        Cow::Borrowed(raw)
    } else {
        Cow::Owned(path)
    })
}

/// RFC 3986 §2.3.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// One segment with unreserved characters decoded and other escapes in upper case, and
/// whether it held any escape.
fn decode_segment(seg: &str) -> Result<(Cow<'_, str>, bool), PathError> {
    let b = seg.as_bytes();
    if b.contains(&b'\\') {
        return Err(PathError::Backslash);
    }
    if !b.contains(&b'%') {
        return Ok((Cow::Borrowed(seg), false));
    }
    let mut out = String::with_capacity(seg.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            // Copy the run up to the next escape (it is valid UTF-8: `seg` is a `str` and
            // '%' is ASCII).
            let end = b[i..]
                .iter()
                .position(|&c| c == b'%')
                .map_or(b.len(), |p| i + p);
            out.push_str(&seg[i..end]);
            i = end;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(PathError::BadPercentEncoding);
        };
        let byte = hi << 4 | lo;
        if byte == b'/' || byte == b'\\' {
            return Err(PathError::EncodedSeparator);
        }
        if is_unreserved(byte) {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push(char::from_digit(u32::from(hi), 16).map_or('0', |c| c.to_ascii_uppercase()));
            out.push(char::from_digit(u32::from(lo), 16).map_or('0', |c| c.to_ascii_uppercase()));
        }
        i += 3;
    }
    Ok((Cow::Owned(out), true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalize_or_are_refused() {
        // (name, raw, normalized or error)
        type Case = (&'static str, &'static str, Result<&'static str, PathError>);
        let cases: &[Case] = &[
            ("root", "/", Ok("/")),
            ("plain", "/repos/a/b", Ok("/repos/a/b")),
            ("trailing slash", "/repos/", Ok("/repos/")),
            ("well-known", "/.well-known/x", Ok("/.well-known/x")),
            ("dot", "/a/./b", Ok("/a/b")),
            ("dot-dot", "/a/b/../c", Ok("/a/c")),
            ("dot-dot at end", "/a/b/..", Ok("/a/")),
            ("dot at end", "/a/.", Ok("/a/")),
            ("above root", "/../../a", Ok("/a")),
            ("only dot-dot", "/..", Ok("/")),
            ("unreserved decoded", "/%7Euser/%61b%2d", Ok("/~user/ab-")),
            ("reserved kept upper", "/a%20b/%3a", Ok("/a%20b/%3A")),
            ("percent of percent", "/a%25", Ok("/a%25")),
            ("utf-8 escapes kept", "/caf%c3%a9", Ok("/caf%C3%A9")),
            ("encoded slash", "/a%2Fb", Err(PathError::EncodedSeparator)),
            (
                "encoded slash lower",
                "/a%2fb",
                Err(PathError::EncodedSeparator),
            ),
            (
                "encoded backslash",
                "/a%5cb",
                Err(PathError::EncodedSeparator),
            ),
            ("raw backslash", "/a\\..\\b", Err(PathError::Backslash)),
            (
                "encoded dot-dot",
                "/a/%2e%2e/b",
                Err(PathError::DisguisedDotSegment),
            ),
            (
                "half encoded",
                "/a/.%2E/b",
                Err(PathError::DisguisedDotSegment),
            ),
            (
                "encoded dot",
                "/a/%2e/b",
                Err(PathError::DisguisedDotSegment),
            ),
            (
                "dot-dot params",
                "/a/..;/b",
                Err(PathError::DisguisedDotSegment),
            ),
            (
                "dot params",
                "/a/.;x/b",
                Err(PathError::DisguisedDotSegment),
            ),
            ("empty segment", "/a//b", Err(PathError::EmptySegment)),
            ("leading double", "//a", Err(PathError::EmptySegment)),
            ("bad escape", "/a%zz", Err(PathError::BadPercentEncoding)),
            ("cut escape", "/a%2", Err(PathError::BadPercentEncoding)),
            ("relative", "a/b", Err(PathError::NotAbsolute)),
            ("asterisk", "*", Err(PathError::NotAbsolute)),
        ];
        for (name, raw, want) in cases {
            let got = normalize_path(raw);
            assert_eq!(got.as_deref().map_err(|e| *e), *want, "{name}: {raw}");
        }
    }

    #[test]
    fn normalized_paths_are_borrowed() {
        for p in ["/", "/a/b", "/.well-known/x", "/a%20b"] {
            assert!(matches!(normalize_path(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }
}
