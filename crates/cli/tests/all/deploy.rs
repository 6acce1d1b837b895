use crate::harness::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

#[test]
fn examples_deploy_and_answer() {
    let node = Node::start();
    node.wisp_ok(&["deploy", "examples/hello"]);
    node.wisp_ok(&["deploy", "examples/rest-api/wisp.yaml"]);

    let (s, body) = node.get("/hello");
    assert_eq!((s, body.as_str()), (200, "Hello from Wisp!\n"));

    let (s, body) = node.get("/users/42");
    assert_eq!(s, 200);
    let user: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(user["id"], 42);

    let (s, body) = node.get("/users");
    assert_eq!(s, 200);
    assert!(
        serde_json::from_str::<serde_json::Value>(&body)
            .unwrap()
            .is_array()
    );

    let r = client()
        .post(node.url("/orders"))
        .body(r#"{"item":"book"}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let order: serde_json::Value = r.json().unwrap();
    assert_eq!(order["item"], "book");
    assert_eq!(order["status"], "created");

    let ls: serde_json::Value = serde_json::from_str(&node.wisp_ok(&["ls", "--json"])).unwrap();
    let names: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hello", "create-order", "get-user", "list-users"]);
    let table = node.wisp_ok(&["ls"]);
    assert!(table.contains("GET /users/{id}"), "{table}");

    // `wisp invoke` sends the payload and prints the body.
    let out = node.wisp_ok(&["invoke", "hello", "--data", r#"{"name":"x"}"#]);
    assert_eq!(out, "Hello from Wisp!\n");
    // With a path that matches a route, the function gets the route's parameters.
    let out = node.wisp_ok(&[
        "invoke", "get-user", "--method", "GET", "--path", "/users/7",
    ]);
    assert!(out.contains("\"id\":7"), "{out}");
}

#[test]
fn unchanged_functions_are_not_uploaded_again() {
    let node = Node::start();
    let m = manifest(&format!(
        "app: two\nfunctions:\n  a:\n    source: {}\n    routes: [GET /a]\n  b:\n    source: {}\n    routes: [GET /b]\n",
        src("version_a"),
        src("version_b")
    ));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let out = node.wisp(&["deploy", &arg(&m)]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a: artifact") && err.contains("already uploaded"),
        "{err}"
    );
    assert!(err.contains("a: unchanged (version 1)"), "{err}");
    assert!(!err.contains("uploading"), "{err}");

    // Changing one function's env makes a version of that function only.
    let m2 = manifest(&format!(
        "app: two\nfunctions:\n  a:\n    source: {}\n    routes: [GET /a]\n    env:\n      MODE: fast\n  b:\n    source: {}\n    routes: [GET /b]\n",
        src("version_a"),
        src("version_b")
    ));
    let json: serde_json::Value =
        serde_json::from_str(&node.wisp_ok(&["deploy", &arg(&m2), "--json"])).unwrap();
    assert_eq!(json["changes"][0]["action"], "created");
    assert_eq!(json["changes"][0]["version"], 2);
    assert_eq!(json["changes"][1]["action"], "unchanged");
}

#[test]
fn redeploy_under_load_fails_no_request() {
    let node = Node::start();
    let yaml = |v: &str| {
        manifest(&format!(
            "app: flip\nfunctions:\n  flip:\n    source: {}\n    routes: [GET /flip]\n",
            src(v)
        ))
    };
    let (a, b) = (yaml("version_a"), yaml("version_b"));
    node.wisp_ok(&["deploy", &arg(&a)]);
    assert_eq!(node.get("/flip").1, "A");

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
            let url = node.url("/flip");
            std::thread::spawn(move || {
                let c = client();
                // Bounded: at most 20,000 requests per worker.
                for _ in 0..20_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match c.get(&url).send() {
                        Ok(r) if r.status() == 200 => {
                            let body = r.text().unwrap_or_default();
                            if body == "A" || body == "B" {
                                ok.fetch_add(1, Ordering::Relaxed);
                            } else {
                                failures.lock().unwrap().push(format!("body {body:?}"));
                            }
                        }
                        Ok(r) => failures
                            .lock()
                            .unwrap()
                            .push(format!("status {}", r.status())),
                        Err(e) => failures.lock().unwrap().push(e.to_string()),
                    }
                }
            })
        })
        .collect();
    // Requests are answered before, between and after the deploys: each step waits until
    // the workers have had another 30 answers (bounded).
    let more_answers = || {
        let mark = ok.load(Ordering::Relaxed);
        wait_until(
            "the load to get 30 more answers",
            Duration::from_secs(30),
            || (ok.load(Ordering::Relaxed) >= mark + 30).then_some(()),
        );
    };
    for m in [&b, &a, &b] {
        more_answers();
        node.wisp_ok(&["deploy", &arg(m)]);
    }
    more_answers();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok.load(Ordering::Relaxed) > 50, "the load ran");
    assert_eq!(node.get("/flip").1, "B");
    // Three deploys of changes: versions 1..=4.
    let vs: serde_json::Value =
        serde_json::from_str(&node.wisp_ok(&["versions", "flip", "--json"])).unwrap();
    assert_eq!(vs.as_array().unwrap().len(), 4);
}

#[test]
fn rollback_to_any_version() {
    let node = Node::start();
    let yaml = |v: &str| {
        manifest(&format!(
            "app: rb\nfunctions:\n  rb:\n    source: {}\n    routes: [GET /rb]\n",
            src(v)
        ))
    };
    node.wisp_ok(&["deploy", &arg(&yaml("version_a"))]);
    node.wisp_ok(&["deploy", &arg(&yaml("version_b"))]);
    assert_eq!(node.get("/rb").1, "B");
    let table = node.wisp_ok(&["versions", "rb"]);
    assert!(table.contains("2 *"), "{table}");

    node.wisp_ok(&["rollback", "rb", "--to", "1"]);
    assert_eq!(node.get("/rb").1, "A");
    let vs: serde_json::Value =
        serde_json::from_str(&node.wisp_ok(&["versions", "rb", "--json"])).unwrap();
    assert_eq!(vs[0]["active"], true);
    assert_eq!(vs[1]["active"], false);

    node.wisp_ok(&["rollback", "rb", "--to", "2"]);
    assert_eq!(node.get("/rb").1, "B");

    let err = node.wisp_err(&["rollback", "rb", "--to", "9"]);
    assert!(err.contains("has no version 9"), "{err}");
    let err = node.wisp_err(&["rollback", "nope", "--to", "1"]);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn up_with_deploy_serves_the_examples() {
    let tmp = tempfile::tempdir().unwrap();
    let hello = repo_root().join("examples/hello");
    let node = Node::start_with(
        &tmp.path().join("data"),
        &["--deploy", hello.to_str().unwrap()],
    );
    node.wait_stdout("wisp: ready", Duration::from_secs(120));
    assert_eq!(node.get("/hello"), (200, "Hello from Wisp!\n".to_string()));
}

#[test]
fn instance_reuse_is_opt_in() {
    let node = Node::start();
    let m = manifest(&format!(
        "app: warm\nfunctions:\n  fresh:\n    source: {c}\n    routes: [GET /fresh]\n  warm:\n    source: {c}\n    routes: [GET /warm]\n    instance_reuse: true\n",
        c = src("counter")
    ));
    node.wisp_ok(&["deploy", &arg(&m)]);
    // Fresh instance per request by default: nothing survives a request.
    for _ in 0..3 {
        assert_eq!(node.get("/fresh").1, "1");
    }
    // With instance_reuse, sequential requests meet the same warm instance.
    let counts: Vec<u64> = (0..3)
        .map(|_| node.get("/warm").1.parse().unwrap())
        .collect();
    assert_eq!(counts, [1, 2, 3]);
    // A redeploy that changes the version starts from fresh instances.
    let m2 = manifest(&format!(
        "app: warm\nfunctions:\n  fresh:\n    source: {c}\n    routes: [GET /fresh]\n  warm:\n    source: {c}\n    routes: [GET /warm]\n    instance_reuse: true\n    env:\n      V: \"2\"\n",
        c = src("counter")
    ));
    node.wisp_ok(&["deploy", &arg(&m2)]);
    assert_eq!(node.get("/warm").1, "1");
}
