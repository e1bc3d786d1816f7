//! The `--login` flag group of `tollgate serve`: who is signing in at the pages.
//!
//! - `none`: nobody is asked (development only). `serve` refuses it when it was not asked for
//!   explicitly and the public URL's host is not loopback: a consent link sent to the wrong
//!   person would connect a stranger's account.
//! - `header`: the platform's login proxy names the user (`--login-user-header`, optional org
//!   and roles headers); the headers are believed only from a TCP peer inside
//!   `--trusted-proxies` (default loopback). `--consent-user-header NAME` is the older spelling
//!   of `--login header --login-user-header NAME`.
//! - `oidc`: tollgate is an OpenID Connect relying party of the platform's IdP
//!   (`--login-oidc-*`).
//!
//! [`LoginOverrides`] is what clap parsed (flattened into `serve`'s flags); the file keys are
//! the same names with underscores, at the end of [`FileConfig`]; [`resolve`] validates
//! them into a [`LoginConfig`], adding every problem to the caller's list.

use std::net::IpAddr;
use std::path::PathBuf;

use http::HeaderName;
use ipnet::IpNet;
use serde::Deserialize;

use super::FileConfig;

/// Longest header or claim name accepted (a config typo, not a limit anyone meets).
const MAX_NAME: usize = 128;

/// How people sign in at the pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LoginMode {
    /// Nobody is asked (development only).
    None,
    /// A trusted header set by the platform's login proxy.
    Header,
    /// OpenID Connect with the platform's IdP.
    Oidc,
}

/// The `--login*` and `--trusted-proxies` flags; `None` = not given.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct LoginOverrides {
    /// Who is signing in at the pages: none (development only), header or oidc
    /// [default: none; refused for a non-loopback public URL unless given explicitly].
    #[arg(long, env = "TOLLGATE_LOGIN", value_enum)]
    pub login: Option<LoginMode>,
    /// `header`: the header naming the signed-in user. [default: none]
    #[arg(long, env = "TOLLGATE_LOGIN_USER_HEADER")]
    pub login_user_header: Option<String>,
    /// `header`: the header naming the user's org (optional). [default: none]
    #[arg(long, env = "TOLLGATE_LOGIN_ORG_HEADER")]
    pub login_org_header: Option<String>,
    /// `header`: the header listing the user's roles, comma-separated (optional). [default: none]
    #[arg(long, env = "TOLLGATE_LOGIN_ROLES_HEADER")]
    pub login_roles_header: Option<String>,
    /// `header`: TCP peers whose login headers are believed (CIDRs, comma-separated)
    /// [default: 127.0.0.0/8,::1/128].
    #[arg(long, env = "TOLLGATE_TRUSTED_PROXIES", value_delimiter = ',', num_args = 1..)]
    pub trusted_proxies: Option<Vec<String>>,
    /// `oidc`: the IdP's issuer URL (discovery at {issuer}/.well-known/openid-configuration).
    /// [default: none]
    #[arg(long, env = "TOLLGATE_LOGIN_OIDC_ISSUER")]
    pub login_oidc_issuer: Option<String>,
    /// `oidc`: tollgate's client ID at the IdP. [default: none]
    #[arg(long, env = "TOLLGATE_LOGIN_OIDC_CLIENT_ID")]
    pub login_oidc_client_id: Option<String>,
    /// `oidc`: a file holding the client secret (none = a public client with PKCE). [default: none]
    #[arg(long, env = "TOLLGATE_LOGIN_OIDC_CLIENT_SECRET_FILE")]
    pub login_oidc_client_secret_file: Option<PathBuf>,
    /// `oidc`: the ID token claim naming the user [default: sub].
    #[arg(long, env = "TOLLGATE_LOGIN_OIDC_USER_CLAIM")]
    pub login_oidc_user_claim: Option<String>,
    /// `oidc`: the ID token claim naming the user's org (optional). [default: none]
    #[arg(long, env = "TOLLGATE_LOGIN_OIDC_ORG_CLAIM")]
    pub login_oidc_org_claim: Option<String>,
    /// `oidc`: the ID token claim listing the user's roles (optional). [default: none]
    #[arg(long, env = "TOLLGATE_LOGIN_OIDC_ROLES_CLAIM")]
    pub login_oidc_roles_claim: Option<String>,
    /// `oidc`: scopes requested besides `openid` (comma-separated), e.g. for an org or roles
    /// claim the IdP only releases under a scope. [default: none]
    #[arg(long, env = "TOLLGATE_LOGIN_OIDC_SCOPES", value_delimiter = ',')]
    pub login_oidc_scopes: Option<Vec<String>>,
}

/// Validated login settings.
#[derive(Debug, Clone)]
pub enum LoginConfig {
    /// Nobody is asked. `explicit`: `--login none` was given (a warning at start), rather
    /// than defaulted (allowed for a loopback public URL only).
    None {
        /// Whether `--login none` was given.
        explicit: bool,
    },
    /// A trusted login header.
    Header(HeaderLogin),
    /// OpenID Connect.
    Oidc(OidcLogin),
}

/// `--login header`.
#[derive(Debug, Clone)]
pub struct HeaderLogin {
    /// Names the signed-in user.
    pub user: HeaderName,
    /// Names the user's org, when the proxy sends one.
    pub org: Option<HeaderName>,
    /// Lists the user's roles, when the proxy sends them.
    pub roles: Option<HeaderName>,
    /// Only these TCP peers may set the headers: anyone else could forge them.
    pub trusted_proxies: Vec<IpNet>,
}

/// `--login oidc`.
#[derive(Clone)]
pub struct OidcLogin {
    /// The issuer, exactly as discovery must report it.
    pub issuer: String,
    /// tollgate's client ID at the IdP (and the ID token's audience).
    pub client_id: String,
    /// The client secret read from `--login-oidc-client-secret-file`; `None` = public client.
    pub client_secret: Option<String>,
    /// The claim naming the user.
    pub user_claim: String,
    /// The claim naming the org, if any.
    pub org_claim: Option<String>,
    /// The claim listing roles, if any.
    pub roles_claim: Option<String>,
    /// Scopes requested besides `openid`.
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for OidcLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcLogin")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "MASKED"),
            )
            .field("user_claim", &self.user_claim)
            .field("org_claim", &self.org_claim)
            .field("roles_claim", &self.roles_claim)
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// The default `--trusted-proxies`: loopback.
pub fn default_trusted_proxies() -> Vec<IpNet> {
    // Both literals are valid networks.
    ["127.0.0.0/8", "::1/128"]
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Whether the host of `public_url` is loopback (`localhost`, 127.0.0.0/8, `::1`).
pub fn is_loopback_url(public_url: &str) -> bool {
    let Ok(uri) = public_url.parse::<http::Uri>() else {
        return false;
    };
    let Some(host) = uri.host() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Validates the login settings (flag/env over file), adding every problem to `errors`.
/// `consent_user_header` is the older `--consent-user-header` (implies `header`);
/// `public_url` is the URL users reach the web listener at (given or derived; `None` when it
/// is invalid, which is reported elsewhere).
pub fn resolve(
    over: &LoginOverrides,
    file: &FileConfig,
    consent_user_header: Option<&String>,
    public_url: Option<&str>,
    errors: &mut Vec<String>,
) -> LoginConfig {
    let pick = |a: &Option<String>, b: &Option<String>| a.clone().or(b.clone());
    let mut user_header = pick(&over.login_user_header, &file.login_user_header);
    let explicit = over.login.or(file.login);
    if let Some(alias) = consent_user_header {
        match (explicit, &user_header) {
            (None | Some(LoginMode::Header), None) => user_header = Some(alias.clone()),
            (None | Some(LoginMode::Header), Some(_)) => errors.push(
                "--consent-user-header is the older name of --login-user-header: give one".into(),
            ),
            (Some(_), _) => errors.push(
                "--consent-user-header implies --login header; it contradicts --login".into(),
            ),
        }
    }
    let mode = explicit.unwrap_or(if user_header.is_some() {
        LoginMode::Header
    } else {
        LoginMode::None
    });
    match mode {
        LoginMode::None => {
            let off_loopback = public_url.filter(|u| !is_loopback_url(u));
            if let (None, Some(public_url)) = (explicit, off_loopback) {
                errors.push(format!(
                    "--login: the public URL {public_url} is not loopback, so the pages need a \
                     sign-in: choose --login header or --login oidc (or --login none \
                     explicitly, for development only)"
                ));
            }
            LoginConfig::None {
                explicit: explicit.is_some(),
            }
        }
        LoginMode::Header => {
            let header = |flag: &str, v: Option<String>, errors: &mut Vec<String>| {
                let v = v?;
                match HeaderName::from_bytes(v.trim().as_bytes()) {
                    Ok(h) if v.len() <= MAX_NAME => Some(h),
                    _ => {
                        errors.push(format!("--{flag}: {v:?} is not a header name"));
                        None
                    }
                }
            };
            if user_header.is_none() {
                errors.push("--login header needs --login-user-header".into());
            }
            let user = header("login-user-header", user_header, errors);
            let org = header(
                "login-org-header",
                pick(&over.login_org_header, &file.login_org_header),
                errors,
            );
            let roles = header(
                "login-roles-header",
                pick(&over.login_roles_header, &file.login_roles_header),
                errors,
            );
            let trusted_proxies = match over
                .trusted_proxies
                .as_ref()
                .or(file.trusted_proxies.as_ref())
            {
                None => default_trusted_proxies(),
                Some(list) => parse_cidrs(list, errors),
            };
            match user {
                Some(user) => LoginConfig::Header(HeaderLogin {
                    user,
                    org,
                    roles,
                    trusted_proxies,
                }),
                // An error was reported; the value is never used.
                None => LoginConfig::None { explicit: false },
            }
        }
        LoginMode::Oidc => oidc(over, file, errors),
    }
}

/// `--trusted-proxies`: CIDRs, or bare addresses meaning one host.
pub(crate) fn parse_cidrs(list: &[String], errors: &mut Vec<String>) -> Vec<IpNet> {
    let mut out = Vec::new();
    for s in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        match s.parse::<IpNet>() {
            Ok(n) => out.push(n.trunc()),
            Err(_) => match s.parse::<IpAddr>() {
                Ok(ip) => out.push(IpNet::from(ip)),
                Err(_) => errors.push(format!(
                    "--trusted-proxies: {s:?} is not a CIDR like 10.0.0.0/8"
                )),
            },
        }
    }
    out
}

fn oidc(over: &LoginOverrides, file: &FileConfig, errors: &mut Vec<String>) -> LoginConfig {
    let pick = |a: &Option<String>, b: &Option<String>| {
        a.clone()
            .or(b.clone())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let issuer = pick(&over.login_oidc_issuer, &file.login_oidc_issuer);
    match &issuer {
        None => errors.push("--login oidc needs --login-oidc-issuer".into()),
        Some(i) => {
            if let Err(e) = validate_issuer(i) {
                errors.push(format!("--login-oidc-issuer: {e}"));
            }
        }
    }
    let client_id = pick(&over.login_oidc_client_id, &file.login_oidc_client_id);
    if client_id.is_none() {
        errors.push("--login oidc needs --login-oidc-client-id".into());
    }
    let client_secret = match over
        .login_oidc_client_secret_file
        .as_ref()
        .or(file.login_oidc_client_secret_file.as_ref())
    {
        None => None,
        Some(p) => match std::fs::read_to_string(p) {
            Ok(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Ok(_) => {
                errors.push(format!(
                    "--login-oidc-client-secret-file: {} is empty",
                    p.display()
                ));
                None
            }
            Err(e) => {
                errors.push(format!(
                    "--login-oidc-client-secret-file: {}: {e}",
                    p.display()
                ));
                None
            }
        },
    };
    let mut claim = |flag: &str, v: Option<String>| {
        let v = v?;
        if v.len() > MAX_NAME || v.chars().any(char::is_control) {
            errors.push(format!("--{flag}: {v:?} is not a claim name"));
            return None;
        }
        Some(v)
    };
    let user_claim = claim(
        "login-oidc-user-claim",
        pick(&over.login_oidc_user_claim, &file.login_oidc_user_claim),
    )
    .unwrap_or_else(|| "sub".to_string());
    let org_claim = claim(
        "login-oidc-org-claim",
        pick(&over.login_oidc_org_claim, &file.login_oidc_org_claim),
    );
    let roles_claim = claim(
        "login-oidc-roles-claim",
        pick(&over.login_oidc_roles_claim, &file.login_oidc_roles_claim),
    );
    let scopes: Vec<String> = over
        .login_oidc_scopes
        .clone()
        .or(file.login_oidc_scopes.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s != "openid")
        .collect();
    for s in &scopes {
        if s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\')
        {
            errors.push(format!("--login-oidc-scopes: {s:?} is not a scope"));
        }
    }
    match (issuer, client_id) {
        (Some(issuer), Some(client_id)) => LoginConfig::Oidc(OidcLogin {
            issuer,
            client_id,
            client_secret,
            user_claim,
            org_claim,
            roles_claim,
            scopes,
        }),
        // Errors were reported; the value is never used.
        _ => LoginConfig::None { explicit: false },
    }
}

/// An issuer is an `https` URL (or `http` on a loopback host, for tests and development)
/// without query or fragment.
fn validate_issuer(issuer: &str) -> Result<(), String> {
    let uri: http::Uri = issuer
        .parse()
        .map_err(|_| format!("{issuer:?} is not a URL"))?;
    if uri.authority().is_none() || uri.query().is_some() || issuer.contains('#') {
        return Err(format!(
            "{issuer:?} must be an absolute URL without query or fragment"
        ));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!("{issuer:?} must not contain user information"));
    }
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if is_loopback_url(issuer) => Ok(()),
        _ => Err(format!(
            "{issuer:?} must be an https URL (http only on a loopback host)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        over: LoginOverrides,
        alias: Option<&str>,
        url: &str,
    ) -> Result<LoginConfig, Vec<String>> {
        let mut errors = Vec::new();
        let alias = alias.map(str::to_string);
        let c = resolve(
            &over,
            &FileConfig::default(),
            alias.as_ref(),
            Some(url),
            &mut errors,
        );
        if errors.is_empty() {
            Ok(c)
        } else {
            Err(errors)
        }
    }

    #[test]
    fn implicit_none_only_on_loopback() {
        for url in [
            "http://127.0.0.1:8080",
            "http://localhost:1",
            "http://[::1]:2",
        ] {
            assert!(
                matches!(
                    run(LoginOverrides::default(), None, url),
                    Ok(LoginConfig::None { explicit: false })
                ),
                "{url}"
            );
        }
        for url in [
            "https://tollgate.example",
            "http://0.0.0.0:8080",
            "http://10.1.2.3",
        ] {
            let err = run(LoginOverrides::default(), None, url).unwrap_err();
            assert!(err[0].contains("not loopback"), "{err:?}");
            let explicit = LoginOverrides {
                login: Some(LoginMode::None),
                ..Default::default()
            };
            assert!(matches!(
                run(explicit, None, url),
                Ok(LoginConfig::None { explicit: true })
            ));
        }
    }

    #[test]
    fn consent_user_header_is_an_alias_of_header_login() {
        let c = run(
            LoginOverrides::default(),
            Some("X-Forwarded-User"),
            "https://t.example",
        )
        .unwrap();
        let LoginConfig::Header(h) = c else {
            panic!("{c:?}")
        };
        assert_eq!(h.user.as_str(), "x-forwarded-user");
        assert_eq!(h.trusted_proxies, default_trusted_proxies());
        let contradiction = LoginOverrides {
            login: Some(LoginMode::Oidc),
            ..Default::default()
        };
        assert!(run(contradiction, Some("X-User"), "http://127.0.0.1").is_err());
    }

    #[test]
    fn every_error_at_once() {
        let over = LoginOverrides {
            login: Some(LoginMode::Header),
            login_org_header: Some("bad header".into()),
            trusted_proxies: Some(vec!["10.0.0.0/8".into(), "nope".into(), "192.0.2.7".into()]),
            ..Default::default()
        };
        let err = run(over, None, "http://127.0.0.1").unwrap_err();
        assert_eq!(err.len(), 3, "{err:?}");
        let over = LoginOverrides {
            login: Some(LoginMode::Oidc),
            login_oidc_issuer: Some("http://idp.example".into()),
            login_oidc_client_secret_file: Some("/nonexistent/secret".into()),
            ..Default::default()
        };
        let err = run(over, None, "http://127.0.0.1").unwrap_err();
        assert_eq!(err.len(), 3, "{err:?}");
    }

    #[test]
    fn oidc_settings_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let secret = crate::config::write_test_file(dir.path(), "secret", "s3cret\n");
        let over = LoginOverrides {
            login: Some(LoginMode::Oidc),
            login_oidc_issuer: Some("https://idp.example/realms/x".into()),
            login_oidc_client_id: Some("tollgate".into()),
            login_oidc_client_secret_file: Some(secret),
            login_oidc_org_claim: Some("org".into()),
            ..Default::default()
        };
        let LoginConfig::Oidc(o) = run(over, None, "https://t.example").unwrap() else {
            panic!()
        };
        assert_eq!(o.user_claim, "sub");
        assert_eq!(o.org_claim.as_deref(), Some("org"));
        assert_eq!(o.client_secret.as_deref(), Some("s3cret"));
        assert!(!format!("{o:?}").contains("s3cret"));
    }

    #[test]
    fn file_keys_are_the_flags_names() {
        let file: FileConfig = toml::from_str(
            "login = \"header\"\nlogin_user_header = \"X-User\"\n\
             login_roles_header = \"X-Roles\"\ntrusted_proxies = [\"10.0.0.0/8\"]\n",
        )
        .unwrap();
        let mut errors = Vec::new();
        let c = resolve(
            &LoginOverrides::default(),
            &file,
            None,
            Some("https://t.example"),
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        let LoginConfig::Header(h) = c else {
            panic!("{c:?}")
        };
        assert_eq!(h.roles.unwrap().as_str(), "x-roles");
        assert_eq!(h.trusted_proxies[0].to_string(), "10.0.0.0/8");
        // A flag wins over the file.
        let over = LoginOverrides {
            login_user_header: Some("X-Other".into()),
            ..Default::default()
        };
        let c = resolve(&over, &file, None, Some("https://t.example"), &mut errors);
        let LoginConfig::Header(h) = c else {
            panic!("{c:?}")
        };
        assert_eq!(h.user.as_str(), "x-other");
    }

    #[test]
    fn trusted_proxies_parse() {
        let mut errors = Vec::new();
        let nets = parse_cidrs(&["10.1.2.3/8".into(), "::1".into()], &mut errors);
        assert!(errors.is_empty());
        assert_eq!(nets[0].to_string(), "10.0.0.0/8");
        assert_eq!(nets[1].to_string(), "::1/128");
    }
}
