//! The platform API client every subcommand but `up` uses.

use anyhow::{Context, Result, anyhow, bail};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::PathBuf;

/// Where the node's API is, and how to authenticate.
#[derive(clap::Args, Clone, Debug)]
pub struct ApiArgs {
    /// URL of the node's platform API.
    #[arg(long, env = "WISP_API", default_value = "http://127.0.0.1:8081")]
    pub api: String,
    /// API token. Default: the `api-token` file in the node's data directory.
    #[arg(long, env = "WISP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The node's data directory, where the API token is read from.
    #[arg(long, env = "WISP_DATA_DIR", default_value = ".wisp")]
    pub data_dir: PathBuf,
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub fn new(args: &ApiArgs) -> Result<Self> {
        let token = match &args.token {
            Some(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => {
                let path = args.data_dir.join("api-token");
                std::fs::read_to_string(&path)
                    .map(|t| t.trim().to_string())
                    .map_err(|e| {
                        anyhow!(
                            "no API token: could not read {} ({e}). Set WISP_TOKEN to the token in the node's data directory, or pass --data-dir DIR of the node",
                            path.display()
                        )
                    })?
            }
        };
        Ok(Self::with_token(&args.api, token))
    }

    pub fn with_token(api: &str, token: String) -> Self {
        Client {
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("a reqwest client with default settings builds"),
            base: api.trim_end_matches('/').to_string(),
            token,
        }
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends a request; a non-2xx answer becomes an error carrying the API's message.
    pub async fn send(&self, req: RequestBuilder) -> Result<Response> {
        let resp = req.send().await.map_err(|e| {
            anyhow!(
                "cannot reach the Wisp API at {}: is `wisp up` running? ({})",
                self.base,
                root_cause(&e)
            )
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or(text);
        Err(ApiError { status, message }.into())
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self.send(self.request(Method::GET, path)).await?;
        resp.json().await.context("reading the API's answer")
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let resp = self
            .send(self.request(Method::POST, path).json(body))
            .await?;
        resp.json().await.context("reading the API's answer")
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// An error answered by the API.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.message.is_empty() {
            write!(f, "the API answered {}", self.status)
        } else {
            f.write_str(&self.message)
        }
    }
}

impl std::error::Error for ApiError {}

pub fn ensure_name(name: &str) -> Result<()> {
    if let Err(e) = wisp_core::FunctionName::new(name) {
        bail!("{e}");
    }
    Ok(())
}
