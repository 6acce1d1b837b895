use crate::client::{ApiArgs, Client, ensure_name};
use crate::output::{print_json, table, timestamp};
use anyhow::Result;
use std::process::ExitCode;

/// List the versions of a function; `*` marks the one serving traffic.
#[derive(clap::Args)]
pub struct Versions {
    /// The function's name.
    pub name: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

impl Versions {
    pub async fn execute(self) -> Result<ExitCode> {
        ensure_name(&self.name)?;
        let client = Client::new(&self.api)?;
        let vs: Vec<serde_json::Value> = client
            .get(&format!("/v1/functions/{}/versions", self.name))
            .await?;
        if self.json {
            print_json(&vs)?;
            return Ok(ExitCode::SUCCESS);
        }
        let rows: Vec<Vec<String>> = vs
            .iter()
            .map(|v| {
                vec![
                    format!(
                        "{}{}",
                        v["number"],
                        if v["active"] == true { " *" } else { "" }
                    ),
                    timestamp(v["created_at_ms"].as_i64().unwrap_or(0)),
                    v["artifact"]
                        .as_str()
                        .unwrap_or("")
                        .chars()
                        .take(12)
                        .collect(),
                    v["routes"]
                        .as_array()
                        .map(|r| {
                            r.iter()
                                .filter_map(|x| x.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .unwrap_or_default(),
                    changes(v),
                ]
            })
            .collect();
        table(
            &["VERSION", "CREATED", "ARTIFACT", "ROUTES", "CHANGES"],
            &rows,
        );
        Ok(ExitCode::SUCCESS)
    }
}

/// The CHANGES cell: what the version changed against the one before it.
fn changes(v: &serde_json::Value) -> String {
    match v["changes"].as_array() {
        _ if v["number"] == 1 => "first version".into(),
        Some(c) if c.is_empty() => "nothing (same spec)".into(),
        Some(c) => c
            .iter()
            .filter_map(|x| x.as_str())
            .collect::<Vec<_>>()
            .join("; "),
        None => String::new(),
    }
}
