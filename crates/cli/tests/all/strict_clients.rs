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

/// The folder with `node_modules/aws-lambda-ric` (npm, built from source with its bundled
/// curl and aws-lambda-cpp): `WISP_NPM_RIC_DIR`, else `~/.cache/wisp-npm-ric`, as `.ci/run`
/// installs it. `None` (skipped, said why) when it is missing, a failure under CI=true.
fn node_ric_dir() -> Option<std::path::PathBuf> {
    let dir = std::env::var("WISP_NPM_RIC_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/wisp-npm-ric")
        });
    let addon = dir.join("node_modules/aws-lambda-ric/rapid-client.node");
    let ok = addon.exists() && std::path::Path::new("/usr/bin/node").exists();
    if !ok {
        let why = format!(
            "no {} or no /usr/bin/node (npm_config_nodedir=/usr npm install --prefix ~/.cache/wisp-npm-ric aws-lambda-ric, \
             which needs cmake, autoconf, automake, libtool, make and g++; .ci/run does it)",
            addon.display()
        );
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and {why}"
        );
        eprintln!("skipped: {why}");
    }
    ok.then_some(dir)
}

/// Copies `from` into `to` (files and folders; symlinks as links).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ty = e.file_type().unwrap();
        if ty.is_dir() {
            copy_tree(&src, &dst);
        } else if ty.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

#[test]
fn the_official_node_runtime_interface_client_runs_as_a_provided_bootstrap() {
    let Some(ric) = node_ric_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    // The client and what it imports at run time (node-gyp, its build-time dependency,
    // stays out of the bundle).
    for pkg in ["aws-lambda-ric", "@aws/lambda-invoke-store"] {
        let from = ric.join("node_modules").join(pkg);
        if from.exists() {
            copy_tree(&from, &dir.path().join("node_modules").join(pkg));
        }
    }
    std::fs::write(
        dir.path().join("app.mjs"),
        r#"let calls = 0;

class PaymentDeclined extends Error {
  constructor(message) {
    super(message);
    this.name = "PaymentDeclined";
  }
}

export const handler = async (event, context) => {
  calls += 1;
  if (event && event.fail) {
    throw new PaymentDeclined(event.fail);
  }
  if (event && event.queryStringParameters && event.queryStringParameters.fail) {
    throw new PaymentDeclined(event.queryStringParameters.fail);
  }
  return { event, request_id: context.awsRequestId, function: context.functionName,
           remaining: context.getRemainingTimeInMillis(), calls, ric: "aws-lambda-ric" };
};
"#,
    )
    .unwrap();
    let bootstrap = dir.path().join("bootstrap");
    std::fs::write(
        &bootstrap,
        "#!/bin/sh\nexec /usr/bin/node \"$LAMBDA_TASK_ROOT/node_modules/aws-lambda-ric/index.mjs\" \"$_HANDLER\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bootstrap, std::fs::Permissions::from_mode(0o755)).unwrap();
    let node = Node::start();
    let m = manifest(&format!(
        r#"app: noderic
functions:
  noderic:
    source: {dir}
    runtime: provided.al2023
    handler: app.handler
    routes: [GET /noderic]
    limits:
      timeout: 10s
"#,
        dir = dir.path().display()
    ));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let first = invoke(&node, "noderic", &json!({"k": "v"}));
    assert_eq!(first["event"], json!({"k": "v"}), "{first}");
    assert_eq!(first["function"], "noderic");
    assert_eq!(first["request_id"].as_str().unwrap().len(), 36, "{first}");
    let left = first["remaining"].as_i64().unwrap();
    assert!(left > 0 && left <= 10_000, "{first}");
    let second = invoke(&node, "noderic", &json!({}));
    assert_eq!(second["calls"], 2, "one warm process served both: {second}");
    // A handler that throws: the error's type and message, as the client reports them,
    // reach `wisp invoke`.
    let out = node.wisp(&[
        "invoke",
        "noderic",
        "-d",
        r#"{"fail":"card expired"}"#,
        "--json",
    ]);
    assert!(!out.status.success());
    let failed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("PaymentDeclined") && error.contains("card expired"),
        "{failed}"
    );
    let out = node.wisp(&["invoke", "noderic", "-d", r#"{"fail":"card expired"}"#]);
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("PaymentDeclined"), "{text}");
    // The instance survived its handler's errors (each call counted, the throwing ones too).
    let third = invoke(&node, "noderic", &json!({}));
    assert_eq!(
        third["calls"], 5,
        "two answers and two errors before: {third}"
    );
    // Through the gateway: an API Gateway 2.0 event, any JSON answer a 200.
    let (status, body) = node.get("/noderic?x=1");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["event"]["rawPath"], "/noderic", "{v}");
    assert_eq!(v["event"]["rawQueryString"], "x=1", "{v}");
    assert_eq!(v["ric"], "aws-lambda-ric");
    // A handler that throws behind a route: the public caller gets a generic 500 with
    // the request id; the error's type is in the function's logs.
    let r = client()
        .get(node.url("/noderic?fail=declined"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 500);
    let body = r.text().unwrap();
    assert!(
        !body.contains("PaymentDeclined") && !body.contains("declined"),
        "{body}"
    );
    let logs = wait_until(
        "the error in the logs",
        std::time::Duration::from_secs(10),
        || {
            let logs = node.wisp_ok(&["logs", "noderic", "--limit", "1000"]);
            logs.contains("PaymentDeclined").then_some(logs)
        },
    );
    assert!(logs.contains("declined"), "{logs}");
}
