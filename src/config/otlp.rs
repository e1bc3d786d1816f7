//! `tollgate serve`'s OpenTelemetry export: `--otlp-endpoint` (off by default), the OTLP/HTTP
//! collector that receives one span per proxied request (`crate::otel`). A flag group of its
//! own ([`OtlpOverrides`], flattened into `serve`); the file key is `otlp_endpoint` at the end
//! of `super::FileConfig`.

/// The path OTLP/HTTP collectors take traces at, appended to a base URL.
const TRACES_PATH: &str = "/v1/traces";

/// The OpenTelemetry flags; `None` = not given.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct OtlpOverrides {
    /// OTLP/HTTP collector (http:// or https://HOST:PORT, e.g. http://127.0.0.1:4318) that
    /// receives one span per proxied request, protobuf-encoded at /v1/traces [default: off].
    #[arg(long, env = "TOLLGATE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// The traces URL (`…/v1/traces`) of `--otlp-endpoint` (over `file`'s `otlp_endpoint`), when
/// export is on; problems are added to `errors`.
pub fn resolve(
    over: &OtlpOverrides,
    file: Option<&String>,
    errors: &mut Vec<String>,
) -> Option<String> {
    let given = over.otlp_endpoint.as_ref().or(file)?;
    match traces_url(given) {
        Ok(url) => Some(url),
        Err(e) => {
            errors.push(format!("--otlp-endpoint: {e}"));
            None
        }
    }
}

/// `base` + `/v1/traces`, unless `base` already ends with it. Credentials in the URL are
/// refused: they would be logged with it.
fn traces_url(base: &str) -> Result<String, String> {
    let uri: http::Uri = base.parse().map_err(|_| format!("{base:?} is not a URL"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(a)) if !a.as_str().contains('@') => {}
        (Some("http" | "https"), Some(_)) => {
            return Err("the URL must not carry credentials".into());
        }
        _ => return Err(format!("{base:?} must be an http:// or https:// URL")),
    }
    if uri.query().is_some() {
        return Err(format!("{base:?} must not have a query"));
    }
    let trimmed = base.trim_end_matches('/');
    Ok(if trimmed.ends_with(TRACES_PATH) {
        trimmed.to_string()
    } else {
        format!("{trimmed}{TRACES_PATH}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_the_traces_path_is_appended_once() {
        let mut errors = Vec::new();
        let file = None;
        assert_eq!(resolve(&OtlpOverrides::default(), file, &mut errors), None);
        for (given, want) in [
            ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
            ("http://c:4318/", "http://c:4318/v1/traces"),
            ("https://c/otel/v1/traces", "https://c/otel/v1/traces"),
        ] {
            let over = OtlpOverrides {
                otlp_endpoint: Some(given.into()),
            };
            assert_eq!(resolve(&over, file, &mut errors).as_deref(), Some(want));
        }
        assert!(errors.is_empty(), "{errors:?}");
        for bad in [
            "collector:4318",
            "ftp://c",
            "http://u:p@c:4318",
            "http://c/?k=v",
        ] {
            let over = OtlpOverrides {
                otlp_endpoint: Some(bad.into()),
            };
            assert_eq!(resolve(&over, file, &mut errors), None, "{bad}");
        }
        assert_eq!(errors.len(), 4, "{errors:?}");
    }
}
