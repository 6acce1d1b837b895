//! Function log lines: written in batches by one writer thread, and announced to followers
//! (`wisp logs -f`) as soon as they are stored.
//!
//! Invocations only push onto a channel. The writer thread sleeps a few milliseconds after
//! the first line of a batch instead of waking for each one, so a busy node pays one
//! thread wake-up and one SQLite transaction per batch, not per request.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{oneshot, watch};
use wisp_core::{LogLine, UsageRecord};
use wisp_store::Store;

/// How long the writer gathers lines before it writes them.
const BATCH_WINDOW: Duration = Duration::from_millis(10);
const MAX_BATCH: usize = 10_000;
const PRUNE_EVERY: Duration = Duration::from_secs(60);

enum Msg {
    Lines(Vec<LogLine>),
    Usage(UsageRecord),
    Flush(oneshot::Sender<()>),
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Where invocations send their log lines.
#[derive(Clone)]
pub struct LogSink {
    tx: mpsc::Sender<Msg>,
    written: watch::Receiver<u64>,
}

/// How many lines of each function are kept, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub lines_per_function: usize,
    pub max_age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            lines_per_function: 10_000,
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Gets every batch of usage records once it is stored (e.g. to export them as spans).
/// Runs on the writer thread: it must not block.
pub type UsageListener = Box<dyn FnMut(&[UsageRecord]) + Send>;

impl LogSink {
    /// Starts the writer thread, which also applies `retention` every minute.
    pub fn start(store: Arc<dyn Store>, retention: Retention) -> LogSink {
        Self::start_with(store, retention, None)
    }

    /// [`LogSink::start`], handing each stored batch of usage records to `listener`.
    pub fn start_with(
        store: Arc<dyn Store>,
        retention: Retention,
        listener: Option<UsageListener>,
    ) -> LogSink {
        let (tx, rx) = mpsc::channel::<Msg>();
        let (written_tx, written) = watch::channel(0u64);
        std::thread::Builder::new()
            .name("wisp-logs".into())
            .spawn(move || writer(rx, store, retention, written_tx, listener))
            .expect("starting the log writer thread");
        LogSink { tx, written }
    }

    pub fn send(&self, lines: Vec<LogLine>) {
        if !lines.is_empty() {
            let _ = self.tx.send(Msg::Lines(lines));
        }
    }

    /// Records a metered invocation (written with the next batch of lines).
    pub fn record_usage(&self, record: UsageRecord) {
        let _ = self.tx.send(Msg::Usage(record));
    }

    /// Waits until every line and record sent before this call is stored.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Changes each time a batch of lines has been stored: followers wait on it.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.written.clone()
    }
}

fn writer(
    rx: mpsc::Receiver<Msg>,
    store: Arc<dyn Store>,
    retention: Retention,
    written: watch::Sender<u64>,
    mut listener: Option<UsageListener>,
) {
    let mut next_prune = Instant::now() + PRUNE_EVERY;
    let mut batch: Vec<LogLine> = Vec::new();
    let mut usage: Vec<UsageRecord> = Vec::new();
    let mut flushes = Vec::new();
    loop {
        // Wait for the first message, at most until the next pruning.
        let first = match rx.recv_timeout(next_prune.saturating_duration_since(Instant::now())) {
            Ok(msg) => Some(msg),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        if let Some(first) = first {
            let flushing = matches!(first, Msg::Flush(_));
            let take = |msg: Msg,
                        batch: &mut Vec<LogLine>,
                        usage: &mut Vec<UsageRecord>,
                        flushes: &mut Vec<_>| match msg {
                Msg::Lines(lines) => batch.extend(lines),
                Msg::Usage(record) => usage.push(record),
                Msg::Flush(done) => flushes.push(done),
            };
            take(first, &mut batch, &mut usage, &mut flushes);
            if !flushing {
                // Let more lines arrive without waking for each of them.
                std::thread::sleep(BATCH_WINDOW);
            }
            while batch.len() < MAX_BATCH && usage.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(msg) => take(msg, &mut batch, &mut usage, &mut flushes),
                    Err(_) => break,
                }
            }
            if !usage.is_empty() {
                if let Err(e) = store.append_usage(&usage) {
                    tracing::error!("writing {} usage records: {e}", usage.len());
                }
                if let Some(listen) = listener.as_mut() {
                    listen(&usage);
                }
                usage.clear();
            }
            if !batch.is_empty() {
                match store.append_logs(&batch) {
                    Ok(()) => {
                        written.send_modify(|n| *n += 1);
                    }
                    Err(e) => tracing::error!("writing {} function log lines: {e}", batch.len()),
                }
                batch.clear();
            }
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
        }
        if Instant::now() >= next_prune {
            next_prune = Instant::now() + PRUNE_EVERY;
            let cutoff = now_ms() - retention.max_age.as_millis() as i64;
            match store.prune_logs(retention.lines_per_function, cutoff) {
                Ok(n) if n > 0 => tracing::debug!("pruned {n} log lines"),
                Ok(_) => {}
                Err(e) => tracing::warn!("pruning function logs: {e}"),
            }
        }
    }
}
