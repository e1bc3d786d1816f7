//! Who may revoke what, and what a request becomes.

use super::*;

const NOW: u64 = 1_700_000_000;

fn caller(org: &str, role: &str) -> Caller {
    Caller {
        org: org.into(),
        user: "u".into(),
        roles: vec![role.into()],
        exp: u64::MAX,
        jti: None,
        iat: None,
    }
}

fn request(jti: Option<&str>, org: Option<&str>, user: Option<&str>) -> RevokeRequest {
    RevokeRequest {
        jti: jti.map(Into::into),
        org: org.map(Into::into),
        user: user.map(Into::into),
        before: None,
    }
}

fn decide(by: Revoker<'_>, r: RevokeRequest) -> Result<TokenRevocation, String> {
    validate(r, NOW)
        .and_then(|v| authorize(by, v, NOW))
        .map_err(|e| e.to_string())
}

#[test]
fn admins_revoke_in_their_org_operators_and_offline_anywhere() {
    let admin = caller("acme", "admin");
    let operator = caller("ops", "operator");
    let user = caller("acme", "");
    let ttl = MAX_TOKEN_TTL.as_secs();
    let jti = |org: Option<&str>| RevokedTokens::Jti {
        jti: "j".into(),
        org: org.map(Into::into),
    };
    let alice = |org: &str| RevokedTokens::User {
        org: org.into(),
        user: "alice".into(),
        before: NOW,
    };
    let cases: Vec<(&str, Revoker, RevokeRequest, Result<RevokedTokens, &str>)> = vec![
        (
            "admin jti: own org",
            Revoker::Caller(&admin),
            request(Some("j"), None, None),
            Ok(jti(Some("acme"))),
        ),
        (
            "admin user: own org",
            Revoker::Caller(&admin),
            request(None, None, Some("alice")),
            Ok(alice("acme")),
        ),
        (
            "admin, other org",
            Revoker::Caller(&admin),
            request(None, Some("beta"), Some("alice")),
            Err("own org"),
        ),
        (
            "operator jti: any org",
            Revoker::Caller(&operator),
            request(Some("j"), None, None),
            Ok(jti(None)),
        ),
        (
            "operator, one org",
            Revoker::Caller(&operator),
            request(None, Some("beta"), Some("alice")),
            Ok(alice("beta")),
        ),
        (
            "operator user without org",
            Revoker::Caller(&operator),
            request(None, None, Some("alice")),
            Err("need org"),
        ),
        (
            "offline jti",
            Revoker::Offline,
            request(Some("j"), Some("acme"), None),
            Ok(jti(Some("acme"))),
        ),
        (
            "no role",
            Revoker::Caller(&user),
            request(Some("j"), None, None),
            Err("admin or the operator"),
        ),
        (
            "both",
            Revoker::Offline,
            request(Some("j"), Some("acme"), Some("alice")),
            Err("not both"),
        ),
        (
            "neither",
            Revoker::Offline,
            request(None, Some("acme"), None),
            Err("give jti"),
        ),
        (
            "bad user",
            Revoker::Offline,
            request(None, Some("acme"), Some("a\nb")),
            Err("user:"),
        ),
    ];
    for (name, by, r, want) in cases {
        match (decide(by, r), want) {
            (Ok(got), Ok(want)) => {
                assert_eq!(got.target, want, "{name}");
                let from = match want {
                    RevokedTokens::Jti { .. } => NOW,
                    RevokedTokens::User { before, .. } => before,
                };
                assert_eq!(got.expires_at, from + ttl, "{name}");
            }
            (Err(got), Err(want)) => assert!(got.contains(want), "{name}: {got}"),
            (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn before_is_rfc3339_or_seconds_and_never_in_the_future() {
    let with = |v: serde_json::Value| RevokeRequest {
        before: Some(v),
        ..request(None, Some("acme"), Some("alice"))
    };
    let before = |r: Result<TokenRevocation, String>| match r.map(|r| r.target) {
        Ok(RevokedTokens::User { before, .. }) => Ok(before),
        other => Err(format!("{other:?}")),
    };
    assert_eq!(
        before(decide(Revoker::Offline, with(json(NOW - 5)))),
        Ok(NOW - 5)
    );
    assert_eq!(
        before(decide(
            Revoker::Offline,
            with("2023-11-14T22:13:20Z".into())
        )),
        Ok(1_700_000_000)
    );
    let future = decide(Revoker::Offline, with(json(NOW + 3600))).unwrap_err();
    assert!(future.contains("future"), "{future}");
    let junk = decide(Revoker::Offline, with("yesterday".into())).unwrap_err();
    assert!(junk.contains("RFC 3339"), "{junk}");
}

fn json(n: u64) -> serde_json::Value {
    serde_json::Value::from(n)
}
