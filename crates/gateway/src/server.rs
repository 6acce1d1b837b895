//! The node's HTTP accept loop, shared by the function gateway, the platform API and the
//! S3 API, with the limits a server facing untrusted clients needs:
//!
//! - **A connection cap** per listener: past it, new connections wait in the kernel's
//!   backlog instead of taking file descriptors the node needs for everything else.
//! - **A header timeout**: a connection that has started sending a request must complete
//!   its headers within it (slowloris clients trickling a byte at a time are closed).
//! - **An idle timeout**: a connection with no request in flight that sends nothing is
//!   closed after it. Time spent running a function or streaming a response never counts:
//!   a connection is idle only while none of its requests is being answered.
//! - **Back-off on accept errors** (out of file descriptors): a short sleep, not a spin.
//!
//! hyper's own `header_read_timeout` covers neither the protocol detection of the `auto`
//! builder nor the wait for a second request on a keep-alive connection, so the
//! connection task watches its own state instead.

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Connection limits of one listener.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once; more wait to be accepted.
    pub max_connections: usize,
    /// From the first byte of a request (or of the connection) to its complete headers.
    pub header_timeout: Duration,
    /// How long a connection with nothing in flight may stay silent.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// What a connection's watchdog looks at.
struct ConnState {
    epoch: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` when the connection last became idle.
    idle_since: AtomicU64,
    /// Whether a byte arrived since then (a request has begun).
    started: AtomicBool,
}

impl ConnState {
    fn new() -> Self {
        ConnState {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            started: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.started.store(false, Ordering::SeqCst);
    }

    fn request_finished(&self) {
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle_since.store(self.now_ms(), Ordering::SeqCst);
            self.started.store(false, Ordering::SeqCst);
        }
    }

    /// Why the connection should be closed now, if it should.
    fn expired(&self, limits: &Limits) -> Option<&'static str> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let idle = Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.idle_since.load(Ordering::SeqCst)),
        );
        if self.started.load(Ordering::SeqCst) {
            (idle >= limits.header_timeout).then_some("request headers not complete in time")
        } else {
            (idle >= limits.idle_timeout).then_some("idle")
        }
    }
}

/// The accepted socket, noting when bytes arrive while no request is in flight.
struct Watched {
    inner: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.started.store(true, Ordering::SeqCst);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Marks a request in flight until its response body is done (or dropped).
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn new(state: Arc<ConnState>) -> Self {
        state.request_started();
        InFlight(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// A response body that keeps its request in flight while it is being sent.
pub struct Tracked<B> {
    inner: Pin<Box<B>>,
    _in_flight: InFlight,
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.inner.as_mut().poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `handler` on `listener` under `limits` until `shutdown` resolves, then stops
/// accepting and lets in-flight requests finish (for at most `grace`). `what` names the
/// listener in the node's log.
pub async fn serve<H, Fut, B>(
    listener: TcpListener,
    what: &'static str,
    handler: H,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> std::io::Result<()>
where
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let check_every = (limits.header_timeout.min(limits.idle_timeout) / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut warned_full = false;
    tokio::pin!(shutdown);
    loop {
        if slots.available_permits() == 0 && !warned_full {
            tracing::warn!(
                limit = limits.max_connections,
                "the {what} has as many connections as it allows; new ones wait"
            );
            warned_full = true;
        }
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = &mut shutdown => break,
        };
        if slots.available_permits() > limits.max_connections / 10 {
            warned_full = false;
        }
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("{what}: accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::new(ConnState::new());
        let io = Watched {
            inner: stream,
            state: state.clone(),
        };
        let service = {
            let (handler, state) = (handler.clone(), state.clone());
            hyper::service::service_fn(move |req: Request<Incoming>| {
                let in_flight = InFlight::new(state.clone());
                let fut = handler(req, peer);
                async move {
                    let resp = fut.await;
                    Ok::<_, std::convert::Infallible>(resp.map(|b| Tracked {
                        inner: Box::pin(b),
                        _in_flight: in_flight,
                    }))
                }
            })
        };
        let builder = builder.clone();
        let conn = graceful.watch(
            builder
                .serve_connection(TokioIo::new(io), service)
                .into_owned(),
        );
        tokio::spawn(async move {
            let _permit = permit;
            let watchdog = async {
                loop {
                    tokio::time::sleep(check_every).await;
                    if let Some(why) = state.expired(&limits) {
                        return why;
                    }
                }
            };
            tokio::select! {
                done = conn => if let Err(e) = done {
                    tracing::debug!("connection closed: {e}");
                },
                why = watchdog => tracing::debug!(%peer, "closing a connection: {why}"),
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("{what}: in-flight requests did not finish within {grace:?}; closing them");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_idle_only_with_nothing_in_flight() {
        let limits = Limits {
            max_connections: 1,
            header_timeout: Duration::from_millis(0),
            idle_timeout: Duration::from_millis(0),
        };
        let s = Arc::new(ConnState::new());
        assert_eq!(s.expired(&limits), Some("idle"));
        let req = InFlight::new(s.clone());
        assert_eq!(s.expired(&limits), None, "a request is being answered");
        drop(req);
        assert_eq!(s.expired(&limits), Some("idle"));
        s.started.store(true, Ordering::SeqCst);
        assert_eq!(
            s.expired(&limits),
            Some("request headers not complete in time")
        );
        let generous = Limits {
            header_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            ..limits
        };
        assert_eq!(s.expired(&generous), None);
    }
}
