//! `wisp dev [DIR]`: deploy a directory, then redeploy it on every saved change while
//! streaming its functions' logs (as `spin watch` or `wrangler dev`). Uses the running node,
//! or starts one for the session.

use crate::client::{ApiArgs, Client};
use crate::commands::deploy::{self, manifest_path};
use crate::commands::logs;
use crate::output::progress;
use anyhow::{Context, Result, bail};
use notify::{EventKind, RecursiveMode};
use reqwest::Method;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::mpsc;

/// Deploy a directory, then redeploy it on every saved change, streaming its logs.
#[derive(clap::Args)]
pub struct Dev {
    /// The app: a directory with a wisp.yaml, or the manifest itself.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// How long the directory must be quiet after a change before the redeploy.
    #[arg(long, default_value = "300ms", value_parser = humantime::parse_duration)]
    pub debounce: Duration,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Names never watched: build output, dependencies, the node's data, version control.
const IGNORED_DIRS: &[&str] = &[
    "target",
    "node_modules",
    ".wisp",
    "__pycache__",
    ".git",
    ".venv",
];

impl Dev {
    pub async fn execute(self) -> Result<ExitCode> {
        let manifest = manifest_path(&self.dir);
        if !manifest.exists() {
            bail!("{}", deploy::missing_manifest(&manifest));
        }
        let manifest = std::path::absolute(&manifest).unwrap_or(manifest);
        let root = manifest
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));

        let (client, mut node) = self.node(&root).await?;
        let stop = stop_signal();
        tokio::pin!(stop);

        // Logs of the app's functions, from now on.
        let functions: Arc<Mutex<HashSet<String>>> = Arc::default();
        tokio::spawn(stream_logs(client.clone(), functions.clone()));

        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<PathBuf>>();
        let ignored: Arc<Mutex<HashSet<PathBuf>>> = Arc::default();
        let mut watcher = {
            let root = root.clone();
            let ignored = ignored.clone();
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                let Ok(ev) = res else { return };
                if !changes_content(&ev.kind) {
                    return;
                }
                let skip = ignored.lock().map(|s| s.clone()).unwrap_or_default();
                let paths: Vec<PathBuf> = ev
                    .paths
                    .into_iter()
                    .filter(|p| watched(&root, p, &skip))
                    .collect();
                if !paths.is_empty() {
                    let _ = tx.send(paths);
                }
            })
            .context("starting the file watcher")?
        };
        // Directory by directory, so that node_modules/, target/ and the like cost no
        // inotify watches.
        watch_tree(&mut watcher, &root).with_context(|| format!("watching {}", root.display()))?;

        let mut first = true;
        loop {
            refresh(&manifest, &functions, &ignored);
            let started = Instant::now();
            match deploy::deploy(&client, &manifest, true).await {
                Ok(result) => {
                    let versions: Vec<String> = result
                        .changes
                        .iter()
                        .filter(|c| c["action"] != "removed")
                        .map(|c| match c["version"].as_u64() {
                            Some(v) => format!("{} v{v}", c["function"].as_str().unwrap_or("?")),
                            None => c["function"].as_str().unwrap_or("?").to_string(),
                        })
                        .collect();
                    progress(format!(
                        "wisp dev: {} in {:.1}s: {}; watching {} for changes (Ctrl-C stops)",
                        if first { "deployed" } else { "redeployed" },
                        started.elapsed().as_secs_f64(),
                        versions.join(", "),
                        root.display()
                    ));
                }
                Err(e) => progress(format!(
                    "wisp dev: deploy failed: {e:#}\nwisp dev: fix it and save again; watching {}",
                    root.display()
                )),
            }
            first = false;
            // Wait for a change, then for the directory to be quiet.
            let mut changed: Vec<PathBuf> = tokio::select! {
                _ = &mut stop => break,
                got = rx.recv() => match got { Some(p) => p, None => break },
            };
            loop {
                tokio::select! {
                    _ = &mut stop => return finish(node.take()).await,
                    more = tokio::time::timeout(self.debounce, rx.recv()) => match more {
                        Ok(Some(p)) => changed.extend(p),
                        Ok(None) | Err(_) => break,
                    },
                }
            }
            // New directories are watched too.
            for p in changed.iter().filter(|p| p.is_dir()) {
                let _ = watch_tree(&mut watcher, p);
            }
            progress("wisp dev: change seen, redeploying");
        }
        drop(watcher);
        finish(node.take()).await
    }

    /// The node to deploy to: the one `--api` / `WISP_API` names, the one the CLI finds
    /// as every command does, the one on `DIR/.wisp`, or a new one on `DIR/.wisp`.
    async fn node(&self, root: &Path) -> Result<(Client, Option<DevNode>)> {
        let explicit = self.api.api.as_ref().is_some_and(|a| !a.trim().is_empty());
        if explicit || reachable(&self.api.url()).await {
            let client = Client::new(&self.api)?;
            // A wrong token or address fails here, before any build.
            client.get::<serde_json::Value>("/v1/functions").await?;
            return Ok((client, None));
        }
        let data_dir = root.join(".wisp");
        if let Some(api) = crate::node_dir::read_info(&data_dir).and_then(|i| i.api)
            && reachable(&api).await
        {
            let args = ApiArgs {
                api: Some(api),
                token: self.api.token.clone(),
                data_dir: data_dir.clone(),
            };
            let client = Client::new(&args)?;
            client.get::<serde_json::Value>("/v1/functions").await?;
            return Ok((client, None));
        }
        let node = DevNode::start(&data_dir).await?;
        let token = std::fs::read_to_string(data_dir.join("api-token"))
            .with_context(|| format!("reading the new node's token in {}", data_dir.display()))?;
        let client = Client::with_token(&node.api, token.trim().to_string());
        progress(format!(
            "wisp dev: no node at {}; started one (pid {}): functions on {}, API on {}, data in {}, its log in {}",
            self.api.url(),
            node.child.id().unwrap_or(0),
            node.http,
            node.api,
            data_dir.display(),
            data_dir.join("dev-node.log").display()
        ));
        Ok((client, Some(node)))
    }
}

/// A node `wisp dev` started, stopped when it ends.
struct DevNode {
    child: tokio::process::Child,
    http: String,
    api: String,
}

impl DevNode {
    /// `wisp up` on `data_dir`: the default ports when all three are free, else free ones.
    async fn start(data_dir: &Path) -> Result<DevNode> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        const DEFAULTS: [&str; 3] = ["127.0.0.1:8080", "127.0.0.1:8081", "127.0.0.1:9000"];
        let free = DEFAULTS
            .iter()
            .all(|a| std::net::TcpListener::bind(a).is_ok());
        let [http, api, s3] = if free { DEFAULTS } else { ["127.0.0.1:0"; 3] };
        let log_path = data_dir.join("dev-node.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let exe = std::env::current_exe().context("finding the wisp binary")?;
        let mut child = tokio::process::Command::new(exe)
            .args(["up", "--http", http, "--api", api, "--s3", s3, "--data-dir"])
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting `wisp up`")?;
        let stdout = child.stdout.take().context("the node's stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let (mut http_url, mut api_url) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_url.is_none() || api_url.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match tokio::time::timeout(left, lines.next_line()).await {
                Ok(Ok(Some(line))) => line,
                _ => {
                    let _ = child.start_kill();
                    bail!(
                        "the node `wisp dev` started did not come up: see {}",
                        log_path.display()
                    );
                }
            };
            if let Some(rest) = line.strip_prefix("wisp: functions on ") {
                http_url = Some(rest.trim().to_string());
            }
            if let Some(rest) = line.strip_prefix("wisp: platform API on ") {
                api_url = rest.split_whitespace().next().map(str::to_string);
            }
        }
        // Keep reading what it prints, so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(DevNode {
            child,
            http: http_url.unwrap_or_default(),
            api: api_url.unwrap_or_default(),
        })
    }

    /// SIGTERM (a graceful stop), then SIGKILL if it has not exited within 20 s.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

async fn finish(node: Option<DevNode>) -> Result<ExitCode> {
    if let Some(node) = node {
        progress("wisp dev: stopping the node it started");
        node.stop().await;
    }
    progress("wisp dev: stopped");
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C (SIGINT) or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

async fn reachable(api: &str) -> bool {
    let Ok(http) = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
    else {
        return false;
    };
    let url = format!("{}/v1/health", crate::client::api_url(api));
    http.get(url)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// The manifest's function names (whose logs are shown) and build outputs (not watched),
/// read again before each deploy; kept as they were if the manifest does not parse now.
fn refresh(manifest: &Path, functions: &Mutex<HashSet<String>>, ignored: &Mutex<HashSet<PathBuf>>) {
    let Ok(m) = wisp_manifest::load(manifest) else {
        return;
    };
    if let Ok(mut f) = functions.lock() {
        *f = m.functions.iter().map(|f| f.name.to_string()).collect();
    }
    if let Ok(mut i) = ignored.lock() {
        *i = m
            .functions
            .iter()
            .filter_map(|f| f.build.as_ref())
            .map(|b| std::path::absolute(&b.output).unwrap_or_else(|_| b.output.clone()))
            .collect();
    }
}

/// Watches `dir` and its subdirectories, one watch each, leaving out the ignored ones.
fn watch_tree(watcher: &mut impl notify::Watcher, dir: &Path) -> notify::Result<()> {
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let ignored = e
                .file_name()
                .to_str()
                .is_none_or(|n| IGNORED_DIRS.contains(&n));
            if !ignored && e.file_type().is_ok_and(|t| t.is_dir()) {
                watch_tree(watcher, &e.path())?;
            }
        }
    }
    Ok(())
}

/// Whether an event can mean a saved change (not a read, nor a metadata change).
fn changes_content(kind: &EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        _ => false,
    }
}

/// Whether a change at `path` (under `root`) should redeploy: not in an ignored directory,
/// not a build output, not an editor's scratch file.
fn watched(root: &Path, path: &Path, build_outputs: &HashSet<PathBuf>) -> bool {
    if build_outputs.contains(path) {
        return false;
    }
    let rel = path.strip_prefix(root).unwrap_or(path);
    if rel.components().any(|c| {
        c.as_os_str()
            .to_str()
            .is_some_and(|s| IGNORED_DIRS.contains(&s))
    }) {
        return false;
    }
    let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    !(name.ends_with('~')
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.starts_with(".#")
        || name == "4913"
        || name.ends_with(".pyc"))
}

/// Follows the node's log stream from now on, printing the lines of the app's functions;
/// reconnects (after the last line seen) when the stream ends.
async fn stream_logs(client: Client, functions: Arc<Mutex<HashSet<String>>>) {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut after: Option<i64> = None;
    loop {
        let mut query: Vec<(&str, String)> =
            vec![("follow", "true".into()), ("limit", "1000".into())];
        match after {
            Some(id) => query.push(("after", id.to_string())),
            None => query.push(("since", since.to_string())),
        }
        if let Ok(resp) = client
            .send(client.request(Method::GET, "/v1/logs").query(&query))
            .await
        {
            let _ = logs::read_stream(resp, |l| {
                after = Some(l.id.max(after.unwrap_or(0)));
                let ours = functions
                    .lock()
                    .map(|f| f.contains(&l.function))
                    .unwrap_or(true);
                if ours {
                    println!("{}", logs::human(&l));
                }
            })
            .await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_output_dependencies_and_scratch_files_are_not_watched() {
        let root = Path::new("/w/app");
        let outputs: HashSet<PathBuf> = [PathBuf::from("/w/app/greet.wasm")].into();
        for p in [
            "/w/app/target/release/x.wasm",
            "/w/app/node_modules/a/index.js",
            "/w/app/.wisp/wisp.db",
            "/w/app/src/__pycache__/app.cpython-311.pyc",
            "/w/app/.git/index",
            "/w/app/greet.wasm",
            "/w/app/app.py~",
            "/w/app/.app.py.swp",
        ] {
            assert!(!watched(root, Path::new(p), &outputs), "{p}");
        }
        for p in [
            "/w/app/app.py",
            "/w/app/wisp.yaml",
            "/w/app/src/lib.rs",
            "/w/app/other.wasm",
        ] {
            assert!(watched(root, Path::new(p), &outputs), "{p}");
        }
    }
}
