//! Large bodies stream through the node instead of being held whole: objects a function
//! writes and reads through `http://objects.wisp`, long responses read slowly by their
//! clients, and a function calling another full duplex through `http://self`. Memory is
//! read from the node's `/proc/<pid>/status` while the bodies move.

use crate::harness::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const MIB: u64 = 1024 * 1024;

fn node_pid(node: &Node) -> u32 {
    node.child.as_ref().unwrap().id()
}

/// The node's resident memory now, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kb * 1024
}

/// Samples the node's RSS every 20 ms until dropped; `peak()` is the highest seen.
struct RssWatch {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssWatch {
    fn start(pid: u32) -> RssWatch {
        let peak = Arc::new(AtomicU64::new(rss(pid)));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssWatch { peak, stop }
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The `stream` fixture's pattern: byte `i` is `i % 251`.
fn is_pattern(bytes: &[u8], from: u64) -> bool {
    bytes
        .iter()
        .enumerate()
        .all(|(i, b)| *b == ((from + i as u64) % 251) as u8)
}

fn stream_call(node: &Node, route: &str, headers: &[(&str, &str)]) -> serde_json::Value {
    let mut req = client().post(node.url(route));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().unwrap()
}

#[test]
fn a_function_writes_and_reads_objects_larger_than_it_could_hold_without_the_node_holding_them() {
    let node = Node::start();
    let m = manifest(&format!(
        r#"app: big-objects
functions:
  store:
    source: {fetch}
    routes: ["POST /store"]
    outbound: [objects]
  mover:
    source: {stream}
    routes: ["POST /move"]
    outbound: [objects]
    limits:
      memory: 32MiB
      timeout: 120s
"#,
        fetch = src("fetch"),
        stream = src("stream"),
    ));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let resp = client()
        .post(node.url("/store"))
        .header("x-fetch-url", "http://objects.wisp/big")
        .header("x-fetch-method", "PUT")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);

    // 96 MiB from a function with 32 MiB of memory: more than it could hold, and more
    // than a function could send before bodies streamed (64 MiB).
    let size = 96 * MIB;
    let pid = node_pid(&node);
    let before = rss(pid);
    let watch = RssWatch::start(pid);
    let put = stream_call(
        &node,
        "/move",
        &[
            ("x-mode", "put"),
            ("x-url", "http://objects.wisp/big/blob"),
            ("x-size", &size.to_string()),
        ],
    );
    assert_eq!(put["status"], 200, "{put}");

    // Six functions read it at once. Held whole, that is 576 MiB in the node.
    let readers: Vec<_> = (0..6)
        .map(|_| {
            let url = node.url("/move");
            std::thread::spawn(move || {
                client()
                    .post(url)
                    .header("x-mode", "get")
                    .header("x-url", "http://objects.wisp/big/blob")
                    .send()
                    .unwrap()
                    .json::<serde_json::Value>()
                    .unwrap()
            })
        })
        .collect();
    for r in readers {
        let got = r.join().unwrap();
        assert_eq!(
            (&got["status"], &got["len"], &got["pattern"]),
            (&200.into(), &size.into(), &true.into()),
            "{got}"
        );
    }
    let grew = watch.peak().saturating_sub(before);
    drop(watch);
    eprintln!(
        "node RSS: {} MiB before, peak growth {} MiB",
        before / MIB,
        grew / MIB
    );
    assert!(
        grew < size,
        "the node grew by {} MiB while functions moved 96 MiB objects (7 bodies, 672 MiB in all)",
        grew / MIB
    );
}

/// Sends `GET path` on a raw connection with the `emit` headers, reads the response
/// head and the first `take` body bytes, and returns the connection unread beyond.
fn start_reading(node: &Node, path: &str, size: u64, take: usize) -> TcpStream {
    let mut conn = TcpStream::connect(node.http.trim_start_matches("http://")).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: x\r\nx-mode: emit\r\nx-size: {size}\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while got.len() < take {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "the connection closed early");
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got[..got.len().min(512)]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    conn
}

#[test]
fn slow_readers_of_long_responses_hold_the_function_back_not_the_nodes_memory() {
    let node = Node::start();
    let m = manifest(&format!(
        r#"app: long-answers
functions:
  emit:
    source: {stream}
    routes: ["GET /emit"]
    limits:
      memory: 32MiB
      timeout: 60s
      max_concurrency: 20
"#,
        stream = src("stream"),
    ));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let size = 31 * MIB;
    let pid = node_pid(&node);
    let before = rss(pid);
    let watch = RssWatch::start(pid);
    // Twelve clients take the first 64 KiB of a 31 MiB answer and stop reading. Held
    // whole, that is 372 MiB in the node for as long as they dawdle.
    let stalled: Vec<TcpStream> = (0..12)
        .map(|_| start_reading(&node, "/emit", size, 64 * 1024))
        .collect();
    // Each function is held back by its reader, still running, not done and buffered.
    wait_running_n(&node, "emit", 12);
    // Meanwhile a reader that reads gets every byte, in order.
    let resp = client().get(node.url("/emit")).header("x-mode", "emit");
    let body = resp
        .header("x-size", size.to_string())
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(body.len() as u64, size);
    assert!(is_pattern(&body, 0));
    let grew = watch.peak().saturating_sub(before);
    drop(watch);
    eprintln!(
        "node RSS: {} MiB before, peak growth {} MiB",
        before / MIB,
        grew / MIB
    );
    assert!(
        grew < 64 * MIB,
        "the node grew by {} MiB with 12 stalled readers of 31 MiB answers",
        grew / MIB
    );
    // When the stalled clients go away, their invocations end (and are counted).
    drop(stalled);
    wait_until("the emitters to stop", Duration::from_secs(30), || {
        (running(&node, "emit") == 0).then_some(())
    });
}

#[test]
fn a_response_cut_off_by_a_failing_function_is_never_passed_off_as_whole() {
    let node = Node::start();
    let m = manifest(&format!(
        "app: cut\nfunctions:\n  emit:\n    source: {}\n    routes: [\"GET /emit\"]\n",
        src("stream")
    ));
    node.wisp_ok(&["deploy", &arg(&m)]);
    // Small enough to be held whole: the failure is a clean 500.
    let resp = client()
        .get(node.url("/emit"))
        .header("x-mode", "emit")
        .header("x-size", "100000")
        .header("x-fail-after", "65536")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 500);
    // Long enough to stream: the head has gone, so the body must end in an error, not a
    // clean end that a client would take for the whole response.
    let resp = client()
        .get(node.url("/emit"))
        .header("x-mode", "emit")
        .header("x-size", (8 * MIB).to_string())
        .header("x-fail-after", (MIB).to_string())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let read = resp.bytes();
    assert!(
        read.is_err(),
        "a cut-off body read as complete: {:?} bytes",
        read.map(|b| b.len())
    );
    // The failure is the function's, in its logs.
    wait_until("the failure in the logs", Duration::from_secs(10), || {
        let out = node.wisp(&["logs", "emit"]);
        String::from_utf8_lossy(&out.stdout)
            .contains("failing on purpose")
            .then_some(())
    });
}

#[test]
fn a_function_calls_another_full_duplex_through_self() {
    let node = Node::start();
    let m = manifest(&format!(
        r#"app: duplex
functions:
  relay:
    source: {stream}
    routes: ["POST /relay"]
    outbound: [self]
    limits:
      timeout: 10s
  echo:
    source: {stream}
    routes: ["POST /echo"]
    limits:
      timeout: 10s
"#,
        stream = src("stream"),
    ));
    node.wisp_ok(&["deploy", &arg(&m)]);
    // The relay sends its request to /echo and waits for the answer's head before it
    // writes a byte of the body: only a callee that answers while its body still
    // arrives (and a node that passes both on as they come) lets this finish.
    let started = std::time::Instant::now();
    let resp = client()
        .post(node.url("/relay"))
        .header("x-mode", "double-echo")
        .header("x-url", "http://self/echo")
        .body("full duplex through the node")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().unwrap(), "full duplex through the node");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it took the callee's whole timeout"
    );
}

#[test]
fn a_body_cut_off_by_a_failing_caller_never_reads_as_complete_to_the_callee() {
    let node = Node::start();
    let m = manifest(&format!(
        r#"app: cut-calls
functions:
  relay:
    source: {stream}
    routes: ["POST /relay"]
    outbound: [self]
  echo:
    source: {stream}
    routes: ["POST /echo"]
"#,
        stream = src("stream"),
    ));
    node.wisp_ok(&["deploy", &arg(&m)]);
    // The relay streams 200 KiB to /echo and panics after about 64 KiB: its instance
    // goes away mid-body, which the callee must see as an error, not as the end of it.
    let resp = client()
        .post(node.url("/relay"))
        .header("x-mode", "double-echo")
        .header("x-url", "http://self/echo")
        .header("x-fail-after", "65536")
        .body(vec![7u8; 200 * 1024])
        .send()
        .unwrap();
    assert_eq!(resp.status(), 500);
    wait_until(
        "the callee to see its body cut off",
        Duration::from_secs(15),
        || {
            let out = node.wisp(&["logs", "echo"]);
            let logs = String::from_utf8_lossy(&out.stdout).into_owned();
            logs.contains("echo: reading the request").then_some(())
        },
    );
}

#[test]
fn http_1_0_clients_get_whole_responses_and_stalled_readers_are_cut_off() {
    let node = Node::start_args(&["--idle-timeout", "2s"]);
    let m = manifest(&format!(
        "app: old\nfunctions:\n  emit:\n    source: {}\n    routes: [\"GET /emit\"]\n    limits:\n      timeout: 60s\n",
        src("stream")
    ));
    node.wisp_ok(&["deploy", &arg(&m)]);
    // HTTP/1.0 has no chunked encoding: a long response comes whole, with its length,
    // so a cut-off one could never pass for whole.
    let mut conn = TcpStream::connect(node.http.trim_start_matches("http://")).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        conn,
        "GET /emit HTTP/1.0\r\nHost: x\r\nx-mode: emit\r\nx-size: {}\r\n\r\n",
        MIB
    )
    .unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.0 200"), "{head}");
    assert!(head.contains(&format!("content-length: {MIB}")), "{head}");
    assert_eq!(raw.len() - split, MIB as usize);
    assert!(is_pattern(&raw[split..], 0));

    // A reader that stops reading is cut off after the node's idle timeout (2 s here),
    // not held for the function's 60 s: the invocation ends and frees its slot.
    let stalled = start_reading(&node, "/emit", 31 * MIB, 64 * 1024);
    wait_running(&node, "emit");
    let started = std::time::Instant::now();
    wait_until(
        "the stalled reader's call to end",
        Duration::from_secs(30),
        || (running(&node, "emit") == 0).then_some(()),
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    drop(stalled);
}
