//! The function gateway: an HTTP server that matches each request against the route
//! table (method + path template, most specific wins), turns it into an
//! [`Invocation`](wisp_invoker::Invocation) and hands it to the invoker.
//!
//! It owns HTTP concerns only: request ids, path parameters, body size limits, the
//! mapping of outcomes to status codes (404/405/413/429/500/502/503/504, as JSON with the
//! request id), and keeping what a function answers from breaking HTTP framing (see
//! [`sanitize_function_response`]). Platform errors reach public callers as a generic
//! message with the status and the request id; the details stay in the node's logs and
//! `wisp logs`, unless the node runs in development mode ([`Options::expose_errors`]).
//! It does not run functions or know about wasm.
#![forbid(unsafe_code)]

pub mod server;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Body;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use wisp_core::{Outcome, RouteMatch, Trigger};
use wisp_invoker::{Invocation, InvokeError, Invoker, StreamBody, Streams, full, new_request_id};

pub use wisp_invoker::{PARAM_HEADER_PREFIX, REQUEST_ID_HEADER, ROUTE_HEADER};

/// How the gateway answers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Development mode: error responses carry the function's error (its message, a
    /// panic's backtrace) and the `wisp logs` command that shows more. Off by default:
    /// public callers then get a generic message, the status and the request id only,
    /// since an error message can hold anything the function saw (env values, secrets).
    pub expose_errors: bool,
    /// The caller is a function on this node (`http://self`): a WebAssembly function's
    /// request body streams into it as the caller writes it, and its response streams
    /// back from the first byte, so caller and callee can talk full duplex. Public
    /// callers' request bodies are read whole first (as API Gateway does), which lets
    /// the gateway answer 413 and check webhook signatures before anything runs; their
    /// responses stream once longer than [`STREAM_AFTER`].
    pub stream_bodies: bool,
    /// A client that takes nothing of a streamed response for this long is cut off, so a
    /// reader that stalls cannot hold a function for its whole timeout (`wisp up` uses
    /// its `--idle-timeout`). `None`: no limit.
    pub stalled_reader: Option<Duration>,
}

/// Bytes of a WebAssembly function's response the gateway holds before it starts
/// sending it on: a response that ends within them is answered whole (and a function
/// that fails while writing it gets a clean 500); a longer one streams, at the pace the
/// client reads, so a slow reader costs the node a few chunks, not the response.
pub const STREAM_AFTER: usize = 256 * 1024;

/// Serves the gateway on `listener` until `shutdown` resolves, then stops accepting and
/// lets in-flight requests finish (for at most `grace`).
pub async fn serve(
    listener: TcpListener,
    invoker: Arc<Invoker>,
    options: Options,
    limits: server::Limits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> std::io::Result<()> {
    let handler = move |mut req: Request<hyper::body::Incoming>, peer| {
        let invoker = invoker.clone();
        req.extensions_mut().insert(wisp_invoker::PeerAddr(peer));
        async move { handle_with(&invoker, req, options).await }
    };
    server::serve(
        listener,
        "function gateway",
        handler,
        limits,
        shutdown,
        grace,
    )
    .await
}

fn error_response(status: StatusCode, request_id: &str, message: String) -> Response<StreamBody> {
    let body = serde_json::json!({ "error": message, "request_id": request_id });
    let mut resp = Response::new(full(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn with_request_id(mut resp: Response<StreamBody>, request_id: &str) -> Response<StreamBody> {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
}

/// Handles one request with the default [`Options`] (errors not exposed). Generic over
/// the body so tests can call it without a socket.
pub async fn handle<B>(invoker: &Arc<Invoker>, req: Request<B>) -> Response<StreamBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    handle_with(invoker, req, Options::default()).await
}

/// Handles one request.
pub async fn handle_with<B>(
    invoker: &Arc<Invoker>,
    req: Request<B>,
    options: Options,
) -> Response<StreamBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let request_id = new_request_id();
    let resp = route_and_invoke(invoker, req, &request_id, options).await;
    with_request_id(resp, &request_id)
}

async fn route_and_invoke<B>(
    invoker: &Arc<Invoker>,
    req: Request<B>,
    request_id: &str,
    options: Options,
) -> Response<StreamBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // HTTP/1.0 allows a request without `Host`; functions (and wasi:http) need an
    // authority, so such a request is refused here as the client's mistake.
    if req.uri().authority().is_none() && !req.headers().contains_key(header::HOST) {
        return error_response(
            StatusCode::BAD_REQUEST,
            request_id,
            "the request has no Host header".into(),
        );
    }
    let registry = invoker.registry();
    let (function, route, params) = match registry
        .routes()
        .lookup(req.method().as_str(), req.uri().path())
    {
        RouteMatch::Found {
            target,
            route,
            params,
        } => (target.clone(), route.to_string(), params),
        RouteMatch::MethodNotAllowed { allowed } => {
            let allow = allowed
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let mut resp = error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                request_id,
                format!(
                    "{} is not allowed on {}; allowed: {allow}",
                    req.method(),
                    req.uri().path()
                ),
            );
            if let Ok(v) = HeaderValue::from_str(&allow) {
                resp.headers_mut().insert(header::ALLOW, v);
            }
            return resp;
        }
        RouteMatch::NotFound => {
            return error_response(
                StatusCode::NOT_FOUND,
                request_id,
                format!("no route matches {} {}", req.method(), req.uri().path()),
            );
        }
    };
    drop(registry);

    let max_body = function.spec.limits.max_body_bytes;
    let too_large = || {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            request_id,
            format!(
                "the request body is larger than function `{}` accepts ({}); raise `limits.max_body` to accept more",
                function.name,
                wisp_core::ByteSize(max_body)
            ),
        )
    };
    if content_length(req.headers()).is_some_and(|n| n > max_body) {
        return too_large();
    }
    // `X-Amz-Invocation-Type: Event` (as API Gateway's asynchronous Lambda integration):
    // the body is stored as the event of an asynchronous invocation, answered 202.
    let asynchronous = req
        .headers()
        .get("x-amz-invocation-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("event"));
    let (mut parts, body) = req.into_parts();
    // A function on this node calling a WebAssembly function synchronously: the body
    // streams in as the caller writes it (full duplex), within the callee's `max_body`.
    let streamed = options.stream_bodies
        && !asynchronous
        && function.native.is_none()
        && function.spec.native.is_none()
        && function.spec.webhook.is_none();
    let (body, request_body) = if streamed {
        let limited = Limited::new(body, max_body as usize)
            .map_err(|e| -> wisp_invoker::BoxError { e })
            .boxed_unsync();
        (Bytes::new(), Some(limited))
    } else {
        match Limited::new(body, max_body as usize).collect().await {
            Ok(c) => (c.to_bytes(), None),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return too_large();
            }
            Err(e) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    request_id,
                    format!("reading the request body: {e}"),
                );
            }
        }
    };

    // A webhook route runs its function only for a correctly signed body.
    if let Some(hook) = &function.spec.webhook
        && let Err(why) = check_signature(hook, &function.spec.env, &parts.headers, &body)
    {
        // The reason (a missing env var, a stale timestamp) is for the function's owner.
        tracing::info!(request_id, function = %function.name, "webhook signature check failed: {why}");
        return error_response(
            StatusCode::UNAUTHORIZED,
            request_id,
            // What was wrong with the request (a missing header, a stale timestamp) is
            // the sender's to know; it never includes the secret or the expected value.
            format!("webhook signature check failed: {why}"),
        );
    }
    if asynchronous {
        return enqueue(
            invoker,
            &function,
            &parts.headers,
            &body,
            request_id,
            options,
        )
        .await;
    }
    let trace =
        wisp_invoker::set_context_headers(&mut parts.headers, request_id, Some(&route), &params);
    let version = parts.version;
    let request = Request::from_parts(parts, body);
    let name = function.name.to_string();
    // A long response is sent on while the function writes it; from then on the
    // invocation finishes (logs, usage, metrics) on its own task, whatever the client
    // does. (A client that leaves before the head still cancels the call, as before.)
    let (head_tx, mut head_rx) = tokio::sync::oneshot::channel();
    // HTTP/1.0 has no chunked encoding: a streamed body would be framed by closing the
    // connection, and a body cut off by a failing function would look whole. Such
    // clients get whole responses, as before.
    let response = (version >= http::Version::HTTP_11).then_some(wisp_invoker::ResponseStream {
        after: if options.stream_bodies {
            0
        } else {
            STREAM_AFTER
        },
        head: head_tx,
        stall: options.stalled_reader,
    });
    let streams = Streams {
        request_body: wisp_invoker::SyncWrapper::new(request_body),
        response,
    };
    let run_invoker = invoker.clone();
    let (run_request_id, run_trace) = (request_id.to_string(), trace.clone());
    let mut run = Box::pin(async move {
        run_invoker
            .invoke(Invocation {
                function,
                trigger: Trigger::Http,
                request_id: run_request_id,
                trace: run_trace,
                request,
                client_context: None,
                streams,
            })
            .await
    });
    let mut resp = tokio::select! {
        biased;
        Ok(head) = &mut head_rx => {
            tokio::spawn(run);
            sanitize_function_response(head, &name, request_id, options)
        }
        result = &mut run => match head_rx.try_recv() {
            Ok(head) => sanitize_function_response(head, &name, request_id, options),
            Err(_) => respond(result, &name, request_id, options),
        },
    };
    if let Ok(v) = HeaderValue::from_str(&trace.trace_id) {
        resp.headers_mut().insert(TRACE_ID_HEADER, v);
    }
    resp
}

async fn enqueue(
    invoker: &Invoker,
    function: &wisp_invoker::ActiveFunction,
    headers: &http::HeaderMap,
    body: &Bytes,
    request_id: &str,
    options: Options,
) -> Response<StreamBody> {
    use wisp_invoker::EnqueueError;
    match invoker.enqueue(function, body, headers).await {
        Ok(accepted) => {
            let body = serde_json::to_vec(&accepted).unwrap_or_default();
            let mut resp = Response::new(full(Bytes::from(body)));
            *resp.status_mut() = StatusCode::ACCEPTED;
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Ok(v) = HeaderValue::from_str(&accepted.trace_id) {
                resp.headers_mut().insert(TRACE_ID_HEADER, v);
            }
            resp
        }
        Err(e @ EnqueueError::Invalid(_)) => {
            error_response(StatusCode::BAD_REQUEST, request_id, e.to_string())
        }
        Err(e) => {
            let status = match e {
                EnqueueError::NoEventStore => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            tracing::error!(request_id, function = %function.name, "enqueueing: {e}");
            platform_error(status, request_id, options, &e.to_string())
        }
    }
}

/// Header with the W3C trace id of the invocation, on responses from functions.
pub const TRACE_ID_HEADER: &str = "x-wisp-trace-id";

fn respond(
    result: Result<wisp_invoker::Completed, InvokeError>,
    name: &str,
    request_id: &str,
    options: Options,
) -> Response<StreamBody> {
    match result {
        Ok(done) => match (done.outcome, done.response) {
            (Outcome::Success, Some(resp)) => {
                sanitize_function_response(resp.map(full), name, request_id, options)
            }
            (Outcome::Throttled, _) => {
                let why = format!(
                    "function `{name}` could not start: {}",
                    done.error.unwrap_or_default()
                );
                tracing::warn!(request_id, "{why}");
                let mut resp =
                    platform_error(StatusCode::SERVICE_UNAVAILABLE, request_id, options, &why);
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                resp
            }
            (Outcome::Timeout, _) => platform_error(
                StatusCode::GATEWAY_TIMEOUT,
                request_id,
                options,
                &format!(
                    "function `{name}` timed out: {}",
                    done.error.unwrap_or_default()
                ),
            ),
            // The function's own error (and a panic's backtrace) is in its logs.
            (_, _) => platform_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                request_id,
                options,
                &format!(
                    "function `{name}` failed: {}; see `wisp logs {name} --request-id {request_id}`",
                    done.error.unwrap_or_else(|| "no response".into())
                ),
            ),
        },
        Err(e @ (InvokeError::Throttled { .. } | InvokeError::NodeFull { .. })) => {
            // Which limit was hit is the platform's, not the function's, and tells the
            // caller how to back off.
            let mut resp = error_response(StatusCode::TOO_MANY_REQUESTS, request_id, e.to_string());
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            resp
        }
        Err(e @ InvokeError::RecursionStopped { .. }) => platform_error(
            StatusCode::LOOP_DETECTED,
            request_id,
            options,
            &e.to_string(),
        ),
        Err(e @ InvokeError::Unavailable { .. }) => {
            tracing::error!(request_id, "{e}");
            platform_error(
                StatusCode::SERVICE_UNAVAILABLE,
                request_id,
                options,
                &e.to_string(),
            )
        }
    }
}

/// A 5xx for a public caller: the status's generic text (as API Gateway answers), or in
/// development mode the detail.
fn platform_error(
    status: StatusCode,
    request_id: &str,
    options: Options,
    detail: &str,
) -> Response<StreamBody> {
    let generic = match status {
        StatusCode::GATEWAY_TIMEOUT => "Endpoint request timed out",
        s => s.canonical_reason().unwrap_or("Internal Server Error"),
    };
    error_response(status, request_id, public_detail(options, generic, detail))
}

fn public_detail(options: Options, generic: &str, detail: &str) -> String {
    if options.expose_errors {
        format!("{generic}: {detail}")
    } else {
        generic.to_string()
    }
}

/// Response headers a function may not set, because they frame the HTTP message or
/// manage the connection (RFC 9110 7.6.1, RFC 9112 6): the gateway frames the body
/// itself. A function-supplied `Content-Length: 0` followed by a body shaped like a
/// second response would otherwise make the next response on a keep-alive connection
/// (another user's, another function's) the one the function wrote. As API Gateway
/// does, they are kept under `x-amzn-Remapped-<name>` so nothing is silently lost.
const FRAMING_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Makes a function's response safe to send on a shared connection: framing and
/// hop-by-hop headers (and any header the function's `Connection` names) are remapped,
/// and an informational status (`101 Switching Protocols` and the like), which would
/// hand the connection to the function, becomes a 502.
pub fn sanitize_function_response(
    mut resp: Response<StreamBody>,
    name: &str,
    request_id: &str,
    options: Options,
) -> Response<StreamBody> {
    if resp.status().is_informational() {
        let why = format!(
            "function `{name}` answered {}, which the gateway does not pass on",
            resp.status()
        );
        tracing::warn!(request_id, "{why}");
        return platform_error(StatusCode::BAD_GATEWAY, request_id, options, &why);
    }
    let headers = resp.headers_mut();
    // The headers `Connection` names (rare), then the fixed list; nothing is allocated
    // for a response that has none of them.
    let named: Vec<header::HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| header::HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    let fixed = FRAMING_HEADERS
        .iter()
        .map(|n| header::HeaderName::from_static(n));
    for name in named.into_iter().chain(fixed) {
        let values: Vec<HeaderValue> = match headers.entry(&name) {
            header::Entry::Occupied(e) => e.remove_entry_mult().1.collect(),
            header::Entry::Vacant(_) => continue,
        };
        if let Ok(remapped) =
            header::HeaderName::from_bytes(format!("x-amzn-remapped-{name}").as_bytes())
        {
            for v in values {
                headers.append(&remapped, v);
            }
        }
    }
    resp
}

/// Checks a webhook's signature (GitHub, Stripe or a generic HMAC-SHA256 header) with the
/// secret from the function's env. The reason never includes the expected value.
fn check_signature(
    hook: &wisp_core::WebhookSpec,
    env: &std::collections::BTreeMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), String> {
    use wisp_events::webhook::{Encoding, Scheme, WebhookVerifier};
    let secret = env
        .get(&hook.secret_env)
        .ok_or_else(|| format!("the function has no env var `{}`", hook.secret_env))?;
    let scheme = match hook.provider {
        wisp_core::WebhookProvider::Github => Scheme::GitHub,
        wisp_core::WebhookProvider::Stripe => Scheme::Stripe {
            tolerance: Duration::from_secs(hook.tolerance_s.unwrap_or(300)),
        },
        wisp_core::WebhookProvider::Hmac => Scheme::Generic {
            header: hook.header.clone().unwrap_or_else(|| "x-signature".into()),
            encoding: match hook.encoding.as_deref() {
                Some("hex") => Encoding::Hex,
                Some("base64") => Encoding::Base64,
                _ => Encoding::PrefixedHex,
            },
        },
    };
    WebhookVerifier::new(scheme, secret.as_bytes())
        .verify(headers, body, wisp_events::Timestamp::now())
        .map_err(|e| e.to_string())
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function_response(status: u16, headers: &[(&str, &str)]) -> Response<StreamBody> {
        let mut b = Response::builder().status(status);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(full(Bytes::from_static(b"HTTP/1.1 200 OK\r\n\r\n")))
            .unwrap()
    }

    #[test]
    fn framing_and_hop_by_hop_headers_from_a_function_are_remapped() {
        let resp = sanitize_function_response(
            function_response(
                200,
                &[
                    ("content-length", "0"),
                    ("transfer-encoding", "chunked"),
                    ("connection", "keep-alive, x-secret-hop"),
                    ("x-secret-hop", "1"),
                    ("keep-alive", "timeout=99"),
                    ("upgrade", "websocket"),
                    ("trailer", "x-t"),
                    ("set-cookie", "a=1"),
                    ("content-type", "text/html"),
                ],
            ),
            "f",
            "req",
            Options::default(),
        );
        let h = resp.headers();
        for gone in [
            "content-length",
            "transfer-encoding",
            "connection",
            "x-secret-hop",
            "keep-alive",
            "upgrade",
            "trailer",
        ] {
            assert!(h.get(gone).is_none(), "{gone} survived: {h:?}");
        }
        assert_eq!(h["x-amzn-remapped-content-length"], "0");
        assert_eq!(h["x-amzn-remapped-transfer-encoding"], "chunked");
        assert_eq!(h["x-amzn-remapped-x-secret-hop"], "1");
        assert_eq!(h["set-cookie"], "a=1");
        assert_eq!(h["content-type"], "text/html");
    }

    #[test]
    fn an_informational_status_from_a_function_becomes_502() {
        let resp = sanitize_function_response(
            function_response(101, &[("upgrade", "websocket")]),
            "f",
            "req",
            Options::default(),
        );
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        assert!(resp.headers().get("upgrade").is_none());
    }

    fn text(resp: Response<StreamBody>) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = rt.block_on(resp.into_body().collect()).unwrap().to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn platform_errors_are_generic_unless_in_development_mode() {
        let detail = "function `boom` failed: RuntimeError: db password is hunter2";
        let public = platform_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "req-1",
            Options::default(),
            detail,
        );
        let body = text(public);
        assert!(!body.contains("hunter2"), "{body}");
        assert!(body.contains("Internal Server Error"), "{body}");
        let dev = platform_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "req-1",
            Options {
                expose_errors: true,
                ..Options::default()
            },
            detail,
        );
        assert!(text(dev).contains("hunter2"));
        let timeout = platform_error(
            StatusCode::GATEWAY_TIMEOUT,
            "req-1",
            Options::default(),
            detail,
        );
        assert!(text(timeout).contains("Endpoint request timed out"));
    }
}
