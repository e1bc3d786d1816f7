//! Log output. The access log writes one line per request; a `write` syscall per line on the
//! request path costs about a quarter of the proxy's throughput, and a channel to a writer
//! thread costs more (a wake-up per line). So lines are appended to a shared buffer, and a
//! writer thread of its own writes it out when it passes [`FLUSH_BYTES`] (the appending
//! thread wakes it, once per buffer, never writes itself) or every [`FLUSH_INTERVAL`],
//! whichever comes first (Envoy's access log buffers the same way), and on drop of the
//! [`FlushGuard`]. No line is ever dropped: when stderr cannot keep up and [`MAX_BACKLOG`]
//! bytes wait, appending waits for the writer (counted: [`stalls`],
//! `tollgate_log_writer_stalls_total`).
//!
//! [`init`] sets up the subscriber: text without ANSI colours unless stderr is a terminal, or
//! JSON lines ([`json`]), in which the start-up banner and a command's final error are JSON
//! too ([`Output`]).

pub mod json;

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
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

/// Buffered bytes that wake the writer at once.
pub const FLUSH_BYTES: usize = 64 * 1024;
/// Longest a line waits in the buffer.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Most bytes waiting for the writer; beyond, appending waits (lines are never dropped).
pub const MAX_BACKLOG: usize = 16 * 1024 * 1024;

/// Times a log line had to wait for the writer because [`MAX_BACKLOG`] bytes were pending.
static STALLS: AtomicU64 = AtomicU64::new(0);

/// How many times appending a log line waited for stderr ([`MAX_BACKLOG`]).
pub fn stalls() -> u64 {
    STALLS.load(Ordering::Relaxed)
}

/// The buffer and the writer thread's signals.
struct Shared {
    buf: Mutex<Vec<u8>>,
    /// Wakes the writer: the buffer passed [`FLUSH_BYTES`], or the guard is dropped.
    full: Condvar,
    /// Wakes appenders waiting for room ([`MAX_BACKLOG`]).
    drained: Condvar,
    /// Where lines go (stderr). Held from taking the buffer until it is written, so two
    /// writes (the writer thread's and the guard's last one) cannot reach it out of order.
    out: Mutex<Box<dyn Write + Send>>,
    /// [`MAX_BACKLOG`], smaller in tests.
    max_backlog: usize,
    stop: AtomicBool,
}

/// A buffered, shareable stderr for `tracing_subscriber::fmt().with_writer(...)`.
#[derive(Clone)]
pub struct BufferedStderr {
    shared: Arc<Shared>,
}

/// Stops the writer thread and writes what is still buffered when dropped.
pub struct FlushGuard {
    out: BufferedStderr,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl BufferedStderr {
    /// The writer and its guard; the writer thread runs until the guard is dropped.
    pub fn new() -> (BufferedStderr, FlushGuard) {
        Self::to(Box::new(io::stderr()), MAX_BACKLOG)
    }

    /// [`new`](Self::new), writing to `out` with at most `max_backlog` bytes pending.
    fn to(out: Box<dyn Write + Send>, max_backlog: usize) -> (BufferedStderr, FlushGuard) {
        let out = BufferedStderr {
            shared: Arc::new(Shared {
                buf: Mutex::new(Vec::with_capacity(FLUSH_BYTES * 2)),
                full: Condvar::new(),
                drained: Condvar::new(),
                out: Mutex::new(out),
                max_backlog,
                stop: AtomicBool::new(false),
            }),
        };
        let w = out.clone();
        let _ = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || w.writer_loop());
        (out.clone(), FlushGuard { out })
    }

    /// The writer thread: waits for a full buffer or the interval, then writes.
    fn writer_loop(&self) {
        let s = &self.shared;
        while !s.stop.load(Ordering::Relaxed) {
            {
                let b = lock(&s.buf);
                if b.len() < FLUSH_BYTES.min(s.max_backlog) {
                    let _ = s.full.wait_timeout(b, FLUSH_INTERVAL);
                }
            }
            self.flush_now();
        }
    }

    /// Writes out whatever is buffered.
    pub fn flush_now(&self) {
        let s = &self.shared;
        let mut out = lock(&s.out);
        let pending = {
            let mut b = lock(&s.buf);
            if b.is_empty() {
                return;
            }
            std::mem::replace(&mut *b, Vec::with_capacity(FLUSH_BYTES * 2))
        };
        s.drained.notify_all();
        let _ = out.write_all(&pending);
        let _ = out.flush();
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        let s = &self.out.shared;
        s.stop.store(true, Ordering::Relaxed);
        s.full.notify_one();
        self.out.flush_now();
    }
}

impl Write for BufferedStderr {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let s = &self.shared;
        let mut b = lock(&s.buf);
        if b.len() >= s.max_backlog && !s.stop.load(Ordering::Relaxed) {
            STALLS.fetch_add(1, Ordering::Relaxed);
            s.full.notify_one();
            while b.len() >= s.max_backlog {
                b = s.drained.wait(b).unwrap_or_else(|p| p.into_inner());
            }
        }
        let before = b.len();
        b.extend_from_slice(data);
        // Wake the writer once, when this line takes the buffer past the mark.
        if before < FLUSH_BYTES && b.len() >= FLUSH_BYTES {
            s.full.notify_one();
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

    /// A sink that is slow to write and keeps everything.
    #[derive(Clone, Default)]
    struct Slow(Arc<Mutex<Vec<u8>>>);

    impl Write for Slow {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            std::thread::sleep(Duration::from_millis(2));
            lock(&self.0).extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn no_line_is_lost_when_the_writer_falls_behind() {
        let sink = Slow::default();
        let stalls_before = stalls();
        let (out, guard) = BufferedStderr::to(Box::new(sink.clone()), 4096);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut out = out.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        out.write_all(format!("{t} {i:05} {}\n", "x".repeat(40)).as_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(lock(&sink.0).clone()).unwrap();
        for t in 0..4 {
            let mine: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(&format!("{t} ")))
                .collect();
            assert_eq!(mine.len(), 5_000, "thread {t}");
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "thread {t}'s lines in order"
            );
        }
        assert!(
            stalls() > stalls_before,
            "the 4 KiB backlog made appenders wait"
        );
    }

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
