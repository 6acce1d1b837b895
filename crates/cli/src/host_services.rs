//! The node services WebAssembly functions may call by outbound HTTP (`outbound:` in the
//! manifest), served in-process: `http://objects.wisp/...` is the S3 API, authenticated as
//! the calling function without keys; `http://self/...` is the function gateway, so one
//! function calls another's route (asynchronously with `X-Amz-Invocation-Type: Event`),
//! within the caller's trace. Bodies stream both ways (see [`HostService`]).

use bytes::Bytes;
use http_body_util::BodyExt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use tower::ServiceExt;
use wisp_executor::{Caller, HostService, StreamBody, full};
use wisp_invoker::Invoker;

type Answer = Pin<Box<dyn Future<Output = http::Response<StreamBody>> + Send>>;

/// Registers both services with the invoker.
pub fn register(invoker: &Arc<Invoker>, s3: axum::Router, gateway: wisp_gateway::Options) {
    invoker.set_host_service(wisp_core::HostService::Objects, Arc::new(Objects(s3)));
    invoker.set_host_service(
        wisp_core::HostService::Gateway,
        Arc::new(Gateway(Arc::downgrade(invoker), gateway)),
    );
}

fn failure(status: http::StatusCode, message: String) -> http::Response<StreamBody> {
    let mut r = http::Response::new(full(Bytes::from(message)));
    *r.status_mut() = status;
    r
}

/// `http://objects.wisp/BUCKET/KEY`: the node's S3 API (path-style), as the function.
struct Objects(axum::Router);

impl HostService for Objects {
    fn call(&self, req: http::Request<StreamBody>) -> Answer {
        let router = self.0.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let caller = parts
                .extensions
                .get::<Caller>()
                .map(|c| c.0.clone())
                .unwrap_or_default();
            let scope = parts
                .extensions
                .get::<wisp_executor::BucketScope>()
                .cloned()
                .unwrap_or_default();
            if let Err(why) = in_scope(&scope.0, parts.uri.path()) {
                return s3_access_denied(&why);
            }
            parts
                .extensions
                .insert(wisp_objects::TrustedPrincipal(format!("function:{caller}")));
            // Both bodies stream: an object is written as the function sends it and
            // read as the function takes it, never held whole by the node.
            let req = http::Request::from_parts(parts, axum::body::Body::new(body));
            match router.oneshot(req).await {
                Ok(resp) => resp.map(|b| b.map_err(Into::into).boxed_unsync()),
                Err(never) => match never {},
            }
        })
    }
}

/// Whether a path-style S3 request (`/BUCKET/KEY`) stays within the buckets a function's
/// grant names (`outbound: [{objects: [...]}]`; empty: all). Listing the buckets is
/// outside any such scope: it would show the others' names.
fn in_scope(buckets: &[String], path: &str) -> Result<(), String> {
    if buckets.is_empty() {
        return Ok(());
    }
    let bucket = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let bucket = percent_encoding::percent_decode_str(bucket).decode_utf8_lossy();
    if bucket.is_empty() {
        return Err("listing buckets is not granted: the function may use only its buckets".into());
    }
    if buckets.iter().any(|b| *b == bucket) {
        Ok(())
    } else {
        Err(format!(
            "bucket `{bucket}` is not granted to this function (its manifest grants {})",
            buckets.join(", ")
        ))
    }
}

/// S3's AccessDenied, as the S3 API answers it.
fn s3_access_denied(why: &str) -> http::Response<StreamBody> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>{}</Message></Error>",
        why.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    );
    let mut r = http::Response::new(full(Bytes::from(body)));
    *r.status_mut() = http::StatusCode::FORBIDDEN;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    r
}

/// The calling function's request body, as the gateway takes it. (A named type: the
/// compiler cannot prove a future `Send` through the gateway's generic body when the
/// body's type spells out a boxed `dyn Error`.)
struct CallerBody(StreamBody);

impl http_body::Body for CallerBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        Pin::new(&mut self.0)
            .poll_frame(cx)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}

/// `http://self/PATH`: the function gateway, exactly as a client reaching it.
struct Gateway(Weak<Invoker>, wisp_gateway::Options);

impl HostService for Gateway {
    fn call(&self, req: http::Request<StreamBody>) -> Answer {
        let (invoker, options) = (self.0.upgrade(), self.1);
        Box::pin(async move {
            let Some(invoker) = invoker else {
                return failure(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "the node is shutting down".into(),
                );
            };
            // Full duplex: the request body streams into the callee and its response
            // streams back from the first byte.
            let options = wisp_gateway::Options {
                stream_bodies: true,
                ..options
            };
            // (A concrete error type: the gateway is generic over the body's.)
            let req = req.map(CallerBody);
            wisp_gateway::handle_with(&invoker, req, options).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::in_scope;

    #[test]
    fn a_bucket_scope_allows_only_its_buckets() {
        let scope = vec!["photos".to_string()];
        assert!(in_scope(&[], "/anything/x").is_ok());
        assert!(in_scope(&[], "/").is_ok());
        assert!(in_scope(&scope, "/photos/a/b.jpg").is_ok());
        assert!(in_scope(&scope, "/photos").is_ok());
        assert!(in_scope(&scope, "/other/a").is_err());
        assert!(in_scope(&scope, "/").is_err());
        assert!(in_scope(&scope, "/photos2/x").is_err());
    }
}
