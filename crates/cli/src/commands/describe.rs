//! `wisp describe NAME`: one function's version, kind, limits, scaling, env names and every
//! trigger (routes, webhook, schedules with their next run, S3, queue, async settings).

use crate::client::{ApiArgs, Client, ensure_name};
use crate::output::print_json;
use anyhow::Result;
use serde_json::Value;
use std::process::ExitCode;
use wisp_core::ByteSize;

/// Show a function: version, kind, limits, scaling, env var names and its triggers.
#[derive(clap::Args)]
pub struct Describe {
    /// The function.
    pub name: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

impl Describe {
    pub async fn execute(self) -> Result<ExitCode> {
        ensure_name(&self.name)?;
        let client = Client::new(&self.api)?;
        let f: Value = client.get(&format!("/v1/functions/{}", self.name)).await?;
        if self.json {
            print_json(&f)?;
        } else {
            print!("{}", describe(&f));
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn list(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default()
}

fn duration_ms(ms: u64) -> String {
    match ms {
        0 => "0s".into(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

/// The text `wisp describe` prints.
pub fn describe(f: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut line = |k: &str, v: String| {
        let _ = writeln!(out, "  {k:<13}{v}");
    };
    let name = f["name"].as_str().unwrap_or("?");
    let head = format!("{name} (app {})\n", f["app"].as_str().unwrap_or("?"));
    line(
        "version",
        format!(
            "{} live, {} latest (`wisp versions {name}`)",
            f["version"], f["latest_version"]
        ),
    );
    let runtime = f["runtime"].as_str().unwrap_or("wasm");
    let kind = if runtime == "wasm" {
        let reuse = if f["instance_reuse"].as_bool() == Some(true) {
            "instances reused"
        } else {
            "a fresh instance per request"
        };
        format!("WebAssembly component, {reuse}")
    } else {
        let mut k = format!("native, runtime {runtime}");
        if let Some(h) = f["handler"].as_str().filter(|h| !h.is_empty()) {
            k.push_str(&format!(", handler {h}"));
        }
        let net = if f["network"].as_bool() == Some(true) {
            "on"
        } else {
            "off"
        };
        k.push_str(&format!(", network {net}"));
        k
    };
    line("kind", kind);
    if let Some(a) = f["artifact"].as_str() {
        line("artifact", a.chars().take(12).collect());
    }
    let l = &f["limits"];
    line(
        "limits",
        format!(
            "timeout {}, memory {}, max body {}",
            duration_ms(l["timeout_ms"].as_u64().unwrap_or(0)),
            ByteSize(l["memory_bytes"].as_u64().unwrap_or(0)),
            ByteSize(l["max_body_bytes"].as_u64().unwrap_or(0))
        ),
    );
    let sc = &f["scaling"];
    // The live values when the node has them; limits leave out zeros.
    let n = |k: &str| sc[k].as_u64().or(l[k].as_u64()).unwrap_or(0);
    let mut scaling = format!(
        "max concurrency {}, reserved {}, provisioned {}",
        n("max_concurrency"),
        n("reserved_concurrency"),
        n("provisioned_concurrency")
    );
    if let Some(running) = sc["running"].as_u64() {
        scaling.push_str(&format!("; now {running} running"));
        if let (Some(n), Some(idle)) = (sc["instances"].as_u64(), sc["idle"].as_u64()) {
            scaling.push_str(&format!(", {n} instances ({idle} idle)"));
        }
    }
    line("scaling", scaling);
    let env = list(&f["env"]);
    line(
        "env",
        if env.is_empty() {
            "-".into()
        } else {
            format!("{} (names only)", env.join(", "))
        },
    );
    let outbound = list(&f["outbound"]);
    if !outbound.is_empty() {
        let buckets = list(&f["object_buckets"]);
        let mut o = outbound.join(", ");
        if !buckets.is_empty() {
            o.push_str(&format!(" (objects in {})", buckets.join(", ")));
        }
        line("outbound", o);
    }
    let _ = writeln!(out, "triggers:");
    let mut triggers: Vec<(&str, String)> = Vec::new();
    let routes = list(&f["routes"]);
    if !routes.is_empty() {
        triggers.push(("http", routes.join(", ")));
    }
    let w = &f["webhook"];
    if let Some(provider) = w["provider"].as_str() {
        let header = w["header"].as_str().unwrap_or(match provider {
            "github" => "X-Hub-Signature-256",
            "stripe" => "Stripe-Signature",
            _ => "?",
        });
        triggers.push((
            "webhook",
            format!(
                "{provider}: header {header}, secret in env {}",
                w["secret_env"].as_str().unwrap_or("?")
            ),
        ));
    }
    for s in f["schedules"].as_array().into_iter().flatten() {
        let next = s["next_run"].as_str().unwrap_or("none");
        let skip = if s["skip_missed"].as_bool() == Some(true) {
            ", missed ticks skipped"
        } else {
            ""
        };
        triggers.push((
            "schedule",
            format!(
                "{} ({}{skip}), next run {next}",
                s["expression"].as_str().unwrap_or("?"),
                s["timezone"].as_str().unwrap_or("UTC")
            ),
        ));
    }
    for t in f["s3"].as_array().into_iter().flatten() {
        let mut v = format!(
            "bucket {}, on {}",
            t["bucket"].as_str().unwrap_or("?"),
            list(&t["events"]).join(" and ")
        );
        for k in ["prefix", "suffix"] {
            if let Some(x) = t[k].as_str().filter(|x| !x.is_empty()) {
                v.push_str(&format!(", {k} {x}"));
            }
        }
        triggers.push(("s3", v));
    }
    let q = &f["queue"];
    if let Some(qn) = q["name"].as_str() {
        let mut v = format!("{qn}, batches of up to {}", q["batch_size"]);
        if let Some(w) = q["batch_window_ms"].as_u64().filter(|w| *w > 0) {
            v.push_str(&format!(", window {}", duration_ms(w)));
        }
        triggers.push(("queue", v));
    }
    for (k, v) in &triggers {
        let _ = writeln!(out, "  {k:<13}{v}");
    }
    if triggers.is_empty() {
        let _ = writeln!(out, "  none: only `wisp invoke` runs it");
    }
    let a = &f["async"];
    let async_text = if a.is_object() {
        let mut v = format!(
            "{} retries, max event age {}",
            a["max_retries"],
            duration_ms(a["max_event_age_s"].as_u64().unwrap_or(0) * 1000)
        );
        for (k, label) in [("on_success", "on success"), ("on_failure", "on failure")] {
            if let Some(d) = a[k].as_str() {
                v.push_str(&format!(", {label} → {d}"));
            }
        }
        v
    } else {
        "2 retries, max event age 6h (defaults), no destinations".into()
    };
    let _ = writeln!(out, "  {:<13}{async_text}", "async");
    head + &out
}

/// The short form of a function's triggers for `wisp ls`:
/// `GET /hello, cron(0 9 * * ? *), s3:photos, queue:jobs, webhook:github`.
pub fn trigger_summary(f: &Value) -> String {
    let mut parts: Vec<String> = list(&f["routes"]).into_iter().map(String::from).collect();
    if let Some(p) = f["webhook"]["provider"].as_str() {
        parts.push(format!("webhook:{p}"));
    }
    for s in f["schedules"].as_array().into_iter().flatten() {
        if let Some(e) = s["expression"].as_str() {
            parts.push(e.to_string());
        }
    }
    for t in f["s3"].as_array().into_iter().flatten() {
        if let Some(b) = t["bucket"].as_str() {
            parts.push(format!("s3:{b}"));
        }
    }
    if let Some(q) = f["queue"]["name"].as_str() {
        parts.push(format!("queue:{q}"));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}
