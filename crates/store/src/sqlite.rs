use crate::{DeployChange, LogQuery, Result, Store, StoreError, UsageGroup, UsageRow};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};
use wisp_core::{Function, FunctionName, FunctionSpec, LogLine, LogStream, UsageRecord, Version};

/// The embedded store: SQLite in WAL mode. Platform state (`wisp.db`) is written with
/// synchronous=FULL, so an acknowledged change survives `kill -9` and power loss. Function
/// logs live in their own database (`logs.db`, synchronous=NORMAL: they survive a crash of
/// the process, and a power cut may lose the last moments), so that a busy function's
/// output neither waits on nor delays a deploy.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    logs: Mutex<Connection>,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS artifacts (
    sha256 TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS functions (
    name TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    active_version INTEGER NOT NULL,
    latest_version INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    function TEXT NOT NULL,
    number INTEGER NOT NULL,
    spec TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (function, number)
);
"#;

const LOGS_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms INTEGER NOT NULL,
    function TEXT NOT NULL,
    version INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    stream TEXT NOT NULL,
    line TEXT NOT NULL,
    trace_id TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS logs_by_function ON logs (function, id);
CREATE TABLE IF NOT EXISTS invocations (
    request_id TEXT NOT NULL,
    function TEXT NOT NULL,
    version INTEGER NOT NULL,
    trigger TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    duration_us INTEGER NOT NULL,
    billed_ms INTEGER NOT NULL,
    memory_mb INTEGER NOT NULL,
    init_us INTEGER NOT NULL,
    cold_start INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    concurrency INTEGER NOT NULL,
    cpu_us INTEGER,
    trace_id TEXT NOT NULL DEFAULT '',
    span_id TEXT NOT NULL DEFAULT '',
    parent_span_id TEXT
);
CREATE TABLE IF NOT EXISTS usage_hourly (
    function TEXT NOT NULL,
    trigger TEXT NOT NULL,
    hour_ms INTEGER NOT NULL,
    invocations INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    billed_ms INTEGER NOT NULL,
    gb_seconds REAL NOT NULL,
    duration_us INTEGER NOT NULL,
    cold_starts INTEGER NOT NULL,
    peak_concurrency INTEGER NOT NULL,
    cpu_us INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (function, trigger, hour_ms)
);
CREATE TABLE IF NOT EXISTS idle_histograms (
    function TEXT PRIMARY KEY,
    histogram TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_by_request ON logs (request_id);
CREATE INDEX IF NOT EXISTS logs_by_time ON logs (ts_ms);
"#;

/// One hour's sums of a batch of usage records.
#[derive(Default)]
struct HourSum {
    invocations: i64,
    errors: i64,
    billed_ms: i64,
    gb_seconds: f64,
    duration_us: i64,
    cold_starts: i64,
    peak: u32,
    cpu_us: i64,
}

/// An `invocations` row (trigger and outcome are set by the caller, from columns 3 and 10).
fn usage_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<UsageRecord> {
    Ok(UsageRecord {
        request_id: r.get(0)?,
        function: r.get(1)?,
        version: r.get(2)?,
        trigger: wisp_core::Trigger::Api,
        start_ms: r.get(4)?,
        duration_us: r.get::<_, i64>(5)? as u64,
        billed_ms: r.get::<_, i64>(6)? as u64,
        memory_mb: r.get::<_, i64>(7)? as u64,
        init_us: r.get::<_, i64>(8)? as u64,
        cold_start: r.get(9)?,
        outcome: wisp_core::Outcome::Success,
        concurrency: r.get(11)?,
        cpu_us: r.get::<_, Option<i64>>(12)?.map(|c| c as u64),
        span: wisp_core::SpanContext {
            trace_id: r.get(13)?,
            span_id: r.get(14)?,
            parent_span_id: r.get(15)?,
        },
    })
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl SqliteStore {
    /// Opens (or creates) `wisp.db` in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Io {
            context: format!("creating data directory {}", data_dir.display()),
            source,
        })?;
        Self::from_connections(
            Connection::open(data_dir.join("wisp.db"))?,
            Connection::open(data_dir.join("logs.db"))?,
        )
    }

    /// An in-memory store, for tests.
    pub fn in_memory() -> Result<Self> {
        Self::from_connections(Connection::open_in_memory()?, Connection::open_in_memory()?)
    }

    fn from_connections(conn: Connection, logs: Connection) -> Result<Self> {
        for (c, sync, schema) in [(&conn, "FULL", SCHEMA), (&logs, "NORMAL", LOGS_SCHEMA)] {
            c.pragma_update(None, "journal_mode", "WAL")?;
            c.pragma_update(None, "synchronous", sync)?;
            c.busy_timeout(std::time::Duration::from_secs(5))?;
            c.execute_batch(schema)?;
        }
        // Databases made by earlier versions get the columns added since.
        for (table, column, decl) in [
            ("logs", "trace_id", "TEXT NOT NULL DEFAULT ''"),
            ("invocations", "cpu_us", "INTEGER"),
            ("invocations", "trace_id", "TEXT NOT NULL DEFAULT ''"),
            ("invocations", "span_id", "TEXT NOT NULL DEFAULT ''"),
            ("invocations", "parent_span_id", "TEXT"),
            ("usage_hourly", "cpu_us", "INTEGER NOT NULL DEFAULT 0"),
        ] {
            let has: bool = logs
                .prepare(&format!(
                    "SELECT 1 FROM pragma_table_info('{table}') WHERE name = '{column}'"
                ))?
                .exists([])?;
            if !has {
                logs.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
            }
        }
        logs.execute_batch(
            "DROP INDEX IF EXISTS invocations_by_time;
             CREATE INDEX IF NOT EXISTS logs_by_trace ON logs (trace_id);
             CREATE INDEX IF NOT EXISTS invocations_by_trace ON invocations (trace_id);",
        )?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            logs: Mutex::new(logs),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions
        // roll back on drop), so a poisoned lock is still safe to use.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn logs_conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn load_function(conn: &Connection, name: &str) -> Result<Option<Function>> {
    let row = conn
        .query_row(
            "SELECT f.app, f.active_version, f.latest_version, v.spec
             FROM functions f JOIN versions v ON v.function = f.name AND v.number = f.active_version
             WHERE f.name = ?1",
            [name],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get::<_, String>(3)?,
                ))
            },
        )
        .optional()?;
    row.map(|(app, active_version, latest_version, spec)| {
        Ok(Function {
            name: FunctionName::new(name).map_err(corrupt)?,
            app,
            active_version,
            latest_version,
            active: serde_json::from_str(&spec).map_err(corrupt)?,
        })
    })
    .transpose()
}

impl Store for SqliteStore {
    fn record_artifact(&self, sha256: &str, size: u64) -> Result<()> {
        self.conn().execute(
            "INSERT OR IGNORE INTO artifacts (sha256, size, created_at_ms) VALUES (?1, ?2, ?3)",
            params![sha256, size as i64, now_ms()],
        )?;
        Ok(())
    }

    fn has_artifact(&self, sha256: &str) -> Result<bool> {
        Ok(self
            .conn()
            .query_row(
                "SELECT 1 FROM artifacts WHERE sha256 = ?1",
                [sha256],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    fn deploy(&self, app: &str, specs: &[FunctionSpec], prune: bool) -> Result<Vec<DeployChange>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let now = now_ms();
        let mut changes = Vec::new();
        for spec in specs {
            let name = spec.name.as_str();
            let existing = load_function(&tx, name)?;
            let spec_json = serde_json::to_string(spec).map_err(corrupt)?;
            match existing {
                Some(f) if f.app != app => {
                    return Err(StoreError::OwnedByOtherApp {
                        function: name.to_string(),
                        owner: f.app,
                    });
                }
                Some(f) if &f.active == spec => changes.push(DeployChange::Unchanged {
                    function: name.to_string(),
                    version: f.active_version,
                }),
                existing => {
                    let number = existing.map(|f| f.latest_version + 1).unwrap_or(1);
                    tx.execute(
                        "INSERT INTO versions (function, number, spec, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
                        params![name, number, spec_json, now],
                    )?;
                    tx.execute(
                        "INSERT INTO functions (name, app, active_version, latest_version, updated_at_ms)
                         VALUES (?1, ?2, ?3, ?3, ?4)
                         ON CONFLICT(name) DO UPDATE SET active_version = ?3, latest_version = ?3, updated_at_ms = ?4",
                        params![name, app, number, now],
                    )?;
                    changes.push(DeployChange::Created {
                        function: name.to_string(),
                        version: number,
                    });
                }
            }
        }
        if prune {
            let mut stmt = tx.prepare("SELECT name FROM functions WHERE app = ?1 ORDER BY name")?;
            let names: Vec<String> = stmt
                .query_map([app], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            drop(stmt);
            for name in names {
                if !specs.iter().any(|s| s.name.as_str() == name) {
                    tx.execute("DELETE FROM versions WHERE function = ?1", [&name])?;
                    tx.execute("DELETE FROM functions WHERE name = ?1", [&name])?;
                    changes.push(DeployChange::Removed { function: name });
                }
            }
        }
        tx.commit()?;
        Ok(changes)
    }

    fn functions(&self) -> Result<Vec<Function>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name FROM functions ORDER BY app, name")?;
        let names: Vec<String> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        names
            .iter()
            .filter_map(|n| load_function(&conn, n).transpose())
            .collect()
    }

    fn function(&self, name: &FunctionName) -> Result<Option<Function>> {
        load_function(&self.conn(), name.as_str())
    }

    fn versions(&self, name: &FunctionName) -> Result<Vec<Version>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT number, spec, created_at_ms FROM versions WHERE function = ?1 ORDER BY number",
        )?;
        let rows: Vec<(u32, String, i64)> = stmt
            .query_map([name.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(number, spec, created_at_ms)| {
                Ok(Version {
                    function: name.clone(),
                    number,
                    spec: serde_json::from_str(&spec).map_err(corrupt)?,
                    created_at_ms,
                })
            })
            .collect()
    }

    fn set_active(&self, name: &FunctionName, version: u32) -> Result<Function> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if load_function(&tx, name.as_str())?.is_none() {
            return Err(StoreError::FunctionNotFound(name.to_string()));
        }
        let exists = tx
            .query_row(
                "SELECT 1 FROM versions WHERE function = ?1 AND number = ?2",
                params![name.as_str(), version],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if !exists {
            return Err(StoreError::VersionNotFound {
                function: name.to_string(),
                version,
            });
        }
        tx.execute(
            "UPDATE functions SET active_version = ?2, updated_at_ms = ?3 WHERE name = ?1",
            params![name.as_str(), version, now_ms()],
        )?;
        let f = load_function(&tx, name.as_str())?
            .ok_or_else(|| StoreError::FunctionNotFound(name.to_string()))?;
        tx.commit()?;
        Ok(f)
    }

    fn remove(&self, name: &FunctionName) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute("DELETE FROM functions WHERE name = ?1", [name.as_str()])?;
        tx.execute("DELETE FROM versions WHERE function = ?1", [name.as_str()])?;
        tx.commit()?;
        Ok(n > 0)
    }

    fn append_logs(&self, lines: &[LogLine]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut conn = self.logs_conn();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO logs (ts_ms, function, version, request_id, stream, line, trace_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for l in lines {
                stmt.execute(params![
                    l.ts_ms,
                    l.function,
                    l.version,
                    l.request_id,
                    l.stream.as_str(),
                    l.line,
                    l.trace_id
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn logs(&self, q: &LogQuery) -> Result<Vec<LogLine>> {
        let conn = self.logs_conn();
        // Paging forward from `after_id` reads the oldest lines first, so a reader that
        // follows never skips any; otherwise the newest `limit` lines are read.
        let forward = q.after_id.is_some();
        let sql = format!(
            "SELECT id, ts_ms, function, version, request_id, stream, line, trace_id FROM logs
             WHERE (?1 IS NULL OR function = ?1)
               AND (?2 IS NULL OR request_id = ?2)
               AND (?3 IS NULL OR ts_ms >= ?3)
               AND (?4 IS NULL OR id > ?4)
               AND (?6 IS NULL OR instr(line, ?6) > 0)
               AND (?7 IS NULL OR trace_id = ?7)
               AND (?8 IS NULL OR version = ?8)
               AND (?9 IS NULL OR ts_ms < ?9)
             ORDER BY id {} LIMIT ?5",
            if forward { "ASC" } else { "DESC" }
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let limit = if q.limit == 0 { 1000 } else { q.limit } as i64;
        let mut lines: Vec<LogLine> = stmt
            .query_map(
                params![
                    q.function,
                    q.request_id,
                    q.since_ms,
                    q.after_id,
                    limit,
                    q.grep,
                    q.trace_id,
                    q.version,
                    q.until_ms
                ],
                |r| {
                    let stream: String = r.get(5)?;
                    Ok(LogLine {
                        id: r.get(0)?,
                        ts_ms: r.get(1)?,
                        function: r.get(2)?,
                        version: r.get(3)?,
                        request_id: r.get(4)?,
                        stream: LogStream::parse(&stream).unwrap_or(LogStream::Platform),
                        line: r.get(6)?,
                        trace_id: r.get(7)?,
                    })
                },
            )?
            .collect::<Result<_, _>>()?;
        if !forward {
            lines.reverse();
        }
        Ok(lines)
    }

    fn put_idle_histograms(&self, histograms: &[(String, String)]) -> Result<()> {
        let mut conn = self.logs_conn();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO idle_histograms (function, histogram, updated_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (function) DO UPDATE SET histogram = ?2, updated_ms = ?3",
            )?;
            for (f, h) in histograms {
                stmt.execute(rusqlite::params![f, h, now_ms()])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn idle_histograms(&self) -> Result<Vec<(String, String)>> {
        let conn = self.logs_conn();
        let mut stmt = conn.prepare("SELECT function, histogram FROM idle_histograms")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn append_usage(&self, records: &[UsageRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut conn = self.logs_conn();
        let tx = conn.transaction()?;
        {
            let mut raw = tx.prepare_cached(
                "INSERT INTO invocations (request_id, function, version, trigger, start_ms,
                    duration_us, billed_ms, memory_mb, init_us, cold_start, outcome, concurrency,
                    cpu_us, trace_id, span_id, parent_span_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )?;
            let mut hourly = tx.prepare_cached(
                "INSERT INTO usage_hourly (function, trigger, hour_ms, invocations, errors,
                    billed_ms, gb_seconds, duration_us, cold_starts, peak_concurrency, cpu_us)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (function, trigger, hour_ms) DO UPDATE SET
                    invocations = invocations + excluded.invocations,
                    errors = errors + excluded.errors,
                    billed_ms = billed_ms + excluded.billed_ms,
                    gb_seconds = gb_seconds + excluded.gb_seconds,
                    duration_us = duration_us + excluded.duration_us,
                    cold_starts = cold_starts + excluded.cold_starts,
                    cpu_us = cpu_us + excluded.cpu_us,
                    peak_concurrency = max(peak_concurrency, excluded.peak_concurrency)",
            )?;
            // The batch is summed per function, trigger and hour first: one upsert per
            // group, not per invocation.
            let mut hours: std::collections::HashMap<(&str, &str, i64), HourSum> =
                std::collections::HashMap::new();
            for r in records {
                raw.execute(params![
                    r.request_id,
                    r.function,
                    r.version,
                    r.trigger.as_str(),
                    r.start_ms,
                    r.duration_us as i64,
                    r.billed_ms as i64,
                    r.memory_mb as i64,
                    r.init_us as i64,
                    r.cold_start,
                    r.outcome.as_str(),
                    r.concurrency,
                    r.cpu_us.map(|c| c as i64),
                    r.span.trace_id,
                    r.span.span_id,
                    r.span.parent_span_id,
                ])?;
                let hour_ms = r.start_ms - r.start_ms.rem_euclid(3_600_000);
                let h = hours
                    .entry((r.function.as_str(), r.trigger.as_str(), hour_ms))
                    .or_default();
                h.invocations += 1;
                h.errors += (r.outcome != wisp_core::Outcome::Success) as i64;
                h.billed_ms += r.billed_ms as i64;
                h.gb_seconds += wisp_core::gb_seconds(r.memory_mb, r.billed_ms);
                h.duration_us += r.duration_us as i64;
                h.cold_starts += r.cold_start as i64;
                h.peak = h.peak.max(r.concurrency);
                h.cpu_us += r.cpu_us.unwrap_or(0) as i64;
            }
            for ((function, trigger, hour_ms), h) in hours {
                hourly.execute(params![
                    function,
                    trigger,
                    hour_ms,
                    h.invocations,
                    h.errors,
                    h.billed_ms,
                    h.gb_seconds,
                    h.duration_us,
                    h.cold_starts,
                    h.peak,
                    h.cpu_us,
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn usage(&self, since_ms: i64, by: UsageGroup) -> Result<Vec<UsageRow>> {
        let conn = self.logs_conn();
        let key = match by {
            UsageGroup::Function => "function",
            UsageGroup::Trigger => "trigger",
            UsageGroup::Day => "strftime('%Y-%m-%d', hour_ms / 1000, 'unixepoch')",
        };
        let sql = format!(
            "SELECT {key} AS k, SUM(invocations), SUM(errors), SUM(billed_ms), SUM(gb_seconds),
                    SUM(duration_us), SUM(cold_starts), MAX(peak_concurrency), SUM(cpu_us)
             FROM usage_hourly WHERE hour_ms >= ?1 GROUP BY k ORDER BY k"
        );
        let since_hour = since_ms - since_ms.rem_euclid(3_600_000);
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt
            .query_map([since_hour], |r| {
                Ok(UsageRow {
                    key: r.get(0)?,
                    invocations: r.get::<_, i64>(1)? as u64,
                    errors: r.get::<_, i64>(2)? as u64,
                    billed_ms: r.get::<_, i64>(3)? as u64,
                    gb_seconds: r.get(4)?,
                    duration_ms: r.get::<_, i64>(5)? as f64 / 1000.0,
                    cold_starts: r.get::<_, i64>(6)? as u64,
                    peak_concurrency: r.get::<_, i64>(7)? as u32,
                    cpu_ms: r.get::<_, i64>(8)? as f64 / 1000.0,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn trace(&self, id: &str) -> Result<Vec<UsageRecord>> {
        let conn = self.logs_conn();
        // A request id names the trace its (first) invocation belongs to: found through the
        // log lines' index when the invocation logged anything, else by a scan (no index on
        // request ids, which would cost every invocation a write).
        let one = |sql: &str| -> Result<Option<String>> {
            Ok(conn.query_row(sql, [id], |r| r.get(0)).optional()?)
        };
        let trace_id = match one("SELECT trace_id FROM invocations WHERE trace_id = ?1 LIMIT 1")? {
            Some(t) => Some(t),
            None => match one(
                "SELECT trace_id FROM logs WHERE request_id = ?1 AND trace_id != '' LIMIT 1",
            )? {
                Some(t) => Some(t),
                None => one(
                    "SELECT trace_id FROM invocations WHERE request_id = ?1 AND trace_id != ''
                     ORDER BY start_ms LIMIT 1",
                )?,
            },
        };
        let Some(trace_id) = trace_id else {
            return Ok(Vec::new());
        };
        let mut stmt = conn.prepare(
            "SELECT request_id, function, version, trigger, start_ms, duration_us, billed_ms,
                    memory_mb, init_us, cold_start, outcome, concurrency, cpu_us, trace_id,
                    span_id, parent_span_id
             FROM invocations WHERE trace_id = ?1 ORDER BY start_ms, rowid LIMIT 10000",
        )?;
        let rows = stmt
            .query_map([&trace_id], |r| {
                let trigger: String = r.get(3)?;
                let outcome: String = r.get(10)?;
                Ok((trigger, outcome, usage_record(r)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(trigger, outcome, mut rec)| {
                rec.trigger =
                    serde_json::from_value(serde_json::Value::String(trigger)).map_err(corrupt)?;
                rec.outcome =
                    serde_json::from_value(serde_json::Value::String(outcome)).map_err(corrupt)?;
                Ok(rec)
            })
            .collect()
    }

    fn prune_logs(&self, keep_per_function: usize, older_than_ms: i64) -> Result<usize> {
        let conn = self.logs_conn();
        // Raw invocation records follow the log retention; the hourly aggregates that
        // usage reports read are kept.
        // Records are appended about in start order, so the old ones are a prefix by rowid:
        // found by scanning from the first row, with no index on start times to keep up
        // at every invocation.
        conn.execute(
            "DELETE FROM invocations WHERE rowid < COALESCE(
                (SELECT rowid FROM invocations WHERE start_ms >= ?1 ORDER BY rowid LIMIT 1),
                (SELECT max(rowid) + 1 FROM invocations))",
            [older_than_ms],
        )?;
        let mut n = conn.execute("DELETE FROM logs WHERE ts_ms < ?1", [older_than_ms])?;
        n += conn.execute(
            "DELETE FROM logs WHERE id IN (
                SELECT id FROM (
                    SELECT id, ROW_NUMBER() OVER (PARTITION BY function ORDER BY id DESC) AS rn
                    FROM logs
                ) WHERE rn > ?1
            )",
            [keep_per_function as i64],
        )?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wisp_core::Limits;

    fn spec(name: &str, artifact: &str) -> FunctionSpec {
        FunctionSpec {
            name: FunctionName::new(name).unwrap(),
            artifact: artifact.to_string(),
            native: None,
            routes: vec!["GET /x".parse().unwrap()],
            env: Default::default(),
            limits: Limits::default(),
            instance_reuse: false,
            webhook: None,
            schedules: Vec::new(),
            object_triggers: Vec::new(),
            async_config: None,
            queue: None,
            outbound: Vec::new(),
            object_buckets: Vec::new(),
        }
    }

    fn name(n: &str) -> FunctionName {
        FunctionName::new(n).unwrap()
    }

    #[test]
    fn deploy_creates_versions_only_for_changes() {
        let s = SqliteStore::in_memory().unwrap();
        let c = s
            .deploy("app", &[spec("a", "1"), spec("b", "1")], true)
            .unwrap();
        assert_eq!(
            c,
            vec![
                DeployChange::Created {
                    function: "a".into(),
                    version: 1
                },
                DeployChange::Created {
                    function: "b".into(),
                    version: 1
                },
            ]
        );
        let c = s
            .deploy("app", &[spec("a", "2"), spec("b", "1")], true)
            .unwrap();
        assert_eq!(
            c,
            vec![
                DeployChange::Created {
                    function: "a".into(),
                    version: 2
                },
                DeployChange::Unchanged {
                    function: "b".into(),
                    version: 1
                },
            ]
        );
        let c = s.deploy("app", &[spec("a", "2")], true).unwrap();
        assert_eq!(
            c,
            vec![
                DeployChange::Unchanged {
                    function: "a".into(),
                    version: 2
                },
                DeployChange::Removed {
                    function: "b".into()
                },
            ]
        );
        assert_eq!(s.functions().unwrap().len(), 1);
    }

    #[test]
    fn rollback_and_roll_forward() {
        let s = SqliteStore::in_memory().unwrap();
        s.deploy("app", &[spec("a", "1")], true).unwrap();
        s.deploy("app", &[spec("a", "2")], true).unwrap();
        let f = s.set_active(&name("a"), 1).unwrap();
        assert_eq!((f.active_version, f.latest_version), (1, 2));
        assert_eq!(f.active.artifact, "1");
        // Deploying after a rollback makes a new version, numbered after the latest.
        let c = s.deploy("app", &[spec("a", "3")], true).unwrap();
        assert_eq!(
            c,
            vec![DeployChange::Created {
                function: "a".into(),
                version: 3
            }]
        );
        assert!(matches!(
            s.set_active(&name("a"), 9),
            Err(StoreError::VersionNotFound { .. })
        ));
        assert!(matches!(
            s.set_active(&name("zz"), 1),
            Err(StoreError::FunctionNotFound(_))
        ));
        assert_eq!(s.versions(&name("a")).unwrap().len(), 3);
    }

    #[test]
    fn functions_belong_to_one_app() {
        let s = SqliteStore::in_memory().unwrap();
        s.deploy("one", &[spec("a", "1")], true).unwrap();
        let err = s
            .deploy("two", &[spec("b", "1"), spec("a", "1")], true)
            .unwrap_err();
        assert!(matches!(err, StoreError::OwnedByOtherApp { .. }), "{err}");
        // Nothing of the failed deploy was applied.
        assert!(s.function(&name("b")).unwrap().is_none());
    }

    #[test]
    fn remove_deletes_function_and_versions() {
        let s = SqliteStore::in_memory().unwrap();
        s.deploy("app", &[spec("a", "1")], true).unwrap();
        assert!(s.remove(&name("a")).unwrap());
        assert!(!s.remove(&name("a")).unwrap());
        assert!(s.versions(&name("a")).unwrap().is_empty());
    }

    #[test]
    fn logs_filter_by_version_and_time_window() {
        let s = SqliteStore::in_memory().unwrap();
        let line = |rid: &str, version: u32, ts: i64| LogLine {
            id: 0,
            ts_ms: ts,
            function: "a".into(),
            version,
            request_id: rid.into(),
            trace_id: String::new(),
            stream: LogStream::Stdout,
            line: rid.into(),
        };
        s.append_logs(&[
            line("r1", 1, 10),
            line("r2", 1, 20),
            line("r3", 2, 30),
            line("r4", 2, 40),
        ])
        .unwrap();
        let ids = |q: LogQuery| -> Vec<String> {
            s.logs(&q)
                .unwrap()
                .into_iter()
                .map(|l| l.request_id)
                .collect()
        };
        assert_eq!(
            ids(LogQuery {
                function: Some("a".into()),
                version: Some(2),
                ..Default::default()
            }),
            ["r3", "r4"]
        );
        assert_eq!(
            ids(LogQuery {
                since_ms: Some(20),
                until_ms: Some(40),
                ..Default::default()
            }),
            ["r2", "r3"]
        );
    }

    #[test]
    fn logs_filter_page_and_prune() {
        let s = SqliteStore::in_memory().unwrap();
        let line = |f: &str, rid: &str, ts: i64| LogLine {
            id: 0,
            ts_ms: ts,
            function: f.into(),
            version: 1,
            request_id: rid.into(),
            trace_id: format!("t-{rid}"),
            stream: LogStream::Stdout,
            line: format!("{f} {rid}"),
        };
        s.append_logs(&[
            line("a", "r1", 10),
            line("b", "r2", 20),
            line("a", "r3", 30),
        ])
        .unwrap();
        let all_a = s
            .logs(&LogQuery {
                function: Some("a".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            all_a
                .iter()
                .map(|l| l.request_id.as_str())
                .collect::<Vec<_>>(),
            ["r1", "r3"]
        );
        let by_req = s
            .logs(&LogQuery {
                request_id: Some("r2".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(by_req.len(), 1);
        let since = s
            .logs(&LogQuery {
                since_ms: Some(20),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(since.len(), 2);
        let after = s
            .logs(&LogQuery {
                after_id: Some(all_a[0].id),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(after.len(), 2);
        let grep = s
            .logs(&LogQuery {
                grep: Some("b r".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            grep.iter()
                .map(|l| l.request_id.as_str())
                .collect::<Vec<_>>(),
            ["r2"]
        );
        let trace = s
            .logs(&LogQuery {
                trace_id: Some("t-r3".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            trace
                .iter()
                .map(|l| l.request_id.as_str())
                .collect::<Vec<_>>(),
            ["r3"]
        );
        let newest = s
            .logs(&LogQuery {
                limit: 1,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(newest[0].request_id, "r3");
        // Age: r1 is older than 15.
        assert_eq!(s.prune_logs(10, 15).unwrap(), 1);
        assert_eq!(s.logs(&LogQuery::default()).unwrap().len(), 2);
        // Count: keep only the newest line of each function.
        s.append_logs(&[line("a", "r4", 40)]).unwrap();
        assert_eq!(s.prune_logs(1, 0).unwrap(), 1);
        let left = s.logs(&LogQuery::default()).unwrap();
        assert_eq!(
            left.iter()
                .map(|l| l.request_id.as_str())
                .collect::<Vec<_>>(),
            ["r2", "r4"]
        );
    }

    #[test]
    fn usage_is_aggregated_by_function_day_and_trigger() {
        let s = SqliteStore::in_memory().unwrap();
        let rec = |f: &str, start_ms: i64, us: u64, outcome: wisp_core::Outcome| UsageRecord {
            request_id: format!("{f}-{start_ms}"),
            function: f.into(),
            version: 1,
            trigger: wisp_core::Trigger::Http,
            start_ms,
            duration_us: us,
            billed_ms: wisp_core::billed_ms(us),
            memory_mb: 1024,
            init_us: 0,
            cold_start: start_ms == 0,
            outcome,
            concurrency: (start_ms / 1000) as u32 + 1,
            cpu_us: Some(us / 2),
            span: wisp_core::SpanContext::default(),
        };
        let day = 86_400_000;
        s.append_usage(&[
            rec("a", 0, 50_200, wisp_core::Outcome::Success),
            rec("a", 1000, 999, wisp_core::Outcome::Error),
            rec("b", day + 5, 2_000, wisp_core::Outcome::Success),
        ])
        .unwrap();
        let by_fn = s.usage(0, UsageGroup::Function).unwrap();
        assert_eq!(by_fn.len(), 2);
        let a = &by_fn[0];
        assert_eq!(
            (a.key.as_str(), a.invocations, a.errors, a.billed_ms),
            ("a", 2, 1, 52)
        );
        assert!((a.gb_seconds - 0.052).abs() < 1e-9);
        assert_eq!((a.cold_starts, a.peak_concurrency), (1, 2));
        assert!((a.duration_ms - 51.199).abs() < 1e-9);
        let by_day = s.usage(0, UsageGroup::Day).unwrap();
        assert_eq!(
            by_day.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
            ["1970-01-01", "1970-01-02"]
        );
        assert_eq!(s.usage(day, UsageGroup::Trigger).unwrap()[0].invocations, 1);
    }

    #[test]
    fn a_trace_is_found_by_its_id_or_a_request_id() {
        let s = SqliteStore::in_memory().unwrap();
        let rec =
            |req: &str, trace: &str, span: &str, parent: Option<&str>, start_ms| UsageRecord {
                request_id: req.into(),
                function: format!("fn-{req}"),
                version: 2,
                trigger: wisp_core::Trigger::Async,
                start_ms,
                duration_us: 1500,
                billed_ms: 2,
                memory_mb: 128,
                init_us: 0,
                cold_start: false,
                outcome: wisp_core::Outcome::Timeout,
                concurrency: 1,
                cpu_us: Some(700),
                span: wisp_core::SpanContext {
                    trace_id: trace.into(),
                    span_id: span.into(),
                    parent_span_id: parent.map(str::to_string),
                },
            };
        let t = "4bf92f3577b34da6a3ce929d0e0e4736";
        let other = "0af7651916cd43dd8448eb211c80319c";
        // Appended as invocations end: not quite in start order.
        s.append_usage(&[
            rec("a", t, "1111111111111111", None, 10),
            rec("x", other, "9999999999999999", None, 20),
            rec("c", t, "3333333333333333", Some("2222222222222222"), 30),
            rec("b", t, "2222222222222222", Some("1111111111111111"), 20),
        ])
        .unwrap();
        let by_trace = s.trace(t).unwrap();
        let ids: Vec<&str> = by_trace.iter().map(|r| r.request_id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(
            by_trace[1],
            rec("b", t, "2222222222222222", Some("1111111111111111"), 20)
        );
        assert_eq!(s.trace("b").unwrap(), by_trace);
        assert_eq!(s.trace("x").unwrap().len(), 1);
        assert!(s.trace("nope").unwrap().is_empty());
        let usage = s.usage(0, UsageGroup::Trigger).unwrap();
        assert_eq!(usage[0].cpu_ms, 2.8);
        // Retention removes the records older than the cutoff, up to the first newer one
        // (an old record appended after it waits for the next pass); aggregates stay.
        s.prune_logs(1000, 25).unwrap();
        let ids: Vec<String> = s
            .trace(t)
            .unwrap()
            .into_iter()
            .map(|r| r.request_id)
            .collect();
        assert_eq!(ids, ["b", "c"]);
        s.prune_logs(1000, 1000).unwrap();
        assert!(s.trace(t).unwrap().is_empty());
        assert_eq!(s.usage(0, UsageGroup::Trigger).unwrap()[0].invocations, 4);
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SqliteStore::open(dir.path()).unwrap();
            s.deploy("app", &[spec("a", "1")], true).unwrap();
            s.record_artifact("1", 3).unwrap();
        }
        let s = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(s.function(&name("a")).unwrap().unwrap().active_version, 1);
        assert!(s.has_artifact("1").unwrap());
    }
}
