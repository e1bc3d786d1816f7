//! The JSON line format of `--log-format json`: one object per event, `timestamp` (RFC 3339,
//! UTC), `level`, `target`, `message` and the event's fields at the top level. A field the
//! event declares but does not record (an `Option` that is `None`) is written as `null`, so
//! the access line keeps its fixed set of keys without `"-"` placeholders. Events from the
//! `log` crate (dependencies) carry their own target and no `log.*` fields.

use std::cell::RefCell;
use std::fmt::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter of `--log-format json`. It writes straight into the subscriber's
/// line buffer: no allocation per line unless a `log` crate event names its target, and one
/// date formatting per second per thread ([`push_timestamp`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonLines;

/// Fields are written as they are visited; `seen` remembers which (by the field's index in
/// its callsite's set: the first 128), for the `null`s.
struct Fields<'a, 'w> {
    /// The line being built.
    out: &'a mut Writer<'w>,
    seen: u128,
    /// `log.target` of an event from the `log` crate, which replaces the target.
    log_target: Option<String>,
}

impl Fields<'_, '_> {
    fn key(&mut self, field: &Field) -> bool {
        let name = field.name();
        if name.starts_with("log.") {
            return false;
        }
        self.seen |= 1u128.checked_shl(field.index() as u32).unwrap_or(0);
        let _ = self.out.write_char(',');
        let _ = push_str(self.out, name);
        let _ = self.out.write_char(':');
        true
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "log.target" {
            self.log_target = Some(value.to_owned());
        }
        if self.key(field) {
            let _ = push_str(self.out, value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.key(field) {
            let _ = self.out.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.key(field) {
            let _ = write!(self.out, "{value}");
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.key(field) {
            let _ = write!(self.out, "{value}");
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.key(field) {
            let _ = if value.is_finite() {
                write!(self.out, "{value}")
            } else {
                self.out.write_str("null")
            };
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "log.target" {
            self.log_target = Some(format!("{value:?}"));
        }
        if self.key(field) {
            let _ = self.out.write_char('"');
            let _ = write!(Escaping(&mut *self.out), "{value:?}");
            let _ = self.out.write_char('"');
        }
    }
}

/// Writes what it is given as the inside of a JSON string.
struct Escaping<'a, W: Write>(&'a mut W);

impl<W: Write> Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut start = 0;
        for (i, b) in s.bytes().enumerate() {
            let escaped = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f => "",
                _ => continue,
            };
            // Every byte escaped is ASCII, so `i` is a character boundary.
            self.0.write_str(&s[start..i])?;
            if escaped.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escaped)?;
            }
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

/// Appends `s` as a JSON string.
fn push_str(out: &mut impl Write, s: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaping(&mut *out).write_str(s)?;
    out.write_char('"')
}

/// Appends the current time as a JSON string, RFC 3339 in UTC with microseconds. The part up
/// to the seconds is formatted once a second per thread.
fn push_timestamp(out: &mut impl Write) -> fmt::Result {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs {
            let t = i64::try_from(secs)
                .ok()
                .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            cached.1.clear();
            let _ = write!(
                cached.1,
                "\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
            cached.0 = secs;
        }
        out.write_str(&cached.1)
    })?;
    write!(out, ".{:06}Z\"", now.subsec_micros())
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        writer.write_str("{\"timestamp\":")?;
        push_timestamp(&mut writer)?;
        writer.write_str(",\"level\":")?;
        push_str(&mut writer, meta.level().as_str())?;
        let mut fields = Fields {
            out: &mut writer,
            seen: 0,
            log_target: None,
        };
        event.record(&mut fields);
        let Fields {
            seen, log_target, ..
        } = fields;
        for (i, f) in meta.fields().iter().enumerate() {
            let name = f.name();
            if i < 128 && seen & (1 << i) == 0 && !name.starts_with("log.") {
                writer.write_char(',')?;
                push_str(&mut writer, name)?;
                writer.write_str(":null")?;
            }
        }
        writer.write_str(",\"target\":")?;
        push_str(&mut writer, log_target.as_deref().unwrap_or(meta.target()))?;
        writer.write_str("}\n")
    }
}

/// One line of JSON for a message that is not a `tracing` event (the start-up banner, the
/// error a command exits with), in the same shape as the events.
pub fn line(level: &str, target: &str, message: &str) -> String {
    let mut out = String::with_capacity(message.len() + 96);
    out.push_str("{\"timestamp\":");
    let _ = push_timestamp(&mut out);
    out.push_str(",\"level\":");
    let _ = push_str(&mut out, level);
    out.push_str(",\"message\":");
    let _ = push_str(&mut out, message);
    out.push_str(",\"target\":");
    let _ = push_str(&mut out, target);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_and_lines_parse() {
        let l = line("INFO", "tollgate", "a \"b\" \\ \n\u{1} é");
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["message"], "a \"b\" \\ \n\u{1} é");
        assert_eq!(v["level"], "INFO");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'), "{l}");
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let mut out = String::new();
        push_timestamp(&mut out).unwrap();
        let t: String = serde_json::from_str(&out).unwrap();
        let now = time::OffsetDateTime::now_utc();
        let day = format!(
            "{:04}-{:02}-{:02}T",
            now.year(),
            u8::from(now.month()),
            now.day()
        );
        assert!(t.starts_with(&day), "{t} on {day}");
        let shape: String = t
            .chars()
            .map(|c| if c.is_ascii_digit() { '9' } else { c })
            .collect();
        assert_eq!(shape, "9999-99-99T99:99:99.999999Z");
    }
}
