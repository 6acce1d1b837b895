//! A bounded in-memory stdout/stderr that never traps the guest: output past the cap is
//! counted and dropped, and the drop is reported in the captured text.

use bytes::{Bytes, BytesMut};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi_io::poll::Pollable;
use wasmtime_wasi_io::streams::{OutputStream, StreamError, StreamResult};

#[derive(Debug, Default)]
struct Inner {
    buf: BytesMut,
    dropped: usize,
}

#[derive(Debug, Clone)]
pub struct LogPipe {
    cap: usize,
    inner: Arc<Mutex<Inner>>,
}

impl LogPipe {
    pub fn new(cap: usize) -> Self {
        LogPipe {
            cap,
            inner: Arc::default(),
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let room = self.cap.saturating_sub(inner.buf.len());
        let take = room.min(bytes.len());
        inner.buf.extend_from_slice(&bytes[..take]);
        inner.dropped += bytes.len() - take;
    }

    /// Everything captured so far, with a closing note if output was dropped.
    pub fn take(&self) -> Bytes {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = std::mem::take(&mut inner.buf);
        if inner.dropped > 0 {
            if !out.ends_with(b"\n") && !out.is_empty() {
                out.extend_from_slice(b"\n");
            }
            out.extend_from_slice(
                format!(
                    "[wisp: {} bytes of output dropped: an invocation keeps at most {} bytes per stream]\n",
                    inner.dropped, self.cap
                )
                .as_bytes(),
            );
            inner.dropped = 0;
        }
        out.freeze()
    }
}

#[async_trait::async_trait]
impl OutputStream for LogPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for LogPipe {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for LogPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_output_and_reports_the_drop() {
        let p = LogPipe::new(8);
        p.push(b"hello ");
        p.push(b"world\n");
        let out = p.take();
        assert!(out.starts_with(b"hello wo\n[wisp: 4 bytes"), "{out:?}");
        assert!(p.take().is_empty());
    }
}
