//! Wisp's domain types: functions, versions, routes, limits, invocations and log lines.
//!
//! This crate is pure data and logic: it does no I/O, starts no threads and knows nothing
//! about HTTP servers, SQLite or wasmtime. Every other crate depends on it, never the other
//! way round.
#![forbid(unsafe_code)]

mod changes;
mod limits;
mod name;
mod route;
mod runtime;
mod trace;
mod usage;

pub use changes::spec_changes;
pub use limits::{ByteSize, Limits, LimitsError, parse_byte_size, parse_duration_ms};
pub use name::{FunctionName, NameError};
pub use route::{Method, PathTemplate, RouteError, RouteMatch, RouteSpec, RouteTable, Segment};
pub use runtime::{
    AsyncConfig, NativeSpec, ObjectTrigger, QueueSubscription, Runtime, RuntimeError, ScheduleSpec,
    WebhookProvider, WebhookSpec,
};
pub use trace::{SpanContext, TraceParent};
pub use usage::{Bill, PriceSheet, UsageRecord, bill, billed_ms, gb_seconds};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a deploy asks for one function: everything that makes up a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionSpec {
    pub name: FunctionName,
    /// sha256 (hex) of what this function runs: a WebAssembly component, or for a native
    /// function the code bundle (a gzipped tar of its directory).
    pub artifact: String,
    /// Set for a native function: the Lambda runtime that runs the code bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native: Option<NativeSpec>,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: Limits,
    /// Opt-in: one instance serves one request after another (its memory persists between
    /// them, like a warm Lambda environment) instead of a fresh instance per request.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub instance_reuse: bool,
    /// Requests through the function's routes must carry a valid signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
    /// Schedules that invoke the function (asynchronously, through the event store).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<ScheduleSpec>,
    /// Object-storage events that invoke the function (asynchronously).
    #[serde(default, rename = "s3", skip_serializing_if = "Vec::is_empty")]
    pub object_triggers: Vec<ObjectTrigger>,
    /// Delivery of asynchronous invocations (retries, maximum age, destinations).
    #[serde(default, rename = "async", skip_serializing_if = "Option::is_none")]
    pub async_config: Option<AsyncConfig>,
    /// A queue whose messages invoke the function in batches.
    #[serde(default, rename = "queue", skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueSubscription>,
    /// Node services a WebAssembly function may call with outbound HTTP (all other
    /// outbound requests are denied).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbound: Vec<HostService>,
    /// The buckets the `objects` grant reaches (`outbound: [{objects: [a, b]}]`); empty:
    /// every bucket.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub object_buckets: Vec<String>,
}

/// A node service a WebAssembly function reaches by a virtual host name in outbound HTTP,
/// served inside the node (no network, no credentials in the function).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostService {
    /// The node's S3-compatible object store, at `http://objects.wisp/BUCKET/KEY`.
    Objects,
    /// The node's function gateway, at `http://self/PATH`: calls other functions'
    /// routes (with `X-Amz-Invocation-Type: Event`, asynchronously).
    #[serde(rename = "self")]
    Gateway,
}

impl HostService {
    pub const ALL: [HostService; 2] = [HostService::Objects, HostService::Gateway];

    /// The name in a manifest's `outbound:` list.
    pub fn name(self) -> &'static str {
        match self {
            HostService::Objects => "objects",
            HostService::Gateway => "self",
        }
    }

    /// The host name a function's requests use.
    pub fn host(self) -> &'static str {
        match self {
            HostService::Objects => "objects.wisp",
            HostService::Gateway => "self",
        }
    }
}

/// One immutable, numbered version of a function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub function: FunctionName,
    pub number: u32,
    pub spec: FunctionSpec,
    /// Unix time in milliseconds.
    pub created_at_ms: i64,
}

/// A deployed function: its app, and which version serves traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Function {
    pub name: FunctionName,
    pub app: String,
    pub active_version: u32,
    pub latest_version: u32,
    /// The spec of the active version.
    pub active: FunctionSpec,
}

/// What set an invocation off. Every trigger becomes an [`Invocation`] handed to the one invoker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// A request to the function gateway that matched one of the function's routes.
    Http,
    /// `wisp invoke` / `POST /v1/functions/{name}/invoke`.
    Api,
    /// An asynchronous invocation (`wisp invoke --async`), run from the durable event store.
    Async,
    /// A batch of messages from a queue the function subscribes to.
    Queue,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Http => "http",
            Trigger::Api => "api",
            Trigger::Async => "async",
            Trigger::Queue => "queue",
        }
    }
}

/// How an invocation ended, as seen by the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The function produced a response (whatever its status code).
    Success,
    /// The function trapped, panicked or returned no response.
    Error,
    /// The function ran past its timeout.
    Timeout,
    /// The function grew past its memory limit.
    OutOfMemory,
    /// The function's concurrency limit was reached; it did not run.
    Throttled,
}

impl Outcome {
    /// The name as serialized (`success`, `out_of_memory`...).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::OutOfMemory => "out_of_memory",
            Outcome::Throttled => "throttled",
        }
    }
}

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
    /// A line written by the platform about the invocation (errors, timeouts).
    Platform,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::Platform => "platform",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "stdout" => Some(LogStream::Stdout),
            "stderr" => Some(LogStream::Stderr),
            "platform" => Some(LogStream::Platform),
            _ => None,
        }
    }
}

/// One line of a function's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Monotonic id assigned by the store; 0 before it is stored.
    #[serde(default)]
    pub id: i64,
    /// Unix time in milliseconds.
    pub ts_ms: i64,
    pub function: String,
    pub version: u32,
    pub request_id: String,
    /// The W3C trace id of the invocation (32 hex characters; empty for old lines).
    #[serde(default)]
    pub trace_id: String,
    pub stream: LogStream,
    pub line: String,
}

/// Lowercase hex sha256 check: 64 characters of `[0-9a-f]`.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex_shape() {
        assert!(is_sha256_hex(&"a".repeat(64)));
        assert!(!is_sha256_hex(&"A".repeat(64)));
        assert!(!is_sha256_hex(&"a".repeat(63)));
        assert!(!is_sha256_hex("../../etc/passwd"));
    }

    #[test]
    fn function_spec_rejects_unknown_fields() {
        let err =
            serde_json::from_str::<FunctionSpec>(r#"{"name":"a","artifact":"x","routez":[]}"#)
                .unwrap_err();
        assert!(err.to_string().contains("routez"), "{err}");
    }
}
