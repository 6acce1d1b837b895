//! Scaling: queueing before 429, reserved capacity, provisioned instances, scale to zero.

use crate::harness::*;
use crate::native::{instance, native, with_host_runtimes};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Calls `POST /v1/functions/{name}/invoke` from `n` threads at once; returns each
/// caller's (HTTP status, envelope or error body).
fn flood(node: &Node, name: &str, event: &Value, n: usize) -> Vec<(u16, Value)> {
    let url = format!("{}/v1/functions/{name}/invoke", node.api);
    let token = node.token();
    let body = event.to_string();
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (url, token, body) = (url.clone(), token.clone(), body.clone());
            std::thread::spawn(move || {
                let r = client()
                    .post(&url)
                    .bearer_auth(&token)
                    .body(body)
                    .send()
                    .expect("no request may hang or fail to answer");
                let status = r.status().as_u16();
                (status, r.json::<Value>().unwrap_or(Value::Null))
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// The function's answer inside an invoke envelope.
fn answer(envelope: &Value) -> Value {
    serde_json::from_str(envelope["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null)
}

#[test]
fn a_burst_beyond_max_concurrency_queues_then_gets_429_and_never_hangs() {
    let node = Node::start_args(&["--queue-wait", "1s"]);
    let m = manifest(&with_host_runtimes(&format!(
        r#"app: burst
functions:
  slow:
    source: {echo}
    runtime: python3.11
    handler: app.handler
    limits:
      max_concurrency: 10
      timeout: 10s
"#,
        echo = native("python-echo"),
    )));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let started = Instant::now();
    let results = flood(&node, "slow", &json!({"sleep_ms": 400}), 200);
    let took = started.elapsed();
    let ok: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, v)| v)
        .collect();
    let throttled = results.iter().filter(|(s, _)| *s == 429).count();
    assert_eq!(ok.len() + throttled, 200, "only 200s and 429s: {results:?}");
    assert!(ok.len() >= 10, "the first ten run at once: {}", ok.len());
    assert!(
        ok.len() > 10,
        "queued calls run when a slot frees up, not only the first ten"
    );
    assert!(throttled > 0, "a queue wait of 1s cannot hold 200 × 400 ms");
    let instances: std::collections::HashSet<String> =
        ok.iter().map(|v| instance(&answer(v))).collect();
    assert!(
        instances.len() <= 10,
        "at most max_concurrency instances: {}",
        instances.len()
    );
    let refused = &results.iter().find(|(s, _)| *s == 429).unwrap().1;
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("concurrency limit of 10"),
        "{refused}"
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
}

#[test]
fn reserved_concurrency_holds_under_pressure_from_another_function() {
    let node = Node::start_args(&["--memory-budget", "512MiB", "--queue-wait", "300ms"]);
    let m = manifest(&with_host_runtimes(&format!(
        r#"app: shared
functions:
  vip:
    source: {echo}
    runtime: python3.11
    handler: app.handler
    limits:
      memory: 128MiB
      reserved_concurrency: 2
  noisy:
    source: {echo}
    runtime: python3.11
    handler: app.handler
    limits:
      memory: 128MiB
"#,
        echo = native("python-echo"),
    )));
    node.wisp_ok(&["deploy", &arg(&m)]);
    // `noisy` may use 512 - 2 × 128 = 256 MiB: two at once.
    let noisy = {
        let (api, token) = (node.api.clone(), node.token());
        std::thread::spawn(move || {
            let n = Node::attach(&api, &token);
            flood(&n, "noisy", &json!({"sleep_ms": 5000}), 8)
        })
    };
    // The node is full once both of noisy's calls run (its gauge says so).
    wait_running_n(&node, "noisy", 2);
    let vip = flood(&node, "vip", &json!({"sleep_ms": 100}), 2);
    assert!(
        vip.iter().all(|(s, _)| *s == 200),
        "the reservation is the VIP's even with the node full: {vip:?}"
    );
    assert_eq!(
        running(&node, "noisy"),
        2,
        "noisy still filled the node while the VIP's calls ran"
    );
    let noisy = noisy.join().unwrap();
    let ok = noisy.iter().filter(|(s, _)| *s == 200).count();
    let full: Vec<&Value> = noisy
        .iter()
        .filter(|(s, _)| *s == 429)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(ok, 2, "{noisy:?}");
    assert_eq!(full.len(), 6, "{noisy:?}");
    assert!(
        full[0]["error"]
            .as_str()
            .unwrap()
            .contains("node is at capacity"),
        "{}",
        full[0]
    );
    // Reservations beyond the node's budget are refused at deploy time.
    let too_much = manifest(&with_host_runtimes(&format!(
        r#"app: greedy
functions:
  greedy:
    source: {echo}
    runtime: python3.11
    handler: app.handler
    limits:
      memory: 128MiB
      reserved_concurrency: 4
"#,
        echo = native("python-echo"),
    )));
    let err = node.wisp_err(&["deploy", &arg(&too_much)]);
    assert!(err.contains("reserved"), "{err}");
}

#[test]
fn idle_native_instances_stop_after_the_keep_alive() {
    let mut node = Node::start_args(&["--native-keep-alive", "1s"]);
    let m = manifest(&with_host_runtimes(&format!(
        r#"app: idle
functions:
  idle:
    source: {echo}
    runtime: python3.11
    handler: app.handler
"#,
        echo = native("python-echo"),
    )));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let out = node.wisp_ok(&["invoke", "idle", "-d", "{}"]);
    assert!(out.contains("\"count\""), "{out}");
    let pid = node.child.as_ref().unwrap().id();
    assert_eq!(sandboxed_processes(pid), 2, "{}", ps());
    let deadline = Instant::now() + Duration::from_secs(10);
    while sandboxed_processes(pid) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(sandboxed_processes(pid), 0, "scaled to zero: {}", ps());
    // And back from zero: a cold start.
    node.wisp_ok(&["invoke", "idle", "-d", "{}"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let logs = loop {
        // Log lines are written asynchronously: wait for the second invocation's.
        let logs = node.wisp_ok(&["logs", "idle"]);
        if logs.matches("REPORT").count() == 2 || Instant::now() > deadline {
            break logs;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(logs.matches("Init Duration").count(), 2, "{logs}");
    node.terminate();
}

#[test]
fn provisioned_instances_are_ready_before_the_first_call_and_come_back_when_killed() {
    let node = Node::start();
    let m = manifest(&with_host_runtimes(&format!(
        r#"app: prov
functions:
  ready:
    source: {echo}
    runtime: python3.11
    handler: app.handler
    limits:
      max_concurrency: 5
      provisioned_concurrency: 2
"#,
        echo = native("python-echo"),
    )));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let pid = node.child.as_ref().unwrap().id();
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(15);
        while sandbox_inits(pid).len() != n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(sandbox_inits(pid).len(), n, "{}", ps());
    };
    // Two instances, before anyone called.
    wait_for(2);
    // Once both have finished their init they are idle, and the first call is warm.
    wait_until(
        "both provisioned instances to be idle",
        Duration::from_secs(15),
        || {
            let ls: Value = serde_json::from_str(&node.wisp_ok(&["ls", "--json"])).unwrap();
            (ls[0]["scaling"]["idle"] == 2).then_some(())
        },
    );
    node.wisp_ok(&["invoke", "ready", "-d", "{}"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let logs = loop {
        let logs = node.wisp_ok(&["logs", "ready"]);
        if logs.contains("REPORT") || Instant::now() > deadline {
            break logs;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(logs.contains("REPORT"), "{logs}");
    assert!(
        !logs.contains("Init Duration"),
        "a provisioned call is warm: {logs}"
    );
    // Kill one: it is replaced.
    let victim = sandbox_inits(pid)[0];
    let st = std::process::Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    // The instance was frozen while idle: the node sees the pending kill, lets it die
    // and starts a replacement.
    wait_until(
        "the killed instance to be gone",
        Duration::from_secs(10),
        || (!sandbox_inits(pid).contains(&victim)).then_some(()),
    );
    wait_for(2);
}

#[test]
fn wisp_scale_makes_a_version_and_ls_shows_scaling() {
    let node = Node::start();
    let m = manifest(&with_host_runtimes(&format!(
        r#"app: sc
functions:
  api:
    source: {echo}
    runtime: python3.11
    handler: app.handler
"#,
        echo = native("python-echo"),
    )));
    node.wisp_ok(&["deploy", &arg(&m)]);
    node.wisp_ok(&["invoke", "api", "-d", "{}"]);
    let ls: Value = serde_json::from_str(&node.wisp_ok(&["ls", "--json"])).unwrap();
    let sc = &ls[0]["scaling"];
    assert_eq!(sc["instances"], 1, "{sc}");
    assert_eq!(sc["idle"], 1, "{sc}");
    assert_eq!(sc["running"], 0, "{sc}");
    assert_eq!(sc["last_hour"]["cold_starts"], 1, "{sc}");
    assert_eq!(sc["max_concurrency"], 100, "{sc}");

    let out = node.wisp_ok(&["scale", "api", "--max", "7", "--provisioned", "1", "--json"]);
    let f: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(f["version"], 2);
    assert_eq!(f["limits"]["max_concurrency"], 7);
    assert_eq!(f["limits"]["provisioned_concurrency"], 1);
    let table = node.wisp_ok(&["ls"]);
    assert!(table.contains("RUNNING/MAX"), "{table}");
    assert!(table.contains("0/7, 1 provisioned"), "{table}");
    // Bad values are refused with the reason; nothing changes.
    let err = node.wisp_err(&["scale", "api", "--provisioned", "8"]);
    assert!(err.contains("provisioned_concurrency 8"), "{err}");
    let err = node.wisp_err(&["scale", "api"]);
    assert!(err.contains("nothing to change"), "{err}");
    // Rolling back restores the old limits, like any version.
    node.wisp_ok(&["rollback", "api", "--to", "1"]);
    let ls: Value = serde_json::from_str(&node.wisp_ok(&["ls", "--json"])).unwrap();
    assert_eq!(ls[0]["limits"]["max_concurrency"], 100);
}

#[test]
fn the_adaptive_keep_alive_stops_a_periodic_function_between_calls_and_prewarms_it() {
    // Half-second bins so that a 3-second period is learned in seconds, not hours.
    let node = Node::start_args(&[
        "--native-keep-alive",
        "adaptive:bin=500ms,range=1m,min_samples=3",
    ]);
    let m = manifest(&with_host_runtimes(&format!(
        r#"app: tick
functions:
  tick:
    source: {echo}
    runtime: python3.11
    handler: app.handler
"#,
        echo = native("python-echo"),
    )));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let pid = node.child.as_ref().unwrap().id();
    let period = Duration::from_secs(3);
    let start = Instant::now();
    let mut between = Vec::new();
    for k in 0..8u32 {
        while start.elapsed() < period * k {
            std::thread::sleep(Duration::from_millis(10));
        }
        node.wisp_ok(&["invoke", "tick", "-d", "{}"]);
        // Whether the instance was stopped within 800 ms of the call (polled: a learned
        // period stops it at once; the keep-alive of the first calls keeps it running).
        let stopped_by = Instant::now() + Duration::from_millis(800);
        let mut left = sandboxed_processes(pid);
        while left > 0 && Instant::now() < stopped_by {
            std::thread::sleep(Duration::from_millis(20));
            left = sandboxed_processes(pid);
        }
        between.push(left);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let logs = loop {
        let logs = node.wisp_ok(&["logs", "tick", "-n", "1000"]);
        if logs.matches("REPORT").count() == 8 || Instant::now() > deadline {
            break logs;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let reports: Vec<&str> = logs.lines().filter(|l| l.contains("REPORT")).collect();
    assert_eq!(reports.len(), 8, "{logs}");
    // Once learned (after min_samples idle times), the instance is stopped right after
    // each call and started again shortly before the next one: no process in between,
    // and the calls are warm.
    assert_eq!(
        between[5..].iter().sum::<usize>(),
        0,
        "no instance between calls once the period is learned: {between:?}"
    );
    // What was learned survives a restart.
    let ls: Value = serde_json::from_str(&node.wisp_ok(&["ls", "--json"])).unwrap();
    let learned = ls[0]["scaling"]["idle_samples"].as_u64().unwrap();
    assert!(learned >= 5, "{ls}");
    let mut node = node;
    assert!(node.terminate().success());
    let again = Node::start_with(
        &node.data_dir,
        &[
            "--native-keep-alive",
            "adaptive:bin=500ms,range=1m,min_samples=3",
        ],
    );
    let ls: Value = serde_json::from_str(&again.wisp_ok(&["ls", "--json"])).unwrap();
    assert_eq!(ls[0]["scaling"]["idle_samples"], learned, "{ls}");
    let cold_late = reports[5..]
        .iter()
        .filter(|r| r.contains("Init Duration"))
        .count();
    assert!(
        cold_late <= 1,
        "pre-warmed calls are warm: {cold_late} of the last 3 were cold\n{logs}"
    );
}

#[test]
fn idle_wasm_code_is_unloaded_and_mapped_again_without_recompiling() {
    let node = Node::start_args(&["--unload-after", "300ms"]);
    let m = manifest(&format!(
        "app: wz\nfunctions:\n  echo:\n    source: {}\n    routes: [GET /wz]\n",
        src("echo")
    ));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let cold = |node: &Node| {
        let ls: Value = serde_json::from_str(&node.wisp_ok(&["ls", "--json"])).unwrap();
        ls[0]["scaling"]["last_hour"]["cold_starts"]
            .as_u64()
            .unwrap()
    };
    let compiled: Vec<_> = walk(&node.data_dir.join("compiled"));
    assert_eq!(compiled.len(), 1, "{compiled:?}");
    let mtime = |p: &std::path::Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let before = mtime(&compiled[0]);
    // A deploy loads the component (so it can serve): the first call is warm.
    assert_eq!(node.get("/wz").0, 200);
    assert_eq!(node.get("/wz").0, 200);
    let after_calls = cold(&node);
    // Not synchronisation: the idle time passing (past --unload-after) is what is tested,
    // and nothing outside the node shows the unload until the next call.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(node.get("/wz").0, 200);
    assert_eq!(
        cold(&node),
        after_calls + 1,
        "the call after the idle time loaded the code again"
    );
    assert_eq!(mtime(&compiled[0]), before, "loaded, not recompiled");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
