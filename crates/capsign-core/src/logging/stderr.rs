//! Log lines to stderr in batches, written by a thread of their own (native runtimes).

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::{LineSink, init_with};
use crate::settings::LogFormat;

/// How much may wait before a write.
const LOG_BATCH: usize = 64 * 1024;

/// Sets up logging; the returned guard flushes what is left when dropped (keep it until exit).
///
/// Lines are gathered in a shared buffer and written to stderr in batches by a thread of
/// their own: when 64 KiB are waiting, and every quarter of a second; operator lines
/// ([`super::say`]) and the rest at exit are written at once. A request never waits for a write to
/// stderr unless 1 MiB of lines is already waiting (stderr drains slower than lines come:
/// then the request's thread writes them, so lines are not dropped); a process killed with
/// SIGKILL loses at most the last quarter of a second.
///
/// With `emf` (Lambda), the access lines of a JSON log are also CloudWatch
/// embedded-metric-format documents (see `AccessLayer`).
pub fn init(format: LogFormat, emf: bool) -> Flushed {
    let stderr = BatchedStderr::default();
    let writer = stderr.clone();
    let _ = std::thread::Builder::new()
        .name("capsign-log-writer".into())
        .spawn(move || writer.write_batches());
    init_with(format, emf, Arc::new(stderr.clone()));
    Flushed(stderr)
}

/// Flushes the log buffer when dropped (at the end of `main`).
pub struct Flushed(BatchedStderr);

impl Drop for Flushed {
    fn drop(&mut self) {
        self.0.flush_now();
    }
}

/// Log lines waiting for their batched write to stderr, and the thread that writes them.
#[derive(Clone, Default)]
struct BatchedStderr(Arc<Batch>);

#[derive(Default)]
struct Batch {
    /// The lines not written yet.
    pending: Mutex<Vec<u8>>,
    /// Held while writing to stderr, so batches go out in order (taken before `pending`).
    writing: Mutex<()>,
    /// Wakes the writer when a batch is full.
    full: Condvar,
}

/// How much may wait before a request's thread writes it out itself: the writer thread is
/// behind (stderr is slow to drain), and logs are not dropped.
const MAX_PENDING: usize = 16 * LOG_BATCH;

/// How long a line may wait for its write when the batch does not fill.
const LOG_INTERVAL: Duration = Duration::from_millis(250);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Lines are appended whole under the lock: after a panic the buffer is still sound.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl BatchedStderr {
    /// Writes everything waiting now (at exit, after each Lambda invocation, for operator
    /// lines), after any batch being written.
    fn flush_now(&self) {
        let _writing = lock(&self.0.writing);
        write_out(&mut lock(&self.0.pending));
    }

    /// Appends one whole line (a `\n` is added); written at once when `now` is set, else by
    /// the writer thread.
    fn line(&self, line: &str, now: bool) {
        if now {
            let _writing = lock(&self.0.writing);
            let mut pending = lock(&self.0.pending);
            pending.extend_from_slice(line.as_bytes());
            pending.push(b'\n');
            write_out(&mut pending);
            return;
        }
        self.append(line.as_bytes(), true);
    }

    /// Appends bytes for the writer thread; wakes it when a batch fills (once, as the batch
    /// crosses the mark) and writes here only when it has fallen [`MAX_PENDING`] behind.
    fn append(&self, bytes: &[u8], newline: bool) {
        let mut pending = lock(&self.0.pending);
        let before = pending.len();
        pending.extend_from_slice(bytes);
        if newline {
            pending.push(b'\n');
        }
        let after = pending.len();
        drop(pending);
        if before < LOG_BATCH && after >= LOG_BATCH {
            self.0.full.notify_one();
        }
        if after >= MAX_PENDING {
            self.flush_now();
        }
    }

    /// The writer thread: every [`LOG_INTERVAL`], or when a batch fills, takes what waits
    /// (leaving an empty buffer with room in its place) and writes it outside the lock, so
    /// a request never waits for stderr.
    fn write_batches(&self) {
        let mut spare: Vec<u8> = Vec::with_capacity(LOG_BATCH * 2);
        loop {
            {
                let pending = lock(&self.0.pending);
                if pending.len() < LOG_BATCH {
                    // Woken early or not, what waits is written below.
                    drop(self.0.full.wait_timeout(pending, LOG_INTERVAL));
                }
            }
            let _writing = lock(&self.0.writing);
            let mut batch =
                std::mem::replace(&mut *lock(&self.0.pending), std::mem::take(&mut spare));
            write_out(&mut batch);
            spare = batch;
        }
    }
}

/// Writes `pending` to stderr and empties it (a failed write of logs drops them).
fn write_out(pending: &mut Vec<u8>) {
    use std::io::Write as _;
    if !pending.is_empty() {
        let _ = std::io::stderr().write_all(pending);
        pending.clear();
    }
}

impl LineSink for BatchedStderr {
    fn line(&self, line: &str, now: bool) {
        BatchedStderr::line(self, line, now);
    }

    fn flush(&self) {
        self.flush_now();
    }
}
