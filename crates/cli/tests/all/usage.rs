use crate::harness::*;

#[test]
fn usage_sums_billed_time_and_gb_seconds_of_a_known_workload() {
    let node = Node::start();
    let m = manifest(&format!(
        "app: metered\nfunctions:\n  nap:\n    source: {}\n    routes: [GET /nap]\n    limits:\n      memory: 128MiB\n",
        src("sleep")
    ));
    node.wisp_ok(&["deploy", &arg(&m)]);
    // 100 invocations that each sleep 50 ms, 10 at a time.
    let workers: Vec<_> = (0..10)
        .map(|_| {
            let url = node.url("/nap?ms=50");
            std::thread::spawn(move || {
                let c = client();
                for _ in 0..10 {
                    assert_eq!(c.get(&url).send().unwrap().status(), 200);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let report: serde_json::Value =
        serde_json::from_str(&node.wisp_ok(&["usage", "--json"])).unwrap();
    let nap = &report["rows"][0];
    assert_eq!(nap["key"], "nap");
    assert_eq!(nap["invocations"], 100);
    assert_eq!(nap["errors"], 0);
    let billed = nap["billed_ms"].as_f64().unwrap();
    assert!(
        billed >= 5000.0,
        "100 × 50 ms is at least 5 s billed: {billed}"
    );
    assert!(billed < 100.0 * 500.0, "and not wildly more: {billed}");
    // GB-s = memory × billed time.
    let gbs = nap["gb_seconds"].as_f64().unwrap();
    assert!(
        (gbs - 0.125 * billed / 1000.0).abs() < 1e-6,
        "{gbs} vs {billed}"
    );
    assert!(nap["peak_concurrency"].as_u64().unwrap() >= 2);
    assert_eq!(report["total"]["invocations"], 100);

    let by_trigger: serde_json::Value =
        serde_json::from_str(&node.wisp_ok(&["usage", "--by", "trigger", "--json"])).unwrap();
    assert_eq!(by_trigger["rows"][0]["key"], "http");

    // Within the free tier the bill is zero; without it, 100 requests and the GB-s.
    let cost: serde_json::Value = serde_json::from_str(&node.wisp_ok(&["cost", "--json"])).unwrap();
    assert_eq!(cost["bill"]["total"], 0.0);
    let cost: serde_json::Value =
        serde_json::from_str(&node.wisp_ok(&["cost", "--no-free-tier", "--json"])).unwrap();
    let b = &cost["bill"];
    assert!((b["request_cost"].as_f64().unwrap() - 100.0 / 1e6 * 0.20).abs() < 1e-12);
    assert!((b["compute_cost"].as_f64().unwrap() - gbs * 0.0000166667).abs() < 1e-12);
    let text = node.wisp_ok(&["usage"]);
    assert!(text.contains("nap") && text.contains("total"), "{text}");
    let err = node.wisp_err(&["usage", "--since", "lately"]);
    assert!(err.contains("not a duration"), "{err}");
}

#[test]
fn cpu_time_is_metered_apart_from_wall_time_for_wasm_and_native() {
    use crate::native::{native, with_host_runtimes};
    let node = Node::start();
    let m = manifest(&with_host_runtimes(&format!(
        r#"app: cpu
functions:
  spin:
    source: {spin}
    routes: ["GET /spin"]
    limits:
      timeout: 600ms
  nap:
    source: {sleep}
    routes: ["GET /nap"]
  burn:
    source: {chain}
    runtime: python3.11
    handler: app.handler
  rest:
    source: {chain}
    runtime: python3.11
    handler: app.handler
"#,
        spin = src("spin_loop"),
        sleep = src("sleep"),
        chain = native("python-chain"),
    )));
    node.wisp_ok(&["deploy", &arg(&m)]);
    assert_eq!(node.get("/spin").0, 504);
    assert_eq!(node.get("/nap?ms=400").0, 200);
    node.wisp_ok(&["invoke", "burn", "-d", r#"{"burn_ms": 400}"#]);
    node.wisp_ok(&["invoke", "rest", "-d", r#"{"sleep_ms": 400}"#]);

    let report: serde_json::Value =
        serde_json::from_str(&node.wisp_ok(&["usage", "--json"])).unwrap();
    let cpu = |f: &str| {
        let row = report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == f)
            .unwrap_or_else(|| panic!("no usage of {f}: {report}"));
        let billed = row["billed_ms"].as_f64().unwrap();
        (row["cpu_ms"].as_f64().unwrap(), billed)
    };
    // Correctness only: how close CPU time comes to the ideal (the spinning guest's share
    // of its 600 ms, the overhead a sleeping call is charged) depends on the machine's
    // load, and `bench/run` measures and reports it (its `metering` scenario).
    // A guest spinning until its timeout uses CPU, never more than its wall time; a
    // sleeping one far less than its wall time, though it is billed for all of it.
    let (spin, spin_billed) = cpu("spin");
    assert!(
        spin >= 60.0 && spin <= spin_billed + 50.0,
        "spin: {spin} of {spin_billed}"
    );
    let (nap, nap_billed) = cpu("nap");
    assert!(
        nap_billed >= 400.0 && nap < nap_billed / 2.0 && nap < spin,
        "nap: {nap} of {nap_billed} (spin {spin})"
    );
    // Native: the sandbox's cgroup, per invocation (the runtime's start is not counted).
    // burn_ms spins until the process has used 400 ms more CPU, whatever the load.
    let (burn, burn_billed) = cpu("burn");
    assert!(
        burn >= 350.0 && burn <= burn_billed + 50.0,
        "burn_ms 400 used {burn} ms of CPU in {burn_billed} ms"
    );
    let (rest, rest_billed) = cpu("rest");
    assert!(
        rest_billed >= 400.0 && rest < rest_billed / 2.0 && rest < burn,
        "rest: {rest} of {rest_billed}"
    );
    let text = node.wisp_ok(&["usage"]);
    assert!(text.contains("CPU S"), "{text}");
}
