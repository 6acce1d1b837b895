//! `wisp describe NAME` and `wisp ls` show every trigger of a function (routes, webhook,
//! schedules with their next run, S3, queue, async settings), and env var names only.

use crate::harness::*;
use serde_json::{Value, json};

#[test]
fn describe_and_ls_show_every_trigger_but_no_secret() {
    let node = Node::start();
    let echo = src("echo");
    let dir = manifest(&format!(
        r#"app: shop
functions:
  audit:
    source: {echo}
  hooks:
    source: {echo}
    routes: [POST /hooks/github, GET /hooks/status]
    env:
      GITHUB_SECRET: hunter2-do-not-show
      MODE: test
    webhook: {{provider: github, secret_env: GITHUB_SECRET}}
    schedule: "cron(0 9 ? * MON-FRI *)"
    s3: {{bucket: photos, prefix: uploads/, suffix: .jpg, events: [created, removed]}}
    queue: {{name: jobs, batch_size: 5}}
    async: {{max_retries: 1, max_event_age: 1h, on_success: audit, on_failure: "queue:failed-jobs"}}
    limits: {{timeout: 5s, memory: 64MiB}}
"#
    ));
    node.wisp_ok(&["deploy", &arg(&dir)]);

    let out = node.wisp_ok(&["describe", "hooks", "--json"]);
    assert!(!out.contains("hunter2"), "a secret value is shown: {out}");
    let f: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(f["name"], "hooks");
    assert_eq!(f["version"], 1);
    assert_eq!(f["runtime"], "wasm");
    assert_eq!(f["env"], json!(["GITHUB_SECRET", "MODE"]));
    assert_eq!(f["limits"]["timeout_ms"], 5000);
    assert_eq!(
        f["routes"],
        json!(["POST /hooks/github", "GET /hooks/status"])
    );
    assert_eq!(f["webhook"]["provider"], "github");
    assert_eq!(f["webhook"]["secret_env"], "GITHUB_SECRET");
    assert_eq!(
        f["s3"],
        json!([{"bucket": "photos", "events": ["created", "removed"], "prefix": "uploads/", "suffix": ".jpg"}])
    );
    assert_eq!(f["queue"]["name"], "jobs");
    assert_eq!(f["queue"]["batch_size"], 5);
    assert_eq!(f["async"]["max_retries"], 1);
    assert_eq!(f["async"]["max_event_age_s"], 3600);
    assert_eq!(f["async"]["on_success"], "audit");
    assert_eq!(f["async"]["on_failure"], "queue:failed-jobs");
    let s = &f["schedules"][0];
    assert_eq!(s["expression"], "cron(0 9 ? * MON-FRI *)");
    assert_eq!(s["timezone"], "UTC");
    // The next run: a weekday at 09:00 UTC, after now and within 4 days.
    let next = s["next_run"].as_str().expect("a next run");
    let next_t = time::OffsetDateTime::parse(next, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{next}: {e}"));
    let now = time::OffsetDateTime::now_utc();
    assert!(
        next_t > now && next_t - now < time::Duration::days(4),
        "{next}"
    );
    assert_eq!(
        (next_t.hour(), next_t.minute(), next_t.second()),
        (9, 0, 0),
        "{next}"
    );
    assert!(
        !matches!(
            next_t.weekday(),
            time::Weekday::Saturday | time::Weekday::Sunday
        ),
        "{next}"
    );
    assert!(scaling_present(&f), "{f}");

    let text = node.wisp_ok(&["describe", "hooks"]);
    assert!(!text.contains("hunter2"), "a secret value is shown: {text}");
    for want in [
        "hooks (app shop)",
        "GET /hooks/status",
        "github: header X-Hub-Signature-256, secret in env GITHUB_SECRET",
        &format!("cron(0 9 ? * MON-FRI *) (UTC), next run {next}"),
        "bucket photos, on created and removed, prefix uploads/, suffix .jpg",
        "jobs, batches of up to 5",
        "1 retries, max event age 1h, on success → audit, on failure → queue:failed-jobs",
        "GITHUB_SECRET, MODE (names only)",
        "timeout 5s, memory 64MiB",
        "max concurrency 100, reserved 0, provisioned 0",
    ] {
        assert!(text.contains(want), "`{want}` missing from:\n{text}");
    }

    let table = node.wisp_ok(&["ls"]);
    assert!(!table.contains("hunter2"), "{table}");
    assert!(
        table.lines().next().unwrap().contains("TRIGGERS"),
        "{table}"
    );
    assert!(
        table.contains(
            "POST /hooks/github, GET /hooks/status, webhook:github, cron(0 9 ? * MON-FRI *), s3:photos, queue:jobs"
        ),
        "{table}"
    );
    let audit = table.lines().find(|l| l.starts_with("audit")).unwrap();
    assert!(audit.trim_end().ends_with('-'), "no triggers: {audit}");
    let ls = node.wisp_ok(&["ls", "--json"]);
    assert!(!ls.contains("hunter2"), "{ls}");

    // A function that does not exist is an error that says how to find the right one.
    let e = node.wisp_err(&["describe", "nope"]);
    assert!(
        e.contains("function `nope` not found") && e.contains("wisp ls"),
        "{e}"
    );
    // The audit function has no trigger but `wisp invoke`.
    let text = node.wisp_ok(&["describe", "audit"]);
    assert!(text.contains("only `wisp invoke` runs it"), "{text}");
}

fn scaling_present(f: &Value) -> bool {
    f["scaling"]["max_concurrency"].is_u64()
}
