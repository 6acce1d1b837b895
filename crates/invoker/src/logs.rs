//! Function log lines: written in batches by one background task, and announced to
//! followers (`wisp logs -f`) as soon as they are stored.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};
use wisp_core::LogLine;
use wisp_store::Store;

enum Msg {
    Lines(Vec<LogLine>),
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
    tx: mpsc::UnboundedSender<Msg>,
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

impl LogSink {
    /// Starts the writer task (and the retention task) on the current tokio runtime.
    pub fn start(store: Arc<dyn Store>, retention: Retention) -> LogSink {
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
        let (written_tx, written) = watch::channel(0u64);
        let writer_store = store.clone();
        tokio::spawn(async move {
            let mut batch: Vec<LogLine> = Vec::new();
            let mut flushes = Vec::new();
            while let Some(msg) = rx.recv().await {
                let mut next = Some(msg);
                while let Some(msg) = next.take() {
                    match msg {
                        Msg::Lines(lines) => batch.extend(lines),
                        Msg::Flush(done) => flushes.push(done),
                    }
                    if batch.len() < 5000 {
                        next = rx.try_recv().ok();
                    }
                }
                if batch.is_empty() {
                    flushes.drain(..).for_each(|f| {
                        let _ = f.send(());
                    });
                    continue;
                }
                let store = writer_store.clone();
                let lines = std::mem::take(&mut batch);
                let res = tokio::task::spawn_blocking(move || store.append_logs(&lines)).await;
                match res {
                    Ok(Ok(())) => {
                        written_tx.send_modify(|n| *n += 1);
                    }
                    Ok(Err(e)) => tracing::error!("writing function logs: {e}"),
                    Err(e) => tracing::error!("writing function logs: {e}"),
                }
                flushes.drain(..).for_each(|f| {
                    let _ = f.send(());
                });
            }
        });
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let store = store.clone();
                let cutoff = now_ms() - retention.max_age.as_millis() as i64;
                let res = tokio::task::spawn_blocking(move || {
                    store.prune_logs(retention.lines_per_function, cutoff)
                })
                .await;
                match res {
                    Ok(Ok(n)) if n > 0 => tracing::debug!("pruned {n} log lines"),
                    Ok(Err(e)) => tracing::warn!("pruning function logs: {e}"),
                    _ => {}
                }
            }
        });
        LogSink { tx, written }
    }

    pub fn send(&self, lines: Vec<LogLine>) {
        if !lines.is_empty() {
            let _ = self.tx.send(Msg::Lines(lines));
        }
    }

    /// Waits until every line sent before this call is stored.
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
