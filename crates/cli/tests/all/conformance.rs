//! What other tools read from a node, checked with those tools: `/metrics` with
//! `promtool check metrics` and a Prometheus server's scrape.
//!
//! The tools are not Rust crates: under `CI=true` a missing one fails the test; elsewhere
//! the test says what is missing and skips.

use crate::harness::*;
use serde_json::Value;
use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The `Accept` header Prometheus 2 scrapes with.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// `Some(())` when `ok`; otherwise skips (`None`, saying why and how to install it), or
/// fails the test under `CI=true`.
fn needed(ok: bool, what: &str, install: &str) -> Option<()> {
    if ok {
        return Some(());
    }
    let why = format!("{what} is missing: {install}");
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
    eprintln!("skipped: {why}");
    None
}

fn runs(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `GET /metrics` with `accept`: (content type, body).
fn scrape_as(node: &Node, accept: Option<&str>) -> (String, String) {
    let mut req = client()
        .get(format!("{}/metrics", node.api))
        .bearer_auth(node.token());
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let r = req.send().unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    (ct, r.text().unwrap())
}

/// Every sample belongs to a family with `# HELP` and `# TYPE`, each given once.
/// `openmetrics`: counter families are named without `_total`; else the metadata names
/// the sample itself.
fn assert_described(body: &str, openmetrics: bool) {
    let mut help = std::collections::HashMap::new();
    let mut types = std::collections::HashMap::new();
    for line in body.lines() {
        for (prefix, map) in [("# HELP ", &mut help), ("# TYPE ", &mut types)] {
            if let Some(rest) = line.strip_prefix(prefix) {
                let (name, value) = rest.split_once(' ').unwrap();
                assert!(
                    map.insert(name.to_string(), value.to_string()).is_none(),
                    "{prefix}{name} twice:\n{body}"
                );
            }
        }
    }
    assert_eq!(
        help.keys().collect::<std::collections::BTreeSet<_>>(),
        types.keys().collect(),
        "HELP and TYPE for the same families:\n{body}"
    );
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let sample = line.split(['{', ' ']).next().unwrap();
        let family = [
            (openmetrics.then_some("_total"), "counter"),
            (Some("_bucket"), "histogram"),
            (Some("_sum"), "histogram"),
            (Some("_count"), "histogram"),
        ]
        .into_iter()
        .find_map(|(suffix, ty)| {
            let f = sample.strip_suffix(suffix?)?;
            (types.get(f).map(String::as_str) == Some(ty)).then_some(f)
        })
        .unwrap_or(sample);
        assert!(
            types.contains_key(family),
            "{sample} has no # TYPE (family {family}):\n{body}"
        );
    }
}

/// Kills and reaps the child (a Prometheus server) when the test ends, pass or fail.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn metrics_pass_promtool_and_prometheus_scrapes_them_as_openmetrics() {
    let install = "apt-get install prometheus (promtool and the server)";
    if needed(
        runs(Command::new("promtool").arg("--version")),
        "promtool",
        install,
    )
    .is_none()
    {
        return;
    }
    let node = Node::start();
    let m = manifest(&format!(
        "app: prom\nfunctions:\n  echo:\n    source: {}\n    routes: [GET /echo]\n  crash:\n    source: {}\n    routes: [GET /crash]\n",
        src("echo"),
        src("panic")
    ));
    node.wisp_ok(&["deploy", &arg(&m)]);
    for _ in 0..3 {
        assert_eq!(node.get("/echo").0, 200);
    }
    assert_eq!(node.get("/crash").0, 500);
    node.wisp_ok(&["invoke", "echo"]);
    node.wisp_ok(&["invoke", "echo", "--async", "-d", "{}"]);
    // A queue with a message, so the queue families have samples (a label) too.
    node.wisp_ok(&["queue", "create", "jobs"]);
    node.wisp_ok(&["queue", "send", "jobs", "hello"]);

    // Without an Accept header (curl), and asked for it: the text format 0.0.4.
    let (ct, text) = scrape_as(&node, None);
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    assert_eq!(
        scrape_as(&node, Some("text/plain;version=0.0.4")).0,
        ct,
        "what the scraper asked for"
    );
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lint.stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = lint.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_described(&text, false);
    for line in [
        "# TYPE wisp_invocations_total counter",
        "# TYPE process_cpu_seconds_total counter",
        "# TYPE wisp_queue_depth gauge",
        r#"wisp_queue_depth{queue="jobs"} 1"#,
        "# TYPE wisp_async_events gauge",
    ] {
        assert!(text.lines().any(|l| l == line), "{line}:\n{text}");
    }
    assert!(!text.contains("# EOF"));

    // What a Prometheus server asks for: OpenMetrics.
    let (ct, om) = scrape_as(&node, Some(PROMETHEUS_ACCEPT));
    assert_eq!(
        ct,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(om.ends_with("\n# EOF\n"), "{om}");
    assert_eq!(om.matches("# EOF").count(), 1);
    assert_described(&om, true);
    assert!(
        om.lines()
            .any(|l| l == "# TYPE process_cpu_seconds counter")
    );
    assert!(
        om.lines()
            .any(|l| l.starts_with("process_cpu_seconds_total "))
    );

    // promtool lints only the text format; the OpenMetrics parser that matters is the
    // Prometheus server's, which negotiates the format as above. Scrape the node with one.
    let server = runs(Command::new("prometheus").arg("--version"));
    if needed(server, "the prometheus server", install).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let target = node.api.trim_start_matches("http://").to_string();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, scrape_timeout: 1s}}\nscrape_configs:\n  - job_name: wisp\n    authorization: {{credentials: {}}}\n    static_configs: [{{targets: ['{target}']}}]\n",
            node.token()
        ),
    )
    .unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _server = Reaped(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let api = |path: &str| -> Option<Value> {
        let r = client().get(format!("http://{web}{path}")).send().ok()?;
        r.json::<Value>().ok().map(|v| v["data"].clone())
    };
    let server_log =
        || std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    let target = wait_until(
        "Prometheus to scrape the node",
        Duration::from_secs(60),
        || {
            let t = api("/api/v1/targets")?["activeTargets"].get(0)?.clone();
            (t["health"] != "unknown").then_some(t)
        },
    );
    assert_eq!(target["health"], "up", "{target}\n{}", server_log());
    assert_eq!(target["lastError"], "", "{target}");
    // Parsed as OpenMetrics: the counter's metadata is its family's (`wisp_invocations`);
    // from the text format it would be `wisp_invocations_total`.
    let meta = wait_until("the scrape's metadata", Duration::from_secs(30), || {
        let m = api("/api/v1/metadata")?;
        m.get("wisp_invocations").is_some().then_some(m)
    });
    assert_eq!(meta["wisp_invocations"][0]["type"], "counter", "{meta}");
    assert_eq!(meta["process_cpu_seconds"][0]["type"], "counter", "{meta}");
    assert_eq!(meta["wisp_async_events"][0]["type"], "gauge", "{meta}");
    let query = |q: &str| api(&format!("/api/v1/query?query={q}")).unwrap()["result"].clone();
    let ok = query(r#"wisp_invocations_total{function="echo",trigger="http",outcome="success"}"#);
    assert_eq!(ok[0]["value"][1], "3", "{ok}");
    assert_eq!(
        query("process_cpu_seconds_total").as_array().unwrap().len(),
        1
    );
    let depth = query(r#"wisp_queue_depth{queue="jobs"}"#);
    assert_eq!(depth[0]["value"][1], "1", "{depth}");
}
