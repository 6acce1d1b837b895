use crate::client::{ApiArgs, Client, ensure_name};
use anyhow::Result;
use reqwest::Method;
use std::process::ExitCode;

/// Remove a function and its versions. Its routes stop answering at once.
#[derive(clap::Args)]
pub struct Rm {
    /// The function's name.
    pub name: String,
    #[command(flatten)]
    pub api: ApiArgs,
}

impl Rm {
    pub async fn execute(self) -> Result<ExitCode> {
        ensure_name(&self.name)?;
        let client = Client::new(&self.api)?;
        client
            .send(client.request(Method::DELETE, &format!("/v1/functions/{}", self.name)))
            .await?;
        eprintln!("{}: removed", self.name);
        Ok(ExitCode::SUCCESS)
    }
}
