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
