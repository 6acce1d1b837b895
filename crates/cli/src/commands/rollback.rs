use crate::client::{ApiArgs, Client, ensure_name};
use crate::output::print_json;
use anyhow::Result;
use std::process::ExitCode;

/// Make another version of a function serve traffic (atomically).
#[derive(clap::Args)]
pub struct Rollback {
    /// The function's name.
    pub name: String,
    /// The version to serve (see `wisp versions NAME`).
    #[arg(long)]
    pub to: u32,
    /// Print the function as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

impl Rollback {
    pub async fn execute(self) -> Result<ExitCode> {
        ensure_name(&self.name)?;
        let client = Client::new(&self.api)?;
        let f: serde_json::Value = client
            .post(
                &format!("/v1/functions/{}/rollback", self.name),
                &serde_json::json!({ "version": self.to }),
            )
            .await?;
        if self.json {
            print_json(&f)?;
        } else {
            eprintln!("{}: version {} is live", self.name, f["version"]);
        }
        Ok(ExitCode::SUCCESS)
    }
}
