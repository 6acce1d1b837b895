//! What a new user and an attacker hit first: error detail in public responses, a second
//! node on a data directory in use, functions framing other users' responses, queue
//! batches lost on failure.

use crate::harness::*;
use crate::native::with_host_runtimes;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A Python function directory with `app.py` = `code`.
fn python(code: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.py"), code).unwrap();
    dir
}

const BOOM: &str = r#"import os

def handler(event, context):
    raise RuntimeError("db password is " + os.environ["DB_PASSWORD"])
"#;

fn deploy_boom(node: &Node, code: &tempfile::TempDir) {
    let m = manifest(&with_host_runtimes(&format!(
        r#"app: boom
functions:
  boom:
    source: {code}
    runtime: python3.11
    handler: app.handler
    routes: ["GET /boom"]
    env:
      DB_PASSWORD: hunter2
  crash:
    source: {panic}
    routes: ["GET /crash"]
"#,
        code = code.path().display(),
        panic = src("panic"),
    )));
    node.wisp_ok(&["deploy", &arg(&m)]);
}

#[test]
fn public_callers_get_a_generic_error_and_the_details_stay_in_the_logs() {
    let code = python(BOOM);
    let node = Node::start();
    deploy_boom(&node, &code);

    let r = client().get(node.url("/boom")).send().unwrap();
    assert_eq!(r.status(), 500);
    let request_id = r.headers()["x-wisp-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body = r.text().unwrap();
    assert!(
        !body.contains("hunter2"),
        "a secret reached the caller: {body}"
    );
    assert!(!body.contains("RuntimeError"), "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "Internal Server Error", "{body}");
    assert_eq!(v["request_id"], request_id.as_str());
    // The owner sees what happened (log lines are stored just after the answer).
    wait_until("the error in the logs", Duration::from_secs(10), || {
        let logs = node.wisp_ok(&["logs", "boom", "--request-id", &request_id]);
        logs.contains("db password is hunter2").then_some(())
    });

    // A Rust panic: no backtrace, no frame names.
    let (status, body) = node.get("/crash");
    assert_eq!(status, 500);
    assert!(!body.contains("panic"), "{body}");
    assert!(!body.contains("wasm"), "{body}");
    assert!(!body.contains("fixture"), "{body}");
}

#[test]
fn development_mode_shows_the_error_to_the_caller() {
    let code = python(BOOM);
    let node = Node::start_args(&["--dev"]);
    deploy_boom(&node, &code);
    let (status, body) = node.get("/boom");
    assert_eq!(status, 500);
    assert!(
        body.contains("RuntimeError: db password is hunter2"),
        "{body}"
    );
    assert!(body.contains("wisp logs boom --request-id"), "{body}");
}

#[test]
fn a_second_node_on_a_data_directory_in_use_refuses_to_start_and_changes_nothing() {
    let node = Node::start();
    let files = ["s3-endpoint", "node.json", "api-token"];
    let before: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(node.data_dir.join(f)).unwrap())
        .collect();
    let pid = node.child.as_ref().unwrap().id();
    let out = up_command(&node.data_dir)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another Wisp node"), "{err}");
    assert!(err.contains(&format!("pid {pid}")), "{err}");
    assert!(err.contains(&node.api), "names the other node's API: {err}");
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "it started nothing: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let after: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(node.data_dir.join(f)).unwrap())
        .collect();
    assert_eq!(before, after);
    // The first node is unaffected, and a CLI in its directory finds it without WISP_API.
    let ls = std::process::Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args(["ls", "--json"])
        .current_dir(node.data_dir.parent().unwrap())
        .env("WISP_DATA_DIR", &node.data_dir)
        .env_remove("WISP_API")
        .env_remove("WISP_TOKEN")
        .output()
        .unwrap();
    assert!(
        ls.status.success(),
        "{}",
        String::from_utf8_lossy(&ls.stderr)
    );
}

#[test]
fn the_cli_takes_host_port_and_names_the_token_it_used_when_refused() {
    let node = Node::start();
    let hostport = node.api.trim_start_matches("http://").to_string();
    let out = node.wisp(&["ls", "--api", &hostport]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wrong = tempfile::tempdir().unwrap();
    std::fs::write(wrong.path().join("api-token"), "not-the-token").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args(["deploy", "/nonexistent/wisp.yaml", "--api", &hostport])
        .env("WISP_DATA_DIR", wrong.path())
        .env_remove("WISP_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused the API token"), "{err}");
    assert!(
        err.contains(&wrong.path().join("api-token").display().to_string()),
        "{err}"
    );
    assert!(err.contains(&node.api), "{err}");
}

/// Reads one HTTP/1.1 response (headers, then a `Content-Length` body) from `r`.
fn read_response(r: &mut BufReader<TcpStream>) -> (String, Vec<u8>) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).unwrap() > 0, "connection closed");
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .expect("a content-length");
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    (head, body)
}

#[test]
fn a_function_cannot_frame_the_next_response_on_a_keep_alive_connection() {
    let injected = "HTTP/1.1 200 OK\\r\\nSet-Cookie: session=attacker\\r\\nContent-Length: 11\\r\\n\\r\\nhello world";
    let code = python(&format!(
        r#"def handler(event, context):
    return {{"statusCode": 200, "headers": {{"Content-Length": "0", "Connection": "keep-alive"}}, "body": "{injected}"}}
"#
    ));
    let node = Node::start();
    let m = manifest(&with_host_runtimes(&format!(
        r#"app: desync
functions:
  evil:
    source: {code}
    runtime: python3.11
    handler: app.handler
    routes: ["GET /evil"]
  evilwasm:
    source: {respond}
    routes: ["GET /evilwasm"]
    env:
      RESPOND_HEADERS: "content-length: 0|x-probe: 1"
      RESPOND_BODY: "HTTP/1.1 200 OK\r\nSet-Cookie: session=attacker\r\nContent-Length: 11\r\n\r\nhello world"
  victim:
    source: {echo}
    routes: ["GET /victim"]
"#,
        code = code.path().display(),
        respond = src("respond"),
        echo = src("echo"),
    )));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let addr = node.http.trim_start_matches("http://").to_string();
    for evil in ["/evil", "/evilwasm"] {
        let stream = TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut w = stream.try_clone().unwrap();
        let mut r = BufReader::new(stream);
        write!(w, "GET {evil} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let (head, body) = read_response(&mut r);
        if evil == "/evil" {
            assert!(head.starts_with("HTTP/1.1 200"), "{evil}: {head}");
            assert!(
                String::from_utf8_lossy(&body).contains("Set-Cookie: session=attacker"),
                "{evil}: the function's body arrives whole, as a body: {head}"
            );
            assert!(
                head.to_ascii_lowercase()
                    .contains("x-amzn-remapped-content-length: 0"),
                "{evil}: {head}"
            );
        } else {
            // wasi:http itself refuses a body longer than the content-length the guest
            // declared: the call fails (a generic 500), and the connection stays sound.
            assert!(head.starts_with("HTTP/1.1 500"), "{evil}: {head}");
        }
        write!(w, "GET /victim HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let (head, body) = read_response(&mut r);
        assert!(
            !head.contains("attacker"),
            "{evil} framed the next response: {head}"
        );
        let v: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "{evil}: the next response is not the victim's ({e}): {head}{}",
                String::from_utf8_lossy(&body)
            )
        });
        assert_eq!(v["path_with_query"], "/victim");
    }
}

fn queue_stats(node: &Node, name: &str) -> Option<(u64, u64)> {
    let qs: Vec<Value> = serde_json::from_str(&node.wisp_ok(&["queue", "ls", "--json"])).ok()?;
    let q = qs.iter().find(|q| q["name"] == name)?;
    Some((q["depth"].as_u64()?, q["in_flight"].as_u64()?))
}

#[test]
fn a_queue_batch_is_deleted_only_when_its_function_succeeded() {
    let node = Node::start();
    for q in ["failing-dead", "plain-dead"] {
        node.wisp_ok(&["queue", "create", q]);
    }
    for (q, dead) in [("failing", "failing-dead"), ("plain", "plain-dead")] {
        node.wisp_ok(&[
            "queue",
            "create",
            q,
            "--visibility",
            "1s",
            "--dlq",
            dead,
            "--max-receives",
            "2",
        ]);
        for i in 0..3 {
            node.wisp_ok(&["queue", "send", q, &format!("job {i}")]);
        }
    }
    let m = manifest(&format!(
        r#"app: consumers
functions:
  failing:
    source: {respond}
    env:
      RESPOND_STATUS: "500"
      RESPOND_BODY: '{{"error":"database unavailable"}}'
    queue:
      name: failing
      batch_size: 3
      batch_window: 300ms
  plain:
    source: {respond}
    env:
      RESPOND_BODY: ok
    queue:
      name: plain
      batch_size: 3
      batch_window: 300ms
"#,
        respond = src("respond"),
    ));
    node.wisp_ok(&["deploy", &arg(&m)]);
    // A consumer answering 500 processed nothing: after two receives every message is in
    // the dead-letter queue, none was deleted.
    wait_until(
        "the failed messages in the dead-letter queue",
        Duration::from_secs(30),
        || (queue_stats(&node, "failing-dead")? == (3, 0)).then_some(()),
    );
    assert_eq!(queue_stats(&node, "failing"), Some((0, 0)));
    // A plain-text 200 processed its batch: deleted, not redelivered.
    wait_until(
        "the plain-text consumer's queue drained",
        Duration::from_secs(30),
        || (queue_stats(&node, "plain")? == (0, 0)).then_some(()),
    );
    assert_eq!(queue_stats(&node, "plain-dead"), Some((0, 0)));
    // Failures and dead-lettering are in the node's log, and queue runs are counted as
    // queue runs.
    let log = node.stderr();
    assert!(
        log.contains("the batch failed (the function answered 500)"),
        "{log}"
    );
    assert!(log.contains("moved to the dead-letter queue"), "{log}");
    let m = crate::metrics::scrape(&node);
    assert!(
        crate::metrics::value(
            &m,
            "wisp_invocations_total",
            &[("function", "plain"), ("trigger", "queue")]
        ) >= 1.0
    );
    assert_eq!(
        crate::metrics::value(
            &m,
            "wisp_invocations_total",
            &[("function", "plain"), ("trigger", "http")]
        ),
        0.0
    );
}

/// Whether the server closed `s` within `within` (reads until EOF or a reset).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn slow_and_idle_connections_are_closed_but_a_slow_function_is_not() {
    let node = Node::start_args(&["--header-timeout", "1s", "--idle-timeout", "2s"]);
    let m = manifest(&format!(
        r#"app: slow
functions:
  slow:
    source: {sleep}
    routes: [GET /slow]
"#,
        sleep = src("sleep"),
    ));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let gateway = node.http.trim_start_matches("http://").to_string();
    let api = node.api.trim_start_matches("http://").to_string();
    for addr in [&gateway, &api] {
        // Slowloris: a request begun and never finished.
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nX-A: ")
            .unwrap();
        // Idle: connected, silent.
        let mut idle = TcpStream::connect(addr).unwrap();
        assert!(
            closed_within(&mut slow, Duration::from_secs(10)),
            "{addr}: a request whose headers never end is closed"
        );
        assert!(
            closed_within(&mut idle, Duration::from_secs(10)),
            "{addr}: an idle connection is closed"
        );
    }
    // A call that takes longer than the idle timeout is answered on its connection, and
    // the connection is reused for the next one.
    let stream = TcpStream::connect(&gateway).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    for _ in 0..2 {
        write!(w, "GET /slow?ms=3000 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let (head, _) = read_response(&mut r);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
}

const FORKER: &str = r#"import os

def handler(event, context):
    if event.get("fork"):
        for _ in range(2):
            if os.fork() == 0:
                while True:
                    pass
    return {"pid": os.getpid(), "version": os.environ.get("V")}
"#;

fn deploy_forker(node: &Node, code: &tempfile::TempDir, v: &str) {
    let m = manifest(&with_host_runtimes(&format!(
        r#"app: forker
functions:
  forker:
    source: {code}
    runtime: python3.11
    handler: app.handler
    env:
      V: "{v}"
"#,
        code = code.path().display(),
    )));
    node.wisp_ok(&["deploy", &arg(&m)]);
}

#[test]
fn processes_a_handler_leaves_running_stop_between_invocations() {
    let code = python(FORKER);
    let node = Node::start();
    deploy_forker(&node, &code, "1");
    node.wisp_ok(&["invoke", "forker", "-d", r#"{"fork":true}"#]);
    let pid = node.child.as_ref().unwrap().id();
    assert!(sandboxed_processes(pid) >= 4, "init, runtime and two loops");
    // Once the instance is idle its sandbox is frozen: the two busy loops stop using CPU
    // (unfrozen they would use two cores' worth, 100 ticks per 500 ms).
    wait_until(
        "the idle instance's CPU use to stop",
        Duration::from_secs(10),
        || {
            let before = sandboxed_cpu_ticks(pid);
            std::thread::sleep(Duration::from_millis(500));
            (sandboxed_cpu_ticks(pid) - before < 5).then_some(())
        },
    );
    // The instance still works: thawed for its next invocation.
    let out = node.wisp_ok(&["invoke", "forker", "-d", "{}"]);
    assert!(out.contains("\"version\": \"1\""), "{out}");
}

#[test]
fn a_redeploy_stops_the_old_versions_idle_instances() {
    let code = python(FORKER);
    let node = Node::start_args(&["--native-keep-alive", "10m"]);
    let pid = node.child.as_ref().unwrap().id();
    deploy_forker(&node, &code, "1");
    node.wisp_ok(&["invoke", "forker", "-d", "{}"]);
    assert_eq!(sandbox_inits(pid).len(), 1);
    deploy_forker(&node, &code, "2");
    let out = node.wisp_ok(&["invoke", "forker", "-d", "{}"]);
    assert!(out.contains("\"version\": \"2\""), "{out}");
    // Version 1's idle instance (kept for 10 minutes otherwise) is stopped.
    wait_until(
        "only version 2's instance left",
        Duration::from_secs(15),
        || (sandbox_inits(pid).len() == 1).then_some(()),
    );
}

#[test]
fn a_function_calling_itself_asynchronously_is_stopped_at_depth_16() {
    let node = Node::start();
    let m = manifest(&with_host_runtimes(&format!(
        r#"app: loop
functions:
  looper:
    source: {chain}
    runtime: python3.11
    handler: app.handler
    network: true
    routes: ["POST /loop"]
    env:
      NEXT_URL: {gw}/loop
      NEXT_MODE: event
"#,
        chain = crate::native::native("python-chain"),
        gw = node.http,
    )));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let r = client().post(node.url("/loop")).body("{}").send().unwrap();
    assert_eq!(r.status(), 200);
    wait_until("the loop to be stopped", Duration::from_secs(120), || {
        node.stderr()
            .contains("recursive invocation stopped: function `looper`")
            .then_some(())
    });
    let m = crate::metrics::scrape(&node);
    let ran = crate::metrics::value(
        &m,
        "wisp_invocations_total",
        &[("function", "looper"), ("outcome", "success")],
    );
    // The HTTP call is depth 0, its async descendants 1 to 15; the 16th is stopped.
    assert_eq!(ran, 16.0, "{ran} invocations ran");
    assert_eq!(
        crate::metrics::value(
            &m,
            "wisp_recursive_invocations_stopped_total",
            &[("function", "looper")]
        ),
        1.0
    );
}

#[test]
fn a_deploy_keeps_what_wisp_scale_set_and_says_what_it_changed() {
    let node = Node::start();
    let yaml = |v: &str| {
        format!(
            "app: s\nfunctions:\n  echo:\n    source: {}\n    routes: [GET /e]\n    env:\n      V: \"{v}\"\n",
            src("echo")
        )
    };
    let m = manifest(&yaml("1"));
    node.wisp_ok(&["deploy", &arg(&m)]);
    node.wisp_ok(&["scale", "echo", "--max", "50", "--provisioned", "2"]);
    let out = node.wisp(&["deploy", &arg(&m)]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("keeps max_concurrency 50, provisioned_concurrency 2"),
        "{err}"
    );
    // Nothing changed, so no new version (wisp scale made version 2).
    assert!(err.contains("echo: unchanged (version 2)"), "{err}");
    let f: Value = serde_json::from_str(&node.wisp_ok(&["ls", "--json"])).unwrap();
    let echo = f
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "echo")
        .unwrap()
        .clone();
    let info: Value = serde_json::from_str(
        &client()
            .get(format!("{}/v1/functions/echo", node.api))
            .bearer_auth(node.token())
            .send()
            .unwrap()
            .text()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(info["limits"]["max_concurrency"], 50, "{echo} {info}");
    assert_eq!(info["limits"]["provisioned_concurrency"], 2, "{info}");
    // A change says what it changed.
    let m = manifest(&yaml("2"));
    let out = node.wisp(&["deploy", &arg(&m)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("version 3 is live (changed: env ~V)"), "{err}");
}

#[test]
fn wisp_versions_shows_what_each_version_changed_naming_env_variables_not_values() {
    let node = Node::start();
    let yaml = |timeout: &str, env: &str| {
        format!(
            "app: s\nfunctions:\n  echo:\n    source: {}\n    routes: [GET /e]\n    limits:\n      timeout: {timeout}\n    env:\n{env}",
            src("echo")
        )
    };
    let m = manifest(&yaml(
        "30s",
        "      DB_PASSWORD: hunter2\n      MODE: slow\n",
    ));
    node.wisp_ok(&["deploy", &arg(&m)]);
    node.wisp_ok(&["scale", "echo", "--max", "50", "--provisioned", "1"]);
    let m = manifest(&yaml(
        "10s",
        "      DB_PASSWORD: hunter3\n      REGION: eu\n",
    ));
    let out = node.wisp(&["deploy", &arg(&m)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(
            "version 3 is live (changed: env ~DB_PASSWORD, +REGION, -MODE, timeout 30s → 10s)"
        ),
        "{err}"
    );
    let vs: Value = serde_json::from_str(&node.wisp_ok(&["versions", "echo", "--json"])).unwrap();
    let changes: Vec<Value> = vs
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["changes"].clone())
        .collect();
    assert_eq!(
        changes,
        [
            serde_json::json!([]),
            serde_json::json!(["max_concurrency 100 → 50", "provisioned_concurrency 0 → 1"]),
            serde_json::json!(["env ~DB_PASSWORD, +REGION, -MODE", "timeout 30s → 10s"]),
        ],
        "{vs}"
    );
    let table = node.wisp_ok(&["versions", "echo"]);
    assert!(table.contains("CHANGES"), "{table}");
    assert!(table.contains("first version"), "{table}");
    assert!(
        table.contains("max_concurrency 100 → 50; provisioned_concurrency 0 → 1"),
        "{table}"
    );
    assert!(
        table.contains("env ~DB_PASSWORD, +REGION, -MODE; timeout 30s → 10s"),
        "{table}"
    );
    // Values never appear, in either form.
    for text in [table.as_str(), &vs.to_string(), &err] {
        assert!(!text.contains("hunter") && !text.contains("slow"), "{text}");
    }
}

#[test]
fn wisp_invoke_sends_headers_given_with_dash_h() {
    let node = Node::start();
    let m = manifest(&format!(
        "app: h\nfunctions:\n  echo:\n    source: {}\n    routes: [GET /e]\n",
        src("echo")
    ));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let out = node.wisp_ok(&[
        "invoke",
        "echo",
        "-H",
        "authorization: Bearer abc",
        "-H",
        "content-type: text/plain",
        "-H",
        "x-wisp-route: spoofed",
        "-d",
        "hi",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["headers"]["authorization"], "Bearer abc", "{v}");
    assert_eq!(v["headers"]["content-type"], "text/plain", "{v}");
    assert_ne!(v["headers"]["x-wisp-route"], "spoofed", "{v}");
    // The API's own token never reaches the function.
    assert!(!out.contains(&node.token()), "{out}");
    let err = node.wisp_err(&["invoke", "echo", "-H", "no-colon"]);
    assert!(err.contains("-H takes `name: value`"), "{err}");
}

#[test]
fn completions_are_valid_shell_and_a_directory_without_a_manifest_says_what_to_write() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let script = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        script.contains("deploy") && script.contains("_wisp"),
        "{script}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wisp.bash");
    std::fs::write(&path, &script).unwrap();
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    for shell in ["zsh", "fish"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wisp"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }

    let node = Node::start();
    let empty = tempfile::tempdir().unwrap();
    let err = node.wisp_err(&["deploy", &empty.path().display().to_string()]);
    assert!(err.contains("wisp.yaml not found"), "{err}");
    assert!(err.contains("docs/manifest.md"), "{err}");
    assert!(err.contains("wisp new NAME --template"), "{err}");
}

/// Open file descriptors of process `pid`, and its soft limit (/proc/PID/limits); a
/// process that is gone has none (sandboxed processes die while they are counted).
fn fds_and_limit(pid: u32) -> (usize, usize) {
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let limit = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);
    (open, limit)
}

/// Item 5's probe: a `network: false` handler forks 25 processes that each open up to
/// 1,000 connections to its Runtime API address. Meanwhile another function on the node
/// answers over HTTP and the platform API answers, promptly; the node's own descriptors
/// stay far below its limit; and when the invocation times out every attacker dies.
#[test]
fn a_function_flooding_its_runtime_api_with_connections_cannot_stall_the_node() {
    let node = Node::start();
    let code = tempfile::tempdir().unwrap();
    std::fs::write(
        code.path().join("app.py"),
        r#"import os, socket, time

def handler(event, context):
    host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].rsplit(":", 1)
    for _ in range(25):
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            held = []
            for _ in range(1000):
                try:
                    s = socket.socket()
                    s.setblocking(False)
                    try:
                        s.connect((host, int(port)))
                    except BlockingIOError:
                        pass
                    held.append(s)
                except OSError:
                    time.sleep(0.01)  # out of descriptors: keep what is held
            time.sleep(600)
            os._exit(0)
    time.sleep(600)
"#,
    )
    .unwrap();
    let m = manifest(&with_host_runtimes(&format!(
        r#"app: flood
functions:
  attacker:
    source: {dir}
    runtime: python3.11
    handler: app.handler
    limits:
      timeout: 10s
      memory: 512MiB
  other:
    source: {echo}
    routes: [GET /other]
"#,
        dir = code.path().display(),
        echo = src("echo"),
    )));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let pid = node.child.as_ref().unwrap().id();
    let (baseline, limit) = fds_and_limit(pid);
    assert_eq!(node.get("/other").0, 200);

    let (api, data_dir) = (node.api.clone(), node.data_dir.clone());
    let attack = std::thread::spawn(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_wisp"))
            .args(["invoke", "attacker", "-d", "{}", "--json"])
            .env("WISP_API", &api)
            .env("WISP_DATA_DIR", &data_dir)
            .output()
            .unwrap()
    });
    wait_running(&node, "attacker");
    // The attack is under way once the sandbox holds thousands of sockets.
    let sandbox_fds = || {
        sandboxed_pids(pid)
            .iter()
            .map(|p| fds_and_limit(*p).0)
            .sum::<usize>()
    };
    wait_until(
        "the attacker's processes to hold 2,000 sockets",
        Duration::from_secs(8),
        || (sandbox_fds() >= 2000).then_some(()),
    );
    // While it lasts (the call times out after 10 s): the other function and the API
    // answer within a generous bound, and the node's descriptors stay far from its limit.
    let c = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let (mut slowest, mut most_fds, mut rounds, mut held) = (Duration::ZERO, 0, 0, 0);
    while !attack.is_finished() && running(&node, "attacker") > 0 {
        let t = std::time::Instant::now();
        let r = c
            .get(node.url("/other"))
            .send()
            .expect("the gateway answers");
        assert_eq!(r.status(), 200);
        let r = c
            .get(format!("{}/v1/functions", node.api))
            .bearer_auth(node.token())
            .send()
            .expect("the API answers");
        assert_eq!(r.status(), 200);
        slowest = slowest.max(t.elapsed());
        most_fds = most_fds.max(fds_and_limit(pid).0);
        held = held.max(sandbox_fds());
        rounds += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = attack.join().unwrap();
    let failed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(failed["outcome"], "timeout", "{failed}");
    eprintln!(
        "flood: {rounds} rounds, slowest gateway + API round {slowest:?}, node fds {baseline} -> at most {most_fds} (limit {limit}); attacker held {held}"
    );
    assert!(rounds >= 5, "the attack was measured: {rounds} rounds");
    assert!(
        slowest < Duration::from_secs(2),
        "the node stalled under the attack: {slowest:?}"
    );
    assert!(
        most_fds < baseline + 500 && most_fds < limit / 4,
        "the node's descriptors grew from {baseline} to {most_fds} (limit {limit})"
    );
    // The timed-out instance was killed: every attacker process is gone.
    wait_until(
        "every attacker process to die",
        Duration::from_secs(10),
        || (sandboxed_processes(pid) == 0).then_some(()),
    );
    assert_eq!(node.get("/other").0, 200);
}
