//! Runs the fixture components of `tests/fixtures` through the executor: responses,
//! timeouts, memory limits, traps, and upload validation.

use bytes::Bytes;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use wisp_core::{Limits, Outcome};
use wisp_executor::{CompileError, Executor, ExecutorConfig, InvocationContext, LoadedComponent};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds the fixture workspace once for wasm32-wasip2 and returns its output folder.
fn fixtures() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = std::env::var("WISP_GUEST_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| repo_root().join("target/guests"));
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "--target", "wasm32-wasip2", "--quiet"])
            .current_dir(repo_root().join("tests/fixtures"))
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("running cargo to build the fixtures");
        assert!(status.success(), "building tests/fixtures failed");
        target.join("wasm32-wasip2/release")
    })
}

fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(format!("{name}.wasm"))).unwrap()
}

fn load(exec: &Executor, name: &str) -> LoadedComponent {
    let compiled = exec.compile(&wasm(name)).unwrap();
    let dir = tempfile_dir();
    let path = dir.join(format!("{name}.cwasm"));
    std::fs::write(&path, compiled).unwrap();
    exec.load(&path).unwrap()
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("wisp-exec-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn request(path: &str) -> http::Request<Bytes> {
    http::Request::builder()
        .uri(format!("http://localhost{path}"))
        .body(Bytes::new())
        .unwrap()
}

fn ctx(timeout_ms: u64, memory_mib: u64) -> InvocationContext {
    InvocationContext {
        env: vec![("GREETING".into(), "Hi".into())],
        limits: Limits {
            timeout_ms,
            memory_bytes: memory_mib * 1024 * 1024,
            ..Limits::default()
        },
        outbound: Default::default(),
    }
}

fn executor() -> Executor {
    Executor::new(ExecutorConfig {
        max_instances: 16,
        ..ExecutorConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn echo_sees_request_env_and_logs() {
    let exec = executor();
    let c = load(&exec, "echo");
    let r = exec.invoke(&c, request("/x?y=1"), &ctx(5000, 64)).await;
    assert_eq!(r.outcome, Outcome::Success, "{:?}", r.error);
    let resp = r.response.unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(body["path_with_query"], "/x?y=1");
    assert_eq!(body["env"]["GREETING"], "Hi");
    assert!(String::from_utf8_lossy(&r.stdout).contains("echo: GET /x"));
    assert!(String::from_utf8_lossy(&r.stderr).contains("echo-stderr: GET"));
}

#[tokio::test]
async fn infinite_loop_times_out_and_executor_keeps_working() {
    let exec = executor();
    let spin = load(&exec, "spin_loop");
    let r = exec.invoke(&spin, request("/"), &ctx(200, 64)).await;
    assert_eq!(r.outcome, Outcome::Timeout, "{:?}", r.error);
    assert!(r.duration.as_millis() >= 200);
    let echo = load(&exec, "echo");
    let r = exec.invoke(&echo, request("/"), &ctx(5000, 64)).await;
    assert_eq!(r.outcome, Outcome::Success);
}

#[tokio::test]
async fn sleeping_past_the_timeout_times_out() {
    let exec = executor();
    let c = load(&exec, "sleep");
    let r = exec.invoke(&c, request("/?ms=5000"), &ctx(150, 64)).await;
    assert_eq!(r.outcome, Outcome::Timeout, "{:?}", r.error);
    let r = exec.invoke(&c, request("/?ms=10"), &ctx(2000, 64)).await;
    assert_eq!(r.outcome, Outcome::Success, "{:?}", r.error);
}

#[tokio::test]
async fn unbounded_allocation_hits_the_memory_limit() {
    let exec = executor();
    let c = load(&exec, "alloc_bomb");
    let r = exec.invoke(&c, request("/"), &ctx(10_000, 32)).await;
    assert_eq!(r.outcome, Outcome::OutOfMemory, "{:?}", r.error);
    assert!(r.error.unwrap().contains("32MiB"));
}

#[tokio::test]
async fn panic_is_an_error_with_its_message_in_stderr() {
    let exec = executor();
    let c = load(&exec, "panic");
    let r = exec.invoke(&c, request("/"), &ctx(5000, 64)).await;
    assert_eq!(r.outcome, Outcome::Error);
    assert!(String::from_utf8_lossy(&r.stderr).contains("fixture panic"));
}

#[test]
fn rejects_what_is_not_an_http_component() {
    let exec = executor();
    assert_eq!(exec.compile(b"hello world"), Err(CompileError::NotWasm));
    // A core module: magic, version 1, layer 0.
    assert_eq!(
        exec.compile(b"\0asm\x01\0\0\0"),
        Err(CompileError::CoreModule)
    );
    let err = exec.compile(&wasm("not-http")).unwrap_err();
    assert!(matches!(err, CompileError::NotHttp(_)), "{err}");
    assert!(err.to_string().contains("wasi:http/incoming-handler"));
    let mut broken = wasm("echo");
    broken.truncate(broken.len() / 2);
    assert!(matches!(
        exec.compile(&broken),
        Err(CompileError::Invalid(_))
    ));
}

async fn body_of(r: wisp_executor::InvocationResult) -> String {
    assert_eq!(r.outcome, Outcome::Success, "{:?}", r.error);
    String::from_utf8(r.response.unwrap().into_body().to_vec()).unwrap()
}

#[tokio::test]
async fn fresh_instances_share_nothing_between_requests() {
    let exec = executor();
    let c = load(&exec, "counter");
    for _ in 0..3 {
        assert_eq!(
            body_of(exec.invoke(&c, request("/"), &ctx(5000, 64)).await).await,
            "1"
        );
    }
}

#[tokio::test]
async fn a_warm_pool_reuses_instances_and_drops_failed_ones() {
    let exec = executor();
    let c = load(&exec, "counter");
    let pool = wisp_executor::WarmPool::new(4);
    for expected in ["1", "2", "3"] {
        let r = exec
            .invoke_warm(&c, &pool, request("/"), &ctx(5000, 64))
            .await;
        assert_eq!(body_of(r).await, expected);
    }
    assert_eq!(pool.idle(), 1);
    // Output is captured per request, not accumulated across them.
    let r = exec
        .invoke_warm(&c, &pool, request("/"), &ctx(5000, 64))
        .await;
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        "counter: request 4 of this instance\n"
    );

    // A failing request's instance is not given back.
    let spin = load(&exec, "spin_loop");
    let spin_pool = wisp_executor::WarmPool::new(4);
    let r = exec
        .invoke_warm(&spin, &spin_pool, request("/"), &ctx(100, 64))
        .await;
    assert_eq!(r.outcome, Outcome::Timeout);
    assert_eq!(spin_pool.idle(), 0);
}
