use crate::client::{ApiArgs, Client};
use crate::output::{print_json, table};
use anyhow::Result;
use std::process::ExitCode;

/// List deployed functions with their active version and routes.
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
                let routes = f["routes"]
                    .as_array()
                    .map(|r| {
                        r.iter()
                            .filter_map(|x| x.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                vec![
                    f["name"].as_str().unwrap_or("").to_string(),
                    f["app"].as_str().unwrap_or("").to_string(),
                    format!("{}/{}", f["version"], f["latest_version"]),
                    f["runtime"].as_str().unwrap_or("wasm").to_string(),
                    if routes.is_empty() {
                        "-".into()
                    } else {
                        routes
                    },
                ]
            })
            .collect();
        table(&["NAME", "APP", "VERSION", "RUNTIME", "ROUTES"], &rows);
        Ok(ExitCode::SUCCESS)
    }
}
