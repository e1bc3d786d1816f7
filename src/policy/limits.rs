//! Method and path limits of an allow rule (`methods`, `read_only`, `paths`): their validation
//! and the compiled form a decision matches requests against.
//!
//! Methods are compared as written (HTTP methods are case-sensitive, so `"get"` is refused
//! with a hint). Paths are globset patterns over the normalized path (see `super::path`):
//! `*` matches within one segment (`literal_separator`), `**` any depth. Each rule's patterns
//! are compiled once per load into one `GlobSet`; a decision asks it one question and
//! allocates nothing.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::path::normalize_path;

/// The methods `read_only = true` stands for.
pub const READ_ONLY_METHODS: [&str; 3] = ["GET", "HEAD", "OPTIONS"];

/// The limits of one allow rule. A rule without any has no `Limits` at all.
#[derive(Debug)]
pub(crate) struct Limits {
    /// The methods allowed; `None`: any method.
    pub(crate) methods: Option<Box<[Box<str>]>>,
    /// The path patterns allowed; `None`: any path. Shared by every rule of a load with the
    /// same list.
    pub(crate) paths: Option<Arc<PathGlobs>>,
}

/// A rule's `paths`, as written and compiled.
pub(crate) struct PathGlobs {
    /// The patterns as written (normalized like request paths), for `policy explain`.
    pub(crate) patterns: Box<[Box<str>]>,
    /// All of them in one matcher.
    set: GlobSet,
}

impl fmt::Debug for PathGlobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.patterns.iter()).finish()
    }
}

impl PathGlobs {
    /// Whether the normalized `path` matches one of the patterns.
    pub(crate) fn matches(&self, path: &str) -> bool {
        self.set.is_match(path)
    }
}

impl Limits {
    /// Whether `method` is allowed.
    pub(crate) fn allows_method(&self, method: &str) -> bool {
        // A handful of entries at most: a scan beats hashing.
        self.methods
            .as_ref()
            .is_none_or(|m| m.iter().any(|x| **x == *method))
    }
}

/// Checks a `methods` entry: an HTTP token (RFC 9110 §5.6.2), upper-case.
pub(crate) fn check_method(m: &str) -> Result<Box<str>, String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if m.is_empty() || !m.bytes().all(token) {
        return Err(format!(
            "invalid method {m:?}: expected an HTTP method such as \"GET\""
        ));
    }
    if m.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(format!(
            "invalid method {m:?}: methods are case-sensitive; write {:?}",
            m.to_ascii_uppercase()
        ));
    }
    if m == "CONNECT" {
        return Err(
            "method \"CONNECT\" cannot be limited: a rule decides the requests inside tunnels"
                .into(),
        );
    }
    Ok(m.into())
}

/// Checks a `paths` pattern: it starts with `/`, has no dot-segment, no encoded `/` or `\`,
/// is written in normalized form, and is a valid glob.
pub(crate) fn check_path_pattern(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!(
            "invalid path pattern {p:?}: it must start with '/'"
        ));
    }
    if p.contains('?') {
        return Err(format!(
            "invalid path pattern {p:?}: patterns match the path only, not the query (`?` is not a wildcard here)"
        ));
    }
    if p.split('/').any(|seg| seg.contains("**") && seg != "**") {
        return Err(format!(
            "invalid path pattern {p:?}: `**` must be a whole segment (`/a/**`, `/**/b`); `*` matches within one"
        ));
    }
    match normalize_path(p) {
        Ok(n) if n == p => {}
        Ok(n) => {
            return Err(format!(
                "path pattern {p:?} is not in normalized form (requests are matched as {n:?}): write it that way"
            ))
        }
        Err(why) => return Err(format!("invalid path pattern {p:?}: {why}")),
    }
    glob(p).map(|_| ())
}

fn glob(p: &str) -> Result<globset::Glob, String> {
    GlobBuilder::new(p)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| format!("invalid path pattern {p:?}: {}", e.kind()))
}

/// The matchers compiled during one load, by pattern list: rules that repeat a list (one per
/// host of a generated file, say) share one matcher, compiled once.
pub(crate) type GlobCache = HashMap<Box<[Box<str>]>, Arc<PathGlobs>>;

/// [`compile_paths`] through `cache`.
pub(crate) fn compile_paths_cached(
    cache: &mut GlobCache,
    patterns: Vec<Box<str>>,
) -> Result<Arc<PathGlobs>, String> {
    if let Some(g) = cache.get(patterns.as_slice()) {
        return Ok(g.clone());
    }
    let globs = Arc::new(compile_paths(patterns)?);
    cache.insert(globs.patterns.clone(), globs.clone());
    Ok(globs)
}

/// Compiles checked patterns into one matcher.
pub(crate) fn compile_paths(patterns: Vec<Box<str>>) -> Result<PathGlobs, String> {
    let mut builder = GlobSetBuilder::new();
    for p in &patterns {
        builder.add(glob(p)?);
    }
    let set = builder
        .build()
        .map_err(|e| format!("path patterns cannot be compiled: {e}"))?;
    Ok(PathGlobs {
        patterns: patterns.into(),
        set,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn globs(patterns: &[&str]) -> PathGlobs {
        for p in patterns {
            check_path_pattern(p).unwrap();
        }
        compile_paths(patterns.iter().map(|p| (*p).into()).collect()).unwrap()
    }

    #[test]
    fn star_matches_one_segment_and_double_star_any_depth() {
        let g = globs(&["/repos/*", "/user", "/orgs/**", "/a/**/z", "/files/*.json"]);
        // (path, matches)
        let cases: &[(&str, bool)] = &[
            ("/repos/x", true),
            ("/repos/x/issues", false),
            ("/repos", false),
            ("/repos/", true),
            ("/user", true),
            ("/user/", false),
            ("/users", false),
            ("/orgs/a", true),
            ("/orgs/a/b/c", true),
            ("/orgs", false),
            ("/a/z", true),
            ("/a/b/c/z", true),
            ("/files/x.json", true),
            ("/files/d/x.json", false),
            ("/USER", false),
        ];
        for (path, want) in cases {
            assert_eq!(g.matches(path), *want, "{path}");
        }
    }

    #[test]
    fn patterns_are_checked() {
        // (pattern, error fragment)
        let cases: &[(&str, &str)] = &[
            ("repos/*", "must start with '/'"),
            ("/a/../b", "normalized form"),
            ("/a/./b", "normalized form"),
            ("/a/%7Euser", "normalized form"),
            ("/a%2Fb", "encoded"),
            ("/a/[b", "invalid path pattern"),
            ("/a**", "whole segment"),
            ("/**x/b", "whole segment"),
            ("/search?q=1", "not the query"),
        ];
        for (p, fragment) in cases {
            let e = check_path_pattern(p).expect_err(p);
            assert!(e.contains(fragment), "{p}: {e}");
        }
        for ok in ["/", "/**", "/a/*/b", "/a/{b,c}", "/%20x", "/~user"] {
            check_path_pattern(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn methods_are_upper_case_tokens() {
        assert_eq!(&*check_method("GET").unwrap(), "GET");
        assert_eq!(&*check_method("PROPFIND").unwrap(), "PROPFIND");
        assert!(check_method("get").unwrap_err().contains("write \"GET\""));
        assert!(check_method("GE T").is_err());
        assert!(check_method("").is_err());
        assert!(check_method("CONNECT").is_err());
    }
}
