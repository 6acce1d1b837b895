use crate::ApiState;
use crate::error::{ApiError, blocking};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use wisp_core::{FunctionName, FunctionSpec, RouteError, RouteTable, is_sha256_hex};
use wisp_invoker::RegistryError;
use wisp_store::{ArtifactDir, DeployChange};

fn check_sha(sha256: &str) -> Result<(), ApiError> {
    if is_sha256_hex(sha256) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "`{sha256}` is not a sha256 digest: use 64 lowercase hex characters"
        )))
    }
}

pub async fn head_artifact(
    State(state): State<ApiState>,
    Path(sha256): Path<String>,
) -> Result<StatusCode, ApiError> {
    check_sha(&sha256)?;
    let store = state.invoker.store().clone();
    let found = blocking(move || Ok(store.has_artifact(&sha256)?)).await?;
    Ok(if found {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    })
}

#[derive(Serialize)]
pub struct ArtifactCreated {
    sha256: String,
    size: usize,
}

/// Uploads a component: it must hash to the digest in the path, be a `wasi:http/proxy`
/// component, and compile. It is compiled ahead of time here, so a deploy never compiles.
pub async fn put_artifact(
    State(state): State<ApiState>,
    Path(sha256): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<ArtifactCreated>), ApiError> {
    check_sha(&sha256)?;
    let actual = ArtifactDir::sha256(&body);
    if actual != sha256 {
        return Err(ApiError::bad_request(format!(
            "the upload's sha256 is {actual}, not {sha256}: the upload was truncated or the digest is wrong"
        )));
    }
    let size = body.len();
    state
        .invoker
        .add_artifact(body)
        .await
        .map_err(|e| match e {
            RegistryError::Compile { source, .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, source.to_string())
            }
            RegistryError::Bundle(message) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
            }
            other => ApiError::internal(other),
        })?;
    Ok((StatusCode::CREATED, Json(ArtifactCreated { sha256, size })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    pub app: String,
    pub functions: Vec<FunctionSpec>,
    /// Remove the app's functions that are not in `functions` (default true).
    #[serde(default = "yes")]
    pub prune: bool,
}

fn yes() -> bool {
    true
}

#[derive(Serialize)]
pub struct DeployResponse {
    app: String,
    changes: Vec<DeployChangeInfo>,
}

/// One function's outcome, and for a new version what it changed against the version
/// that served before (`wisp_core::spec_changes`: env names, never values).
#[derive(Serialize)]
pub struct DeployChangeInfo {
    #[serde(flatten)]
    change: DeployChange,
    #[serde(skip_serializing_if = "Option::is_none")]
    changed: Option<Vec<String>>,
}

/// The most a function's env may hold (names and values together), Lambda's 4 KB.
pub const MAX_ENV_BYTES: usize = 4096;

/// Checks a deploy against what is already deployed: names, limits, artifacts, and that
/// no route is served twice across all apps.
pub fn validate(
    req: &DeployRequest,
    deployed: &[wisp_core::Function],
    has_artifact: impl Fn(&str) -> bool,
) -> Result<(), ApiError> {
    FunctionName::new(req.app.clone())
        .map_err(|e| ApiError::bad_request(format!("app name: {e}")))?;
    if req.functions.is_empty() {
        return Err(ApiError::bad_request(
            "a deploy needs at least one function (to remove an app's functions use `wisp rm`)",
        ));
    }
    let mut names = BTreeSet::new();
    for f in &req.functions {
        if !names.insert(f.name.as_str()) {
            return Err(ApiError::bad_request(format!(
                "function `{}` appears twice in the deploy",
                f.name
            )));
        }
        f.limits
            .validate()
            .map_err(|e| ApiError::bad_request(format!("function `{}`: {e}", f.name)))?;
        if !is_sha256_hex(&f.artifact) || !has_artifact(&f.artifact) {
            return Err(ApiError::bad_request(format!(
                "function `{}`: artifact {} has not been uploaded; PUT it to /v1/artifacts/{{sha256}} first",
                f.name, f.artifact
            )));
        }
        if let Some(a) = &f.async_config {
            if a.max_retries > 2 || !(60..=21_600).contains(&a.max_event_age_s) {
                return Err(ApiError::bad_request(format!(
                    "function `{}`: async: max_retries must be 0 to 2 and max_event_age_s 60 to 21600",
                    f.name
                )));
            }
            for d in a.on_success.iter().chain(&a.on_failure) {
                check_destination(req, deployed, &f.name, d)?;
            }
        }
        for sc in &f.schedules {
            let tz = if sc.timezone.is_empty() {
                "UTC"
            } else {
                sc.timezone.as_str()
            };
            wisp_events::schedule::Schedule::parse(&sc.expression, tz).map_err(|e| {
                ApiError::bad_request(format!("function `{}`: schedule: {e}", f.name))
            })?;
        }
        if let Some(hook) = &f.webhook
            && !f.env.contains_key(&hook.secret_env)
        {
            return Err(ApiError::bad_request(format!(
                "function `{}`: webhook secret_env `{}` is not one of its env vars",
                f.name, hook.secret_env
            )));
        }
        let env_bytes: usize = f.env.iter().map(|(k, v)| k.len() + v.len()).sum();
        if env_bytes > MAX_ENV_BYTES {
            return Err(ApiError::bad_request(format!(
                "function `{}`: its env is {env_bytes} bytes (names and values); at most {MAX_ENV_BYTES} are allowed, as on Lambda: keep large values in a file of the code or in object storage",
                f.name
            )));
        }
        for k in f.env.keys() {
            let ok = !k.is_empty()
                && k.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(ApiError::bad_request(format!(
                    "function `{}`: env var name `{k}` is not valid: use letters, digits and `_`",
                    f.name
                )));
            }
        }
    }
    // Routes that stay: every deployed function this deploy neither replaces nor prunes.
    let mut table: RouteTable<String> = RouteTable::new();
    for f in deployed {
        let replaced = names.contains(f.name.as_str());
        let pruned = req.prune && f.app == req.app;
        if replaced || pruned {
            continue;
        }
        for r in &f.active.routes {
            let _ = table.insert(
                r.clone(),
                format!("function `{}` of app `{}`", f.name, f.app),
            );
        }
    }
    for f in &req.functions {
        for r in &f.routes {
            if let Err(e) = table.insert(r.clone(), format!("function `{}`", f.name)) {
                let owner = table
                    .iter()
                    .find(|(existing, _)| {
                        existing.method == r.method
                            && matches!(e, RouteError::Duplicate(_) | RouteError::Conflict(..))
                            && same_shape(existing, r)
                    })
                    .map(|(_, o)| o.clone())
                    .unwrap_or_else(|| "another route".into());
                return Err(ApiError::conflict(format!(
                    "function `{}`: {e}; it is already served by {owner}",
                    f.name
                )));
            }
        }
    }
    Ok(())
}

/// An async destination: a queue's name must be valid (the deploy creates a missing
/// queue); a function must exist after this deploy, as Lambda requires of destinations.
fn check_destination(
    req: &DeployRequest,
    deployed: &[wisp_core::Function],
    function: &FunctionName,
    destination: &str,
) -> Result<(), ApiError> {
    let bad =
        |m: String| ApiError::bad_request(format!("function `{function}`: async destination: {m}"));
    if let Some(queue) = wisp_core::AsyncConfig::destination_queue(destination) {
        return wisp_events::check_queue_name(queue).map_err(|e| bad(e.to_string()));
    }
    let name = FunctionName::new(destination).map_err(|e| bad(e.to_string()))?;
    let in_deploy = req.functions.iter().any(|f| f.name == name);
    let stays = deployed
        .iter()
        .any(|f| f.name == name && !(req.prune && f.app == req.app));
    if in_deploy || stays {
        Ok(())
    } else {
        Err(bad(format!(
            "there is no function `{name}`: deploy it first (or in the same manifest), or send the records to a queue with `queue:NAME`"
        )))
    }
}

/// The queues this deploy names as async destinations, created if missing.
async fn ensure_destination_queues(state: &ApiState, req: &DeployRequest) -> Result<(), ApiError> {
    let Some(events) = &state.events else {
        return Ok(());
    };
    let queues: BTreeSet<String> = req
        .functions
        .iter()
        .filter_map(|f| f.async_config.as_ref())
        .flat_map(|a| a.on_success.iter().chain(&a.on_failure))
        .filter_map(|d| wisp_core::AsyncConfig::destination_queue(d).map(str::to_string))
        .collect();
    for queue in &queues {
        if events
            .ensure_queue(queue)
            .await
            .map_err(ApiError::internal)?
        {
            tracing::info!(queue, "created the queue named as an async destination");
        }
    }
    Ok(())
}

/// Reserved concurrency is set aside from the node's memory budget: all of it, after this
/// deploy, must fit.
pub fn check_reservations(
    req: &DeployRequest,
    deployed: &[wisp_core::Function],
    budget_mb: u64,
) -> Result<(), ApiError> {
    // Reserved concurrency is set aside; provisioned instances hold their memory even
    // while idle. Either way that much of the budget is taken.
    let held = |spec: &FunctionSpec| {
        u64::from(
            spec.limits
                .reserved_concurrency
                .max(spec.limits.provisioned_concurrency),
        ) * (spec.limits.memory_bytes / (1024 * 1024))
    };
    let staying = deployed.iter().filter(|f| {
        let replaced = req.functions.iter().any(|n| n.name == f.name);
        let pruned = req.prune && f.app == req.app;
        !replaced && !pruned
    });
    let total: u64 =
        req.functions.iter().map(held).sum::<u64>() + staying.map(|f| held(&f.active)).sum::<u64>();
    if total > budget_mb {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "reserved and provisioned concurrency would hold {total} MiB (the larger of reserved_concurrency and provisioned_concurrency × memory, over all functions), more than the node's memory budget of {budget_mb} MiB: lower `limits.reserved_concurrency` / `limits.provisioned_concurrency` or start the node with a larger `--memory-budget`"
            ),
        ));
    }
    Ok(())
}

/// A function that cannot serve on this node (a runtime it lacks, a bundle without its
/// `bootstrap`) is the deploy's fault (422); anything else is the node's (500).
pub fn prepare_error(e: RegistryError) -> ApiError {
    match e {
        RegistryError::Native { .. } | RegistryError::Bundle(_) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
        other => ApiError::internal(other),
    }
}

fn same_shape(a: &wisp_core::RouteSpec, b: &wisp_core::RouteSpec) -> bool {
    let mut t = RouteTable::new();
    t.insert(a.clone(), ()).is_ok() && t.insert(b.clone(), ()).is_err()
}

pub async fn deploy(
    State(state): State<ApiState>,
    Json(req): Json<DeployRequest>,
) -> Result<Json<DeployResponse>, ApiError> {
    let _guard = state.change_lock.lock().await;
    let store = state.invoker.store().clone();
    let budget_mb = state.invoker.capacity().budget_mb();
    let (req, before) = blocking(move || {
        let deployed = store.functions()?;
        validate(&req, &deployed, |sha| {
            store.has_artifact(sha).unwrap_or(false)
        })?;
        check_reservations(&req, &deployed, budget_mb)?;
        let before: std::collections::HashMap<String, wisp_core::FunctionSpec> = deployed
            .into_iter()
            .map(|f| (f.name.to_string(), f.active))
            .collect();
        Ok((req, before))
    })
    .await?;
    // Every function must be able to serve before anything is committed.
    state
        .invoker
        .prepare(&req.functions)
        .await
        .map_err(prepare_error)?;
    ensure_destination_queues(&state, &req).await?;
    let store = state.invoker.store().clone();
    let (req, changes) = blocking(move || {
        let changes = store.deploy(&req.app, &req.functions, req.prune)?;
        Ok((req, changes))
    })
    .await?;
    state.invoker.reload().await.map_err(ApiError::internal)?;
    tracing::info!(app = %req.app, ?changes, "deployed");
    let changes = changes
        .into_iter()
        .map(|change| {
            let changed = match &change {
                DeployChange::Created { function, .. } => before.get(function).and_then(|old| {
                    let new = req.functions.iter().find(|f| f.name.as_str() == function)?;
                    Some(wisp_core::spec_changes(old, new))
                }),
                _ => None,
            };
            DeployChangeInfo { change, changed }
        })
        .collect();
    Ok(Json(DeployResponse {
        app: req.app,
        changes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(functions: serde_json::Value) -> DeployRequest {
        serde_json::from_value(serde_json::json!({"app": "shop", "functions": functions})).unwrap()
    }

    #[test]
    fn an_env_past_4_kb_is_refused_at_deploy() {
        let artifact = "a".repeat(64);
        let fits = req(serde_json::json!([{
            "name": "f", "artifact": artifact, "env": {"BIG": "x".repeat(4000)}
        }]));
        validate(&fits, &[], |_| true).unwrap();
        let huge = req(serde_json::json!([{
            "name": "f", "artifact": artifact, "env": {"BIG": "x".repeat(200_000)}
        }]));
        let e = validate(&huge, &[], |_| true).unwrap_err();
        let msg = format!("{e:?}");
        assert!(msg.contains("200003 bytes"), "{msg}");
        assert!(msg.contains("at most 4096"), "{msg}");
    }

    #[test]
    fn provisioned_instances_count_against_the_memory_budget() {
        let artifact = "a".repeat(64);
        let many = req(serde_json::json!([{
            "name": "f", "artifact": artifact,
            "limits": {"memory_bytes": 128 * 1024 * 1024, "provisioned_concurrency": 60, "max_concurrency": 100}
        }]));
        let e = check_reservations(&many, &[], 1024).unwrap_err();
        assert!(format!("{e:?}").contains("7680 MiB"), "{e:?}");
        let few = req(serde_json::json!([{
            "name": "f", "artifact": artifact,
            "limits": {"memory_bytes": 128 * 1024 * 1024, "provisioned_concurrency": 4}
        }]));
        check_reservations(&few, &[], 1024).unwrap();
    }
}
