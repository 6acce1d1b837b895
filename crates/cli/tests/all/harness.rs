//! Starting nodes, running the CLI, building the guest components.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Where guest components are built: shared by the examples and the fixtures.
pub fn guest_target_dir() -> PathBuf {
    std::env::var("WISP_GUEST_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target/guests"))
}

/// Builds `tests/fixtures` once and returns the folder with the `.wasm` files.
pub fn fixtures() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "--target", "wasm32-wasip2", "--quiet"])
            .current_dir(repo_root().join("tests/fixtures"))
            .env("CARGO_TARGET_DIR", guest_target_dir())
            .status()
            .expect("running cargo to build the fixtures");
        assert!(status.success(), "building tests/fixtures failed");
        guest_target_dir().join("wasm32-wasip2/release")
    })
}

pub fn fixture(name: &str) -> PathBuf {
    fixtures().join(format!("{name}.wasm"))
}

/// `wisp up` on free loopback ports with `data_dir`.
pub fn up_command(data_dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wisp"));
    c.args([
        "up",
        "--http",
        "127.0.0.1:0",
        "--api",
        "127.0.0.1:0",
        "--s3",
        "127.0.0.1:0",
        "--data-dir",
    ])
    .arg(data_dir);
    c
}

pub struct Node {
    pub child: Option<Child>,
    pub http: String,
    pub api: String,
    pub data_dir: PathBuf,
    /// Keeps the temporary data directory alive for the node's lifetime.
    _tmp: Option<tempfile::TempDir>,
    stdout: mpsc::Receiver<String>,
    pub stderr_path: PathBuf,
}

impl Node {
    /// Starts a node with a fresh data directory.
    pub fn start() -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut n = Node::start_in(&dir);
        n._tmp = Some(tmp);
        n
    }

    /// Starts a node with a fresh data directory and extra `wisp up` flags.
    pub fn start_args(extra: &[&str]) -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut n = Node::start_with(&dir, extra);
        n._tmp = Some(tmp);
        n
    }

    /// Starts a node on an existing data directory (e.g. after a restart).
    pub fn start_in(data_dir: &Path) -> Node {
        Node::start_with(data_dir, &[])
    }

    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Node {
        let stderr_path = data_dir.with_extension(format!("stderr.{}", rand_suffix()));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut child = up_command(data_dir)
            .args(extra)
            .env("CARGO_TARGET_DIR", guest_target_dir())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("starting wisp up");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut http = None;
        let mut api = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        while http.is_none() || api.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "wisp up did not report its addresses; stderr:\n{}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                )
            });
            if let Some(rest) = line.strip_prefix("wisp: functions on ") {
                http = Some(rest.trim().to_string());
            }
            if let Some(rest) = line.strip_prefix("wisp: platform API on ") {
                api = Some(rest.split_whitespace().next().unwrap().to_string());
            }
        }
        Node {
            child: Some(child),
            http: http.unwrap(),
            api: api.unwrap(),
            data_dir: data_dir.to_path_buf(),
            _tmp: None,
            stdout: rx,
            stderr_path,
        }
    }

    /// A handle on a node another `Node` runs, for API calls from another thread (it does
    /// not own the process).
    pub fn attach(api: &str, token: &str) -> Node {
        let (_tx, rx) = mpsc::channel();
        let dir = tempfile::tempdir().unwrap().keep();
        std::fs::write(dir.join("api-token"), token).unwrap();
        Node {
            child: None,
            http: String::new(),
            api: api.to_string(),
            data_dir: dir.clone(),
            _tmp: None,
            stdout: rx,
            stderr_path: dir.join("stderr"),
        }
    }

    /// Waits for a line on the node's stdout that starts with `prefix`.
    pub fn wait_stdout(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => continue,
                Err(_) => panic!(
                    "no `{prefix}` line from wisp up; stderr:\n{}",
                    self.stderr()
                ),
            }
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("api-token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Runs `wisp ARGS` against this node, as a user would from a shell.
    pub fn wisp(&self, args: &[&str]) -> Output {
        self.wisp_in(&repo_root(), args)
    }

    pub fn wisp_in(&self, cwd: &Path, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_wisp"))
            .args(args)
            .current_dir(cwd)
            .env("WISP_API", &self.api)
            .env("WISP_DATA_DIR", &self.data_dir)
            .env_remove("WISP_TOKEN")
            .env("CARGO_TARGET_DIR", guest_target_dir())
            .stdin(Stdio::null())
            .output()
            .expect("running wisp")
    }

    /// Runs `wisp ARGS` and fails the test if it does not succeed; returns stdout.
    pub fn wisp_ok(&self, args: &[&str]) -> String {
        let out = self.wisp(args);
        assert!(
            out.status.success(),
            "wisp {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `wisp ARGS` expecting failure; returns stderr.
    pub fn wisp_err(&self, args: &[&str]) -> String {
        let out = self.wisp(args);
        assert!(
            !out.status.success(),
            "wisp {args:?} should have failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.http)
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        let r = client().get(self.url(path)).send().expect("GET");
        (r.status().as_u16(), r.text().unwrap())
    }

    /// Sends SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits for the node to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("node is running");
        let st = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        c.wait().unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Writes `yaml` as `wisp.yaml` in a new temporary folder and returns the folder.
pub fn manifest(yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("wisp.yaml"), yaml).unwrap();
    dir
}

/// A manifest path as a string argument.
pub fn arg(dir: &tempfile::TempDir) -> String {
    dir.path().join("wisp.yaml").display().to_string()
}

/// The path of a fixture for a manifest's `source:`.
pub fn src(name: &str) -> String {
    fixture(name).display().to_string()
}

/// The init (PID 1 inside) of each of this node's sandboxes, as host pids.
pub fn sandbox_inits(node_pid: u32) -> Vec<u32> {
    sandbox_inits_of(&process_table(), node_pid)
}

fn sandbox_inits_of(procs: &[(u32, u32, u64)], node_pid: u32) -> Vec<u32> {
    procs
        .iter()
        .filter(|(_, ppid, uid)| *ppid == node_pid && *uid >= 1_000_000_000)
        .map(|(pid, _, _)| *pid)
        .collect()
}

/// (pid, parent pid, uid) of every process.
fn process_table() -> Vec<(u32, u32, u64)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let status = std::fs::read_to_string(e.path().join("status")).ok()?;
            let field = |name: &str| {
                status
                    .lines()
                    .find(|l| l.starts_with(name))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
            };
            Some((pid, field("PPid:")? as u32, field("Uid:")?))
        })
        .collect()
}

/// Processes in this node's sandboxes: its children running as a sandbox's host uid
/// (1,000,000,000 and up) and their descendants.
pub fn sandboxed_processes(node_pid: u32) -> usize {
    sandboxed_pids(node_pid).len()
}

/// The host pids of the processes in this node's sandboxes.
pub fn sandboxed_pids(node_pid: u32) -> Vec<u32> {
    let procs = process_table();
    let mut inside = sandbox_inits_of(&procs, node_pid);
    let mut i = 0;
    while i < inside.len() {
        let parent = inside[i];
        inside.extend(procs.iter().filter(|p| p.1 == parent).map(|p| p.0));
        i += 1;
    }
    inside
}

/// CPU time (user + system, in clock ticks of 10 ms) the processes in this node's
/// sandboxes have used.
pub fn sandboxed_cpu_ticks(node_pid: u32) -> u64 {
    sandboxed_pids(node_pid)
        .iter()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command name (which may hold spaces) in parentheses.
            let rest = stat.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

/// Polls `f` every 100 ms until it gives a value; fails the test after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (bounded) until `function` has an invocation running on `node`, from the
/// node's own `wisp_concurrent_executions` gauge.
pub fn wait_running(node: &Node, function: &str) {
    wait_running_n(node, function, 1);
}

/// How many invocations of `function` are running on `node` now (its
/// `wisp_concurrent_executions` gauge).
pub fn running(node: &Node, function: &str) -> usize {
    let m = crate::metrics::scrape(node);
    crate::metrics::value(&m, "wisp_concurrent_executions", &[("function", function)]) as usize
}

/// Waits (bounded) until at least `n` invocations of `function` are running on `node`.
pub fn wait_running_n(node: &Node, function: &str, n: usize) {
    wait_until(
        &format!("{n} invocations of {function} to be running"),
        Duration::from_secs(30),
        || (running(node, function) >= n).then_some(()),
    );
}

pub fn ps() -> String {
    String::from_utf8_lossy(
        &std::process::Command::new("ps")
            .args(["-eo", "pid,uid,comm"])
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default(),
    )
    .into_owned()
}
