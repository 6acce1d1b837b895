use crate::client::{ApiArgs, Client};
use crate::output::print_json;
use anyhow::Result;
use std::collections::{BTreeMap, HashSet};
use std::process::ExitCode;

/// Show a trace: the tree of invocations one request caused, with their timings.
#[derive(clap::Args)]
pub struct Trace {
    /// A trace id (from the `x-wisp-trace-id` response header or `wisp invoke`), or the
    /// request id or async event id of one of its invocations.
    pub id: String,
    /// Print JSON instead of a tree.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

pub use wisp_api::traces::{Span, Trace as TraceDoc};

impl Trace {
    pub async fn execute(self) -> Result<ExitCode> {
        let client = Client::new(&self.api)?;
        let path = format!("/v1/traces/{}", self.id.trim());
        let doc: TraceDoc = client.get(&path).await?;
        if self.json {
            print_json(&doc)?;
            return Ok(ExitCode::SUCCESS);
        }
        print!("{}", render(&doc));
        Ok(ExitCode::SUCCESS)
    }
}

/// The trace as a tree: each invocation under the one that caused it, children in start
/// order, with its offset from the trace's first start and its duration.
pub fn render(doc: &TraceDoc) -> String {
    let t0 = doc.spans.iter().map(|s| s.start_ms).min().unwrap_or(0);
    let end = doc
        .spans
        .iter()
        .map(|s| s.start_ms as f64 + s.duration_ms)
        .fold(t0 as f64, f64::max);
    let known: HashSet<&str> = doc.spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut children: BTreeMap<Option<&str>, Vec<&Span>> = BTreeMap::new();
    for s in &doc.spans {
        let parent = s
            .parent_span_id
            .as_deref()
            .filter(|p| known.contains(p) && *p != s.span_id);
        children.entry(parent).or_default().push(s);
    }
    for list in children.values_mut() {
        list.sort_by_key(|s| s.start_ms);
    }
    let mut out = format!(
        "trace {}: {} invocation{}, {:.1} ms\n",
        doc.trace_id,
        doc.spans.len(),
        if doc.spans.len() == 1 { "" } else { "s" },
        end - t0 as f64
    );
    let mut seen = HashSet::new();
    let roots = children.get(&None).cloned().unwrap_or_default();
    let n = roots.len();
    for (i, s) in roots.into_iter().enumerate() {
        walk(s, "", i + 1 == n, t0, &children, &mut seen, &mut out);
    }
    // Spans in a parent cycle (corrupt records) are shown rather than lost.
    for s in &doc.spans {
        walk(s, "", true, t0, &children, &mut seen, &mut out);
    }
    out
}

fn walk<'a>(
    s: &'a Span,
    prefix: &str,
    last: bool,
    t0: i64,
    children: &BTreeMap<Option<&'a str>, Vec<&'a Span>>,
    seen: &mut HashSet<&'a str>,
    out: &mut String,
) {
    if !seen.insert(s.span_id.as_str()) {
        return;
    }
    let mut notes = Vec::new();
    if s.cold_start {
        notes.push(format!("cold, init {:.1} ms", s.init_ms));
    }
    if let Some(cpu) = s.cpu_ms {
        notes.push(format!("cpu {cpu:.1} ms"));
    }
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", notes.join(", "))
    };
    out.push_str(&format!(
        "{prefix}{} {} v{} [{}] +{} ms {:.1} ms {}{notes}  {}\n",
        if last { "└─" } else { "├─" },
        s.function,
        s.version,
        s.trigger.as_str(),
        s.start_ms - t0,
        s.duration_ms,
        s.outcome.as_str(),
        s.request_id
    ));
    let below = format!("{prefix}{}", if last { "   " } else { "│  " });
    let kids = children
        .get(&Some(s.span_id.as_str()))
        .cloned()
        .unwrap_or_default();
    let n = kids.len();
    for (i, k) in kids.into_iter().enumerate() {
        walk(k, &below, i + 1 == n, t0, children, seen, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: Option<&str>, f: &str, start_ms: i64) -> Span {
        Span {
            span_id: id.into(),
            parent_span_id: parent.map(str::to_string),
            request_id: format!("req-{f}"),
            function: f.into(),
            version: 1,
            trigger: wisp_core::Trigger::Http,
            start_ms,
            duration_ms: 10.0,
            init_ms: 0.0,
            cold_start: false,
            outcome: wisp_core::Outcome::Success,
            billed_ms: 10,
            cpu_ms: None,
        }
    }

    #[test]
    fn renders_children_under_their_parents_in_start_order() {
        let doc = TraceDoc {
            trace_id: "t".into(),
            spans: vec![
                span("a", Some("client"), "front", 100),
                span("c", Some("a"), "late", 130),
                span("b", Some("a"), "early", 110),
                span("d", Some("b"), "deep", 115),
            ],
        };
        let text = render(&doc);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "trace t: 4 invocations, 40.0 ms");
        assert!(
            lines[1].starts_with("└─ front v1 [http] +0 ms 10.0 ms success"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("   ├─ early v1 [http] +10 ms"),
            "{text}"
        );
        assert!(
            lines[3].starts_with("   │  └─ deep v1 [http] +15 ms"),
            "{text}"
        );
        assert!(
            lines[4].starts_with("   └─ late v1 [http] +30 ms"),
            "{text}"
        );
    }

    #[test]
    fn a_cycle_does_not_loop() {
        let doc = TraceDoc {
            trace_id: "t".into(),
            spans: vec![span("a", Some("b"), "x", 0), span("b", Some("a"), "y", 1)],
        };
        // Neither is a root; both are still shown, once, without endless recursion.
        assert_eq!(render(&doc).lines().count(), 3);
    }
}
