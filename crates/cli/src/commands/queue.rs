use crate::client::{ApiArgs, Client};
use crate::output::{print_json, table};
use anyhow::Result;
use reqwest::Method;
use std::process::ExitCode;

/// Durable named queues; functions subscribe with `queue:` in their manifest.
#[derive(clap::Args)]
pub struct Queue {
    #[command(subcommand)]
    pub command: QueueCommand,
}

#[derive(clap::Subcommand)]
pub enum QueueCommand {
    /// Create a queue (or change its settings).
    Create {
        name: String,
        /// How long a received message stays invisible before it is delivered again.
        #[arg(long, value_parser = humantime::parse_duration)]
        visibility: Option<std::time::Duration>,
        /// Where messages go after `--max-receives` deliveries.
        #[arg(long)]
        dlq: Option<String>,
        #[arg(long)]
        max_receives: Option<u32>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Send a message (stored durably before this returns).
    Send {
        name: String,
        body: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Receive messages as a consumer: printed, hidden for the visibility timeout and
    /// delivered again unless deleted (`--delete`: receive and delete).
    Receive {
        name: String,
        /// At most this many (1 to 10).
        #[arg(long, default_value_t = 1)]
        max: usize,
        /// How long they stay hidden from other receivers (default: the queue's).
        #[arg(long, value_parser = humantime::parse_duration)]
        visibility: Option<std::time::Duration>,
        /// Delete them once received.
        #[arg(long)]
        delete: bool,
        /// Print JSON (message id, receipt handle, body, receive count...).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List queues with their depth, messages in flight and oldest age.
    Ls {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

impl Queue {
    pub async fn execute(self) -> Result<ExitCode> {
        match self.command {
            QueueCommand::Create {
                name,
                visibility,
                dlq,
                max_receives,
                api,
            } => {
                let client = Client::new(&api)?;
                let _: serde_json::Value = client
                    .post(
                        "/v1/queues",
                        &serde_json::json!({
                            "name": name,
                            "visibility_timeout_s": visibility.map(|d| d.as_secs()),
                            "dead_letter_queue": dlq,
                            "max_receive_count": max_receives,
                        }),
                    )
                    .await?;
                eprintln!("queue `{name}` is ready");
            }
            QueueCommand::Send { name, body, api } => {
                let client = Client::new(&api)?;
                let resp = client
                    .send(
                        client
                            .request(Method::POST, &format!("/v1/queues/{name}/messages"))
                            .body(body),
                    )
                    .await?;
                let v: serde_json::Value = resp.json().await?;
                println!("{}", v["message_id"].as_str().unwrap_or(""));
            }
            QueueCommand::Receive {
                name,
                max,
                visibility,
                delete,
                json,
                api,
            } => {
                let client = Client::new(&api)?;
                let messages: Vec<serde_json::Value> = client
                    .post(
                        &format!("/v1/queues/{name}/receive"),
                        &serde_json::json!({
                            "max": max,
                            "visibility_timeout_s": visibility.map(|d| d.as_secs()),
                            "delete": delete,
                        }),
                    )
                    .await?;
                if json {
                    print_json(&messages)?;
                } else {
                    if messages.is_empty() {
                        eprintln!("no visible messages in `{name}`");
                    }
                    for m in &messages {
                        println!("{}", m["body"].as_str().unwrap_or(""));
                    }
                }
            }
            QueueCommand::Ls { json, api } => {
                let client = Client::new(&api)?;
                let qs: Vec<serde_json::Value> = client.get("/v1/queues").await?;
                if json {
                    print_json(&qs)?;
                } else {
                    let rows: Vec<Vec<String>> = qs
                        .iter()
                        .map(|q| {
                            vec![
                                q["name"].as_str().unwrap_or("").to_string(),
                                q["depth"].to_string(),
                                q["in_flight"].to_string(),
                                q["oldest_age_s"]
                                    .as_u64()
                                    .map(|s| format!("{s}s"))
                                    .unwrap_or_else(|| "-".into()),
                                q["dead_letter_queue"].as_str().unwrap_or("-").to_string(),
                            ]
                        })
                        .collect();
                    table(&["QUEUE", "DEPTH", "IN FLIGHT", "OLDEST", "DLQ"], &rows);
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
