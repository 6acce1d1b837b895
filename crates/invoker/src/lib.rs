//! The invoker: the one path every trigger (HTTP gateway, `wisp invoke`, and later
//! schedules, queues and uploads) takes to run a function.
//!
//! It holds the live registry (active versions and the route table, swapped atomically on
//! deploy), loads compiled components on demand, applies per-function concurrency limits,
//! runs the request on the executor and records the function's log lines.
//!
//! It does not parse HTTP from the network or serve the platform API: the gateway and api
//! crates do, and hand it an [`Invocation`].
#![forbid(unsafe_code)]

mod admission;
pub mod lineage;
mod logs;
mod metrics;
mod recent;
mod registry;

pub use admission::{Capacity, Gate, QueueConfig, Refusal};
pub use logs::{LogSink, Retention, UsageListener};
pub use metrics::{FunctionMetrics, Metrics};
pub use recent::LastHour;
pub use registry::{ActiveFunction, Registry};

use bytes::Bytes;
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
pub use sync_wrapper::SyncWrapper;
use tokio::sync::OnceCell;
use wisp_core::{
    Function, FunctionName, FunctionSpec, LogLine, LogStream, Outcome, Trigger, UsageRecord,
};
pub use wisp_executor::{BoxError, ResponseStream, StreamBody, full};
use wisp_executor::{CompileError, Executor, InvocationContext, LoadedComponent};
use wisp_native::{NativeExecutor, NativeFunction, NativePool};
use wisp_store::{ArtifactDir, Store};

/// One request to run a function, from any trigger.
#[derive(Debug)]
pub struct Invocation {
    pub function: Arc<ActiveFunction>,
    pub trigger: Trigger,
    pub request_id: String,
    /// The invocation's span in its W3C trace (from [`set_context_headers`]).
    pub trace: wisp_core::SpanContext,
    pub request: http::Request<Bytes>,
    /// Client context for a native function (JSON, as Lambda's `ClientContext`), handed to
    /// the runtime in `Lambda-Runtime-Client-Context`.
    pub client_context: Option<String>,
    /// How the bodies stream; by default both are buffered.
    pub streams: Streams,
}

/// How an HTTP invocation's bodies stream. The gateway sets them; every other trigger
/// leaves both buffered.
#[derive(Default)]
pub struct Streams {
    /// The request body as it arrives, for a WebAssembly function, which reads it as it
    /// comes (`request`'s own body is then empty). A native function's event needs the
    /// whole body, so it is collected first, up to the function's `max_body`. (Wrapped
    /// so that an invocation can be shared by reference while it waits.)
    pub request_body: sync_wrapper::SyncWrapper<Option<wisp_executor::StreamBody>>,
    /// Where a response goes that is sent on while the function still writes it (see
    /// [`wisp_executor::ResponseStream`]). Native functions' responses are whole.
    pub response: Option<wisp_executor::ResponseStream>,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("request_body", &"..")
            .field("response", &self.response)
            .finish()
    }
}

/// A function's scaling as `wisp ls` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScalingState {
    /// Invocations running now.
    pub running: u32,
    /// Callers waiting in the function's queue now.
    pub queued: u32,
    /// Native functions: runtime processes alive (busy or idle). WebAssembly instances are
    /// made per request (or pooled warm), so there is no count to show.
    pub instances: Option<u32>,
    pub idle: Option<u32>,
    pub max_concurrency: u32,
    pub reserved_concurrency: u32,
    pub provisioned_concurrency: u32,
    /// Native functions: idle times the adaptive keep-alive has learned from (kept across
    /// versions and restarts).
    pub idle_samples: Option<u64>,
    pub last_hour: LastHour,
}

/// The address a request came from, put in the request's extensions by the gateway.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// A function ran (whatever its outcome).
#[derive(Debug)]
pub struct Completed {
    pub version: u32,
    pub outcome: Outcome,
    /// The function's response when `outcome` is [`Outcome::Success`].
    pub response: Option<http::Response<Bytes>>,
    pub error: Option<String>,
    /// A native function's error as its runtime reported it (`errorMessage`, `errorType`,
    /// `stackTrace`): the `responsePayload` of a failure destination record.
    pub error_payload: Option<Bytes>,
    pub duration: Duration,
}

/// Why a function did not run.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error(
        "function `{function}` is at its concurrency limit of {limit} and no slot freed within {waited_ms} ms; retry later or raise `limits.max_concurrency`"
    )]
    Throttled {
        function: String,
        limit: u32,
        waited_ms: u64,
    },
    #[error(
        "the node is at capacity: running functions hold all {shared_mb} MiB of its shared memory budget ({budget_mb} MiB, less reservations); retry later, or raise `wisp up --memory-budget`"
    )]
    NodeFull {
        function: String,
        budget_mb: u64,
        shared_mb: u64,
    },
    #[error("function `{function}` could not be loaded: {message}")]
    Unavailable { function: String, message: String },
    #[error(
        "recursive invocation stopped: function `{function}` would run at depth {depth} of one chain of calls (trace {trace_id}); a chain may be at most {max} invocations deep",
        max = lineage::MAX_DEPTH
    )]
    RecursionStopped {
        function: String,
        depth: u32,
        trace_id: String,
    },
}

/// Internal failures while changing the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Store(#[from] wisp_store::StoreError),
    #[error("artifact {sha256} is not valid: {source}")]
    Compile {
        sha256: String,
        source: CompileError,
    },
    #[error("{0}")]
    Load(String),
    #[error("function `{function}`: {message}")]
    Native { function: String, message: String },
    #[error("{0}")]
    Bundle(String),
}

type ComponentCell = Arc<OnceCell<Arc<LoadedComponent>>>;

pub struct Invoker {
    executor: Arc<Executor>,
    /// Runs native (Lambda runtime) functions; `None` on a node without them.
    native: Option<Arc<NativeExecutor>>,
    store: Arc<dyn Store>,
    artifacts: ArtifactDir,
    registry: RwLock<Arc<Registry>>,
    /// Loaded components by artifact, with when each was last used.
    components: Mutex<HashMap<String, (ComponentCell, std::time::Instant)>>,
    /// Compiled code idle this long is unloaded (reloaded from disk, not recompiled, at its
    /// next call); `None` keeps it.
    unload_after: Option<Duration>,
    logs: LogSink,
    metrics: Metrics,
    capacity: Arc<Capacity>,
    queue: QueueConfig,
    recent: recent::Recent,
    /// Functions' idle-time histograms (the adaptive keep-alive's memory), by function
    /// name: loaded from the store at start, refreshed from the live pools, saved back.
    histograms: Mutex<HashMap<String, wisp_scaling::IdleHistogram>>,
    /// Bumped after every registry swap, for what follows deployments (schedules).
    changes: tokio::sync::watch::Sender<u64>,
    /// Invocations running on this node now.
    running: std::sync::atomic::AtomicU32,
    /// The durable event store asynchronous invocations go to, once the node has one.
    events: std::sync::OnceLock<wisp_events::EventStore>,
    /// Usage records are written (see [`Invoker::with_metering`]).
    metering: bool,
    /// The node services WebAssembly functions may be granted (`outbound:`).
    host_services: RwLock<Vec<(wisp_core::HostService, Arc<dyn wisp_executor::HostService>)>>,
    /// Each recent invocation's depth in its chain of calls, to stop recursive loops.
    lineage: lineage::Lineage,
}

/// An asynchronous invocation, stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Accepted {
    pub event_id: String,
    pub function: String,
    /// The trace the event's invocations will belong to.
    pub trace_id: String,
}

/// Why an asynchronous invocation was not stored.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("this node has no event store: asynchronous invocations are off")]
    NoEventStore,
    #[error("{0}")]
    Invalid(String),
    #[error("storing the event: {0}")]
    Store(String),
}

impl Invoker {
    /// Builds the registry from the store. Components load lazily, on first use.
    pub fn new(
        executor: Arc<Executor>,
        native: Option<Arc<NativeExecutor>>,
        store: Arc<dyn Store>,
        artifacts: ArtifactDir,
        logs: LogSink,
    ) -> Result<Self, RegistryError> {
        let metrics = Metrics::new();
        let histograms: HashMap<String, wisp_scaling::IdleHistogram> = store
            .idle_histograms()?
            .into_iter()
            .filter_map(|(f, json)| Some((f, serde_json::from_str(&json).ok()?)))
            .collect();
        let pools = |f: &Function| native_pool(native.as_ref(), &artifacts, &histograms, f);
        let registry = Registry::build(&store.functions()?, None, &pools);
        let capacity = Capacity::new(Capacity::default_budget_mb());
        capacity.set_reserved_mb(registry.reserved_mb());
        Ok(Invoker {
            capacity,
            queue: QueueConfig::default(),
            recent: Default::default(),
            histograms: Mutex::new(histograms),
            changes: tokio::sync::watch::Sender::new(0),
            executor,
            native,
            store,
            artifacts,
            registry: RwLock::new(Arc::new(registry)),
            components: Mutex::new(HashMap::new()),
            unload_after: Some(Duration::from_secs(600)),
            logs,
            metrics,
            running: Default::default(),
            events: std::sync::OnceLock::new(),
            metering: true,
            host_services: RwLock::new(Vec::new()),
            lineage: lineage::Lineage::default(),
        })
    }

    pub fn executor(&self) -> &Arc<Executor> {
        &self.executor
    }

    pub fn native(&self) -> Option<&Arc<NativeExecutor>> {
        self.native.as_ref()
    }

    /// Sets the node's memory budget (MiB) and how callers of a busy function queue.
    pub fn with_scheduling(mut self, budget_mb: u64, queue: QueueConfig) -> Self {
        let reserved = self.registry().reserved_mb();
        self.capacity = Capacity::new(budget_mb);
        self.capacity.set_reserved_mb(reserved);
        self.queue = queue;
        self
    }

    pub fn capacity(&self) -> &Arc<Capacity> {
        &self.capacity
    }

    /// Changes whenever the deployed functions change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Whether invocations are metered: usage records (and with them the stored spans that
    /// `wisp trace` and OTLP export read). On by default; off only to measure its cost.
    pub fn with_metering(mut self, on: bool) -> Self {
        self.metering = on;
        self
    }

    /// How long compiled code may stay idle in memory (`None`: forever).
    pub fn with_unload_after(mut self, after: Option<Duration>) -> Self {
        self.unload_after = after;
        self
    }

    /// Unloads compiled components not used for `unload_after`, except those of functions
    /// with provisioned concurrency: an idle WebAssembly function then holds no memory but
    /// its registry entry; its next call maps the compiled file again (a cold start, no
    /// compilation). Returns how many were unloaded.
    pub fn unload_idle(&self) -> usize {
        let Some(after) = self.unload_after else {
            return 0;
        };
        let pinned: std::collections::HashSet<String> = self
            .registry()
            .functions()
            .filter(|f| f.spec.limits.provisioned_concurrency > 0)
            .map(|f| f.spec.artifact.clone())
            .collect();
        let mut map = self.components.lock().unwrap_or_else(|p| p.into_inner());
        let before = map.len();
        map.retain(|sha, (_, used)| pinned.contains(sha) || used.elapsed() < after);
        before - map.len()
    }

    /// Components loaded in memory now.
    pub fn loaded_components(&self) -> usize {
        self.components
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|(c, _)| c.initialized())
            .count()
    }

    /// How a function is scaled right now: its instances, what runs and waits, and its
    /// cold starts and throttles over the last hour.
    pub fn scaling(&self, name: &FunctionName) -> Option<ScalingState> {
        let f = self.function(name)?;
        let limits = &f.spec.limits;
        let (instances, idle, idle_samples) = match &f.native {
            Some(pool) => (
                Some(pool.instances()),
                Some(pool.idle() as u32),
                Some(pool.histogram().samples()),
            ),
            None => (None, None, None),
        };
        Some(ScalingState {
            running: f.gate.in_use(),
            queued: f.gate.queued(),
            instances,
            idle,
            max_concurrency: limits.concurrency(),
            reserved_concurrency: limits.reserved_concurrency,
            provisioned_concurrency: limits.provisioned_concurrency,
            idle_samples,
            last_hour: self.recent.last_hour(name.as_str(), logs::now_ms()),
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn logs(&self) -> &LogSink {
        &self.logs
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The registry serving traffic now. Cheap: an `Arc` clone.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn function(&self, name: &FunctionName) -> Option<Arc<ActiveFunction>> {
        self.registry().function(name).cloned()
    }

    /// Re-reads the store and swaps the registry atomically. Components of changed
    /// functions are loaded *before* the swap, so no request ever waits on a load or sees a
    /// half-deployed function; components no longer referenced are dropped.
    pub async fn reload(&self) -> Result<(), RegistryError> {
        let store = self.store.clone();
        let functions = tokio::task::spawn_blocking(move || store.functions())
            .await
            .map_err(|e| RegistryError::Load(e.to_string()))??;
        let old = self.registry();
        for f in &functions {
            let unchanged = old
                .function(&f.name)
                .is_some_and(|a| a.version == f.active_version);
            if !unchanged {
                self.prepare_one(&f.active).await?;
            }
        }
        self.collect_histograms(&old);
        let histograms = self
            .histograms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let pools =
            |f: &Function| native_pool(self.native.as_ref(), &self.artifacts, &histograms, f);
        let registry = Registry::build(&functions, Some(&old), &pools);
        self.capacity.set_reserved_mb(registry.reserved_mb());
        let live: std::collections::HashSet<&str> = functions
            .iter()
            .map(|f| f.active.artifact.as_str())
            .collect();
        self.components
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|sha, _| live.contains(sha.as_str()));
        *self.registry.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(registry);
        self.changes.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Makes sure these functions can serve: loads their components, or for native
    /// functions checks the unpacked code and the runtime on this host. A deploy or rollback
    /// calls this before it writes to the store, so a change is committed only when it
    /// will serve.
    pub async fn prepare(&self, specs: &[FunctionSpec]) -> Result<(), RegistryError> {
        for spec in specs {
            self.prepare_one(spec).await?;
        }
        Ok(())
    }

    async fn prepare_one(&self, spec: &FunctionSpec) -> Result<(), RegistryError> {
        let sha = &spec.artifact;
        let Some(native) = &spec.native else {
            return self
                .component(sha)
                .await
                .map(|_| ())
                .map_err(|e| RegistryError::Load(format!("artifact {sha}: {e}")));
        };
        let fail = |message: String| RegistryError::Native {
            function: spec.name.to_string(),
            message,
        };
        let Some(exec) = self.native.clone() else {
            return Err(fail(
                "this node does not run native functions (it was started without them)".into(),
            ));
        };
        let artifacts = self.artifacts.clone();
        let (sha, native) = (sha.clone(), native.clone());
        tokio::task::spawn_blocking(move || {
            let code = artifacts.code_dir(&sha);
            if !code.is_dir() {
                // Unpacked copies can be deleted to save space; the bundle is the record.
                let bundle = std::fs::read(artifacts.bundle_path(&sha)).map_err(|_| {
                    format!("artifact {sha} is not a code bundle: a native function's `source` must be uploaded as a gzipped tar of its directory (`wisp deploy` does this)")
                })?;
                artifacts
                    .unpack_bundle(&sha, &bundle)
                    .map_err(|e| e.to_string())?;
            }
            exec.check(&native, &code)
        })
        .await
        .map_err(|e| RegistryError::Load(e.to_string()))?
        .map_err(fail)
    }

    /// Stores an uploaded artifact durably: a WebAssembly component is validated and
    /// compiled; a code bundle (gzipped tar) for a native function is checked and unpacked.
    pub async fn add_artifact(&self, bytes: Bytes) -> Result<String, RegistryError> {
        if ArtifactDir::is_bundle(&bytes) {
            return self.add_bundle(bytes).await;
        }
        let wasm = bytes;
        let sha256 = ArtifactDir::sha256(&wasm);
        let exec = self.executor.clone();
        let artifacts = self.artifacts.clone();
        let store = self.store.clone();
        let sha = sha256.clone();
        tokio::task::spawn_blocking(move || {
            let compiled = exec
                .compile(&wasm)
                .map_err(|source| RegistryError::Compile {
                    sha256: sha.clone(),
                    source,
                })?;
            artifacts.write_atomic(&artifacts.wasm_path(&sha), &wasm)?;
            artifacts.write_atomic(&artifacts.compiled_path(exec.engine_id(), &sha), &compiled)?;
            store.record_artifact(&sha, wasm.len() as u64)?;
            Ok::<_, RegistryError>(())
        })
        .await
        .map_err(|e| RegistryError::Load(e.to_string()))??;
        Ok(sha256)
    }

    async fn add_bundle(&self, bundle: Bytes) -> Result<String, RegistryError> {
        let sha256 = ArtifactDir::sha256(&bundle);
        let artifacts = self.artifacts.clone();
        let store = self.store.clone();
        let sha = sha256.clone();
        tokio::task::spawn_blocking(move || {
            artifacts
                .unpack_bundle(&sha, &bundle)
                .map_err(|e| RegistryError::Bundle(e.to_string()))?;
            artifacts.write_atomic(&artifacts.bundle_path(&sha), &bundle)?;
            store.record_artifact(&sha, bundle.len() as u64)?;
            Ok::<_, RegistryError>(())
        })
        .await
        .map_err(|e| RegistryError::Load(e.to_string()))??;
        Ok(sha256)
    }

    /// The loaded component for an artifact: from memory, else from the compiled file on
    /// disk, else recompiled from the stored `.wasm` (after an engine upgrade).
    async fn component(&self, sha256: &str) -> Result<Arc<LoadedComponent>, String> {
        self.component_cold(sha256).await.map(|(c, _)| c)
    }

    /// The component, and whether this call had to load it (a cold start).
    async fn component_cold(&self, sha256: &str) -> Result<(Arc<LoadedComponent>, bool), String> {
        let cell = {
            let mut map = self.components.lock().unwrap_or_else(|p| p.into_inner());
            let entry = map
                .entry(sha256.to_string())
                .or_insert_with(|| (ComponentCell::default(), std::time::Instant::now()));
            entry.1 = std::time::Instant::now();
            entry.0.clone()
        };
        let cold = !cell.initialized();
        let loaded = cell
            .get_or_try_init(|| async {
                let exec = self.executor.clone();
                let artifacts = self.artifacts.clone();
                let sha = sha256.to_string();
                tokio::task::spawn_blocking(move || {
                    let compiled = artifacts.compiled_path(exec.engine_id(), &sha);
                    if !compiled.exists() {
                        tracing::info!(artifact = %sha, "compiling artifact for this engine");
                        let wasm = std::fs::read(artifacts.wasm_path(&sha))
                            .map_err(|e| format!("reading artifact {sha}: {e}"))?;
                        let bytes = exec.compile(&wasm).map_err(|e| e.to_string())?;
                        artifacts
                            .write_atomic(&compiled, &bytes)
                            .map_err(|e| e.to_string())?;
                    }
                    exec.load(&compiled)
                        .map(Arc::new)
                        .map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| e.to_string())?
            })
            .await
            .cloned()?;
        Ok((loaded, cold))
    }

    /// Runs an invocation: concurrency limit, component, execution, logs.
    pub async fn invoke(&self, mut inv: Invocation) -> Result<Completed, InvokeError> {
        let f = inv.function.clone();
        let f = &f;
        let fm = f
            .metrics
            .get_or_init(|| self.metrics.function(f.name.as_str()));
        let depth = self
            .lineage
            .enter(&inv.trace.span_id, inv.trace.parent_span_id.as_deref());
        if depth >= lineage::MAX_DEPTH {
            let e = InvokeError::RecursionStopped {
                function: f.name.to_string(),
                depth,
                trace_id: inv.trace.trace_id.clone(),
            };
            tracing::warn!(
                function = %f.name,
                request_id = inv.request_id,
                trigger = inv.trigger.as_str(),
                "{e}"
            );
            fm.invocation(inv.trigger, Outcome::Error).inc();
            fm.recursion_stops.inc();
            return Err(e);
        }
        let limits = &f.spec.limits;
        let admitted = admission::admit(
            &f.gate,
            &self.capacity,
            limits.reserved_concurrency > 0,
            limits.memory_bytes / (1024 * 1024),
            self.queue,
        )
        .await;
        let _admission = match admitted {
            Ok(a) => a,
            Err(refusal) => {
                fm.throttles.inc();
                self.recent.throttle(f.name.as_str(), logs::now_ms());
                fm.invocation(inv.trigger, Outcome::Throttled).inc();
                return Err(match refusal {
                    Refusal::Function { limit, waited } => InvokeError::Throttled {
                        function: f.name.to_string(),
                        limit,
                        waited_ms: waited.as_millis() as u64,
                    },
                    Refusal::Node {
                        budget_mb,
                        shared_mb,
                    } => InvokeError::NodeFull {
                        function: f.name.to_string(),
                        budget_mb,
                        shared_mb,
                    },
                });
            }
        };
        let _running = Running::start(fm, &self.running);
        let concurrency = self.running.load(std::sync::atomic::Ordering::Relaxed);
        if let Some(pool) = &f.native {
            if let Some(body) = inv.streams.request_body.get_mut().take() {
                let limit = usize::try_from(f.spec.limits.max_body_bytes).unwrap_or(usize::MAX);
                match collect_limited(body, limit).await {
                    Ok(b) => *inv.request.body_mut() = b,
                    Err(e) => {
                        return Err(InvokeError::Unavailable {
                            function: f.name.to_string(),
                            message: format!("reading the request body: {e}"),
                        });
                    }
                }
            }
            return Ok(self.invoke_native(pool, &inv, fm, concurrency).await);
        }
        if f.spec.native.is_some() {
            return Err(InvokeError::Unavailable {
                function: f.name.to_string(),
                message: "this node does not run native functions".into(),
            });
        }
        let start_ms = logs::now_ms();
        let init_started = std::time::Instant::now();
        let (component, cold) = self
            .component_cold(&f.spec.artifact)
            .await
            .map_err(|message| InvokeError::Unavailable {
                function: f.name.to_string(),
                message,
            })?;
        let init_us = if cold {
            fm.cold_starts.inc();
            self.recent.cold_start(f.name.as_str(), logs::now_ms());
            init_started.elapsed().as_micros() as u64
        } else {
            0
        };
        let ctx = InvocationContext {
            env: f.env.clone(),
            limits: f.spec.limits,
            outbound: self.outbound(f, &inv.trace),
        };
        let ts_ms = logs::now_ms();
        let (parts, body) = inv.request.into_parts();
        let body = match inv.streams.request_body.get_mut().take() {
            Some(streaming) => streaming,
            None => wisp_executor::full(body),
        };
        let result = self
            .executor
            .invoke_streaming(
                &component,
                f.warm.as_deref(),
                http::Request::from_parts(parts, body),
                &ctx,
                inv.streams.response.take(),
            )
            .await;

        let mut lines = Vec::new();
        let mut push = |stream: LogStream, text: &str| {
            for line in text.lines() {
                lines.push(LogLine {
                    id: 0,
                    ts_ms,
                    function: f.name.to_string(),
                    version: f.version,
                    request_id: inv.request_id.clone(),
                    trace_id: inv.trace.trace_id.clone(),
                    stream,
                    line: line.to_string(),
                });
            }
        };
        push(LogStream::Stdout, &String::from_utf8_lossy(&result.stdout));
        push(LogStream::Stderr, &String::from_utf8_lossy(&result.stderr));
        if let Some(err) = &result.error {
            push(LogStream::Platform, err);
        }
        self.logs.send(lines);
        // Loading the component is billed with the run.
        self.meter(
            f,
            (inv.trigger, &inv.request_id, &inv.trace),
            Metered {
                start_ms,
                duration: result.duration,
                billed_us: result.duration.as_micros() as u64 + init_us,
                init_us,
                cold,
                outcome: result.outcome,
                concurrency,
                cpu: Some(result.cpu_time),
            },
        );
        if result.outcome != Outcome::Success {
            tracing::info!(
                function = %f.name,
                version = f.version,
                request_id = %inv.request_id,
                trigger = inv.trigger.as_str(),
                outcome = ?result.outcome,
                error = result.error.as_deref().unwrap_or(""),
                "invocation failed"
            );
        }
        Ok(Completed {
            version: f.version,
            outcome: result.outcome,
            response: result.response,
            error: result.error,
            error_payload: None,
            duration: result.duration,
        })
    }
}

impl Invoker {
    /// Makes a node service available to the WebAssembly functions whose manifest grants
    /// it (`outbound: [objects, self]`).
    pub fn set_host_service(
        &self,
        kind: wisp_core::HostService,
        service: Arc<dyn wisp_executor::HostService>,
    ) {
        let mut services = self
            .host_services
            .write()
            .unwrap_or_else(|p| p.into_inner());
        services.retain(|(k, _)| *k != kind);
        services.push((kind, service));
    }

    /// What one invocation of `f` may call: its granted services, with its trace.
    fn outbound(
        &self,
        f: &ActiveFunction,
        span: &wisp_core::SpanContext,
    ) -> wisp_executor::Outbound {
        if f.spec.outbound.is_empty() {
            return wisp_executor::Outbound::default();
        }
        let services = self
            .host_services
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(k, _)| f.spec.outbound.contains(k))
            .map(|(k, s)| (k.host().to_string(), s.clone()))
            .collect();
        wisp_executor::Outbound {
            services,
            traceparent: http::HeaderValue::from_str(&span.traceparent().header_value()).ok(),
            caller: f.name.to_string(),
            buckets: f.spec.object_buckets.clone(),
            // Set by the executor for each invocation.
            cut: Default::default(),
        }
    }

    /// Gives the invoker the node's event store, for [`Invoker::enqueue`].
    pub fn attach_events(&self, events: wisp_events::EventStore) {
        let _ = self.events.set(events);
    }

    /// Stores an asynchronous invocation of `function` durably (fsync'd) and returns its
    /// event id: the one path `wisp invoke --async`, the API and gateway routes with
    /// `X-Amz-Invocation-Type: Event` take. The caller's trace (`traceparent` or
    /// `X-Amzn-Trace-Id` in `headers`) continues in the event's invocations; without one,
    /// a new trace starts here.
    pub async fn enqueue(
        &self,
        function: &ActiveFunction,
        payload: &[u8],
        headers: &http::HeaderMap,
    ) -> Result<Accepted, EnqueueError> {
        let events = self.events.get().ok_or(EnqueueError::NoEventStore)?;
        let caller = incoming_trace(headers)
            .unwrap_or_else(|| wisp_core::TraceParent::new_root(rand::random(), rand::random()));
        let payload: &[u8] = if payload.is_empty() { b"{}" } else { payload };
        let opts = wisp_events::EnqueueOptions {
            traceparent: Some(caller.header_value()),
            ..event_options(&function.spec)
        };
        let id = events
            .enqueue_invocation(function.name.as_str(), payload, opts)
            .await
            .map_err(|e| match e {
                wisp_events::EventError::InvalidOption(m) => EnqueueError::Invalid(m),
                other => EnqueueError::Store(other.to_string()),
            })?;
        Ok(Accepted {
            event_id: id.to_string(),
            function: function.name.to_string(),
            trace_id: caller.trace_id,
        })
    }

    /// Runs one delivery of an asynchronous invocation from the event store, and says how
    /// it went so the store can retry or dead-letter it. The event id is the request id of
    /// every attempt (as on Lambda), and the trace of the call that enqueued it continues.
    pub async fn run_event(&self, event: &wisp_events::Claimed) -> wisp_events::InvokeOutcome {
        use wisp_events::InvokeOutcome;
        // An event enqueued without a trace (a schedule tick, an upload) gets one from its
        // id, the same for every attempt: the trace id is the event's UUID, the parent its
        // last 16 hex digits (standing for the event itself).
        let own;
        let traceparent = match event.traceparent.as_deref() {
            Some(tp) => Some(tp),
            None => {
                let hex = event.id.0.simple().to_string();
                own = format!("00-{hex}-{}-01", &hex[16..]);
                Some(own.as_str())
            }
        };
        let done = self
            .invoke_payload(
                &event.function,
                Trigger::Async,
                event.id.to_string(),
                Bytes::from(event.payload.clone()),
                traceparent,
            )
            .await;
        match done {
            Ok(c) => {
                let status = c.response.as_ref().map(|r| r.status().as_u16());
                let body = c.response.map(|r| r.into_body().to_vec());
                match (c.outcome, status) {
                    (Outcome::Success, Some(s)) if s < 500 => InvokeOutcome::Success {
                        response: body.unwrap_or_default(),
                    },
                    (Outcome::Success, Some(s)) => InvokeOutcome::Failure {
                        error: format!("the function answered {s}"),
                        response: body,
                    },
                    (outcome, _) => InvokeOutcome::Failure {
                        error: c.error.unwrap_or_else(|| format!("{outcome:?}")),
                        response: body.or_else(|| c.error_payload.map(|b| b.to_vec())),
                    },
                }
            }
            Err(InvokeError::Throttled { .. } | InvokeError::NodeFull { .. }) => {
                InvokeOutcome::Throttled
            }
            Err(e @ (InvokeError::Unavailable { .. } | InvokeError::RecursionStopped { .. })) => {
                InvokeOutcome::Failure {
                    error: e.to_string(),
                    response: None,
                }
            }
        }
    }

    /// Runs a function with a JSON payload from a non-HTTP trigger (async events, queue
    /// batches): a `POST /` with the payload as body; for native functions the payload is
    /// the event. A missing function is `Unavailable`.
    pub async fn invoke_payload(
        &self,
        function: &str,
        trigger: Trigger,
        request_id: String,
        payload: Bytes,
        traceparent: Option<&str>,
    ) -> Result<Completed, InvokeError> {
        let unavailable = |message: String| InvokeError::Unavailable {
            function: function.to_string(),
            message,
        };
        let name = FunctionName::new(function.to_string())
            .map_err(|_| unavailable("not a function name".into()))?;
        let f = self
            .function(&name)
            .ok_or_else(|| unavailable("it is not deployed (any more)".into()))?;
        // A CloudEvent (s3:, schedule:) goes in structured mode, as CloudEvents SDKs read it.
        let content_type = wisp_events::envelope::http_content_type(&payload);
        let mut req = http::Request::post("http://localhost/")
            .header(http::header::CONTENT_TYPE, content_type)
            .body(payload)
            .expect("a valid request");
        if let Some(tp) = traceparent.and_then(|t| http::HeaderValue::from_str(t).ok()) {
            req.headers_mut().insert("traceparent", tp);
        }
        let trace = set_context_headers(req.headers_mut(), &request_id, None, &[]);
        self.invoke(Invocation {
            function: f,
            trigger,
            request_id,
            trace,
            request: req,
            client_context: None,
            streams: Streams::default(),
        })
        .await
    }

    /// Copies the live pools' idle-time histograms into the invoker's map.
    fn collect_histograms(&self, registry: &Registry) {
        let mut map = self.histograms.lock().unwrap_or_else(|p| p.into_inner());
        for f in registry.functions() {
            if let Some(pool) = &f.native {
                map.insert(f.name.to_string(), pool.histogram());
            }
        }
    }

    /// Saves the functions' idle-time histograms to the store, so the adaptive keep-alive
    /// remembers what it learned across restarts.
    pub async fn save_histograms(&self) {
        self.collect_histograms(&self.registry());
        let rows: Vec<(String, String)> = self
            .histograms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, h)| h.samples() > 0)
            .filter_map(|(f, h)| Some((f.clone(), serde_json::to_string(h).ok()?)))
            .collect();
        if rows.is_empty() {
            return;
        }
        let store = self.store.clone();
        let saved = tokio::task::spawn_blocking(move || store.put_idle_histograms(&rows)).await;
        if let Ok(Err(e)) = saved {
            tracing::warn!("saving idle-time histograms: {e}");
        }
    }

    /// Background upkeep of the node: unloads idle compiled code and saves idle-time
    /// histograms. Returns when the invoker is dropped.
    pub fn start_upkeep(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let check = self_check_interval(me.upgrade().and_then(|i| i.unload_after));
            let mut tick = tokio::time::interval(check);
            tick.tick().await;
            let mut last_save = std::time::Instant::now();
            loop {
                tick.tick().await;
                let Some(inv) = me.upgrade() else { break };
                let unloaded = inv.unload_idle();
                if unloaded > 0 {
                    tracing::debug!(unloaded, "unloaded idle compiled components");
                }
                if last_save.elapsed() >= Duration::from_secs(60) {
                    inv.save_histograms().await;
                    last_save = std::time::Instant::now();
                }
            }
        });
    }

    /// A native function's invocation: the event is the request body for `wisp invoke`,
    /// and an API Gateway (payload 2.0) event for HTTP; the handler's result maps back.
    async fn invoke_native(
        &self,
        pool: &Arc<NativePool>,
        inv: &Invocation,
        fm: &FunctionMetrics,
        concurrency: u32,
    ) -> Completed {
        let f = &inv.function;
        let start_ms = logs::now_ms();
        let event = match inv.trigger {
            Trigger::Http => {
                let headers = inv.request.headers();
                let route_key = headers
                    .get(ROUTE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("$default");
                let params: Vec<(String, String)> = headers
                    .iter()
                    .filter_map(|(k, v)| {
                        let name = k.as_str().strip_prefix(PARAM_HEADER_PREFIX)?;
                        Some((name.to_string(), v.to_str().ok()?.to_string()))
                    })
                    .collect();
                let source_ip = inv
                    .request
                    .extensions()
                    .get::<PeerAddr>()
                    .map(|p| p.0.ip().to_string())
                    .unwrap_or_else(|| "127.0.0.1".into());
                let ctx = wisp_native::apigw::RequestContext {
                    request_id: &inv.request_id,
                    route_key,
                    path_parameters: &params,
                    source_ip: &source_ip,
                    time_ms: start_ms,
                };
                Bytes::from(wisp_native::apigw::event(&inv.request, &ctx).to_string())
            }
            Trigger::Api | Trigger::Async | Trigger::Queue => {
                let body = inv.request.body();
                if body.is_empty() {
                    Bytes::from_static(b"{}")
                } else {
                    body.clone()
                }
            }
        };
        let result = pool
            .invoke(wisp_native::NativeRequest {
                request_id: inv.request_id.clone(),
                event,
                trace_header: inv.trace.traceparent().xray_value(),
                client_context: inv.client_context.clone(),
            })
            .await;
        let memory_mb = f.spec.limits.memory_bytes / (1024 * 1024);
        let (start, end, report) =
            wisp_native::report_lines(&inv.request_id, f.version, memory_mb, &result);
        let ts_ms = logs::now_ms();
        let line = |stream: LogStream, text: String| LogLine {
            id: 0,
            ts_ms,
            function: f.name.to_string(),
            version: f.version,
            request_id: inv.request_id.clone(),
            trace_id: inv.trace.trace_id.clone(),
            stream,
            line: text,
        };
        let mut lines = Vec::with_capacity(result.logs.len() + 4);
        lines.push(line(LogStream::Platform, start));
        lines.extend(result.logs.iter().map(|(s, l)| line(*s, l.clone())));
        if let Some(e) = &result.error {
            lines.push(line(
                LogStream::Platform,
                format!("{}: {}", e.error_type, e.message),
            ));
        }
        lines.push(line(LogStream::Platform, end));
        lines.push(line(LogStream::Platform, report));
        self.logs.send(lines);

        let cold = result.init.is_some();
        if cold {
            fm.cold_starts.inc();
            self.recent.cold_start(f.name.as_str(), start_ms);
        }
        // A runtime's init is reported, not billed (as on Lambda for managed runtimes).
        self.meter(
            f,
            (inv.trigger, &inv.request_id, &inv.trace),
            Metered {
                start_ms,
                duration: result.duration,
                billed_us: result.duration.as_micros() as u64,
                init_us: result.init.map(|d| d.as_micros() as u64).unwrap_or(0),
                cold,
                outcome: result.outcome,
                concurrency,
                cpu: result.cpu_time,
            },
        );
        let mut error = result
            .error
            .as_ref()
            .map(|e| format!("{}: {}", e.error_type, e.message));
        let response = match (&result.payload, inv.trigger) {
            (Some(payload), Trigger::Http) => match wisp_native::apigw::response(payload) {
                Ok(r) => Some(r),
                Err(e) => {
                    error = Some(format!("Runtime.InvalidResponse: {e}"));
                    None
                }
            },
            (Some(payload), Trigger::Api | Trigger::Async | Trigger::Queue) => {
                let mut r = http::Response::new(payload.clone());
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                Some(r)
            }
            (None, _) => None,
        };
        let outcome = match (&response, result.outcome) {
            (None, Outcome::Success) => Outcome::Error,
            (_, o) => o,
        };
        if outcome != Outcome::Success {
            tracing::info!(
                function = %f.name,
                version = f.version,
                request_id = %inv.request_id,
                trigger = inv.trigger.as_str(),
                outcome = ?outcome,
                error = error.as_deref().unwrap_or(""),
                "invocation failed"
            );
        }
        Completed {
            version: f.version,
            outcome,
            response,
            error,
            error_payload: result.error.map(|e| e.body),
            duration: result.duration,
        }
    }
}

/// How an asynchronous invocation of this function is delivered: the function's `async`
/// settings (retries, maximum age, destinations: a function, or `queue:NAME`), and a lease
/// longer than one attempt may take, so a running attempt is never delivered twice.
pub fn event_options(spec: &wisp_core::FunctionSpec) -> wisp_events::EnqueueOptions {
    let cfg = spec.async_config.clone().unwrap_or_default();
    let target = |d: String| match wisp_core::AsyncConfig::destination_queue(&d) {
        Some(queue) => wisp_events::Target::Queue(queue.to_string()),
        None => wisp_events::Target::Function(d),
    };
    wisp_events::EnqueueOptions {
        max_retries: cfg.max_retries,
        max_event_age: Duration::from_secs(cfg.max_event_age_s),
        lease: Some(Duration::from_millis(spec.limits.timeout_ms) + Duration::from_secs(60)),
        on_success: cfg.on_success.map(target),
        on_failure: cfg.on_failure.map(target),
        ..Default::default()
    }
}

/// How often upkeep runs: every few seconds, or more often for a short unload time.
fn self_check_interval(unload_after: Option<Duration>) -> Duration {
    unload_after
        .map(|d| (d / 4).clamp(Duration::from_millis(100), Duration::from_secs(10)))
        .unwrap_or(Duration::from_secs(10))
}

/// The pool for a native function's active version, when this node runs native functions.
fn native_pool(
    native: Option<&Arc<NativeExecutor>>,
    artifacts: &ArtifactDir,
    histograms: &HashMap<String, wisp_scaling::IdleHistogram>,
    f: &Function,
) -> Option<Arc<NativePool>> {
    let spec = f.active.native.as_ref()?;
    Some(
        native?.pool(NativeFunction {
            name: f.name.to_string(),
            version: f.active_version,
            spec: spec.clone(),
            limits: f.active.limits,
            env: f
                .active
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            code_dir: artifacts.code_dir(&f.active.artifact),
            histogram: histograms.get(f.name.as_str()).cloned(),
        }),
    )
}

/// What one finished invocation adds to metrics and usage.
struct Metered {
    start_ms: i64,
    /// The run itself, for the duration histogram.
    duration: Duration,
    /// What the usage record counts as its duration (and bills, rounded up to 1 ms).
    billed_us: u64,
    init_us: u64,
    cold: bool,
    outcome: Outcome,
    concurrency: u32,
    cpu: Option<Duration>,
}

impl Invoker {
    /// Counts a finished invocation in the function's metrics and writes its usage record:
    /// the same for every executor and trigger.
    fn meter(
        &self,
        f: &ActiveFunction,
        (trigger, request_id, span): (Trigger, &str, &wisp_core::SpanContext),
        m: Metered,
    ) {
        let fm = f
            .metrics
            .get_or_init(|| self.metrics.function(f.name.as_str()));
        fm.invocation(trigger, m.outcome).inc();
        fm.duration.observe(m.duration.as_secs_f64());
        if !self.metering {
            return;
        }
        self.logs.record_usage(UsageRecord {
            request_id: request_id.to_string(),
            function: f.name.to_string(),
            version: f.version,
            trigger,
            start_ms: m.start_ms,
            duration_us: m.billed_us,
            billed_ms: wisp_core::billed_ms(m.billed_us),
            memory_mb: f.spec.limits.memory_bytes / (1024 * 1024),
            init_us: m.init_us,
            cold_start: m.cold,
            outcome: m.outcome,
            concurrency: m.concurrency,
            cpu_us: m.cpu.map(|c| c.as_micros() as u64),
            span: span.clone(),
        });
    }
}

/// Counts an invocation in the function's concurrency gauge for as long as it lives, even
/// when the caller goes away and the invocation's future is dropped.
struct Running<'a>(&'a FunctionMetrics, &'a std::sync::atomic::AtomicU32);

impl<'a> Running<'a> {
    fn start(m: &'a FunctionMetrics, node: &'a std::sync::atomic::AtomicU32) -> Self {
        m.concurrent.inc();
        node.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Running(m, node)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.concurrent.dec();
        self.1.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Reads a whole streamed body, up to `limit` bytes. (A plain function returning a boxed
/// future, so the future that awaits it is provably `Send`.)
fn collect_limited(
    body: StreamBody,
    limit: usize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Bytes, BoxError>> + Send>> {
    Box::pin(async move {
        let mut body = body;
        let mut out = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                if out.len() + data.len() > limit {
                    return Err(format!("the body is larger than {limit} bytes").into());
                }
                out.extend_from_slice(&data);
            }
        }
        Ok(out.freeze())
    })
}

/// Header that carries the request id to the function and back to the client.
pub const REQUEST_ID_HEADER: &str = "x-wisp-request-id";
/// Prefix of the headers that carry path parameters to the function.
pub const PARAM_HEADER_PREFIX: &str = "x-wisp-param-";
/// Header that carries the matched route template (e.g. `GET /users/{id}`).
pub const ROUTE_HEADER: &str = "x-wisp-route";

/// Sets the headers a function reads its context from (request id, route, path
/// parameters, W3C `traceparent`), after removing any `x-wisp-*` header a client sent:
/// those come only from the platform. A valid incoming `traceparent` (or, failing that,
/// an X-Ray `X-Amzn-Trace-Id`, which Lambda handlers forward) is continued: the
/// invocation gets a span of its own in that trace, and the function a `traceparent`
/// naming that span as the parent of whatever it calls. Otherwise a new trace starts.
pub fn set_context_headers(
    headers: &mut http::HeaderMap,
    request_id: &str,
    route: Option<&str>,
    params: &[(String, String)],
) -> wisp_core::SpanContext {
    use http::{HeaderName, HeaderValue};
    let incoming = incoming_trace(headers);
    let span = wisp_core::SpanContext::start(incoming.as_ref(), rand::random(), rand::random());
    let traceparent = span.traceparent();
    if let Ok(v) = HeaderValue::from_str(&traceparent.header_value()) {
        headers.insert("traceparent", v);
    }
    if let Ok(v) = HeaderValue::from_str(&traceparent.xray_value()) {
        headers.insert("x-amzn-trace-id", v);
    }
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-wisp-"))
        .cloned()
        .collect();
    for k in spoofed {
        headers.remove(k);
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID_HEADER, v);
    }
    if let Some(Ok(v)) = route.map(HeaderValue::from_str) {
        headers.insert(ROUTE_HEADER, v);
    }
    for (name, raw) in params {
        let decoded = percent_decode(raw);
        let value = HeaderValue::from_str(&decoded).or_else(|_| HeaderValue::from_str(raw));
        let header = HeaderName::from_bytes(
            format!("{PARAM_HEADER_PREFIX}{}", name.to_ascii_lowercase()).as_bytes(),
        );
        if let (Ok(n), Ok(v)) = (header, value) {
            headers.insert(n, v);
        }
    }
    span
}

/// The caller's trace context in a request's headers: a valid W3C `traceparent`, or else
/// an X-Ray `X-Amzn-Trace-Id` (what Lambda handlers forward from `_X_AMZN_TRACE_ID`).
pub fn incoming_trace(headers: &http::HeaderMap) -> Option<wisp_core::TraceParent> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    header("traceparent")
        .and_then(wisp_core::TraceParent::parse)
        .or_else(|| header("x-amzn-trace-id").and_then(wisp_core::TraceParent::from_xray))
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// A new request id: a UUIDv7, so ids sort by time. Its random bits come from the
/// thread's userspace generator: no system call per request.
pub fn new_request_id() -> String {
    let random: [u8; 10] = rand::random();
    uuid::Builder::from_unix_timestamp_millis(logs::now_ms() as u64, &random)
        .into_uuid()
        .to_string()
}
