//! The function gateway: an HTTP server that matches each request against the route
//! table (method + path template, most specific wins), turns it into an
//! [`Invocation`](wisp_invoker::Invocation) and hands it to the invoker.
//!
//! It owns HTTP concerns only: request ids, path parameters, body size limits, and the
//! mapping of outcomes to status codes (404/405/413/429/500/503/504, as JSON with the
//! request id). It does not run functions or know about wasm.
#![forbid(unsafe_code)]

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use wisp_core::{Outcome, RouteMatch, Trigger};
use wisp_invoker::{Invocation, InvokeError, Invoker, new_request_id};

pub use wisp_invoker::{PARAM_HEADER_PREFIX, REQUEST_ID_HEADER, ROUTE_HEADER};

/// Serves the gateway on `listener` until `shutdown` resolves, then stops accepting and
/// lets in-flight requests finish (for at most `grace`).
pub async fn serve(
    listener: TcpListener,
    invoker: Arc<Invoker>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!("accepting a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let invoker = invoker.clone();
                let service = hyper::service::service_fn(move |mut req: Request<_>| {
                    let invoker = invoker.clone();
                    req.extensions_mut().insert(wisp_invoker::PeerAddr(peer));
                    async move { Ok::<_, std::convert::Infallible>(handle(&invoker, req).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("connection closed: {e}");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within {grace:?}; closing them");
    }
    Ok(())
}

fn error_response(status: StatusCode, request_id: &str, message: String) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": message, "request_id": request_id });
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn with_request_id(mut resp: Response<Full<Bytes>>, request_id: &str) -> Response<Full<Bytes>> {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
}

/// Handles one request. Generic over the body so tests can call it without a socket.
pub async fn handle<B>(invoker: &Invoker, req: Request<B>) -> Response<Full<Bytes>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let request_id = new_request_id();
    let resp = route_and_invoke(invoker, req, &request_id).await;
    with_request_id(resp, &request_id)
}

async fn route_and_invoke<B>(
    invoker: &Invoker,
    req: Request<B>,
    request_id: &str,
) -> Response<Full<Bytes>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
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
    let (mut parts, body) = req.into_parts();
    let body = match Limited::new(body, max_body as usize).collect().await {
        Ok(c) => c.to_bytes(),
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
    };

    // A webhook route runs its function only for a correctly signed body.
    if let Some(hook) = &function.spec.webhook
        && let Err(why) = check_signature(hook, &function.spec.env, &parts.headers, &body)
    {
        return error_response(
            StatusCode::UNAUTHORIZED,
            request_id,
            format!("webhook signature check failed: {why}"),
        );
    }
    // `X-Amz-Invocation-Type: Event` (as API Gateway's asynchronous Lambda integration):
    // the body is stored as the event of an asynchronous invocation, answered 202.
    let asynchronous = parts
        .headers
        .get("x-amz-invocation-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("event"));
    if asynchronous {
        return enqueue(invoker, &function, &parts.headers, &body, request_id).await;
    }
    let trace =
        wisp_invoker::set_context_headers(&mut parts.headers, request_id, Some(&route), &params);
    let request = Request::from_parts(parts, body);
    let name = function.name.to_string();
    let result = invoker
        .invoke(Invocation {
            function,
            trigger: Trigger::Http,
            request_id: request_id.to_string(),
            trace: trace.clone(),
            request,
            client_context: None,
        })
        .await;
    let mut resp = respond(result, &name, request_id);
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
) -> Response<Full<Bytes>> {
    use wisp_invoker::EnqueueError;
    match invoker.enqueue(function, body, headers).await {
        Ok(accepted) => {
            let body = serde_json::to_vec(&accepted).unwrap_or_default();
            let mut resp = Response::new(Full::new(Bytes::from(body)));
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
        Err(e) => {
            let status = match e {
                EnqueueError::NoEventStore => StatusCode::SERVICE_UNAVAILABLE,
                EnqueueError::Invalid(_) => StatusCode::BAD_REQUEST,
                EnqueueError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error_response(status, request_id, e.to_string())
        }
    }
}

/// Header with the W3C trace id of the invocation, on responses from functions.
pub const TRACE_ID_HEADER: &str = "x-wisp-trace-id";

fn respond(
    result: Result<wisp_invoker::Completed, InvokeError>,
    name: &str,
    request_id: &str,
) -> Response<Full<Bytes>> {
    match result {
        Ok(done) => match (done.outcome, done.response) {
            (Outcome::Success, Some(resp)) => resp.map(Full::new),
            (Outcome::Throttled, _) => {
                let mut resp = error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    request_id,
                    format!(
                        "function `{name}` could not start: {}",
                        done.error.unwrap_or_default()
                    ),
                );
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                resp
            }
            (Outcome::Timeout, _) => error_response(
                StatusCode::GATEWAY_TIMEOUT,
                request_id,
                format!(
                    "function `{name}` timed out: {}",
                    done.error.unwrap_or_default()
                ),
            ),
            (_, _) => error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                request_id,
                format!(
                    "function `{name}` failed: {}; see `wisp logs {name} --request-id {request_id}`",
                    done.error.unwrap_or_else(|| "no response".into())
                ),
            ),
        },
        Err(e @ (InvokeError::Throttled { .. } | InvokeError::NodeFull { .. })) => {
            let mut resp = error_response(StatusCode::TOO_MANY_REQUESTS, request_id, e.to_string());
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            resp
        }
        Err(e @ InvokeError::Unavailable { .. }) => {
            tracing::error!(request_id, "{e}");
            error_response(StatusCode::SERVICE_UNAVAILABLE, request_id, e.to_string())
        }
    }
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
