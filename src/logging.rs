//! Log output. The access log writes one line per request; a `write` syscall per line on the
//! request path costs about a quarter of the proxy's throughput, and a channel to a writer
//! thread costs more (a wake-up per line). So lines are appended to a shared buffer that is
//! written out when it passes [`FLUSH_BYTES`] or every [`FLUSH_INTERVAL`], whichever comes
//! first (Envoy's access log buffers the same way), and on drop of the [`FlushGuard`].
//!
//! [`init`] sets up the subscriber: text without ANSI colours unless stderr is a terminal, or
//! JSON lines ([`json`]), in which the start-up banner and a command's final error are JSON
//! too ([`Output`]).

pub mod json;

use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable key=value lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Buffered bytes that trigger an immediate write.
pub const FLUSH_BYTES: usize = 64 * 1024;
/// Longest a line waits in the buffer.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// A buffered, shareable stderr for `tracing_subscriber::fmt().with_writer(...)`.
#[derive(Clone)]
pub struct BufferedStderr {
    buf: Arc<Mutex<Vec<u8>>>,
    /// Held from taking the buffer until it is written, so two flushes (the periodic one
    /// and a full buffer's) cannot reach stderr out of order.
    writing: Arc<Mutex<()>>,
}

/// Flushes the buffer when dropped and stops the periodic flusher.
pub struct FlushGuard {
    out: BufferedStderr,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl BufferedStderr {
    /// The writer and its guard; a background thread flushes every [`FLUSH_INTERVAL`].
    pub fn new() -> (BufferedStderr, FlushGuard) {
        let out = BufferedStderr {
            buf: Arc::new(Mutex::new(Vec::with_capacity(FLUSH_BYTES * 2))),
            writing: Arc::new(Mutex::new(())),
        };
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (w, s) = (out.clone(), stop.clone());
        let _ = std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || {
                while !s.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(FLUSH_INTERVAL);
                    w.flush_now();
                }
            });
        (out.clone(), FlushGuard { out, stop })
    }

    /// Writes out whatever is buffered.
    pub fn flush_now(&self) {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let pending = {
            let mut b = match self.buf.lock() {
                Ok(b) => b,
                Err(poisoned) => poisoned.into_inner(),
            };
            if b.is_empty() {
                return;
            }
            std::mem::replace(&mut *b, Vec::with_capacity(FLUSH_BYTES * 2))
        };
        let _ = io::stderr().lock().write_all(&pending);
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.out.flush_now();
    }
}

impl Write for BufferedStderr {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let full = {
            let mut b = match self.buf.lock() {
                Ok(b) => b,
                Err(poisoned) => poisoned.into_inner(),
            };
            b.extend_from_slice(data);
            b.len() >= FLUSH_BYTES
        };
        if full {
            self.flush_now();
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BufferedStderr {
    type Writer = BufferedStderr;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Sets up logging to stderr with the `TOLLGATE_LOG` filter (else `default_filter`). Returns
/// the guard of the background writer, which must live until the process exits so buffered
/// lines are flushed.
pub fn init(format: LogFormat, default_filter: &str) -> FlushGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let (writer, guard) = BufferedStderr::new();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match format {
        // Spans are not serialized: the connection span's fields are on the access line
        // already.
        LogFormat::Json => builder.event_format(json::JsonLines).try_init(),
        // Colours only for a person at a terminal: piped into a file or journald, escape
        // codes are noise (and https://no-color.org holds at a terminal too).
        LogFormat::Text => {
            let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
            builder
                .with_ansi(io::stderr().is_terminal() && !no_color)
                .try_init()
        }
    };
    guard
}

/// Lines that are not `tracing` events (the banner on stdout, the error a command exits
/// with on stderr), written in the log format.
#[derive(Clone, Copy, Debug)]
pub struct Output(pub LogFormat);

impl Output {
    /// A banner line for stdout: as is, or a JSON object whose `message` is the line.
    pub fn banner(self, line: &str) -> String {
        match self.0 {
            LogFormat::Text => line.to_owned(),
            LogFormat::Json => json::line("INFO", "tollgate::banner", line),
        }
    }

    /// The final error line for stderr.
    pub fn error(self, message: &str) -> String {
        match self.0 {
            LogFormat::Text => format!("error: {message}"),
            LogFormat::Json => json::line("ERROR", "tollgate", message),
        }
    }
}

/// An error and its causes, `outer: inner: ...`, each cause once: a message that already
/// ends with (or contains) its cause's text — a `thiserror` message with `{source}` in it, a
/// context repeating the error — is not followed by that cause again.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading {path}: {source}")]
    struct Read {
        path: &'static str,
        source: std::io::Error,
    }

    #[test]
    fn error_chains_name_each_cause_once() {
        let inner = std::io::Error::new(io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(Read {
            path: "/x",
            source: inner,
        })
        .context("loading the key");
        assert_eq!(
            error_chain(e.as_ref()),
            "loading the key: reading /x: no such file"
        );
        assert_eq!(
            format!("{e:#}"),
            "loading the key: reading /x: no such file: no such file"
        );
    }
}
