//! The API router driven in-process with `tower::ServiceExt::oneshot`: auth, validation,
//! and that the OpenAPI file documents exactly the routes the router serves.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use std::sync::Arc;
use tower::ServiceExt;
use wisp_api::{ApiState, OPENAPI, app, routes};
use wisp_executor::{Executor, ExecutorConfig};
use wisp_invoker::{Invoker, LogSink, Retention};
use wisp_store::{ArtifactDir, SqliteStore, Store};

const TOKEN: &str = "test-token";

fn router(dir: &std::path::Path) -> axum::Router {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir).unwrap());
    let exec = Arc::new(
        Executor::new(ExecutorConfig {
            pooling: false,
            ..ExecutorConfig::default()
        })
        .unwrap(),
    );
    let logs = LogSink::start(store.clone(), Retention::default());
    let invoker = Invoker::new(exec, None, store, ArtifactDir::open(dir).unwrap(), logs).unwrap();
    app(ApiState::new(Arc::new(invoker), TOKEN))
}

async fn call(
    r: &axum::Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Body,
) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    req = req.header("content-type", "application/json");
    let resp = r.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn every_route_but_health_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let r = router(dir.path());
    let (s, _) = call(&r, "GET", "/v1/health", None, Body::empty()).await;
    assert_eq!(s, StatusCode::OK);
    for (method, path) in routes() {
        if path.starts_with("/v1/health") || path.starts_with("/v1/openapi") {
            continue;
        }
        let uri = path
            .replace("{sha256}", &"a".repeat(64))
            .replace("{name}", "hello");
        let (s, body) = call(&r, &method.to_uppercase(), &uri, None, Body::empty()).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {uri}");
        if method != "head" {
            assert!(body.contains("API token"), "{body}");
        }
        let (s, _) = call(
            &r,
            &method.to_uppercase(),
            &uri,
            Some("wrong"),
            Body::empty(),
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {uri}");
    }
}

#[tokio::test]
async fn uploads_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let r = router(dir.path());
    let (s, body) = call(
        &r,
        "PUT",
        "/v1/artifacts/nothex",
        Some(TOKEN),
        Body::from("x"),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    let text = b"not wasm at all".to_vec();
    let sha = ArtifactDir::sha256(&text);
    let (s, body) = call(
        &r,
        "PUT",
        &format!("/v1/artifacts/{}", "0".repeat(64)),
        Some(TOKEN),
        Body::from(text.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body.contains("truncated or the digest is wrong"), "{body}");
    let (s, body) = call(
        &r,
        "PUT",
        &format!("/v1/artifacts/{sha}"),
        Some(TOKEN),
        Body::from(text),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("not a WebAssembly binary"), "{body}");
    let (s, _) = call(
        &r,
        "HEAD",
        &format!("/v1/artifacts/{sha}"),
        Some(TOKEN),
        Body::empty(),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "a rejected upload is not stored");
}

#[tokio::test]
async fn deploys_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let r = router(dir.path());
    let missing = serde_json::json!({
        "app": "shop",
        "functions": [{"name": "a", "artifact": "b".repeat(64), "routes": ["GET /a"]}]
    });
    let (s, body) = call(
        &r,
        "POST",
        "/v1/deploy",
        Some(TOKEN),
        Body::from(missing.to_string()),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body.contains("has not been uploaded"), "{body}");
    let unknown = serde_json::json!({"app": "shop", "functions": [], "extra": 1});
    let (s, body) = call(
        &r,
        "POST",
        "/v1/deploy",
        Some(TOKEN),
        Body::from(unknown.to_string()),
    )
    .await;
    assert!(s.is_client_error(), "{s} {body}");
    assert!(body.contains("extra"), "{body}");
    let (s, body) = call(&r, "GET", "/v1/functions/nope", Some(TOKEN), Body::empty()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(body.contains("wisp ls"), "{body}");
    let (s, _) = call(&r, "GET", "/v1/logs?limit=0", Some(TOKEN), Body::empty()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[test]
fn openapi_documents_exactly_the_served_routes() {
    let spec: openapiv3::OpenAPI =
        serde_saphyr::from_str(OPENAPI).expect("openapi.yaml parses as OpenAPI 3");
    let mut documented = Vec::new();
    for (path, item) in &spec.paths.paths {
        let item = item.as_item().expect("no $ref path items");
        for (method, _) in item.iter() {
            documented.push((method.to_string(), path.clone()));
        }
    }
    documented.sort();
    let mut served: Vec<(String, String)> = routes()
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    served.sort();
    assert_eq!(documented, served);
}
