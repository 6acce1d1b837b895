//! `GET /v1/traces/{id}`: the invocations of one trace, from the metering records.

use crate::ApiState;
use crate::error::{ApiError, blocking};
use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use wisp_core::{Outcome, Trigger, UsageRecord};

/// One invocation in a trace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Span {
    pub span_id: String,
    /// The span that caused it; absent (or not among the spans) for the trace's roots.
    pub parent_span_id: Option<String>,
    pub request_id: String,
    pub function: String,
    pub version: u32,
    pub trigger: Trigger,
    pub start_ms: i64,
    pub duration_ms: f64,
    pub billed_ms: u64,
    pub init_ms: f64,
    pub cold_start: bool,
    pub outcome: Outcome,
    pub cpu_ms: Option<f64>,
}

impl From<UsageRecord> for Span {
    fn from(r: UsageRecord) -> Self {
        Span {
            span_id: r.span.span_id,
            parent_span_id: r.span.parent_span_id,
            request_id: r.request_id,
            function: r.function,
            version: r.version,
            trigger: r.trigger,
            start_ms: r.start_ms,
            duration_ms: r.duration_us as f64 / 1000.0,
            billed_ms: r.billed_ms,
            init_ms: r.init_us as f64 / 1000.0,
            cold_start: r.cold_start,
            outcome: r.outcome,
            cpu_ms: r.cpu_us.map(|c| c as f64 / 1000.0),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Trace {
    pub trace_id: String,
    /// In start order.
    pub spans: Vec<Span>,
}

/// A trace by its W3C trace id, or by the request id (or async event id) of one of its
/// invocations.
pub async fn trace(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Trace>, ApiError> {
    let id = id.trim().to_ascii_lowercase();
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Err(ApiError::bad_request(format!(
            "`{id}` is neither a trace id (32 hex characters) nor a request id (a UUID)"
        )));
    }
    // Records are written in batches: include everything finished before this call.
    state.invoker.logs().flush().await;
    let store = state.invoker.store().clone();
    let lookup = id.clone();
    let records = blocking(move || Ok(store.trace(&lookup)?)).await?;
    let Some(first) = records.first() else {
        return Err(ApiError::not_found(format!(
            "no invocations recorded for trace or request `{id}`: it is unknown, still running, or older than the log retention"
        )));
    };
    Ok(Json(Trace {
        trace_id: first.span.trace_id.clone(),
        spans: records.into_iter().map(Span::from).collect(),
    }))
}
