//! The platform API: JSON over HTTP for deploy, list, get, delete, versions, rollback,
//! invoke and logs (with follow), documented in `openapi.yaml` beside this crate.
//!
//! Every route but `/v1/health` requires `Authorization: Bearer <token>`. Build the router
//! with [`app`]; `wisp up` serves it on the API listener. This crate validates requests and
//! calls the store and the invoker; it does not run functions itself.
#![forbid(unsafe_code)]

mod deploy;
mod error;
mod functions;
mod logs;
mod queues;
pub mod traces;
mod usage;

pub use error::ApiError;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{MethodRouter, delete, get, head, post, put};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use wisp_invoker::Invoker;

/// The OpenAPI description of this API.
pub const OPENAPI: &str = include_str!("../openapi.yaml");

/// Every route of the API as (method, OpenAPI path), read from the same table the router
/// is built from: the OpenAPI test and the token test cover exactly what is served.
pub fn routes() -> Vec<(&'static str, &'static str)> {
    PUBLIC
        .iter()
        .map(|(m, p)| (*m, *p))
        .chain(protected_routes().into_iter().map(|(m, p, _)| (m, p)))
        .collect()
}

/// The routes served without a token.
const PUBLIC: &[(&str, &str)] = &[("get", "/v1/health"), ("get", "/v1/openapi.yaml")];

/// The routes that need the token: (method, path, handler).
fn protected_routes() -> Vec<(&'static str, &'static str, MethodRouter<ApiState>)> {
    vec![
        (
            "head",
            "/v1/artifacts/{sha256}",
            head(deploy::head_artifact),
        ),
        ("put", "/v1/artifacts/{sha256}", put(deploy::put_artifact)),
        ("post", "/v1/deploy", post(deploy::deploy)),
        ("get", "/v1/functions", get(functions::list)),
        ("get", "/v1/functions/{name}", get(functions::get_one)),
        ("delete", "/v1/functions/{name}", delete(functions::remove)),
        (
            "get",
            "/v1/functions/{name}/versions",
            get(functions::versions),
        ),
        (
            "post",
            "/v1/functions/{name}/rollback",
            post(functions::rollback),
        ),
        (
            "post",
            "/v1/functions/{name}/invoke",
            post(functions::invoke),
        ),
        ("post", "/v1/functions/{name}/scale", post(functions::scale)),
        ("get", "/v1/functions/{name}/dlq", get(functions::dlq)),
        (
            "post",
            "/v1/functions/{name}/dlq/redrive",
            post(functions::redrive),
        ),
        ("get", "/v1/events/{id}", get(functions::event)),
        ("get", "/v1/queues", get(queues::list)),
        ("post", "/v1/queues", post(queues::create)),
        ("post", "/v1/queues/{name}/messages", post(queues::send)),
        ("post", "/v1/queues/{name}/receive", post(queues::receive)),
        ("get", "/v1/logs", get(logs::logs)),
        ("get", "/metrics", get(metrics)),
        ("get", "/v1/usage", get(usage::usage)),
        ("get", "/v1/cost", get(usage::cost)),
        ("get", "/v1/traces/{id}", get(traces::trace)),
    ]
}

/// Largest component upload accepted.
pub const MAX_ARTIFACT_BYTES: usize = 256 * 1024 * 1024;

#[derive(Clone)]
pub struct ApiState {
    pub invoker: Arc<Invoker>,
    token: Arc<str>,
    /// Deploys, rollbacks and removals are applied one at a time.
    change_lock: Arc<tokio::sync::Mutex<()>>,
    /// Prices for `GET /v1/cost`.
    pub prices: wisp_core::PriceSheet,
    /// The durable event store for asynchronous invocations, when the node has one.
    pub events: Option<wisp_events::EventStore>,
}

impl ApiState {
    pub fn new(invoker: Arc<Invoker>, token: impl Into<Arc<str>>) -> Self {
        ApiState {
            invoker,
            token: token.into(),
            change_lock: Arc::default(),
            prices: wisp_core::PriceSheet::default(),
            events: None,
        }
    }

    pub fn with_events(mut self, events: wisp_events::EventStore) -> Self {
        self.events = Some(events);
        self
    }

    pub fn with_prices(mut self, prices: wisp_core::PriceSheet) -> Self {
        self.prices = prices;
        self
    }
}

/// The API router.
pub fn app(state: ApiState) -> Router {
    // Routes of the same path merge their methods.
    let protected = protected_routes()
        .into_iter()
        .fold(Router::new(), |r, (_, path, handler)| {
            r.route(path, handler)
        })
        .layer(DefaultBodyLimit::max(MAX_ARTIFACT_BYTES))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/openapi.yaml", get(openapi))
        .merge(protected)
        .fallback(not_found)
        .with_state(state)
}

async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

/// `GET /metrics`: OpenMetrics for a scraper that asks for it in `Accept` (a Prometheus
/// server does), else the Prometheus text format 0.0.4.
async fn metrics(
    State(state): State<ApiState>,
    headers: axum::http::HeaderMap,
) -> ([(header::HeaderName, &'static str); 1], String) {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    // Read at scrape time from the event store.
    let extra = match &state.events {
        Some(events) => event_metrics(events).await,
        None => String::new(),
    };
    let (content_type, body) = state.invoker.metrics().exposition(accept, &extra);
    ([(header::CONTENT_TYPE, content_type)], body)
}

/// Queue depth, in-flight messages and oldest age per queue, and async invocations by
/// state (pending, in flight, dead-lettered): gauge families with `# HELP` and `# TYPE`,
/// written the same in OpenMetrics and the text format 0.0.4.
async fn event_metrics(events: &wisp_events::EventStore) -> String {
    use std::fmt::Write as _;
    let mut depth = String::new();
    let mut in_flight = String::new();
    let mut oldest = String::new();
    for (name, _) in events.list_queues().await.unwrap_or_default() {
        let Ok(st) = events.stats(&name).await else {
            continue;
        };
        let q = name.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(depth, "wisp_queue_depth{{queue=\"{q}\"}} {}", st.depth);
        let _ = writeln!(
            in_flight,
            "wisp_queue_in_flight{{queue=\"{q}\"}} {}",
            st.in_flight
        );
        let _ = writeln!(
            oldest,
            "wisp_queue_oldest_age_seconds{{queue=\"{q}\"}} {}",
            st.oldest_age.map(|d| d.as_secs_f64()).unwrap_or(0.0)
        );
    }
    let mut out = String::new();
    for (name, help, body) in [
        ("wisp_queue_depth", "Messages waiting in a queue.", depth),
        (
            "wisp_queue_in_flight",
            "Messages received and not yet deleted.",
            in_flight,
        ),
        (
            "wisp_queue_oldest_age_seconds",
            "Age of a queue's oldest message.",
            oldest,
        ),
    ] {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{body}");
    }
    if let Ok((pending, running, dead)) = events.invocation_counts(None).await {
        let _ = write!(
            out,
            "# HELP wisp_async_events Asynchronous invocations by state (dead: in dead-letter queues).\n# TYPE wisp_async_events gauge\nwisp_async_events{{state=\"pending\"}} {pending}\nwisp_async_events{{state=\"in_flight\"}} {running}\nwisp_async_events{{state=\"dead\"}} {dead}\n"
        );
    }
    out
}

async fn openapi() -> ([(header::HeaderName, &'static str); 1], &'static str) {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no API route {} {}; see /v1/openapi.yaml",
        req.method(),
        req.uri().path()
    ))
}

async fn require_token(
    State(state): State<ApiState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if given.is_empty() || !bool::from(given.as_bytes().ct_eq(state.token.as_bytes())) {
        return Err(ApiError::unauthorized());
    }
    Ok(next.run(req).await)
}
