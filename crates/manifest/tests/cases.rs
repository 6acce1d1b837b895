//! Snapshot tests: every `tests/cases/NAME.yaml` is loaded and the result compared with
//! `tests/cases/NAME.expected`: the error as displayed, or `ok` plus a summary.
//!
//! Paths are made stable: the manifest's path shows as `NAME.yaml` and the cases directory
//! as `$CASES`. Run with `UPDATE_EXPECT=1` to rewrite the `.expected` files, then review
//! the diff.

use std::fmt::Write as _;
use std::path::Path;
use wisp_core::ByteSize;

fn render(path: &Path, cases: &Path) -> String {
    let name = path.file_name().unwrap().to_str().unwrap();
    let out = match wisp_manifest::load(path) {
        Err(e) => e.to_string(),
        Ok(m) => {
            let mut s = format!("ok: app {}\n", m.app);
            for f in &m.functions {
                let routes: Vec<String> = f.routes.iter().map(|r| r.to_string()).collect();
                writeln!(
                    s,
                    "{} (line {}): {}; routes [{}]; env {:?}; timeout {}ms, memory {}, max_body {}, max_concurrency {}",
                    f.name,
                    f.line,
                    f.source,
                    routes.join(", "),
                    f.env,
                    f.limits.timeout_ms,
                    ByteSize(f.limits.memory_bytes),
                    ByteSize(f.limits.max_body_bytes),
                    f.limits.max_concurrency
                )
                .unwrap();
                if f.limits.reserved_concurrency > 0 || f.limits.provisioned_concurrency > 0 {
                    writeln!(
                        s,
                        "  reserved_concurrency {}, provisioned_concurrency {}",
                        f.limits.reserved_concurrency, f.limits.provisioned_concurrency
                    )
                    .unwrap();
                }
                if let Some(b) = &f.build {
                    writeln!(s, "  build: `{}` writes {}", b.command, b.output.display()).unwrap();
                }
                if let Some(q) = &f.queue {
                    writeln!(s, "  queue: {q:?}").unwrap();
                }
                if let Some(a) = &f.async_config {
                    writeln!(s, "  async: {a:?}").unwrap();
                }
                if !f.outbound.is_empty() {
                    writeln!(s, "  outbound: {:?}", f.outbound).unwrap();
                }
                if !f.object_buckets.is_empty() {
                    writeln!(s, "  objects in buckets: {:?}", f.object_buckets).unwrap();
                }
                for t in &f.object_triggers {
                    writeln!(s, "  s3: {t:?}").unwrap();
                }
                for sc in &f.schedules {
                    writeln!(
                        s,
                        "  schedule: {} (tz {:?}, skip missed {})",
                        sc.expression, sc.timezone, sc.skip_missed
                    )
                    .unwrap();
                }
                if let Some(w) = &f.webhook {
                    writeln!(
                        s,
                        "  webhook: {:?}, secret from {}, tolerance {:?}",
                        w.provider, w.secret_env, w.tolerance_s
                    )
                    .unwrap();
                }
                if let Some(n) = &f.native {
                    writeln!(
                        s,
                        "  native: runtime {}, handler `{}`, network {}",
                        n.runtime, n.handler, n.network
                    )
                    .unwrap();
                }
            }
            s
        }
    };
    out.replace(&path.display().to_string(), name)
        .replace(&cases.display().to_string(), "$CASES")
        .trim_end()
        .to_string()
}

#[test]
fn cases() {
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut paths: Vec<_> = std::fs::read_dir(&cases)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 10,
        "expected the cases in {}",
        cases.display()
    );
    let mut failures = Vec::new();
    for path in &paths {
        let actual = render(path, &cases);
        let expected_path = path.with_extension("expected");
        if update {
            std::fs::write(&expected_path, format!("{actual}\n")).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("missing {}", expected_path.display()));
        if expected.trim_end() != actual {
            failures.push(format!(
                "{}:\n  expected: {}\n  actual:   {}",
                path.file_name().unwrap().to_string_lossy(),
                expected.trim_end(),
                actual
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ (UPDATE_EXPECT=1 rewrites them):\n{}",
        failures.len(),
        paths.len(),
        failures.join("\n")
    );
}
