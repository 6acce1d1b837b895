use crate::harness::*;

fn assert_nothing_deployed(node: &Node) {
    assert_eq!(node.wisp_ok(&["ls", "--json"]).trim(), "[]");
}

#[test]
fn malformed_manifest_names_file_and_line() {
    let node = Node::start();
    let m = manifest("app: x\nfunctions:\n  a:\n    source: [unclosed\n");
    let err = node.wisp_err(&["deploy", &arg(&m)]);
    assert!(err.contains("wisp.yaml:4"), "{err}");
    assert_nothing_deployed(&node);
}

#[test]
fn unknown_field_is_an_error_with_a_suggestion() {
    let node = Node::start();
    let m = manifest(&format!(
        "app: x\nfunctions:\n  a:\n    source: {}\n    rutes: [GET /a]\n",
        src("echo")
    ));
    let err = node.wisp_err(&["deploy", &arg(&m)]);
    assert!(err.contains("wisp.yaml:5:5"), "{err}");
    assert!(err.contains("unknown field `rutes`"), "{err}");
    assert!(err.contains("did you mean `routes`"), "{err}");
    assert_nothing_deployed(&node);
}

#[test]
fn duplicate_route_names_both_places() {
    let node = Node::start();
    let m = manifest(&format!(
        "app: x\nfunctions:\n  a:\n    source: {e}\n    routes:\n      - GET /users/{{id}}\n  b:\n    source: {e}\n    routes:\n      - GET /users/{{id}}\n",
        e = src("echo")
    ));
    let err = node.wisp_err(&["deploy", &arg(&m)]);
    assert!(err.contains("defined twice"), "{err}");
    assert!(
        err.contains("wisp.yaml:10") && err.contains("wisp.yaml:6"),
        "{err}"
    );
    assert_nothing_deployed(&node);
}

#[test]
fn route_taken_by_another_app_is_refused() {
    let node = Node::start();
    let one = manifest(&format!(
        "app: one\nfunctions:\n  a:\n    source: {}\n    routes: [GET /x]\n",
        src("version_a")
    ));
    let two = manifest(&format!(
        "app: two\nfunctions:\n  b:\n    source: {}\n    routes: [GET /x]\n",
        src("version_b")
    ));
    node.wisp_ok(&["deploy", &arg(&one)]);
    let err = node.wisp_err(&["deploy", &arg(&two)]);
    assert!(
        err.contains("GET /x") && err.contains("function `a` of app `one`"),
        "{err}"
    );
    assert_eq!(node.get("/x").1, "A");
    // A function name belongs to one app.
    let three = manifest(&format!(
        "app: three\nfunctions:\n  a:\n    source: {}\n    routes: [GET /y]\n",
        src("version_b")
    ));
    let err = node.wisp_err(&["deploy", &arg(&three)]);
    assert!(err.contains("already belongs to app `one`"), "{err}");
}

#[test]
fn non_wasm_upload_is_refused_and_nothing_is_half_deployed() {
    let node = Node::start();
    let m = manifest("");
    let fake = m.path().join("fake.wasm");
    std::fs::write(&fake, "this is not wasm").unwrap();
    std::fs::write(
        m.path().join("wisp.yaml"),
        format!(
            "app: x\nfunctions:\n  good:\n    source: {}\n    routes: [GET /good]\n  fake:\n    source: ./fake.wasm\n    routes: [GET /fake]\n",
            src("echo")
        ),
    )
    .unwrap();
    let err = node.wisp_err(&["deploy", &arg(&m)]);
    assert!(err.contains("function `fake`"), "{err}");
    assert!(err.contains("not a WebAssembly binary"), "{err}");
    assert_nothing_deployed(&node);
    assert_eq!(node.get("/good").0, 404);
}

#[test]
fn non_http_component_is_refused() {
    let node = Node::start();
    let m = manifest(&format!(
        "app: x\nfunctions:\n  good:\n    source: {}\n    routes: [GET /good]\n  cli:\n    source: {}\n    routes: [GET /cli]\n",
        src("echo"),
        src("not-http")
    ));
    let err = node.wisp_err(&["deploy", &arg(&m)]);
    assert!(err.contains("function `cli`"), "{err}");
    assert!(err.contains("wasi:http/incoming-handler"), "{err}");
    assert_nothing_deployed(&node);
}

#[test]
fn api_requires_the_token() {
    let node = Node::start();
    let r = client()
        .get(format!("{}/v1/functions", node.api))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .get(format!("{}/v1/functions", node.api))
        .bearer_auth("not-the-token")
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .get(format!("{}/v1/functions", node.api))
        .bearer_auth(node.token())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .get(format!("{}/v1/health", node.api))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args(["ls"])
        .env("WISP_API", &node.api)
        .env("WISP_TOKEN", "wrong")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("API token"));
    // The token file is readable by its owner only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(node.data_dir.join("api-token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
}

#[test]
fn cli_errors_are_clear_when_no_node_runs() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args(["ls"])
        .env("WISP_API", "http://127.0.0.1:9")
        .env("WISP_TOKEN", "x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is `wisp up` running?"), "{err}");
}
