use crate::client::{ApiArgs, Client};
use crate::output::{print_json, table};
use anyhow::Result;
use std::process::ExitCode;

/// List deployed functions with their active version, runtime, scaling and triggers
/// (routes, webhooks, schedules, S3 and queues; `wisp describe NAME` shows each in full).
#[derive(clap::Args)]
pub struct Ls {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

impl Ls {
    pub async fn execute(self) -> Result<ExitCode> {
        let client = Client::new(&self.api)?;
        let fs: Vec<serde_json::Value> = client.get("/v1/functions").await?;
        if self.json {
            print_json(&fs)?;
            return Ok(ExitCode::SUCCESS);
        }
        if fs.is_empty() {
            eprintln!("no functions deployed: `wisp deploy` deploys the functions of a wisp.yaml");
            return Ok(ExitCode::SUCCESS);
        }
        let rows: Vec<Vec<String>> = fs
            .iter()
            .map(|f| {
                let sc = &f["scaling"];
                let instances = match (sc["instances"].as_u64(), sc["idle"].as_u64()) {
                    (Some(n), Some(idle)) => format!("{n} ({idle} idle)"),
                    _ => "-".into(),
                };
                let mut limit = sc["max_concurrency"].to_string();
                if sc["reserved_concurrency"].as_u64().unwrap_or(0) > 0 {
                    limit.push_str(" reserved");
                }
                if let Some(p) = sc["provisioned_concurrency"].as_u64().filter(|p| *p > 0) {
                    limit.push_str(&format!(", {p} provisioned"));
                }
                vec![
                    f["name"].as_str().unwrap_or("").to_string(),
                    f["app"].as_str().unwrap_or("").to_string(),
                    format!("{}/{}", f["version"], f["latest_version"]),
                    f["runtime"].as_str().unwrap_or("wasm").to_string(),
                    format!("{}/{limit}", sc["running"].as_u64().unwrap_or(0)),
                    instances,
                    format!(
                        "{}/{}",
                        sc["last_hour"]["cold_starts"].as_u64().unwrap_or(0),
                        sc["last_hour"]["throttles"].as_u64().unwrap_or(0)
                    ),
                    super::describe::trigger_summary(f),
                ]
            })
            .collect();
        table(
            &[
                "NAME",
                "APP",
                "VERSION",
                "RUNTIME",
                "RUNNING/MAX",
                "INSTANCES",
                "COLD/THROTTLED (1H)",
                "TRIGGERS",
            ],
            &rows,
        );
        Ok(ExitCode::SUCCESS)
    }
}
