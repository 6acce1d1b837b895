//! Wisp's durable state: apps, functions, versions, artifact metadata and function logs,
//! behind the [`Store`] trait, plus the content-addressed [`ArtifactDir`] on disk.
//!
//! The embedded backend, [`SqliteStore`], keeps everything in one SQLite database (WAL) in
//! the data directory and needs nothing installed. A cluster backend (NATS JetStream) will
//! implement the same trait. This crate knows nothing about HTTP or wasmtime.
#![forbid(unsafe_code)]

mod artifacts;
mod sqlite;

pub use artifacts::{ArtifactDir, BundleInfo};
pub use sqlite::SqliteStore;

use wisp_core::{Function, FunctionName, FunctionSpec, LogLine, UsageRecord, Version};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("function `{0}` not found: `wisp ls` lists the deployed functions")]
    FunctionNotFound(String),
    #[error(
        "function `{function}` has no version {version}: `wisp versions {function}` lists them"
    )]
    VersionNotFound { function: String, version: u32 },
    #[error(
        "function `{function}` already belongs to app `{owner}`: rename it in this manifest or remove it first with `wisp rm {function}`"
    )]
    OwnedByOtherApp { function: String, owner: String },
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What a deploy did to one function.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum DeployChange {
    /// A new version was created and now serves traffic.
    Created { function: String, version: u32 },
    /// The spec equals the active version's; nothing changed.
    Unchanged { function: String, version: u32 },
    /// The function was in the app but not in the manifest, and was removed.
    Removed { function: String },
}

/// Which log lines to read.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub function: Option<String>,
    pub request_id: Option<String>,
    /// Only lines at or after this Unix time (ms).
    pub since_ms: Option<i64>,
    /// Only lines with an id greater than this (for following and paging).
    pub after_id: Option<i64>,
    /// Only lines that contain this text (case-sensitive).
    pub grep: Option<String>,
    /// Only lines of invocations in this trace.
    pub trace_id: Option<String>,
    /// Only lines of this version of the function.
    pub version: Option<u32>,
    /// Only lines before this Unix time (ms).
    pub until_ms: Option<i64>,
    /// At most this many lines, returned oldest first: the newest ones, or with
    /// `after_id` the first ones after it.
    pub limit: usize,
}

/// How to group a usage report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsageGroup {
    Function,
    Day,
    Trigger,
}

/// A usage report's row: the sums over one group.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UsageRow {
    /// The function name, the day (`YYYY-MM-DD`, UTC) or the trigger.
    pub key: String,
    pub invocations: u64,
    pub errors: u64,
    pub billed_ms: u64,
    pub gb_seconds: f64,
    pub duration_ms: f64,
    pub cold_starts: u64,
    /// The most invocations running at once on the node, seen at any start in the group.
    pub peak_concurrency: u32,
    /// CPU time used, where measured.
    pub cpu_ms: f64,
}

/// Durable platform state. Implementations must make every method atomic.
pub trait Store: Send + Sync + 'static {
    /// Records that an artifact with this digest is stored and valid.
    fn record_artifact(&self, sha256: &str, size: u64) -> Result<()>;
    fn has_artifact(&self, sha256: &str) -> Result<bool>;

    /// Applies a deploy of `app` in one transaction: each spec that differs from its
    /// function's active version becomes a new active version; functions of the app that
    /// are not in `specs` are removed when `prune` is set.
    fn deploy(&self, app: &str, specs: &[FunctionSpec], prune: bool) -> Result<Vec<DeployChange>>;
    fn functions(&self) -> Result<Vec<Function>>;
    fn function(&self, name: &FunctionName) -> Result<Option<Function>>;
    fn versions(&self, name: &FunctionName) -> Result<Vec<Version>>;
    /// Makes `version` the active version of `name` (rollback or roll forward).
    fn set_active(&self, name: &FunctionName, version: u32) -> Result<Function>;
    /// Removes a function and its versions. Returns false if it did not exist.
    fn remove(&self, name: &FunctionName) -> Result<bool>;

    fn append_logs(&self, lines: &[LogLine]) -> Result<()>;
    fn logs(&self, query: &LogQuery) -> Result<Vec<LogLine>>;
    /// Keeps at most `keep_per_function` lines per function and none older than
    /// `older_than_ms`; returns how many lines were deleted.
    fn prune_logs(&self, keep_per_function: usize, older_than_ms: i64) -> Result<usize>;

    /// Stores metered invocations and adds them to the hourly aggregates, in one
    /// transaction.
    fn append_usage(&self, records: &[UsageRecord]) -> Result<()>;
    /// Sums of the hourly aggregates from `since_ms` (rounded down to the hour) to now.
    fn usage(&self, since_ms: i64, by: UsageGroup) -> Result<Vec<UsageRow>>;
    /// The invocations of one trace, by trace id or by the request id of one of its
    /// invocations, in start order (empty when unknown or pruned).
    fn trace(&self, id: &str) -> Result<Vec<UsageRecord>>;
    /// Saves functions' idle-time histograms (the adaptive keep-alive's memory), as JSON,
    /// replacing earlier ones: they outlive restarts and versions.
    fn put_idle_histograms(&self, histograms: &[(String, String)]) -> Result<()>;
    fn idle_histograms(&self) -> Result<Vec<(String, String)>>;
}
