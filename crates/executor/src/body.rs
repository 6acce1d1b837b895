//! Bodies that stream between the node and a function: a request body arriving, a
//! response body leaving, the bodies of a host-service call. Each flows through bounded
//! buffers, so what the node holds for one invocation does not grow with the body.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame};
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, oneshot};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body that streams (or is whole, boxed the same way).
pub type StreamBody = UnsyncBoxBody<Bytes, BoxError>;

/// A whole body as a [`StreamBody`].
pub fn full(bytes: Bytes) -> StreamBody {
    Full::new(bytes)
        .map_err(|never: std::convert::Infallible| match never {})
        .boxed_unsync()
}

/// A function's response, sent on before the function has finished writing it.
///
/// The executor holds the first `after` bytes of the body: a response that ends within
/// them is answered whole, as when nothing streams (and a function that fails while
/// writing it still gets a clean error response). A longer response goes to `head` as
/// soon as `after` bytes are held, and the rest follows as the function writes it, with
/// the caller's reading pace holding the function back. `after: 0` sends the head as
/// soon as the function sets it (for a caller that talks to the function full duplex).
pub struct ResponseStream {
    pub after: usize,
    pub head: oneshot::Sender<http::Response<StreamBody>>,
    /// A caller that takes nothing of the body for this long is cut off (its connection
    /// closed mid-body), so a reader that stalls cannot hold the function for its whole
    /// timeout. `None`: no such limit.
    pub stall: Option<std::time::Duration>,
}

impl std::fmt::Debug for ResponseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseStream")
            .field("after", &self.after)
            .field("stall", &self.stall)
            .finish()
    }
}

/// What the pump sends the caller's side of a streamed response.
pub(crate) enum Piece {
    Frame(Frame<Bytes>),
    /// The function finished the body: the stream ends cleanly.
    End,
    Failed(String),
}

/// Frames of a streamed response in flight between the pump and the caller: at most
/// this many (each at most one write of the function's).
pub(crate) const IN_FLIGHT: usize = 4;

/// A request body a function streams to a host service: if the function's instance goes
/// away before it returned normally (`cut`), an end of the body is an error, not a clean
/// end, so a service never takes a cut-off body for a whole one (wasmtime ends the body
/// of a dropped store cleanly).
pub(crate) struct CallerBody {
    pub(crate) inner: wasmtime_wasi_http::WasiBody,
    pub(crate) cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Body for CallerBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) if self.cut.load(std::sync::atomic::Ordering::SeqCst) => {
                Poll::Ready(Some(Err(Box::new(Cut(
                    "the calling function stopped before finishing its request body".into(),
                )))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(Some(Ok(f))) => Poll::Ready(Some(Ok(f))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream() && !self.cut.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The caller's side of a streamed response: the frames held before streaming, then
/// what the pump sends. A stream that stops without [`Piece::End`] (the function timed
/// out, trapped or was dropped) is an error, never a clean end, so a cut-off response
/// never passes for a whole one.
pub(crate) struct ChannelBody {
    pub(crate) held: VecDeque<Frame<Bytes>>,
    pub(crate) rx: mpsc::Receiver<Piece>,
    pub(crate) done: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Cut(String);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(frame) = self.held.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Piece::Frame(f))) => Poll::Ready(Some(Ok(f))),
            Poll::Ready(Some(Piece::End)) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Piece::Failed(why))) => {
                self.done = true;
                Poll::Ready(Some(Err(Box::new(Cut(why)))))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(Some(Err(Box::new(Cut(
                    "the function stopped before finishing its response".into(),
                )))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stream_that_stops_without_its_end_is_an_error_not_a_clean_end() {
        let (tx, rx) = mpsc::channel(IN_FLIGHT);
        let body = ChannelBody {
            held: VecDeque::from([Frame::data(Bytes::from_static(b"ab"))]),
            rx,
            done: false,
        };
        tx.send(Piece::Frame(Frame::data(Bytes::from_static(b"cd"))))
            .await
            .unwrap();
        drop(tx);
        let mut body = std::pin::pin!(body);
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!((&first[..], &second[..]), (&b"ab"[..], &b"cd"[..]));
        assert!(body.frame().await.unwrap().is_err());
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn a_finished_stream_ends_cleanly() {
        let (tx, rx) = mpsc::channel(IN_FLIGHT);
        let body = ChannelBody {
            held: VecDeque::new(),
            rx,
            done: false,
        };
        tx.send(Piece::Frame(Frame::data(Bytes::from_static(b"x"))))
            .await
            .unwrap();
        tx.send(Piece::End).await.unwrap();
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"x");
    }
}
