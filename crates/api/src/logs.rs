use crate::ApiState;
use crate::error::{ApiError, blocking};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wisp_core::LogLine;
use wisp_store::LogQuery;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsParams {
    function: Option<String>,
    request_id: Option<String>,
    /// A duration back from now (`10m`, `2h`) or a Unix time in milliseconds.
    since: Option<String>,
    /// Only lines with an id greater than this (paging forward).
    after: Option<i64>,
    /// At most this many lines (default 100, at most 10000): the newest ones.
    limit: Option<usize>,
    /// Only lines that contain this text.
    grep: Option<String>,
    /// Only lines of invocations in this W3C trace.
    trace_id: Option<String>,
    /// Only lines of this version.
    version: Option<u32>,
    /// Only lines before this: a duration back from now or a Unix time in milliseconds.
    until: Option<String>,
    /// Keep the response open and stream new lines as NDJSON.
    #[serde(default)]
    follow: bool,
}

#[derive(Serialize)]
struct LogsPage {
    lines: Vec<LogLine>,
    /// Pass as `after` to read the lines that come next.
    next_after: Option<i64>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A point in time for `since` / `until`: a duration back from now or Unix milliseconds.
fn parse_since(s: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    humantime::parse_duration(s)
        .map(|d| now_ms() - d.as_millis() as i64)
        .map_err(|_| {
            ApiError::bad_request(format!(
                "`{s}` is neither a duration back from now (e.g. `10m`, `2h`) nor a Unix time in milliseconds"
            ))
        })
}

pub async fn logs(
    State(state): State<ApiState>,
    Query(p): Query<LogsParams>,
) -> Result<Response, ApiError> {
    let limit = p.limit.unwrap_or(100);
    if limit == 0 || limit > 10_000 {
        return Err(ApiError::bad_request("limit must be between 1 and 10000"));
    }
    let mut query = LogQuery {
        function: p.function.clone(),
        request_id: p.request_id.clone(),
        since_ms: p.since.as_deref().map(parse_since).transpose()?,
        after_id: p.after,
        limit,
        grep: p.grep.clone().filter(|g| !g.is_empty()),
        trace_id: p.trace_id.clone(),
        version: p.version,
        until_ms: p.until.as_deref().map(parse_since).transpose()?,
    };
    if let Some(f) = &p.function
        && wisp_core::FunctionName::new(f.clone()).is_err()
    {
        return Err(ApiError::bad_request(format!(
            "`{f}` is not a function name"
        )));
    }
    let store = state.invoker.store().clone();
    let q = query.clone();
    let first = blocking(move || Ok(store.logs(&q)?)).await?;
    if !p.follow {
        let next_after = first.last().map(|l| l.id).or(p.after);
        return Ok(Json(LogsPage {
            lines: first,
            next_after,
        })
        .into_response());
    }

    // Follow: send what matched, then every new line as it is stored.
    query.after_id = first.last().map(|l| l.id).or(p.after).or(Some(0));
    query.since_ms = None;
    query.limit = 1000;
    if query.after_id == Some(0) {
        // Start from the newest line, not from the beginning of time.
        let store = state.invoker.store().clone();
        let newest = blocking(move || {
            Ok(store.logs(&LogQuery {
                limit: 1,
                ..Default::default()
            })?)
        })
        .await?;
        query.after_id = newest.last().map(|l| l.id).or(Some(0));
    }
    let written = state.invoker.logs().subscribe();
    let store = state.invoker.store().clone();
    let initial = ndjson(&first);
    let stream = futures::stream::unfold(
        (Some(initial), query, written, store),
        |(initial, mut query, mut written, store)| async move {
            if let Some(bytes) = initial {
                return Some((
                    Ok::<_, std::io::Error>(bytes),
                    (None, query, written, store),
                ));
            }
            // Wake on new lines, and at least every few seconds to send a keep-alive.
            let woke = tokio::time::timeout(Duration::from_secs(5), written.changed()).await;
            if let Ok(Err(_)) = woke {
                // The writer is gone (shutting down): do not spin.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let s = store.clone();
            let q = query.clone();
            let lines = tokio::task::spawn_blocking(move || s.logs(&q))
                .await
                .ok()?
                .ok()?;
            if let Some(last) = lines.last() {
                query.after_id = Some(last.id);
                return Some((Ok(ndjson(&lines)), (None, query, written, store)));
            }
            // A bare newline: keeps proxies from timing out, and lets a closed connection
            // be noticed.
            Some((Ok(Bytes::from_static(b"\n")), (None, query, written, store)))
        },
    );
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

fn ndjson(lines: &[LogLine]) -> Bytes {
    let mut out = Vec::new();
    for l in lines {
        if serde_json::to_writer(&mut out, l).is_ok() {
            out.push(b'\n');
        }
    }
    Bytes::from(out)
}
