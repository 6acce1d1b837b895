use crate::harness::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn deploy_echo(node: &Node) {
    let m = manifest(&format!(
        "app: echo\nfunctions:\n  echo:\n    source: {}\n    routes: [ANY /echo]\n  spin:\n    source: {}\n    routes: [GET /spin]\n    limits:\n      timeout: 300ms\n",
        src("echo"),
        src("spin_loop")
    ));
    node.wisp_ok(&["deploy", &arg(&m)]);
}

fn invoke_json(node: &Node, name: &str, data: &str) -> serde_json::Value {
    serde_json::from_str(&node.wisp_ok(&["invoke", name, "--data", data, "--json"])).unwrap()
}

/// Log lines are written in the background: poll briefly until `pred` holds.
fn eventually(mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if pred() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("condition not met within 10s");
}

#[test]
fn invoke_passes_the_payload_and_logs_are_filtered_by_request() {
    let node = Node::start();
    deploy_echo(&node);
    let first = invoke_json(&node, "echo", r#"{"name":"x"}"#);
    assert_eq!(first["status"], 200);
    let echoed: serde_json::Value = serde_json::from_str(first["body"].as_str().unwrap()).unwrap();
    assert_eq!(echoed["body"], r#"{"name":"x"}"#);
    assert_eq!(echoed["method"], "POST");
    let second = invoke_json(&node, "echo", "two");
    let rid1 = first["request_id"].as_str().unwrap().to_string();
    let rid2 = second["request_id"].as_str().unwrap().to_string();

    eventually(|| node.wisp_ok(&["logs", "echo"]).contains(&rid2));
    let all = node.wisp_ok(&["logs", "echo"]);
    assert!(all.contains("stdout: echo: POST /"), "{all}");
    assert!(all.contains("stderr: echo-stderr: POST"), "{all}");
    assert!(all.contains(&rid1) && all.contains(&rid2), "{all}");

    let only = node.wisp_ok(&["logs", "echo", "--request-id", &rid1]);
    assert!(only.contains(&rid1) && !only.contains(&rid2), "{only}");
    assert_eq!(only.lines().count(), 2, "{only}");

    let json = node.wisp_ok(&["logs", "echo", "--json", "-n", "1"]);
    let line: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(line["request_id"], rid2.as_str());
    assert_eq!(line["function"], "echo");

    assert!(
        node.wisp_ok(&["logs", "echo", "--since", "1h"])
            .contains(&rid1)
    );
    let err = node.wisp_err(&["logs", "echo", "--since", "yesterday"]);
    assert!(err.contains("not a duration"), "{err}");
    let err = node.wisp_err(&["logs", "nope"]);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn failures_leave_a_platform_line() {
    let node = Node::start();
    deploy_echo(&node);
    let r = client().get(node.url("/spin")).send().unwrap();
    assert_eq!(r.status(), 504);
    let rid = r.headers()["x-wisp-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    eventually(|| {
        node.wisp_ok(&["logs", "spin", "--request-id", &rid])
            .contains("platform: the function did not finish within its timeout of 300ms")
    });
    let out = node.wisp_ok(&["logs", "spin", "--request-id", &rid]);
    assert!(out.contains("stdout: starting loop"), "{out}");
}

#[test]
fn logs_follow_prints_new_lines_as_they_come() {
    let node = Node::start();
    deploy_echo(&node);
    let mut follower = Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args(["logs", "echo", "-f"])
        .env("WISP_API", &node.api)
        .env("WISP_DATA_DIR", &node.data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The follower connects at some point after it starts: call the function every
    // 300 ms until one call's line arrives through it (bounded).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut sent = Vec::new();
    let mut seen = false;
    while !seen && Instant::now() < deadline {
        let r = client()
            .put(node.url("/echo"))
            .body("followed")
            .send()
            .unwrap();
        sent.push(
            r.headers()["x-wisp-request-id"]
                .to_str()
                .unwrap()
                .to_string(),
        );
        let until = Instant::now() + Duration::from_millis(300);
        while let Ok(line) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            if line.contains("echo: PUT /echo") && sent.iter().any(|rid| line.contains(rid)) {
                seen = true;
                break;
            }
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(seen, "the followed line did not arrive");
}

#[test]
fn w3c_trace_context_is_continued_passed_on_and_searchable() {
    let node = Node::start();
    deploy_echo(&node);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = client()
        .get(node.url("/echo"))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .send()
        .unwrap();
    assert_eq!(r.headers()["x-wisp-trace-id"], trace);
    let body: serde_json::Value = r.json().unwrap();
    // The function sees the same trace, with this invocation as the parent span.
    let tp = body["headers"]["traceparent"].as_str().unwrap();
    assert!(tp.starts_with(&format!("00-{trace}-")), "{tp}");
    assert!(!tp.contains("00f067aa0ba902b7"), "{tp}");

    // Without one, a new trace starts; a malformed one is replaced.
    let r = client()
        .get(node.url("/echo"))
        .header("traceparent", "garbage")
        .send()
        .unwrap();
    let other = r.headers()["x-wisp-trace-id"].to_str().unwrap().to_string();
    assert_eq!(other.len(), 32);
    assert_ne!(other, trace);

    eventually(|| {
        node.wisp_ok(&["logs", "echo", "--trace-id", trace])
            .contains("echo: GET /echo")
    });
    let only = node.wisp_ok(&["logs", "echo", "--trace-id", trace]);
    assert_eq!(only.lines().count(), 2, "{only}");
    let invoked = invoke_json(&node, "echo", "x");
    assert_eq!(invoked["trace_id"].as_str().unwrap().len(), 32);
}
