//! Traces: a chain of invocations (HTTP → A → async B → C) is one W3C trace that
//! `wisp trace` shows as a tree, and the same spans are exported over OTLP.

use crate::harness::*;
use crate::native::{native, with_host_runtimes};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

/// Three Python functions: `a` (HTTP) calls `b` asynchronously through the gateway, `b`
/// calls `c` synchronously; each forwards `_X_AMZN_TRACE_ID` as `X-Amzn-Trace-Id`.
fn deploy_chain(node: &Node) {
    let m = manifest(&with_host_runtimes(&format!(
        r#"app: chain
functions:
  a:
    source: {chain}
    runtime: python3.11
    handler: app.handler
    network: true
    routes: ["POST /a"]
    env:
      NEXT_URL: {gw}/b
      NEXT_MODE: event
  b:
    source: {chain}
    runtime: python3.11
    handler: app.handler
    network: true
    routes: ["POST /b"]
    env:
      NEXT_URL: {gw}/c
  c:
    source: {chain}
    runtime: python3.11
    handler: app.handler
    routes: ["POST /c"]
"#,
        chain = native("python-chain"),
        gw = node.http,
    )));
    node.wisp_ok(&["deploy", &arg(&m)]);
}

/// `wisp trace ID --json`, polled until it has `n` spans (the async hop runs later).
fn trace_with(node: &Node, id: &str, n: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = node.wisp(&["trace", id, "--json"]);
        if out.status.success() {
            let t: Value = serde_json::from_slice(&out.stdout).unwrap();
            if t["spans"].as_array().unwrap().len() >= n {
                return t;
            }
        }
        assert!(
            Instant::now() < deadline,
            "trace {id} never had {n} spans: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn span<'a>(trace: &'a Value, function: &str) -> &'a Value {
    trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["function"] == function)
        .unwrap_or_else(|| panic!("no span of {function} in {trace}"))
}

#[test]
fn a_chain_through_an_async_hop_is_one_trace_and_wisp_trace_draws_it() {
    let node = Node::start();
    deploy_chain(&node);
    // The client brings its own trace: every hop continues it.
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let resp = client()
        .post(node.url("/a"))
        .header("traceparent", format!("00-{client_trace}-{client_span}-01"))
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-wisp-trace-id"], client_trace);
    let request_id = resp.headers()["x-wisp-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let answer: Value = resp.json().unwrap();
    assert_eq!(answer["next_status"], 202, "{answer}");
    assert_eq!(answer["next"]["trace_id"], client_trace, "{answer}");
    // The handler saw the trace in Lambda's X-Ray form, its own span as the parent.
    let xray = answer["trace"].as_str().unwrap();
    assert!(
        xray.starts_with("Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent="),
        "{xray}"
    );

    // Found by the first invocation's request id as well as by the trace id.
    let trace = trace_with(&node, &request_id, 3);
    assert_eq!(trace["trace_id"], client_trace);
    assert_eq!(trace, trace_with(&node, client_trace, 3));
    let (a, b, c) = (span(&trace, "a"), span(&trace, "b"), span(&trace, "c"));
    assert_eq!(a["parent_span_id"], client_span);
    assert_eq!(a["trigger"], "http");
    assert!(xray.contains(&format!(";Parent={}", a["span_id"].as_str().unwrap())));
    assert_eq!(b["parent_span_id"], a["span_id"], "{trace}");
    assert_eq!(b["trigger"], "async");
    assert_eq!(c["parent_span_id"], b["span_id"], "{trace}");
    assert_eq!(c["trigger"], "http");
    for s in [a, b, c] {
        assert_eq!(s["outcome"], "success", "{s}");
        assert!(s["duration_ms"].as_f64().unwrap() > 0.0, "{s}");
    }
    // B ran after A had enqueued it, C inside B.
    assert!(b["start_ms"].as_i64() >= a["start_ms"].as_i64());
    assert!(c["start_ms"].as_i64() >= b["start_ms"].as_i64());

    let text = node.wisp_ok(&["trace", &request_id]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with(&format!("trace {client_trace}: 3 invocations")),
        "{text}"
    );
    assert!(lines[1].starts_with("└─ a v1 [http] +0 ms"), "{text}");
    assert!(lines[2].starts_with("   └─ b v1 [async] +"), "{text}");
    assert!(lines[3].starts_with("      └─ c v1 [http] +"), "{text}");

    // The logs of the whole chain, by trace id.
    let logs = node.wisp_ok(&["logs", "--trace-id", client_trace, "--limit", "100"]);
    for f in ["a", "b", "c"] {
        let req = span(&trace, f)["request_id"].as_str().unwrap().to_string();
        assert!(
            logs.contains(&format!("START RequestId: {req}")),
            "{f}: {logs}"
        );
    }

    let err = node.wisp_err(&["trace", "0af7651916cd43dd8448eb211c80319c"]);
    assert!(err.contains("no invocations recorded"), "{err}");
    let err = node.wisp_err(&["trace", "not/an id"]);
    assert!(!err.is_empty());
}

#[test]
fn without_a_caller_trace_a_new_one_starts_and_an_async_call_reports_it() {
    let node = Node::start();
    deploy_chain(&node);
    // `wisp invoke --async` of `c`: the 202 names the trace its invocation will have.
    let out = node.wisp_ok(&["invoke", "c", "--async", "-d", "{}", "--json"]);
    let accepted: Value = serde_json::from_str(&out).unwrap();
    let trace_id = accepted["trace_id"].as_str().unwrap().to_string();
    assert_eq!(trace_id.len(), 32, "{accepted}");
    let trace = trace_with(&node, &trace_id, 1);
    let c = span(&trace, "c");
    assert_eq!(c["request_id"], accepted["event_id"]);
    assert_eq!(c["trigger"], "async");
    // Found by the event id too.
    assert_eq!(
        trace_with(&node, accepted["event_id"].as_str().unwrap(), 1)["trace_id"],
        trace_id.as_str()
    );
}

/// A minimal OTLP/HTTP collector: answers every POST with 200 and hands the bodies over.
fn fake_collector() -> (String, std::sync::mpsc::Receiver<(String, Vec<u8>)>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(1000) {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut length = 0;
            let mut content_type = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if let Some(v) = lower.strip_prefix("content-type:") {
                    content_type = v.trim().to_string();
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string();
            if tx.send((format!("{path} {content_type}"), body)).is_err() {
                break;
            }
        }
    });
    (url, rx)
}

#[test]
fn spans_are_exported_over_otlp_with_their_trace_and_parents() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    let (collector, bodies) = fake_collector();
    let node = Node::start_args(&["--otlp-endpoint", &collector]);
    let m = manifest(&format!(
        "app: otlp\nfunctions:\n  hello:\n    source: {}\n    routes: [\"GET /hello\"]\n",
        src("echo")
    ));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let resp = client()
        .get(node.url("/hello"))
        .header("traceparent", format!("00-{trace}-b7ad6b7169203331-01"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let request_id = resp.headers()["x-wisp-request-id"]
        .to_str()
        .unwrap()
        .to_string();

    let deadline = Instant::now() + Duration::from_secs(30);
    let span = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (what, body) = bodies
            .recv_timeout(left)
            .expect("the collector got no spans within 30 s");
        assert_eq!(what, "/v1/traces application/x-protobuf");
        let req = ExportTraceServiceRequest::decode(&body[..]).expect("an OTLP request");
        let found = req
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .find(|s| s.trace_id == hex(trace))
            .cloned();
        if let Some(s) = found {
            let resource = &req.resource_spans[0].resource.as_ref().unwrap().attributes;
            assert!(
                resource.iter().any(
                    |kv| kv.key == "service.name" && format!("{:?}", kv.value).contains("wisp")
                ),
                "{resource:?}"
            );
            break s;
        }
    };
    assert_eq!(span.name, "hello");
    assert_eq!(span.parent_span_id, hex("b7ad6b7169203331"));
    assert!(span.end_time_unix_nano > span.start_time_unix_nano);
    let attr = |k: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key == k)
            .map(|kv| format!("{:?}", kv.value))
            .unwrap_or_else(|| panic!("no {k} in {:?}", span.attributes))
    };
    assert!(attr("faas.invocation_id").contains(&request_id));
    assert!(attr("faas.trigger").contains("http"));
    // The same span is what `wisp trace` shows.
    let local: Value = serde_json::from_str(&node.wisp_ok(&["trace", trace, "--json"])).unwrap();
    assert_eq!(
        hex(local["spans"][0]["span_id"].as_str().unwrap()),
        span.span_id
    );
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
