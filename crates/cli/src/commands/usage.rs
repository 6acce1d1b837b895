use crate::client::{ApiArgs, Client};
use crate::output::{print_json, table};
use anyhow::{Context, Result};
use reqwest::Method;
use std::process::ExitCode;

/// Usage over a period: invocations, errors, billed time, GB-seconds, cold starts.
#[derive(clap::Args)]
pub struct Usage {
    /// How far back, e.g. `24h`, `7d`, `30d`.
    #[arg(long, default_value = "30d")]
    pub since: String,
    /// Group rows by function, day or trigger.
    #[arg(long, value_parser = ["function", "day", "trigger"], default_value = "function")]
    pub by: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

impl Usage {
    pub async fn execute(self) -> Result<ExitCode> {
        humantime::parse_duration(&self.since).with_context(|| {
            format!(
                "--since `{}` is not a duration: write e.g. `24h`, `7d` or `30d`",
                self.since
            )
        })?;
        let client = Client::new(&self.api)?;
        let resp = client
            .send(
                client
                    .request(Method::GET, "/v1/usage")
                    .query(&[("since", self.since.as_str()), ("by", self.by.as_str())]),
            )
            .await?;
        let report: serde_json::Value = resp.json().await.context("reading the API's answer")?;
        if self.json {
            print_json(&report)?;
            return Ok(ExitCode::SUCCESS);
        }
        let row = |r: &serde_json::Value| {
            vec![
                r["key"].as_str().unwrap_or("").to_string(),
                r["invocations"].to_string(),
                r["errors"].to_string(),
                format!("{:.3}", r["billed_ms"].as_f64().unwrap_or(0.0) / 1000.0),
                format!("{:.4}", r["gb_seconds"].as_f64().unwrap_or(0.0)),
                format!("{:.3}", r["cpu_ms"].as_f64().unwrap_or(0.0) / 1000.0),
                r["cold_starts"].to_string(),
                r["peak_concurrency"].to_string(),
            ]
        };
        let mut rows: Vec<Vec<String>> = report["rows"]
            .as_array()
            .map(|a| a.iter().map(row).collect())
            .unwrap_or_default();
        rows.push(row(&report["total"]));
        table(
            &[
                &self.by.to_uppercase(),
                "INVOCATIONS",
                "ERRORS",
                "BILLED S",
                "GB-S",
                "CPU S",
                "COLD",
                "PEAK",
            ],
            &rows,
        );
        Ok(ExitCode::SUCCESS)
    }
}
