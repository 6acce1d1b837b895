//! Prometheus metrics of invocations, kept by the invoker and served by the API at
//! `GET /metrics` in the text exposition format.
//!
//! Per-function handles are created once per registry build, so recording an invocation
//! touches only atomics: no label hashing or allocation on the request path.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use wisp_core::{Outcome, Trigger};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabel {
    function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InvocationLabels {
    function: String,
    trigger: String,
    outcome: String,
}

const OUTCOMES: [Outcome; 5] = [
    Outcome::Success,
    Outcome::Error,
    Outcome::Timeout,
    Outcome::OutOfMemory,
    Outcome::Throttled,
];
const TRIGGERS: [Trigger; 4] = [Trigger::Http, Trigger::Api, Trigger::Async, Trigger::Queue];

fn outcome_str(o: Outcome) -> &'static str {
    match o {
        Outcome::Success => "success",
        Outcome::Error => "error",
        Outcome::Timeout => "timeout",
        Outcome::OutOfMemory => "out_of_memory",
        Outcome::Throttled => "throttled",
    }
}

fn duration_histogram() -> Histogram {
    // 0.5 ms to about 65 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// The node's metric families.
pub struct Metrics {
    registry: Registry,
    invocations: Family<InvocationLabels, Counter>,
    duration: Family<FunctionLabel, Histogram, fn() -> Histogram>,
    cold_starts: Family<FunctionLabel, Counter>,
    concurrent: Family<FunctionLabel, Gauge>,
    throttles: Family<FunctionLabel, Counter>,
    process_rss: Gauge<f64, AtomicU64>,
    process_cpu: Gauge<f64, AtomicU64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// One function's metric handles.
#[derive(Clone, Debug)]
pub struct FunctionMetrics {
    /// Indexed by trigger, then outcome.
    invocations: Vec<Vec<Counter>>,
    pub duration: Histogram,
    pub cold_starts: Counter,
    pub concurrent: Gauge,
    pub throttles: Counter,
}

impl FunctionMetrics {
    pub fn invocation(&self, trigger: Trigger, outcome: Outcome) -> &Counter {
        let t = TRIGGERS.iter().position(|x| *x == trigger).unwrap_or(0);
        let o = OUTCOMES.iter().position(|x| *x == outcome).unwrap_or(0);
        &self.invocations[t][o]
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let invocations = Family::<InvocationLabels, Counter>::default();
        let duration = Family::<FunctionLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        let cold_starts = Family::<FunctionLabel, Counter>::default();
        let concurrent = Family::<FunctionLabel, Gauge>::default();
        let throttles = Family::<FunctionLabel, Counter>::default();
        let process_rss = Gauge::<f64, AtomicU64>::default();
        let process_cpu = Gauge::<f64, AtomicU64>::default();
        let process_start = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "wisp_invocations",
            "Invocations by function, trigger and outcome",
            invocations.clone(),
        );
        registry.register(
            "wisp_invocation_duration_seconds",
            "Wall-clock duration of invocations that ran",
            duration.clone(),
        );
        registry.register(
            "wisp_cold_starts",
            "Invocations that had to load the function's compiled code first",
            cold_starts.clone(),
        );
        registry.register(
            "wisp_concurrent_executions",
            "Invocations of the function running now",
            concurrent.clone(),
        );
        registry.register(
            "wisp_throttles",
            "Invocations refused because the function was at its concurrency limit",
            throttles.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the node process",
            process_rss.clone(),
        );
        registry.register(
            "process_cpu_seconds",
            "CPU time used by the node process (user + system)",
            process_cpu.clone(),
        );
        registry.register(
            "process_start_time_seconds",
            "Start time of the node process since the Unix epoch",
            process_start.clone(),
        );
        process_start.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        );
        Metrics {
            registry,
            invocations,
            duration,
            cold_starts,
            concurrent,
            throttles,
            process_rss,
            process_cpu,
        }
    }

    /// The handles of one function (created on first use, shared afterwards).
    pub fn function(&self, name: &str) -> FunctionMetrics {
        let label = FunctionLabel {
            function: name.to_string(),
        };
        FunctionMetrics {
            invocations: TRIGGERS
                .iter()
                .map(|t| {
                    OUTCOMES
                        .iter()
                        .map(|o| {
                            self.invocations
                                .get_or_create(&InvocationLabels {
                                    function: name.to_string(),
                                    trigger: t.as_str().to_string(),
                                    outcome: outcome_str(*o).to_string(),
                                })
                                .clone()
                        })
                        .collect()
                })
                .collect(),
            duration: self.duration.get_or_create(&label).clone(),
            cold_starts: self.cold_starts.get_or_create(&label).clone(),
            concurrent: self.concurrent.get_or_create(&label).clone(),
            throttles: self.throttles.get_or_create(&label).clone(),
        }
    }

    /// The text exposition of every metric, with process metrics read now.
    pub fn encode(&self) -> String {
        if let Some((rss, cpu)) = process_stats() {
            self.process_rss.set(rss);
            self.process_cpu.set(cpu);
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("encoding metrics: {e}");
        }
        out
    }
}

/// Resident bytes and CPU seconds of this process, from /proc (Linux).
fn process_stats() -> Option<(f64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let rss_kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // The kernel's USER_HZ is 100 on every Linux platform Wisp runs on.
    Some((rss_kib * 1024.0, ticks / 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_appear_in_the_exposition() {
        let m = Metrics::new();
        let f = m.function("hello");
        f.invocation(Trigger::Http, Outcome::Success).inc();
        f.invocation(Trigger::Http, Outcome::Success).inc();
        f.invocation(Trigger::Api, Outcome::Timeout).inc();
        f.duration.observe(0.002);
        f.throttles.inc();
        let text = m.encode();
        assert!(
            text.contains(
                r#"wisp_invocations_total{function="hello",trigger="http",outcome="success"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"wisp_invocations_total{function="hello",trigger="api",outcome="timeout"} 1"#
        ));
        assert!(text.contains(r#"wisp_throttles_total{function="hello"} 1"#));
        // Every trigger has its own label (queue and async runs were once counted as http).
        f.invocation(Trigger::Queue, Outcome::Success).inc();
        f.invocation(Trigger::Async, Outcome::Error).inc();
        let text = m.encode();
        assert!(
            text.contains(
                r#"wisp_invocations_total{function="hello",trigger="queue",outcome="success"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"wisp_invocations_total{function="hello",trigger="async",outcome="error"} 1"#
        ));
        assert!(text.contains(
            r#"wisp_invocations_total{function="hello",trigger="http",outcome="success"} 2"#
        ));
        assert!(text.contains("wisp_invocation_duration_seconds_count{function=\"hello\"} 1"));
        assert!(text.contains("process_resident_memory_bytes"));
    }
}
