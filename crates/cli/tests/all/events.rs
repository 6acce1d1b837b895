//! Asynchronous invocations: durable, retried, dead-lettered, redriven; none lost when
//! the node is killed.

use crate::harness::*;
use crate::native::{native, with_host_runtimes};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::time::Duration;

/// A Python handler that prints `PREFIX <event as JSON>`, so a test can read the event
/// from `wisp logs`.
fn printing_function(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.py"),
        format!(
            "import json\n\ndef handler(event, context):\n    print('{prefix} ' + json.dumps(event))\n    return {{}}\n"
        ),
    )
    .unwrap();
    dir
}

/// Waits (at most `timeout`) for the first `PREFIX <JSON>` line a [`printing_function`]
/// wrote to `function`'s logs, and returns the JSON.
fn printed_event(
    node: &Node,
    function: &str,
    prefix: &str,
    what: &str,
    timeout: Duration,
) -> Value {
    let marker = format!("{prefix} ");
    wait_until(what, timeout, || {
        let logs = node.wisp_ok(&["logs", function]);
        let line = logs.lines().find(|l| l.contains(&marker))?;
        serde_json::from_str(line.split_once(&marker)?.1).ok()
    })
}

fn invoke_async(node: &Node, name: &str, event: &Value) -> String {
    let out = node.wisp_ok(&["invoke", name, "--async", "-d", &event.to_string()]);
    let id = out.trim().to_string();
    assert_eq!(id.len(), 36, "an event id: {out:?}");
    id
}

#[test]
fn failing_async_events_are_retried_twice_then_dead_lettered_and_redrive_runs_them_again() {
    let node = Node::start();
    let yaml = |dir: &str| {
        with_host_runtimes(&format!(
            r#"app: async
functions:
  flaky:
    source: {dir}
    runtime: python3.11
    handler: app.handler
"#
        ))
    };
    let m = manifest(&yaml(&native("python-echo")));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let ok = invoke_async(&node, "flaky", &json!({"hello": 1}));
    let bad = invoke_async(&node, "flaky", &json!({"fail": "boom"}));
    let done = wait_until("the good event to succeed", Duration::from_secs(20), || {
        let v: Value = serde_json::from_str(&node.wisp_ok(&["events", &ok])).ok()?;
        (v["state"] == "succeeded").then_some(v)
    });
    assert_eq!(done["attempts"], 1, "{done}");
    // 1 attempt + 2 retries (backoff about 1 s, then about 2 s), then the DLQ.
    let dead = wait_until("the bad event in the DLQ", Duration::from_secs(30), || {
        let list: Vec<Value> =
            serde_json::from_str(&node.wisp_ok(&["dlq", "ls", "flaky", "--json"])).ok()?;
        list.into_iter().next()
    });
    assert_eq!(dead["event_id"], bad.as_str());
    assert_eq!(dead["attempts"], 3, "{dead}");
    assert_eq!(dead["reason"], "RetriesExhausted");
    assert!(dead["error"].as_str().unwrap().contains("boom"), "{dead}");
    assert_eq!(dead["payload"], r#"{"fail":"boom"}"#);
    // Each attempt ran under the event's id as request id.
    let logs = node.wisp_ok(&["logs", "flaky", "--request-id", &bad]);
    assert_eq!(logs.matches("START RequestId").count(), 3, "{logs}");
    let text = node.wisp_ok(&["dlq", "ls", "flaky"]);
    assert!(
        text.contains(&bad) && text.contains("RetriesExhausted"),
        "{text}"
    );

    // Fix the function, then redrive: the event runs again and succeeds.
    let fixed = manifest(&yaml(&native("python-hello")));
    node.wisp_ok(&["deploy", &arg(&fixed)]);
    let out = node.wisp(&["dlq", "redrive", "flaky"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 event(s)"));
    wait_until(
        "the redriven event to succeed",
        Duration::from_secs(20),
        || {
            let v: Value = serde_json::from_str(&node.wisp_ok(&["events", &bad])).ok()?;
            (v["state"] == "succeeded").then_some(())
        },
    );
    assert_eq!(node.wisp_ok(&["dlq", "ls", "flaky", "--json"]).trim(), "[]");
    let err = node.wisp_err(&["events", "not-a-uuid"]);
    assert!(err.contains("not an event id"), "{err}");
}

/// A Redis command over RESP; returns the integer reply.
fn redis(cmd: &[&str]) -> i64 {
    let mut s = std::net::TcpStream::connect("127.0.0.1:6379").expect("redis on 6379");
    let mut out = format!("*{}\r\n", cmd.len());
    for a in cmd {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(out.as_bytes()).unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap();
    let reply = String::from_utf8_lossy(&buf[..n]);
    // `:N` (an integer) or `$len\r\nN` (a bulk string, e.g. GET of a counter).
    let value = match reply.strip_prefix('$') {
        Some(bulk) => bulk.split("\r\n").nth(1).unwrap_or(""),
        None => reply.trim().trim_start_matches(':'),
    };
    value
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("redis said {reply:?}"))
}

#[test]
fn ten_thousand_accepted_events_survive_a_sigkill_of_the_node() {
    let mut node = Node::start();
    let m = manifest(&with_host_runtimes(&format!(
        r#"app: durable
functions:
  counter:
    source: {dir}
    runtime: python3.11
    handler: app.handler
    network: true
    limits:
      max_concurrency: 4
"#,
        dir = native("python-redis-counter"),
    )));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let key = format!("wisp-test-{}-{}", std::process::id(), rand_id());
    let url = format!("{}/v1/functions/counter/invoke?async=true", node.api);
    let token = node.token();
    const N: usize = 10_000;
    const SENDERS: usize = 8;
    // All 10,000 are accepted (202: stored durably) first; processing (4 at a time, a few
    // ms each) lags behind, and the node is killed half-way through it.
    let senders: Vec<_> = (0..SENDERS)
        .map(|t| {
            let (url, token, key) = (url.clone(), token.clone(), key.clone());
            std::thread::spawn(move || {
                let c = client();
                let mut accepted = Vec::new();
                for n in (t..N).step_by(SENDERS) {
                    let r = c
                        .post(&url)
                        .bearer_auth(&token)
                        .body(json!({"key": key, "n": n, "sleep_ms": 2}).to_string())
                        .send()
                        .expect("the node is up while events are sent");
                    assert_eq!(r.status(), 202);
                    accepted.push(n);
                }
                accepted
            })
        })
        .collect();
    let accepted: Vec<usize> = senders
        .into_iter()
        .flat_map(|s| s.join().unwrap())
        .collect();
    assert_eq!(accepted.len(), N);
    wait_until(
        "a part of the events processed",
        Duration::from_secs(120),
        || (redis(&["SCARD", &key]) >= 1000).then_some(()),
    );
    node.kill9();
    let processed_before = redis(&["SCARD", &key]);
    assert!(
        (processed_before as usize) < N,
        "the kill should interrupt processing ({processed_before} of {N})"
    );
    // Restart on the same data: every accepted event is delivered. (Events stored just
    // before the kill, whose 202 never reached a sender, may run too: at least once.)
    let node = Node::start_in(&node.data_dir);
    wait_until(
        "every accepted event processed",
        Duration::from_secs(300),
        || (missing(&key, &accepted) == 0).then_some(()),
    );
    let distinct = redis(&["SCARD", &key]);
    let deliveries = redis(&["GET", &format!("{key}:deliveries")]);
    eprintln!(
        "accepted {} events; processed {} distinct ({} before the kill) in {} deliveries: {} duplicates",
        accepted.len(),
        distinct,
        processed_before,
        deliveries,
        deliveries - distinct
    );
    assert!(distinct as usize >= accepted.len());
    assert!(distinct as usize <= N, "nothing invented");
    assert!(deliveries >= distinct);
    drop(node);
    redis(&["DEL", &key, &format!("{key}:deliveries")]);
}

/// How many of `ns` are not members of the Redis set `key` (one pipelined SMISMEMBER).
fn missing(key: &str, ns: &[usize]) -> usize {
    let mut s = std::net::TcpStream::connect("127.0.0.1:6379").expect("redis on 6379");
    let args: Vec<String> = ["SMISMEMBER".to_string(), key.to_string()]
        .into_iter()
        .chain(ns.iter().map(|n| n.to_string()))
        .collect();
    let mut out = format!("*{}\r\n", args.len());
    for a in &args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(out.as_bytes()).unwrap();
    // `*N` then N lines of `:0` / `:1`.
    let mut reply = Vec::new();
    let mut buf = [0u8; 65536];
    while reply.iter().filter(|b| **b == b'\n').count() < ns.len() + 1 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "redis closed the connection");
        reply.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&reply)
        .lines()
        .skip(1)
        .filter(|l| l.trim() == ":0")
        .count()
}

fn rand_id() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
}

#[test]
fn webhook_routes_run_only_for_valid_signatures() {
    let node = Node::start();
    let m = manifest(&format!(
        r#"app: hooks
functions:
  github:
    source: {echo}
    routes: [POST /hooks/github]
    env:
      GH_SECRET: it's a secret to everybody
    webhook:
      provider: github
      secret_env: GH_SECRET
  stripe:
    source: {echo}
    routes: [POST /hooks/stripe]
    env:
      STRIPE_SECRET: whsec_test
    webhook: {{provider: stripe, secret_env: STRIPE_SECRET, tolerance: 5m}}
"#,
        echo = src("echo"),
    ));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let body = r#"{"action":"opened"}"#;
    let post = |path: &str, headers: &[(&str, String)]| {
        let mut r = client().post(node.url(path)).body(body);
        for (k, v) in headers {
            r = r.header(*k, v);
        }
        let r = r.send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    let good = wisp_events::webhook::sign_github(b"it's a secret to everybody", body.as_bytes());
    assert_eq!(
        post("/hooks/github", &[("x-hub-signature-256", good)]).0,
        200
    );
    let (status, text) = post(
        "/hooks/github",
        &[("x-hub-signature-256", format!("sha256={}", "0".repeat(64)))],
    );
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("signature"), "{text}");
    let (status, text) = post("/hooks/github", &[]);
    assert_eq!(status, 401, "{text}");
    assert!(
        text.to_lowercase().contains("x-hub-signature-256"),
        "{text}"
    );

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let fresh = wisp_events::webhook::sign_stripe(b"whsec_test", now, body.as_bytes());
    assert_eq!(post("/hooks/stripe", &[("stripe-signature", fresh)]).0, 200);
    let replayed = wisp_events::webhook::sign_stripe(b"whsec_test", now - 600, body.as_bytes());
    let (status, text) = post("/hooks/stripe", &[("stripe-signature", replayed)]);
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("old"), "{text}");
    // The functions never saw the refused requests: one invocation each, the signed one.
    let m = crate::metrics::scrape(&node);
    for f in ["github", "stripe"] {
        let ran = crate::metrics::value(&m, "wisp_invocations_total", &[("function", f)]);
        assert_eq!(ran, 1.0, "{f} ran {ran} times");
    }
}

#[test]
fn a_scheduled_function_runs_on_its_tick_with_the_eventbridge_event() {
    let node = Node::start();
    let code = printing_function("EVENT");
    let m = manifest(&with_host_runtimes(&format!(
        r#"app: cron
functions:
  every-minute:
    source: {dir}
    runtime: python3.11
    handler: app.handler
    schedule:
      expression: "* * * * *"
      timezone: Europe/Berlin
"#,
        dir = code.path().display(),
    )));
    node.wisp_ok(&["deploy", &arg(&m)]);
    // The next minute boundary, plus dispatch: at most about 70 s.
    let event: Value = printed_event(
        &node,
        "every-minute",
        "EVENT",
        "the first tick",
        Duration::from_secs(90),
    );
    assert_eq!(event["detail-type"], "Scheduled Event", "{event}");
    assert_eq!(event["source"], "aws.events");
    assert!(
        event["resources"][0]
            .as_str()
            .unwrap()
            .ends_with("rule/every-minute"),
        "{event}"
    );
    assert!(event["time"].as_str().unwrap().ends_with(":00Z"), "{event}");
    // A bad expression is refused at deploy time, naming the line.
    let bad = manifest(&with_host_runtimes(&format!(
        "app: cron\nfunctions:\n  every-minute:\n    source: {}\n    runtime: python3.11\n    handler: app.handler\n    schedule: rate(5 minute)\n",
        code.path().display()
    )));
    let err = node.wisp_err(&["deploy", &arg(&bad)]);
    assert!(err.contains("wisp.yaml:7"), "{err}");
    assert!(err.contains("rate(5 minute)"), "{err}");
}

/// A Python that has boto3: `WISP_BOTO3_PYTHON`, else `python3`; `None` (the test is
/// skipped, saying why) when neither imports it.
pub fn boto3_python() -> Option<String> {
    let python = std::env::var("WISP_BOTO3_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&python)
        .args(["-c", "import boto3"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and {python} cannot import boto3 (.ci/run installs it; set WISP_BOTO3_PYTHON)"
        );
        eprintln!("skipped: {python} cannot import boto3 (set WISP_BOTO3_PYTHON)");
    }
    ok.then_some(python)
}

/// The node's S3 endpoint and keys (`wisp s3 credentials --json`).
pub fn s3_credentials(node: &Node) -> Value {
    serde_json::from_str(&node.wisp_ok(&["s3", "credentials", "--json"])).unwrap()
}

/// Runs a boto3 `script` with `python` against the node's S3 API: it starts with `boto3`
/// and `os` imported and `s3`, a client with the node's endpoint and keys (also in the
/// environment as `ENDPOINT`, `KEY` and `SECRET`, next to `env`).
pub fn run_boto3(
    node: &Node,
    python: &str,
    script: &str,
    env: &[(&str, String)],
) -> std::process::Output {
    let creds = s3_credentials(node);
    let prelude = r#"
import boto3, os
s3 = boto3.client("s3", endpoint_url=os.environ["ENDPOINT"], region_name="us-east-1",
                  aws_access_key_id=os.environ["KEY"], aws_secret_access_key=os.environ["SECRET"])
"#;
    std::process::Command::new(python)
        .args(["-c", &format!("{prelude}{script}")])
        .env("ENDPOINT", creds["endpoint_url"].as_str().unwrap())
        .env("KEY", creds["access_key_id"].as_str().unwrap())
        .env("SECRET", creds["secret_access_key"].as_str().unwrap())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap()
}

#[test]
fn uploads_to_the_s3_api_with_boto3_trigger_the_subscribed_function() {
    let Some(python) = boto3_python() else { return };
    let node = Node::start();
    let code = printing_function("EVENT");
    let m = manifest(&with_host_runtimes(&format!(
        r#"app: media
functions:
  on-photo:
    source: {dir}
    runtime: python3.11
    handler: app.handler
    s3:
      bucket: photos
      prefix: uploads/
      suffix: .jpg
"#,
        dir = code.path().display(),
    )));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let script = r#"
import boto3, os, sys
s3.create_bucket(Bucket="photos")
s3.put_object(Bucket="photos", Key="uploads/cat 1.jpg", Body=b"jpegdata")
s3.put_object(Bucket="photos", Key="uploads/notes.txt", Body=b"not a photo")
keys = [o["Key"] for o in s3.list_objects_v2(Bucket="photos", Prefix="uploads/")["Contents"]]
assert keys == ["uploads/cat 1.jpg", "uploads/notes.txt"], keys
assert s3.get_object(Bucket="photos", Key="uploads/cat 1.jpg")["Body"].read() == b"jpegdata"
bad = boto3.client("s3", endpoint_url=os.environ["ENDPOINT"], region_name="us-east-1",
                   aws_access_key_id=os.environ["KEY"], aws_secret_access_key="wrong")
try:
    bad.list_objects_v2(Bucket="photos")
    sys.exit("a wrong secret was accepted")
except Exception as e:
    assert "SignatureDoesNotMatch" in str(e), e
print("ok")
"#;
    let out = run_boto3(&node, &python, script, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let event: Value = printed_event(
        &node,
        "on-photo",
        "EVENT",
        "the upload's event",
        Duration::from_secs(30),
    );
    let rec = &event["Records"][0];
    assert_eq!(rec["eventSource"], "aws:s3", "{event}");
    assert_eq!(rec["eventName"], "ObjectCreated:Put");
    assert_eq!(rec["s3"]["bucket"]["name"], "photos");
    assert_eq!(
        rec["s3"]["object"]["key"], "uploads/cat+1.jpg",
        "URL-encoded as AWS does"
    );
    assert_eq!(rec["s3"]["object"]["size"], 8);
    // notes.txt is filtered out. Instead of waiting a while for an event that should
    // not come: one more photo, uploaded after notes.txt, whose event the dispatcher
    // (oldest first) runs after any notes.txt event; once it has run and nothing runs,
    // the function has seen every event there was.
    let out = run_boto3(
        &node,
        &python,
        r#"s3.put_object(Bucket="photos", Key="uploads/last.jpg", Body=b"jpeg")"#,
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logs = wait_until("the last photo's event", Duration::from_secs(30), || {
        let logs = node.wisp_ok(&["logs", "on-photo"]);
        (logs.contains("uploads/last.jpg") && running(&node, "on-photo") == 0).then_some(logs)
    });
    assert_eq!(
        logs.matches("EVENT ").count(),
        2,
        "notes.txt is filtered out: {logs}"
    );
    assert!(!logs.contains("notes.txt"), "{logs}");
}

/// An upload answered 200 has its trigger durably stored: killing the node right after the
/// last answer loses none (they run after the restart; at least once).
#[test]
fn uploads_answered_200_trigger_their_function_even_if_the_node_is_killed_right_after() {
    let Some(python) = boto3_python() else { return };
    let mut node = Node::start();
    let bucket = format!("crash-{}", rand_id());
    let m = manifest(&with_host_runtimes(&format!(
        r#"app: crash
functions:
  counter:
    source: {dir}
    runtime: python3.11
    handler: app.handler
    network: true
    s3:
      bucket: {bucket}
    limits:
      timeout: 2s
"#,
        dir = native("python-redis-counter"),
    )));
    node.wisp_ok(&["deploy", &arg(&m)]);
    const N: usize = 200;
    // 16 threads upload objects "0" to "199"; the thread that gets the last 200 kills the
    // node (SIGKILL) at once, microseconds after the answer.
    let script = r#"
import boto3, os, signal, threading
from concurrent.futures import ThreadPoolExecutor
bucket, n = os.environ["BUCKET"], int(os.environ["N"])
s3.create_bucket(Bucket=bucket)
done, lock = [0], threading.Lock()
def put(i):
    r = s3.put_object(Bucket=bucket, Key=str(i), Body=b"x" * 100)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200, r
    with lock:
        done[0] += 1
        if done[0] == n:
            os.kill(int(os.environ["NODE_PID"]), signal.SIGKILL)
with ThreadPoolExecutor(16) as pool:
    list(pool.map(put, range(n)))
print("UPLOADED", flush=True)
"#;
    let node_pid = node.child.as_ref().unwrap().id();
    let out = run_boto3(
        &node,
        &python,
        script,
        &[
            ("BUCKET", bucket.clone()),
            ("N", N.to_string()),
            ("NODE_PID", node_pid.to_string()),
        ],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("UPLOADED"),
        "the uploads failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    node.kill9(); // reaps the process the script killed
    let set = format!("wisp-test-s3:{bucket}");
    let before = redis(&["SCARD", &set]);
    // Triggers that were running when the node died come back after their lease (the
    // function's timeout + 60 s).
    let node = Node::start_in(&node.data_dir);
    let all: Vec<usize> = (0..N).collect();
    wait_until(
        "every answered upload's trigger",
        Duration::from_secs(180),
        || (missing(&set, &all) == 0).then_some(()),
    );
    let deliveries = redis(&["GET", &format!("{set}:deliveries")]);
    eprintln!(
        "{N} uploads answered 200; {before} triggers ran before the kill; {deliveries} deliveries in all"
    );
    assert_eq!(redis(&["SCARD", &set]), N as i64, "nothing invented");
    assert!(deliveries >= N as i64);
    drop(node);
    redis(&["DEL", &set, &format!("{set}:deliveries")]);
}

#[test]
fn async_settings_limit_retries_and_send_failures_to_a_destination_function() {
    let node = Node::start();
    let catcher = printing_function("RECORD");
    let m = manifest(&with_host_runtimes(&format!(
        r#"app: dest
functions:
  fragile:
    source: {echo}
    runtime: python3.11
    handler: app.handler
    async:
      max_retries: 0
      max_event_age: 10m
      on_failure: catcher
  catcher:
    source: {catcher}
    runtime: python3.11
    handler: app.handler
"#,
        echo = native("python-echo"),
        catcher = catcher.path().display(),
    )));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let id = invoke_async(&node, "fragile", &json!({"fail": "nope"}));
    let record: Value = printed_event(
        &node,
        "catcher",
        "RECORD",
        "the failure record",
        Duration::from_secs(30),
    );
    let ctx = &record["requestContext"];
    assert_eq!(ctx["requestId"], id.as_str(), "{record}");
    assert_eq!(ctx["condition"], "RetriesExhausted", "{record}");
    assert_eq!(ctx["approximateInvokeCount"], 1, "no retries: {record}");
    assert_eq!(record["requestPayload"]["fail"], "nope", "{record}");
    let dead: Vec<Value> =
        serde_json::from_str(&node.wisp_ok(&["dlq", "ls", "fragile", "--json"])).unwrap();
    assert_eq!(dead[0]["attempts"], 1);
}

/// Functions with `network: true` get the node's S3 keys and endpoint (which their own
/// `env` cannot replace); functions without network get none of them.
#[test]
fn network_functions_get_the_nodes_s3_keys_and_endpoint() {
    let node = Node::start();
    let code = tempfile::tempdir().unwrap();
    std::fs::write(
        code.path().join("app.py"),
        r#"import os

NAMES = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3",
         "AWS_SESSION_TOKEN", "AWS_REGION"]

def handler(event, context):
    return {n: os.environ.get(n) for n in NAMES}
"#,
    )
    .unwrap();
    let m = manifest(&with_host_runtimes(&format!(
        r#"app: keys
functions:
  with-net:
    source: {dir}
    runtime: python3.11
    handler: app.handler
    network: true
    env:
      AWS_ENDPOINT_URL_S3: http://127.0.0.1:1
      AWS_ACCESS_KEY_ID: MINE
      AWS_SESSION_TOKEN: stale
  no-net:
    source: {dir}
    runtime: python3.11
    handler: app.handler
"#,
        dir = code.path().display(),
    )));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let creds = s3_credentials(&node);
    let env: Value = serde_json::from_str(&node.wisp_ok(&["invoke", "with-net"])).unwrap();
    assert_eq!(env["AWS_ENDPOINT_URL_S3"], creds["endpoint_url"], "{env}");
    assert_eq!(env["AWS_ACCESS_KEY_ID"], creds["access_key_id"], "{env}");
    assert_eq!(env["AWS_SECRET_ACCESS_KEY"], creds["secret_access_key"]);
    assert_eq!(env["AWS_SESSION_TOKEN"], Value::Null, "{env}");
    assert_eq!(env["AWS_REGION"], "us-east-1");
    let env: Value = serde_json::from_str(&node.wisp_ok(&["invoke", "no-net"])).unwrap();
    for name in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ENDPOINT_URL_S3",
    ] {
        assert_eq!(env[name], Value::Null, "{name}: {env}");
    }
    // The secret is not in the node's log.
    let secret = creds["secret_access_key"].as_str().unwrap();
    assert!(!node.stderr().contains(secret));
}

/// The depth of queue `name` as `wisp queue ls --json` reports it (`None`: no such queue).
fn queue_depth(node: &Node, name: &str) -> Option<u64> {
    let queues: Vec<Value> =
        serde_json::from_str(&node.wisp_ok(&["queue", "ls", "--json"])).unwrap();
    queues
        .iter()
        .find(|q| q["name"] == name)
        .map(|q| q["depth"].as_u64().unwrap())
}

#[test]
fn on_failure_can_send_the_destination_record_to_a_queue_the_deploy_creates() {
    let node = Node::start();
    let yaml = |on_failure: &str| {
        with_host_runtimes(&format!(
            r#"app: dest
functions:
  fragile:
    source: {echo}
    runtime: python3.11
    handler: app.handler
    async:
      max_retries: 0
      on_failure: {on_failure}
"#,
            echo = native("python-echo"),
        ))
    };
    // A destination function must exist; the error says what to do instead.
    let ghost = manifest(&yaml("ghost"));
    let err = node.wisp_err(&["deploy", &arg(&ghost)]);
    assert!(
        err.contains("there is no function `ghost`") && err.contains("queue:NAME"),
        "{err}"
    );
    assert_eq!(queue_depth(&node, "failures"), None);
    let m = manifest(&yaml("queue:failures"));
    node.wisp_ok(&["deploy", &arg(&m)]);
    assert_eq!(
        queue_depth(&node, "failures"),
        Some(0),
        "created by the deploy"
    );
    let id = invoke_async(&node, "fragile", &json!({"fail": "nope"}));
    wait_until("the record in the queue", Duration::from_secs(30), || {
        (queue_depth(&node, "failures") == Some(1)).then_some(())
    });
    // Read it as a subscriber would: the SQS record's body is Lambda's destination record.
    let reader = printing_function("RECORD");
    let sub = manifest(&with_host_runtimes(&format!(
        r#"app: reader
functions:
  reader:
    source: {dir}
    runtime: python3.11
    handler: app.handler
    queue: failures
"#,
        dir = reader.path().display(),
    )));
    node.wisp_ok(&["deploy", &arg(&sub)]);
    let event: Value = printed_event(
        &node,
        "reader",
        "RECORD",
        "the reader's batch",
        Duration::from_secs(30),
    );
    let body = event["Records"][0]["body"].as_str().unwrap();
    let record: Value = serde_json::from_str(body).unwrap();
    assert_eq!(record["version"], "1.0", "{record}");
    let ctx = &record["requestContext"];
    assert_eq!(ctx["requestId"], id.as_str(), "{record}");
    assert_eq!(ctx["condition"], "RetriesExhausted", "{record}");
    assert_eq!(ctx["approximateInvokeCount"], 1, "{record}");
    assert!(
        ctx["functionArn"]
            .as_str()
            .unwrap()
            .contains(":function:fragile:"),
        "{record}"
    );
    assert_eq!(record["requestPayload"]["fail"], "nope", "{record}");
    assert_eq!(
        record["responseContext"]["functionError"], "Unhandled",
        "{record}"
    );
    // As on Lambda, the response payload is the error the runtime reported.
    let error = &record["responsePayload"];
    assert_eq!(error["errorType"], "ValueError", "{record}");
    assert_eq!(error["errorMessage"], "nope", "{record}");
    assert!(error["stackTrace"].is_array(), "{record}");
}

#[test]
fn queue_messages_reach_a_subscribed_function_in_batches_and_failed_ones_dead_letter() {
    let node = Node::start();
    let code = tempfile::tempdir().unwrap();
    std::fs::write(
        code.path().join("app.py"),
        r#"import json

def handler(event, context):
    records = event["Records"]
    assert all(r["eventSource"] == "aws:sqs" for r in records)
    print("BATCH " + json.dumps([r["body"] for r in records]))
    failed = [r["messageId"] for r in records if r["body"] == "bad"]
    return {"batchItemFailures": [{"itemIdentifier": i} for i in failed]}
"#,
    )
    .unwrap();
    node.wisp_ok(&["queue", "create", "dead"]);
    node.wisp_ok(&[
        "queue",
        "create",
        "orders",
        "--visibility",
        "1s",
        "--dlq",
        "dead",
        "--max-receives",
        "2",
    ]);
    for body in ["m1", "m2", "m3", "bad", "m4", "m5", "m6"] {
        let id = node.wisp_ok(&["queue", "send", "orders", body]);
        assert!(!id.trim().is_empty());
    }
    let m = manifest(&with_host_runtimes(&format!(
        r#"app: q
functions:
  worker:
    source: {dir}
    runtime: python3.11
    handler: app.handler
    queue:
      name: orders
      batch_size: 5
      batch_window: 200ms
"#,
        dir = code.path().display(),
    )));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let queues = wait_until(
        "orders drained, bad dead-lettered",
        Duration::from_secs(30),
        || {
            let qs: Vec<Value> =
                serde_json::from_str(&node.wisp_ok(&["queue", "ls", "--json"])).ok()?;
            let get = |n: &str| qs.iter().find(|q| q["name"] == n).cloned();
            let (orders, dead) = (get("orders")?, get("dead")?);
            (orders["depth"] == 0 && orders["in_flight"] == 0 && dead["depth"] == 1)
                .then_some((orders, dead))
        },
    );
    let _ = queues;
    let logs = node.wisp_ok(&["logs", "worker", "-n", "1000"]);
    let batches: Vec<Vec<String>> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l.split_once("BATCH ")?.1).ok())
        .collect();
    assert!(batches.iter().all(|b| b.len() <= 5), "{batches:?}");
    assert!(batches.iter().any(|b| b.len() > 1), "batched: {batches:?}");
    for good in ["m1", "m2", "m3", "m4", "m5", "m6"] {
        let n = batches.iter().flatten().filter(|b| *b == good).count();
        assert_eq!(n, 1, "{good} processed once, not retried: {batches:?}");
    }
    let bad = batches.iter().flatten().filter(|b| *b == "bad").count();
    assert_eq!(
        bad, 2,
        "received max_receives times, then dead-lettered: {batches:?}"
    );
    // Queue depths are metrics too.
    let m = crate::metrics::scrape(&node);
    assert_eq!(
        crate::metrics::value(&m, "wisp_queue_depth", &[("queue", "dead")]),
        1.0
    );
    assert_eq!(
        crate::metrics::value(&m, "wisp_queue_depth", &[("queue", "orders")]),
        0.0
    );
    assert!(m.samples.iter().any(|x| x.metric == "wisp_async_events"));
}

#[test]
fn wisp_queue_receive_reads_hides_and_deletes_messages() {
    let node = Node::start();
    node.wisp_ok(&["queue", "create", "inbox"]);
    node.wisp_ok(&["queue", "send", "inbox", r#"{"n":1}"#]);
    node.wisp_ok(&["queue", "send", "inbox", r#"{"n":2}"#]);
    let got: serde_json::Value = serde_json::from_str(
        &node.wisp_ok(&["queue", "receive", "inbox", "--max", "10", "--json"]),
    )
    .unwrap();
    let bodies: Vec<&str> = got
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, [r#"{"n":1}"#, r#"{"n":2}"#]);
    assert_eq!(got[0]["receive_count"], 1);
    // Received, so hidden for the visibility timeout: nothing visible now.
    let again = node.wisp(&["queue", "receive", "inbox", "--json"]);
    assert_eq!(String::from_utf8_lossy(&again.stdout).trim(), "[]");
    let ls: serde_json::Value =
        serde_json::from_str(&node.wisp_ok(&["queue", "ls", "--json"])).unwrap();
    assert_eq!(
        (ls[0]["depth"].as_u64(), ls[0]["in_flight"].as_u64()),
        (Some(0), Some(2))
    );

    node.wisp_ok(&["queue", "send", "inbox", "third"]);
    assert_eq!(
        node.wisp_ok(&["queue", "receive", "inbox", "--delete"])
            .trim(),
        "third"
    );
    let ls: serde_json::Value =
        serde_json::from_str(&node.wisp_ok(&["queue", "ls", "--json"])).unwrap();
    assert_eq!(
        (ls[0]["depth"].as_u64(), ls[0]["in_flight"].as_u64()),
        (Some(0), Some(2))
    );
    let err = node.wisp_err(&["queue", "receive", "nope"]);
    assert!(err.contains("no queue `nope`"), "{err}");
    let err = node.wisp_err(&["queue", "receive", "inbox", "--max", "11"]);
    assert!(err.contains("max must be 1 to 10"), "{err}");
}
