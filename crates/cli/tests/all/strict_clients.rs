//! The official AWS runtime interface clients as `provided` bootstraps: the strictest
//! users of the Runtime API each instance serves (besides the project's own bootstraps).

use crate::harness::*;
use serde_json::{Value, json};

fn invoke(node: &Node, name: &str, event: &Value) -> Value {
    let out = node.wisp_ok(&["invoke", name, "-d", &event.to_string()]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{name} answered {out:?}: {e}"))
}

/// `pip install --target DIR awslambdaric` (the PyPI wheel for CPython 3.11, which the
/// host's /usr/bin/python3 inside the sandbox runs); `false` (skipped, said why) when pip
/// cannot get it, a failure under CI=true.
fn install_awslambdaric(target: &std::path::Path) -> bool {
    let out = std::process::Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--only-binary=:all:", "--python-version", "3.11"])
        .args([
            "--platform",
            "manylinux2014_x86_64",
            "--implementation",
            "cp",
        ])
        .arg("--target")
        .arg(target)
        .arg("awslambdaric")
        .output()
        .expect("running pip");
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and pip could not install awslambdaric: {why}"
        );
        eprintln!("skipped: pip could not install awslambdaric: {why}");
    }
    out.status.success()
}

#[test]
fn the_official_python_runtime_interface_client_runs_as_a_provided_bootstrap() {
    if !std::path::Path::new("/usr/bin/python3").exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and there is no /usr/bin/python3"
        );
        eprintln!("skipped: no /usr/bin/python3 for the sandbox");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    if !install_awslambdaric(&dir.path().join("lib")) {
        return;
    }
    std::fs::write(
        dir.path().join("app.py"),
        r#"import os

calls = 0

def handler(event, context):
    global calls
    calls += 1
    if isinstance(event, dict) and event.get("fail"):
        raise ValueError(event["fail"])
    return {"event": event, "request_id": context.aws_request_id,
            "function": context.function_name, "calls": calls,
            "ric": "awslambdaric"}
"#,
    )
    .unwrap();
    let bootstrap = dir.path().join("bootstrap");
    std::fs::write(
        &bootstrap,
        "#!/bin/sh\nexport PYTHONPATH=\"$LAMBDA_TASK_ROOT/lib\"\nexec /usr/bin/python3 -m awslambdaric \"$_HANDLER\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bootstrap, std::fs::Permissions::from_mode(0o755)).unwrap();
    let node = Node::start();
    let m = manifest(&format!(
        r#"app: ric
functions:
  ric:
    source: {dir}
    runtime: provided.al2023
    handler: app.handler
    routes: [GET /ric]
"#,
        dir = dir.path().display()
    ));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let first = invoke(&node, "ric", &json!({"k": "v"}));
    assert_eq!(first["event"], json!({"k": "v"}), "{first}");
    assert_eq!(first["function"], "ric");
    assert_eq!(first["request_id"].as_str().unwrap().len(), 36, "{first}");
    let second = invoke(&node, "ric", &json!({}));
    assert_eq!(second["calls"], 2, "one warm process served both: {second}");
    // A handler error reaches the caller as the client reports it.
    let out = node.wisp(&["invoke", "ric", "-d", r#"{"fail":"nope"}"#, "--json"]);
    assert!(!out.status.success());
    let failed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("ValueError") && error.contains("nope"),
        "{failed}"
    );
    // Through the gateway: an API Gateway 2.0 event, any JSON answer a 200.
    let (status, body) = node.get("/ric?x=1");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["event"]["rawPath"], "/ric", "{v}");
    assert_eq!(v["event"]["rawQueryString"], "x=1", "{v}");
}
