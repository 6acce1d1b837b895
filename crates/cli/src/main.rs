//! The `wisp` command line. `wisp up` runs a node; every other subcommand is a client of
//! a node's platform API. Commands live one per file under `commands/`.
#![forbid(unsafe_code)]

mod build;
mod bundle;
mod client;
mod commands;
mod host_services;
mod node_dir;
mod otlp;
mod output;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Wisp: a self-hosted serverless platform. Functions are WebAssembly components.
#[derive(Parser)]
#[command(name = "wisp", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: functions on 127.0.0.1:8080, the platform API on 127.0.0.1:8081.
    Up(Box<commands::up::Up>),
    /// Make a new function directory from a template (`wisp new --list`).
    New(commands::new::New),
    /// Deploy a directory, then redeploy it on every saved change while showing its logs
    /// (starts a node for the session when none is running).
    Dev(commands::dev::Dev),
    /// Build, upload and deploy the functions of a wisp.yaml.
    Deploy(commands::deploy::Deploy),
    /// Show a function: version, kind, limits, scaling, env names and every trigger.
    Describe(commands::describe::Describe),
    /// List deployed functions with their versions and triggers.
    Ls(commands::ls::Ls),
    /// Invoke a function with a payload and print its response.
    Invoke(commands::invoke::Invoke),
    /// The node's S3-compatible object storage: `wisp s3 credentials`.
    S3(commands::s3::S3),
    /// Durable named queues: create, send, ls.
    Queue(commands::queue::Queue),
    /// A function's dead-letter queue: ls, show, redrive.
    Dlq(commands::dlq::Dlq),
    /// The state of an asynchronous invocation (`wisp invoke --async`).
    Events(commands::dlq::Events),
    /// Show a function's log lines (-f to follow).
    #[command(disable_version_flag = true)]
    Logs(commands::logs::Logs),
    /// List the versions of a function.
    Versions(commands::versions::Versions),
    /// Change how a function scales: max, reserved and provisioned concurrency.
    Scale(commands::scale::Scale),
    /// Make an earlier (or later) version of a function serve traffic.
    Rollback(commands::rollback::Rollback),
    /// Remove a function: its routes stop answering at once.
    Rm(commands::rm::Rm),
    /// Usage over a period: invocations, billed time, GB-seconds, cold starts.
    Usage(commands::usage::Usage),
    /// The bill for a period, compared with always-on servers.
    Cost(commands::cost::Cost),
    /// Show a trace: the tree of invocations one request caused, with timings.
    Trace(commands::trace::Trace),
    /// Check what this host gives native functions: runtimes and sandbox protections.
    Doctor(commands::doctor::Doctor),
    /// Print a shell completion script: `wisp completions bash > /etc/bash_completion.d/wisp`,
    /// `wisp completions zsh > "${fpath[1]}/_wisp"`, `wisp completions fish > ~/.config/fish/completions/wisp.fish`.
    Completions { shell: clap_complete::Shell },
}

fn main() -> ExitCode {
    // A sandbox's init process is this binary started again: it must take over before
    // anything else (no threads, no runtime).
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == wisp_sandbox::INIT_ARG)
    {
        wisp_sandbox::init_main();
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Completions { shell } => {
                use clap::CommandFactory as _;
                clap_complete::generate(shell, &mut Cli::command(), "wisp", &mut std::io::stdout());
                Ok(ExitCode::SUCCESS)
            }
            Command::Up(c) => c.execute().await,
            Command::New(c) => c.execute().await,
            Command::Dev(c) => c.execute().await,
            Command::Deploy(c) => c.execute().await,
            Command::Ls(c) => c.execute().await,
            Command::Describe(c) => c.execute().await,
            Command::Invoke(c) => c.execute().await,
            Command::Logs(c) => c.execute().await,
            Command::Dlq(c) => c.execute().await,
            Command::Queue(c) => c.execute().await,
            Command::S3(c) => c.execute().await,
            Command::Events(c) => c.execute().await,
            Command::Versions(c) => c.execute().await,
            Command::Rollback(c) => c.execute().await,
            Command::Scale(c) => c.execute().await,
            Command::Rm(c) => c.execute().await,
            Command::Usage(c) => c.execute().await,
            Command::Cost(c) => c.execute().await,
            Command::Trace(c) => c.execute().await,
            Command::Doctor(c) => c.execute().await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
