use crate::client::{ApiArgs, Client, ensure_name};
use crate::output::timestamp;
use anyhow::{Context, Result};
use futures::StreamExt;
use reqwest::Method;
use std::process::ExitCode;
use wisp_core::LogLine;

/// Show a function's log lines: what it printed to stdout and stderr, and the platform's
/// notes on failures, each with its request id.
#[derive(clap::Args)]
pub struct Logs {
    /// The function's name. Optional with `--trace-id` or `--request-id`: the lines of
    /// every function in that trace or request.
    pub name: Option<String>,
    /// Keep printing new lines as they arrive.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only lines from this far back, e.g. `10m`, `2h`, `1d`.
    #[arg(long)]
    pub since: Option<String>,
    /// Only lines from before this long ago (with --since: a time window), e.g. `1h`.
    #[arg(long)]
    pub until: Option<String>,
    /// Only lines of this version of the function.
    #[arg(long)]
    pub version: Option<u32>,
    /// Only lines of this request.
    #[arg(long)]
    pub request_id: Option<String>,
    /// Only lines that contain this text.
    #[arg(long)]
    pub grep: Option<String>,
    /// Only lines of invocations in this W3C trace (see `x-wisp-trace-id`).
    #[arg(long)]
    pub trace_id: Option<String>,
    /// At most this many lines (the newest).
    #[arg(long, short = 'n', default_value_t = 100)]
    pub limit: usize,
    /// Print each line as a JSON object (NDJSON).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

impl Logs {
    pub async fn execute(self) -> Result<ExitCode> {
        if self.name.is_none() && self.trace_id.is_none() && self.request_id.is_none() {
            anyhow::bail!(
                "name the function (`wisp logs NAME`), or give --trace-id or --request-id for the lines of every function in it"
            );
        }
        if let Some(name) = &self.name {
            ensure_name(name)?;
        }
        for (flag, value) in [("--since", &self.since), ("--until", &self.until)] {
            if let Some(s) = value {
                humantime::parse_duration(s).with_context(|| {
                    format!("{flag} `{s}` is not a duration: write e.g. `30s`, `10m`, `2h` or `1d`")
                })?;
            }
        }
        let client = Client::new(&self.api)?;
        let mut query: Vec<(&str, String)> = vec![("limit", self.limit.to_string())];
        if let Some(name) = &self.name {
            // Fail early and clearly if the function does not exist.
            client
                .get::<serde_json::Value>(&format!("/v1/functions/{name}"))
                .await?;
            query.push(("function", name.clone()));
        }
        if let Some(s) = &self.since {
            query.push(("since", s.clone()));
        }
        if let Some(u) = &self.until {
            query.push(("until", u.clone()));
        }
        if let Some(v) = self.version {
            query.push(("version", v.to_string()));
        }
        if let Some(r) = &self.request_id {
            query.push(("request_id", r.clone()));
        }
        if let Some(g) = &self.grep {
            query.push(("grep", g.clone()));
        }
        if let Some(t) = &self.trace_id {
            query.push(("trace_id", t.clone()));
        }
        if self.follow {
            query.push(("follow", "true".into()));
        }
        let resp = client
            .send(client.request(Method::GET, "/v1/logs").query(&query))
            .await?;
        if !self.follow {
            let page: serde_json::Value = resp.json().await?;
            let lines: Vec<LogLine> = serde_json::from_value(page["lines"].clone())?;
            for l in &lines {
                self.print(l);
            }
            return Ok(ExitCode::SUCCESS);
        }
        read_stream(resp, |l| self.print(&l)).await?;
        Ok(ExitCode::SUCCESS)
    }

    fn print(&self, l: &LogLine) {
        if self.json {
            if let Ok(s) = serde_json::to_string(l) {
                println!("{s}");
            }
        } else {
            println!("{}", human(l));
        }
    }
}

/// A log line as `wisp logs` prints it.
pub fn human(l: &LogLine) -> String {
    format!(
        "{} {} v{} {} {}: {}",
        timestamp(l.ts_ms),
        l.function,
        l.version,
        l.request_id,
        l.stream.as_str(),
        l.line
    )
}

/// Reads a `GET /v1/logs?follow=true` response (NDJSON, blank keep-alive lines) until it
/// ends, handing each line to `on_line`.
pub async fn read_stream(resp: reqwest::Response, mut on_line: impl FnMut(LogLine)) -> Result<()> {
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("the log stream was interrupted")?;
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            if line.len() <= 1 {
                continue; // keep-alive
            }
            if let Ok(l) = serde_json::from_slice::<LogLine>(&line) {
                on_line(l);
            }
        }
    }
    Ok(())
}
