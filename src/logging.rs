//! Log output. The access log writes one line per request; a `write` syscall per line on the
//! request path costs about a quarter of the proxy's throughput, and a channel to a writer
//! thread costs more (a wake-up per line). So lines are appended to a shared buffer that is
//! written out when it passes [`FLUSH_BYTES`] or every [`FLUSH_INTERVAL`], whichever comes
//! first (Envoy's access log buffers the same way), and on drop of the [`FlushGuard`].

use std::io::{self, Write};
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
