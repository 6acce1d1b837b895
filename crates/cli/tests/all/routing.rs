use crate::harness::*;

fn echo_app(node: &Node) {
    let m = manifest(&format!(
        "app: echo\nfunctions:\n  echo:\n    source: {}\n    routes:\n      - GET /users/{{id}}\n      - GET /users/me\n      - GET /files/{{*path}}\n      - ANY /any\n      - POST /upload\n    limits:\n      max_body: 1KiB\n",
        src("echo")
    ));
    node.wisp_ok(&["deploy", &arg(&m)]);
}

fn echo(node: &Node, path: &str) -> (reqwest::header::HeaderMap, serde_json::Value) {
    let r = client()
        .get(node.url(path))
        .header("x-wisp-param-id", "spoofed")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    let headers = r.headers().clone();
    (headers, r.json().unwrap())
}

#[test]
fn path_params_reach_the_function() {
    let node = Node::start();
    echo_app(&node);

    let (headers, body) = echo(&node, "/users/42?x=1");
    assert_eq!(body["headers"]["x-wisp-param-id"], "42");
    assert_eq!(body["headers"]["x-wisp-route"], "GET /users/{id}");
    assert_eq!(body["path_with_query"], "/users/42?x=1");
    // The request id the function saw is the one the client got back.
    let rid = headers["x-wisp-request-id"].to_str().unwrap();
    assert_eq!(body["headers"]["x-wisp-request-id"], rid);

    // A literal segment beats a parameter; a client cannot inject parameters.
    let (_, body) = echo(&node, "/users/me");
    assert_eq!(body["headers"]["x-wisp-route"], "GET /users/me");
    assert!(body["headers"].get("x-wisp-param-id").is_none(), "{body}");

    // Wildcard tails, percent-decoded.
    let (_, body) = echo(&node, "/files/css/site%20main.css");
    assert_eq!(body["headers"]["x-wisp-param-path"], "css/site main.css");

    // ANY matches every method.
    let r = client().delete(node.url("/any")).send().unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["method"], "DELETE");
}

#[test]
fn not_found_and_method_not_allowed_are_json_with_request_id() {
    let node = Node::start();
    echo_app(&node);

    let r = client().get(node.url("/nothing/here")).send().unwrap();
    assert_eq!(r.status(), 404);
    let rid = r.headers()["x-wisp-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["request_id"], rid.as_str());
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("GET /nothing/here")
    );

    let r = client().post(node.url("/users/42")).send().unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET");
    assert!(r.headers().contains_key("x-wisp-request-id"));
    let body: serde_json::Value = r.json().unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("allowed: GET"),
        "{body}"
    );
}

#[test]
fn bodies_over_the_limit_get_413() {
    let node = Node::start();
    echo_app(&node);
    let r = client()
        .post(node.url("/upload"))
        .body(vec![b'x'; 512])
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .post(node.url("/upload"))
        .body(vec![b'x'; 4096])
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.json().unwrap();
    assert!(body["error"].as_str().unwrap().contains("1KiB"), "{body}");
}

#[test]
fn rm_stops_routing_at_once() {
    let node = Node::start();
    echo_app(&node);
    assert_eq!(node.get("/users/1").0, 200);
    node.wisp_ok(&["rm", "echo"]);
    assert_eq!(node.get("/users/1").0, 404);
    let err = node.wisp_err(&["rm", "echo"]);
    assert!(err.contains("not found"), "{err}");
    assert!(node.wisp_ok(&["ls", "--json"]).trim() == "[]");
}
