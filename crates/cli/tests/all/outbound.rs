//! WebAssembly functions calling node services by outbound HTTP (`outbound:`): the object
//! store at `http://objects.wisp`, other functions at `http://self`; everything else, and
//! any service not granted, is denied.

use crate::harness::*;
use serde_json::Value;

/// Asks the `fetch` fixture behind `route` to make one request, and returns its report.
fn fetch(node: &Node, route: &str, method: &str, url: &str, body: &str) -> Value {
    let resp = client()
        .post(node.url(route))
        .header("x-fetch-url", url)
        .header("x-fetch-method", method)
        .body(body.to_string())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().unwrap()
}

#[test]
fn a_wasm_function_reads_and_writes_objects_and_calls_functions_only_where_granted() {
    let node = Node::start();
    let m = manifest(&format!(
        r#"app: out
functions:
  store:
    source: {fetch}
    routes: ["POST /store"]
    outbound: [objects, self]
  jail:
    source: {fetch}
    routes: ["POST /jail"]
  echo:
    source: {echo}
    routes: ["POST /echo"]
"#,
        fetch = src("fetch"),
        echo = src("echo"),
    ));
    node.wisp_ok(&["deploy", &arg(&m)]);

    // The object store, without keys: create a bucket, write, list, read, delete.
    let r = fetch(&node, "/store", "PUT", "http://objects.wisp/files", "");
    assert_eq!(r["status"], 200, "{r}");
    let r = fetch(
        &node,
        "/store",
        "PUT",
        "http://objects.wisp/files/a/b.txt",
        "hello objects",
    );
    assert_eq!(r["status"], 200, "{r}");
    assert!(r["headers"]["etag"].as_str().is_some(), "{r}");
    let r = fetch(
        &node,
        "/store",
        "GET",
        "http://objects.wisp/files?list-type=2",
        "",
    );
    assert!(
        r["body"].as_str().unwrap().contains("<Key>a/b.txt</Key>"),
        "{r}"
    );
    let r = fetch(
        &node,
        "/store",
        "GET",
        "http://objects.wisp/files/a/b.txt",
        "",
    );
    assert_eq!(
        (r["status"].as_u64(), r["body"].as_str()),
        (Some(200), Some("hello objects"))
    );
    let r = fetch(
        &node,
        "/store",
        "GET",
        "http://objects.wisp/files/missing",
        "",
    );
    assert_eq!(r["status"], 404, "{r}");
    assert!(r["body"].as_str().unwrap().contains("NoSuchKey"), "{r}");

    // Another function's route, within the caller's trace.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let resp = client()
        .post(node.url("/store"))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .header("x-fetch-url", "http://self/echo")
        .header("x-fetch-method", "POST")
        .body("ping")
        .send()
        .unwrap();
    let store_request = resp.headers()["x-wisp-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let r: Value = resp.json().unwrap();
    assert_eq!(r["status"], 200, "{r}");
    let echoed: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    assert_eq!(echoed["body"], "ping");
    let tp = echoed["headers"]["traceparent"].as_str().unwrap();
    assert!(tp.starts_with(&format!("00-{trace}-")), "{tp}");
    let spans: Value =
        serde_json::from_str(&node.wisp_ok(&["trace", &store_request, "--json"])).unwrap();
    let span = |f: &str| {
        spans["spans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["function"] == f)
            .unwrap_or_else(|| panic!("no {f} in {spans}"))
            .clone()
    };
    assert_eq!(span("echo")["parent_span_id"], span("store")["span_id"]);

    // Not granted, or not a node service: denied, and nothing was written.
    let r = fetch(
        &node,
        "/jail",
        "PUT",
        "http://objects.wisp/files/x.txt",
        "nope",
    );
    assert!(
        r["error"].as_str().unwrap().contains("HttpRequestDenied"),
        "{r}"
    );
    let r = fetch(&node, "/store", "GET", "http://127.0.0.1:9/", "");
    assert!(
        r["error"].as_str().unwrap().contains("HttpRequestDenied"),
        "{r}"
    );
    let r = fetch(
        &node,
        "/store",
        "GET",
        "http://objects.wisp/files/x.txt",
        "",
    );
    assert_eq!(r["status"], 404, "{r}");
}

#[test]
fn an_objects_grant_can_be_limited_to_named_buckets() {
    let node = Node::start();
    let m = manifest(&format!(
        r#"app: scoped
functions:
  wide:
    source: {fetch}
    routes: ["POST /wide"]
    outbound: [objects]
  narrow:
    source: {fetch}
    routes: ["POST /narrow"]
    outbound: [{{objects: [mine]}}]
"#,
        fetch = src("fetch"),
    ));
    node.wisp_ok(&["deploy", &arg(&m)]);
    for b in ["mine", "theirs"] {
        let r = fetch(
            &node,
            "/wide",
            "PUT",
            &format!("http://objects.wisp/{b}"),
            "",
        );
        assert_eq!(r["status"], 200, "{r}");
    }
    let r = fetch(&node, "/narrow", "PUT", "http://objects.wisp/mine/k", "ok");
    assert_eq!(r["status"], 200, "{r}");
    let r = fetch(&node, "/narrow", "GET", "http://objects.wisp/mine/k", "");
    assert_eq!(
        (r["status"].as_u64(), r["body"].as_str()),
        (Some(200), Some("ok")),
        "{r}"
    );
    // Another bucket, and the list of buckets, are refused; nothing was written.
    let r = fetch(
        &node,
        "/narrow",
        "PUT",
        "http://objects.wisp/theirs/k",
        "no",
    );
    assert_eq!(r["status"], 403, "{r}");
    assert!(r["body"].as_str().unwrap().contains("AccessDenied"), "{r}");
    let r = fetch(&node, "/narrow", "GET", "http://objects.wisp/", "");
    assert_eq!(r["status"], 403, "{r}");
    let r = fetch(&node, "/wide", "GET", "http://objects.wisp/theirs/k", "");
    assert_eq!(r["status"], 404, "{r}");
}
