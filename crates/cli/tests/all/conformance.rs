//! What other tools read from a node, checked with those tools: `/metrics` with
//! `promtool check metrics` and a Prometheus server's scrape, and the CloudEvents that
//! WebAssembly functions get with the CloudEvents SDKs for Python and JavaScript.
//!
//! The tools are not Rust crates: under `CI=true` a missing one fails the test; elsewhere
//! the test says what is missing and skips.

use crate::events::run_boto3;
use crate::harness::*;
use serde_json::Value;
use std::io::Write as _;
use std::path::PathBuf;
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

fn home_cache(rest: &str) -> PathBuf {
    PathBuf::from(std::env::var("HOME").unwrap_or_default())
        .join(".cache")
        .join(rest)
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

/// A Python with boto3 and the `cloudevents` SDK: `WISP_BOTO3_PYTHON`, else the CI's venv,
/// else `python3`.
fn cloudevents_python() -> Option<String> {
    let venv = home_cache("wisp-s3-venv/bin/python");
    let python = std::env::var("WISP_BOTO3_PYTHON").unwrap_or_else(|_| {
        if venv.exists() {
            venv.display().to_string()
        } else {
            "python3".into()
        }
    });
    let ok = runs(Command::new(&python).args(["-c", "import boto3, cloudevents"]));
    let install = format!(
        "{python} cannot import boto3 and cloudevents (python3 -m venv ~/.cache/wisp-s3-venv; ~/.cache/wisp-s3-venv/bin/pip install boto3 cloudevents; or set WISP_BOTO3_PYTHON)"
    );
    needed(ok, "the Python CloudEvents SDK", &install).map(|()| python)
}

/// The folder with `node_modules/cloudevents` (8.x): `WISP_NPM_DIR`, else `~/.cache/wisp-npm`.
fn cloudevents_npm() -> Option<PathBuf> {
    let dir = std::env::var("WISP_NPM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| home_cache("wisp-npm"));
    let ok = runs(
        Command::new("node")
            .args(["-e", "require('cloudevents').HTTP.toEvent"])
            .env("NODE_PATH", dir.join("node_modules")),
    );
    let install = format!(
        "node cannot require cloudevents from {} (npm install --prefix ~/.cache/wisp-npm cloudevents@8)",
        dir.display()
    );
    needed(ok, "the npm CloudEvents SDK", &install).map(|()| dir)
}

/// Parses the HTTP request in `file` (`{"headers": {...}, "body": "..."}`) with the
/// Python SDK's `from_http`: the event's attributes and data as JSON.
const PYTHON_PARSE: &str = r#"
import json, sys
req = json.load(open(sys.argv[1]))
try:
    from cloudevents.http import from_http  # cloudevents 1.x
except ImportError:
    from cloudevents.v1.http import from_http  # 2.x keeps the 1.x API here
ev = from_http(req["headers"], req["body"])
out = {k: ev.get(k) for k in ["specversion", "id", "source", "type", "subject", "time", "datacontenttype", "traceparent", "tracestate"]}
out["data"] = ev.data
try:
    from cloudevents.core.bindings import http  # 2.x's own API
except ImportError:
    http = None
if http is not None:
    ev2 = http.from_http_event(http.HTTPMessage(headers=req["headers"], body=req["body"].encode()))
    assert ev2.get_id() == out["id"] and ev2.get_data() == out["data"], (ev2, out)
    assert ev2.get_time().isoformat().startswith(out["time"][:19]), (ev2.get_time(), out["time"])
print(json.dumps(out))
"#;

/// The same with the npm SDK's `HTTP.toEvent`, which validates the attributes.
const NODE_PARSE: &str = r#"
const { HTTP } = require("cloudevents");
const req = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
const ev = HTTP.toEvent({ headers: req.headers, body: req.body });
const out = {};
for (const k of ["specversion", "id", "source", "type", "subject", "time", "datacontenttype", "traceparent", "tracestate"]) out[k] = ev[k] ?? null;
out.data = ev.data;
console.log(JSON.stringify(out));
"#;

fn parsed(cmd: &mut Command, what: &str) -> Value {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what} printed {:?}: {e}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The trace id of a W3C `traceparent` (`00-TRACE-SPAN-01`), checking its shape.
fn trace_id(tp: &str) -> &str {
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(
        (parts[0], parts[1].len(), parts[2].len()),
        ("00", 32, 16),
        "{tp}"
    );
    assert!(
        tp.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()),
        "{tp}"
    );
    parts[1]
}

/// Parses the request a function got (the `echo` fixture's answer: headers and body) with
/// both SDKs, checks what every event the node makes has, and returns the event as each
/// SDK read it.
fn read_with_sdks(
    python: &str,
    npm: &std::path::Path,
    echoed: &Value,
) -> [(&'static str, Value); 2] {
    let headers = &echoed["headers"];
    assert_eq!(
        headers["content-type"], "application/cloudevents+json; charset=utf-8",
        "structured mode: {echoed}"
    );
    let request = serde_json::json!({ "headers": headers, "body": echoed["body"] });
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), request.to_string()).unwrap();
    let from_python = parsed(
        Command::new(python)
            .args(["-c", PYTHON_PARSE])
            .arg(file.path()),
        "the Python SDK",
    );
    let from_node = parsed(
        Command::new("node")
            .args(["-e", NODE_PARSE])
            .arg(file.path())
            .env("NODE_PATH", npm.join("node_modules")),
        "the npm SDK",
    );
    for (sdk, ev) in [("python", &from_python), ("npm", &from_node)] {
        assert_eq!(ev["specversion"], "1.0", "{sdk}: {ev}");
        assert!(!ev["id"].as_str().unwrap().is_empty(), "{sdk}: {ev}");
        assert_eq!(ev["datacontenttype"], "application/json", "{sdk}: {ev}");
        // `time` (RFC 3339): when it happened, a moment ago.
        let time: wisp_events::Timestamp = ev["time"].as_str().unwrap().parse().unwrap();
        let age = time.duration_until(wisp_events::Timestamp::now()).as_secs();
        assert!((0..180).contains(&age), "{sdk}: time {time} is {age} s old");
        // The distributed-tracing extension: the trace the function runs in.
        let tp = ev["traceparent"].as_str().unwrap();
        assert_eq!(
            trace_id(tp),
            trace_id(headers["traceparent"].as_str().unwrap()),
            "{sdk}: the event's trace is the invocation's: {ev} {headers}"
        );
    }
    for attr in ["id", "source", "type", "time", "traceparent", "data"] {
        assert_eq!(from_python[attr], from_node[attr], "{attr}");
    }
    [("python", from_python), ("npm", from_node)]
}

/// S3 object events and schedule ticks, the events the node makes for WebAssembly
/// functions, as the CloudEvents SDKs read them from the HTTP request the function got.
/// (The first tick of `* * * * *` comes at the next full minute: up to a minute.)
#[test]
fn s3_events_and_ticks_reach_webassembly_functions_as_cloudevents_the_sdks_read() {
    let (Some(python), Some(npm)) = (cloudevents_python(), cloudevents_npm()) else {
        return;
    };
    let node = Node::start();
    let bucket = format!("inbox-{}", std::process::id());
    // `echo` answers with the request it got; on success the answer goes, inside Lambda's
    // destination record, to a queue this test reads.
    let m = manifest(&format!(
        r#"app: ce
functions:
  sink:
    source: {echo}
    s3:
      bucket: {bucket}
    async:
      on_success: queue:captured
  ticker:
    source: {echo}
    schedule: "* * * * *"
    async:
      on_success: queue:captured
"#,
        echo = src("echo"),
    ));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let script = r#"
import os
s3.create_bucket(Bucket=os.environ["BUCKET"])
s3.put_object(Bucket=os.environ["BUCKET"], Key="docs/a b.txt", Body=b"hello")
"#;
    let out = run_boto3(&node, &python, script, &[("BUCKET", bucket.clone())]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The echoed requests by the function that got them.
    let mut echoed = std::collections::BTreeMap::<String, Value>::new();
    wait_until(
        "the upload's and the tick's events",
        Duration::from_secs(150),
        || {
            let out = node.wisp_ok(&[
                "queue", "receive", "captured", "--delete", "--json", "--max", "10",
            ]);
            for m in serde_json::from_str::<Vec<Value>>(&out).unwrap() {
                let record: Value = serde_json::from_str(m["body"].as_str().unwrap()).unwrap();
                let arn = record["requestContext"]["functionArn"].as_str().unwrap();
                let function = arn
                    .split(":function:")
                    .nth(1)
                    .unwrap()
                    .split(':')
                    .next()
                    .unwrap();
                echoed.insert(function.to_string(), record["responsePayload"].clone());
            }
            (echoed.len() == 2).then_some(())
        },
    );

    for (sdk, ev) in read_with_sdks(&python, &npm, &echoed["sink"]) {
        assert_eq!(ev["source"], format!("wisp:s3:{bucket}"), "{sdk}: {ev}");
        assert_eq!(ev["type"], "wisp.s3.ObjectCreated:Put", "{sdk}: {ev}");
        assert_eq!(ev["subject"], "docs/a b.txt", "{sdk}: {ev}");
        let data = &ev["data"];
        assert_eq!(data["eventName"], "ObjectCreated:Put", "{sdk}: {ev}");
        assert_eq!(data["eventTime"], ev["time"], "{sdk}: {ev}");
        assert_eq!(data["s3"]["object"]["key"], "docs/a+b.txt", "{sdk}: {ev}");
        assert_eq!(data["s3"]["object"]["size"], 5, "{sdk}: {ev}");
    }
    for (sdk, ev) in read_with_sdks(&python, &npm, &echoed["ticker"]) {
        assert_eq!(ev["source"], "/wisp/schedules/ticker", "{sdk}: {ev}");
        assert_eq!(ev["type"], "wisp.schedule.tick", "{sdk}: {ev}");
        assert_eq!(ev["data"]["schedule"], "ticker", "{sdk}: {ev}");
        assert!(
            ev["time"].as_str().unwrap().ends_with(":00.000Z"),
            "the tick's minute: {ev}"
        );
    }
}
