//! Prometheus metrics of invocations, kept by the invoker and served by the API at
//! `GET /metrics`: OpenMetrics text when the scraper asks for it (a Prometheus server
//! does), else the Prometheus text format 0.0.4 (curl, `promtool check metrics`).
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
    recursion_stops: Family<FunctionLabel, Counter>,
    process_rss: Gauge<f64, AtomicU64>,
    process_cpu: Counter<f64, AtomicU64>,
}

/// An exposition format of `GET /metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text: counter families named without `_total`, `# EOF` at the end.
    OpenMetrics,
    /// The Prometheus text format 0.0.4: `# HELP`/`# TYPE` name the samples themselves.
    Text,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it accepts
    /// `application/openmetrics-text` at least as much as `text/plain` (what a Prometheus
    /// server sends), else the text format.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let (mut openmetrics, mut text) = (0.0f32, 0.0f32);
        for range in accept.unwrap_or_default().split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(Some(1.0), |(_, v)| v.trim().parse::<f32>().ok())
                .unwrap_or(0.0);
            match media.as_str() {
                "application/openmetrics-text" => openmetrics = openmetrics.max(q),
                "text/plain" => text = text.max(q),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    /// The `Content-Type` of a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
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
    pub recursion_stops: Counter,
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
        let recursion_stops = Family::<FunctionLabel, Counter>::default();
        let process_rss = Gauge::<f64, AtomicU64>::default();
        let process_cpu = Counter::<f64, AtomicU64>::default();
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
            "wisp_recursive_invocations_stopped",
            "Invocations refused because their chain of calls reached the recursion limit (depth 16)",
            recursion_stops.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the node process",
            process_rss.clone(),
        );
        registry.register(
            "process_cpu_seconds",
            "CPU time used by the node process (user + system), in seconds",
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
            recursion_stops,
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
            recursion_stops: self.recursion_stops.get_or_create(&label).clone(),
        }
    }

    /// `GET /metrics`: the content type and body in the format `accept` (the request's
    /// `Accept` header) asks for; see [`Metrics::encode`].
    pub fn exposition(&self, accept: Option<&str>, extra: &str) -> (&'static str, String) {
        let format = Format::negotiate(accept);
        (format.content_type(), self.encode(format, extra))
    }

    /// The exposition of every metric in `format`, with process metrics read now, and
    /// `extra` (families of gauges, `# HELP`, `# TYPE` and samples, which read the same in
    /// both formats) after them.
    pub fn encode(&self, format: Format, extra: &str) -> String {
        if let Some((rss, cpu)) = process_stats() {
            self.process_rss.set(rss);
            // CPU time only grows; the maximum keeps the counter monotonic under
            // concurrent scrapes (non-negative floats order as their bits do).
            self.process_cpu
                .inner()
                .fetch_max(cpu.to_bits(), std::sync::atomic::Ordering::Relaxed);
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)
        {
            tracing::error!("encoding metrics: {e}");
        }
        out.push_str(extra);
        match format {
            Format::OpenMetrics => out.push_str("# EOF\n"),
            Format::Text => out = openmetrics_to_text(&out),
        }
        out
    }
}

/// OpenMetrics text (without `# EOF`) as the Prometheus text format 0.0.4: there a
/// counter's `# HELP` and `# TYPE` name its samples (`x_total`), not the family (`x`), and
/// `# UNIT` does not exist. Samples, labels and values are written the same in both.
fn openmetrics_to_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            _ if line.starts_with("# UNIT ") || line == "# EOF" => continue,
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
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
        let text = m.encode(Format::OpenMetrics, "");
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
        f.recursion_stops.inc();
        let text = m.encode(Format::OpenMetrics, "");
        assert!(
            text.contains(r#"wisp_recursive_invocations_stopped_total{function="hello"} 1"#),
            "{text}"
        );
        // Every trigger has its own label (queue and async runs were once counted as http).
        f.invocation(Trigger::Queue, Outcome::Success).inc();
        f.invocation(Trigger::Async, Outcome::Error).inc();
        let text = m.encode(Format::OpenMetrics, "");
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
        assert!(
            text.contains("# TYPE process_cpu_seconds counter\n"),
            "{text}"
        );
        assert!(text.contains("\nprocess_cpu_seconds_total "), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn the_text_format_names_counter_samples_in_help_and_type() {
        let m = Metrics::new();
        m.function("hello")
            .invocation(Trigger::Http, Outcome::Success)
            .inc();
        let extra = "# HELP wisp_x A gauge.\n# TYPE wisp_x gauge\nwisp_x{q=\"a\"} 1\n";
        let om = m.encode(Format::OpenMetrics, extra);
        assert!(om.contains("# TYPE wisp_invocations counter\n"), "{om}");
        assert!(om.ends_with(&format!("{extra}# EOF\n")), "{om}");
        let text = m.encode(Format::Text, extra);
        for family in [
            "wisp_invocations_total",
            "wisp_cold_starts_total",
            "wisp_throttles_total",
            "process_cpu_seconds_total",
        ] {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("# HELP {family} "))),
                "{family}: {text}"
            );
            assert!(
                text.lines()
                    .any(|l| l == format!("# TYPE {family} counter")),
                "{family}: {text}"
            );
        }
        assert!(text.contains("# TYPE wisp_invocation_duration_seconds histogram\n"));
        assert!(text.contains("# TYPE process_resident_memory_bytes gauge\n"));
        assert!(text.contains(
            "\nwisp_invocations_total{function=\"hello\",trigger=\"http\",outcome=\"success\"} 1\n"
        ));
        assert!(text.ends_with(extra), "{text}");
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
    }

    #[test]
    fn the_accept_header_chooses_the_format() {
        use Format::*;
        let prometheus_2 = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let prometheus_3 = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1";
        let text_first =
            "text/plain;version=0.0.4;q=0.9,application/openmetrics-text;version=1.0.0;q=0.5";
        for (accept, want) in [
            (Some(prometheus_2), OpenMetrics),
            (Some(prometheus_3), OpenMetrics),
            (Some("Application/OpenMetrics-Text"), OpenMetrics),
            (Some(text_first), Text),
            (Some("text/plain;version=0.0.4"), Text),
            (Some("application/openmetrics-text;q=0"), Text),
            (Some("*/*"), Text),
            (None, Text),
        ] {
            assert_eq!(Format::negotiate(accept), want, "{accept:?}");
        }
        let (ct, body) = Metrics::new().exposition(Some(prometheus_2), "");
        assert!(ct.starts_with("application/openmetrics-text; version=1.0.0"));
        assert!(body.ends_with("# EOF\n"));
        let (ct, body) = Metrics::new().exposition(None, "");
        assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
        assert!(!body.contains("# EOF"));
    }
}
