use crate::build::component_bytes;
use crate::bundle::bundle_bytes;
use crate::client::{ApiArgs, Client};
use crate::output::{print_json, progress};
use anyhow::{Context, Result};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use wisp_core::FunctionSpec;

/// Build, upload and deploy the functions of a wisp.yaml. Unchanged functions are not
/// re-uploaded; changed ones become a new version, and traffic switches atomically.
#[derive(clap::Args)]
pub struct Deploy {
    /// The manifest, or a directory that contains `wisp.yaml`.
    #[arg(default_value = "wisp.yaml")]
    pub manifest: PathBuf,
    /// Keep functions of the app that are no longer in the manifest (default: remove them).
    #[arg(long)]
    pub keep_missing: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Serialize)]
struct DeployRequest<'a> {
    app: &'a str,
    functions: &'a [FunctionSpec],
    prune: bool,
}

#[derive(Deserialize, Serialize)]
pub struct DeployResult {
    pub app: String,
    pub changes: Vec<serde_json::Value>,
}

impl Deploy {
    pub async fn execute(self) -> Result<ExitCode> {
        let client = Client::new(&self.api)?;
        let result = deploy(&client, &self.manifest, !self.keep_missing).await?;
        if self.json {
            print_json(&result)?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

pub fn manifest_path(p: &Path) -> PathBuf {
    if p.is_dir() {
        p.join("wisp.yaml")
    } else {
        p.to_path_buf()
    }
}

/// The error for a directory (or path) without its wisp.yaml: how to make one.
pub fn missing_manifest(path: &Path) -> String {
    format!(
        "{} not found: a directory to deploy needs a wisp.yaml naming its functions. \
             Start one with `wisp new NAME --template rust|python|node|js-wasm|python-wasm` \
             (`wisp new --list` describes them), or write it by hand (docs/manifest.md; \
             `app: NAME` and `functions: {{NAME: {{source: ., routes: [GET /x]}}}}` are enough); \
             or pass the manifest's path",
        path.display()
    )
}

/// Deploys one manifest through the API; progress goes to stderr.
pub async fn deploy(client: &Client, manifest: &Path, prune: bool) -> Result<DeployResult> {
    let started = Instant::now();
    // The functions as deployed now, to keep what `wisp scale` set and to say what this
    // deploy changes. Asked first, so a wrong token or address fails before any build.
    let previous: std::collections::HashMap<String, serde_json::Value> = client
        .get::<Vec<serde_json::Value>>("/v1/functions")
        .await?
        .into_iter()
        .filter_map(|f| Some((f["name"].as_str()?.to_string(), f)))
        .collect();
    let path = manifest_path(manifest);
    if !path.exists() {
        anyhow::bail!("{}", missing_manifest(&path));
    }
    let manifest = wisp_manifest::load(&path).map_err(anyhow::Error::msg)?;
    let mut specs = Vec::new();
    for f in &manifest.functions {
        let name = f.name.to_string();
        let source = f.source.clone();
        let (bytes, content_type) = match &f.native {
            Some(native) => {
                progress(format!(
                    "{}: packaging {} ({})",
                    f.name, f.source, native.runtime
                ));
                let native = native.clone();
                let dir = source.path().to_path_buf();
                let bytes = tokio::task::spawn_blocking(move || bundle_bytes(&name, &dir, &native))
                    .await
                    .context("packaging task")??;
                (bytes, "application/gzip")
            }
            None => {
                let prebuilt = f.source.path().extension().is_some_and(|e| e == "wasm");
                match &f.build {
                    Some(b) => progress(format!(
                        "{}: building with `{}` in {}",
                        f.name,
                        b.command,
                        f.source.path().display()
                    )),
                    None if prebuilt => progress(format!("{}: reading {}", f.name, f.source)),
                    None => progress(format!("{}: building from {}", f.name, f.source)),
                }
                let build = f.build.clone();
                let wasm = tokio::task::spawn_blocking(move || {
                    component_bytes(&name, &source, build.as_ref())
                })
                .await
                .context("build task")??;
                (wasm, "application/wasm")
            }
        };
        let sha256 = wisp_store::ArtifactDir::sha256(&bytes);
        let head = client
            .request(Method::HEAD, &format!("/v1/artifacts/{sha256}"))
            .send()
            .await;
        let present = matches!(head, Ok(r) if r.status() == StatusCode::OK);
        if present {
            progress(format!(
                "{}: artifact {} already uploaded",
                f.name,
                &sha256[..12]
            ));
        } else {
            let what = if f.native.is_some() {
                "uploading"
            } else {
                "uploading and compiling"
            };
            progress(format!(
                "{}: {what} {} ({} KiB)",
                f.name,
                &sha256[..12],
                bytes.len().div_ceil(1024)
            ));
            client
                .send(
                    client
                        .request(Method::PUT, &format!("/v1/artifacts/{sha256}"))
                        .header("content-type", content_type)
                        .body(bytes),
                )
                .await
                .with_context(|| format!("function `{}` ({})", f.name, f.source))?;
        }
        let mut limits = f.limits;
        if let Some(d) = previous.get(f.name.as_str()).map(|d| &d["limits"]) {
            let kept = keep_scaling(&mut limits, f.scaling_set, d);
            if !kept.is_empty() {
                progress(format!(
                    "{}: keeps {} (set by `wisp scale`; give them under `limits:` to change them)",
                    f.name,
                    kept.join(", ")
                ));
            }
        }
        specs.push(FunctionSpec {
            name: f.name.clone(),
            artifact: sha256,
            native: f.native.clone(),
            routes: f.routes.clone(),
            env: f.env.clone(),
            limits,
            instance_reuse: f.instance_reuse,
            webhook: f.webhook.clone(),
            schedules: f.schedules.clone(),
            object_triggers: f.object_triggers.clone(),
            async_config: f.async_config.clone(),
            queue: f.queue.clone(),
            outbound: f.outbound.clone(),
            object_buckets: f.object_buckets.clone(),
        });
    }
    let result: DeployResult = client
        .post(
            "/v1/deploy",
            &DeployRequest {
                app: &manifest.app,
                functions: &specs,
                prune,
            },
        )
        .await
        .with_context(|| format!("deploying app `{}` from {}", manifest.app, path.display()))?;
    for c in &result.changes {
        let f = c["function"].as_str().unwrap_or("?");
        match c["action"].as_str() {
            Some("created") => {
                // The node compares the stored specs (env by name); an older node does not
                // say, and then the client's view of the deployed function is compared.
                let changed: Vec<String> = match c["changed"].as_array() {
                    Some(list) => list
                        .iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect(),
                    None => specs
                        .iter()
                        .find(|s| s.name.as_str() == f)
                        .zip(previous.get(f))
                        .map(|(spec, old)| {
                            what_changed(old, spec)
                                .into_iter()
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default(),
                };
                if changed.is_empty() {
                    progress(format!("{f}: version {} is live", c["version"]));
                } else {
                    progress(format!(
                        "{f}: version {} is live (changed: {})",
                        c["version"],
                        changed.join(", ")
                    ));
                }
            }
            Some("unchanged") => progress(format!("{f}: unchanged (version {})", c["version"])),
            Some("removed") => progress(format!("{f}: removed (no longer in the manifest)")),
            _ => progress(format!("{f}: {c}")),
        }
    }
    progress(format!(
        "deployed app `{}` in {:.2}s",
        manifest.app,
        started.elapsed().as_secs_f64()
    ));
    Ok(result)
}

/// Takes the scaling limits the manifest leaves out from the deployed function's
/// `limits` (what `wisp scale` set), so a deploy does not undo them. Returns what it kept
/// that differs from the defaults, as `name value`.
fn keep_scaling(
    limits: &mut wisp_core::Limits,
    set: wisp_manifest::ScalingSet,
    deployed: &serde_json::Value,
) -> Vec<String> {
    let defaults = wisp_core::Limits::default();
    let mut kept = Vec::new();
    let get = |k: &str| deployed.get(k).and_then(|v| v.as_u64()).map(|v| v as u32);
    for (name, is_set, slot, default) in [
        (
            "max_concurrency",
            set.max_concurrency,
            &mut limits.max_concurrency,
            defaults.max_concurrency,
        ),
        (
            "reserved_concurrency",
            set.reserved_concurrency,
            &mut limits.reserved_concurrency,
            defaults.reserved_concurrency,
        ),
        (
            "provisioned_concurrency",
            set.provisioned_concurrency,
            &mut limits.provisioned_concurrency,
            defaults.provisioned_concurrency,
        ),
    ] {
        if is_set {
            continue;
        }
        if let Some(v) = get(name) {
            *slot = v;
            if v != default {
                kept.push(format!("{name} {v}"));
            }
        }
    }
    kept
}

/// What a new version changes against the deployed function (as `GET /v1/functions` lists it).
fn what_changed(old: &serde_json::Value, new: &FunctionSpec) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old["artifact"].as_str() != Some(new.artifact.as_str()) {
        changed.push("code");
    }
    if old["routes"] != serde_json::to_value(&new.routes).unwrap_or_default() {
        changed.push("routes");
    }
    if old["limits"] != serde_json::to_value(new.limits).unwrap_or_default() {
        changed.push("limits");
    }
    let names: Vec<&String> = new.env.keys().collect();
    if old["env"] != serde_json::to_value(names).unwrap_or_default() {
        changed.push("env names");
    }
    if changed.is_empty() {
        // The API shows env names only: a changed value (or trigger) lands here.
        changed.push("env values or triggers");
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deploy_keeps_scaling_the_manifest_does_not_set() {
        let deployed = serde_json::json!({"max_concurrency": 50, "reserved_concurrency": 0, "provisioned_concurrency": 2});
        let mut limits = wisp_core::Limits::default();
        let kept = keep_scaling(&mut limits, wisp_manifest::ScalingSet::default(), &deployed);
        assert_eq!(limits.max_concurrency, 50);
        assert_eq!(limits.provisioned_concurrency, 2);
        assert_eq!(kept, ["max_concurrency 50", "provisioned_concurrency 2"]);
        // What the manifest sets wins.
        let mut limits = wisp_core::Limits {
            max_concurrency: 7,
            ..Default::default()
        };
        let set = wisp_manifest::ScalingSet {
            max_concurrency: true,
            ..Default::default()
        };
        let kept = keep_scaling(&mut limits, set, &deployed);
        assert_eq!(limits.max_concurrency, 7);
        assert_eq!(kept, ["provisioned_concurrency 2"]);
    }
}
