//! `wisp new`: every template makes a function directory that `wisp deploy` takes as it is
//! and that answers its route.
//!
//! The js-wasm and python-wasm templates build with componentize-js (npm) and
//! componentize-py (PyPI), found on PATH (`.ci/run` installs them and puts them there):
//! under `CI=true` a missing one fails the test; elsewhere the test says so and skips.

use crate::harness::*;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `wisp new NAME --template TEMPLATE` in a new temporary directory, `wisp deploy NAME`
/// from there, then `GET /NAME` answers the template's greeting.
fn new_deploy_call(template: &str, language: &str) {
    let node = Node::start();
    let work = tempfile::tempdir().unwrap();
    let name = format!("greet-{template}");
    let out = node.wisp_in(work.path(), &["new", &name, "--template", template]);
    assert!(
        out.status.success(),
        "wisp new failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("wisp deploy {name}")), "{said}");
    let yaml = std::fs::read_to_string(work.path().join(&name).join("wisp.yaml")).unwrap();
    assert!(
        yaml.starts_with("# "),
        "wisp.yaml says how to use it:\n{yaml}"
    );
    assert!(
        yaml.contains(&format!("curl http://127.0.0.1:8080/{name}")),
        "{yaml}"
    );

    let out = node.wisp_in(work.path(), &["deploy", &name]);
    assert!(
        out.status.success(),
        "wisp deploy {name} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, body) = node.get(&format!("/{name}"));
    assert_eq!(
        (status, body.as_str()),
        (
            200,
            format!("Hello from {name}! ({language} on Wisp)\n").as_str()
        )
    );
    // What the handler printed reached the function's logs.
    wait_until("the handler's log line", Duration::from_secs(20), || {
        let logs = node.wisp_ok(&["logs", &name]);
        logs.contains(&format!("{name}: handling /{name}"))
            .then_some(())
    });
}

/// Whether `program --version` runs; skips (false) or, under `CI=true`, fails when not.
fn tool(program: &str, install: &str) -> bool {
    let ok = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let why = format!("{program} is not on PATH: {install}");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("skipped: {why}");
    }
    ok
}

#[test]
fn new_rust_template_deploys_and_answers() {
    new_deploy_call("rust", "Rust");
}

#[test]
fn new_python_template_deploys_and_answers() {
    new_deploy_call("python", "Python");
}

#[test]
fn new_node_template_deploys_and_answers() {
    new_deploy_call("node", "Node.js");
}

#[test]
fn new_js_wasm_template_builds_with_componentize_js_and_answers() {
    if tool(
        "componentize-js",
        "npm install --prefix ~/.cache/wisp-npm-componentize @bytecodealliance/componentize-js@0.23 and put ~/.cache/wisp-npm-componentize/node_modules/.bin on PATH (as .ci/run does)",
    ) {
        new_deploy_call("js-wasm", "JavaScript");
    }
}

#[test]
fn new_python_wasm_template_builds_with_componentize_py_and_answers() {
    if tool(
        "componentize-py",
        "pip install componentize-py (into a venv whose bin/ is on PATH)",
    ) {
        new_deploy_call("python-wasm", "Python");
    }
}

/// `--list`, bad names, unknown templates, and a directory that is not empty.
#[test]
fn new_lists_templates_and_refuses_what_it_cannot_do() {
    let wisp = |cwd: &std::path::Path, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_wisp"))
            .args(args)
            .current_dir(cwd)
            .output()
            .unwrap()
    };
    let work = tempfile::tempdir().unwrap();
    let out = wisp(work.path(), &["new", "--list", "--json"]);
    assert!(out.status.success());
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["rust", "python", "node", "js-wasm", "python-wasm"]);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["description"].as_str().is_some_and(|d| !d.is_empty()))
    );
    let text = String::from_utf8_lossy(&wisp(work.path(), &["new", "--list"]).stdout).into_owned();
    assert!(
        text.lines().count() == 5 && text.contains("componentize-py"),
        "{text}"
    );

    let err = |args: &[&str]| {
        let out = wisp(work.path(), args);
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = err(&["new", "Hello_World", "--template", "python"]);
    assert!(e.contains("not valid") && e.contains("lowercase"), "{e}");
    let e = err(&["new", "hello", "--template", "cobol"]);
    assert!(
        e.contains("unknown template `cobol`") && e.contains("js-wasm"),
        "{e}"
    );
    std::fs::create_dir(work.path().join("taken")).unwrap();
    std::fs::write(work.path().join("taken/notes.txt"), "mine").unwrap();
    let e = err(&["new", "taken", "--template", "node"]);
    assert!(e.contains("already exists and is not empty"), "{e}");
    assert_eq!(
        std::fs::read_dir(work.path().join("taken"))
            .unwrap()
            .count(),
        1,
        "nothing was written into it"
    );
    // An empty directory is fine.
    std::fs::create_dir(work.path().join("empty")).unwrap();
    let out = wisp(
        work.path(),
        &["new", "empty", "--template", "node", "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(made["route"], "GET /empty");
    assert!(work.path().join("empty/index.js").is_file());
}

/// A `build:` whose command fails names the function and the command, and deploys nothing.
#[test]
fn a_failing_build_command_names_the_function_and_the_command() {
    let node = Node::start();
    let dir = manifest(
        "app: b\nfunctions:\n  broken:\n    source: .\n    build:\n      command: echo compiling...; exit 3\n      output: out.wasm\n    routes: [GET /broken]\n",
    );
    let out = node.wisp(&["deploy", &arg(&dir)]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("function `broken`")
            && e.contains("`echo compiling...; exit 3` failed")
            && e.contains("exit status 3"),
        "{e}"
    );
    assert!(
        e.contains("compiling..."),
        "the command's output is shown: {e}"
    );
    // A command that succeeds without writing its output.
    std::fs::write(
        dir.path().join("wisp.yaml"),
        "app: b\nfunctions:\n  broken:\n    source: .\n    build:\n      command: \"true\"\n      output: out.wasm\n",
    )
    .unwrap();
    let e = node.wisp_err(&["deploy", &arg(&dir)]);
    assert!(e.contains("wrote no") && e.contains("out.wasm"), "{e}");
    // A command that writes a component: it is deployed.
    std::fs::write(
        dir.path().join("wisp.yaml"),
        format!(
            "app: b\nfunctions:\n  built:\n    source: .\n    build:\n      command: mkdir -p dist && cp {} dist/echo.wasm\n      output: dist/echo.wasm\n    routes: [GET /built]\n",
            src("echo")
        ),
    )
    .unwrap();
    let out = node.wisp_ok(&["deploy", &arg(&dir), "--json"]);
    let _: serde_json::Value = serde_json::from_str(&out).expect("--json output stays JSON");
    assert_eq!(node.get("/built").0, 200);
}
