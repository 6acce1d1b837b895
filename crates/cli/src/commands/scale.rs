use crate::client::{ApiArgs, Client, ensure_name};
use crate::output::print_json;
use anyhow::{Result, bail};
use std::process::ExitCode;

/// Change how a function scales: its maximum concurrency, a reservation of node capacity,
/// and instances kept warm. Makes a new version with the same code (roll back as usual).
#[derive(clap::Args)]
pub struct Scale {
    /// The function's name.
    pub name: String,
    /// Invocations that may run at once (beyond: queued, then 429).
    #[arg(long)]
    pub max: Option<u32>,
    /// Concurrency set aside for this function alone (also its maximum); 0 removes it.
    #[arg(long)]
    pub reserved: Option<u32>,
    /// Instances kept initialised at all times (native functions); 0 for none.
    #[arg(long)]
    pub provisioned: Option<u32>,
    /// Print the function as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

impl Scale {
    pub async fn execute(self) -> Result<ExitCode> {
        ensure_name(&self.name)?;
        if self.max.is_none() && self.reserved.is_none() && self.provisioned.is_none() {
            bail!("nothing to change: give --max, --reserved or --provisioned");
        }
        let client = Client::new(&self.api)?;
        let f: serde_json::Value = client
            .post(
                &format!("/v1/functions/{}/scale", self.name),
                &serde_json::json!({
                    "max_concurrency": self.max,
                    "reserved_concurrency": self.reserved,
                    "provisioned_concurrency": self.provisioned,
                }),
            )
            .await?;
        if self.json {
            print_json(&f)?;
        } else {
            let l = &f["limits"];
            eprintln!(
                "{}: version {} is live (max_concurrency {}, reserved {}, provisioned {})",
                self.name,
                f["version"],
                l["max_concurrency"],
                l["reserved_concurrency"].as_u64().unwrap_or(0),
                l["provisioned_concurrency"].as_u64().unwrap_or(0)
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}
