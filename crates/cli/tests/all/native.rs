//! Native functions: unmodified Lambda handlers (Python, Node.js, a Rust `provided`
//! binary) deployed with `wisp deploy` and called over HTTP and with `wisp invoke`.

use crate::harness::*;
use serde_json::{Value, json};
use std::time::Duration;

/// A fixture directory under `tests/native`.
pub fn native(name: &str) -> String {
    repo_root()
        .join("tests/native")
        .join(name)
        .display()
        .to_string()
}

/// The manifest text with the runtimes this host has: the fixtures name python3.11 and
/// nodejs20.x, which are replaced by the installed Python 3 and Node.js versions.
pub fn with_host_runtimes(yaml: &str) -> String {
    static RUNTIMES: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    let (py, node) = RUNTIMES.get_or_init(|| {
        let out = |cmd: &str, args: &[&str]| {
            std::process::Command::new(cmd)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        let py = out("python3", &["-c", "import sys; print(sys.version_info[1])"])
            .map(|minor| format!("python3.{minor}"))
            .unwrap_or_else(|| "python3.11".into());
        let node = out("node", &["-p", "process.versions.node.split('.')[0]"])
            .map(|major| format!("nodejs{major}.x"))
            .unwrap_or_else(|| "nodejs20.x".into());
        (py, node)
    });
    yaml.replace("python3.11", py).replace("nodejs20.x", node)
}

/// Which instance answered: its log stream name is unique per instance (pids are not:
/// each instance has its own PID namespace).
pub fn instance(answer: &Value) -> String {
    let ctx = &answer["context"];
    ctx["log_stream_name"]
        .as_str()
        .or(ctx["logStreamName"].as_str())
        .unwrap_or_else(|| panic!("no log stream name in {answer}"))
        .to_string()
}

/// `wisp invoke NAME -d EVENT`, parsed as JSON.
fn invoke(node: &Node, name: &str, event: &Value) -> Value {
    let out = node.wisp_ok(&["invoke", name, "-d", &event.to_string()]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{name} answered {out:?}: {e}"))
}

/// `wisp invoke NAME -d EVENT --json` for a call that fails: the API's envelope.
fn invoke_failing(node: &Node, name: &str, event: &Value) -> Value {
    let out = node.wisp(&["invoke", name, "-d", &event.to_string(), "--json"]);
    assert!(!out.status.success(), "{name} should have failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn logs(node: &Node, name: &str) -> String {
    node.wisp_ok(&["logs", name, "--limit", "1000"])
}

#[test]
fn python_handler_gets_the_lambda_event_and_context_and_stays_warm() {
    let node = Node::start();
    let m = manifest(&with_host_runtimes(&format!(
        r#"app: py
functions:
  echo:
    source: {echo}
    runtime: python3.11
    handler: app.handler
    routes: ["POST /py/{{id}}"]
    env:
      GREETING: hi
    limits:
      memory: 256MiB
      timeout: 5s
  web:
    source: {http}
    runtime: python3.11
    handler: app.handler
    routes: ["GET /web/{{name}}"]
"#,
        echo = native("python-echo"),
        http = native("python-http"),
    )));
    node.wisp_ok(&["deploy", &arg(&m)]);

    let first = invoke(&node, "echo", &json!({"hello": "world"}));
    assert_eq!(first["event"], json!({"hello": "world"}));
    let ctx = &first["context"];
    assert_eq!(ctx["function_name"], "echo");
    assert_eq!(ctx["function_version"], "1");
    // A string, as awslambdaric gives it (it reads the environment variable).
    assert_eq!(ctx["memory_limit_in_mb"], "256");
    assert_eq!(ctx["log_group_name"], "/aws/lambda/echo");
    assert!(
        ctx["invoked_function_arn"]
            .as_str()
            .unwrap()
            .ends_with(":function:echo"),
        "{ctx}"
    );
    assert_eq!(ctx["aws_request_id"].as_str().unwrap().len(), 36, "{ctx}");
    let left = ctx["remaining_time_ms"].as_i64().unwrap();
    assert!(left > 0 && left <= 5000, "{left}");
    assert!(
        first["trace_id"].as_str().unwrap().starts_with("Root=1-"),
        "{first}"
    );
    assert_eq!(first["count"], 1);

    // Warm: the same process, with its module state.
    let second = invoke(&node, "echo", &json!({}));
    assert_eq!(second["count"], 2);
    assert_eq!(instance(&second), instance(&first));
    assert_ne!(second["context"]["aws_request_id"], ctx["aws_request_id"]);

    // A client context travels to the handler (`wisp invoke --client-context`).
    let out = node.wisp_ok(&[
        "invoke",
        "echo",
        "-d",
        "{}",
        "--client-context",
        r#"{"custom":{"tenant":"acme"},"env":{"locale":"en"}}"#,
    ]);
    let with_cc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        with_cc["context"]["client_context"]["custom"]["tenant"], "acme",
        "{with_cc}"
    );
    assert_eq!(with_cc["context"]["client_context"]["env"]["locale"], "en");

    // Over HTTP the handler gets an API Gateway payload 2.0 event; a plain result is JSON.
    let r = client()
        .post(node.url("/py/42?x=1&x=2"))
        .header("content-type", "application/json")
        .header("cookie", "session=abc")
        .body(r#"{"order":7}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: Value = r.json().unwrap();
    let e = &v["event"];
    assert_eq!(e["version"], "2.0");
    assert_eq!(e["routeKey"], "POST /py/{id}");
    assert_eq!(e["rawPath"], "/py/42");
    assert_eq!(e["rawQueryString"], "x=1&x=2");
    assert_eq!(e["queryStringParameters"]["x"], "1,2");
    assert_eq!(e["pathParameters"]["id"], "42");
    assert_eq!(e["cookies"], json!(["session=abc"]));
    assert_eq!(e["body"], r#"{"order":7}"#);
    assert_eq!(e["isBase64Encoded"], false);
    assert_eq!(e["requestContext"]["http"]["method"], "POST");
    assert_eq!(e["requestContext"]["http"]["sourceIp"], "127.0.0.1");
    assert_eq!(v["count"], 4);

    // A full HTTP response from the handler: status, headers, cookies, body.
    let r = client().get(node.url("/web/ann?q=1")).send().unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-seen-path"], "/web/ann");
    assert_eq!(r.headers()["set-cookie"], "a=1");
    let body: Value = r.json().unwrap();
    assert_eq!(body["pathParameters"]["name"], "ann");
    assert_eq!(body["queryStringParameters"]["q"], "1");

    // Lambda's log lines frame each invocation; only the first reports an init.
    let text = logs(&node, "echo");
    assert_eq!(text.matches("START RequestId:").count(), 4, "{text}");
    assert_eq!(text.matches("END RequestId:").count(), 4, "{text}");
    assert_eq!(text.matches("REPORT RequestId:").count(), 4, "{text}");
    assert_eq!(text.matches("Init Duration:").count(), 1, "{text}");
    assert!(text.contains("Max Memory Used:"), "{text}");
    assert!(text.contains("python-echo invocation 1"), "{text}");
}

#[test]
fn node_async_callback_and_esm_handlers() {
    let node = Node::start();
    let m = manifest(&with_host_runtimes(&format!(
        r#"app: js
functions:
  async:
    source: {a}
    runtime: nodejs20.x
    handler: index.handler
  callback:
    source: {c}
    runtime: nodejs20.x
    handler: index.handler
  esm:
    source: {e}
    runtime: nodejs20.x
    handler: index.handler
  web:
    source: {h}
    runtime: nodejs20.x
    handler: index.handler
    routes: ["POST /js/{{id}}"]
"#,
        a = native("node-async"),
        c = native("node-callback"),
        e = native("node-esm"),
        h = native("node-http"),
    )));
    node.wisp_ok(&["deploy", &arg(&m)]);

    let first = invoke(&node, "async", &json!({"n": 1}));
    assert_eq!(first["event"], json!({"n": 1}));
    let ctx = &first["context"];
    assert_eq!(ctx["functionName"], "async");
    assert_eq!(ctx["memoryLimitInMB"], "128");
    assert_eq!(ctx["awsRequestId"].as_str().unwrap().len(), 36, "{ctx}");
    let second = invoke(&node, "async", &json!({}));
    assert_eq!(second["count"], first["count"].as_i64().unwrap() + 1);
    assert_eq!(instance(&second), instance(&first));

    let r = invoke(&node, "callback", &json!({}));
    assert_eq!(r["ok"], true);
    let failed = invoke_failing(&node, "callback", &json!({"fail": true}));
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("boom"), "{failed}");
    // A handled error keeps the instance.
    let again = invoke(&node, "callback", &json!({}));
    assert_eq!(
        again["count"],
        r["count"].as_i64().unwrap() + 2,
        "the same instance counted the failed call too"
    );

    let esm = invoke(&node, "esm", &json!({"x": 1}));
    assert!(esm.to_string().contains("\"x\":1"), "{esm}");

    let r = client()
        .post(node.url("/js/9?a=b"))
        .body("hello")
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-seen-path"], "/js/9");
    let body: Value = r.json().unwrap();
    assert_eq!(body["method"], "POST");
    assert_eq!(body["pathParameters"]["id"], "9");
    assert_eq!(body["body"], "hello");
}

#[test]
fn rust_provided_binary_built_with_lambda_runtime() {
    let node = Node::start();
    let m = manifest(&with_host_runtimes(&format!(
        r#"app: rs
functions:
  rusty:
    source: {dir}
    runtime: provided.al2023
    routes: [GET /rusty]
    limits:
      memory: 64MiB
"#,
        dir = native("rust-provided"),
    )));
    // The deploy builds the crate for this host and packages the binary as `bootstrap`.
    node.wisp_ok(&["deploy", &arg(&m)]);
    let first = invoke(&node, "rusty", &json!({"k": "v"}));
    assert_eq!(first["event"], json!({"k": "v"}));
    let ctx = &first["context"];
    assert_eq!(ctx["function_name"], "rusty");
    assert_eq!(ctx["memory"], 64);
    assert_eq!(ctx["version"], "1");
    // The deadline is the call's start plus the default 30 s timeout, in ms since the epoch.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let deadline = ctx["deadline"].as_u64().unwrap();
    assert!(
        deadline > now_ms + 20_000 && deadline <= now_ms + 30_000,
        "deadline {deadline} is not about 30 s after {now_ms}"
    );
    assert!(
        ctx["xray_trace_id"]
            .as_str()
            .unwrap()
            .starts_with("Root=1-"),
        "{ctx}"
    );
    let second = invoke(&node, "rusty", &json!({}));
    assert_eq!(second["count"], 2, "the same process served both");
    let failed = invoke_failing(&node, "rusty", &json!({"fail": "nope"}));
    assert!(
        failed["error"].as_str().unwrap().contains("nope"),
        "{failed}"
    );
    // Through the gateway too.
    let (status, body) = node.get("/rusty");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["event"]["rawPath"], "/rusty");
}

#[test]
fn timeouts_memory_and_concurrency_are_per_instance() {
    let node = Node::start();
    let m = manifest(&with_host_runtimes(&format!(
        r#"app: lim
functions:
  slow:
    source: {echo}
    runtime: python3.11
    handler: app.handler
    routes: [POST /slow]
    limits:
      timeout: 1s
      memory: 128MiB
  pair:
    source: {echo}
    runtime: python3.11
    handler: app.handler
    limits:
      timeout: 20s
      memory: 128MiB
"#,
        echo = native("python-echo"),
    )));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let warm = invoke(&node, "slow", &json!({}));
    assert_eq!(warm["count"], 1);

    // Two at once: the busy instance serves one, a second instance starts for the other.
    // The first call is known to be running from the node's gauge, and it is still
    // running when the second one has been answered.
    let n2 = (node.api.clone(), node.data_dir.clone());
    let held = std::thread::spawn(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wisp"))
            .args(["invoke", "pair", "-d", r#"{"sleep_ms": 6000}"#])
            .env("WISP_API", &n2.0)
            .env("WISP_DATA_DIR", &n2.1)
            .output()
            .unwrap();
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    });
    wait_running(&node, "pair");
    let second = invoke(&node, "pair", &json!({}));
    assert!(
        !held.is_finished(),
        "the first call should still be running when the second is answered"
    );
    let first = held.join().unwrap();
    assert_ne!(
        instance(&first),
        instance(&second),
        "two concurrent calls, two instances"
    );
    assert_eq!(first["count"], 1, "{first}");
    assert_eq!(second["count"], 1, "a fresh instance: {second}");

    // Past its timeout the instance is killed; the caller gets Sandbox.Timedout / 504.
    // `slow` has one instance (`warm`'s), idle, so the call runs there.
    let timed_out = invoke_failing(&node, "slow", &json!({"sleep_ms": 5000}));
    assert_eq!(timed_out["outcome"], "timeout", "{timed_out}");
    assert_eq!(timed_out["status"], 504, "{timed_out}");
    let error = timed_out["error"].as_str().unwrap();
    assert!(error.contains("Sandbox.Timedout"), "{error}");
    assert!(
        error.contains("Task timed out after 1.00 seconds"),
        "{error}"
    );
    // The next call gets a fresh instance, never the killed one.
    let after = invoke(&node, "slow", &json!({}));
    assert_ne!(
        instance(&after),
        instance(&warm),
        "the killed instance served"
    );
    assert_eq!(after["count"], 1, "module state starts over: {after}");

    // Growing past the memory limit kills the instance (`after`'s, the only one):
    // reported as out of memory, and the next call gets a fresh instance.
    let oom = invoke_failing(&node, "slow", &json!({"alloc_mb": 400}));
    assert_eq!(oom["outcome"], "out_of_memory", "{oom}");
    assert!(
        oom["error"]
            .as_str()
            .unwrap()
            .contains("Runtime.OutOfMemory"),
        "{oom}"
    );
    let fine = invoke(&node, "slow", &json!({}));
    assert_ne!(
        instance(&fine),
        instance(&after),
        "the killed instance served"
    );
    assert_eq!(fine["count"], 1, "module state starts over: {fine}");
    let text = logs(&node, "slow");
    assert!(text.contains("Status: timeout"), "{text}");
}

#[test]
fn a_timed_out_instance_is_replaced_by_a_fresh_one() {
    let node = Node::start();
    let m = manifest(&with_host_runtimes(&format!(
        r#"app: lim
functions:
  one:
    source: {echo}
    runtime: python3.11
    handler: app.handler
    limits:
      timeout: 1s
      max_concurrency: 1
"#,
        echo = native("python-echo"),
    )));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let first = invoke(&node, "one", &json!({}));
    let timed_out = invoke_failing(&node, "one", &json!({"sleep_ms": 3000}));
    assert_eq!(timed_out["outcome"], "timeout", "{timed_out}");
    let fresh = invoke(&node, "one", &json!({}));
    assert_ne!(instance(&fresh), instance(&first));
    assert_eq!(
        fresh["count"], 1,
        "module state starts over in a new instance"
    );
    // No process of the killed instance is left: only the fresh instance's init and
    // runtime run as the sandboxes' unprivileged host uids.
    let node_pid = node.child.as_ref().unwrap().id();
    assert_eq!(sandboxed_processes(node_pid), 2, "{}", ps());
}

#[test]
fn the_sandbox_denies_escapes() {
    let node = Node::start();
    let m = manifest(&with_host_runtimes(&format!(
        r#"app: esc
functions:
  escape:
    source: {esc}
    runtime: python3.11
    handler: app.handler
    limits:
      timeout: 20s
      memory: 1GiB
  neighbour:
    source: {echo}
    runtime: python3.11
    handler: app.handler
"#,
        esc = native("python-escape"),
        echo = native("python-echo"),
    )));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let code_dirs: Vec<_> = std::fs::read_dir(node.data_dir.join("code"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(code_dirs.len(), 2);
    let api_port = node.api.rsplit(':').next().unwrap().to_string();
    let attempt = |what: &str, extra: Value| {
        let mut event = json!({"try": what});
        for (k, v) in extra.as_object().unwrap() {
            event[k] = v.clone();
        }
        let out = invoke(&node, "escape", &event);
        out[what].clone()
    };
    let denied = |what: &str, extra: Value| {
        let r = attempt(what, extra.clone());
        assert_eq!(r["ok"], false, "{what} {extra} should be denied: {r}");
    };
    denied("read_shadow", json!({}));
    denied("write_task", json!({}));
    denied("write_usr", json!({}));
    for dir in &code_dirs {
        denied("read_path", json!({"path": dir.display().to_string()}));
    }
    denied(
        "read_path",
        json!({"path": node.data_dir.display().to_string()}),
    );
    denied(
        "read_path",
        json!({"path": node.data_dir.join("api-token").display().to_string()}),
    );
    denied("read_path", json!({"path": "/root"}));
    denied("connect", json!({"host": "127.0.0.1", "port": api_port}));
    let tmp = attempt("write_tmp", json!({}));
    assert_eq!(tmp["ok"], true, "{tmp}");
    let fork = attempt("fork", json!({"max_forks": 5000}));
    assert_eq!(
        fork["ok"], true,
        "fork bomb must be stopped by the sandbox: {fork}"
    );
    assert!(fork["count"].as_i64().unwrap() < 5000, "{fork}");
    // The node and the other function are unaffected.
    assert_eq!(invoke(&node, "neighbour", &json!({}))["count"], 1);
}

#[test]
fn init_errors_name_the_file_and_bad_dependencies_fail_the_deploy() {
    let node = Node::start();
    let m = manifest(&with_host_runtimes(&format!(
        r#"app: bad
functions:
  syntax:
    source: {syntax}
    runtime: python3.11
    handler: app.handler
  nohandler:
    source: {badhandler}
    runtime: python3.11
    handler: app.handler
  nosuchmodule:
    source: {echo}
    runtime: python3.11
    handler: missing.handler
  jssyntax:
    source: {jssyntax}
    runtime: nodejs20.x
    handler: index.handler
"#,
        syntax = native("python-syntax"),
        badhandler = native("python-badhandler"),
        echo = native("python-echo"),
        jssyntax = native("node-syntax"),
    )));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let e = invoke_failing(&node, "syntax", &json!({}));
    let msg = e["error"].as_str().unwrap();
    assert!(msg.contains("Runtime.UserCodeSyntaxError"), "{e}");
    assert!(msg.contains("app.py") && msg.contains("line"), "{e}");
    let e = invoke_failing(&node, "nohandler", &json!({}));
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("Runtime.HandlerNotFound"),
        "{e}"
    );
    let e = invoke_failing(&node, "nosuchmodule", &json!({}));
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("Runtime.ImportModuleError"),
        "{e}"
    );
    let e = invoke_failing(&node, "jssyntax", &json!({}));
    let msg = e["error"].as_str().unwrap();
    assert!(msg.contains("index.js"), "{e}");

    // Dependencies are installed at deploy time; one that does not exist fails the deploy
    // with pip's own message.
    let m = manifest(&with_host_runtimes(&format!(
        r#"app: deps
functions:
  deps:
    source: {deps}
    runtime: python3.11
    handler: app.handler
"#,
        deps = native("python-deps"),
    )));
    let out = node.wisp(&["deploy", &arg(&m)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("installing requirements.txt with pip"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ok = invoke(&node, "deps", &json!({}));
    assert!(!ok.is_null());
    let m = manifest(&with_host_runtimes(&format!(
        r#"app: baddeps
functions:
  baddeps:
    source: {dir}
    runtime: python3.11
    handler: app.handler
"#,
        dir = native("python-baddep"),
    )));
    let err = node.wisp_err(&["deploy", &arg(&m)]);
    assert!(err.contains("pip install -r requirements.txt"), "{err}");
    assert!(
        err.contains("No matching distribution found") || err.contains("Could not find a version"),
        "{err}"
    );
    let _ = Duration::ZERO;
}
