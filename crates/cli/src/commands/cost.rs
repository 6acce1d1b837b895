use crate::client::{ApiArgs, Client};
use crate::output::print_json;
use anyhow::{Context, Result};
use reqwest::Method;
use std::process::ExitCode;

/// The bill for a period under the node's price sheet, and what always-on servers sized to
/// the observed peak concurrency would have cost instead.
#[derive(clap::Args)]
pub struct Cost {
    /// How far back, e.g. `24h`, `7d`, `30d`.
    #[arg(long, default_value = "30d")]
    pub since: String,
    /// Price without the monthly free tier.
    #[arg(long)]
    pub no_free_tier: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

impl Cost {
    pub async fn execute(self) -> Result<ExitCode> {
        humantime::parse_duration(&self.since).with_context(|| {
            format!(
                "--since `{}` is not a duration: write e.g. `24h`, `7d` or `30d`",
                self.since
            )
        })?;
        let client = Client::new(&self.api)?;
        let free = if self.no_free_tier { "false" } else { "true" };
        let resp = client
            .send(
                client
                    .request(Method::GET, "/v1/cost")
                    .query(&[("since", self.since.as_str()), ("free_tier", free)]),
            )
            .await?;
        let r: serde_json::Value = resp.json().await.context("reading the API's answer")?;
        if self.json {
            print_json(&r)?;
            return Ok(ExitCode::SUCCESS);
        }
        let b = &r["bill"];
        let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
        println!(
            "period:        last {} ({:.1} hours)",
            self.since,
            f(&b["hours"])
        );
        println!(
            "requests:      {} → ${:.6}{}",
            b["requests"],
            f(&b["request_cost"]),
            if self.no_free_tier {
                ""
            } else {
                " (after the free tier)"
            }
        );
        println!(
            "compute:       {:.4} GB-s → ${:.6}",
            f(&b["gb_seconds"]),
            f(&b["compute_cost"])
        );
        println!("total:         ${:.6}", f(&b["total"]));
        println!(
            "always-on:     {} server(s) for a peak of {} concurrent → ${:.2}",
            b["servers"],
            b["peak_concurrency"],
            f(&b["always_on_cost"])
        );
        if f(&b["always_on_cost"]) > 0.0 {
            println!("pay-per-use is {:.1}% cheaper", f(&b["savings"]) * 100.0);
        }
        Ok(ExitCode::SUCCESS)
    }
}
