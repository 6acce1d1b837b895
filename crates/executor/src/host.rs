//! The per-request host state: WASI context, wasi:http context, memory limiter.

use crate::body::StreamBody;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

pub struct HostState {
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub table: ResourceTable,
    pub limiter: MemoryLimiter,
    pub hooks: Outbound,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Caps the linear memory of one instance and remembers whether the cap was hit, so a
/// trap that follows can be reported as "out of memory" rather than a generic crash.
pub struct MemoryLimiter {
    pub max_bytes: usize,
    pub hit: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.hit.store(true, std::sync::atomic::Ordering::Relaxed);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// A service of the node that functions reach by a virtual host name in outbound
/// `wasi:http` requests (`http://objects.wisp/...`), served in-process: no socket, no
/// credentials in the function. Both bodies stream: the request body reaches the service
/// as the function writes it, and the response body reaches the function as the service
/// produces it, each through bounded buffers, so a large object costs the node a few
/// chunks rather than its size, and a caller can talk to a service full duplex.
pub trait HostService: Send + Sync + 'static {
    fn call(
        &self,
        request: http::Request<StreamBody>,
    ) -> std::pin::Pin<Box<dyn Future<Output = http::Response<StreamBody>> + Send>>;
}

/// What one invocation may call: the host services (by virtual host name) its function
/// was granted, and the trace context its outbound requests carry. Outbound HTTP to
/// anywhere else is denied: Wisp's default is no network for functions.
#[derive(Clone, Default)]
pub struct Outbound {
    pub services: Vec<(String, std::sync::Arc<dyn HostService>)>,
    /// `traceparent` for requests that do not set one (the invocation's span as parent).
    pub traceparent: Option<http::HeaderValue>,
    /// The calling function, put in each request's extensions as [`Caller`].
    pub caller: String,
    /// The buckets its objects grant reaches (empty: all), put in each request's
    /// extensions as [`BucketScope`].
    pub buckets: Vec<String>,
    /// Raised when the invocation's instance goes away before its guest returned (set
    /// by the executor for each invocation): see [`crate::body`].
    pub cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The buckets a host-service request may touch (empty: any), from the caller's grant.
#[derive(Debug, Clone, Default)]
pub struct BucketScope(pub Vec<String>);

/// The function a host-service request comes from (a request extension, which the
/// function cannot set or forge).
#[derive(Debug, Clone)]
pub struct Caller(pub String);

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field(
                "services",
                &self.services.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("traceparent", &self.traceparent)
            .finish()
    }
}

type SendResult = Result<
    (
        http::Response<wasmtime_wasi_http::WasiBody>,
        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ),
    wasmtime_wasi_http::Error,
>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        use http_body_util::BodyExt;
        let host = request.uri().host().map(str::to_ascii_lowercase);
        let plain_http = request.uri().scheme_str().is_none_or(|s| s == "http");
        let service = host.filter(|_| plain_http).and_then(|h| {
            self.services
                .iter()
                .find(|(name, _)| *name == h)
                .map(|(_, s)| s.clone())
        });
        let Some(service) = service else {
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        };
        let traceparent = self.traceparent.clone();
        let caller = Caller(self.caller.clone());
        let scope = BucketScope(self.buckets.clone());
        let cut = self.cut.clone();
        Box::new(async move {
            let (mut parts, body) = request.into_parts();
            let body = crate::body::CallerBody { inner: body, cut }.boxed_unsync();
            if let Some(tp) = traceparent
                && !parts.headers.contains_key("traceparent")
            {
                parts.headers.insert("traceparent", tp);
            }
            parts.extensions.insert(caller);
            parts.extensions.insert(scope);
            let response = service.call(http::Request::from_parts(parts, body)).await;
            let response = response.map(|b| {
                b.map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(e.to_string())))
                    .boxed_unsync()
            });
            let io: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send> =
                Box::new(async { Ok(()) });
            Ok((response, io))
        })
    }
}
