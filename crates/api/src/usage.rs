use crate::ApiState;
use crate::error::{ApiError, blocking};
use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};
use wisp_core::Bill;
use wisp_store::{UsageGroup, UsageRow};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn since_ms(since: Option<&str>) -> Result<i64, ApiError> {
    let s = since.unwrap_or("30d");
    humantime::parse_duration(s)
        .map(|d| now_ms() - d.as_millis() as i64)
        .map_err(|_| {
            ApiError::bad_request(format!(
                "since `{s}` is not a duration: write e.g. `24h`, `7d` or `30d`"
            ))
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    /// How far back, e.g. `30d` (default), `24h`.
    since: Option<String>,
    /// Group by `function` (default), `day` or `trigger`.
    by: Option<UsageGroup>,
}

#[derive(Serialize)]
pub struct UsageReport {
    since_ms: i64,
    until_ms: i64,
    by: UsageGroup,
    rows: Vec<UsageRow>,
    total: UsageRow,
}

fn total(rows: &[UsageRow]) -> UsageRow {
    UsageRow {
        key: "total".into(),
        invocations: rows.iter().map(|r| r.invocations).sum(),
        errors: rows.iter().map(|r| r.errors).sum(),
        billed_ms: rows.iter().map(|r| r.billed_ms).sum(),
        gb_seconds: rows.iter().map(|r| r.gb_seconds).sum(),
        duration_ms: rows.iter().map(|r| r.duration_ms).sum(),
        cold_starts: rows.iter().map(|r| r.cold_starts).sum(),
        peak_concurrency: rows.iter().map(|r| r.peak_concurrency).max().unwrap_or(0),
        cpu_ms: rows.iter().map(|r| r.cpu_ms).sum(),
    }
}

async fn rows(state: &ApiState, since: i64, by: UsageGroup) -> Result<Vec<UsageRow>, ApiError> {
    // Records are written in batches: include everything accepted before this call.
    state.invoker.logs().flush().await;
    let store = state.invoker.store().clone();
    blocking(move || Ok(store.usage(since, by)?)).await
}

/// Usage over a period: invocations, billed milliseconds, GB-seconds, cold starts.
pub async fn usage(
    State(state): State<ApiState>,
    Query(p): Query<UsageParams>,
) -> Result<Json<UsageReport>, ApiError> {
    let since = since_ms(p.since.as_deref())?;
    let by = p.by.unwrap_or(UsageGroup::Function);
    let rows = rows(&state, since, by).await?;
    Ok(Json(UsageReport {
        since_ms: since,
        until_ms: now_ms(),
        total: total(&rows),
        rows,
        by,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostParams {
    since: Option<String>,
    /// Apply the monthly free tier (default true).
    free_tier: Option<bool>,
}

#[derive(Serialize)]
pub struct CostReport {
    since_ms: i64,
    until_ms: i64,
    prices: wisp_core::PriceSheet,
    free_tier: bool,
    bill: Bill,
}

/// The bill for a period under the node's price sheet, against always-on servers sized to
/// the observed peak concurrency.
pub async fn cost(
    State(state): State<ApiState>,
    Query(p): Query<CostParams>,
) -> Result<Json<CostReport>, ApiError> {
    let since = since_ms(p.since.as_deref())?;
    let until = now_ms();
    let rows = rows(&state, since, UsageGroup::Function).await?;
    let t = total(&rows);
    let free_tier = p.free_tier.unwrap_or(true);
    let hours = (until - since) as f64 / 3_600_000.0;
    let bill = wisp_core::bill(
        &state.prices,
        t.invocations,
        t.gb_seconds,
        t.peak_concurrency,
        hours,
        free_tier,
    );
    Ok(Json(CostReport {
        since_ms: since,
        until_ms: until,
        prices: state.prices,
        free_tier,
        bill,
    }))
}
