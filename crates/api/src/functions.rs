use crate::ApiState;
use crate::error::{ApiError, blocking};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use wisp_core::{Function, FunctionName, Limits, Outcome, RouteSpec, Trigger};
use wisp_invoker::{Invocation, InvokeError, new_request_id};

fn parse_name(name: &str) -> Result<FunctionName, ApiError> {
    FunctionName::new(name).map_err(|e| ApiError::bad_request(e.to_string()))
}

#[derive(Serialize)]
pub struct FunctionInfo {
    name: String,
    app: String,
    version: u32,
    latest_version: u32,
    artifact: String,
    /// `wasm`, or the native runtime (`python3.11`, `nodejs20.x`, `provided`).
    runtime: String,
    routes: Vec<RouteSpec>,
    limits: Limits,
    env: Vec<String>,
    /// Native functions: the handler (`app.handler`).
    #[serde(skip_serializing_if = "Option::is_none")]
    handler: Option<String>,
    /// Native functions: whether the sandbox has outbound network access.
    #[serde(skip_serializing_if = "Option::is_none")]
    network: Option<bool>,
    instance_reuse: bool,
    /// Schedules, each with its next run.
    schedules: Vec<ScheduleInfo>,
    /// Object-storage (S3) triggers.
    s3: Vec<ObjectTriggerInfo>,
    /// The queue whose message batches invoke the function.
    queue: Option<wisp_core::QueueSubscription>,
    /// The routes' signature check: provider, header and the env var that holds the
    /// secret (its name; the value is never shown).
    webhook: Option<wisp_core::WebhookSpec>,
    /// Retries, event age and destinations of asynchronous invocations (`None`: the
    /// defaults, 2 retries and 6 hours).
    #[serde(rename = "async")]
    async_config: Option<wisp_core::AsyncConfig>,
    /// Node services a WebAssembly function may call (`objects`, `self`).
    outbound: Vec<wisp_core::HostService>,
    /// The buckets the `objects` grant is limited to (empty: all).
    object_buckets: Vec<String>,
    /// How the function is scaled now (absent when it is not in the live registry).
    #[serde(skip_serializing_if = "Option::is_none")]
    scaling: Option<wisp_invoker::ScalingState>,
}

#[derive(Serialize)]
pub struct ScheduleInfo {
    expression: String,
    /// The IANA time zone the expression is read in.
    timezone: String,
    skip_missed: bool,
    /// The next tick after now, RFC 3339 in UTC (`None` if the expression has no more).
    next_run: Option<String>,
}

#[derive(Serialize)]
pub struct ObjectTriggerInfo {
    bucket: String,
    /// `created` and/or `removed`.
    events: Vec<&'static str>,
    prefix: String,
    suffix: String,
}

fn schedule_info(s: wisp_core::ScheduleSpec, now: jiff::Timestamp) -> ScheduleInfo {
    let timezone = if s.timezone.is_empty() {
        "UTC".to_string()
    } else {
        s.timezone
    };
    let next_run = wisp_events::schedule::next_after(&s.expression, &timezone, now)
        .ok()
        .flatten()
        .map(|t| t.to_string());
    ScheduleInfo {
        expression: s.expression,
        timezone,
        skip_missed: s.skip_missed,
        next_run,
    }
}

impl FunctionInfo {
    fn live(f: Function, state: &ApiState) -> Self {
        let scaling = state.invoker.scaling(&f.name);
        FunctionInfo {
            scaling,
            ..FunctionInfo::from(f)
        }
    }
}

impl From<Function> for FunctionInfo {
    fn from(f: Function) -> Self {
        FunctionInfo {
            name: f.name.to_string(),
            app: f.app,
            version: f.active_version,
            latest_version: f.latest_version,
            artifact: f.active.artifact,
            runtime: f
                .active
                .native
                .as_ref()
                .map(|n| n.runtime.to_string())
                .unwrap_or_else(|| "wasm".into()),
            routes: f.active.routes,
            limits: f.active.limits,
            // Names only: values may be secrets.
            env: f.active.env.into_keys().collect(),
            handler: f.active.native.as_ref().map(|n| n.handler.clone()),
            network: f.active.native.as_ref().map(|n| n.network),
            instance_reuse: f.active.instance_reuse,
            schedules: {
                let now = jiff::Timestamp::now();
                f.active
                    .schedules
                    .into_iter()
                    .map(|s| schedule_info(s, now))
                    .collect()
            },
            s3: f
                .active
                .object_triggers
                .into_iter()
                .map(|t| ObjectTriggerInfo {
                    events: [(t.created, "created"), (t.removed, "removed")]
                        .into_iter()
                        .filter_map(|(on, e)| on.then_some(e))
                        .collect(),
                    bucket: t.bucket,
                    prefix: t.prefix,
                    suffix: t.suffix,
                })
                .collect(),
            queue: f.active.queue,
            webhook: f.active.webhook,
            async_config: f.active.async_config,
            outbound: f.active.outbound,
            object_buckets: f.active.object_buckets,
            scaling: None,
        }
    }
}

pub async fn list(State(state): State<ApiState>) -> Result<Json<Vec<FunctionInfo>>, ApiError> {
    let store = state.invoker.store().clone();
    let fs = blocking(move || Ok(store.functions()?)).await?;
    Ok(Json(
        fs.into_iter()
            .map(|f| FunctionInfo::live(f, &state))
            .collect(),
    ))
}

async fn load(state: &ApiState, name: &FunctionName) -> Result<Function, ApiError> {
    let store = state.invoker.store().clone();
    let n = name.clone();
    blocking(move || Ok(store.function(&n)?))
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "function `{name}` not found: `wisp ls` lists the deployed functions"
            ))
        })
}

pub async fn get_one(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<FunctionInfo>, ApiError> {
    let name = parse_name(&name)?;
    Ok(Json(FunctionInfo::live(load(&state, &name).await?, &state)))
}

pub async fn remove(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = parse_name(&name)?;
    let _guard = state.change_lock.lock().await;
    let store = state.invoker.store().clone();
    let n = name.clone();
    let removed = blocking(move || Ok(store.remove(&n)?)).await?;
    if !removed {
        return Err(ApiError::not_found(format!(
            "function `{name}` not found: `wisp ls` lists the deployed functions"
        )));
    }
    state.invoker.reload().await.map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
pub struct VersionInfo {
    number: u32,
    active: bool,
    artifact: String,
    routes: Vec<RouteSpec>,
    limits: Limits,
    created_at_ms: i64,
    /// What this version changed against the one before it (by number); empty for the
    /// first. Env variables by name only.
    changes: Vec<String>,
}

pub async fn versions(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<VersionInfo>>, ApiError> {
    let name = parse_name(&name)?;
    let f = load(&state, &name).await?;
    let store = state.invoker.store().clone();
    let vs = blocking(move || Ok(store.versions(&name)?)).await?;
    let mut vs = vs;
    vs.sort_by_key(|v| v.number);
    let changes: Vec<Vec<String>> = vs
        .iter()
        .enumerate()
        .map(|(i, v)| match i {
            0 => Vec::new(),
            _ => wisp_core::spec_changes(&vs[i - 1].spec, &v.spec),
        })
        .collect();
    Ok(Json(
        vs.into_iter()
            .zip(changes)
            .map(|(v, changes)| VersionInfo {
                number: v.number,
                active: v.number == f.active_version,
                artifact: v.spec.artifact,
                routes: v.spec.routes,
                limits: v.spec.limits,
                created_at_ms: v.created_at_ms,
                changes,
            })
            .collect(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    version: u32,
}

pub async fn rollback(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Json(req): Json<RollbackRequest>,
) -> Result<Json<FunctionInfo>, ApiError> {
    let name = parse_name(&name)?;
    let _guard = state.change_lock.lock().await;
    let store = state.invoker.store().clone();
    // A version's routes may collide with routes deployed since; check before switching.
    let (f, deployed) = {
        let store = store.clone();
        let n = name.clone();
        blocking(move || {
            let v = store
                .versions(&n)?
                .into_iter()
                .find(|v| v.number == req.version);
            Ok((v, store.functions()?))
        })
        .await?
    };
    let Some(target) = f else {
        load(&state, &name).await?;
        return Err(ApiError::not_found(format!(
            "function `{name}` has no version {}: `wisp versions {name}` lists them",
            req.version
        )));
    };
    let mut table = wisp_core::RouteTable::new();
    for other in deployed.iter().filter(|o| o.name != name) {
        for r in &other.active.routes {
            let _ = table.insert(r.clone(), other.name.to_string());
        }
    }
    for r in &target.spec.routes {
        table.insert(r.clone(), name.to_string()).map_err(|e| {
            ApiError::conflict(format!("cannot roll back to version {}: {e}", req.version))
        })?;
    }
    state
        .invoker
        .prepare(std::slice::from_ref(&target.spec))
        .await
        .map_err(crate::deploy::prepare_error)?;
    let n = name.clone();
    let f = blocking(move || Ok(store.set_active(&n, req.version)?)).await?;
    state.invoker.reload().await.map_err(ApiError::internal)?;
    Ok(Json(f.into()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvokeQuery {
    /// HTTP method of the request the function receives (default POST).
    method: Option<String>,
    /// Path and query of the request the function receives (default `/`).
    path: Option<String>,
    /// Run it later, from the durable event store: answer 202 with the event id once the
    /// event is stored (as `X-Amz-Invocation-Type: Event` does).
    #[serde(default, rename = "async")]
    asynchronous: bool,
}

#[derive(Serialize)]
pub struct InvokeResponse {
    request_id: String,
    trace_id: String,
    function: String,
    version: u32,
    outcome: Outcome,
    duration_ms: f64,
    status: u16,
    headers: BTreeMap<String, String>,
    /// The body as text when it is UTF-8, else base64 (see `body_encoding`).
    body: String,
    body_encoding: &'static str,
    error: Option<String>,
}

/// A header for the invoked function's request: `name: value` (repeatable).
pub const INVOKE_HEADER: &str = "x-wisp-invoke-header";

/// Runs a function with the request body as its payload and returns what it answered.
pub async fn invoke(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<InvokeQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let name = parse_name(&name)?;
    let Some(function) = state.invoker.function(&name) else {
        return Err(ApiError::not_found(format!(
            "function `{name}` not found: `wisp ls` lists the deployed functions"
        )));
    };
    let event_header = headers
        .get("x-amz-invocation-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("event"));
    if q.asynchronous || event_header {
        return enqueue(&state, &function, &headers, body)
            .await
            .map(|accepted| (StatusCode::ACCEPTED, Json(accepted)).into_response());
    }
    if body.len() as u64 > function.spec.limits.max_body_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the payload is larger than function `{name}` accepts ({})",
                wisp_core::ByteSize(function.spec.limits.max_body_bytes)
            ),
        ));
    }
    let method = q.method.as_deref().unwrap_or("POST");
    let path = q.path.as_deref().unwrap_or("/");
    if !path.starts_with('/') {
        return Err(ApiError::bad_request(format!(
            "path `{path}` must start with `/`"
        )));
    }
    // Lambda's Invoke takes the client context base64-encoded in `X-Amz-Client-Context`.
    let client_context = match headers.get("x-amz-client-context") {
        None => None,
        Some(v) => {
            use base64::Engine as _;
            let json = base64::engine::general_purpose::STANDARD
                .decode(v.as_bytes())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|s| serde_json::from_str::<serde_json::Value>(s).is_ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "X-Amz-Client-Context must be base64 of a JSON object, e.g. base64 of {\"custom\":{\"k\":\"v\"}}",
                    )
                })?;
            Some(json)
        }
    };
    let request_id = new_request_id();
    // If the path matches one of the function's routes, the function gets that route's
    // parameters, exactly as through the gateway.
    let mut routes = wisp_core::RouteTable::new();
    for r in &function.spec.routes {
        let _ = routes.insert(r.clone(), ());
    }
    let path_only = path.split('?').next().unwrap_or("/");
    let (route, params) = match routes.lookup(method, path_only) {
        wisp_core::RouteMatch::Found { route, params, .. } => (Some(route.to_string()), params),
        _ => (None, Vec::new()),
    };
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://localhost{path}"));
    for name in ["traceparent", "x-amzn-trace-id"] {
        if let Some(v) = headers.get(name) {
            req = req.header(name, v);
        }
    }
    // `wisp invoke -H 'name: value'`: headers for the function's request, each in an
    // `x-wisp-invoke-header` of the API request (the API's own headers, its token among
    // them, never reach the function).
    for v in headers.get_all(INVOKE_HEADER) {
        let parsed = v
            .to_str()
            .ok()
            .and_then(|v| v.split_once(':'))
            .and_then(|(n, v)| {
                Some((
                    http::HeaderName::from_bytes(n.trim().as_bytes()).ok()?,
                    http::HeaderValue::from_str(v.trim()).ok()?,
                ))
            });
        let Some((n, v)) = parsed else {
            return Err(ApiError::bad_request(format!(
                "{INVOKE_HEADER} must be `name: value` with a valid header name and value"
            )));
        };
        req = req.header(n, v);
    }
    let mut trace = wisp_core::SpanContext::default();
    if let Some(h) = req.headers_mut() {
        trace = wisp_invoker::set_context_headers(h, &request_id, route.as_deref(), &params);
    }
    if req
        .headers_ref()
        .is_some_and(|h| h.contains_key(http::header::CONTENT_TYPE))
    {
        // Given with -H.
    } else if let Some(ct) = headers.get(http::header::CONTENT_TYPE) {
        req = req.header(http::header::CONTENT_TYPE, ct);
    } else if !body.is_empty() {
        req = req.header(http::header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(body)
        .map_err(|e| ApiError::bad_request(format!("building the request: {e}")))?;
    let done = state
        .invoker
        .invoke(Invocation {
            function,
            trigger: Trigger::Api,
            request_id: request_id.clone(),
            trace: trace.clone(),
            request: req,
            client_context,
            streams: Default::default(),
        })
        .await
        .map_err(|e| match e {
            InvokeError::Throttled { .. } | InvokeError::NodeFull { .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string())
            }
            InvokeError::Unavailable { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            InvokeError::RecursionStopped { .. } => {
                ApiError::new(StatusCode::LOOP_DETECTED, e.to_string())
            }
        })?;
    let (status, headers, body, body_encoding) = match done.response {
        Some(resp) => {
            let headers = resp
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let status = resp.status().as_u16();
            let bytes = resp.into_body();
            match String::from_utf8(bytes.to_vec()) {
                Ok(s) => (status, headers, s, "utf8"),
                Err(_) => (
                    status,
                    headers,
                    base64::engine::general_purpose::STANDARD.encode(&bytes),
                    "base64",
                ),
            }
        }
        None => {
            let status = if done.outcome == Outcome::Timeout {
                504
            } else {
                500
            };
            (status, BTreeMap::new(), String::new(), "utf8")
        }
    };
    Ok(Json(InvokeResponse {
        request_id,
        trace_id: trace.trace_id,
        function: name.to_string(),
        version: done.version,
        outcome: done.outcome,
        duration_ms: done.duration.as_secs_f64() * 1000.0,
        status,
        headers,
        body,
        body_encoding,
        error: done.error,
    })
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    pub max_concurrency: Option<u32>,
    pub reserved_concurrency: Option<u32>,
    pub provisioned_concurrency: Option<u32>,
}

/// Changes a function's scaling limits: a new version with the same code, routes and env,
/// which takes over atomically like a deploy (and can be rolled back like one).
pub async fn scale(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Json(req): Json<ScaleRequest>,
) -> Result<Json<FunctionInfo>, ApiError> {
    let name = parse_name(&name)?;
    if req.max_concurrency.is_none()
        && req.reserved_concurrency.is_none()
        && req.provisioned_concurrency.is_none()
    {
        return Err(ApiError::bad_request(
            "nothing to change: give max_concurrency, reserved_concurrency or provisioned_concurrency",
        ));
    }
    let _guard = state.change_lock.lock().await;
    let f = load(&state, &name).await?;
    let mut spec = f.active.clone();
    if let Some(n) = req.max_concurrency {
        spec.limits.max_concurrency = n;
    }
    if let Some(n) = req.reserved_concurrency {
        spec.limits.reserved_concurrency = n;
    }
    if let Some(n) = req.provisioned_concurrency {
        spec.limits.provisioned_concurrency = n;
    }
    spec.limits
        .validate()
        .map_err(|e| ApiError::bad_request(format!("function `{name}`: {e}")))?;
    let deploy = crate::deploy::DeployRequest {
        app: f.app.clone(),
        functions: vec![spec],
        prune: false,
    };
    let store = state.invoker.store().clone();
    let budget_mb = state.invoker.capacity().budget_mb();
    let deploy = blocking(move || {
        let deployed = store.functions()?;
        crate::deploy::check_reservations(&deploy, &deployed, budget_mb)?;
        Ok(deploy)
    })
    .await?;
    state
        .invoker
        .prepare(&deploy.functions)
        .await
        .map_err(crate::deploy::prepare_error)?;
    let store = state.invoker.store().clone();
    let n = name.clone();
    let updated = blocking(move || {
        store.deploy(&deploy.app, &deploy.functions, false)?;
        Ok(store.function(&n)?)
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("function `{name}` was removed meanwhile")))?;
    state.invoker.reload().await.map_err(ApiError::internal)?;
    Ok(Json(FunctionInfo::live(updated, &state)))
}

/// Stores an asynchronous invocation durably; it runs from the event store (retried on
/// failure, dead-lettered after its retries).
async fn enqueue(
    state: &ApiState,
    function: &wisp_invoker::ActiveFunction,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<wisp_invoker::Accepted, ApiError> {
    use wisp_invoker::EnqueueError;
    state
        .invoker
        .enqueue(function, &body, headers)
        .await
        .map_err(|e| match e {
            EnqueueError::NoEventStore => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            EnqueueError::Invalid(m) => ApiError::bad_request(m),
            EnqueueError::Store(m) => ApiError::internal(m),
        })
}

#[derive(Serialize)]
pub struct DeadLetterInfo {
    event_id: String,
    function: String,
    reason: String,
    error: Option<String>,
    attempts: u32,
    enqueued_at: String,
    dead_at: String,
    /// The event as it was sent (UTF-8), or base64.
    payload: String,
    payload_encoding: &'static str,
}

impl From<wisp_events::DeadLetter> for DeadLetterInfo {
    fn from(d: wisp_events::DeadLetter) -> Self {
        let (payload, payload_encoding) = match String::from_utf8(d.payload) {
            Ok(s) => (s, "utf8"),
            Err(e) => (
                base64::engine::general_purpose::STANDARD.encode(e.as_bytes()),
                "base64",
            ),
        };
        DeadLetterInfo {
            event_id: d.id.to_string(),
            function: d.function,
            reason: d.reason.as_str().to_string(),
            error: d.last_error,
            attempts: d.attempts,
            enqueued_at: d.enqueued_at.to_string(),
            dead_at: d.dead_at.to_string(),
            payload,
            payload_encoding,
        }
    }
}

fn event_store(state: &ApiState) -> Result<&wisp_events::EventStore, ApiError> {
    state.events.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node has no event store: asynchronous invocations are off",
        )
    })
}

/// A function's dead-letter queue: its async events that ran out of retries or age.
pub async fn dlq(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<DeadLetterInfo>>, ApiError> {
    let name = parse_name(&name)?;
    let list = event_store(&state)?
        .dlq_list(name.as_str())
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(list.into_iter().map(DeadLetterInfo::from).collect()))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    /// Only these events (default: the whole dead-letter queue).
    #[serde(default)]
    ids: Option<Vec<String>>,
}

/// Sends dead-lettered events back to run again, with fresh retries.
pub async fn redrive(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Option<Json<RedriveRequest>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = parse_name(&name)?;
    let req = body.map(|b| b.0).unwrap_or_default();
    let which = match req.ids {
        None => wisp_events::Redrive::All,
        Some(ids) => wisp_events::Redrive::Ids(
            ids.iter()
                .map(|i| {
                    i.parse().map_err(|_| {
                        ApiError::bad_request(format!("`{i}` is not an event id (a UUID)"))
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    let n = event_store(&state)?
        .redrive(name.as_str(), which)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(
        serde_json::json!({ "function": name.to_string(), "redriven": n }),
    ))
}

/// The state of one asynchronous invocation.
pub async fn event(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id: wisp_events::EventId = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("`{id}` is not an event id (a UUID)")))?;
    let store = event_store(&state)?;
    if let Some(dead) = store.dlq_get(id).await.map_err(ApiError::internal)? {
        let mut v = serde_json::to_value(DeadLetterInfo::from(dead)).map_err(ApiError::internal)?;
        v["state"] = "dead".into();
        return Ok(Json(v));
    }
    let Some(info) = store.get(id).await.map_err(ApiError::internal)? else {
        return Err(ApiError::not_found(format!(
            "no event {id}: it never existed, or it succeeded and was forgotten"
        )));
    };
    let state_name = match info.state {
        wisp_events::EventState::Pending => "pending",
        wisp_events::EventState::InFlight => "in_flight",
        wisp_events::EventState::Succeeded => "succeeded",
        wisp_events::EventState::Dead(_) => "dead",
    };
    Ok(Json(serde_json::json!({
        "event_id": info.id.to_string(),
        "function": info.function,
        "state": state_name,
        "attempts": info.attempts,
        "enqueued_at": info.enqueued_at.to_string(),
        "due_at": info.due_at.to_string(),
        "error": info.last_error,
    })))
}
