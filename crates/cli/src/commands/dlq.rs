use crate::client::{ApiArgs, Client, ensure_name};
use crate::output::{print_json, table};
use anyhow::Result;
use std::process::ExitCode;

/// A function's dead-letter queue: asynchronous events that failed all their attempts.
#[derive(clap::Args)]
pub struct Dlq {
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(clap::Subcommand)]
pub enum DlqCommand {
    /// List a function's dead-lettered events.
    Ls {
        name: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show one dead-lettered event, with its payload and last error.
    Show {
        event_id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Run dead-lettered events again, with fresh retries (all of them, or --id ...).
    Redrive {
        name: String,
        /// Only this event (repeatable).
        #[arg(long = "id")]
        ids: Vec<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// The state of an asynchronous invocation.
#[derive(clap::Args)]
pub struct Events {
    /// The event id `wisp invoke --async` printed.
    pub event_id: String,
    #[command(flatten)]
    pub api: ApiArgs,
}

impl Events {
    pub async fn execute(self) -> Result<ExitCode> {
        let client = Client::new(&self.api)?;
        let v: serde_json::Value = client.get(&format!("/v1/events/{}", self.event_id)).await?;
        print_json(&v)?;
        Ok(ExitCode::SUCCESS)
    }
}

impl Dlq {
    pub async fn execute(self) -> Result<ExitCode> {
        match self.command {
            DlqCommand::Ls { name, json, api } => {
                ensure_name(&name)?;
                let client = Client::new(&api)?;
                let list: Vec<serde_json::Value> =
                    client.get(&format!("/v1/functions/{name}/dlq")).await?;
                if json {
                    print_json(&list)?;
                } else if list.is_empty() {
                    eprintln!("the dead-letter queue of `{name}` is empty");
                } else {
                    let rows: Vec<Vec<String>> = list
                        .iter()
                        .map(|d| {
                            vec![
                                d["event_id"].as_str().unwrap_or("").to_string(),
                                d["dead_at"].as_str().unwrap_or("").to_string(),
                                d["attempts"].to_string(),
                                d["reason"].as_str().unwrap_or("").to_string(),
                                d["error"].as_str().unwrap_or("-").to_string(),
                            ]
                        })
                        .collect();
                    table(
                        &["EVENT", "DEAD AT", "ATTEMPTS", "REASON", "LAST ERROR"],
                        &rows,
                    );
                }
            }
            DlqCommand::Show { event_id, api } => {
                let client = Client::new(&api)?;
                let v: serde_json::Value = client.get(&format!("/v1/events/{event_id}")).await?;
                print_json(&v)?;
            }
            DlqCommand::Redrive { name, ids, api } => {
                ensure_name(&name)?;
                let client = Client::new(&api)?;
                let body = if ids.is_empty() {
                    serde_json::json!({})
                } else {
                    serde_json::json!({ "ids": ids })
                };
                let v: serde_json::Value = client
                    .post(&format!("/v1/functions/{name}/dlq/redrive"), &body)
                    .await?;
                eprintln!("{name}: {} event(s) sent back to run again", v["redriven"]);
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
