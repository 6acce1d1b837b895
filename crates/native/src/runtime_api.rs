//! The Lambda Runtime API (`/2018-06-01/runtime/...`), served to one instance on the
//! listener its sandbox hands over. The runtime long-polls `invocation/next`, gets one
//! event, and answers it with `response` or `error`; `init/error` reports a failed start.
//! Status codes follow the AWS runtime interface emulator: 202 accepted, 400 unknown
//! request id, 403 a call that does not fit the instance's state, 413 a payload over 6 MB.
//! <https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html>

// The helpers' `Err` is the early answer to send (a whole response), on rare paths.
#![allow(clippy::result_large_err)]

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Largest response or error a runtime may post, as on AWS (6 MB).
pub const MAX_PAYLOAD: usize = 6_291_556;
/// Largest streamed response (AWS's soft limit is 20 MB).
pub const MAX_STREAMED_PAYLOAD: usize = 20 * 1024 * 1024;

/// An invocation handed to the instance, waiting for the runtime's `next`.
#[doc(hidden)] // pub for the fuzz targets (fuzz/), as are `Reply`, `ApiState`, `handle`.
pub struct Pending {
    pub id: String,
    pub event: Bytes,
    /// Unix time in milliseconds by which the function must answer.
    pub deadline_ms: i64,
    /// `Root=1-...;Parent=...;Sampled=1`
    pub trace_header: String,
    pub client_context: Option<String>,
    pub reply: oneshot::Sender<Reply>,
}

/// How the runtime answered an invocation.
#[derive(Debug)]
#[doc(hidden)]
pub enum Reply {
    Response(Bytes),
    Error(FunctionError),
}

/// An error reported by the runtime (or by the platform on its behalf), in Lambda's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionError {
    /// e.g. `ValueError`, `Runtime.ImportModuleError`, `Sandbox.Timedout`.
    pub error_type: String,
    pub message: String,
    /// The JSON document as the runtime sent it (or as the platform made it).
    pub body: Bytes,
}

impl FunctionError {
    pub fn new(error_type: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let body = serde_json::json!({"errorMessage": message, "errorType": error_type});
        FunctionError {
            error_type: error_type.to_string(),
            message,
            body: Bytes::from(body.to_string()),
        }
    }

    /// From a posted error document and the `Lambda-Runtime-Function-Error-Type` header.
    fn from_posted(header_type: Option<&str>, body: Bytes) -> Self {
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let error_type = header_type
            .filter(|t| !t.is_empty())
            .or(doc["errorType"].as_str())
            .unwrap_or("Unhandled")
            .to_string();
        let message = doc["errorMessage"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        let body = if doc.is_object() {
            body
        } else {
            FunctionError::new(&error_type, &message).body
        };
        FunctionError {
            error_type,
            message,
            body,
        }
    }
}

struct Current {
    id: String,
    reply: oneshot::Sender<Reply>,
}

/// One instance's side of the API.
#[doc(hidden)]
pub struct ApiState {
    pub function_arn: String,
    queue: tokio::sync::Mutex<mpsc::Receiver<Pending>>,
    current: Mutex<Option<Current>>,
    /// The last answered request id: answering it again is a state error (403), not an
    /// unknown id (400).
    answered: Mutex<Option<String>>,
    /// Fired by the first `next` (the runtime finished its init) or by `init/error`.
    init: Mutex<Option<oneshot::Sender<Result<(), FunctionError>>>>,
}

impl ApiState {
    pub fn new(
        function_arn: String,
    ) -> (
        Arc<Self>,
        mpsc::Sender<Pending>,
        oneshot::Receiver<Result<(), FunctionError>>,
    ) {
        let (tx, rx) = mpsc::channel(1);
        let (init_tx, init_rx) = oneshot::channel();
        let state = ApiState {
            function_arn,
            queue: tokio::sync::Mutex::new(rx),
            current: Mutex::new(None),
            answered: Mutex::new(None),
            init: Mutex::new(Some(init_tx)),
        };
        (Arc::new(state), tx, init_rx)
    }

    fn finish_init(&self, result: Result<(), FunctionError>) -> bool {
        match self.init.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(tx) => {
                let _ = tx.send(result);
                true
            }
            None => false,
        }
    }

    /// Takes the current invocation if `id` is it; else the status to answer with.
    fn take_current(&self, id: &str) -> Result<Current, Response<Full<Bytes>>> {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if cur.as_ref().is_some_and(|c| c.id == id) {
            let c = cur.take().expect("checked");
            *self.answered.lock().unwrap_or_else(|p| p.into_inner()) = Some(id.to_string());
            return Ok(c);
        }
        let answered = self.answered.lock().unwrap_or_else(|p| p.into_inner());
        if answered.as_deref() == Some(id) {
            return Err(error_response(
                StatusCode::FORBIDDEN,
                "InvalidStateTransition",
                "the invocation was already answered: post a response or an error once per request id",
            ));
        }
        Err(error_response(
            StatusCode::BAD_REQUEST,
            "InvalidRequestID",
            "Invalid request ID: it is not the invocation this runtime is serving",
        ))
    }
}

fn error_response(status: StatusCode, error_type: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({"errorMessage": message, "errorType": error_type});
    json_response(status, body.to_string())
}

fn json_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn accepted() -> Response<Full<Bytes>> {
    json_response(StatusCode::ACCEPTED, r#"{"status":"OK"}"#.to_string())
}

/// Connections one instance's Runtime API serves at once.
pub(crate) const MAX_CONNECTIONS: usize = 16;

/// Serves the API on `listener` until the instance's state is dropped and the listener
/// closed (the task is aborted by the instance).
pub(crate) async fn serve(listener: std::net::TcpListener, state: Arc<ApiState>) {
    if let Err(e) = listener.set_nonblocking(true) {
        tracing::error!("runtime API listener: {e}");
        return;
    }
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("runtime API listener: {e}");
            return;
        }
    };
    // A runtime needs one or two connections. The cap keeps a function that opens
    // thousands (from many forked processes) from spending the node's file descriptors:
    // past it, its connections wait in the kernel's backlog, counted against the
    // sandbox's own limits, and only that instance stalls.
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: back off instead of spinning.
                tracing::warn!("runtime API: accepting a connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&state, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

#[doc(hidden)]
pub async fn handle(state: &ApiState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let Some(rest) = path.strip_prefix("/2018-06-01/runtime/") else {
        return error_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            "unknown path: the Runtime API lives under /2018-06-01/runtime/",
        );
    };
    let parts: Vec<&str> = rest.split('/').collect();
    match (req.method(), parts.as_slice()) {
        (&Method::GET, ["invocation", "next"]) => next(state).await,
        (&Method::POST, ["invocation", id, "response"]) => {
            let id = id.to_string();
            response(state, &id, req).await
        }
        (&Method::POST, ["invocation", id, "error"]) => {
            let id = id.to_string();
            let error_type = header(&req, "lambda-runtime-function-error-type");
            let body = match read_body(req.into_body(), MAX_PAYLOAD).await {
                Ok((b, _)) => b,
                Err(r) => return r,
            };
            let c = match state.take_current(&id) {
                Ok(c) => c,
                Err(r) => return r,
            };
            let _ = c.reply.send(Reply::Error(FunctionError::from_posted(
                error_type.as_deref(),
                body,
            )));
            accepted()
        }
        (&Method::POST, ["init", "error"]) => {
            let error_type = header(&req, "lambda-runtime-function-error-type");
            let body = match read_body(req.into_body(), MAX_PAYLOAD).await {
                Ok((b, _)) => b,
                Err(r) => return r,
            };
            let err = FunctionError::from_posted(error_type.as_deref(), body);
            if state.finish_init(Err(err)) {
                accepted()
            } else {
                error_response(
                    StatusCode::FORBIDDEN,
                    "InvalidStateTransition",
                    "init/error after the runtime's first invocation/next: report errors on the invocation",
                )
            }
        }
        (_, ["invocation", "next"]) | (_, ["invocation", _, _]) | (_, ["init", "error"]) => {
            error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "wrong method for this Runtime API path",
            )
        }
        _ => error_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            "unknown Runtime API path",
        ),
    }
}

fn header<B>(req: &Request<B>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn next(state: &ApiState) -> Response<Full<Bytes>> {
    state.finish_init(Ok(()));
    let pending = {
        let mut queue = state.queue.lock().await;
        queue.recv().await
    };
    let Some(p) = pending else {
        return error_response(
            StatusCode::GONE,
            "InstanceRetired",
            "this instance is being stopped",
        );
    };
    let previous = state
        .current
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .replace(Current {
            id: p.id.clone(),
            reply: p.reply,
        });
    if let Some(prev) = previous {
        let _ = prev.reply.send(Reply::Error(FunctionError::new(
            "Runtime.NoResponse",
            "the runtime asked for the next invocation without answering this one",
        )));
    }
    let mut r = Response::new(Full::new(p.event));
    let h = r.headers_mut();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = http::HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    set("content-type", "application/json");
    set("lambda-runtime-aws-request-id", &p.id);
    set("lambda-runtime-deadline-ms", &p.deadline_ms.to_string());
    set("lambda-runtime-invoked-function-arn", &state.function_arn);
    set("lambda-runtime-trace-id", &p.trace_header);
    if let Some(cc) = &p.client_context {
        set("lambda-runtime-client-context", cc);
    }
    r
}

async fn response(state: &ApiState, id: &str, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let streaming = header(&req, "lambda-runtime-function-response-mode")
        .is_some_and(|m| m.eq_ignore_ascii_case("streaming"));
    let limit = if streaming {
        MAX_STREAMED_PAYLOAD
    } else {
        MAX_PAYLOAD
    };
    let content_type = header(&req, "content-type").unwrap_or_default();
    let read = read_body(req.into_body(), limit).await;
    let c = match state.take_current(id) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let (body, trailers) = match read {
        Ok(b) => b,
        Err(r) => {
            let _ = c.reply.send(Reply::Error(FunctionError::new(
                "Function.ResponseSizeTooLarge",
                format!(
                    "Response payload size exceeded maximum allowed payload size ({limit} bytes)."
                ),
            )));
            return r;
        }
    };
    // A streamed response reports a failure mid-stream in its trailers.
    if let Some(t) = trailers.as_ref().and_then(|t| {
        t.get("lambda-runtime-function-error-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| (v.to_string(), t.get("lambda-runtime-function-error-body")))
    }) {
        let (error_type, encoded) = t;
        let body = encoded
            .and_then(|v| v.to_str().ok())
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .map(Bytes::from)
            .unwrap_or_default();
        let _ = c.reply.send(Reply::Error(FunctionError::from_posted(
            Some(&error_type),
            body,
        )));
        return accepted();
    }
    let body = if streaming && content_type == "application/vnd.awslambda.http-integration-response"
    {
        streamed_http_response(&body)
    } else {
        body
    };
    let _ = c.reply.send(Reply::Response(body));
    accepted()
}

/// A streamed HTTP integration response is a JSON prelude (`statusCode`, `headers`,
/// `cookies`), eight NUL bytes, then the body: folded here into the payload 2.0 shape.
fn streamed_http_response(raw: &Bytes) -> Bytes {
    let Some(split) = raw.windows(8).position(|w| w == [0u8; 8]) else {
        return raw.clone();
    };
    let Ok(serde_json::Value::Object(mut prelude)) = serde_json::from_slice(&raw[..split]) else {
        return raw.clone();
    };
    let body = &raw[split + 8..];
    match std::str::from_utf8(body) {
        Ok(text) => {
            prelude.insert("body".into(), text.into());
        }
        Err(_) => {
            prelude.insert(
                "body".into(),
                base64::engine::general_purpose::STANDARD
                    .encode(body)
                    .into(),
            );
            prelude.insert("isBase64Encoded".into(), true.into());
        }
    }
    Bytes::from(serde_json::Value::Object(prelude).to_string())
}

type Trailers = Option<http::HeaderMap>;

async fn read_body(
    body: Incoming,
    limit: usize,
) -> Result<(Bytes, Trailers), Response<Full<Bytes>>> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => {
            let trailers = collected.trailers().cloned();
            Ok((collected.to_bytes(), trailers))
        }
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                &format!("Exceeded maximum allowed payload size ({limit} bytes)."),
            ))
        }
        Err(e) => Err(error_response(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            &format!("reading the body: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posted_errors_keep_the_runtime_document() {
        let e = FunctionError::from_posted(
            Some("ValueError"),
            Bytes::from_static(
                br#"{"errorMessage":"bad","errorType":"ValueError","stackTrace":[]}"#,
            ),
        );
        assert_eq!(e.error_type, "ValueError");
        assert_eq!(e.message, "bad");
        assert!(String::from_utf8_lossy(&e.body).contains("stackTrace"));
        let e = FunctionError::from_posted(None, Bytes::from_static(b"plain text"));
        assert_eq!(e.error_type, "Unhandled");
        assert_eq!(e.message, "plain text");
        let doc: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
        assert_eq!(doc["errorMessage"], "plain text");
    }

    #[test]
    fn streamed_http_responses_fold_into_payload_2_0() {
        let mut raw = br#"{"statusCode":201,"headers":{"a":"b"}}"#.to_vec();
        raw.extend_from_slice(&[0; 8]);
        raw.extend_from_slice(b"hello");
        let folded = streamed_http_response(&Bytes::from(raw));
        let v: serde_json::Value = serde_json::from_slice(&folded).unwrap();
        assert_eq!(v["statusCode"], 201);
        assert_eq!(v["body"], "hello");
        assert_eq!(v["headers"]["a"], "b");
    }
}

/// The API over real HTTP, driven the way a runtime drives it.
#[cfg(test)]
mod http_tests {
    use super::*;
    use std::time::Duration;

    struct Api {
        base: String,
        queue: mpsc::Sender<Pending>,
        init: Option<oneshot::Receiver<Result<(), FunctionError>>>,
        client: reqwest::Client,
    }

    async fn start() -> Api {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!(
            "http://{}/2018-06-01/runtime",
            listener.local_addr().unwrap()
        );
        let (state, queue, init) = ApiState::new("arn:aws:lambda:local:0:function:f".into());
        tokio::spawn(serve(listener, state));
        Api {
            base,
            queue,
            init: Some(init),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    impl Api {
        /// Queues an event; returns where its answer will arrive.
        async fn dispatch(&self, id: &str, event: &str) -> oneshot::Receiver<Reply> {
            let (tx, rx) = oneshot::channel();
            self.queue
                .send(Pending {
                    id: id.into(),
                    event: Bytes::from(event.to_string()),
                    deadline_ms: 1_700_000_000_000,
                    trace_header:
                        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
                            .into(),
                    client_context: Some(r#"{"custom":{"k":"v"}}"#.into()),
                    reply: tx,
                })
                .await
                .unwrap();
            rx
        }

        /// `GET invocation/next`, as the runtime asks for its next event.
        async fn next(&self) -> reqwest::Response {
            self.client
                .get(format!("{}/invocation/next", self.base))
                .send()
                .await
                .unwrap()
        }

        async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
            self.client
                .post(format!("{}/{path}", self.base))
                .body(body)
                .send()
                .await
                .unwrap()
        }
    }

    #[tokio::test]
    async fn next_delivers_the_event_with_lambdas_headers_and_response_answers_it() {
        let mut api = start().await;
        let init = api.init.take().unwrap();
        let answer = api.dispatch("req-1", r#"{"a":1}"#).await;
        let next = api.next().await;
        assert_eq!(next.status(), 200);
        let h = next.headers();
        assert_eq!(h["lambda-runtime-aws-request-id"], "req-1");
        assert_eq!(h["lambda-runtime-deadline-ms"], "1700000000000");
        assert_eq!(
            h["lambda-runtime-invoked-function-arn"],
            "arn:aws:lambda:local:0:function:f"
        );
        assert!(
            h["lambda-runtime-trace-id"]
                .to_str()
                .unwrap()
                .starts_with("Root=1-")
        );
        assert_eq!(
            h["lambda-runtime-client-context"],
            r#"{"custom":{"k":"v"}}"#
        );
        assert_eq!(next.text().await.unwrap(), r#"{"a":1}"#);
        // The first `next` ends the runtime's init.
        assert!(init.await.unwrap().is_ok());

        let r = api
            .post("invocation/req-1/response", r#"{"ok":true}"#)
            .await;
        assert_eq!(r.status(), 202);
        match answer.await.unwrap() {
            Reply::Response(b) => assert_eq!(b, r#"{"ok":true}"#),
            other => panic!("{other:?}"),
        }
        // Answering twice does not fit the state: 403. An unknown id: 400.
        let r = api.post("invocation/req-1/response", "{}").await;
        assert_eq!(r.status(), 403);
        let r = api.post("invocation/nope/response", "{}").await;
        assert_eq!(r.status(), 400);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["errorType"], "InvalidRequestID");
    }

    #[tokio::test]
    async fn errors_init_errors_and_oversized_payloads() {
        let mut api = start().await;
        // init/error before the first `next` reports a failed init.
        let init = api.init.take().unwrap();
        let r = api
            .client
            .post(format!("{}/init/error", api.base))
            .header("lambda-runtime-function-error-type", "Runtime.ImportModuleError")
            .body(r#"{"errorMessage":"Unable to import module 'app'","errorType":"Runtime.ImportModuleError"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let e = init.await.unwrap().unwrap_err();
        assert_eq!(e.error_type, "Runtime.ImportModuleError");
        assert!(e.message.contains("Unable to import"));

        let answer = api.dispatch("req-2", "{}").await;
        // The invocation is queued: `next` hands it over at once.
        let next = api.next().await;
        assert_eq!(next.status(), 200);
        let r = api
            .client
            .post(format!("{}/invocation/req-2/error", api.base))
            .header("lambda-runtime-function-error-type", "ValueError")
            .body(r#"{"errorMessage":"bad input","errorType":"ValueError","stackTrace":["x"]}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        match answer.await.unwrap() {
            Reply::Error(e) => {
                assert_eq!(e.error_type, "ValueError");
                assert_eq!(e.message, "bad input");
            }
            other => panic!("{other:?}"),
        }
        // init/error after init: 403.
        let r = api.post("init/error", "{}").await;
        assert_eq!(r.status(), 403);

        // A response over 6 MB: 413 to the runtime, an error to the caller.
        let answer = api.dispatch("req-3", "{}").await;
        // The invocation is queued: `next` hands it over at once.
        let next = api.next().await;
        assert_eq!(next.status(), 200);
        let r = api
            .post("invocation/req-3/response", vec![b'x'; MAX_PAYLOAD + 1])
            .await;
        assert_eq!(r.status(), 413);
        match answer.await.unwrap() {
            Reply::Error(e) => assert_eq!(e.error_type, "Function.ResponseSizeTooLarge"),
            other => panic!("{other:?}"),
        }
        // Unknown paths and methods.
        let r = api.post("invocation/next", "").await;
        assert_eq!(r.status(), 405);
        let r = api.post("nothing", "").await;
        assert_eq!(r.status(), 404);
    }

    #[tokio::test]
    async fn streamed_responses_and_their_error_trailers() {
        let api = start().await;
        let answer = api.dispatch("s-1", "{}").await;
        // The invocation is queued: `next` hands it over at once.
        let next = api.next().await;
        assert_eq!(next.status(), 200);
        // Chunked, in several pieces.
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(
                br#"{"statusCode":200,"headers":{"a":"b"}}"#,
            )),
            Ok(Bytes::from_static(&[0; 8])),
            Ok(Bytes::from_static(b"hello ")),
            Ok(Bytes::from_static(b"world")),
        ];
        let r = api
            .client
            .post(format!("{}/invocation/s-1/response", api.base))
            .header("lambda-runtime-function-response-mode", "streaming")
            .header(
                "content-type",
                "application/vnd.awslambda.http-integration-response",
            )
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        match answer.await.unwrap() {
            Reply::Response(b) => {
                let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
                assert_eq!(v["statusCode"], 200);
                assert_eq!(v["body"], "hello world");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn one_instance_cannot_hold_more_than_its_share_of_connections() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let api = start().await;
        let addr = api
            .base
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        async fn ask(addr: &str) -> tokio::net::TcpStream {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /nothing HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .unwrap();
            s
        }
        async fn answered(s: &mut tokio::net::TcpStream) -> bool {
            let mut buf = [0u8; 12];
            s.read_exact(&mut buf).await.is_ok() && buf.starts_with(b"HTTP/1.1 404")
        }
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let mut s = ask(&addr).await;
            assert!(answered(&mut s).await);
            held.push(s);
        }
        // One more waits: it is not accepted while the others stay open.
        let mut extra = ask(&addr).await;
        let early = tokio::time::timeout(Duration::from_millis(500), answered(&mut extra)).await;
        assert!(early.is_err(), "a connection past the cap was served");
        drop(held.pop());
        let later = tokio::time::timeout(Duration::from_secs(10), answered(&mut extra)).await;
        assert_eq!(later.ok(), Some(true), "served once a slot is free");
    }
}
