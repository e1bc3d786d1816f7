//! `[[limit]]` blocks as files write them: valid ones compile with their scopes, every
//! mistake is reported at its line, names are unique across files.

use super::*;

fn errors(src: &str) -> Vec<String> {
    match PolicySet::from_sources(&sources(&[("l.toml", src)])) {
        Ok(_) => Vec::new(),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn limits_compile_with_their_scopes() {
    let s = set(&[(
        "l.toml",
        "[[limit]]\nname = \"gh\"\nkey = \"user\"\nrate = \"600/m\"\nburst = 20\norgs = [\"acme\"]\nhosts = [\"*.github.com\", \"github.com\"]\n",
    )]);
    let gh = host("api.github.com");
    let limits: Vec<_> = s.limits_for("acme", &gh).collect();
    assert_eq!(limits.len(), 1);
    let l = limits[0];
    assert_eq!(
        (&*l.name, l.key, l.count, l.burst),
        ("gh", LimitKey::User, 600, 20)
    );
    assert_eq!(l.at.to_string(), "l.toml:1");
    assert_eq!(l.describe(), "600/m, burst 20, per user");
    assert_eq!(s.limits_for("acme", &host("github.com")).count(), 1);
    assert_eq!(s.limits_for("globex", &gh).count(), 0);
    assert_eq!(s.limits_for("acme", &host("github.com.evil")).count(), 0);
    assert_eq!(s.limits_for("acme", &host("140.82.112.3")).count(), 0);
    // Burst defaults to the rate's count.
    let s = set(&[(
        "l.toml",
        "[[limit]]\nname = \"o\"\nkey = \"org\"\nrate = \"10/s\"\n",
    )]);
    let l = s.limits_for("any", &gh).next().unwrap();
    assert_eq!((l.count, l.burst, l.per.as_secs()), (10, 10, 1));
}

#[test]
fn limit_mistakes_are_reported_at_their_line() {
    let cases: &[(&str, &str)] = &[
        (
            "[[limit]]\nname = \"Bad\"\nkey = \"org\"\nrate = \"1/s\"\n",
            "l.toml:2: invalid limit name \"Bad\"",
        ),
        (
            "[[limit]]\nname = \"a\"\nkey = \"ip\"\nrate = \"1/s\"\n",
            "l.toml:3: invalid key \"ip\"",
        ),
        (
            "[[limit]]\nname = \"a\"\nkey = \"org\"\nrate = \"1/d\"\n",
            "l.toml:4: invalid rate \"1/d\"",
        ),
        (
            "[[limit]]\nname = \"a\"\nkey = \"org\"\nrate = \"0/s\"\n",
            "l.toml:4: invalid rate \"0/s\": N must be",
        ),
        (
            "[[limit]]\nname = \"a\"\nkey = \"org\"\nrate = \"1/s\"\nburst = 0\n",
            "l.toml:5: invalid burst 0",
        ),
        (
            "[[limit]]\nname = \"a\"\nkey = \"org\"\nrate = \"1/s\"\nhosts = [\"*\"]\n",
            "l.toml:5: host pattern \"*\"",
        ),
        (
            "[[limit]]\nname = \"a\"\nkey = \"org\"\nrate = \"1/s\"\norgs = []\n",
            "l.toml:5: empty `orgs` list",
        ),
        (
            "[[limit]]\nname = \"a\"\nkey = \"org\"\n",
            "l.toml:1: missing field `rate`",
        ),
        (
            "[[limit]]\nname = \"a\"\nkey = \"org\"\nrate = \"1/s\"\nper = 3\n",
            "l.toml:5: unknown field `per`",
        ),
        (
            "limit = 3\n",
            "l.toml:1: `limit` must be an array of tables",
        ),
    ];
    for (src, want) in cases {
        let e = errors(src);
        assert!(
            e.len() == 1 && e[0].starts_with(want),
            "{src:?}: want {want:?}, got {e:#?}"
        );
    }
    let one = "[[limit]]\nname = \"a\"\nkey = \"org\"\nrate = \"1/s\"\n";
    let e = PolicySet::from_sources(&sources(&[("a.toml", one), ("b.toml", one)])).unwrap_err();
    assert_eq!(
        e.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["b.toml:1: duplicate limit name \"a\": already defined at a.toml:1"]
    );
}
