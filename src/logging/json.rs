//! The JSON line format of `--log-format json`: one object per event, `timestamp` (RFC 3339,
//! UTC), `level`, `target`, `message` and the event's fields at the top level. A field the
//! event declares but does not record (an `Option` that is `None`) is written as `null`, so
//! the access line keeps its fixed set of keys without `"-"` placeholders. Events from the
//! `log` crate (dependencies) carry their own target and no `log.*` fields.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter of `--log-format json`.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonLines;

/// Fields are written as they are visited; `seen` remembers which, for the `null`s.
struct Fields<'a> {
    /// The line being built.
    out: &'a mut String,
    /// Names recorded so far (an event has a few dozen fields at most).
    seen: Vec<&'static str>,
    /// `log.target` of an event from the `log` crate, which replaces the target.
    log_target: Option<String>,
}

impl Fields<'_> {
    fn key(&mut self, field: &Field) -> bool {
        let name = field.name();
        if name.starts_with("log.") {
            return false;
        }
        self.seen.push(name);
        self.out.push(',');
        push_str(self.out, name);
        self.out.push(':');
        true
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "log.target" {
            self.log_target = Some(value.to_owned());
        }
        if self.key(field) {
            push_str(self.out, value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.key(field) {
            self.out.push_str(if value { "true" } else { "false" });
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
            if value.is_finite() {
                let _ = write!(self.out, "{value}");
            } else {
                self.out.push_str("null");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "log.target" {
            self.log_target = Some(format!("{value:?}"));
        }
        if self.key(field) {
            push_str(self.out, &format!("{value:?}"));
        }
    }
}

/// Appends `s` as a JSON string.
fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
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
        let mut time = String::with_capacity(32);
        SystemTime.format_time(&mut Writer::new(&mut time))?;
        let mut line = String::with_capacity(512);
        line.push_str("{\"timestamp\":");
        push_str(&mut line, &time);
        line.push_str(",\"level\":");
        push_str(&mut line, meta.level().as_str());
        let mut fields = Fields {
            out: &mut line,
            seen: Vec::with_capacity(meta.fields().len()),
            log_target: None,
        };
        event.record(&mut fields);
        let Fields {
            seen, log_target, ..
        } = fields;
        for f in meta.fields() {
            let name = f.name();
            if !name.starts_with("log.") && !seen.contains(&name) {
                line.push(',');
                push_str(&mut line, name);
                line.push_str(":null");
            }
        }
        line.push_str(",\"target\":");
        push_str(&mut line, log_target.as_deref().unwrap_or(meta.target()));
        line.push_str("}\n");
        writer.write_str(&line)
    }
}

/// One line of JSON for a message that is not a `tracing` event (the start-up banner, the
/// error a command exits with), in the same shape as the events.
pub fn line(level: &str, target: &str, message: &str) -> String {
    let mut time = String::with_capacity(32);
    let _ = SystemTime.format_time(&mut Writer::new(&mut time));
    let mut out = String::with_capacity(message.len() + 96);
    out.push_str("{\"timestamp\":");
    push_str(&mut out, &time);
    out.push_str(",\"level\":");
    push_str(&mut out, level);
    out.push_str(",\"message\":");
    push_str(&mut out, message);
    out.push_str(",\"target\":");
    push_str(&mut out, target);
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
}
