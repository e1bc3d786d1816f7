//! `--upstream-proxy URL`: the parent proxy direct routes go through
//! ([`crate::route::UpstreamProxy`]). The URL may hold a password, so it is read as a
//! [`ProxyUrl`], which no `Debug` output, parse error or `--help` shows.

use serde::Deserialize;

use crate::route::UpstreamProxy;

/// The raw URL as given (flag, `TOLLGATE_UPSTREAM_PROXY` or `upstream_proxy` in the file).
/// Parsing never fails here, so clap never echoes the value in an error; [`resolve`] checks
/// it.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct ProxyUrl(String);

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProxyUrl(<redacted>)")
    }
}

impl std::str::FromStr for ProxyUrl {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(ProxyUrl(s.to_owned()))
    }
}

/// The flag over the file; an invalid URL is reported in `errors` (without the URL).
pub fn resolve(
    flag: Option<&ProxyUrl>,
    file: Option<&ProxyUrl>,
    errors: &mut Vec<String>,
) -> Option<UpstreamProxy> {
    let url = flag.or(file)?;
    if url.0.is_empty() {
        return None;
    }
    match UpstreamProxy::parse(&url.0) {
        Ok(p) => Some(p),
        Err(e) => {
            errors.push(format!("--upstream-proxy: {e}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_and_errors_never_show_the_url() {
        let (flag, file) = (
            ProxyUrl("http://a:pw@flag:1".into()),
            ProxyUrl("http://file:2".into()),
        );
        let mut errors = vec![];
        let p = resolve(Some(&flag), Some(&file), &mut errors).unwrap();
        assert_eq!(p.to_string(), "http://flag:1");
        assert_eq!(
            resolve(None, Some(&file), &mut errors).unwrap().to_string(),
            "http://file:2"
        );
        assert!(errors.is_empty());
        let bad = ProxyUrl("socks5://u:topsecret@x".into());
        assert!(resolve(Some(&bad), None, &mut errors).is_none());
        assert_eq!(errors.len(), 1);
        assert!(!errors[0].contains("topsecret"), "{}", errors[0]);
        assert!(!format!("{bad:?}").contains("topsecret"));
    }
}
