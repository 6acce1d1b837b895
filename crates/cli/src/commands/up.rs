use crate::client::Client;
use crate::output::progress;
use anyhow::{Context, Result};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use wisp_executor::{Executor, ExecutorConfig};
use wisp_invoker::{Invoker, LogSink, Retention};
use wisp_store::{ArtifactDir, SqliteStore, Store};

/// Run a Wisp node: the function gateway and the platform API, with all state in one data
/// directory. Stops gracefully on Ctrl-C or SIGTERM (in-flight requests finish).
#[derive(clap::Args)]
pub struct Up {
    /// Where the node keeps its state (database, artifacts, API token).
    #[arg(long, env = "WISP_DATA_DIR", default_value = ".wisp")]
    pub data_dir: PathBuf,
    /// Address of the function gateway.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    /// Address of the platform API.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub api: SocketAddr,
    /// Address of the S3-compatible object storage API (`wisp s3 credentials` prints its
    /// keys); uploads and removals there trigger functions with `s3:` in their manifest.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub s3: SocketAddr,
    /// Deploy this manifest (or directory with a wisp.yaml) once the node is up; repeatable.
    #[arg(long, value_name = "MANIFEST")]
    pub deploy: Vec<PathBuf>,
    /// Instances that may run at once on this node (wasm instance pool slots).
    #[arg(long, default_value_t = 1000)]
    pub max_instances: u32,
    /// Bytes of each instance's memory reset in place rather than unmapped when its pool
    /// slot is reused (e.g. `2MiB`; `0` always unmaps).
    #[arg(long, default_value = "2MiB", value_parser = parse_size)]
    pub keep_resident: u64,
    /// How long in-flight requests may take to finish at shutdown.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// A YAML or JSON price sheet for `wisp cost` (fields: per_million_requests,
    /// per_gb_second, free_requests, free_gb_seconds, server_hourly, server_concurrency;
    /// default: AWS Lambda's published prices and free tier).
    #[arg(long, value_name = "FILE")]
    pub price_sheet: Option<PathBuf>,
    /// The node's capacity: memory that running invocations may hold at once, each its
    /// function's `memory` (e.g. `8GiB`; default 90% of the machine's memory). Reserved
    /// concurrency is set aside from it.
    #[arg(long, value_parser = parse_size)]
    pub memory_budget: Option<u64>,
    /// How long a call may wait for a busy function (at its concurrency limit, or the node
    /// at capacity) before it gets 429.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub queue_wait: Duration,
    /// How many calls may wait per function; more get 429 at once.
    #[arg(long, default_value_t = 1000)]
    pub queue_depth: u32,
    /// Compiled WebAssembly code not used for this long is unloaded from memory (and
    /// mapped again from disk, without recompiling, at the next call); `0` keeps it.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub unload_after: Duration,
    /// How long an idle native instance (a runtime process) is kept, and whether one is
    /// pre-warmed ahead of an expected call: `adaptive` (per function, from a histogram of
    /// its idle times, kept across restarts), `fixed:10m`, or a duration (fixed).
    #[arg(long, default_value = "adaptive", value_parser = parse_keep_alive)]
    pub native_keep_alive: wisp_scaling::Policy,
    /// `AWS_REGION` as native functions see it, and the one region the S3 API accepts
    /// signatures for (`wisp s3 credentials` prints it).
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Node log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Export every invocation as a span over OTLP/HTTP to this collector, e.g.
    /// `http://127.0.0.1:4318` (`/v1/traces` is added). Spans are kept locally for
    /// `wisp trace` either way.
    #[arg(long, env = "WISP_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Meter invocations (usage records, cost, stored spans). `false` only to measure what
    /// metering costs: usage, cost and traces then stay empty.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, hide = true)]
    pub metering: bool,
    /// Development mode: the gateway's error responses carry the function's error (its
    /// message, a panic's backtrace), which can hold anything the function saw, secrets
    /// included. Without it public callers get a generic message, the status and the
    /// request id; the details are in `wisp logs`.
    #[arg(long)]
    pub dev: bool,
    /// Connections each listener (gateway, platform API, S3 API) keeps open at once; more
    /// wait in the kernel's backlog.
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,
    /// How long a client may take to send a request's headers once it has begun.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// How long a connection with no request in flight may stay silent before it is
    /// closed.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
}

#[derive(clap::ValueEnum, Clone, Copy)]
pub enum LogFormat {
    Text,
    Json,
}

/// This host's name, for the spans' `host.name`.
fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "wisp".into())
}

fn parse_keep_alive(s: &str) -> Result<wisp_scaling::Policy, String> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(wisp_scaling::Policy::Fixed { keep_alive: d });
    }
    let policy: wisp_scaling::Policy = s.parse()?;
    policy.validate()?;
    Ok(policy)
}

fn parse_size(s: &str) -> Result<u64, String> {
    wisp_core::parse_byte_size(s).map_err(|e| e.to_string())
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WISP_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,wasmtime=warn,cranelift=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Reads the API token, creating it (readable by the owner only) at first start.
fn load_or_create_token(data_dir: &Path) -> Result<String> {
    let path = data_dir.join("api-token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_string();
        if !t.is_empty() {
            return Ok(t);
        }
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(&path)
        .with_context(|| format!("creating the API token file {}", path.display()))?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    Ok(token)
}

async fn bind(addr: SocketAddr, what: &str, flag: &str) -> Result<TcpListener> {
    if !addr.ip().is_loopback() {
        tracing::warn!("{what} listens on {addr}, which is reachable from other machines");
    }
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} for the {what}: choose another address with {flag}")
    })
}

fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing a SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = tx.send(true);
    });
    rx
}

async fn wait(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// The data directory holds the API token, functions' env values, code and logs: only
/// the node's user may enter it. (Sandboxes get their code as mount trees the node opens,
/// so they need no access to it.)
fn restrict_data_dir(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
}

/// The object store's access key, created at first start (readable by the owner only).
fn load_or_create_s3_keys(data_dir: &Path) -> Result<(String, String)> {
    let path = data_dir.join("s3-credentials");
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        && let (Some(id), Some(secret)) =
            (v["access_key_id"].as_str(), v["secret_access_key"].as_str())
    {
        return Ok((id.to_string(), secret.to_string()));
    }
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let id: String = "WISP"
        .chars()
        .chain((0..16).map(|_| ALNUM[rand::random_range(0..ALNUM.len())] as char))
        .collect();
    let secret = base64_secret();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(
        serde_json::json!({"access_key_id": id, "secret_access_key": secret})
            .to_string()
            .as_bytes(),
    )?;
    f.sync_all()?;
    Ok((id, secret))
}

/// Where a client on this machine connects to a listener bound to `addr`: loopback for a
/// wildcard address (`--s3 0.0.0.0:9000`).
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, addr.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

fn base64_secret() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .encode(rand::random::<[u8; 30]>())
        .replace(['+', '/'], "x")
}

/// Turns object-storage events into async invocations of the functions whose `s3:`
/// triggers match: Lambda's S3 notification (`{"Records": [...]}`) for native functions,
/// a CloudEvent carrying the same record for WebAssembly ones. The S3 request that made
/// the change is answered only once every one of them is durably enqueued (fsynced), so
/// a node that dies after "200 OK" still runs the triggers when it comes back; if an
/// enqueue fails, the request fails (503) and the client's retry triggers again.
struct ObjectTriggers {
    invoker: Arc<Invoker>,
    events: wisp_events::EventStore,
    region: String,
    /// `send` runs on the object store's blocking threads; enqueues run on the node's
    /// runtime.
    runtime: tokio::runtime::Handle,
}

impl wisp_objects::EventSink for ObjectTriggers {
    fn send(&self, ev: wisp_objects::ObjectEvent) -> wisp_objects::Ack {
        // Matched against the functions deployed when the change committed.
        let invocations = route_object_event(&self.invoker.registry(), &ev, &self.region);
        if invocations.is_empty() {
            return wisp_objects::Ack::done();
        }
        let (acker, ack) = wisp_objects::Ack::pending();
        let events = self.events.clone();
        // Spawned, not awaited by the request: a client that hangs up does not stop it.
        self.runtime.spawn(async move {
            let enqueues = invocations.into_iter().map(|(function, payload, opts)| {
                let events = events.clone();
                async move {
                    events
                        .enqueue_invocation(&function, &payload, opts)
                        .await
                        .map_err(|e| format!("function {function}: {e}"))
                }
            });
            let result = futures::future::join_all(enqueues)
                .await
                .into_iter()
                .collect::<Result<Vec<_>, String>>()
                .map(drop);
            if let Err(e) = &result {
                tracing::error!(bucket = %ev.bucket, key = %ev.key, "object event not enqueued: {e}");
            }
            acker.ack(result);
        });
        ack
    }
}

/// The async invocations one object event makes: (function, payload, options) for every
/// function whose `s3:` triggers match its bucket, key prefix and suffix, and kind.
fn route_object_event(
    registry: &wisp_invoker::Registry,
    ev: &wisp_objects::ObjectEvent,
    region: &str,
) -> Vec<(String, Vec<u8>, wisp_events::EnqueueOptions)> {
    let created = matches!(ev.kind, wisp_objects::EventKind::ObjectCreated(_));
    let mut out = Vec::new();
    for f in registry.functions() {
        let wanted = f.spec.object_triggers.iter().any(|t| {
            t.bucket == ev.bucket
                && ev.key.starts_with(&t.prefix)
                && ev.key.ends_with(&t.suffix)
                && if created { t.created } else { t.removed }
        });
        if !wanted {
            continue;
        }
        let record = wisp_objects::s3_notification_record(ev, region);
        let mut opts = wisp_invoker::event_options(&f.spec);
        let payload = if f.spec.native.is_some() {
            serde_json::to_vec(&serde_json::json!({ "Records": [record] })).unwrap_or_default()
        } else {
            // The event's own trace, in the CloudEvent and for its invocations alike.
            let id = wisp_events::EventId::new();
            let traceparent = wisp_events::envelope::event_traceparent(id);
            (opts.id, opts.traceparent) = (Some(id), Some(traceparent.clone()));
            let time = wisp_events::Timestamp::from_nanosecond(ev.time.unix_timestamp_nanos());
            let mut ce = wisp_events::envelope::CloudEvent::new(
                ev.sequencer.clone(),
                format!("wisp:s3:{}", ev.bucket),
                format!("wisp.s3.{}", ev.kind.event_name()),
            );
            if let Ok(t) = time {
                ce = ce.with_time(t);
            }
            ce.with_subject(ev.key.clone())
                .with_traceparent(Some(traceparent))
                .with_json(record)
                .to_json()
        };
        out.push((f.name.to_string(), payload, opts));
    }
    out
}

/// Keeps one poller per function with a `queue:` subscription, matching the registry.
async fn run_queue_subscriptions(
    invoker: Arc<Invoker>,
    events: wisp_events::EventStore,
    region: String,
) {
    use std::collections::HashMap;
    let mut changes = invoker.subscribe();
    let mut running: HashMap<(String, wisp_core::QueueSubscription), tokio::task::JoinHandle<()>> =
        HashMap::new();
    loop {
        let wanted: Vec<(String, wisp_core::QueueSubscription)> = invoker
            .registry()
            .functions()
            .filter_map(|f| Some((f.name.to_string(), f.spec.queue.clone()?)))
            .collect();
        running.retain(|key, task| {
            let keep = wanted.contains(key);
            if !keep {
                task.abort();
            }
            keep
        });
        for key in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(key) {
                let (function, sub) = slot.key().clone();
                slot.insert(tokio::spawn(poll_queue(
                    invoker.clone(),
                    events.clone(),
                    function,
                    sub,
                    region.clone(),
                )));
            }
        }
        if changes.changed().await.is_err() {
            break;
        }
    }
}

/// Receives batches from a queue and runs the function on each: SQS-shaped records for
/// native functions (and WebAssembly ones, as JSON). A success deletes the batch except the
/// messages the function reports in `batchItemFailures`; a failure deletes nothing, so the
/// messages come back after their visibility timeout (and, past the queue's
/// `max_receive_count`, go to its dead-letter queue).
async fn poll_queue(
    invoker: Arc<Invoker>,
    events: wisp_events::EventStore,
    function: String,
    sub: wisp_core::QueueSubscription,
    region: String,
) {
    let config = match events.list_queues().await {
        Ok(qs) => qs.into_iter().find(|(n, _)| *n == sub.name).map(|(_, c)| c),
        Err(e) => {
            tracing::error!(function, queue = sub.name, "listing queues: {e}");
            return;
        }
    };
    let config = match config {
        Some(c) => c,
        None => {
            let c = wisp_events::QueueConfig::default();
            if let Err(e) = events.create_queue(&sub.name, c.clone()).await {
                tracing::error!(function, queue = sub.name, "creating the queue: {e}");
                return;
            }
            c
        }
    };
    let visibility = config.visibility_timeout;
    let opts = wisp_events::BatchReceive {
        max: sub.batch_size as usize,
        window: Duration::from_millis(sub.batch_window_ms),
        wait: Duration::from_secs(5),
        visibility: None,
    };
    loop {
        let batch = match events.receive_batch(&sub.name, &opts).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(function, queue = sub.name, "receiving: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if batch.is_empty() {
            continue;
        }
        for m in batch
            .iter()
            .filter(|m| m.attributes.approximate_receive_count > 1)
        {
            tracing::info!(
                function,
                queue = sub.name,
                message_id = m.message_id,
                receive_count = m.attributes.approximate_receive_count,
                "redelivering a message"
            );
        }
        let event = wisp_events::envelope::sqs_event(&batch, &region);
        let payload = serde_json::to_vec(&event).unwrap_or_default();
        let request_id = wisp_invoker::new_request_id();
        let run = invoker.invoke_payload(
            &function,
            wisp_core::Trigger::Queue,
            request_id.clone(),
            payload.into(),
            None,
        );
        // The batch stays hidden while the function runs (its timeout may be longer than
        // the queue's visibility timeout): otherwise it would be delivered again mid-run
        // and this run's deletes would no longer match the messages' receipts.
        let done = {
            tokio::pin!(run);
            let every = (visibility / 2).max(Duration::from_millis(200));
            let mut extend = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tokio::select! {
                    done = &mut run => break done,
                    _ = extend.tick() => {
                        for m in &batch {
                            let _ = events.change_visibility(&m.receipt_handle, visibility).await;
                        }
                    }
                }
            }
        };
        let ids: Vec<&str> = batch.iter().map(|m| m.message_id.as_str()).collect();
        let (ran, status, body) = match done {
            Ok(c) => {
                let status = c.response.as_ref().map(|r| r.status().as_u16());
                let ran = match c.outcome {
                    wisp_core::Outcome::Success => Ok(()),
                    o => Err(c.error.unwrap_or_else(|| format!("{o:?}"))),
                };
                (
                    ran,
                    status,
                    c.response.map(|r| r.into_body()).unwrap_or_default(),
                )
            }
            Err(e) => (Err(e.to_string()), None, bytes::Bytes::new()),
        };
        use wisp_events::envelope::BatchResponse;
        let failed: Vec<String> = match wisp_events::envelope::batch_outcome(
            ran, status, &body, &ids,
        ) {
            BatchResponse::AllSucceeded => Vec::new(),
            BatchResponse::Failed(f) => {
                tracing::warn!(
                    function,
                    queue = sub.name,
                    request_id,
                    failed = f.len(),
                    of = batch.len(),
                    "the function reported batchItemFailures: those messages are delivered again after {visibility:?}"
                );
                f
            }
            BatchResponse::AllFailed(why) => {
                tracing::warn!(
                    function,
                    queue = sub.name,
                    request_id,
                    messages = batch.len(),
                    "the batch failed ({why}): its messages are delivered again after {visibility:?}"
                );
                continue;
            }
        };
        if let Err(e) = events.settle_batch(&batch, &failed).await {
            tracing::warn!(
                function,
                queue = sub.name,
                "deleting processed messages: {e}"
            );
        }
    }
}

/// The schedules of the deployed functions, as the scheduler runs them: named after the
/// function (`NAME`, or `NAME-2`... for more than one), an EventBridge "Scheduled Event"
/// for native functions and a CloudEvent for WebAssembly ones.
fn schedule_defs(registry: &wisp_invoker::Registry) -> Vec<wisp_events::ScheduleDef> {
    let mut defs = Vec::new();
    for f in registry.functions() {
        for (i, s) in f.spec.schedules.iter().enumerate() {
            let tz = if s.timezone.is_empty() {
                "UTC"
            } else {
                s.timezone.as_str()
            };
            let schedule = match wisp_events::schedule::Schedule::parse(&s.expression, tz) {
                Ok(sc) => sc,
                Err(e) => {
                    tracing::error!(function = %f.name, "schedule not run: {e}");
                    continue;
                }
            };
            let name = if i == 0 {
                f.name.to_string()
            } else {
                format!("{}-{}", f.name, i + 1)
            };
            let mut def = wisp_events::ScheduleDef::new(name, schedule, f.name.to_string());
            def.missed = if s.skip_missed {
                wisp_events::MissedTicks::Skip
            } else {
                wisp_events::MissedTicks::RunOnce
            };
            def.payload = if f.spec.native.is_some() {
                wisp_events::TickPayload::ScheduledEvent
            } else {
                wisp_events::TickPayload::CloudEvent
            };
            def.options = wisp_invoker::event_options(&f.spec);
            defs.push(def);
        }
    }
    defs
}

/// The sandboxes native functions run in. A protection this host cannot give is said
/// out loud at start (and by `wisp doctor`), never skipped silently.
fn start_native(up: &Up, s3: wisp_native::S3Access) -> Result<Arc<wisp_native::NativeExecutor>> {
    let exe = std::env::current_exe().context("finding the wisp executable")?;
    let sandboxes = Arc::new(
        wisp_sandbox::Sandboxes::new(exe).context("setting up sandboxes for native functions")?,
    );
    for p in sandboxes.protections().iter().filter(|p| !p.available) {
        tracing::warn!(
            protection = p.name,
            "native functions run without this protection: {}",
            p.detail
        );
    }
    let mut config = wisp_native::NativeConfig::new(&up.data_dir);
    config.keep_alive = up.native_keep_alive;
    config.region = up.region.clone();
    config.s3 = Some(s3);
    Ok(Arc::new(
        wisp_native::NativeExecutor::new(sandboxes, config)
            .context("writing the native runtimes' bootstraps")?,
    ))
}

/// An axum router as a handler for the node's accept loop, with the peer's address as
/// axum's `ConnectInfo`.
fn axum_handler(
    router: axum::Router,
) -> impl Fn(
    http::Request<hyper::body::Incoming>,
    SocketAddr,
) -> futures::future::BoxFuture<'static, http::Response<axum::body::Body>>
+ Clone
+ Send
+ Sync
+ 'static {
    use tower::ServiceExt as _;
    move |req, peer| {
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let router = router.clone();
        Box::pin(async move {
            match router.oneshot(req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            }
        })
    }
}

impl Up {
    pub async fn execute(self) -> Result<ExitCode> {
        init_tracing(self.log_format);
        for m in &self.deploy {
            let p = super::deploy::manifest_path(m);
            anyhow::ensure!(
                p.exists(),
                "--deploy {}: {} not found",
                m.display(),
                p.display()
            );
        }
        let prices = match &self.price_sheet {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading the price sheet {}", p.display()))?;
                serde_saphyr::from_str::<wisp_core::PriceSheet>(&text)
                    .map_err(|e| anyhow::anyhow!("price sheet {}: {e}", p.display()))?
            }
            None => wisp_core::PriceSheet::default(),
        };
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("creating data directory {}", self.data_dir.display()))?;
        // Before anything else in the directory is read or written.
        let node_lock = crate::node_dir::DataDirLock::acquire(&self.data_dir)?;
        let token = load_or_create_token(&self.data_dir)?;
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&self.data_dir)
                .with_context(|| format!("opening the store in {}", self.data_dir.display()))?,
        );
        let artifacts = ArtifactDir::open(&self.data_dir)?;
        restrict_data_dir(&self.data_dir);
        let executor = Arc::new(Executor::new(ExecutorConfig {
            max_instances: self.max_instances,
            keep_resident_bytes: usize::try_from(self.keep_resident).unwrap_or(usize::MAX),
            ..ExecutorConfig::default()
        })?);
        let exporter = match &self.otlp_endpoint {
            Some(endpoint) => Some(crate::otlp::start(endpoint, &node_name())?),
            None => None,
        };
        let logs = LogSink::start_with(store.clone(), Retention::default(), exporter);
        // The object store's address and keys, which native functions with network access
        // get (its API starts further down, once the invoker exists).
        let s3 = bind(self.s3, "object storage API", "--s3").await?;
        let s3_addr = s3.local_addr()?;
        let (key_id, secret) = load_or_create_s3_keys(&self.data_dir)?;
        let s3_endpoint = format!("http://{}", reachable(s3_addr));
        let native = start_native(
            &self,
            wisp_native::S3Access {
                endpoint: s3_endpoint.clone(),
                access_key_id: key_id.clone(),
                secret_access_key: secret.clone(),
            },
        )?;
        let budget_mb = self
            .memory_budget
            .map(|b| b / (1024 * 1024))
            .unwrap_or_else(wisp_invoker::Capacity::default_budget_mb);
        let invoker = Arc::new(
            Invoker::new(executor, Some(native), store, artifacts, logs.clone())?
                .with_unload_after((!self.unload_after.is_zero()).then_some(self.unload_after))
                .with_metering(self.metering)
                .with_scheduling(
                    budget_mb,
                    wisp_invoker::QueueConfig {
                        wait: self.queue_wait,
                        depth: self.queue_depth,
                    },
                ),
        );

        invoker.start_upkeep();
        let http = bind(self.http, "function gateway", "--http").await?;
        let api = bind(self.api, "platform API", "--api").await?;
        let http_addr = http.local_addr()?;
        let api_addr = api.local_addr()?;
        let shutdown = shutdown_signal();

        // Asynchronous invocations: durable events, run by a dispatcher through the same
        // invoker, retried and dead-lettered by the store.
        let events = wisp_events::EventStore::open(
            self.data_dir.join("events.db"),
            Arc::new(wisp_events::SystemClock),
            wisp_events::StoreConfig::default(),
        )
        .map_err(|e| anyhow::anyhow!("opening the event store: {e}"))?;
        invoker.attach_events(events.clone());
        let gateway_options = wisp_gateway::Options {
            expose_errors: self.dev,
            stream_bodies: false,
            stalled_reader: Some(self.idle_timeout),
        };
        let limits = wisp_gateway::server::Limits {
            max_connections: self.max_connections,
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
        };
        let gateway = tokio::spawn(wisp_gateway::serve(
            http,
            invoker.clone(),
            gateway_options,
            limits,
            wait(shutdown.clone()),
            self.shutdown_grace,
        ));
        let dispatcher = {
            let invoker = invoker.clone();
            let invoke: wisp_events::InvokeFn = Arc::new(move |event| {
                let invoker = invoker.clone();
                Box::pin(async move { invoker.run_event(&event).await })
            });
            tokio::spawn(
                wisp_events::Dispatcher::new(
                    events.clone(),
                    invoke,
                    wisp_events::DispatcherConfig::default(),
                )
                .run(wait(shutdown.clone())),
            )
        };
        // Schedules: recomputed from the registry after every change; each tick is one
        // async invocation, enqueued at most once per tick even across restarts.
        let schedules = {
            let (tx, rx) = watch::channel(schedule_defs(&invoker.registry()));
            let (invoker, mut changes) = (invoker.clone(), invoker.subscribe());
            tokio::spawn(async move {
                while changes.changed().await.is_ok() {
                    let _ = tx.send(schedule_defs(&invoker.registry()));
                }
            });
            tokio::spawn(wisp_events::run_schedules(
                events.clone(),
                rx,
                wait(shutdown.clone()),
            ))
        };
        // Queue subscriptions: one poller per subscribed function, restarted on changes.
        tokio::spawn(run_queue_subscriptions(
            invoker.clone(),
            events.clone(),
            self.region.clone(),
        ));
        // Object storage: its events become async invocations of the functions that
        // subscribe to them, durable before the S3 request is answered.
        // For `wisp s3 credentials`, which prints the endpoint with the keys.
        std::fs::write(self.data_dir.join("s3-endpoint"), &s3_endpoint)
            .with_context(|| format!("writing {}", self.data_dir.join("s3-endpoint").display()))?;
        let objects = Arc::new(
            wisp_objects::ObjectStore::open(
                self.data_dir.join("objects"),
                wisp_objects::Config {
                    region: self.region.clone(),
                    ..wisp_objects::Config::default()
                },
            )
            .map_err(|e| anyhow::anyhow!("opening the object store: {e}"))?,
        );
        let object_triggers = ObjectTriggers {
            invoker: invoker.clone(),
            events: events.clone(),
            region: self.region.clone(),
            runtime: tokio::runtime::Handle::current(),
        };
        let s3_router = wisp_objects::router(
            objects,
            Arc::new(wisp_objects::StaticCredentials::new().with(key_id, secret)),
            Arc::new(object_triggers),
        );
        crate::host_services::register(&invoker, s3_router.clone(), gateway_options);
        let s3_server = tokio::spawn(wisp_gateway::server::serve(
            s3,
            "object storage API",
            axum_handler(s3_router),
            limits,
            wait(shutdown.clone()),
            self.shutdown_grace,
        ));
        let app = wisp_api::app(
            wisp_api::ApiState::new(invoker.clone(), token.clone())
                .with_prices(prices)
                .with_events(events),
        );
        let api_server = tokio::spawn(wisp_gateway::server::serve(
            api,
            "platform API",
            axum_handler(app),
            limits,
            wait(shutdown.clone()),
            self.shutdown_grace,
        ));

        node_lock.record(&crate::node_dir::NodeInfo {
            pid: std::process::id(),
            http: Some(format!("http://{}", reachable(http_addr))),
            api: Some(format!("http://{}", reachable(api_addr))),
            s3: Some(s3_endpoint.clone()),
            region: Some(self.region.clone()),
        })?;
        println!("wisp: functions on http://{http_addr}");
        println!(
            "wisp: object storage (S3 API) on http://{s3_addr} (`wisp s3 credentials` prints its keys)"
        );
        println!(
            "wisp: platform API on http://{api_addr} (token in {})",
            self.data_dir.join("api-token").display()
        );
        println!(
            "wisp: {} function(s) deployed; data in {}",
            invoker.registry().len(),
            self.data_dir.display()
        );
        // Commands run in this directory find the node through node.json; from anywhere
        // else, these say where it is and where its token is.
        let abs_dir = std::fs::canonicalize(&self.data_dir).unwrap_or(self.data_dir.clone());
        println!(
            "wisp: from another directory: export WISP_API=http://{} WISP_DATA_DIR={}",
            reachable(api_addr),
            abs_dir.display()
        );
        let _ = std::io::stdout().flush();

        if !self.deploy.is_empty() {
            let client = Client::with_token(&format!("http://{api_addr}"), token);
            for m in &self.deploy {
                if let Err(e) = super::deploy::deploy(&client, m, true).await {
                    progress(format!("error: deploying {}: {e:#}", m.display()));
                }
            }
            println!("wisp: ready");
            let _ = std::io::stdout().flush();
        }

        let (g, a, _, _, o) = tokio::join!(gateway, api_server, dispatcher, schedules, s3_server);
        o.context("object storage task")?
            .context("object storage API")?;
        g.context("gateway task")?.context("gateway")?;
        a.context("API task")?.context("platform API")?;
        invoker.save_histograms().await;
        logs.flush().await;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    }
}
