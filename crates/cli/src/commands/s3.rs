use crate::output::print_json;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;

/// The node's S3-compatible object storage.
#[derive(clap::Args)]
pub struct S3 {
    #[command(subcommand)]
    pub command: S3Command,
}

#[derive(clap::Subcommand)]
pub enum S3Command {
    /// Print the access key, secret and endpoint as shell exports, for the aws CLI, boto3
    /// and the AWS SDKs (`eval "$(wisp s3 credentials)"`).
    Credentials {
        /// The node's data directory, where `wisp up` keeps the keys.
        #[arg(long, env = "WISP_DATA_DIR", default_value = ".wisp")]
        data_dir: PathBuf,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
}

impl S3 {
    pub async fn execute(self) -> Result<ExitCode> {
        let S3Command::Credentials { data_dir, json } = self.command;
        let printed = credentials(&data_dir, json);
        if printed.is_err() && !json {
            // For `eval "$(wisp s3 credentials)"`: the eval fails too, instead of leaving
            // the shell with whatever AWS credentials it had (pointing at real AWS).
            println!("false");
        }
        printed
    }
}

fn credentials(data_dir: &std::path::Path, json: bool) -> Result<ExitCode> {
    {
        let path = data_dir.join("s3-credentials");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {}: start the node (`wisp up --data-dir {}`) first, or point --data-dir at its data directory",
                path.display(),
                data_dir.display()
            )
        })?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        let node = crate::node_dir::read_info(data_dir);
        let endpoint = std::fs::read_to_string(data_dir.join("s3-endpoint"))
            .unwrap_or_else(|_| "http://127.0.0.1:9000".into());
        // The node's S3 API accepts signatures for its own region only.
        let region = node
            .and_then(|n| n.region)
            .unwrap_or_else(|| "us-east-1".into());
        let (id, secret) = (
            v["access_key_id"].as_str().unwrap_or(""),
            v["secret_access_key"].as_str().unwrap_or(""),
        );
        if json {
            print_json(&serde_json::json!({
                "access_key_id": id,
                "secret_access_key": secret,
                "endpoint_url": endpoint,
                "region": region,
            }))?;
        } else {
            println!("export AWS_ACCESS_KEY_ID={id}");
            println!("export AWS_SECRET_ACCESS_KEY={secret}");
            println!("export AWS_ENDPOINT_URL={endpoint}");
            println!("export AWS_DEFAULT_REGION={region}");
        }
        Ok(ExitCode::SUCCESS)
    }
}
