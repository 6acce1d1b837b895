//! A Lambda `provided` runtime function: echoes the event and its context plus a per-process
//! invocation counter, so tests can check the Runtime API headers and warm reuse.
use std::sync::atomic::{AtomicU64, Ordering};

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

static COUNT: AtomicU64 = AtomicU64::new(0);

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let (payload, ctx) = event.into_parts();
    if let Some(msg) = payload.get("fail").and_then(Value::as_str) {
        return Err(msg.into());
    }
    let count = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    let env = &ctx.env_config;
    Ok(json!({
        "event": payload,
        "context": {
            "request_id": ctx.request_id,
            "deadline": ctx.deadline,
            "invoked_function_arn": ctx.invoked_function_arn,
            "xray_trace_id": ctx.xray_trace_id,
            "function_name": env.function_name,
            "memory": env.memory,
            "version": env.version,
        },
        "count": count,
        "pid": std::process::id(),
    }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handler)).await
}
