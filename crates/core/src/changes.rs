//! What one version of a function changes against another: shown by `wisp deploy` and
//! `wisp versions`. Env variables are named, never their values.

use crate::{ByteSize, FunctionSpec, Limits};

/// The differences from `old` to `new`, one short phrase per changed part, in a fixed
/// order (`code`, runtime, routes, env, limits, then triggers and grants). Empty when
/// the two are equal.
pub fn spec_changes(old: &FunctionSpec, new: &FunctionSpec) -> Vec<String> {
    let mut out = Vec::new();
    if old.artifact != new.artifact {
        out.push("code".to_string());
    }
    match (&old.native, &new.native) {
        (Some(a), Some(b)) => {
            if a.runtime != b.runtime {
                out.push(format!("runtime {} → {}", a.runtime, b.runtime));
            }
            if a.handler != b.handler {
                out.push(format!("handler {} → {}", a.handler, b.handler));
            }
            if a.network != b.network {
                out.push(format!("network {} → {}", on(a.network), on(b.network)));
            }
        }
        (None, Some(b)) => out.push(format!("runtime wasm → {}", b.runtime)),
        (Some(a), None) => out.push(format!("runtime {} → wasm", a.runtime)),
        (None, None) => {}
    }
    let (old_routes, new_routes): (Vec<String>, Vec<String>) = (
        old.routes.iter().map(|r| r.to_string()).collect(),
        new.routes.iter().map(|r| r.to_string()).collect(),
    );
    let mut routes = Vec::new();
    routes.extend(
        new_routes
            .iter()
            .filter(|r| !old_routes.contains(r))
            .map(|r| format!("+{r}")),
    );
    routes.extend(
        old_routes
            .iter()
            .filter(|r| !new_routes.contains(r))
            .map(|r| format!("-{r}")),
    );
    if !routes.is_empty() {
        out.push(format!("routes {}", routes.join(", ")));
    }
    let mut env = Vec::new();
    for (k, v) in &new.env {
        match old.env.get(k) {
            None => env.push(format!("+{k}")),
            Some(o) if o != v => env.push(format!("~{k}")),
            Some(_) => {}
        }
    }
    env.extend(
        old.env
            .keys()
            .filter(|k| !new.env.contains_key(*k))
            .map(|k| format!("-{k}")),
    );
    if !env.is_empty() {
        out.push(format!("env {}", env.join(", ")));
    }
    out.extend(limit_changes(&old.limits, &new.limits));
    if old.instance_reuse != new.instance_reuse {
        out.push(format!(
            "instance_reuse {} → {}",
            on(old.instance_reuse),
            on(new.instance_reuse)
        ));
    }
    for (name, changed) in [
        ("webhook", old.webhook != new.webhook),
        ("schedules", old.schedules != new.schedules),
        ("s3 triggers", old.object_triggers != new.object_triggers),
        ("async delivery", old.async_config != new.async_config),
        ("queue", old.queue != new.queue),
        (
            "outbound",
            old.outbound != new.outbound || old.object_buckets != new.object_buckets,
        ),
    ] {
        if changed {
            out.push(name.to_string());
        }
    }
    out
}

fn on(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

fn limit_changes(a: &Limits, b: &Limits) -> Vec<String> {
    let ms = |v: u64| {
        if v.is_multiple_of(1000) {
            format!("{}s", v / 1000)
        } else {
            format!("{v}ms")
        }
    };
    let mut out = Vec::new();
    if a.timeout_ms != b.timeout_ms {
        out.push(format!(
            "timeout {} → {}",
            ms(a.timeout_ms),
            ms(b.timeout_ms)
        ));
    }
    for (name, x, y) in [
        ("memory", a.memory_bytes, b.memory_bytes),
        ("max_body", a.max_body_bytes, b.max_body_bytes),
    ] {
        if x != y {
            out.push(format!("{name} {} → {}", ByteSize(x), ByteSize(y)));
        }
    }
    for (name, x, y) in [
        ("max_concurrency", a.max_concurrency, b.max_concurrency),
        (
            "reserved_concurrency",
            a.reserved_concurrency,
            b.reserved_concurrency,
        ),
        (
            "provisioned_concurrency",
            a.provisioned_concurrency,
            b.provisioned_concurrency,
        ),
    ] {
        if x != y {
            out.push(format!("{name} {x} → {y}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> FunctionSpec {
        let mut base = serde_json::json!({"name": "f", "artifact": "a1"});
        base.as_object_mut()
            .unwrap()
            .extend(json.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn names_each_change_and_never_an_env_value() {
        let old = spec(serde_json::json!({
            "routes": ["GET /a", "GET /b"],
            "env": {"KEEP": "1", "SECRET": "hunter2", "GONE": "x"},
        }));
        let mut new = spec(serde_json::json!({
            "artifact": "a2",
            "routes": ["GET /a", "POST /c"],
            "env": {"KEEP": "1", "SECRET": "hunter3", "NEW": "y"},
        }));
        new.limits.timeout_ms = 10_000;
        new.limits.memory_bytes = 256 << 20;
        new.limits.max_concurrency = 50;
        new.limits.provisioned_concurrency = 2;
        let c = spec_changes(&old, &new);
        assert_eq!(
            c,
            [
                "code",
                "routes +POST /c, -GET /b",
                "env +NEW, ~SECRET, -GONE",
                "timeout 30s → 10s",
                "memory 128MiB → 256MiB",
                "max_concurrency 100 → 50",
                "provisioned_concurrency 0 → 2",
            ]
        );
        assert!(!c.concat().contains("hunter"), "{c:?}");
        assert!(spec_changes(&old, &old).is_empty());
    }
}
