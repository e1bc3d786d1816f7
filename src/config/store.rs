//! `--store URL` (`TOLLGATE_STORE`, file key `store`): where tollgate keeps its state.
//!
//! `sled:DIR` is the embedded store in directory `DIR` (the default: `DATA/store`, inside the
//! data directory); `postgres://…` (or `postgresql://…`) is a shared PostgreSQL database for
//! several replicas. The URL may carry a password, so [`StoreLocation`]'s `Debug` and
//! `Display` never show it.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where the store lives.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// The embedded sled store in this directory.
    Sled(PathBuf),
    /// A PostgreSQL database, by its connection URL (may hold a password).
    Postgres(String),
}

impl StoreLocation {
    /// Parses a `--store` value.
    pub fn parse(s: &str) -> Result<StoreLocation, String> {
        let s = s.trim();
        if let Some(dir) = s.strip_prefix("sled:") {
            if dir.is_empty() {
                return Err("--store: sled: needs a directory, e.g. sled:data/store".into());
            }
            return Ok(StoreLocation::Sled(PathBuf::from(dir)));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            // Validated here so a typo is reported with the other settings, not at open.
            return crate::store::PgStore::check_url(s)
                .map(|()| StoreLocation::Postgres(s.to_owned()))
                .map_err(|e| format!("--store: {e}"));
        }
        Err(format!(
            "--store: {:?} is neither sled:DIR nor postgres://…",
            redact(s)
        ))
    }

    /// The `--store` setting (flag/env over file), or the sled store in `data_dir/store`.
    pub fn resolve(
        flag: Option<&String>,
        file: Option<&String>,
        data_dir: &Path,
        errors: &mut Vec<String>,
    ) -> StoreLocation {
        let default = || StoreLocation::Sled(data_dir.join("store"));
        match flag.or(file) {
            None => default(),
            Some(s) => StoreLocation::parse(s).unwrap_or_else(|e| {
                errors.push(e);
                default()
            }),
        }
    }
}

/// `url` with the password of its user info replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Sled(dir) => write!(f, "sled:{}", dir.display()),
            StoreLocation::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreLocation({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_parse_and_never_show_a_password() {
        let mut errors = Vec::new();
        let data = Path::new("data");
        assert_eq!(
            StoreLocation::resolve(None, None, data, &mut errors),
            StoreLocation::Sled(PathBuf::from("data/store"))
        );
        let file = "sled:/var/lib/tollgate".to_string();
        assert_eq!(
            StoreLocation::resolve(None, Some(&file), data, &mut errors),
            StoreLocation::Sled(PathBuf::from("/var/lib/tollgate"))
        );
        let pg = "postgres://tg:hunter2@db.internal:5432/tollgate?sslmode=require".to_string();
        let loc = StoreLocation::resolve(Some(&pg), Some(&file), data, &mut errors);
        assert_eq!(loc, StoreLocation::Postgres(pg.clone()));
        assert!(errors.is_empty(), "{errors:?}");
        for shown in [format!("{loc}"), format!("{loc:?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(
                shown.contains("tg:***@db.internal:5432/tollgate"),
                "{shown}"
            );
        }
        for bad in ["mysql://x", "sled:", "postgres://u:secretpw@h:notaport/db"] {
            let e = StoreLocation::parse(bad).unwrap_err();
            assert!(e.starts_with("--store:"), "{e}");
            assert!(!e.contains("secretpw"), "{e}");
        }
    }
}
