//! The platform API client every subcommand but `up` uses.

use anyhow::{Context, Result, anyhow, bail};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::PathBuf;

/// Where the node's API is, and how to authenticate.
#[derive(clap::Args, Clone, Debug)]
pub struct ApiArgs {
    /// The node's platform API: a URL or `host:port`. Default: the address the node
    /// running on the data directory recorded (`node.json`), else 127.0.0.1:8081.
    #[arg(long, env = "WISP_API")]
    pub api: Option<String>,
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
    /// Where the token came from, for the error when the node refuses it.
    token_source: String,
}

/// The default API address when nothing says otherwise.
const DEFAULT_API: &str = "http://127.0.0.1:8081";

/// `host:port` or a URL, as a base URL without a trailing slash.
pub fn api_url(api: &str) -> String {
    let api = api.trim().trim_end_matches('/');
    if api.contains("://") {
        api.to_string()
    } else {
        format!("http://{api}")
    }
}

impl ApiArgs {
    /// The API's base URL: `--api` / `WISP_API`, else what the node on the data directory
    /// recorded, else the default.
    pub fn url(&self) -> String {
        match &self.api {
            Some(a) if !a.trim().is_empty() => api_url(a),
            _ => crate::node_dir::read_info(&self.data_dir)
                .and_then(|i| i.api)
                .unwrap_or_else(|| DEFAULT_API.to_string()),
        }
    }
}

impl Client {
    pub fn new(args: &ApiArgs) -> Result<Self> {
        let (token, source) = match &args.token {
            Some(t) if !t.trim().is_empty() => (
                t.trim().to_string(),
                if std::env::var_os("WISP_TOKEN").is_some() {
                    "WISP_TOKEN".to_string()
                } else {
                    "--token".to_string()
                },
            ),
            _ => {
                let path = args.data_dir.join("api-token");
                let token = std::fs::read_to_string(&path)
                    .map(|t| t.trim().to_string())
                    .map_err(|e| {
                        anyhow!(
                            "no API token: could not read {} ({e}). Run this in the directory where `wisp up` runs, pass --data-dir DIR of the node, or set WISP_TOKEN to the token in its api-token file",
                            path.display()
                        )
                    })?;
                (token, path.display().to_string())
            }
        };
        let mut client = Self::with_token(&args.url(), token);
        client.token_source = source;
        Ok(client)
    }

    pub fn with_token(api: &str, token: String) -> Self {
        Client {
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("a reqwest client with default settings builds"),
            base: api_url(api),
            token,
            token_source: "the token given".into(),
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
        if status == StatusCode::UNAUTHORIZED {
            bail!(
                "the Wisp API at {} refused the API token from {}: use the api-token file of the node that runs there (--data-dir DIR, or WISP_TOKEN)",
                self.base,
                self.token_source
            );
        }
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
