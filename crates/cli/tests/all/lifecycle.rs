use crate::harness::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

fn compiled_files(data_dir: &Path) -> BTreeMap<String, SystemTime> {
    let mut out = BTreeMap::new();
    for engine in std::fs::read_dir(data_dir.join("compiled")).unwrap() {
        for f in std::fs::read_dir(engine.unwrap().path()).unwrap() {
            let f = f.unwrap();
            out.insert(
                f.path().display().to_string(),
                f.metadata().unwrap().modified().unwrap(),
            );
        }
    }
    out
}

#[test]
fn kill_9_and_restart_serves_the_same_without_recompiling() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut node = Node::start_in(&dir);
    let m = manifest(&format!(
        "app: keep\nfunctions:\n  a:\n    source: {}\n    routes: [GET /a]\n  echo:\n    source: {}\n    routes:\n      - GET /echo/{{id}}\n    env:\n      GREETING: persisted\n",
        src("version_a"),
        src("echo")
    ));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let before_a = node.get("/a");
    let (_, echo_before) = node.get("/echo/7");
    let compiled = compiled_files(&dir);
    assert_eq!(compiled.len(), 2);

    node.kill9();
    let node = Node::start_in(&dir);
    assert_eq!(node.get("/a"), before_a);
    let (s, echo_after) = node.get("/echo/7");
    assert_eq!(s, 200);
    let (b, a): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&echo_before).unwrap(),
        serde_json::from_str(&echo_after).unwrap(),
    );
    assert_eq!(a["env"]["GREETING"], "persisted");
    assert_eq!(
        a["headers"]["x-wisp-param-id"],
        b["headers"]["x-wisp-param-id"]
    );
    // Served from the compiled artifacts already on disk: none was rewritten or added.
    assert_eq!(compiled_files(&dir), compiled);
    assert!(
        !node.stderr().contains("compiling artifact"),
        "{}",
        node.stderr()
    );
    let vs: serde_json::Value =
        serde_json::from_str(&node.wisp_ok(&["versions", "a", "--json"])).unwrap();
    assert_eq!(vs.as_array().unwrap().len(), 1);
}

#[test]
fn sigterm_lets_in_flight_requests_finish() {
    let mut node = Node::start();
    let m = manifest(&format!(
        "app: slow\nfunctions:\n  slow:\n    source: {}\n    routes: [GET /slow]\n",
        src("sleep")
    ));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let url = node.url("/slow?ms=1500");
    let inflight = std::thread::spawn(move || {
        let r = client().get(url).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    });
    wait_running(&node, "slow");
    let status = node.terminate();
    assert!(status.success(), "{status}");
    let (code, body) = inflight.join().unwrap();
    assert_eq!((code, body.as_str()), (200, "slept 1500"));
    // The node is gone: new connections are refused.
    assert!(client().get(node.url("/slow")).send().is_err());
}
