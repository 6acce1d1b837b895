use crate::harness::*;
use std::time::{Duration, Instant};

fn deploy_limits_app(node: &Node) {
    let m = manifest(&format!(
        r#"app: limits
functions:
  spin:
    source: {spin}
    routes: [GET /spin]
    limits:
      timeout: 1s
  bomb:
    source: {bomb}
    routes: [GET /bomb]
    limits:
      memory: 32MiB
  crash:
    source: {panic}
    routes: [GET /crash]
  echo:
    source: {echo}
    routes: [GET /echo]
  slow:
    source: {sleep}
    routes: [GET /slow]
    limits:
      max_concurrency: 10
"#,
        spin = src("spin_loop"),
        bomb = src("alloc_bomb"),
        panic = src("panic"),
        echo = src("echo"),
        sleep = src("sleep"),
    ));
    node.wisp_ok(&["deploy", &arg(&m)]);
}

#[test]
fn infinite_loop_gets_504_and_the_node_keeps_serving() {
    let node = Node::start();
    deploy_limits_app(&node);
    let url = node.url("/spin");
    let spinning = std::thread::spawn(move || {
        let started = Instant::now();
        let r = client().get(url).send().unwrap();
        (r.status().as_u16(), started.elapsed(), r.text().unwrap())
    });
    // While the loop burns CPU, another function answers.
    wait_running(&node, "spin");
    assert_eq!(node.get("/echo").0, 200);
    let (status, took, body) = spinning.join().unwrap();
    assert_eq!(status, 504, "{body}");
    assert!(took >= Duration::from_millis(900), "{took:?}");
    // Public callers get the generic text; the function's timeout is in its logs.
    assert!(body.contains("Endpoint request timed out"), "{body}");
    let logs = node.wisp_ok(&["logs", "spin"]);
    assert!(logs.contains("timeout of 1000ms"), "{logs}");
    assert_eq!(node.get("/echo").0, 200);
}

#[test]
fn unbounded_allocation_gets_500_and_the_node_is_unaffected() {
    let node = Node::start();
    deploy_limits_app(&node);
    let (status, body) = node.get("/bomb");
    assert_eq!(status, 500, "{body}");
    // The caller gets the generic text; the reason is in the function's logs.
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"],
        "Internal Server Error"
    );
    let logs = node.wisp_ok(&["logs", "bomb"]);
    assert!(logs.contains("memory limit of 32MiB"), "{logs}");
    assert_eq!(node.get("/echo").0, 200);
    // Again: the pool slot was cleaned up and reused.
    assert_eq!(node.get("/bomb").0, 500);
    assert_eq!(node.get("/echo").0, 200);
}

#[test]
fn a_panic_gets_500_and_the_node_is_unaffected() {
    let node = Node::start();
    deploy_limits_app(&node);
    let r = client().get(node.url("/crash")).send().unwrap();
    assert_eq!(r.status(), 500);
    let request_id = r.headers()["x-wisp-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&r.text().unwrap()).unwrap();
    assert_eq!(v["error"], "Internal Server Error");
    // The panic is in the function's logs, under the request id the caller got.
    let logs = node.wisp_ok(&["logs", "crash", "--request-id", &request_id]);
    assert!(logs.contains("fixture panic"), "{logs}");
    assert_eq!(node.get("/echo").0, 200);
}

#[test]
fn excess_concurrency_gets_429_and_nothing_hangs() {
    // Callers wait for a slot for at most 1 s, then get 429.
    let node = Node::start_args(&["--queue-wait", "1s"]);
    deploy_limits_app(&node);
    let url = node.url("/slow?ms=2000");
    let started = Instant::now();
    let handles: Vec<_> = (0..200)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let r = client()
                    .get(&url)
                    .send()
                    .expect("no request may hang or fail");
                let retry_after = r.headers().get("retry-after").is_some();
                (r.status().as_u16(), retry_after)
            })
        })
        .collect();
    let results: Vec<(u16, bool)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let throttled = results.iter().filter(|(s, _)| *s == 429).count();
    assert_eq!(
        ok + throttled,
        200,
        "only 200 and 429 expected: {results:?}"
    );
    assert!(ok >= 10, "at least the first 10 ran: {ok}");
    assert!(throttled >= 100, "most were throttled: {throttled}");
    assert!(
        results.iter().filter(|(s, _)| *s == 429).all(|(_, ra)| *ra),
        "429 carries Retry-After"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    // Once the slow calls are done, capacity is back.
    assert_eq!(node.get("/slow?ms=1").0, 200);
}
