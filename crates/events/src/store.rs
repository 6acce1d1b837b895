//! The durable store: one SQLite file, one writer thread, group commit.
//!
//! Every call (reads included) is a job sent to the writer thread. The thread takes all the
//! jobs waiting at that moment, runs each in its own savepoint inside one `BEGIN IMMEDIATE`
//! transaction, commits once (with `synchronous=FULL` in WAL mode, the commit fsyncs the
//! WAL) and only then answers the callers. So a call that returned `Ok` is on disk, a failed
//! job leaves no trace (its savepoint is rolled back) without failing the others, and N
//! concurrent enqueues cost one fsync rather than N.
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use jiff::Timestamp;
use rand::Rng;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use crate::clock::{Clock, dur_ms, ms};
use crate::error::{EventError, Result};

/// Where an event goes: an async invocation of a function, or a message in a named queue.
/// Also the shape of on-success / on-failure destinations.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Function(String),
    Queue(String),
}

/// Backoff between retries of a failed async invocation: retry `n` (1-based) waits
/// `base * 2^(n-1)`, capped at `max_delay`, times a random factor in `[1 - jitter, 1 + jitter]`
/// (jitter spreads retries of a burst of failures so they do not come back together).
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max_delay: Duration,
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            jitter: 0.5,
        }
    }
}

impl RetryPolicy {
    /// The delay before retry `n` (1-based) before jitter.
    pub fn nominal(&self, n: u32) -> Duration {
        let factor = 2u32.saturating_pow(n.saturating_sub(1));
        self.base.saturating_mul(factor).min(self.max_delay)
    }

    /// The range a jittered delay for retry `n` falls in.
    pub fn range(&self, n: u32) -> (Duration, Duration) {
        let d = self.nominal(n);
        let j = self.jitter.clamp(0.0, 1.0);
        (d.mul_f64(1.0 - j), d.mul_f64(1.0 + j))
    }

    pub(crate) fn delay(&self, n: u32) -> Duration {
        let (lo, hi) = self.range(n);
        if hi <= lo {
            return lo;
        }
        rand::rng().random_range(lo..=hi)
    }
}

/// Store-wide settings.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub retry: RetryPolicy,
    /// Lease of a claimed async invocation when [`crate::EnqueueOptions::lease`] is not set:
    /// if it is not completed by then (the node died, the dispatcher hung), it is delivered
    /// again. Must exceed the function's timeout.
    pub default_lease: Duration,
    /// A lease that runs out does not use up a retry (the function may never have run), but
    /// an event whose leases ran out this many times is dead-lettered: it probably kills
    /// the node.
    pub max_lease_expiries: u32,
    /// How long succeeded async invocations are kept (for status look-ups) before
    /// [`EventStore::maintenance`] deletes them.
    pub done_retention: Duration,
    /// Largest payload or message body accepted.
    pub max_payload: usize,
    /// Region in ARNs and envelopes.
    pub region: String,
    /// Most jobs committed in one transaction.
    pub max_batch: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            default_lease: Duration::from_secs(15 * 60 + 30),
            max_lease_expiries: 3,
            done_retention: Duration::from_secs(3600),
            max_payload: 1024 * 1024,
            region: "us-east-1".into(),
            max_batch: 2048,
        }
    }
}

/// What [`EventStore::maintenance`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Succeeded async invocations older than `done_retention`.
    pub done_deleted: usize,
    /// Queue messages older than their queue's retention period.
    pub messages_expired: usize,
}

/// The durable event store. Cheap to clone; the writer thread stops (after finishing what
/// it was given) when the last clone is dropped.
#[derive(Clone)]
pub struct EventStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    jobs: Option<mpsc::Sender<Box<dyn Job>>>,
    writer: Option<JoinHandle<()>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: Arc<StoreConfig>,
    pub(crate) wake: Arc<Wake>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// Wake-ups for waiters, bumped after a commit that made something deliverable.
#[derive(Default)]
pub(crate) struct Wake {
    pub(crate) invocations: watch::Sender<u64>,
    commits: AtomicU64,
    queues: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl Wake {
    pub(crate) fn queue(&self, name: &str) -> watch::Receiver<u64> {
        let mut map = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(name.to_string()).or_default().subscribe()
    }

    fn bump_queue(&self, name: &str) {
        let map = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = map.get(name) {
            tx.send_modify(|n| *n += 1);
        }
    }
}

/// Per-transaction state handed to jobs.
pub(crate) struct Ctx {
    pub(crate) config: Arc<StoreConfig>,
    pub(crate) woke_invocations: bool,
    pub(crate) woke_queues: Vec<String>,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS invocations (
    seq              INTEGER PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    function         TEXT NOT NULL,
    payload          BLOB NOT NULL,
    -- 0 pending, 1 leased (in flight), 2 succeeded, 3 dead (the function's DLQ)
    state            INTEGER NOT NULL,
    -- ms since the epoch. pending: deliver from; leased: lease expiry; else: finished at
    due_at           INTEGER NOT NULL,
    -- accepted at; the event's age is measured from here (a redrive resets it)
    created_at       INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0, -- deliveries so far = Claimed::attempt
    failures         INTEGER NOT NULL DEFAULT 0, -- deliveries that ended in a function error
    expiries         INTEGER NOT NULL DEFAULT 0, -- leases that ran out
    throttles        INTEGER NOT NULL DEFAULT 0,
    max_retries      INTEGER NOT NULL,
    max_age_ms       INTEGER NOT NULL,
    lease_ms         INTEGER NOT NULL,
    on_success       TEXT,
    on_failure       TEXT,
    traceparent      TEXT,
    first_attempt_at INTEGER,
    last_attempt_at  INTEGER,
    last_error       TEXT,
    dead_reason      TEXT
);
CREATE INDEX IF NOT EXISTS invocations_due ON invocations (due_at, seq) WHERE state < 2;
-- Fair claiming: each function's oldest due events, function by function.
CREATE INDEX IF NOT EXISTS invocations_due_by_function ON invocations (function, due_at, seq) WHERE state < 2;
CREATE INDEX IF NOT EXISTS invocations_dead ON invocations (function, seq) WHERE state = 3;
CREATE INDEX IF NOT EXISTS invocations_done ON invocations (due_at) WHERE state = 2;

CREATE TABLE IF NOT EXISTS queues (
    name              TEXT PRIMARY KEY,
    visibility_ms     INTEGER NOT NULL,
    retention_ms      INTEGER NOT NULL,
    dead_letter       TEXT,
    max_receive_count INTEGER,
    created_at        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    seq              INTEGER PRIMARY KEY,
    queue            TEXT NOT NULL,
    id               TEXT NOT NULL UNIQUE,
    body             TEXT NOT NULL,
    attributes       TEXT NOT NULL,   -- JSON: message attributes given to send
    sent_at          INTEGER NOT NULL,
    visible_at       INTEGER NOT NULL,
    receive_count    INTEGER NOT NULL DEFAULT 0,
    first_receive_at INTEGER,
    receipt          TEXT UNIQUE,     -- handle of the latest receive
    source_queue     TEXT             -- set while the message sits in a dead-letter queue
);
CREATE INDEX IF NOT EXISTS messages_visible ON messages (queue, visible_at, seq);

CREATE TABLE IF NOT EXISTS schedules (
    name      TEXT PRIMARY KEY,
    last_tick INTEGER NOT NULL        -- ms; ticks at or before it never fire again
);
"#;

impl EventStore {
    /// Opens (creating if needed) the store at `path`. Blocking: call it at start-up.
    pub fn open(
        path: impl AsRef<Path>,
        clock: Arc<dyn Clock>,
        config: StoreConfig,
    ) -> Result<Self> {
        let conn = Connection::open(path.as_ref())?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(EventError::Storage(format!(
                "could not enable WAL (journal_mode={mode})"
            )));
        }
        // FULL: the WAL is fsynced at every commit, so a returned call survives power loss.
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA busy_timeout=10000;")?;
        conn.execute_batch(SCHEMA)?;
        conn.set_prepared_statement_cache_capacity(64);
        let config = Arc::new(config);
        let wake = Arc::new(Wake::default());
        let (tx, rx) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("wisp-events".into())
            .spawn({
                let (config, wake) = (config.clone(), wake.clone());
                move || writer_loop(conn, rx, config, wake)
            })
            .map_err(|e| EventError::Storage(format!("starting the writer thread: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                jobs: Some(tx),
                writer: Some(writer),
                clock,
                config,
                wake,
            }),
        })
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// Transactions committed since `open`: with group commit, far fewer than calls made
    /// (a metric: calls / commits is the batching factor).
    pub fn commits(&self) -> u64 {
        self.inner.wake.commits.load(Ordering::Relaxed)
    }

    /// Enqueues an event for `target` and returns once it is durable. For a queue target
    /// only `opts.id` is used (as the message id).
    pub async fn enqueue(
        &self,
        target: Target,
        payload: &[u8],
        opts: crate::EnqueueOptions,
    ) -> Result<crate::EventId> {
        match target {
            Target::Function(f) => self.enqueue_invocation(&f, payload, opts).await,
            Target::Queue(q) => {
                let body = std::str::from_utf8(payload).map_err(|_| {
                    EventError::InvalidOption("a queue message body must be UTF-8 text".into())
                })?;
                let id = opts.id.unwrap_or_default();
                self.send_with_id(&q, body, Default::default(), id).await?;
                Ok(id)
            }
        }
    }

    /// Deletes succeeded async invocations past `done_retention` and queue messages past
    /// their queue's retention. Run it now and then (the dispatcher does, every minute).
    pub async fn maintenance(&self) -> Result<MaintenanceReport> {
        let now = ms(self.inner.clock.now());
        self.call(move |conn, ctx| {
            let done_deleted = conn.execute(
                "DELETE FROM invocations WHERE state = 2 AND due_at <= ?1",
                [now - dur_ms(ctx.config.done_retention)],
            )?;
            let messages_expired = conn.execute(
                "DELETE FROM messages WHERE seq IN (SELECT m.seq FROM messages m JOIN queues q ON q.name = m.queue
                 WHERE m.sent_at <= ?1 - q.retention_ms)",
                [now],
            )?;
            Ok(MaintenanceReport { done_deleted, messages_expired })
        })
        .await
    }

    /// Runs `f` on the writer thread inside the next group-commit transaction and returns
    /// its result once that transaction is committed.
    pub(crate) async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &mut Ctx) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let jobs = self.inner.jobs.as_ref().ok_or(EventError::Closed)?;
        jobs.send(Box::new(Call { f, tx }))
            .map_err(|_| EventError::Closed)?;
        rx.await.map_err(|_| EventError::Closed)?
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }
}

pub(crate) trait Job: Send {
    fn run(self: Box<Self>, conn: &Connection, ctx: &mut Ctx) -> Box<dyn Reply>;
    fn fail(self: Box<Self>, error: &str);
}

pub(crate) trait Reply: Send {
    /// Answers the caller; `commit_error` is set if the transaction did not commit.
    fn send(self: Box<Self>, commit_error: Option<&str>);
}

struct Call<F, T> {
    f: F,
    tx: oneshot::Sender<Result<T>>,
}

struct Answer<T> {
    result: Result<T>,
    tx: oneshot::Sender<Result<T>>,
}

impl<F, T> Job for Call<F, T>
where
    T: Send + 'static,
    F: FnOnce(&Connection, &mut Ctx) -> Result<T> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection, ctx: &mut Ctx) -> Box<dyn Reply> {
        let Call { f, tx } = *self;
        let result = match conn.execute_batch("SAVEPOINT job") {
            Err(e) => Err(e.into()),
            Ok(()) => {
                let r = f(conn, ctx);
                let end = if r.is_ok() {
                    "RELEASE job"
                } else {
                    // Undo this job's partial writes; the others in the batch still commit.
                    "ROLLBACK TO job; RELEASE job"
                };
                match conn.execute_batch(end) {
                    Ok(()) => r,
                    Err(e) => Err(e.into()),
                }
            }
        };
        Box::new(Answer { result, tx })
    }

    fn fail(self: Box<Self>, error: &str) {
        let _ = self.tx.send(Err(EventError::Storage(error.to_string())));
    }
}

impl<T: Send> Reply for Answer<T> {
    fn send(self: Box<Self>, commit_error: Option<&str>) {
        let result = match commit_error {
            None => self.result,
            Some(e) => Err(EventError::Storage(e.to_string())),
        };
        let _ = self.tx.send(result);
    }
}

fn writer_loop(
    conn: Connection,
    rx: mpsc::Receiver<Box<dyn Job>>,
    config: Arc<StoreConfig>,
    wake: Arc<Wake>,
) {
    // Blocks for the first job, then takes whatever else queued up while the previous
    // commit was fsyncing: that is the whole group-commit mechanism, no timers.
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < config.max_batch.max(1) {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let e = e.to_string();
            tracing::error!(error = %e, "event store: cannot begin a transaction");
            jobs.into_iter().for_each(|j| j.fail(&e));
            continue;
        }
        let mut ctx = Ctx {
            config: config.clone(),
            woke_invocations: false,
            woke_queues: Vec::new(),
        };
        let replies: Vec<_> = jobs.into_iter().map(|j| j.run(&conn, &mut ctx)).collect();
        match conn.execute_batch("COMMIT") {
            Ok(()) => {
                wake.commits.fetch_add(1, Ordering::Relaxed);
                replies.into_iter().for_each(|r| r.send(None));
                if ctx.woke_invocations {
                    wake.invocations.send_modify(|n| *n += 1);
                }
                ctx.woke_queues.sort();
                ctx.woke_queues.dedup();
                for q in &ctx.woke_queues {
                    wake.bump_queue(q);
                }
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                let e = e.to_string();
                tracing::error!(error = %e, "event store: commit failed");
                replies.into_iter().for_each(|r| r.send(Some(&e)));
            }
        }
    }
}

/// Refuses names that would be awkward in ARNs, URLs and logs.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 80
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(EventError::InvalidName {
            name: name.to_string(),
            reason: "use 1-80 characters: letters, digits, '-', '_' or '.'",
        })
    }
}

pub(crate) fn check_size(config: &StoreConfig, size: usize) -> Result<()> {
    if size > config.max_payload {
        return Err(EventError::PayloadTooLarge {
            size,
            limit: config.max_payload,
        });
    }
    Ok(())
}

/// The schedule's persisted last tick.
pub(crate) fn last_tick(conn: &Connection, name: &str) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT last_tick FROM schedules WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?)
}

pub(crate) fn set_last_tick(conn: &Connection, name: &str, tick: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO schedules (name, last_tick) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET last_tick = excluded.last_tick",
    )?
    .execute(params![name, tick])?;
    Ok(())
}
