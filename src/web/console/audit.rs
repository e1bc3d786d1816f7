//! The org's audit log in the console, `GET /admin/audit`: filters (user, app, action, time
//! range) in a GET form, newest first, [`PAGE`] events a page with a link to older ones
//! (`Store::query_audit` through `AppAdmin::query_audit`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::extract::State;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;

use super::{admin_error, console_page, field, param, query_value, staff, Role};
use crate::store::AuditQuery;
use crate::web::page::esc;
use crate::web::WebState;

/// Events a page.
const PAGE: usize = 50;

/// Days since 1970-01-01 of a civil date (proleptic Gregorian; H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A time filter as Unix seconds: `YYYY-MM-DD` (the day's first second, or its last when
/// `end`), `YYYY-MM-DDTHH:MM[:SS][Z]` in UTC, or Unix seconds.
pub(super) fn parse_time(s: &str, end: bool) -> Option<u64> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Some(n);
    }
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date, clock) = match s.split_once(['T', ' ']) {
        Some((d, c)) => (d, Some(c)),
        None => (s, None),
    };
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let secs = match clock {
        None if end => 86_399,
        None => 0,
        Some(c) => {
            let mut p = c.splitn(3, ':').map(|x| x.parse::<i64>().ok());
            let (h, mi) = (p.next()??, p.next()??);
            let sec = p.next().unwrap_or(Some(0))?;
            if !(0..24).contains(&h) || !(0..60).contains(&mi) || !(0..61).contains(&sec) {
                return None;
            }
            h * 3600 + mi * 60 + sec
        }
    };
    u64::try_from(days_from_civil(y, m, day) * 86_400 + secs).ok()
}

/// `GET /admin/audit?user=&app=&action=&since=&until=&before=`.
pub(super) async fn show(State(state): State<WebState>, parts: Parts) -> Response {
    let staff = or_refuse!(staff(&state, &parts, Role::Admin));
    let p = |k: &str| param(&parts, k);
    let mut errors = BTreeMap::new();
    let mut time = |k: &str, end: bool| {
        let v = p(k)?;
        let t = parse_time(&v, end);
        if t.is_none() {
            errors.insert(
                k.to_string(),
                "use YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)".to_string(),
            );
        }
        t
    };
    let (since, until) = (time("since", false), time("until", true));
    let query = AuditQuery {
        org: staff.caller.org.clone(),
        user: p("user"),
        app: p("app"),
        action: p("action"),
        since,
        until,
        before_seq: p("before").and_then(|b| b.parse().ok()),
        limit: PAGE,
    };
    let v = |k: &str| p(k).unwrap_or_default();
    let mut main = String::from("<form method=\"get\" action=\"/admin/audit\" class=\"row\">");
    for (name, label, hint) in [
        ("user", "User", "who acted, or whom it concerned"),
        ("app", "App", "app id"),
        (
            "action",
            "Action",
            "app.create, or app. for every app action",
        ),
        ("since", "From", "YYYY-MM-DD (UTC)"),
        ("until", "To", "YYYY-MM-DD (UTC)"),
    ] {
        let _ = write!(
            main,
            "<div>{}</div>",
            field(name, label, &v(name), hint, &errors)
        );
    }
    main.push_str("<div><button type=\"submit\">Filter</button></div></form>\n");
    if !errors.is_empty() {
        main.push_str("<p class=\"error\" role=\"alert\">Fix the time range to see events.</p>");
        let mut resp = console_page(&staff, "/admin/audit", "Audit log", &main);
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        return resp;
    }
    let events = match state.oauth.admin(&staff.caller).query_audit(&query).await {
        Ok(e) => e,
        Err(e) => return admin_error(&parts, e),
    };
    let _ = write!(
        main,
        "<div class=\"scroll\"><table><caption>Audit events of {}, newest first</caption><thead><tr>\
         <th scope=\"col\">Time (UTC)</th><th scope=\"col\">Actor</th><th scope=\"col\">Action</th>\
         <th scope=\"col\">App</th><th scope=\"col\">Detail</th></tr></thead><tbody>",
        esc(&query.org)
    );
    for e in &events {
        let _ = write!(
            main,
            "<tr><td>{}</td><td>{}</td><th scope=\"row\">{}</th><td>{}</td><td><code>{}</code></td></tr>",
            super::time(Some(e.at)),
            esc(&e.actor),
            esc(&e.action),
            esc(&e.target),
            esc(&e.detail.to_string()),
        );
    }
    if events.is_empty() {
        main.push_str("<tr><td colspan=\"5\">No events match.</td></tr>");
    }
    main.push_str("</tbody></table></div>");
    if let (true, Some(last)) = (events.len() >= PAGE, events.last()) {
        let mut q = String::new();
        for k in ["user", "app", "action", "since", "until"] {
            if let Some(x) = p(k) {
                let _ = write!(q, "{k}={}&", query_value(&x));
            }
        }
        let _ = write!(
            main,
            "<p><a href=\"/admin/audit?{}before={}\">Older events</a></p>",
            esc(&q),
            last.seq
        );
    }
    console_page(&staff, "/admin/audit", "Audit log", &main)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_utc() {
        assert_eq!(parse_time("1970-01-01", false), Some(0));
        assert_eq!(parse_time("1970-01-01", true), Some(86_399));
        assert_eq!(
            parse_time("2026-12-06T11:30:23Z", false),
            Some(1_796_556_623)
        );
        assert_eq!(parse_time("2026-12-06T11:30", false), Some(1_796_556_600));
        assert_eq!(parse_time("2000-03-01", false), Some(951_868_800));
        assert_eq!(parse_time("12345", false), Some(12345));
        for bad in [
            "2026-13-01",
            "yesterday",
            "2026-12-06T25:00",
            "1969-12-31",
            "",
        ] {
            assert_eq!(parse_time(bad, false), None, "{bad}");
        }
    }
}
