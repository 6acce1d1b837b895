//! `wisp dev`: deploys a directory, redeploys it on every saved change and shows its logs;
//! with no node reachable it starts one, and Ctrl-C stops both.

use crate::harness::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Collects what a child prints on one of its pipes.
fn collect(pipe: impl std::io::Read + Send + 'static, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut s = into.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[test]
fn dev_starts_a_node_redeploys_on_save_streams_logs_and_stops_on_ctrl_c() {
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args(["new", "devfn", "--template", "python"])
        .current_dir(work.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app = work.path().join("devfn");

    // The CLI would find a node at an address nothing listens on: `wisp dev` starts its own.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let elsewhere = work.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::write(
        elsewhere.join("node.json"),
        format!(r#"{{"pid": 1, "api": "http://{dead_addr}"}}"#),
    )
    .unwrap();

    let stdout = Arc::new(Mutex::new(String::new()));
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut dev = Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args(["dev"])
        .arg(&app)
        .current_dir(work.path())
        .env("WISP_DATA_DIR", &elsewhere)
        .env_remove("WISP_API")
        .env_remove("WISP_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    collect(dev.stdout.take().unwrap(), stdout.clone());
    collect(dev.stderr.take().unwrap(), stderr.clone());
    let said = || stderr.lock().unwrap().clone();

    // It says it started a node, and where its functions are.
    let (node_pid, http) = wait_until("wisp dev to start a node", Duration::from_secs(90), || {
        let err = said();
        let line = err.lines().find(|l| l.contains("started one (pid "))?;
        let pid: u32 = line
            .split("(pid ")
            .nth(1)?
            .split(')')
            .next()?
            .parse()
            .ok()?;
        let http = line
            .split("functions on ")
            .nth(1)?
            .split(',')
            .next()?
            .to_string();
        Some((pid, http))
    });
    assert!(
        app.join(".wisp/api-token").is_file(),
        "the node's data is in DIR/.wisp"
    );
    let get = || {
        client()
            .get(format!("{http}/devfn"))
            .send()
            .ok()
            .filter(|r| r.status().is_success())
            .and_then(|r| r.text().ok())
    };
    let first = wait_until("the first answer", Duration::from_secs(90), get);
    assert_eq!(first, "Hello from devfn! (Python on Wisp)\n", "{}", said());

    // Save a change to the handler: it is redeployed, and the route answers the new text.
    let handler = app.join("app.py");
    let code = std::fs::read_to_string(&handler).unwrap();
    std::fs::write(
        &handler,
        code.replace("Hello from devfn! (Python on Wisp)", "Changed by wisp dev"),
    )
    .unwrap();
    wait_until("the changed answer", Duration::from_secs(90), || {
        get().filter(|b| b == "Changed by wisp dev\n")
    });
    // A directory made now is watched too: the handler reads its answer from a file there,
    // and an edit of that file alone is redeployed.
    std::fs::create_dir(app.join("greetings")).unwrap();
    std::fs::write(app.join("greetings/text.txt"), "from a new directory\n").unwrap();
    std::fs::write(
        &handler,
        code.replace(
            r#""body": "Hello from devfn! (Python on Wisp)\n","#,
            r#""body": open(__file__.rsplit("/", 1)[0] + "/greetings/text.txt").read(),"#,
        ),
    )
    .unwrap();
    wait_until(
        "the answer read from the new directory",
        Duration::from_secs(90),
        || get().filter(|b| b == "from a new directory\n"),
    );
    std::fs::write(
        app.join("greetings/text.txt"),
        "edited in the new directory\n",
    )
    .unwrap();
    wait_until(
        "the edit in the new directory",
        Duration::from_secs(90),
        || get().filter(|b| b == "edited in the new directory\n"),
    );
    wait_until("the redeploy message", Duration::from_secs(30), || {
        said().contains("wisp dev: redeployed in").then_some(())
    });
    assert!(said().contains("devfn v2"), "{}", said());

    // The handler's log line shows in `wisp dev`'s output.
    wait_until("the function's log line", Duration::from_secs(30), || {
        stdout
            .lock()
            .unwrap()
            .contains("devfn: handling /devfn")
            .then_some(())
    });

    // A broken manifest is reported, and `wisp dev` keeps running.
    let yaml_path = app.join("wisp.yaml");
    let yaml = std::fs::read_to_string(&yaml_path).unwrap();
    std::fs::write(
        &yaml_path,
        yaml.replace("handler: app.handler", "handler: app"),
    )
    .unwrap();
    wait_until("the deploy error", Duration::from_secs(30), || {
        said().contains("wisp dev: deploy failed").then_some(())
    });
    assert!(
        dev.try_wait().unwrap().is_none(),
        "wisp dev exited: {}",
        said()
    );
    assert_eq!(get().as_deref(), Some("edited in the new directory\n"));

    // Ctrl-C stops it, and the node it started.
    let st = Command::new("kill")
        .args(["-INT", &dev.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = wait_until("wisp dev to exit", Duration::from_secs(30), || {
        dev.try_wait().unwrap()
    });
    assert!(status.success(), "{status}: {}", said());
    wait_until("the node to stop", Duration::from_secs(30), || {
        (!alive(node_pid)).then_some(())
    });
}

/// With a node running, `wisp dev` deploys to it (found as every command finds it) and
/// starts none; a change to the manifest is a redeploy too.
#[test]
fn dev_uses_the_running_node() {
    let node = Node::start();
    let work = tempfile::tempdir().unwrap();
    let out = node.wisp_in(work.path(), &["new", "devnode", "--template", "node"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app = work.path().join("devnode");
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut dev = Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args(["dev"])
        .arg(&app)
        .env("WISP_API", &node.api)
        .env("WISP_DATA_DIR", &node.data_dir)
        .env_remove("WISP_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    collect(dev.stderr.take().unwrap(), stderr.clone());
    wait_until("the first deploy", Duration::from_secs(60), || {
        (node.get("/devnode").0 == 200).then_some(())
    });
    // A new route in wisp.yaml: redeployed.
    let yaml_path = app.join("wisp.yaml");
    let yaml = std::fs::read_to_string(&yaml_path).unwrap();
    std::fs::write(
        &yaml_path,
        yaml.replace(
            "      - GET /devnode\n",
            "      - GET /devnode\n      - GET /devnode/too\n",
        ),
    )
    .unwrap();
    wait_until("the new route", Duration::from_secs(60), || {
        (node.get("/devnode/too").0 == 200).then_some(())
    });
    let said = stderr.lock().unwrap().clone();
    assert!(!said.contains("started one"), "{said}");
    assert!(!app.join(".wisp").exists(), "no node of its own: {said}");
    let _ = dev.kill();
    let _ = dev.wait();
}
