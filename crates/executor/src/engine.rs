use crate::body::{BoxError, ChannelBody, IN_FLIGHT, Piece, ResponseStream, StreamBody, full};
use crate::host::{HostState, MemoryLimiter, Outbound};
use crate::logpipe::LogPipe;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Frame;
use std::hash::Hasher;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap,
    UpdateDeadline,
};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};
use wisp_core::{Limits, Outcome};

/// How often the epoch advances: the granularity of timeouts and of the yields that keep a
/// CPU-bound function from starving others on the same thread.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Node-wide settings of the executor.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// Use the pooling instance allocator (fast instantiation, copy-on-write memory).
    pub pooling: bool,
    /// Instances that may exist at once on this node (pool slots).
    pub max_instances: u32,
    /// Bytes of stdout and of stderr kept per invocation.
    pub log_capacity: usize,
    /// Largest response body a function may return.
    pub max_response_bytes: usize,
    /// Bytes of each linear memory reset in place (only the pages an instance dirtied,
    /// found with PAGEMAP_SCAN where the kernel has it) instead of being unmapped with
    /// `madvise` when a pool slot is reused: fewer page faults and TLB shootdowns per
    /// request, for a little memory kept resident per slot.
    pub keep_resident_bytes: usize,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            pooling: true,
            max_instances: 1000,
            log_capacity: 256 * 1024,
            max_response_bytes: 32 * 1024 * 1024,
            keep_resident_bytes: 2 * 1024 * 1024,
        }
    }
}

/// Why an upload cannot become a function.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error(
        "the upload is not a WebAssembly binary (it does not start with `\\0asm`): upload the `.wasm` file that `cargo build --target wasm32-wasip2` produces"
    )]
    NotWasm,
    #[error(
        "the upload is a core WebAssembly module, not a component: build for the `wasm32-wasip2` target (or wrap the module with `wasm-tools component new`)"
    )]
    CoreModule,
    #[error("the component is not valid: {0}")]
    Invalid(String),
    #[error(
        "the component imports interfaces Wisp does not provide (functions run in the `wasi:http/proxy` world): {0}"
    )]
    UnsupportedImports(String),
    #[error(
        "the component does not export `wasi:http/incoming-handler@0.2.x`: a Wisp function must target the `wasi:http/proxy` world (a `wasi:cli` command is not an HTTP function): {0}"
    )]
    NotHttp(String),
}

/// Internal failures of the executor.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("creating the wasmtime engine: {0}")]
    Engine(String),
    #[error("loading compiled artifact {path}: {message}")]
    Load { path: String, message: String },
}

/// A compiled component, pre-linked and ready to instantiate per request.
pub struct LoadedComponent {
    pre: ProxyPre<HostState>,
}

/// What a single invocation gets besides the request: its environment and limits.
#[derive(Debug, Clone, Default)]
pub struct InvocationContext {
    pub env: Vec<(String, String)>,
    pub limits: Limits,
    /// The host services this invocation may call, and its trace context.
    pub outbound: Outbound,
}

/// The result of running one request.
#[derive(Debug)]
pub struct InvocationResult {
    pub outcome: Outcome,
    /// The function's response, when it produced a whole one.
    pub response: Option<http::Response<Bytes>>,
    /// Why there is no response (trap message, timeout...).
    pub error: Option<String>,
    pub stdout: Bytes,
    pub stderr: Bytes,
    pub duration: Duration,
    /// CPU time the invocation's work took on the node's threads (instantiation, guest
    /// code and host calls, response body): the sum over its polls of the polling
    /// thread's CPU clock.
    pub cpu_time: Duration,
}

/// Owns the wasmtime engine and runs components.
pub struct Executor {
    engine: Engine,
    linker: Linker<HostState>,
    engine_id: String,
    config: ExecutorConfig,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

struct ShaHasher(sha2::Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        sha2::Digest::update(&mut self.0, bytes);
    }
}

fn wasmtime_config(cfg: &ExecutorConfig, pooling: bool) -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.memory_init_cow(true);
    config.wasm_component_model(true);
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    if pooling {
        let n = cfg.max_instances.max(1);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(8))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(4))
            .total_stacks(n)
            .max_memory_size(Limits::MAX_MEMORY_BYTES as usize)
            .max_unused_warm_slots(n.min(100))
            .linear_memory_keep_resident(cfg.keep_resident_bytes)
            .table_keep_resident(cfg.keep_resident_bytes.min(64 * 1024))
            .pagemap_scan(Enabled::Auto);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

impl Executor {
    pub fn new(config: ExecutorConfig) -> Result<Self, ExecutorError> {
        let engine = match Engine::new(&wasmtime_config(&config, config.pooling)) {
            Ok(e) => e,
            Err(e) if config.pooling => {
                tracing::warn!(
                    "the pooling instance allocator is unavailable ({e}); falling back to on-demand allocation, which is slower"
                );
                Engine::new(&wasmtime_config(&config, false))
                    .map_err(|e| ExecutorError::Engine(format!("{e:#}")))?
            }
            Err(e) => return Err(ExecutorError::Engine(format!("{e:#}"))),
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| ExecutorError::Engine(format!("{e:#}")))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| ExecutorError::Engine(format!("{e:#}")))?;

        let mut h = ShaHasher(sha2::Sha256::default());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
        let engine_id = hex::encode(&sha2::Digest::finalize(h.0)[..8]);

        let stop_ticker = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let stop = stop_ticker.clone();
        std::thread::Builder::new()
            .name("wisp-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| ExecutorError::Engine(format!("starting the epoch thread: {e}")))?;

        Ok(Executor {
            engine,
            linker,
            engine_id,
            config,
            stop_ticker,
        })
    }

    /// Identifies the engine configuration: compiled artifacts are only valid for the
    /// engine id they were compiled with.
    pub fn engine_id(&self) -> &str {
        &self.engine_id
    }

    /// Validates that `wasm` is a `wasi:http/proxy` component and compiles it ahead of time.
    /// Returns the serialized compiled artifact, to be stored and later [`load`](Self::load)ed.
    pub fn compile(&self, wasm: &[u8]) -> Result<Vec<u8>, CompileError> {
        if !wasm.starts_with(b"\0asm") || wasm.len() < 8 {
            return Err(CompileError::NotWasm);
        }
        // The 2-byte layer field after the version: 0 for core modules, 1 for components.
        if wasm[6..8] == [0, 0] {
            return Err(CompileError::CoreModule);
        }
        let component = Component::new(&self.engine, wasm)
            .map_err(|e| CompileError::Invalid(format!("{e:#}")))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| CompileError::UnsupportedImports(format!("{e:#}")))?;
        ProxyPre::new(pre).map_err(|e| CompileError::NotHttp(format!("{e:#}")))?;
        component
            .serialize()
            .map_err(|e| CompileError::Invalid(format!("serializing: {e:#}")))
    }

    /// Loads an artifact produced by [`compile`](Self::compile), without recompiling.
    pub fn load(&self, compiled: &Path) -> Result<LoadedComponent, ExecutorError> {
        let err = |e: wasmtime::Error| ExecutorError::Load {
            path: compiled.display().to_string(),
            message: format!("{e:#}"),
        };
        // SAFETY: `deserialize_file` trusts its input to be machine code that this engine
        // configuration produced. Compiled artifacts are only ever written by this
        // executor's `compile` (via the store's atomic write) into the data directory,
        // under a folder named by `engine_id`, so the file is one we produced for this very
        // configuration; wasmtime additionally checks the header and engine compatibility.
        #[allow(unsafe_code)]
        let component =
            unsafe { Component::deserialize_file(&self.engine, compiled) }.map_err(err)?;
        let pre = self.linker.instantiate_pre(&component).map_err(err)?;
        let pre = ProxyPre::new(pre).map_err(err)?;
        Ok(LoadedComponent { pre })
    }

    /// Runs one request in a fresh instance of `component`.
    pub async fn invoke(
        &self,
        component: &LoadedComponent,
        request: http::Request<Bytes>,
        ctx: &InvocationContext,
    ) -> InvocationResult {
        self.run(component, None, request.map(full), ctx, None)
            .await
    }

    /// Runs one request in a warm instance from `pool` (or a new one), and gives the
    /// instance back to the pool if the request succeeded. A trap, timeout or memory
    /// overrun discards the instance. All requests through one pool must use the same
    /// component and context (one pool per function version).
    pub async fn invoke_warm(
        &self,
        component: &LoadedComponent,
        pool: &WarmPool,
        request: http::Request<Bytes>,
        ctx: &InvocationContext,
    ) -> InvocationResult {
        self.run(component, Some(pool), request.map(full), ctx, None)
            .await
    }

    /// Runs one request whose body may still be arriving (it streams into the function
    /// as the function reads it), in a warm instance from `pool` if there is one. With
    /// `stream`, a response longer than `stream.after` bytes goes to `stream.head` while
    /// the function still writes it, and the result then has no `response` of its own;
    /// without, the response is collected whole, as [`Executor::invoke`] does.
    pub async fn invoke_streaming(
        &self,
        component: &LoadedComponent,
        pool: Option<&WarmPool>,
        request: http::Request<StreamBody>,
        ctx: &InvocationContext,
        stream: Option<ResponseStream>,
    ) -> InvocationResult {
        self.run(component, pool, request, ctx, stream).await
    }

    fn new_slot(&self, ctx: &InvocationContext) -> Slot {
        let stdout = LogPipe::new(self.config.log_capacity);
        let stderr = LogPipe::new(self.config.log_capacity);
        let oom = Arc::new(AtomicBool::new(false));
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .envs(&ctx.env)
            .build();
        let mut store = Store::new(
            &self.engine,
            HostState {
                wasi,
                http: WasiHttpCtx::new(),
                table: ResourceTable::new(),
                limiter: MemoryLimiter {
                    max_bytes: usize::try_from(ctx.limits.memory_bytes).unwrap_or(usize::MAX),
                    hit: oom.clone(),
                },
                // Set for each invocation in `run`, fresh or warm.
                hooks: Outbound::default(),
            },
        );
        store.limiter(|s| &mut s.limiter);
        Slot {
            cut: Arc::default(),
            armed: false,
            store,
            proxy: None,
            stdout,
            stderr,
            oom,
        }
    }

    async fn run(
        &self,
        component: &LoadedComponent,
        pool: Option<&WarmPool>,
        request: http::Request<StreamBody>,
        ctx: &InvocationContext,
        stream: Option<ResponseStream>,
    ) -> InvocationResult {
        let start = Instant::now();
        let timeout = Duration::from_millis(ctx.limits.timeout_ms);
        let deadline = start + timeout;
        let mut slot = pool
            .and_then(WarmPool::take)
            .unwrap_or_else(|| self.new_slot(ctx));
        // Raised if this invocation's instance goes away before its guest returns (a trap,
        // a timeout, the caller dropping the call): a body it was still streaming then ends
        // in an error, never a clean end that would pass for the whole body.
        let cut = Arc::new(AtomicBool::new(false));
        slot.cut = cut.clone();
        slot.armed = true;
        // A warm instance serves this invocation's trace, with this version's grants.
        slot.store.data_mut().hooks = Outbound {
            cut: cut.clone(),
            ..ctx.outbound.clone()
        };
        let (stdout, stderr, oom) = (slot.stdout.clone(), slot.stderr.clone(), slot.oom.clone());
        oom.store(false, Ordering::Relaxed);
        slot.store.set_epoch_deadline(1);
        slot.store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(Trap::Interrupt.into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });

        let (parts, body) = request.into_parts();
        let body = body
            .map_err(|e: BoxError| {
                if e.is::<http_body_util::LengthLimitError>() {
                    wasmtime_wasi_http::Error::HttpRequestBodySize(None)
                } else {
                    wasmtime_wasi_http::Error::InternalError(Some(e.to_string()))
                }
            })
            .boxed_unsync();
        let request = hyper::Request::from_parts(parts, body);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let prepared = (|| {
            let http = &mut slot.store.data_mut().http();
            let req = http.new_incoming_request(Scheme::Http, request)?;
            let out = http.new_response_outparam(tx)?;
            Ok::<_, wasmtime::Error>((req, out))
        })();
        let (req, out) = match prepared {
            Ok(x) => x,
            Err(e) => {
                return InvocationResult {
                    outcome: Outcome::Error,
                    response: None,
                    error: Some(format!("preparing the request: {e:#}")),
                    stdout: Bytes::new(),
                    stderr: Bytes::new(),
                    duration: start.elapsed(),
                    cpu_time: Duration::ZERO,
                };
            }
        };

        let pre = component.pre.clone();
        let pool_full = Arc::new(AtomicBool::new(false));
        let pool_full_flag = pool_full.clone();
        let guest = async move {
            let proxy = match slot.proxy.take() {
                Some(p) => p,
                None => match pre.instantiate_async(&mut slot.store).await {
                    Ok(p) => p,
                    Err(e) => {
                        if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                            .is_some()
                        {
                            pool_full_flag.store(true, Ordering::Relaxed);
                        }
                        return (None, Err(e));
                    }
                },
            };
            let result = proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut slot.store, req, out)
                .await;
            slot.proxy = Some(proxy);
            if result.is_ok() {
                // Returned normally: what it sent is what it meant to send.
                slot.armed = false;
            }
            // A trapped instance is dropped here, and with it the response channel it
            // held, so that the response side sees "no response" at once.
            match result {
                Ok(()) => (Some(slot), Ok(())),
                Err(e) => {
                    drop(slot);
                    (None, Err(e))
                }
            }
        };
        let max_response = self.config.max_response_bytes;
        let response = async move {
            let (parts, body) = match rx.await {
                Ok(Ok(resp)) => resp.into_parts(),
                Ok(Err(code)) => {
                    return Err(Some(format!("the function answered with error {code:?}")));
                }
                Err(_) => return Err(None),
            };
            match stream {
                None => match Limited::new(body, max_response).collect().await {
                    Ok(c) => Ok(Some(http::Response::from_parts(parts, c.to_bytes()))),
                    Err(e) => Err(Some(format!("reading the response body: {e}"))),
                },
                Some(stream) => respond_streaming(parts, body, stream, max_response, &cut).await,
            }
        };
        // Guest and response body run together: the guest may keep writing the body after
        // it has set the response. A guest blocked in a host call (e.g. sleeping) is not
        // interrupted by epochs, so the whole invocation also runs under a tokio timeout.
        let mut cpu_time = Duration::ZERO;
        let joined = {
            let mut work = std::pin::pin!(async { tokio::join!(guest, response) });
            let cpu = &mut cpu_time;
            let timed = std::future::poll_fn(move |cx| {
                let before = thread_cpu_time();
                let polled = work.as_mut().poll(cx);
                *cpu += thread_cpu_time().saturating_sub(before);
                polled
            });
            tokio::time::timeout(timeout + EPOCH_TICK * 4, timed).await
        };
        let oom = oom.load(Ordering::Relaxed);
        let (outcome, response, error) = match joined {
            Err(_) => (Outcome::Timeout, None, Some(timeout_message(timeout))),
            Ok(((slot, guest), response)) => {
                let result = match (guest, response) {
                    (Ok(()), Ok(resp)) => (Outcome::Success, resp, None),
                    (Err(e), _) if is_interrupt(&e) => {
                        (Outcome::Timeout, None, Some(timeout_message(timeout)))
                    }
                    (Err(e), _) if pool_full.load(Ordering::Relaxed) => (
                        Outcome::Throttled,
                        None,
                        Some(format!(
                            "the node is at capacity (no free instance slot): {e:#}"
                        )),
                    ),
                    (_, _) if oom => (
                        Outcome::OutOfMemory,
                        None,
                        Some(format!(
                            "the function exceeded its memory limit of {}",
                            wisp_core::ByteSize(ctx.limits.memory_bytes)
                        )),
                    ),
                    (Err(e), _) => (
                        Outcome::Error,
                        None,
                        Some(format!("the function failed: {e:#}")),
                    ),
                    (Ok(()), Err(Some(msg))) => (Outcome::Error, None, Some(msg)),
                    (Ok(()), Err(None)) => (
                        Outcome::Error,
                        None,
                        Some("the function returned without setting a response".to_string()),
                    ),
                };
                if let (Some(pool), Some(slot)) = (pool, slot)
                    && result.0 == Outcome::Success
                {
                    pool.put(slot);
                }
                result
            }
        };
        InvocationResult {
            outcome,
            response,
            error,
            stdout: stdout.take(),
            stderr: stderr.take(),
            duration: start.elapsed(),
            cpu_time,
        }
    }
}

/// Sends a function's response on as it is written (see [`ResponseStream`]): holds up to
/// `stream.after` bytes, answers whole what ends within them (`Ok(Some)`), and otherwise
/// gives the head and what it held to `stream.head` and pumps the rest, a frame at a
/// time, at the pace the caller reads (`Ok(None)` once the body is finished).
async fn respond_streaming(
    parts: http::response::Parts,
    mut body: wasmtime_wasi_http::WasiBody,
    stream: ResponseStream,
    max_response: usize,
    cut: &AtomicBool,
) -> Result<Option<http::Response<Bytes>>, Option<String>> {
    let too_large = || {
        Some(format!(
            "the response is larger than the {max_response} bytes a function may answer"
        ))
    };
    let mut held: std::collections::VecDeque<Frame<Bytes>> = std::collections::VecDeque::new();
    let mut held_len = 0usize;
    while held_len < stream.after {
        match body.frame().await {
            None => {
                let mut whole = bytes::BytesMut::with_capacity(held_len);
                for f in held {
                    if let Ok(d) = f.into_data() {
                        whole.extend_from_slice(&d);
                    }
                }
                return Ok(Some(http::Response::from_parts(parts, whole.freeze())));
            }
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    held_len += d.len();
                    if held_len > max_response {
                        return Err(too_large());
                    }
                }
                held.push_back(frame);
            }
            Some(Err(e)) => return Err(Some(format!("reading the response body: {e}"))),
        }
    }
    let (tx, rx) = tokio::sync::mpsc::channel(IN_FLIGHT);
    let caller_body = ChannelBody {
        held,
        rx,
        done: false,
    };
    let head = http::Response::from_parts(parts, caller_body.boxed_unsync());
    if stream.head.send(head).is_err() {
        // The caller is gone: nobody reads the rest.
        return Ok(None);
    }
    let mut sent = held_len;
    loop {
        let piece = match body.frame().await {
            None if cut.load(Ordering::SeqCst) => {
                Piece::Failed("the function failed while writing its response".into())
            }
            None => Piece::End,
            Some(Ok(frame)) => {
                sent += frame.data_ref().map_or(0, |d| d.len());
                if sent > max_response {
                    let why = too_large();
                    // (Dropping `tx` cuts the caller's body off too, if this does not fit.)
                    let _ = tx.try_send(Piece::Failed(why.clone().unwrap_or_default()));
                    return Err(why);
                }
                Piece::Frame(frame)
            }
            Some(Err(e)) => {
                let why = format!("writing the response body: {e}");
                let _ = tx.try_send(Piece::Failed(why.clone()));
                return Err(Some(why));
            }
        };
        let last = !matches!(piece, Piece::Frame(_));
        let sending = tx.send(piece);
        let delivered = match stream.stall {
            Some(stall) => tokio::time::timeout(stall, sending).await.ok(),
            None => Some(sending.await),
        };
        match delivered {
            Some(Ok(())) => {}
            // The caller stopped reading (a client that went away): the function's
            // further writes fail, which it sees as a closed stream.
            Some(Err(_)) => {
                tracing::debug!(sent, "the caller went away while a response streamed");
                return Ok(None);
            }
            // A reader that takes nothing for `stall` is cut off, so it cannot hold the
            // function (and its concurrency slot) for the whole timeout.
            None => {
                tracing::info!(
                    sent,
                    "a client read nothing of a streamed response for {:?}; cut it off",
                    stream.stall.unwrap_or_default()
                );
                return Ok(None);
            }
        }
        if last {
            return Ok(None);
        }
    }
}

/// The calling thread's CPU time (user + system).
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// A store and, once instantiated, the instance in it, with its captured output.
struct Slot {
    /// While armed (from the start of an invocation until its guest returns normally),
    /// dropping the slot raises `cut` first, before the store and the bodies it feeds
    /// go away.
    cut: Arc<AtomicBool>,
    armed: bool,
    store: Store<HostState>,
    proxy: Option<Proxy>,
    stdout: LogPipe,
    stderr: LogPipe,
    oom: Arc<AtomicBool>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.armed {
            self.cut.store(true, Ordering::SeqCst);
        }
    }
}

/// Idle warm instances of one function version (instance reuse mode). Each holds a slot
/// of the instance pool while it waits, so the pool keeps at most `max_idle`.
pub struct WarmPool {
    idle: std::sync::Mutex<Vec<Slot>>,
    max_idle: usize,
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool")
            .field("idle", &self.idle())
            .field("max_idle", &self.max_idle)
            .finish()
    }
}

impl WarmPool {
    pub fn new(max_idle: usize) -> Self {
        WarmPool {
            idle: std::sync::Mutex::new(Vec::new()),
            max_idle,
        }
    }

    /// Instances waiting for a request.
    pub fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn take(&self) -> Option<Slot> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn put(&self, slot: Slot) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            idle.push(slot);
        }
    }
}

fn timeout_message(timeout: Duration) -> String {
    format!(
        "the function did not finish within its timeout of {}ms",
        timeout.as_millis()
    )
}

fn is_interrupt(e: &wasmtime::Error) -> bool {
    matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt))
}
