//! The gateway's HTTP mapping, driven in-process through `handle` (no socket).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use wisp_executor::{Executor, ExecutorConfig};
use wisp_invoker::{Invoker, LogSink, Retention};
use wisp_store::{ArtifactDir, SqliteStore, Store};

async fn invoker(dir: &std::path::Path) -> Arc<Invoker> {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let exec = Arc::new(
        Executor::new(ExecutorConfig {
            pooling: false,
            ..ExecutorConfig::default()
        })
        .unwrap(),
    );
    let logs = LogSink::start(store.clone(), Retention::default());
    Arc::new(Invoker::new(exec, None, store, ArtifactDir::open(dir).unwrap(), logs).unwrap())
}

#[tokio::test]
async fn unmatched_requests_get_404_json_with_the_request_id() {
    let dir = std::env::temp_dir().join(format!("wisp-gw-{}", std::process::id()));
    let inv = invoker(&dir).await;
    let req = http::Request::builder()
        .uri("/nothing?x=1")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = wisp_gateway::handle(&inv, req).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let rid = resp.headers()[wisp_gateway::REQUEST_ID_HEADER]
        .to_str()
        .unwrap()
        .to_string();
    let body: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["request_id"], rid.as_str());
    assert_eq!(body["error"], "no route matches GET /nothing");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_request_without_host_is_the_clients_mistake() {
    let dir = std::env::temp_dir().join(format!("wisp-gw-host-{}", std::process::id()));
    let inv = invoker(&dir).await;
    // An HTTP/1.0 request may omit Host; it reaches handle with neither Host nor authority.
    let req = http::Request::builder()
        .uri("/anything")
        .version(http::Version::HTTP_10)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = wisp_gateway::handle(&inv, req).await;
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"], "the request has no Host header");
    let _ = std::fs::remove_dir_all(dir);
}
