//! Native (Lambda-style) runtimes: which interpreter runs a function and how it finds its
//! handler.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A native runtime, named as AWS Lambda names it: `python3.11`, `nodejs20.x`, `provided`
/// (also `provided.al2` and `provided.al2023`, which mean the same here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// CPython 3.`minor`.
    Python { minor: u32 },
    /// Node.js `major`.
    Nodejs { major: u32 },
    /// Any executable called `bootstrap` at the root of the function's code.
    Provided,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "unknown runtime `{0}`: use `python3.X` (e.g. python3.11), `nodejs<major>.x` (e.g. nodejs20.x) or `provided` (an executable named `bootstrap`)"
    )]
    Unknown(String),
    #[error("{0}")]
    Handler(String),
}

impl Runtime {
    pub fn parse(s: &str) -> Result<Runtime, RuntimeError> {
        let unknown = || RuntimeError::Unknown(s.to_string());
        if let Some(minor) = s.strip_prefix("python3.") {
            let minor: u32 = minor.parse().map_err(|_| unknown())?;
            return Ok(Runtime::Python { minor });
        }
        if let Some(major) = s.strip_prefix("nodejs") {
            let major = major.strip_suffix(".x").unwrap_or(major);
            let major: u32 = major.parse().map_err(|_| unknown())?;
            return Ok(Runtime::Nodejs { major });
        }
        match s {
            "provided" | "provided.al2" | "provided.al2023" => Ok(Runtime::Provided),
            _ => Err(unknown()),
        }
    }

    /// Whether functions of this runtime name a handler (`module.function`).
    pub fn needs_handler(self) -> bool {
        !matches!(self, Runtime::Provided)
    }

    /// Checks a handler string's shape: `file.function`, where `file` may have a directory
    /// part (`src/app.handler`) and Python may name a package (`pkg.app.handler`).
    pub fn check_handler(self, handler: &str) -> Result<(), RuntimeError> {
        if !self.needs_handler() {
            return Ok(());
        }
        let example = match self {
            Runtime::Python { .. } => "`app.handler` (function `handler` in app.py)",
            _ => "`index.handler` (export `handler` of index.js)",
        };
        let bad = |why: &str| {
            RuntimeError::Handler(format!("handler `{handler}` {why}: write e.g. {example}"))
        };
        if handler.is_empty() {
            return Err(bad("is empty"));
        }
        let Some((module, function)) = handler.rsplit_once('.') else {
            return Err(bad("has no `.` between the file and the function name"));
        };
        if module.is_empty() || function.is_empty() {
            return Err(bad("needs both a file and a function name"));
        }
        let ident = |s: &str| {
            s.chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_' || c == '$')
                && s.chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '$')
        };
        if !ident(function) {
            return Err(bad("does not end with a valid function name"));
        }
        if module.starts_with('/') || module.split('/').any(|p| p == ".." || p.is_empty()) {
            return Err(bad("must name a file inside the function's directory"));
        }
        Ok(())
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Runtime::Python { minor } => write!(f, "python3.{minor}"),
            Runtime::Nodejs { major } => write!(f, "nodejs{major}.x"),
            Runtime::Provided => f.write_str("provided"),
        }
    }
}

impl Serialize for Runtime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Runtime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Runtime::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What makes a function native: it runs in a sandboxed process that speaks the Lambda
/// Runtime API, from a code bundle (the function's `artifact`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NativeSpec {
    pub runtime: Runtime,
    /// `app.handler`, `index.handler`; empty for `provided`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub handler: String,
    /// Outbound network access. Off by default: the sandbox has only a loopback interface.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub network: bool,
}

/// A schedule that invokes the function: `rate(5 minutes)`, AWS `cron(0 9 ? * MON-FRI *)`,
/// or a standard 5-field cron, in a time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    pub expression: String,
    /// An IANA time zone (`Europe/Berlin`); UTC when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub timezone: String,
    /// Ticks missed while the node was down: run once at start (default), or skip them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_missed: bool,
}

/// Object-storage events that invoke the function: objects created in (or removed from)
/// a bucket of the node's S3-compatible store, filtered by key prefix and suffix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectTrigger {
    pub bucket: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub suffix: String,
    /// Also on removals (default: creations only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
    /// Creations (default true).
    #[serde(default = "yes", skip_serializing_if = "Clone::clone")]
    pub created: bool,
}

fn yes() -> bool {
    true
}

/// How asynchronous invocations of the function are delivered (Lambda's event invoke
/// config): retries after an error, how old an event may get, and where a record of each
/// outcome goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsyncConfig {
    /// Retries after a function error or timeout: 0, 1 or 2.
    pub max_retries: u32,
    /// Events older than this (seconds, 60 to 21600) go to the dead-letter queue unrun.
    pub max_event_age_s: u64,
    /// Where a destination record goes after each success: a function name, or
    /// `queue:NAME` for a queue (see [`AsyncConfig::destination_queue`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_success: Option<String>,
    /// Where a destination record goes when an event is dead-lettered (same forms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<String>,
}

impl AsyncConfig {
    /// How a destination names a queue rather than a function (`queue:failures`). Function
    /// names cannot contain `:`, so the two never mix up.
    pub const QUEUE_PREFIX: &'static str = "queue:";

    /// The queue a destination names (`queue:failures` gives `failures`), or `None` when it
    /// names a function.
    pub fn destination_queue(destination: &str) -> Option<&str> {
        destination.strip_prefix(Self::QUEUE_PREFIX)
    }
}

impl Default for AsyncConfig {
    fn default() -> Self {
        AsyncConfig {
            max_retries: 2,
            max_event_age_s: 6 * 3600,
            on_success: None,
            on_failure: None,
        }
    }
}

/// A function's subscription to a queue: batches of up to `batch_size` messages, collected
/// for up to `batch_window_ms` once the first arrives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSubscription {
    pub name: String,
    pub batch_size: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub batch_window_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A route that only accepts signed requests: an HMAC-SHA256 of the raw body, checked by
/// the gateway before any function runs (401 otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    pub provider: WebhookProvider,
    /// The function's env var that holds the shared secret (so the secret is stored and
    /// hidden like any env value).
    pub secret_env: String,
    /// Generic provider: the header that carries the signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Generic provider: `sha256=<hex>` (`prefixed-hex`, the default), `hex` or `base64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// Stripe: how old a signed timestamp may be, in seconds (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance_s: Option<u64>,
}

/// Whose signature format a webhook route checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookProvider {
    /// `X-Hub-Signature-256: sha256=<hex>`.
    Github,
    /// `Stripe-Signature: t=<unix>,v1=<hex>` over `t.body`, with a timestamp tolerance.
    Stripe,
    /// Any header carrying an HMAC-SHA256 of the body.
    Hmac,
}

impl WebhookProvider {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "github" => Some(WebhookProvider::Github),
            "stripe" => Some(WebhookProvider::Stripe),
            "hmac" | "hmac-sha256" => Some(WebhookProvider::Hmac),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_name_a_function_or_a_queue() {
        assert_eq!(
            AsyncConfig::destination_queue("queue:failures"),
            Some("failures")
        );
        assert_eq!(AsyncConfig::destination_queue("audit"), None);
        // Stored specs from before queue destinations still read as function names.
        let old: AsyncConfig = serde_json::from_str(
            r#"{"max_retries":0,"max_event_age_s":600,"on_failure":"catcher"}"#,
        )
        .unwrap();
        assert_eq!(old.on_failure.as_deref(), Some("catcher"));
    }

    #[test]
    fn runtimes_parse_and_print_as_lambda_names() {
        for (s, canonical) in [
            ("python3.11", "python3.11"),
            ("python3.9", "python3.9"),
            ("nodejs20.x", "nodejs20.x"),
            ("nodejs22", "nodejs22.x"),
            ("provided", "provided"),
            ("provided.al2023", "provided"),
        ] {
            assert_eq!(Runtime::parse(s).unwrap().to_string(), canonical);
        }
        for bad in [
            "python",
            "python3",
            "python3.x",
            "node20",
            "java21",
            "",
            "nodejs.x",
        ] {
            assert!(Runtime::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn handler_shapes() {
        let py = Runtime::Python { minor: 11 };
        let node = Runtime::Nodejs { major: 20 };
        for ok in [
            "app.handler",
            "pkg.app.handler",
            "src/app.main",
            "index.handler",
        ] {
            py.check_handler(ok).unwrap();
            node.check_handler(ok).unwrap();
        }
        for bad in [
            "",
            "handler",
            "app.",
            ".handler",
            "../x.handler",
            "/abs.handler",
            "a.1x",
        ] {
            let e = py.check_handler(bad).unwrap_err().to_string();
            assert!(e.contains("app.handler"), "{bad}: {e}");
        }
        Runtime::Provided.check_handler("").unwrap();
    }

    #[test]
    fn native_spec_round_trips_as_json() {
        let spec = NativeSpec {
            runtime: Runtime::Nodejs { major: 20 },
            handler: "index.handler".into(),
            network: false,
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(
            json,
            r#"{"runtime":"nodejs20.x","handler":"index.handler"}"#
        );
        assert_eq!(serde_json::from_str::<NativeSpec>(&json).unwrap(), spec);
        assert!(serde_json::from_str::<NativeSpec>(r#"{"runtime":"ruby3.2"}"#).is_err());
    }
}
