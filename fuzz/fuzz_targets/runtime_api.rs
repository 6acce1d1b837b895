//! The Lambda Runtime API (`wisp_native::runtime_api::handle`), in process: requests go
//! over an in-memory connection (tokio `duplex`, hyper's HTTP/1 client and server), no
//! sockets. The tokio clock is paused, so a `next` that would wait for an event forever
//! ends at once (it times out); only `next` may wait.
//!
//! The input is text, steps separated by `~~~` lines. A step is either
//!   `dispatch <id> <event>`          the platform queues an invocation, or
//!   `<METHOD> <path>`, header lines, an empty line, the body: one request. Two pseudo
//!   headers shape it: `x-fuzz-chunks: <n>` sends the body in chunks of n bytes (chunked
//!   encoding), `x-fuzz-trailer-<name>: <value>` adds a trailer.
//! Each answer is checked against a model of the API: the status codes of the AWS
//! runtime interface emulator (202, 400 unknown id, 403 wrong state, 404, 405), the
//! event and headers `next` hands out, and the reply each invocation gets.
#![no_main]

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use libfuzzer_sys::fuzz_target;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use wisp_native::runtime_api::{ApiState, Pending, Reply, handle};

const BASE: &str = "/2018-06-01/runtime/";

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    trailers: Vec<(String, String)>,
    chunks: Option<usize>,
    body: Vec<u8>,
}

enum Step {
    Dispatch(String, String),
    Request(Request),
}

fn steps(text: &str) -> Vec<Step> {
    let mut out = Vec::new();
    for step in text.split("\n~~~\n").take(12) {
        if let Some(rest) = step.strip_prefix("dispatch ") {
            let (id, event) = rest.split_once(' ').unwrap_or((rest, "{}"));
            out.push(Step::Dispatch(id.to_string(), event.to_string()));
            continue;
        }
        let (head, body) = step.split_once("\n\n").unwrap_or((step, ""));
        let mut lines = head.lines();
        let Some((method, path)) = lines.next().and_then(|l| l.split_once(' ')) else {
            continue;
        };
        let mut req = Request {
            method: method.to_string(),
            path: path.to_string(),
            headers: Vec::new(),
            trailers: Vec::new(),
            chunks: None,
            body: body.as_bytes().to_vec(),
        };
        for (n, v) in lines.filter_map(|l| l.split_once(':')) {
            let (n, v) = (n.trim().to_ascii_lowercase(), v.trim().to_string());
            if n == "x-fuzz-chunks" {
                req.chunks = v.parse::<usize>().ok().map(|c| c.clamp(1, 64));
            } else if let Some(t) = n.strip_prefix("x-fuzz-trailer-") {
                req.trailers.push((t.to_string(), v));
            } else if n != "content-length" && n != "transfer-encoding" && n != "host" {
                req.headers.push((n, v));
            }
        }
        out.push(Step::Request(req));
    }
    out
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

type Frames = Vec<Result<Frame<Bytes>, std::convert::Infallible>>;

/// Sends one request on a fresh in-memory connection; None if the handler is still
/// waiting when the (paused) clock has run 60 s.
async fn send(state: &Arc<ApiState>, req: &Request) -> Result<Option<Answer>, ()> {
    let mut b = http::Request::builder()
        .method(req.method.as_str())
        .uri(req.path.as_str())
        .header("host", "127.0.0.1:9001");
    for (n, v) in &req.headers {
        b = b.header(n.as_str(), v.as_str());
    }
    let mut frames: Frames = Vec::new();
    match req.chunks {
        Some(n) => frames.extend(
            req.body
                .chunks(n)
                .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c)))),
        ),
        None => frames.push(Ok(Frame::data(Bytes::from(req.body.clone())))),
    }
    if !req.trailers.is_empty() {
        let mut t = http::HeaderMap::new();
        for (n, v) in &req.trailers {
            let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(n.as_bytes()),
                http::HeaderValue::from_str(v),
            ) else {
                return Err(());
            };
            b = b.header("trailer", n.as_str());
            t.append(n, v);
        }
        frames.push(Ok(Frame::trailers(t)));
    }
    let request = b
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .map_err(|_| ())?;

    let (client_io, server_io) = tokio::io::duplex(1 << 16);
    let server_state = state.clone();
    let server = tokio::spawn(async move {
        let service = hyper::service::service_fn(move |req| {
            let state = server_state.clone();
            async move { Ok::<_, std::convert::Infallible>(handle(&state, req).await) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(server_io), service)
            .await;
    });
    let exchange = async {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(client_io))
                .await
                .ok()?;
        let conn = tokio::spawn(conn);
        let resp = sender.send_request(request).await.ok()?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.ok()?.to_bytes();
        drop(sender);
        let _ = conn.await;
        Some(Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    };
    let answer = tokio::time::timeout(Duration::from_secs(60), exchange).await;
    if server.is_finished() {
        if let Err(e) = server.await
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
    } else {
        server.abort();
        if let Err(e) = server.await
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    match answer {
        Ok(Some(a)) => Ok(Some(a)),
        // The client refused the request (an invalid one), or the connection broke.
        Ok(None) => Err(()),
        Err(_) => Ok(None),
    }
}

struct Invocation {
    id: String,
    reply: oneshot::Receiver<Reply>,
}

fn run(text: &str) {
    let (state, queue, mut init) = ApiState::new("arn:aws:lambda:local:0:function:f".into());
    let queue: mpsc::Sender<Pending> = queue;
    // The model.
    let mut queued: VecDeque<(String, String, oneshot::Receiver<Reply>)> = VecDeque::new();
    let mut current: Option<Invocation> = None;
    let mut answered: Option<String> = None;
    let mut init_done = false;
    let mut retired: Vec<Invocation> = Vec::new();

    RUNTIME.with(|rt| {
        rt.block_on(async {
            for step in steps(text) {
                let req = match step {
                    Step::Dispatch(id, event) => {
                        let (tx, rx) = oneshot::channel();
                        let p = Pending {
                            id: id.clone(),
                            event: Bytes::from(event.clone()),
                            deadline_ms: 1_700_000_000_000,
                            trace_header: "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
                                .into(),
                            client_context: None,
                            reply: tx,
                        };
                        if queue.try_send(p).is_ok() {
                            queued.push_back((id, event, rx));
                        }
                        continue;
                    }
                    Step::Request(r) => r,
                };
                let Ok(answer) = send(&state, &req).await else {
                    continue;
                };
                let path = req.path.split(['?', '#']).next().unwrap_or("");
                let parts: Option<Vec<&str>> =
                    path.strip_prefix(BASE).map(|r| r.split('/').collect());
                let get = req.method == "GET";
                let post = req.method == "POST";
                let header = |n: &str| {
                    req.headers
                        .iter()
                        .find(|(k, _)| k == n)
                        .map(|(_, v)| v.as_str())
                };
                match parts.as_deref() {
                    Some(["invocation", "next"]) if get => {
                        init_done = true;
                        // `next` ends the init: a later init/error is refused.
                        if let Ok(r) = init.try_recv() {
                            assert!(r.is_ok(), "next ended the init with an error");
                        }
                        let Some(a) = answer else {
                            assert!(queued.is_empty(), "next waited with an event queued");
                            continue;
                        };
                        let (id, event, rx) = queued.pop_front().expect("next without an event");
                        assert_eq!(a.status, 200);
                        assert_eq!(a.body, event.as_bytes());
                        if let Some(h) = a.headers.get("lambda-runtime-aws-request-id") {
                            assert_eq!(h, id.as_str());
                        } else {
                            assert!(http::HeaderValue::from_str(&id).is_err());
                        }
                        if let Some(prev) = current.replace(Invocation { id, reply: rx }) {
                            retired.push(prev);
                        }
                    }
                    Some(["invocation", id, kind @ ("response" | "error")]) if post => {
                        let a = answer.expect("only next may wait");
                        let is_current = current.as_ref().is_some_and(|c| c.id == *id);
                        if !is_current {
                            let want = if answered.as_deref() == Some(*id) {
                                403
                            } else {
                                400
                            };
                            assert_eq!(a.status, want, "{kind} for {id}");
                            continue;
                        }
                        assert!(a.status == 202 || a.status == 413, "{}", a.status);
                        let mut inv = current.take().unwrap();
                        answered = Some(inv.id.clone());
                        let reply = inv
                            .reply
                            .try_recv()
                            .expect("an answered invocation has its reply");
                        let error_trailer = req
                            .trailers
                            .iter()
                            .any(|(n, _)| n == "lambda-runtime-function-error-type");
                        match (kind, reply) {
                            (&"error", Reply::Error(_)) => {}
                            (&"response", Reply::Error(_)) => {
                                assert!(error_trailer || a.status == 413);
                            }
                            (&"response", Reply::Response(b)) => {
                                assert_eq!(a.status, 202);
                                let http_stream = header("lambda-runtime-function-response-mode")
                                    .is_some_and(|m| m.eq_ignore_ascii_case("streaming"))
                                    && header("content-type")
                                        == Some(
                                            "application/vnd.awslambda.http-integration-response",
                                        );
                                if !http_stream {
                                    assert_eq!(b, req.body);
                                }
                            }
                            (k, r) => panic!("{k} gave {r:?}"),
                        }
                    }
                    Some(["init", "error"]) if post => {
                        let a = answer.expect("only next may wait");
                        if init_done {
                            assert_eq!(a.status, 403);
                        } else {
                            assert_eq!(a.status, 202);
                            init_done = true;
                            assert!(matches!(init.try_recv(), Ok(Err(_))));
                        }
                    }
                    Some(["invocation", "next"] | ["invocation", _, _] | ["init", "error"]) => {
                        let a = answer.expect("only next may wait");
                        assert_eq!(a.status, 405, "{} {}", req.method, req.path);
                    }
                    _ => {
                        let a = answer.expect("only next may wait");
                        assert_eq!(a.status, 404, "{} {}", req.method, req.path);
                    }
                }
            }
        });
    });
    // An invocation replaced by the runtime's next `next` was answered for it.
    for mut r in retired {
        if answered.as_deref() != Some(r.id.as_str()) {
            assert!(matches!(r.reply.try_recv(), Ok(Reply::Error(_))));
        }
    }
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        run(text);
    }
});
