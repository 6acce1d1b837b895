//! Async invocations: enqueue, claim with a lease, complete, retry, dead-letter, redrive.
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::clock::{dur_ms, ms, ts};
use crate::envelope::{Condition, DestinationRecord};
use crate::error::{EventError, Result};
use crate::store::{Ctx, EventStore, Target, check_name, check_size};

/// The stable id of an event (a UUIDv7, so ids sort by creation time). It never changes
/// across retries, lease expiries or redrives: together with [`Claimed::attempt`] it lets a
/// function detect a duplicate delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub Uuid);

impl EventId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for EventId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// Per-event delivery settings (Lambda's `EventInvokeConfig` plus a few of ours).
#[derive(Clone, Debug)]
pub struct EnqueueOptions {
    /// Retries after a function error: 0, 1 or 2 (Lambda's range and default).
    pub max_retries: u32,
    /// Events older than this are dead-lettered instead of run: 60 s to 6 h.
    pub max_event_age: Duration,
    /// How long a claimed attempt may run before it is delivered again; `None` = the
    /// store's `default_lease`. Set it above the function's timeout.
    pub lease: Option<Duration>,
    /// Do not deliver before `now + delay`.
    pub delay: Duration,
    /// Where a [`DestinationRecord`] goes after a success / once the event is dead-lettered.
    pub on_success: Option<Target>,
    pub on_failure: Option<Target>,
    /// W3C trace context of the request that enqueued the event.
    pub traceparent: Option<String>,
    /// Caller-chosen id, for idempotent enqueues: enqueuing an id that already exists does
    /// nothing and returns it.
    pub id: Option<EventId>,
}

impl Default for EnqueueOptions {
    fn default() -> Self {
        Self {
            max_retries: 2,
            max_event_age: Duration::from_secs(6 * 3600),
            lease: None,
            delay: Duration::ZERO,
            on_success: None,
            on_failure: None,
            traceparent: None,
            id: None,
        }
    }
}

/// An async invocation handed to a dispatcher, leased until `lease_until`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    pub id: EventId,
    pub function: String,
    pub payload: Vec<u8>,
    /// 1 for the first delivery; more means a retry or a re-delivery after a lost lease.
    pub attempt: u32,
    pub enqueued_at: Timestamp,
    pub lease_until: Timestamp,
    pub traceparent: Option<String>,
}

/// How one attempt ended, as the dispatcher reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvokeOutcome {
    Success {
        response: Vec<u8>,
    },
    /// A function error (crash, timeout, error response): uses up one retry.
    Failure {
        error: String,
        response: Option<Vec<u8>>,
    },
    /// The function never ran (concurrency limit): retried later without using a retry,
    /// bounded by the maximum event age, like Lambda.
    Throttled,
}

/// What [`EventStore::complete`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    Succeeded,
    /// Will be delivered again at `next_attempt_at`; `retry` is 1 for the first retry.
    Retrying {
        retry: u32,
        next_attempt_at: Timestamp,
    },
    /// Throttled: delivered again at `next_attempt_at`.
    Requeued {
        next_attempt_at: Timestamp,
    },
    DeadLettered {
        reason: DeadReason,
    },
    /// The attempt's lease ran out and the event was delivered again (or finished)
    /// meanwhile: this result is ignored.
    LeaseLost,
}

/// Why an event is in the dead-letter queue (Lambda's destination conditions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeadReason {
    RetriesExhausted,
    EventAgeExceeded,
}

impl DeadReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RetriesExhausted => "RetriesExhausted",
            Self::EventAgeExceeded => "EventAgeExceeded",
        }
    }

    fn parse(s: &str) -> Self {
        if s == "EventAgeExceeded" {
            Self::EventAgeExceeded
        } else {
            Self::RetriesExhausted
        }
    }
}

impl fmt::Display for DeadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event in a function's dead-letter queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: EventId,
    pub function: String,
    pub payload: Vec<u8>,
    pub reason: DeadReason,
    pub last_error: Option<String>,
    /// Deliveries made.
    pub attempts: u32,
    pub enqueued_at: Timestamp,
    pub first_attempt_at: Option<Timestamp>,
    pub last_attempt_at: Option<Timestamp>,
    pub dead_at: Timestamp,
}

/// Which dead letters [`EventStore::redrive`] sends back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redrive {
    All,
    Ids(Vec<EventId>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventState {
    Pending,
    InFlight,
    Succeeded,
    Dead(DeadReason),
}

/// The status of one async invocation (for an API's "get invocation").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventInfo {
    pub id: EventId,
    pub function: String,
    pub state: EventState,
    pub attempts: u32,
    pub enqueued_at: Timestamp,
    /// Pending: next delivery; in flight: lease expiry; otherwise: when it finished.
    pub due_at: Timestamp,
    pub last_error: Option<String>,
}

const PENDING: i64 = 0;
const LEASED: i64 = 1;
const SUCCEEDED: i64 = 2;
const DEAD: i64 = 3;

/// The columns every query below reads, in [`Ev::from_row`]'s order.
const COLS: &str = "seq, id, function, payload, state, due_at, created_at, attempts, failures, expiries, \
    throttles, max_retries, max_age_ms, lease_ms, on_success, on_failure, traceparent, \
    first_attempt_at, last_attempt_at, last_error, dead_reason";

struct Ev {
    seq: i64,
    id: String,
    function: String,
    payload: Vec<u8>,
    state: i64,
    due_at: i64,
    created_at: i64,
    attempts: i64,
    failures: i64,
    expiries: i64,
    throttles: i64,
    max_retries: i64,
    max_age_ms: i64,
    lease_ms: i64,
    on_success: Option<String>,
    on_failure: Option<String>,
    traceparent: Option<String>,
    first_attempt_at: Option<i64>,
    last_attempt_at: Option<i64>,
    last_error: Option<String>,
    dead_reason: Option<String>,
}

impl Ev {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            seq: r.get(0)?,
            id: r.get(1)?,
            function: r.get(2)?,
            payload: r.get(3)?,
            state: r.get(4)?,
            due_at: r.get(5)?,
            created_at: r.get(6)?,
            attempts: r.get(7)?,
            failures: r.get(8)?,
            expiries: r.get(9)?,
            throttles: r.get(10)?,
            max_retries: r.get(11)?,
            max_age_ms: r.get(12)?,
            lease_ms: r.get(13)?,
            on_success: r.get(14)?,
            on_failure: r.get(15)?,
            traceparent: r.get(16)?,
            first_attempt_at: r.get(17)?,
            last_attempt_at: r.get(18)?,
            last_error: r.get(19)?,
            dead_reason: r.get(20)?,
        })
    }

    fn event_id(&self) -> EventId {
        self.id.parse().unwrap_or(EventId(Uuid::nil()))
    }

    fn dead_letter(&self) -> DeadLetter {
        DeadLetter {
            id: self.event_id(),
            function: self.function.clone(),
            payload: self.payload.clone(),
            reason: DeadReason::parse(self.dead_reason.as_deref().unwrap_or_default()),
            last_error: self.last_error.clone(),
            attempts: self.attempts as u32,
            enqueued_at: ts(self.created_at),
            first_attempt_at: self.first_attempt_at.map(ts),
            last_attempt_at: self.last_attempt_at.map(ts),
            dead_at: ts(self.due_at),
        }
    }
}

fn load(conn: &Connection, id: &str) -> Result<Option<Ev>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLS} FROM invocations WHERE id = ?1"))?
        .query_row([id], Ev::from_row)
        .optional()?)
}

/// Inserts an async invocation (shared by enqueue, schedules and destinations).
pub(crate) fn insert(
    conn: &Connection,
    ctx: &mut Ctx,
    now: i64,
    function: &str,
    payload: &[u8],
    opts: &EnqueueOptions,
) -> Result<EventId> {
    check_name(function)?;
    check_size(&ctx.config, payload.len())?;
    if opts.max_retries > 2 {
        return Err(EventError::InvalidOption(format!(
            "max_retries is 0, 1 or 2, not {}",
            opts.max_retries
        )));
    }
    if !(Duration::from_secs(60)..=Duration::from_secs(6 * 3600)).contains(&opts.max_event_age) {
        return Err(EventError::InvalidOption(
            "max_event_age is between 60 s and 6 h".into(),
        ));
    }
    for d in opts.on_success.iter().chain(&opts.on_failure) {
        let (Target::Function(n) | Target::Queue(n)) = d;
        check_name(n)?;
    }
    let dest = |t: &Option<Target>| {
        t.as_ref()
            .map(|t| serde_json::to_string(t).unwrap_or_default())
    };
    let id = opts.id.unwrap_or_default();
    let lease = opts.lease.unwrap_or(ctx.config.default_lease);
    conn.prepare_cached(
        "INSERT OR IGNORE INTO invocations (id, function, payload, state, due_at, created_at, max_retries,
             max_age_ms, lease_ms, on_success, on_failure, traceparent)
         VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        id.to_string(),
        function,
        payload,
        now + dur_ms(opts.delay),
        now,
        opts.max_retries,
        dur_ms(opts.max_event_age),
        dur_ms(lease).max(1),
        dest(&opts.on_success),
        dest(&opts.on_failure),
        opts.traceparent,
    ])?;
    ctx.woke_invocations = true;
    Ok(id)
}

/// Moves `ev` to the dead-letter queue and delivers its on-failure destination record.
fn kill(
    conn: &Connection,
    ctx: &mut Ctx,
    now: i64,
    ev: &Ev,
    reason: DeadReason,
    error: &str,
    response: Option<&[u8]>,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE invocations SET state = 3, due_at = ?2, dead_reason = ?3, last_error = ?4 WHERE seq = ?1",
    )?
    .execute(params![ev.seq, now, reason.as_str(), error])?;
    tracing::warn!(event = %ev.id, function = %ev.function, %reason, error, "async invocation dead-lettered");
    let condition = match reason {
        DeadReason::RetriesExhausted => Condition::RetriesExhausted,
        DeadReason::EventAgeExceeded => Condition::EventAgeExceeded,
    };
    destination(
        conn,
        ctx,
        now,
        ev,
        ev.on_failure.as_deref(),
        condition,
        response,
    )
}

/// Delivers a Lambda destination record for `ev` to `dest` (a JSON [`Target`]), in the
/// same transaction as the state change that produced it: exactly one record per outcome.
fn destination(
    conn: &Connection,
    ctx: &mut Ctx,
    now: i64,
    ev: &Ev,
    dest: Option<&str>,
    condition: Condition,
    response: Option<&[u8]>,
) -> Result<()> {
    let Some(dest) = dest.and_then(|d| serde_json::from_str::<Target>(d).ok()) else {
        return Ok(());
    };
    let record = DestinationRecord::new(
        &ev.id,
        &ctx.config.region,
        &ev.function,
        condition,
        ev.attempts as u32,
        &ev.payload,
        response,
        ts(now),
    );
    let body = serde_json::to_vec(&record).unwrap_or_default();
    match &dest {
        Target::Function(f) => {
            insert(conn, ctx, now, f, &body, &EnqueueOptions::default())?;
        }
        Target::Queue(q) => {
            if !crate::queues::insert_message(
                conn,
                ctx,
                now,
                q,
                &String::from_utf8_lossy(&body),
                &Default::default(),
                EventId::new(),
            )? {
                // Losing the record must not lose (roll back) the outcome itself.
                tracing::warn!(event = %ev.id, queue = %q, "destination queue does not exist; record dropped");
            }
        }
    }
    Ok(())
}

impl EventStore {
    /// Enqueues an async invocation of `function`; returns once it is durable.
    pub async fn enqueue_invocation(
        &self,
        function: &str,
        payload: &[u8],
        opts: EnqueueOptions,
    ) -> Result<EventId> {
        let (function, payload, now) = (function.to_string(), payload.to_vec(), ms(self.now()));
        self.call(move |conn, ctx| insert(conn, ctx, now, &function, &payload, &opts))
            .await
    }

    /// Hands out up to `limit` due events (oldest due first within each function, every
    /// function with due events getting its share), each leased for its lease
    /// time: an event that is not completed before its lease ends is delivered again, with
    /// the same id and `attempt + 1`. Events past their maximum age, or whose leases ran
    /// out too often, are dead-lettered here instead.
    pub async fn claim(&self, limit: usize) -> Result<Vec<Claimed>> {
        let now = ms(self.now());
        self.call(move |conn, ctx| {
            let mut out = Vec::new();
            while out.len() < limit {
                let evs = due_fairly(conn, now, limit - out.len())?;
                if evs.is_empty() {
                    break;
                }
                for mut ev in evs {
                    if ev.state == LEASED {
                        // The previous attempt's lease ran out: the node died or hung.
                        ev.expiries += 1;
                        ev.last_error = Some(format!(
                            "attempt {} did not complete within its lease (the node stopped or the invocation hung)",
                            ev.attempts
                        ));
                        conn.prepare_cached("UPDATE invocations SET expiries = ?2, last_error = ?3 WHERE seq = ?1")?
                            .execute(params![ev.seq, ev.expiries, ev.last_error])?;
                        if ev.expiries > i64::from(ctx.config.max_lease_expiries) {
                            let error = ev.last_error.clone().unwrap_or_default();
                            kill(conn, ctx, now, &ev, DeadReason::RetriesExhausted, &error, None)?;
                            continue;
                        }
                    }
                    if now - ev.created_at > ev.max_age_ms {
                        let error = ev.last_error.clone().unwrap_or_else(|| "not delivered within the maximum event age".into());
                        kill(conn, ctx, now, &ev, DeadReason::EventAgeExceeded, &error, None)?;
                        continue;
                    }
                    let lease_until = now + ev.lease_ms;
                    conn.prepare_cached(
                        "UPDATE invocations SET state = 1, attempts = attempts + 1, due_at = ?2,
                             first_attempt_at = coalesce(first_attempt_at, ?3), last_attempt_at = ?3 WHERE seq = ?1",
                    )?
                    .execute(params![ev.seq, lease_until, now])?;
                    out.push(Claimed {
                        id: ev.event_id(),
                        function: ev.function,
                        payload: ev.payload,
                        attempt: (ev.attempts + 1) as u32,
                        enqueued_at: ts(ev.created_at),
                        lease_until: ts(lease_until),
                        traceparent: ev.traceparent,
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    /// Records how a claimed attempt ended. Success: done (kept for `done_retention`), and
    /// a record to the on-success destination. Failure: retried after a backoff while
    /// retries and age allow, else dead-lettered with the error and a record to the
    /// on-failure destination. A result for a lease that was lost is ignored.
    pub async fn complete(&self, claimed: &Claimed, outcome: InvokeOutcome) -> Result<Completion> {
        let (id, attempt, now) = (
            claimed.id.to_string(),
            i64::from(claimed.attempt),
            ms(self.now()),
        );
        self.call(move |conn, ctx| {
            let Some(ev) = load(conn, &id)?.filter(|ev| ev.state == LEASED && ev.attempts == attempt) else {
                return Ok(Completion::LeaseLost);
            };
            match outcome {
                InvokeOutcome::Success { response } => {
                    conn.prepare_cached("UPDATE invocations SET state = 2, due_at = ?2 WHERE seq = ?1")?
                        .execute(params![ev.seq, now])?;
                    destination(conn, ctx, now, &ev, ev.on_success.as_deref(), Condition::Success, Some(&response))?;
                    Ok(Completion::Succeeded)
                }
                InvokeOutcome::Failure { error, response } => {
                    let failures = ev.failures + 1;
                    conn.prepare_cached("UPDATE invocations SET failures = ?2, last_error = ?3 WHERE seq = ?1")?
                        .execute(params![ev.seq, failures, error])?;
                    if failures > ev.max_retries {
                        kill(conn, ctx, now, &ev, DeadReason::RetriesExhausted, &error, response.as_deref())?;
                        return Ok(Completion::DeadLettered { reason: DeadReason::RetriesExhausted });
                    }
                    let retry = failures as u32;
                    let next = now + dur_ms(ctx.config.retry.delay(retry));
                    if next - ev.created_at > ev.max_age_ms {
                        kill(conn, ctx, now, &ev, DeadReason::EventAgeExceeded, &error, response.as_deref())?;
                        return Ok(Completion::DeadLettered { reason: DeadReason::EventAgeExceeded });
                    }
                    conn.prepare_cached("UPDATE invocations SET state = 0, due_at = ?2 WHERE seq = ?1")?
                        .execute(params![ev.seq, next])?;
                    Ok(Completion::Retrying { retry, next_attempt_at: ts(next) })
                }
                InvokeOutcome::Throttled => {
                    let throttles = ev.throttles + 1;
                    let next = now + dur_ms(ctx.config.retry.delay(throttles.min(32) as u32));
                    if next - ev.created_at > ev.max_age_ms {
                        let error = "throttled until the maximum event age";
                        kill(conn, ctx, now, &ev, DeadReason::EventAgeExceeded, error, None)?;
                        return Ok(Completion::DeadLettered { reason: DeadReason::EventAgeExceeded });
                    }
                    // The function never ran: this delivery does not count as an attempt.
                    conn.prepare_cached(
                        "UPDATE invocations SET state = 0, due_at = ?2, throttles = ?3, attempts = attempts - 1 WHERE seq = ?1",
                    )?
                    .execute(params![ev.seq, next, throttles])?;
                    Ok(Completion::Requeued { next_attempt_at: ts(next) })
                }
            }
        })
        .await
    }

    /// The status of one async invocation, while it is kept.
    pub async fn get(&self, id: EventId) -> Result<Option<EventInfo>> {
        self.call(move |conn, _| {
            Ok(load(conn, &id.to_string())?.map(|ev| EventInfo {
                id: ev.event_id(),
                state: match ev.state {
                    PENDING => EventState::Pending,
                    LEASED => EventState::InFlight,
                    SUCCEEDED => EventState::Succeeded,
                    _ => EventState::Dead(DeadReason::parse(
                        ev.dead_reason.as_deref().unwrap_or_default(),
                    )),
                },
                attempts: ev.attempts as u32,
                enqueued_at: ts(ev.created_at),
                due_at: ts(ev.due_at),
                last_error: ev.last_error,
                function: ev.function,
            }))
        })
        .await
    }

    /// The dead-letter queue of `function`, oldest first.
    pub async fn dlq_list(&self, function: &str) -> Result<Vec<DeadLetter>> {
        let function = function.to_string();
        self.call(move |conn, _| {
            let rows = conn
                .prepare_cached(&format!(
                    "SELECT {COLS} FROM invocations WHERE state = 3 AND function = ?1 ORDER BY seq"
                ))?
                .query_map([function], Ev::from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows.iter().map(Ev::dead_letter).collect())
        })
        .await
    }

    pub async fn dlq_get(&self, id: EventId) -> Result<Option<DeadLetter>> {
        self.call(move |conn, _| {
            Ok(load(conn, &id.to_string())?
                .filter(|ev| ev.state == DEAD)
                .map(|ev| ev.dead_letter()))
        })
        .await
    }

    /// Sends dead letters of `function` back for delivery with fresh attempts and a fresh
    /// age (same ids). Returns how many were redriven.
    pub async fn redrive(&self, function: &str, which: Redrive) -> Result<usize> {
        let (function, now) = (function.to_string(), ms(self.now()));
        self.call(move |conn, ctx| {
            let mut stmt = conn.prepare_cached(
                "UPDATE invocations SET state = 0, due_at = ?1, created_at = ?1, attempts = 0, failures = 0,
                     expiries = 0, throttles = 0, first_attempt_at = NULL, last_attempt_at = NULL, dead_reason = NULL
                 WHERE state = 3 AND function = ?2 AND (?3 IS NULL OR id = ?3)",
            )?;
            let n = match which {
                Redrive::All => stmt.execute(params![now, function, None::<String>])?,
                Redrive::Ids(ids) => {
                    let mut n = 0;
                    for id in ids {
                        n += stmt.execute(params![now, function, id.to_string()])?;
                    }
                    n
                }
            };
            ctx.woke_invocations |= n > 0;
            Ok(n)
        })
        .await
    }

    /// Counts of async invocations by state: (pending, in flight, dead), for metrics.
    pub async fn invocation_counts(&self, function: Option<&str>) -> Result<(u64, u64, u64)> {
        let function = function.map(str::to_string);
        self.call(move |conn, _| {
            Ok(conn
                .prepare_cached(
                    "SELECT coalesce(sum(state = 0), 0), coalesce(sum(state = 1), 0), coalesce(sum(state = 3), 0)
                     FROM invocations WHERE ?1 IS NULL OR function = ?1",
                )?
                .query_row([function], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?)
        })
        .await
    }

    /// A receiver that changes whenever new async invocations became due (an enqueue, a
    /// redrive): the dispatcher waits on it instead of polling.
    pub fn watch_invocations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.wake.invocations.subscribe()
    }
}

/// Up to `want` due events, shared fairly among the functions that have some: each
/// function's oldest first, at most `want / functions` (at least one) per function in a
/// first pass, the rest filled by age. One function's backlog (a burst, a runaway
/// recursion) then delays its own events, not every other function's.
fn due_fairly(conn: &rusqlite::Connection, now: i64, want: usize) -> rusqlite::Result<Vec<Ev>> {
    // The distinct functions with pending or leased events, one index seek each.
    let functions: Vec<String> = conn
        .prepare_cached(
            "WITH RECURSIVE f(name) AS (
                 SELECT (SELECT min(function) FROM invocations WHERE state < 2)
                 UNION ALL
                 SELECT (SELECT min(function) FROM invocations WHERE state < 2 AND function > f.name)
                 FROM f WHERE f.name IS NOT NULL
             ) SELECT name FROM f WHERE name IS NOT NULL",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if functions.len() <= 1 {
        return conn
            .prepare_cached(&format!(
                "SELECT {COLS} FROM invocations WHERE state < 2 AND due_at <= ?1 ORDER BY due_at, seq LIMIT ?2"
            ))?
            .query_map(params![now, want as i64], Ev::from_row)?
            .collect();
    }
    let share = (want / functions.len()).max(1);
    let mut out: Vec<Ev> = Vec::new();
    let mut per_function = conn.prepare_cached(&format!(
        "SELECT {COLS} FROM invocations INDEXED BY invocations_due_by_function
         WHERE state < 2 AND function = ?1 AND due_at <= ?2 ORDER BY due_at, seq LIMIT ?3"
    ))?;
    for f in &functions {
        if out.len() >= want {
            break;
        }
        let n = share.min(want - out.len());
        out.extend(
            per_function
                .query_map(params![f, now, n as i64], Ev::from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?,
        );
    }
    if out.len() < want {
        let taken: std::collections::HashSet<i64> = out.iter().map(|e| e.seq).collect();
        let more: Vec<Ev> = conn
            .prepare_cached(&format!(
                "SELECT {COLS} FROM invocations WHERE state < 2 AND due_at <= ?1 ORDER BY due_at, seq LIMIT ?2"
            ))?
            .query_map(params![now, (want + taken.len()) as i64], Ev::from_row)?
            .collect::<rusqlite::Result<_>>()?;
        out.extend(
            more.into_iter()
                .filter(|e| !taken.contains(&e.seq))
                .take(want - out.len()),
        );
    }
    Ok(out)
}
