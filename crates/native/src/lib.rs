//! Native functions: unmodified AWS Lambda handlers (Python, Node.js, any `bootstrap`
//! executable) running in sandboxed processes that speak the Lambda Runtime API.
//!
//! A [`NativePool`] holds the instances of one function version. An instance is one
//! sandboxed runtime process; it serves one invocation at a time and is reused while warm.
//! A call that finds no idle instance starts one (a cold start); idle instances stop after
//! the keep-alive. Each instance gets its own Runtime API server ([`runtime_api`]) on a
//! listener bound inside its sandbox.
//!
//! This crate does not route HTTP or record logs and usage: the invoker hands it an event
//! and gets back a [`NativeResult`].
#![forbid(unsafe_code)]

pub mod apigw;
mod interpreter;
mod output;
pub mod runtime_api;

pub use interpreter::{Interpreter, RUNTIME_MOUNT, resolve};
pub use runtime_api::FunctionError;

use bytes::Bytes;
use output::Output;
use runtime_api::{ApiState, Pending, Reply};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use wisp_core::{Limits, LogStream, NativeSpec, Outcome, Runtime};
use wisp_sandbox::{Exit, Sandboxes, Spec};

/// The bootstraps that give handlers the Lambda contract, built into the binary and
/// written to the node's data directory at start.
const BOOTSTRAPS: &[(&str, &str)] = &[
    (
        "python/bootstrap.py",
        include_str!("../../../runtimes/python/bootstrap.py"),
    ),
    (
        "python/_wisp_runtime.py",
        include_str!("../../../runtimes/python/_wisp_runtime.py"),
    ),
    (
        "node/bootstrap.js",
        include_str!("../../../runtimes/node/bootstrap.js"),
    ),
];

/// How long a runtime may take to start (to its first `invocation/next`), as on Lambda.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Node-wide settings for native functions.
#[derive(Debug, Clone)]
pub struct NativeConfig {
    /// Where the bootstraps are written (`<data dir>/runtimes`).
    pub runtime_dir: PathBuf,
    /// `AWS_REGION` as functions see it.
    pub region: String,
    /// How long an idle instance is kept, and when one is pre-warmed: adaptive (per
    /// function, from its idle-time histogram) by default, or fixed.
    pub keep_alive: wisp_scaling::Policy,
    /// Size of each instance's private `/tmp`.
    pub tmp_bytes: u64,
    /// The node's object store, handed to functions with `network: true`.
    pub s3: Option<S3Access>,
}

/// What a native function with `network: true` gets to reach the node's S3-compatible
/// object store, like the keys of a Lambda execution role: `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY` and `AWS_ENDPOINT_URL_S3` (which boto3 and the AWS SDKs use
/// for S3 only, so clients of other AWS services are not redirected).
#[derive(Clone, PartialEq, Eq)]
pub struct S3Access {
    /// `http://127.0.0.1:9000`.
    pub endpoint: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl S3Access {
    /// The variables, which a function's own `env` cannot override.
    pub fn env(&self) -> [(&'static str, String); 3] {
        [
            ("AWS_ACCESS_KEY_ID", self.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key.clone()),
            ("AWS_ENDPOINT_URL_S3", self.endpoint.clone()),
        ]
    }
}

/// Never prints the secret (the config ends up in debug logs).
impl std::fmt::Debug for S3Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Access")
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

impl NativeConfig {
    pub fn new(data_dir: &Path) -> Self {
        NativeConfig {
            runtime_dir: data_dir.join("runtimes"),
            region: "us-east-1".into(),
            keep_alive: wisp_scaling::Policy::default(),
            tmp_bytes: 512 * 1024 * 1024,
            s3: None,
        }
    }
}

/// Starts and supervises native instances for every function of the node.
pub struct NativeExecutor {
    sandboxes: Arc<Sandboxes>,
    config: NativeConfig,
    interpreters: Mutex<HashMap<Runtime, Result<Interpreter, String>>>,
    pools: Mutex<Vec<Weak<NativePool>>>,
    seq: AtomicU64,
    reaper: std::sync::OnceLock<()>,
    /// The monotonic clock keep-alive decisions use (milliseconds since this).
    epoch: Instant,
}

impl std::fmt::Debug for NativeExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeExecutor")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl NativeExecutor {
    /// Writes the bootstraps to `config.runtime_dir`, readable by the sandbox user.
    pub fn new(sandboxes: Arc<Sandboxes>, config: NativeConfig) -> std::io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        for (path, text) in BOOTSTRAPS {
            let dest = config.runtime_dir.join(path);
            let dir = dest.parent().expect("bootstrap paths have a folder");
            std::fs::create_dir_all(dir)?;
            if std::fs::read(&dest).ok().as_deref() != Some(text.as_bytes()) {
                let tmp = dest.with_extension("tmp");
                std::fs::write(&tmp, text)?;
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
                std::fs::rename(&tmp, &dest)?;
            }
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
        std::fs::set_permissions(&config.runtime_dir, std::fs::Permissions::from_mode(0o755))?;
        Ok(NativeExecutor {
            sandboxes,
            config,
            interpreters: Mutex::new(HashMap::new()),
            pools: Mutex::new(Vec::new()),
            seq: AtomicU64::new(0),
            reaper: std::sync::OnceLock::new(),
            epoch: Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn sandboxes(&self) -> &Arc<Sandboxes> {
        &self.sandboxes
    }

    /// The interpreter for a runtime on this host (looked up once). For Python, the
    /// bootstrap's modules are compiled here once: the sandbox mounts them read-only, and
    /// compiling them at every cold start would cost milliseconds.
    pub fn interpreter(&self, runtime: Runtime) -> Result<Interpreter, String> {
        let mut cache = self.interpreters.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .entry(runtime)
            .or_insert_with(|| {
                let interp = resolve(runtime)?;
                if matches!(runtime, Runtime::Python { .. }) {
                    let dir = self.config.runtime_dir.join("python");
                    let compiled = std::process::Command::new(&interp.program)
                        .args(["-m", "compileall", "-q"])
                        .arg(&dir)
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::null())
                        .status();
                    if !compiled.is_ok_and(|s| s.success()) {
                        tracing::warn!(
                            "compiling the Python bootstrap in {} failed: cold starts compile it each time",
                            dir.display()
                        );
                    }
                    make_readable(&dir);
                }
                Ok(interp)
            })
            .clone()
    }

    /// Checks that a function can start here: its runtime exists on this host, and a
    /// `provided` bundle has an executable `bootstrap`. A deploy calls this before it commits.
    pub fn check(&self, spec: &NativeSpec, code_dir: &Path) -> Result<(), String> {
        self.interpreter(spec.runtime)?;
        if spec.runtime == Runtime::Provided {
            use std::os::unix::fs::PermissionsExt;
            let bootstrap = code_dir.join("bootstrap");
            match std::fs::metadata(&bootstrap) {
                Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {}
                Ok(_) => {
                    return Err(
                        "the code's `bootstrap` is not an executable file: a `provided` function needs an executable named `bootstrap` at the root of its directory".into(),
                    );
                }
                Err(_) => {
                    return Err(
                        "the code has no `bootstrap`: a `provided` function needs an executable named `bootstrap` at the root of its directory (or a Rust crate that builds one)".into(),
                    );
                }
            }
        }
        Ok(())
    }

    /// A pool for one function version. Its instances stop when it is dropped.
    pub fn pool(self: &Arc<Self>, function: NativeFunction) -> Arc<NativePool> {
        let policy = self.config.keep_alive;
        let tracker = match function.histogram.clone() {
            Some(h) => wisp_scaling::Tracker::with_histogram(policy, h),
            None => wisp_scaling::Tracker::new(policy),
        };
        let pool = Arc::new(NativePool {
            exec: self.clone(),
            tracker: Mutex::new(tracker),
            prewarm: Mutex::new(None),
            f: function,
            idle: Mutex::new(Vec::new()),
            live: Arc::new(AtomicU32::new(0)),
            busy: AtomicU32::new(0),
            cold_starts: AtomicU64::new(0),
            prewarm_count: AtomicU64::new(0),
            maintaining: std::sync::atomic::AtomicBool::new(false),
        });
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools.retain(|p| p.strong_count() > 0);
        pools.push(Arc::downgrade(&pool));
        drop(pools);
        self.start_reaper();
        if pool.f.limits.provisioned_concurrency > 0
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(pool.clone().maintain());
        }
        pool
    }

    /// Stops idle instances past their keep-alive and starts provisioned and pre-warmed
    /// ones, four times a second.
    fn start_reaper(self: &Arc<Self>) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.reaper.get_or_init(|| {
            let exec = Arc::downgrade(self);
            handle.spawn(async move {
                // Often enough that a pre-warm lands close to its time.
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tick.tick().await;
                    let Some(exec) = exec.upgrade() else { break };
                    let pools: Vec<Arc<NativePool>> = exec
                        .pools
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .iter()
                        .filter_map(Weak::upgrade)
                        .collect();
                    let now = exec.now_ms();
                    for p in pools {
                        p.reap(now);
                        if p.needs_maintenance(now) {
                            tokio::spawn(p.maintain());
                        }
                    }
                }
            });
        });
    }
}

/// What a pool needs to know of its function version.
#[derive(Debug, Clone)]
pub struct NativeFunction {
    pub name: String,
    pub version: u32,
    pub spec: NativeSpec,
    pub limits: Limits,
    pub env: Vec<(String, String)>,
    /// The unpacked code bundle on the host.
    pub code_dir: PathBuf,
    /// The function's idle-time histogram so far (kept across versions and restarts).
    pub histogram: Option<wisp_scaling::IdleHistogram>,
}

/// One invocation for a native function.
#[derive(Debug)]
pub struct NativeRequest {
    pub request_id: String,
    /// The event the handler receives (JSON).
    pub event: Bytes,
    /// The invocation's trace context in X-Ray form
    /// (`Root=1-…;Parent=<this invocation's span>;Sampled=1`), handed to the runtime in
    /// `Lambda-Runtime-Trace-Id`; the bootstraps set `_X_AMZN_TRACE_ID` from it.
    pub trace_header: String,
    pub client_context: Option<String>,
}

/// How a native invocation went.
#[derive(Debug)]
pub struct NativeResult {
    pub outcome: Outcome,
    /// The handler's result (JSON) when `outcome` is `Success`.
    pub payload: Option<Bytes>,
    pub error: Option<FunctionError>,
    /// The function's output lines, init output first on a cold start.
    pub logs: Vec<(LogStream, String)>,
    /// From handing the event to the runtime to its answer.
    pub duration: Duration,
    /// The runtime's start (spawn to its first `invocation/next`), on a cold start.
    pub init: Option<Duration>,
    pub max_memory_bytes: Option<u64>,
    /// CPU time the sandbox used for this invocation (for a failed init: the init's).
    pub cpu_time: Option<Duration>,
}

impl NativeResult {
    fn failed(error: FunctionError, outcome: Outcome) -> Self {
        NativeResult {
            outcome,
            payload: None,
            error: Some(error),
            logs: Vec::new(),
            duration: Duration::ZERO,
            init: None,
            max_memory_bytes: None,
            cpu_time: None,
        }
    }
}

/// The instances of one function version.
pub struct NativePool {
    exec: Arc<NativeExecutor>,
    f: NativeFunction,
    /// Idle instances, the most recently used last (reused first: it is the warmest).
    idle: Mutex<Vec<Instance>>,
    /// Idle times and the keep-alive decisions made from them.
    tracker: Mutex<wisp_scaling::Tracker>,
    /// A pre-warm the policy asked for: start an instance at the first time (ms on the
    /// executor's clock) and keep it until the second, unless a call comes first.
    prewarm: Mutex<Option<(u64, u64)>>,
    /// Shared with the instances' guards, which must not hold the pool itself: an idle
    /// instance in `idle` holding its pool would keep the pool alive for ever, and the
    /// pool's drop (which stops its idle instances at a redeploy) would never run.
    live: Arc<AtomicU32>,
    /// Instances serving an invocation now.
    busy: AtomicU32,
    cold_starts: AtomicU64,
    /// Instances started ahead of calls (provisioned or pre-warmed).
    prewarm_count: AtomicU64,
    /// A `maintain` is running (one at a time).
    maintaining: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for NativePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativePool")
            .field("function", &self.f.name)
            .field("version", &self.f.version)
            .field("live", &self.live.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

struct BusyGuard<'a>(&'a AtomicU32);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the supervisor reports when an instance's processes are gone.
#[derive(Debug, Clone, Copy)]
struct Gone {
    exit: Exit,
    oom: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    memory_peak: Option<u64>,
    cpu_time: Option<Duration>,
}

/// A sandbox's id (its cgroup's name and its hostname, at most 64 bytes): unique on the
/// host, also among several nodes (each with its own data directory), which share the
/// cgroup hierarchy under their common parent.
fn sandbox_id(function: &str, version: u32, seq: u64, node_pid: u32) -> String {
    let tail = format!("-{version}-{seq}-n{node_pid}");
    let keep = 64usize.saturating_sub(tail.len());
    let head: String = function.chars().take(keep).collect();
    format!("{head}{tail}")
}

/// What the pool asks of an instance's supervisor.
enum Control {
    Stats(oneshot::Sender<Stats>),
    /// Freeze (true) or thaw; answered once done.
    Freeze(bool, Option<oneshot::Sender<()>>),
}

/// One sandboxed runtime process, as the pool sees it.
struct Instance {
    queue: mpsc::Sender<Pending>,
    init: Option<oneshot::Receiver<Result<(), FunctionError>>>,
    spawned: Instant,
    output: Arc<Output>,
    gone: watch::Receiver<Option<Gone>>,
    control: mpsc::Sender<Control>,
    /// Dropping it tells the supervisor to kill the sandbox.
    _kill: oneshot::Sender<()>,
    api: tokio::task::JoinHandle<()>,
    idle_since: Instant,
    /// When this instance stops if it stays idle (ms on the executor's clock).
    expires_at: u64,
    /// The sandbox's CPU time when its previous invocation (or its init) ended: this
    /// invocation's CPU time is what it adds.
    cpu_mark: Option<Duration>,
    /// Counts the pool's live instances while it exists.
    _live: LiveGuard,
}

struct LiveGuard(Arc<AtomicU32>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.api.abort();
    }
}

impl Instance {
    fn is_gone(&self) -> bool {
        self.gone.borrow().is_some()
    }

    async fn stats(&self) -> Stats {
        let (tx, rx) = oneshot::channel();
        if self.control.send(Control::Stats(tx)).await.is_err() {
            return Stats::default();
        }
        rx.await.unwrap_or_default()
    }

    /// Freezes the sandbox while the instance is idle: whatever a handler left running
    /// (forked busy loops, timers) stops until the next invocation, as on Lambda.
    fn freeze(&self) {
        let _ = self.control.try_send(Control::Freeze(true, None));
    }

    /// Thaws a frozen sandbox before it gets an invocation.
    async fn thaw(&self) {
        let (tx, rx) = oneshot::channel();
        if self
            .control
            .send(Control::Freeze(false, Some(tx)))
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// Waits until the processes are gone; returns how they ended.
    async fn wait_gone(&self) -> Gone {
        let mut gone = self.gone.clone();
        match gone.wait_for(Option::is_some).await {
            Ok(g) => g.expect("waited for Some"),
            Err(_) => Gone {
                exit: Exit::Signal(9),
                oom: false,
            },
        }
    }
}

fn exit_error(gone: Gone, phase: &str) -> (FunctionError, Outcome) {
    if gone.oom || gone.exit == Exit::OutOfMemory {
        return (
            FunctionError::new(
                "Runtime.OutOfMemory",
                format!(
                    "Runtime exited with error: signal: killed ({phase} ran out of memory: raise `limits.memory`)"
                ),
            ),
            Outcome::OutOfMemory,
        );
    }
    let how = match gone.exit {
        Exit::Code(c) => format!("exit status {c}"),
        Exit::Signal(s) => format!("signal {s}"),
        Exit::OutOfMemory => "out of memory".to_string(),
    };
    (
        FunctionError::new(
            "Runtime.ExitError",
            format!("Runtime exited with error: {how} (during {phase})"),
        ),
        Outcome::Error,
    )
}

impl NativePool {
    pub fn function(&self) -> &NativeFunction {
        &self.f
    }

    /// Instances alive now (idle or busy).
    pub fn instances(&self) -> u32 {
        self.live.load(Ordering::Relaxed)
    }

    /// Instances waiting for work now.
    pub fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn cold_starts(&self) -> u64 {
        self.cold_starts.load(Ordering::Relaxed)
    }

    /// Instances serving an invocation now.
    pub fn busy(&self) -> u32 {
        self.busy.load(Ordering::Relaxed)
    }

    /// The function's idle-time histogram now (to persist it).
    pub fn histogram(&self) -> wisp_scaling::IdleHistogram {
        self.tracker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .histogram()
            .clone()
    }

    /// Stops idle instances whose keep-alive has run out (as of `now_ms` on the executor's
    /// clock), and forgets dead ones; keeps the provisioned ones (the most recently used)
    /// whatever their keep-alive.
    pub fn reap(&self, now_ms: u64) {
        let stale: Vec<Instance> = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let alive: Vec<Instance> = std::mem::take(&mut *idle)
                .into_iter()
                .filter(|i| !i.is_gone())
                .collect();
            let keep_min =
                (self.f.limits.provisioned_concurrency).saturating_sub(self.busy()) as usize;
            // Most recently used last: those are kept for the provisioned minimum.
            let n = alive.len();
            let (mut keep, mut stale) = (Vec::new(), Vec::new());
            for (i, inst) in alive.into_iter().enumerate() {
                let provisioned = i + keep_min >= n;
                if provisioned || inst.expires_at > now_ms {
                    keep.push(inst);
                } else {
                    stale.push(inst);
                }
            }
            *idle = keep;
            stale
        };
        drop(stale);
    }

    fn needs_maintenance(&self, now_ms: u64) -> bool {
        let prewarm_due = self
            .prewarm
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|(at, _)| at <= now_ms);
        prewarm_due || self.instances() < self.f.limits.provisioned_concurrency
    }

    /// Starts instances until `provisioned_concurrency` are alive, each through its init,
    /// so that calls find them warm. A runtime that fails to start is retried at the next
    /// reaper tick, not in a tight loop.
    pub async fn maintain(self: Arc<Self>) {
        if self.maintaining.swap(true, Ordering::AcqRel) {
            return;
        }
        let want = self.f.limits.provisioned_concurrency;
        // A pre-warm that is due starts one instance (if none is idle), kept until the
        // end of the window the policy gave.
        let now = self.exec.now_ms();
        let due = {
            let mut p = self.prewarm.lock().unwrap_or_else(|p| p.into_inner());
            match *p {
                Some((at, until)) if at <= now => {
                    *p = None;
                    (until > now).then_some(until)
                }
                _ => None,
            }
        };
        let mut prewarm_until = due.filter(|_| self.idle() == 0);
        while self.instances() < want || prewarm_until.is_some() {
            let mut inst = match self.start().await {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!(function = %self.f.name, "starting a provisioned instance: {}", e.message);
                    break;
                }
            };
            let ready = match inst.init.take() {
                None => true,
                Some(init) => tokio::select! {
                    r = init => matches!(r, Ok(Ok(()))),
                    _ = inst.wait_gone() => false,
                    _ = tokio::time::sleep(INIT_TIMEOUT) => false,
                },
            };
            if !ready {
                tracing::warn!(function = %self.f.name, "a provisioned instance failed to initialise; retrying in a second");
                break;
            }
            inst.idle_since = Instant::now();
            inst.expires_at = prewarm_until.take().unwrap_or(u64::MAX);
            self.prewarm_count.fetch_add(1, Ordering::Relaxed);
            inst.freeze();
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(inst);
        }
        self.maintaining.store(false, Ordering::Release);
    }

    /// Stops every idle instance now.
    pub fn stop_idle(&self) {
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        drop(idle);
    }

    fn take_idle(&self) -> Option<Instance> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(i) = idle.pop() {
            if !i.is_gone() {
                return Some(i);
            }
        }
        None
    }

    fn sandbox_spec(&self, id: &str, interp: &Interpreter) -> Spec {
        let f = &self.f;
        let memory_mb = f.limits.memory_bytes / (1024 * 1024);
        let runtime = f.spec.runtime.to_string();
        let date = time::OffsetDateTime::now_utc().date();
        let mut env: Vec<(String, String)> = vec![
            (
                "PATH".into(),
                "/usr/local/bin:/usr/bin:/bin:/opt/bin".into(),
            ),
            ("LANG".into(), "en_US.UTF-8".into()),
            ("TZ".into(), ":UTC".into()),
            ("HOME".into(), "/tmp".into()),
            (
                "LD_LIBRARY_PATH".into(),
                "/var/task:/var/task/lib:/opt/lib".into(),
            ),
        ];
        if let Some(dir) = interp.program.parent() {
            let path = &mut env[0].1;
            *path = format!("{}:{path}", dir.display());
        }
        match f.spec.runtime {
            Runtime::Python { .. } => {
                env.push(("PYTHONPATH".into(), "/var/task".into()));
                env.push(("PYTHONDONTWRITEBYTECODE".into(), "1".into()));
            }
            Runtime::Nodejs { .. } => {
                env.push((
                    "NODE_PATH".into(),
                    "/var/task/node_modules:/var/task".into(),
                ));
            }
            Runtime::Provided => {}
        }
        // The function's own variables, then the reserved ones, which it cannot override.
        let mut vars: HashMap<String, String> = env.into_iter().collect();
        vars.extend(f.env.iter().cloned());
        let reserved = [
            ("_HANDLER", f.spec.handler.clone()),
            ("LAMBDA_TASK_ROOT", "/var/task".into()),
            ("LAMBDA_RUNTIME_DIR", RUNTIME_MOUNT.into()),
            ("AWS_LAMBDA_FUNCTION_NAME", f.name.clone()),
            ("AWS_LAMBDA_FUNCTION_VERSION", f.version.to_string()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb.to_string()),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{}", f.name),
            ),
            (
                "AWS_LAMBDA_LOG_STREAM_NAME",
                format!(
                    "{:04}/{:02}/{:02}/[{}]{id}",
                    date.year(),
                    date.month() as u8,
                    date.day(),
                    f.version
                ),
            ),
            ("AWS_REGION", self.exec.config.region.clone()),
            ("AWS_DEFAULT_REGION", self.exec.config.region.clone()),
            ("AWS_EXECUTION_ENV", format!("AWS_Lambda_{runtime}")),
            ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
        ];
        vars.extend(reserved.into_iter().map(|(k, v)| (k.to_string(), v)));
        // The node's S3 keys, reserved too, for functions that can reach it; a session
        // token from `env` would not go with them.
        if f.spec.network
            && let Some(s3) = &self.exec.config.s3
        {
            vars.remove("AWS_SESSION_TOKEN");
            vars.extend(s3.env().map(|(k, v)| (k.to_string(), v)));
        }
        let mut env: Vec<(String, String)> = vars.into_iter().collect();
        env.sort();
        let mut ro_mounts: Vec<(PathBuf, PathBuf)> = interp
            .mounts
            .iter()
            .map(|m| (m.clone(), m.clone()))
            .collect();
        ro_mounts.push((
            self.exec.config.runtime_dir.clone(),
            PathBuf::from(RUNTIME_MOUNT),
        ));
        Spec {
            id: id.to_string(),
            program: interp.program.clone(),
            args: interp.args.clone(),
            env,
            code_dir: f.code_dir.clone(),
            ro_mounts,
            cwd: PathBuf::from("/var/task"),
            tmp_bytes: self.exec.config.tmp_bytes,
            memory_bytes: f.limits.memory_bytes,
            pids_max: 1024,
            // CPU share grows with memory, as on Lambda (128 MB = the default share).
            cpu_weight: ((memory_mb * 100 / 128).clamp(1, 10_000)) as u32,
            network: f.spec.network,
            listener_env: Some("AWS_LAMBDA_RUNTIME_API".into()),
        }
    }

    /// Starts a new instance (a cold start).
    async fn start(self: &Arc<Self>) -> Result<Instance, FunctionError> {
        let interp = self
            .exec
            .interpreter(self.f.spec.runtime)
            .map_err(|m| FunctionError::new("Runtime.Unavailable", m))?;
        let seq = self.exec.seq.fetch_add(1, Ordering::Relaxed);
        let id = sandbox_id(&self.f.name, self.f.version, seq, std::process::id());
        let spec = self.sandbox_spec(&id, &interp);
        let spawned = Instant::now();
        let mut sandbox = self.exec.sandboxes.spawn(spec).await.map_err(|e| {
            FunctionError::new(
                "Runtime.SandboxError",
                format!("starting the runtime failed: {e}"),
            )
        })?;
        self.live.fetch_add(1, Ordering::Relaxed);
        let live = LiveGuard(self.live.clone());
        let output = Arc::new(Output::default());
        if let Some(out) = sandbox.stdout.take() {
            let probe = out.as_fd().try_clone_to_owned().ok();
            output.attach(LogStream::Stdout, out, probe);
        }
        if let Some(err) = sandbox.stderr.take() {
            let probe = err.as_fd().try_clone_to_owned().ok();
            output.attach(LogStream::Stderr, err, probe);
        }
        let arn = format!(
            "arn:aws:lambda:{}:000000000000:function:{}",
            self.exec.config.region, self.f.name
        );
        let (state, queue, init) = ApiState::new(arn);
        let listener = sandbox
            .listener
            .try_clone()
            .map_err(|e| FunctionError::new("Runtime.SandboxError", e.to_string()))?;
        let api = tokio::spawn(runtime_api::serve(listener, state));
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        let (gone_tx, gone_rx) = watch::channel(None);
        let (control_tx, control_rx) = mpsc::channel(4);
        tokio::spawn(supervise(sandbox, kill_rx, gone_tx, control_rx));
        Ok(Instance {
            queue,
            init: Some(init),
            spawned,
            output,
            gone: gone_rx,
            control: control_tx,
            _kill: kill_tx,
            api,
            idle_since: Instant::now(),
            expires_at: u64::MAX,
            cpu_mark: None,
            _live: live,
        })
    }

    /// Records the end of an invocation in the tracker and returns its keep-alive decision.
    fn decide(&self, now: u64) -> wisp_scaling::Decision {
        self.tracker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .on_end(now)
    }

    /// Gives an instance back after its invocation: kept warm for the policy's keep-alive,
    /// or, when the policy expects the next call only later, stopped now and pre-warmed
    /// shortly before (the hybrid-histogram policy's "unload, then load ahead").
    fn release(&self, mut inst: Instance) {
        let now = self.exec.now_ms();
        let decision = self.decide(now);
        if inst.is_gone() {
            return;
        }
        let keep_for_provisioned = self.instances() <= self.f.limits.provisioned_concurrency;
        if decision.prewarm_after > Duration::ZERO && !keep_for_provisioned {
            *self.prewarm.lock().unwrap_or_else(|p| p.into_inner()) = Some(decision.window_ms(now));
            drop(inst); // stops the sandbox
            return;
        }
        inst.idle_since = Instant::now();
        inst.expires_at = now.saturating_add(decision.keep_alive.as_millis() as u64);
        inst.freeze();
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(inst);
    }

    /// Instances started ahead of calls so far (provisioned or pre-warmed).
    pub fn prewarmed(&self) -> u64 {
        self.prewarm_count.load(Ordering::Relaxed)
    }

    /// Runs one invocation on an idle instance, or on a new one.
    pub async fn invoke(self: &Arc<Self>, req: NativeRequest) -> NativeResult {
        self.busy.fetch_add(1, Ordering::Relaxed);
        let _busy = BusyGuard(&self.busy);
        {
            // A call before the pre-warm time makes the pre-warm moot.
            *self.prewarm.lock().unwrap_or_else(|p| p.into_inner()) = None;
            self.tracker
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .on_start(self.exec.now_ms());
        }
        let idle = match self.take_idle() {
            Some(i) => {
                i.thaw().await;
                // Killed while it was frozen: it is gone now, take a fresh one.
                (!i.is_gone()).then_some(i)
            }
            None => None,
        };
        let mut inst = match idle {
            Some(i) => i,
            None => match self.start().await {
                Ok(i) => {
                    self.cold_starts.fetch_add(1, Ordering::Relaxed);
                    i
                }
                Err(e) => {
                    self.decide(self.exec.now_ms());
                    return NativeResult::failed(e, Outcome::Error);
                }
            },
        };
        let mut init_duration = None;
        if let Some(init) = inst.init.take() {
            let result = tokio::select! {
                r = init => r.unwrap_or_else(|_| Err(FunctionError::new("Runtime.ExitError", "the runtime's API went away during init"))),
                gone = inst.wait_gone() => Err(exit_error(gone, "init").0),
                _ = tokio::time::sleep(INIT_TIMEOUT) => Err(FunctionError::new(
                    "Sandbox.Timedout",
                    format!("Init timed out after {} seconds: the runtime did not ask for its first invocation", INIT_TIMEOUT.as_secs()),
                )),
            };
            init_duration = Some(inst.spawned.elapsed());
            if let Err(e) = result {
                // The runtime reported why (or died): give it a moment to exit and to
                // flush its output, then stop it.
                let outcome = match inst.is_gone().then(|| *inst.gone.borrow()) {
                    Some(Some(g)) if g.oom => Outcome::OutOfMemory,
                    _ => Outcome::Error,
                };
                let _ = tokio::time::timeout(Duration::from_millis(200), inst.wait_gone()).await;
                let logs = inst.output.take().await;
                let stats = inst.stats().await;
                self.decide(self.exec.now_ms());
                return NativeResult {
                    logs,
                    init: init_duration,
                    max_memory_bytes: stats.memory_peak,
                    cpu_time: stats.cpu_time,
                    ..NativeResult::failed(e, outcome)
                };
            }
        }
        let timeout = Duration::from_millis(self.f.limits.timeout_ms);
        let (reply_tx, reply_rx) = oneshot::channel();
        let pending = Pending {
            id: req.request_id.clone(),
            event: req.event,
            deadline_ms: now_ms() + self.f.limits.timeout_ms as i64,
            trace_header: req.trace_header,
            client_context: req.client_context,
            reply: reply_tx,
        };
        if inst.cpu_mark.is_none() {
            // The first invocation of this instance: its init's CPU time is not its own.
            inst.cpu_mark = inst.stats().await.cpu_time;
        }
        let started = Instant::now();
        let outcome = if inst.queue.send(pending).await.is_err() {
            Err((
                FunctionError::new("Runtime.ExitError", "the runtime's API went away"),
                Outcome::Error,
                true,
            ))
        } else {
            tokio::select! {
                reply = reply_rx => match reply {
                    Ok(Reply::Response(body)) => Ok(body),
                    Ok(Reply::Error(e)) => Err((e, Outcome::Error, false)),
                    Err(_) => Err((FunctionError::new("Runtime.ExitError", "the runtime's API went away"), Outcome::Error, true)),
                },
                gone = inst.wait_gone() => {
                    let (e, o) = exit_error(gone, "the invocation");
                    Err((e, o, true))
                }
                _ = tokio::time::sleep(timeout) => Err((
                    FunctionError::new(
                        "Sandbox.Timedout",
                        format!("Task timed out after {:.2} seconds", timeout.as_secs_f64()),
                    ),
                    Outcome::Timeout,
                    true,
                )),
            }
        };
        let duration = started.elapsed();
        let logs = inst.output.take().await;
        let stats = inst.stats().await;
        let cpu_time = match (stats.cpu_time, inst.cpu_mark) {
            (Some(now), Some(mark)) => Some(now.saturating_sub(mark)),
            _ => None,
        };
        inst.cpu_mark = stats.cpu_time;
        let mut result = NativeResult {
            outcome: Outcome::Success,
            payload: None,
            error: None,
            logs,
            duration,
            init: init_duration,
            max_memory_bytes: stats.memory_peak,
            cpu_time,
        };
        match outcome {
            Ok(body) => result.payload = Some(body),
            Err((e, o, fatal)) => {
                result.outcome = o;
                result.error = Some(e);
                if fatal {
                    // Killed on drop: the next call gets a fresh instance.
                    self.decide(self.exec.now_ms());
                    return result;
                }
            }
        }
        self.release(inst);
        result
    }
}

impl Drop for NativePool {
    fn drop(&mut self) {
        self.stop_idle();
    }
}

/// Owns the sandbox: reports its end, answers stats requests, kills it when the instance
/// is dropped.
async fn supervise(
    mut sandbox: wisp_sandbox::Instance,
    mut kill: oneshot::Receiver<()>,
    gone: watch::Sender<Option<Gone>>,
    mut control: mpsc::Receiver<Control>,
) {
    let read_stats = |s: &wisp_sandbox::Instance| Stats {
        memory_peak: s.memory_peak_bytes(),
        cpu_time: s.cpu_time(),
    };
    // While frozen, a SIGKILL from outside (an operator, the OOM killer of another
    // cgroup) waits for a thaw: look for one now and then, so a killed idle instance is
    // seen as gone (and replaced) instead of failing its next call.
    let mut frozen = false;
    let mut check = tokio::time::interval(Duration::from_millis(250));
    let mut thawed_reply = None;
    let exit = loop {
        tokio::select! {
            exit = sandbox.wait() => break exit,
            _ = check.tick(), if frozen => {
                if sandbox.kill_pending() {
                    let _ = sandbox.thaw();
                    break sandbox.wait().await;
                }
            }
            _ = &mut kill => {
                sandbox.kill();
                break sandbox.wait().await;
            }
            Some(c) = control.recv() => match c {
                Control::Stats(reply) => {
                    let _ = reply.send(read_stats(&sandbox));
                }
                Control::Freeze(freeze, done) => {
                    let r = if freeze { sandbox.freeze() } else { sandbox.thaw() };
                    if let Err(e) = &r {
                        tracing::warn!(sandbox = sandbox.id(), "{} the sandbox: {e}", if freeze { "freezing" } else { "thawing" });
                    }
                    frozen = freeze && matches!(r, Ok(true));
                    if !freeze && sandbox.kill_pending() {
                        // Killed while frozen: it dies now; answer once that is known.
                        thawed_reply = done;
                        break sandbox.wait().await;
                    }
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                }
            }
        }
    };
    let oom = sandbox.oom_killed();
    let _ = gone.send(Some(Gone { exit, oom }));
    if let Some(done) = thawed_reply {
        let _ = done.send(());
    }
    // Answer stats asked after the end, until the instance is dropped.
    let last = read_stats(&sandbox);
    drop(sandbox);
    while let Some(c) = control.recv().await {
        match c {
            Control::Stats(reply) => {
                let _ = reply.send(last);
            }
            Control::Freeze(_, done) => {
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
        }
    }
}

use std::os::fd::AsFd;

/// Makes a directory tree readable by the sandbox user (compileall keeps the umask's modes).
fn make_readable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            make_readable(&p);
        } else {
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644));
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Lambda's lines around an invocation's output: `START`, `END` and `REPORT`.
pub fn report_lines(
    request_id: &str,
    version: u32,
    memory_mb: u64,
    result: &NativeResult,
) -> (String, String, String) {
    let start = format!("START RequestId: {request_id} Version: {version}");
    let end = format!("END RequestId: {request_id}");
    let ms = result.duration.as_secs_f64() * 1000.0;
    let billed = wisp_core::billed_ms(result.duration.as_micros() as u64);
    let mut report = format!(
        "REPORT RequestId: {request_id}\tDuration: {ms:.2} ms\tBilled Duration: {billed} ms\tMemory Size: {memory_mb} MB\tMax Memory Used: {} MB",
        result
            .max_memory_bytes
            .map(|b| b.div_ceil(1024 * 1024))
            .unwrap_or(0)
    );
    if let Some(init) = result.init {
        report.push_str(&format!(
            "\tInit Duration: {:.2} ms",
            init.as_secs_f64() * 1000.0
        ));
    }
    if result.outcome == Outcome::Timeout {
        report.push_str("\tStatus: timeout");
    } else if result.outcome == Outcome::OutOfMemory {
        report.push_str("\tStatus: error\tError Type: Runtime.OutOfMemory");
    }
    (start, end, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_ids_name_the_node_and_fit_a_hostname() {
        assert_eq!(sandbox_id("hello", 3, 7, 4242), "hello-3-7-n4242");
        // Two nodes running the same function get different ids.
        assert_ne!(sandbox_id("f", 1, 0, 1), sandbox_id("f", 1, 0, 2));
        let long = sandbox_id(&"x".repeat(64), 4_000_000_000, u64::MAX, u32::MAX);
        assert!(long.len() <= 64, "{long}");
        assert!(long.ends_with(&format!("-{}-n{}", u64::MAX, u32::MAX)));
    }

    #[test]
    fn s3_access_gives_the_sdk_variables_and_hides_the_secret_from_debug() {
        let s3 = S3Access {
            endpoint: "http://127.0.0.1:9000".into(),
            access_key_id: "WISPKEY".into(),
            secret_access_key: "s3cr3t".into(),
        };
        let env: HashMap<_, _> = s3.env().into_iter().collect();
        assert_eq!(env["AWS_ENDPOINT_URL_S3"], "http://127.0.0.1:9000");
        assert_eq!(env["AWS_ACCESS_KEY_ID"], "WISPKEY");
        assert_eq!(env["AWS_SECRET_ACCESS_KEY"], "s3cr3t");
        let mut config = NativeConfig::new(Path::new("/data"));
        config.s3 = Some(s3);
        let printed = format!("{config:?}");
        assert!(
            printed.contains("WISPKEY") && !printed.contains("s3cr3t"),
            "{printed}"
        );
    }

    #[test]
    fn report_line_has_lambdas_fields() {
        let r = NativeResult {
            duration: Duration::from_micros(12_340),
            init: Some(Duration::from_millis(40)),
            max_memory_bytes: Some(30 * 1024 * 1024 + 1),
            ..NativeResult::failed(FunctionError::new("x", "y"), Outcome::Success)
        };
        let (start, end, report) = report_lines("abc", 3, 128, &r);
        assert_eq!(start, "START RequestId: abc Version: 3");
        assert_eq!(end, "END RequestId: abc");
        assert_eq!(
            report,
            "REPORT RequestId: abc\tDuration: 12.34 ms\tBilled Duration: 13 ms\tMemory Size: 128 MB\tMax Memory Used: 31 MB\tInit Duration: 40.00 ms"
        );
    }
}
