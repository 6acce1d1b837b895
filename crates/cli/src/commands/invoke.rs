use crate::client::{ApiArgs, Client, ensure_name};
use crate::output::print_json;
use anyhow::{Context, Result};
use reqwest::Method;
use std::io::Write;
use std::process::ExitCode;

/// Invoke a function: sends the payload as the body of an HTTP request to it and prints
/// the response body. Exits with 1 if the function fails or answers 4xx/5xx.
#[derive(clap::Args)]
pub struct Invoke {
    /// The function's name.
    pub name: String,
    /// The payload: text, or `@FILE` to read a file (`@-` for stdin).
    #[arg(long, short = 'd')]
    pub data: Option<String>,
    /// HTTP method of the request the function receives.
    #[arg(long, default_value = "POST")]
    pub method: String,
    /// Path (and query) of the request the function receives.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// Print the whole result (status, headers, body, duration, request id) as JSON.
    #[arg(long)]
    pub json: bool,
    /// Do not wait: store the event durably and print its id; it runs from the node's
    /// event store, retried twice on failure, then dead-lettered (`wisp dlq ls NAME`).
    #[arg(long = "async")]
    pub asynchronous: bool,
    /// Client context for a native function (a JSON object, Lambda's `ClientContext`:
    /// `custom`, `env`, `client`).
    #[arg(long, value_name = "JSON")]
    pub client_context: Option<String>,
    /// A request header for the function, `name: value` (repeatable), e.g. for a route
    /// that reads `authorization` or `content-type`.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

impl Invoke {
    pub async fn execute(self) -> Result<ExitCode> {
        ensure_name(&self.name)?;
        let client = Client::new(&self.api)?;
        let body = match self.data.as_deref() {
            None => Vec::new(),
            Some("@-") => {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                    .context("reading stdin")?;
                buf
            }
            Some(d) if d.starts_with('@') => {
                std::fs::read(&d[1..]).with_context(|| format!("reading {}", &d[1..]))?
            }
            Some(d) => d.as_bytes().to_vec(),
        };
        let mut req = client
            .request(Method::POST, &format!("/v1/functions/{}/invoke", self.name))
            .query(&[
                ("method", self.method.as_str()),
                ("path", self.path.as_str()),
                ("async", if self.asynchronous { "true" } else { "false" }),
            ])
            .body(body);
        for h in &self.headers {
            anyhow::ensure!(
                h.split_once(':').is_some_and(|(n, _)| !n.trim().is_empty()),
                "-H takes `name: value`, e.g. -H 'authorization: Bearer x' (got {h:?})"
            );
            req = req.header("x-wisp-invoke-header", h.as_str());
        }
        if let Some(cc) = &self.client_context {
            serde_json::from_str::<serde_json::Value>(cc)
                .context("--client-context must be a JSON object")?;
            use base64::Engine as _;
            req = req.header(
                "x-amz-client-context",
                base64::engine::general_purpose::STANDARD.encode(cc),
            );
        }
        let resp = client.send(req).await?;
        let result: serde_json::Value = resp.json().await.context("reading the API's answer")?;
        if self.asynchronous {
            if self.json {
                print_json(&result)?;
            } else {
                println!("{}", result["event_id"].as_str().unwrap_or(""));
                eprintln!(
                    "accepted: `{}` runs it from the event store (`wisp events {}` shows how it went)",
                    self.name,
                    result["event_id"].as_str().unwrap_or("")
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        let status = result["status"].as_u64().unwrap_or(500);
        let failed = result["outcome"] != "success" || status >= 400;
        if self.json {
            print_json(&result)?;
        } else {
            let body = result["body"].as_str().unwrap_or("");
            let mut out = std::io::stdout();
            if result["body_encoding"] == "base64" {
                use base64::Engine as _;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(body)
                    .context("decoding the response body")?;
                out.write_all(&bytes)?;
            } else {
                out.write_all(body.as_bytes())?;
                if !body.is_empty()
                    && !body.ends_with('\n')
                    && std::io::IsTerminal::is_terminal(&out)
                {
                    writeln!(out)?;
                }
            }
            if failed {
                let why = result["error"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("status {status}"));
                eprintln!(
                    "error: function `{}` {}: {why} (request id {}; `wisp logs {} --request-id {}`)",
                    self.name,
                    if result["outcome"] == "success" {
                        "answered with an error"
                    } else {
                        "failed"
                    },
                    result["request_id"].as_str().unwrap_or(""),
                    self.name,
                    result["request_id"].as_str().unwrap_or(""),
                );
            }
        }
        Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }
}
