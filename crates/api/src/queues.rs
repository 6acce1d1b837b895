//! Named queues: create, list with their depth, send. Functions subscribe in their
//! manifest (`queue:`); the node runs them on batches.

use crate::ApiState;
use crate::error::ApiError;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::time::Duration;

fn store(state: &ApiState) -> Result<&wisp_events::EventStore, ApiError> {
    state.events.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node has no event store: queues are off",
        )
    })
}

fn store_error(e: wisp_events::EventError) -> ApiError {
    match e {
        wisp_events::EventError::InvalidOption(m) => ApiError::bad_request(m),
        e @ wisp_events::EventError::InvalidName { .. } => ApiError::bad_request(e.to_string()),
        wisp_events::EventError::NoSuchQueue(q) => ApiError::not_found(format!(
            "no queue `{q}`: `wisp queue create {q}` creates it"
        )),
        other => ApiError::internal(other),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateQueue {
    name: String,
    /// Seconds a received message stays invisible before it is delivered again.
    #[serde(default)]
    visibility_timeout_s: Option<u64>,
    /// After this many receives a message goes to `dead_letter_queue`.
    #[serde(default)]
    max_receive_count: Option<u32>,
    #[serde(default)]
    dead_letter_queue: Option<String>,
}

#[derive(Serialize)]
pub struct QueueInfo {
    name: String,
    visibility_timeout_s: u64,
    dead_letter_queue: Option<String>,
    max_receive_count: Option<u32>,
    depth: u64,
    in_flight: u64,
    oldest_age_s: Option<u64>,
}

pub async fn create(
    State(state): State<ApiState>,
    Json(req): Json<CreateQueue>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let events = store(&state)?;
    let mut config = wisp_events::QueueConfig::default();
    if let Some(v) = req.visibility_timeout_s {
        config.visibility_timeout = Duration::from_secs(v);
    }
    match (req.dead_letter_queue, req.max_receive_count) {
        (Some(dlq), n) => {
            config.redrive = Some(wisp_events::RedrivePolicy {
                dead_letter_queue: dlq,
                max_receive_count: n.unwrap_or(3),
            });
        }
        (None, Some(_)) => {
            return Err(ApiError::bad_request(
                "max_receive_count needs a dead_letter_queue to send messages to",
            ));
        }
        (None, None) => {}
    }
    let created = events
        .create_queue(&req.name, config)
        .await
        .map_err(store_error)?;
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(serde_json::json!({ "name": req.name, "created": created })),
    ))
}

pub async fn list(State(state): State<ApiState>) -> Result<Json<Vec<QueueInfo>>, ApiError> {
    let events = store(&state)?;
    let mut out = Vec::new();
    for (name, config) in events.list_queues().await.map_err(store_error)? {
        let stats = events.stats(&name).await.map_err(store_error)?;
        out.push(QueueInfo {
            visibility_timeout_s: config.visibility_timeout.as_secs(),
            dead_letter_queue: config.redrive.as_ref().map(|r| r.dead_letter_queue.clone()),
            max_receive_count: config.redrive.as_ref().map(|r| r.max_receive_count),
            depth: stats.depth,
            in_flight: stats.in_flight,
            oldest_age_s: stats.oldest_age.map(|d| d.as_secs()),
            name,
        });
    }
    Ok(Json(out))
}

pub async fn send(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: String,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let id = store(&state)?
        .send(&name, &body, Default::default())
        .await
        .map_err(store_error)?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "queue": name, "message_id": id })),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Receive {
    /// At most this many messages (1 to 10, default 1), oldest first.
    #[serde(default)]
    max: Option<usize>,
    /// Seconds the messages stay invisible to other receivers (default: the queue's).
    #[serde(default)]
    visibility_timeout_s: Option<u64>,
    /// Delete them once read (receive and delete in one step).
    #[serde(default)]
    delete: bool,
}

/// Receives messages as an SQS consumer would (`wisp queue receive`): each is hidden for
/// the visibility timeout and comes back unless deleted; `delete` removes them at once.
pub async fn receive(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Option<Json<Receive>>,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    let req = body.map(|Json(r)| r).unwrap_or_default();
    let max = req.max.unwrap_or(1);
    if !(1..=10).contains(&max) {
        return Err(ApiError::bad_request(
            "max must be 1 to 10 (as SQS's MaxNumberOfMessages)",
        ));
    }
    let events = store(&state)?;
    let messages = events
        .receive(
            &name,
            max,
            req.visibility_timeout_s.map(Duration::from_secs),
        )
        .await
        .map_err(store_error)?;
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        if req.delete {
            events
                .delete(&m.receipt_handle)
                .await
                .map_err(store_error)?;
        }
        out.push(serde_json::json!({
            "message_id": m.message_id,
            "receipt_handle": m.receipt_handle,
            "body": m.body,
            "md5_of_body": m.md5_of_body,
            "receive_count": m.attributes.approximate_receive_count,
            "sent_at": m.attributes.sent_timestamp.to_string(),
            "deleted": req.delete,
        }));
    }
    Ok(Json(out))
}
