use crate::harness::*;

pub fn scrape(node: &Node) -> prometheus_parse::Scrape {
    let text = client()
        .get(format!("{}/metrics", node.api))
        .bearer_auth(node.token())
        .send()
        .unwrap()
        .text()
        .unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("the exposition parses")
}

pub fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(ref h) => h.last().map(|b| b.count).unwrap_or(0.0),
            _ => 0.0,
        })
        .sum()
}

#[test]
fn metrics_parse_and_move_with_traffic() {
    let node = Node::start();
    let r = client()
        .get(format!("{}/metrics", node.api))
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "metrics need the token like the rest of the API"
    );

    let m = manifest(&format!(
        "app: m\nfunctions:\n  echo:\n    source: {}\n    routes: [GET /echo]\n  crash:\n    source: {}\n    routes: [GET /crash]\n",
        src("echo"),
        src("panic")
    ));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let before = scrape(&node);
    let ok = [
        ("function", "echo"),
        ("trigger", "http"),
        ("outcome", "success"),
    ];
    let base = value(&before, "wisp_invocations_total", &ok);
    for _ in 0..5 {
        assert_eq!(node.get("/echo").0, 200);
    }
    assert_eq!(node.get("/crash").0, 500);
    node.wisp_ok(&["invoke", "echo"]);

    let after = scrape(&node);
    assert_eq!(value(&after, "wisp_invocations_total", &ok) - base, 5.0);
    assert_eq!(
        value(
            &after,
            "wisp_invocations_total",
            &[
                ("function", "echo"),
                ("trigger", "api"),
                ("outcome", "success")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "wisp_invocations_total",
            &[("function", "crash"), ("outcome", "error")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "wisp_invocation_duration_seconds",
            &[("function", "echo")]
        ),
        6.0
    );
    assert_eq!(
        value(
            &after,
            "wisp_concurrent_executions",
            &[("function", "echo")]
        ),
        0.0
    );
    assert!(value(&after, "process_resident_memory_bytes", &[]) > 1e6);
}
