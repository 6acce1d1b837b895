//! The S3 REST API over an [`ObjectStore`]: addressing, authentication, dispatch by
//! method and sub-resource, and the XML of each operation.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, OriginalUri, Request, State};
use axum::response::Response;
use axum::routing::any;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::auth::{AuthSettings, Authenticated, Credentials, PayloadAuth, authenticate};
use crate::checksum::{self, ALGORITHMS, ChecksumAlgorithm, ChecksumType};
use crate::chunked::{Payload, read_small};
use crate::cors::{self, CorsConfig};
use crate::error::S3Error;
use crate::events::{Acks, CreatedKind, EventSink};
use crate::names::{MAX_KEY_BYTES, listing_encode, percent_decode};
use crate::post;
use crate::store::{
    BlobFile, ChangeCtx, CompletePart, Completion, Digests, Hashing, ListAfter, ListEntry,
    NewObject, ObjectChecksum, ObjectInfo, ObjectStore, PinGuard, Segment, Upload, WriteCondition,
    etag_matches,
};
use crate::timefmt::{http_date, iso8601_millis, parse_http_date};
use crate::xml::{self, XmlWriter};

#[derive(Clone)]
struct App {
    store: Arc<ObjectStore>,
    credentials: Arc<dyn Credentials>,
    events: Arc<dyn EventSink>,
}

/// Marks a request made inside the node (a function calling the object store through the
/// host) as already authenticated, as this principal (e.g. `function:resize`). Only code
/// in the process can attach it: requests from the network never carry it.
#[derive(Debug, Clone)]
pub struct TrustedPrincipal(pub String);

/// The S3 API as an axum router, usable on its own listener or nested under a prefix
/// (requests are verified against the URI the client signed, prefix included). For
/// `sourceIPAddress` in events, serve it with `into_make_service_with_connect_info`.
pub fn router(
    store: Arc<ObjectStore>,
    credentials: Arc<dyn Credentials>,
    events: Arc<dyn EventSink>,
) -> Router {
    let app = App {
        store,
        credentials,
        events,
    };
    Router::new()
        .route("/", any(entry))
        .route("/{*path}", any(entry))
        .layer(DefaultBodyLimit::disable())
        .with_state(app)
}

/// Largest XML request document (CompleteMultipartUpload with 10,000 parts fits).
const MAX_XML: usize = 4 * 1024 * 1024;
/// Largest CORSConfiguration document (S3: 64 KB).
const MAX_CORS_DOCUMENT: usize = 64 * 1024;
/// Largest user metadata, names and values together (S3: 2 KB).
const MAX_METADATA: usize = 2048;

async fn entry(State(app): State<App>, req: Request) -> Response {
    let request_id = format!("{:016X}", rand::random::<u64>());
    let head = req.method() == Method::HEAD;
    let resource = req.uri().path().to_string();
    let method = req.method().clone();
    // A browser's request: answered with the bucket's CORS rules in mind. A preflight
    // (OPTIONS) carries no credentials and is answered from the rules alone.
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let addressed = address(
        req.uri().path(),
        &host_from(req.headers(), req.uri()),
        &app.store.config().virtual_host_suffixes,
    );
    let result = if method == Method::OPTIONS {
        match addressed.clone() {
            Ok((bucket, key)) => preflight(&app, req.headers(), bucket, key.is_some()).await,
            Err(e) => Err(e),
        }
    } else {
        handle(&app, req, &request_id).await
    };
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%method, %resource, code = e.code, message = %e.message, "S3 request failed");
            e.to_response(&request_id, &resource, head)
        }
    };
    if method != Method::OPTIONS
        && let (Some(origin), Ok((Some(bucket), _))) = (origin, addressed)
    {
        // On errors too: a page can read why its request failed.
        actual_request_cors(&app.store, &mut resp, bucket, &origin, &method).await;
    }
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("x-amz-request-id", v.clone());
        h.insert("x-amz-id-2", v);
    }
    h.insert(header::SERVER, HeaderValue::from_static("Wisp"));
    resp
}

/// A request, authenticated and addressed.
struct Req {
    method: Method,
    headers: HeaderMap,
    query: Vec<(String, String)>,
    host: String,
    auth: Authenticated,
    ctx: ChangeCtx,
}

impl Req {
    fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn has(&self, name: &str) -> bool {
        self.query.iter().any(|(n, _)| n == name)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn decode_utf8(s: &str, what: &str) -> Result<String, S3Error> {
    String::from_utf8(percent_decode(s))
        .map_err(|_| S3Error::invalid_uri(format!("The {what} is not valid UTF-8.")))
}

fn parse_query(raw: Option<&str>) -> Result<Vec<(String, String)>, S3Error> {
    let mut out = Vec::new();
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.push((
            decode_utf8(n, "query string")?,
            decode_utf8(v, "query string")?,
        ));
    }
    Ok(out)
}

fn host_of(parts: &http::request::Parts) -> String {
    host_from(&parts.headers, &parts.uri)
}

fn host_from(headers: &HeaderMap, uri: &http::Uri) -> String {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(|a| a.as_str().to_string()))
        .unwrap_or_default()
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split(']')
            .next()
            .map_or(host, |h| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// (bucket, key) of a request, virtual-hosted or path-style.
fn address(
    path: &str,
    host: &str,
    suffixes: &[String],
) -> Result<(Option<String>, Option<String>), S3Error> {
    let hostname = strip_port(host).to_ascii_lowercase();
    let virtual_bucket = suffixes.iter().find_map(|suffix| {
        hostname
            .strip_suffix(suffix.as_str())
            .and_then(|b| b.strip_suffix('.'))
            .filter(|b| !b.is_empty())
            .map(str::to_string)
    });
    let path = path.strip_prefix('/').unwrap_or(path);
    let (bucket, key) = match virtual_bucket {
        Some(b) => (Some(b), path),
        None => {
            if path.is_empty() {
                return Ok((None, None));
            }
            let (b, k) = path.split_once('/').unwrap_or((path, ""));
            (Some(decode_utf8(b, "bucket name")?), k)
        }
    };
    let key = if key.is_empty() {
        None
    } else {
        let k = decode_utf8(key, "object key")?;
        if k.len() > MAX_KEY_BYTES {
            return Err(S3Error::key_too_long("Your key is too long")
                .with("MaxSizeAllowed", MAX_KEY_BYTES.to_string())
                .with("Size", k.len().to_string()));
        }
        Some(k)
    };
    Ok((bucket, key))
}

async fn handle(app: &App, req: Request, request_id: &str) -> Result<Response, S3Error> {
    let (parts, body) = req.into_parts();
    let signing_uri = parts
        .extensions
        .get::<OriginalUri>()
        .map_or_else(|| parts.uri.clone(), |o| o.0.clone());
    let source_ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let config = app.store.config();
    // A browser form upload: POST to a bucket, signed by its policy in the form rather
    // than by a header or the query.
    if parts.method == Method::POST
        && !parts.headers.contains_key(header::AUTHORIZATION)
        && parts.uri.query().is_none_or(str::is_empty)
        && let Some(boundary) = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(post::form_boundary)
    {
        let host = host_of(&parts);
        if let (Some(bucket), None) =
            address(parts.uri.path(), &host, &config.virtual_host_suffixes)?
        {
            let ctx = ChangeCtx {
                sink: app.events.clone(),
                request_id: request_id.to_string(),
                source_ip,
                principal: String::new(),
            };
            return post_object(app, body, bucket, &host, &boundary, ctx).await;
        }
    }
    // A request the node makes itself (a function's call through the host) carries its
    // principal as an extension, which no network client can set: no signature to check.
    let auth = match parts.extensions.get::<TrustedPrincipal>() {
        Some(p) => crate::auth::Authenticated {
            access_key_id: p.0.clone(),
            payload: crate::auth::PayloadAuth::Unsigned,
        },
        None => authenticate(
            &parts,
            &signing_uri,
            &AuthSettings {
                credentials: app.credentials.as_ref(),
                max_skew: config.max_clock_skew,
                now: OffsetDateTime::now_utc(),
                virtual_host_suffixes: &config.virtual_host_suffixes,
                region: &config.region,
            },
        )?,
    };
    let host = host_of(&parts);
    let (bucket, key) = address(parts.uri.path(), &host, &config.virtual_host_suffixes)?;
    let req = Req {
        method: parts.method.clone(),
        headers: parts.headers,
        query: parse_query(parts.uri.query())?,
        host,
        ctx: ChangeCtx {
            sink: app.events.clone(),
            request_id: request_id.to_string(),
            source_ip,
            principal: auth.access_key_id.clone(),
        },
        auth,
    };
    let store = &app.store;
    match (bucket, key) {
        (None, _) => match req.method {
            Method::GET => list_buckets(store).await,
            _ => Err(S3Error::method_not_allowed(
                "The specified method is not allowed against this resource.",
            )),
        },
        (Some(bucket), None) => bucket_op(store, &req, body, bucket).await,
        (Some(bucket), Some(key)) => object_op(store, &req, body, bucket, key).await,
    }
}

/// Sub-resources this server does not implement; requests for them get 501 instead of
/// being mistaken for plain object or bucket requests.
const UNSUPPORTED: &[&str] = &[
    "accelerate",
    "acl",
    "analytics",
    "attributes",
    "encryption",
    "intelligent-tiering",
    "inventory",
    "legal-hold",
    "lifecycle",
    "logging",
    "metrics",
    "notification",
    "object-lock",
    "ownershipControls",
    "policy",
    "policyStatus",
    "publicAccessBlock",
    "replication",
    "requestPayment",
    "restore",
    "retention",
    "select",
    "tagging",
    "torrent",
    "website",
];

fn unsupported(req: &Req) -> Result<(), S3Error> {
    if let Some(name) = UNSUPPORTED.iter().find(|n| req.has(n)) {
        return Err(S3Error::not_implemented(format!(
            "The ?{name} sub-resource is not implemented."
        )));
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    store: &Arc<ObjectStore>,
    f: impl FnOnce(&ObjectStore) -> Result<T, S3Error> + Send + 'static,
) -> Result<T, S3Error> {
    let s = store.clone();
    tokio::task::spawn_blocking(move || f(&s))
        .await
        .map_err(|e| S3Error::internal(e.to_string()))?
}

/// Runs a change (an object created or removed) on a blocking thread, then waits until the
/// event sink has acknowledged its events: success is answered only once what the change
/// triggers is safely handed on. If the sink fails, the change stands and the client gets
/// 503, so that its retry triggers again (at least once).
async fn change<T: Send + 'static>(
    store: &Arc<ObjectStore>,
    f: impl FnOnce(&ObjectStore) -> Result<(T, Acks), S3Error> + Send + 'static,
) -> Result<T, S3Error> {
    let (value, acks) = blocking(store, f).await?;
    if let Err(reason) = acks.wait().await {
        tracing::error!(%reason, "an object change was stored, but its events were not handled");
        return Err(S3Error::service_unavailable(format!(
            "The change was stored, but the functions it triggers could not be queued ({reason}). Please retry the request."
        )));
    }
    Ok(value)
}

fn xml_response(status: StatusCode, doc: String) -> Response {
    let mut resp = Response::new(Body::from(doc));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    resp
}

fn empty(status: StatusCode) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    resp
}

fn set(resp: &mut Response, name: &str, value: &str) {
    if let (Ok(n), Ok(v)) = (
        header::HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        resp.headers_mut().insert(n, v);
    }
}

fn quoted(etag: &str) -> String {
    format!("\"{etag}\"")
}

// ------------------------------------------------------------------------------------
// Buckets

async fn list_buckets(store: &Arc<ObjectStore>) -> Result<Response, S3Error> {
    let buckets = blocking(store, |s| Ok(s.list_buckets()?)).await?;
    let config = store.config();
    let mut x = XmlWriter::new("ListAllMyBucketsResult");
    x.open("Owner")
        .elem("ID", &config.owner_id)
        .elem("DisplayName", &config.owner_display_name)
        .close("Owner");
    x.open("Buckets");
    for b in buckets {
        x.open("Bucket")
            .elem("Name", &b.name)
            .elem("CreationDate", iso8601_millis(b.created))
            .elem("BucketRegion", &b.region)
            .close("Bucket");
    }
    x.close("Buckets");
    Ok(xml_response(
        StatusCode::OK,
        x.finish("ListAllMyBucketsResult"),
    ))
}

async fn bucket_op(
    store: &Arc<ObjectStore>,
    req: &Req,
    body: Body,
    bucket: String,
) -> Result<Response, S3Error> {
    match req.method {
        Method::GET if req.has("location") => {
            let b = blocking(store, {
                let bucket = bucket.clone();
                move |s| s.bucket(&bucket).map_err(S3Error::from)
            })
            .await?
            .ok_or_else(|| no_such_bucket(&bucket))?;
            let region = if b.region == "us-east-1" {
                String::new()
            } else {
                b.region
            };
            let doc = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LocationConstraint xmlns=\"{}\">{}</LocationConstraint>",
                xml::S3_NS,
                xml::escape(&region)
            );
            Ok(xml_response(StatusCode::OK, doc))
        }
        Method::GET if req.has("versioning") => {
            ensure_bucket(store, &bucket).await?;
            let x = XmlWriter::new("VersioningConfiguration");
            Ok(xml_response(
                StatusCode::OK,
                x.finish("VersioningConfiguration"),
            ))
        }
        Method::GET if req.has("cors") => {
            let config = blocking(store, {
                let bucket = bucket.clone();
                move |s| s.bucket_cors(&bucket)
            })
            .await?
            .ok_or_else(|| {
                S3Error::new(
                    StatusCode::NOT_FOUND,
                    "NoSuchCORSConfiguration",
                    "The CORS configuration does not exist",
                )
                .with("BucketName", &bucket)
            })?;
            Ok(xml_response(StatusCode::OK, config.to_xml()))
        }
        Method::PUT if req.has("cors") => {
            let doc = read_small(body, &req.auth.payload, MAX_CORS_DOCUMENT).await?;
            check_document_digests(req, &doc)?;
            let root = xml::parse(&doc).map_err(|e| malformed_xml(&e))?;
            let config = CorsConfig::from_xml(&root)?;
            blocking(store, move |s| s.put_bucket_cors(&bucket, &config)).await?;
            Ok(empty(StatusCode::OK))
        }
        Method::DELETE if req.has("cors") => {
            blocking(store, move |s| s.delete_bucket_cors(&bucket)).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        Method::GET if req.has("uploads") => list_uploads(store, req, bucket).await,
        Method::GET if req.has("versions") => list_versions(store, req, bucket).await,
        Method::GET => {
            unsupported(req)?;
            if req.q("list-type") == Some("2") {
                list_objects(store, req, bucket, true).await
            } else {
                list_objects(store, req, bucket, false).await
            }
        }
        Method::HEAD => {
            let b = blocking(store, {
                let bucket = bucket.clone();
                move |s| s.bucket(&bucket).map_err(S3Error::from)
            })
            .await?
            .ok_or_else(|| no_such_bucket(&bucket))?;
            let mut resp = empty(StatusCode::OK);
            set(&mut resp, "x-amz-bucket-region", &b.region);
            Ok(resp)
        }
        Method::PUT => {
            unsupported(req)?;
            if req.has("versioning") {
                return Err(S3Error::not_implemented("Versioning is not implemented."));
            }
            let doc = read_small(body, &req.auth.payload, MAX_XML).await?;
            let mut region = store.config().region.clone();
            if !doc.iter().all(u8::is_ascii_whitespace) {
                let root = xml::parse(&doc).map_err(|e| malformed_xml(&e))?;
                if let Some(r) = root.child_text("LocationConstraint")
                    && !r.trim().is_empty()
                {
                    region = r.trim().to_string();
                }
            }
            blocking(store, {
                let bucket = bucket.clone();
                move |s| s.create_bucket(&bucket, &region)
            })
            .await?;
            let mut resp = empty(StatusCode::OK);
            set(&mut resp, "location", &format!("/{bucket}"));
            Ok(resp)
        }
        Method::DELETE => {
            unsupported(req)?;
            blocking(store, move |s| s.delete_bucket(&bucket)).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        Method::POST if req.has("delete") => delete_objects(store, req, body, bucket).await,
        Method::POST => Err(S3Error::new(
            StatusCode::BAD_REQUEST,
            "MalformedPOSTRequest",
            "The body of your POST request is not well-formed multipart/form-data: a form upload is signed by its policy, without an Authorization header or query parameters.",
        )),
        _ => Err(S3Error::method_not_allowed(
            "The specified method is not allowed against this resource.",
        )),
    }
}

// ------------------------------------------------------------------------------------
// CORS

fn cors_bad_request(message: String) -> S3Error {
    S3Error::new(StatusCode::BAD_REQUEST, "BadRequest", message)
}

fn cors_forbidden(message: &str) -> S3Error {
    S3Error::new(StatusCode::FORBIDDEN, "AccessForbidden", message)
}

/// A CORS preflight (`OPTIONS` on a bucket or object), unauthenticated as browsers send
/// it: 200 with what the first matching rule allows, else S3's 400 or 403.
async fn preflight(
    app: &App,
    headers: &HeaderMap,
    bucket: Option<String>,
    object: bool,
) -> Result<Response, S3Error> {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let Some(origin) = get("origin") else {
        return Err(cors_bad_request(
            "Insufficient information. Origin request header needed.".into(),
        ));
    };
    let method = match get("access-control-request-method") {
        Some(m) if cors::METHODS.contains(&m) => m,
        other => {
            return Err(cors_bad_request(format!(
                "Invalid Access-Control-Request-Method: {}",
                other.unwrap_or("null")
            )));
        }
    };
    let Some(bucket) = bucket else {
        return Err(cors_bad_request(
            "Insufficient information. A bucket is needed.".into(),
        ));
    };
    let config = blocking(&app.store, move |s| s.bucket_cors(&bucket))
        .await?
        .ok_or_else(|| cors_forbidden("CORSResponse: CORS is not enabled for this bucket."))?;
    let requested = cors::request_headers(get("access-control-request-headers"));
    let Some(rule) = config.find(origin, method, &requested) else {
        return Err(cors_forbidden(
            "CORSResponse: This CORS request is not allowed. This is usually because the evalution of Origin, request method / Access-Control-Request-Method or Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.",
        )
        .with("Method", method)
        .with("ResourceType", if object { "OBJECT" } else { "BUCKET" }));
    };
    let mut resp = empty(StatusCode::OK);
    set_cors_headers(&mut resp, rule, origin);
    if !requested.is_empty() {
        set(
            &mut resp,
            "access-control-allow-headers",
            &requested.join(", "),
        );
    }
    Ok(resp)
}

/// Adds what the bucket's first rule allowing `method` from `origin` says to the answer
/// of an actual request; nothing if no rule does (the browser then withholds it).
async fn actual_request_cors(
    store: &Arc<ObjectStore>,
    resp: &mut Response,
    bucket: String,
    origin: &str,
    method: &Method,
) {
    let config = match blocking(store, move |s| s.bucket_cors(&bucket)).await {
        Ok(Some(c)) => c,
        _ => return,
    };
    if let Some(rule) = config.find(origin, method.as_str(), &[]) {
        set_cors_headers(resp, rule, origin);
    }
}

fn set_cors_headers(resp: &mut Response, rule: &cors::CorsRule, origin: &str) {
    let allow = rule.allow_origin(origin);
    set(resp, "access-control-allow-origin", allow);
    set(
        resp,
        "access-control-allow-methods",
        &rule.allowed_methods.join(", "),
    );
    if !rule.expose_headers.is_empty() {
        set(
            resp,
            "access-control-expose-headers",
            &rule.expose_headers.join(", "),
        );
    }
    if let Some(age) = rule.max_age_seconds {
        set(resp, "access-control-max-age", &age.to_string());
    }
    if allow != "*" {
        set(resp, "access-control-allow-credentials", "true");
    }
    set(
        resp,
        "vary",
        "Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
    );
}

fn no_such_bucket(bucket: &str) -> S3Error {
    S3Error::no_such_bucket("The specified bucket does not exist").with("BucketName", bucket)
}

fn malformed_xml(detail: &str) -> S3Error {
    S3Error::malformed_xml(format!(
        "The XML you provided was not well-formed or did not validate against our published schema: {detail}"
    ))
}

async fn ensure_bucket(store: &Arc<ObjectStore>, bucket: &str) -> Result<(), S3Error> {
    let b = bucket.to_string();
    let found = blocking(store, move |s| s.bucket(&b).map_err(S3Error::from)).await?;
    found.map(|_| ()).ok_or_else(|| no_such_bucket(bucket))
}

fn parse_max(req: &Req, name: &str, default: usize) -> Result<usize, S3Error> {
    match req.q(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(|n| (n as usize).min(default))
            .ok_or_else(|| {
                S3Error::invalid_argument(format!(
                    "Provided {name} not an integer or within integer range"
                ))
                .with("ArgumentName", name)
                .with("ArgumentValue", v)
            }),
    }
}

/// A continuation token: the last key (`k`) or common prefix (`p`) listed, in hex.
fn encode_token(entry: &ListEntry) -> String {
    match entry {
        ListEntry::Object(o) => format!("k{}", hex::encode(o.key.as_bytes())),
        ListEntry::Prefix(p) => format!("p{}", hex::encode(p.as_bytes())),
    }
}

fn decode_token(token: &str) -> Option<ListAfter> {
    let (kind, rest) = token.split_at_checked(1)?;
    let s = String::from_utf8(hex::decode(rest).ok()?).ok()?;
    match kind {
        "k" => Some(ListAfter::Key(s)),
        "p" => Some(ListAfter::Prefix(s)),
        _ => None,
    }
}

/// A marker or start-after: a common prefix if it has that form, else a key.
fn after_marker(marker: &str, prefix: &str, delimiter: Option<&str>) -> ListAfter {
    if marker.is_empty() {
        return ListAfter::Start;
    }
    if let Some(d) = delimiter.filter(|d| !d.is_empty())
        && let Some(rest) = marker.strip_prefix(prefix)
        && rest.find(d) == Some(rest.len().saturating_sub(d.len()))
        && rest.len() >= d.len()
    {
        return ListAfter::Prefix(marker.to_string());
    }
    ListAfter::Key(marker.to_string())
}

/// Whether a listing asks for `encoding-type=url` (the only encoding there is).
fn url_encoding(req: &Req) -> Result<bool, S3Error> {
    match req.q("encoding-type") {
        None => Ok(false),
        Some(e) if e.eq_ignore_ascii_case("url") => Ok(true),
        Some(e) => Err(
            S3Error::invalid_argument("Invalid Encoding Method specified in Request")
                .with("ArgumentName", "encoding-type")
                .with("ArgumentValue", e),
        ),
    }
}

/// The version a request names (`versionId`, or `name`): without versioning each object
/// has one, `null`, as S3 calls the version of an object stored while versioning was
/// off. Whether one was named.
fn version_named(value: Option<&str>, name: &'static str) -> Result<bool, S3Error> {
    match value {
        None => Ok(false),
        Some("null") => Ok(true),
        Some(v) => Err(invalid_version_id(v, name)),
    }
}

fn invalid_version_id(v: &str, name: &'static str) -> S3Error {
    S3Error::invalid_argument("Invalid version id specified")
        .with("ArgumentName", name)
        .with("ArgumentValue", v)
}

/// The end of a listed object's element, shared by ListObjects and ListObjectVersions:
/// its checksum's algorithm and type, the storage class, the owner if asked.
fn listed_object_tail(x: &mut XmlWriter, o: &ObjectInfo, config: &crate::Config, owner: bool) {
    if let Some(c) = &o.checksum {
        x.elem("ChecksumAlgorithm", c.algorithm.name())
            .elem("ChecksumType", c.kind.name());
    }
    x.elem("StorageClass", "STANDARD");
    if owner {
        x.open("Owner")
            .elem("ID", &config.owner_id)
            .elem("DisplayName", &config.owner_display_name)
            .close("Owner");
    }
}

/// A listing's `CommonPrefixes`, each key encoded by `enc`.
fn common_prefixes(x: &mut XmlWriter, entries: &[ListEntry], enc: impl Fn(&str) -> String) {
    for entry in entries {
        if let ListEntry::Prefix(p) = entry {
            x.open("CommonPrefixes")
                .elem("Prefix", enc(p))
                .close("CommonPrefixes");
        }
    }
}

/// ListObjectVersions. Buckets are not versioned, so each object is its only version,
/// `null` and latest, and there are no delete markers; prefix, delimiter, key-marker
/// and max-keys page as in ListObjects (tools list versions to empty a bucket).
async fn list_versions(
    store: &Arc<ObjectStore>,
    req: &Req,
    bucket: String,
) -> Result<Response, S3Error> {
    let prefix = req.q("prefix").unwrap_or("").to_string();
    let delimiter = req
        .q("delimiter")
        .filter(|d| !d.is_empty())
        .map(str::to_string);
    let max_keys = parse_max(req, "max-keys", 1000)?;
    let url = url_encoding(req)?;
    let enc = |s: &str| {
        if url {
            listing_encode(s)
        } else {
            s.to_string()
        }
    };
    let key_marker = req.q("key-marker").unwrap_or("").to_string();
    let version_marker = req.q("version-id-marker").unwrap_or("").to_string();
    if !version_marker.is_empty() {
        if key_marker.is_empty() {
            return Err(S3Error::invalid_argument(
                "A version-id marker cannot be specified without a key marker.",
            )
            .with("ArgumentName", "version-id-marker")
            .with("ArgumentValue", &version_marker));
        }
        version_named(Some(&version_marker), "version-id-marker")?;
    }
    // After key-marker's only version, `null`, is after the key itself.
    let after = after_marker(&key_marker, &prefix, delimiter.as_deref());
    let page = blocking(store, {
        let (bucket, prefix, delimiter) = (bucket.clone(), prefix.clone(), delimiter.clone());
        move |s| s.list_objects(&bucket, &prefix, delimiter.as_deref(), max_keys, after)
    })
    .await?;
    let config = store.config();
    let mut x = XmlWriter::new("ListVersionsResult");
    x.elem("Name", &bucket)
        .elem("Prefix", enc(&prefix))
        .elem("KeyMarker", enc(&key_marker))
        .elem("VersionIdMarker", &version_marker);
    if page.truncated
        && let Some(last) = page.entries.last()
    {
        match last {
            ListEntry::Object(o) => {
                x.elem("NextKeyMarker", enc(&o.key))
                    .elem("NextVersionIdMarker", "null");
            }
            ListEntry::Prefix(p) => {
                x.elem("NextKeyMarker", enc(p));
            }
        }
    }
    x.elem("MaxKeys", max_keys.to_string());
    if let Some(d) = &delimiter {
        x.elem("Delimiter", enc(d));
    }
    if url {
        x.elem("EncodingType", "url");
    }
    x.elem("IsTruncated", if page.truncated { "true" } else { "false" });
    for entry in &page.entries {
        if let ListEntry::Object(o) = entry {
            x.open("Version")
                .elem("Key", enc(&o.key))
                .elem("VersionId", "null")
                .elem("IsLatest", "true")
                .elem("LastModified", iso8601_millis(o.last_modified))
                .elem("ETag", quoted(&o.etag))
                .elem("Size", o.size.to_string());
            listed_object_tail(&mut x, o, config, true);
            x.close("Version");
        }
    }
    common_prefixes(&mut x, &page.entries, enc);
    Ok(xml_response(StatusCode::OK, x.finish("ListVersionsResult")))
}

async fn list_objects(
    store: &Arc<ObjectStore>,
    req: &Req,
    bucket: String,
    v2: bool,
) -> Result<Response, S3Error> {
    let prefix = req.q("prefix").unwrap_or("").to_string();
    let delimiter = req.q("delimiter").map(str::to_string);
    let max_keys = parse_max(req, "max-keys", 1000)?;
    let url = url_encoding(req)?;
    let enc = |s: &str| {
        if url {
            listing_encode(s)
        } else {
            s.to_string()
        }
    };
    // An empty continuation token is no token (ceph/s3-tests
    // test_bucket_listv2_continuationtoken_empty), echoed back as given.
    let token = req.q("continuation-token").map(str::to_string);
    let start_after = req.q("start-after").unwrap_or("").to_string();
    let marker = req.q("marker").unwrap_or("").to_string();
    let after = if v2 {
        match token.as_deref().filter(|t| !t.is_empty()) {
            Some(t) => decode_token(t).ok_or_else(|| {
                S3Error::invalid_argument("The continuation token provided is incorrect")
                    .with("ArgumentName", "continuation-token")
            })?,
            None => after_marker(&start_after, &prefix, delimiter.as_deref()),
        }
    } else {
        after_marker(&marker, &prefix, delimiter.as_deref())
    };
    let fetch_owner = !v2 || req.q("fetch-owner") == Some("true");
    let page = blocking(store, {
        let (bucket, prefix, delimiter) = (bucket.clone(), prefix.clone(), delimiter.clone());
        move |s| s.list_objects(&bucket, &prefix, delimiter.as_deref(), max_keys, after)
    })
    .await?;
    let config = store.config();
    let mut x = XmlWriter::new("ListBucketResult");
    // ListObjects (v1) returns its Prefix as given even with encoding-type=url: boto3,
    // which always asks for url, decodes every element of a v1 listing but that one.
    x.elem("Name", &bucket)
        .elem("Prefix", if v2 { enc(&prefix) } else { prefix.clone() });
    if v2 {
        x.elem("KeyCount", page.entries.len().to_string());
        x.opt("ContinuationToken", token.as_deref());
        if page.truncated
            && let Some(last) = page.entries.last()
        {
            x.elem("NextContinuationToken", encode_token(last));
        }
        if !start_after.is_empty() {
            x.elem("StartAfter", enc(&start_after));
        }
    } else {
        x.elem("Marker", enc(&marker));
        if page.truncated
            && let Some(last) = page.entries.last()
        {
            let next = match last {
                ListEntry::Object(o) => o.key.as_str(),
                ListEntry::Prefix(p) => p.as_str(),
            };
            x.elem("NextMarker", enc(next));
        }
    }
    x.elem("MaxKeys", max_keys.to_string());
    // An empty delimiter is no delimiter, and S3 does not echo it
    // (ceph/s3-tests test_bucket_list_delimiter_empty).
    if let Some(d) = delimiter.as_deref().filter(|d| !d.is_empty()) {
        x.elem("Delimiter", enc(d));
    }
    if url {
        x.elem("EncodingType", "url");
    }
    x.elem("IsTruncated", if page.truncated { "true" } else { "false" });
    for entry in &page.entries {
        if let ListEntry::Object(o) = entry {
            x.open("Contents")
                .elem("Key", enc(&o.key))
                .elem("LastModified", iso8601_millis(o.last_modified))
                .elem("ETag", quoted(&o.etag))
                .elem("Size", o.size.to_string());
            listed_object_tail(&mut x, o, config, fetch_owner);
            x.close("Contents");
        }
    }
    common_prefixes(&mut x, &page.entries, enc);
    Ok(xml_response(StatusCode::OK, x.finish("ListBucketResult")))
}

/// Checks a request document against its Content-MD5 and checksum header, if sent.
fn check_document_digests(req: &Req, doc: &[u8]) -> Result<(), S3Error> {
    if let Some(md5) = content_md5(req)? {
        let digest: [u8; 16] = <md5::Md5 as md5::Digest>::digest(doc).into();
        if digest != md5 {
            return Err(bad_content_md5());
        }
    }
    let want = ChecksumRequest::from_headers(req)?;
    if let (Some(alg), Some(expected)) = (want.algorithm, &want.header_value)
        && alg.digest(doc) != *expected
    {
        return Err(checksum_mismatch(alg));
    }
    Ok(())
}

async fn delete_objects(
    store: &Arc<ObjectStore>,
    req: &Req,
    body: Body,
    bucket: String,
) -> Result<Response, S3Error> {
    let doc = read_small(body, &req.auth.payload, MAX_XML).await?;
    check_document_digests(req, &doc)?;
    let root = xml::parse(&doc).map_err(|e| malformed_xml(&e))?;
    if root.name != "Delete" {
        return Err(malformed_xml("the root element is not Delete"));
    }
    let quiet = root
        .child_text("Quiet")
        .is_some_and(|q| q.trim().eq_ignore_ascii_case("true"));
    // (key, version id named): the only version of an object is `null`.
    let objects: Vec<(String, Option<String>)> = root
        .children_named("Object")
        .map(|o| {
            (
                o.child_text("Key").unwrap_or("").to_string(),
                o.child_text("VersionId").map(|v| v.trim().to_string()),
            )
        })
        .collect();
    if objects.is_empty() || objects.len() > 1000 {
        return Err(malformed_xml("Delete names 1 to 1000 objects"));
    }
    let mut valid: Vec<(String, Option<String>)> = Vec::new();
    let mut invalid: Vec<(String, Option<String>, &str)> = Vec::new();
    for (key, version) in objects {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            invalid.push((key, version, "Invalid key"));
        } else if version.as_deref().is_some_and(|v| v != "null") {
            invalid.push((key, version, "Invalid version id specified"));
        } else {
            valid.push((key, version));
        }
    }
    let valid_keys: Vec<String> = valid.iter().map(|(k, _)| k.clone()).collect();
    let ctx = req.ctx.clone();
    let outcomes = change(store, {
        let (bucket, keys) = (bucket.clone(), valid_keys.clone());
        move |s| s.delete_objects(&bucket, &keys, &ctx)
    })
    .await?;
    let mut x = XmlWriter::new("DeleteResult");
    if !quiet {
        // Deleting an absent key succeeds too, as in S3.
        for ((key, version), _) in valid.iter().zip(&outcomes) {
            x.open("Deleted")
                .elem("Key", key)
                .opt("VersionId", version.as_deref())
                .close("Deleted");
        }
    }
    for (key, version, message) in invalid {
        x.open("Error")
            .elem("Key", key)
            .opt("VersionId", version.as_deref())
            .elem("Code", "InvalidArgument")
            .elem("Message", message)
            .close("Error");
    }
    Ok(xml_response(StatusCode::OK, x.finish("DeleteResult")))
}

async fn list_uploads(
    store: &Arc<ObjectStore>,
    req: &Req,
    bucket: String,
) -> Result<Response, S3Error> {
    let prefix = req.q("prefix").unwrap_or("").to_string();
    let key_marker = req.q("key-marker").unwrap_or("").to_string();
    let id_marker = req.q("upload-id-marker").unwrap_or("").to_string();
    let max = parse_max(req, "max-uploads", 1000)?;
    let url = req
        .q("encoding-type")
        .is_some_and(|e| e.eq_ignore_ascii_case("url"));
    let enc = |s: &str| {
        if url {
            listing_encode(s)
        } else {
            s.to_string()
        }
    };
    let (uploads, truncated) = blocking(store, {
        let (bucket, prefix, km, im) = (
            bucket.clone(),
            prefix.clone(),
            key_marker.clone(),
            id_marker.clone(),
        );
        move |s| s.list_uploads(&bucket, &prefix, &km, &im, max)
    })
    .await?;
    let config = store.config();
    let mut x = XmlWriter::new("ListMultipartUploadsResult");
    x.elem("Bucket", &bucket)
        .elem("KeyMarker", enc(&key_marker))
        .elem("UploadIdMarker", &id_marker);
    if truncated && let Some(last) = uploads.last() {
        x.elem("NextKeyMarker", enc(&last.key))
            .elem("NextUploadIdMarker", &last.upload_id);
    }
    x.elem("Prefix", enc(&prefix))
        .elem("MaxUploads", max.to_string());
    if url {
        x.elem("EncodingType", "url");
    }
    x.elem("IsTruncated", if truncated { "true" } else { "false" });
    for u in &uploads {
        x.open("Upload")
            .elem("Key", enc(&u.key))
            .elem("UploadId", &u.upload_id);
        for who in ["Initiator", "Owner"] {
            x.open(who)
                .elem("ID", &config.owner_id)
                .elem("DisplayName", &config.owner_display_name)
                .close(who);
        }
        x.elem("StorageClass", "STANDARD")
            .elem("Initiated", iso8601_millis(u.initiated));
        if let Some((alg, kind)) = u.checksum {
            x.elem("ChecksumAlgorithm", alg.name())
                .elem("ChecksumType", kind.name());
        }
        x.close("Upload");
    }
    Ok(xml_response(
        StatusCode::OK,
        x.finish("ListMultipartUploadsResult"),
    ))
}

// ------------------------------------------------------------------------------------
// Browser form uploads

/// PostObject: a browser form (multipart/form-data) whose policy, signed with one of the
/// store's keys, says what may be uploaded. The fields before the file are read (at most
/// 20 KB), the signature and every policy condition checked, then the file is streamed
/// to disk within the policy's content-length-range and the store's object size limit.
/// Emits ObjectCreated:Post and answers once the sink has acknowledged it.
async fn post_object(
    app: &App,
    body: Body,
    bucket: String,
    host: &str,
    boundary: &str,
    mut ctx: ChangeCtx,
) -> Result<Response, S3Error> {
    let store = &app.store;
    let config = store.config();
    let mut form = post::read_form(body, boundary).await?;
    let policy_b64 = form.get("policy").map(str::to_string).ok_or_else(|| {
        S3Error::access_denied(
            "Anonymous access is not allowed: a form upload needs a policy signed with an access key",
        )
    })?;
    let now = OffsetDateTime::now_utc();
    ctx.principal = crate::auth::verify_post_policy(
        |n| form.get(n),
        &policy_b64,
        &AuthSettings {
            credentials: app.credentials.as_ref(),
            max_skew: config.max_clock_skew,
            now,
            virtual_host_suffixes: &config.virtual_host_suffixes,
            region: &config.region,
        },
    )?;
    let policy = post::Policy::decode(&policy_b64)?;
    let range = policy.check(&form, &bucket, now)?;
    let key = form
        .get("key")
        .ok_or_else(|| {
            S3Error::invalid_argument(
                "Bucket POST must contain a field named 'key'.  If it is specified, please check the order of the fields.",
            )
            .with("ArgumentName", "key")
            .with("ArgumentValue", "")
        })?
        .replace("${filename}", &form.filename);
    if key.is_empty() {
        return Err(
            S3Error::invalid_argument("The key must not be empty.").with("ArgumentName", "key")
        );
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(S3Error::key_too_long("Your key is too long")
            .with("MaxSizeAllowed", MAX_KEY_BYTES.to_string())
            .with("Size", key.len().to_string()));
    }
    let mut headers = BTreeMap::new();
    for name in STORED_HEADERS {
        if let Some(v) = form.get(name).filter(|v| !v.is_empty()) {
            headers.insert(name.to_string(), v.to_string());
        }
    }
    let mut metadata = BTreeMap::new();
    for f in &form.fields {
        let name = f.name.to_ascii_lowercase();
        if let Some(n) = name.strip_prefix("x-amz-meta-") {
            metadata.insert(n.to_string(), f.value.clone());
        }
    }
    if metadata
        .iter()
        .map(|(n, v)| n.len() + v.len())
        .sum::<usize>()
        > MAX_METADATA
    {
        return Err(S3Error::new(
            StatusCode::BAD_REQUEST,
            "MetadataTooLarge",
            "Your metadata headers exceed the maximum allowed metadata size",
        )
        .with("MaxSizeAllowed", MAX_METADATA.to_string()));
    }
    let redirect = form
        .get("success_action_redirect")
        .or_else(|| form.get("redirect"))
        .filter(|r| r.starts_with("http://") || r.starts_with("https://"))
        .map(str::to_string);
    let status = form.get("success_action_status").map(str::to_string);
    ensure_bucket(store, &bucket).await?;
    let max = range.map_or(config.max_object_size, |(_, max)| {
        max.min(config.max_object_size)
    });
    let staged = store
        .ingest(
            &mut form.file,
            crate::store::Hashing {
                sha256: false,
                checksum: None,
            },
            max,
        )
        .await?;
    if let Some((min, _)) = range
        && staged.digests.size < min
    {
        return Err(S3Error::entity_too_small(
            "Your proposed upload is smaller than the minimum allowed size",
        )
        .with("ProposedSize", staged.digests.size.to_string())
        .with("MinSizeAllowed", min.to_string()));
    }
    let info = change(store, {
        let (bucket, key) = (bucket.clone(), key.clone());
        move |s| {
            let (blob, d) = s.promote(staged)?;
            let new = NewObject {
                headers,
                metadata,
                kind: CreatedKind::Post,
                ..one_blob(bucket, key, &blob, d)
            };
            s.commit_object(new, vec![blob], &ctx)
        }
    })
    .await?;
    let location = format!(
        "http://{host}/{bucket}/{}",
        crate::names::uri_encode(key.as_bytes(), false)
    );
    let etag = quoted(&info.etag);
    let mut resp = if let Some(r) = redirect {
        let sep = if r.contains('?') { '&' } else { '?' };
        let target = format!(
            "{r}{sep}bucket={}&key={}&etag={}",
            crate::names::uri_encode(bucket.as_bytes(), true),
            crate::names::uri_encode(key.as_bytes(), true),
            crate::names::uri_encode(etag.as_bytes(), true)
        );
        let mut resp = empty(StatusCode::SEE_OTHER);
        set(&mut resp, "location", &target);
        resp
    } else {
        match status.as_deref() {
            Some("200") => empty(StatusCode::OK),
            Some("201") => {
                let mut x = XmlWriter::new("PostResponse");
                x.elem("Location", &location)
                    .elem("Bucket", &bucket)
                    .elem("Key", &key)
                    .elem("ETag", &etag);
                xml_response(StatusCode::CREATED, x.finish("PostResponse"))
            }
            // S3 answers 204 for any other value.
            _ => empty(StatusCode::NO_CONTENT),
        }
    };
    set(&mut resp, "etag", &etag);
    if resp.status() != StatusCode::SEE_OTHER {
        set(&mut resp, "location", &location);
    }
    Ok(resp)
}

// ------------------------------------------------------------------------------------
// Objects

async fn object_op(
    store: &Arc<ObjectStore>,
    req: &Req,
    body: Body,
    bucket: String,
    key: String,
) -> Result<Response, S3Error> {
    match req.method {
        Method::PUT if req.has("uploadId") || req.has("partNumber") => {
            upload_part(store, req, body, bucket, key).await
        }
        Method::PUT => {
            unsupported(req)?;
            if req.headers.contains_key("x-amz-copy-source") {
                copy_object(store, req, bucket, key).await
            } else {
                put_object(store, req, body, bucket, key).await
            }
        }
        Method::GET if req.has("uploadId") => list_parts(store, req, bucket, key).await,
        Method::GET | Method::HEAD => {
            unsupported(req)?;
            version_named(req.q("versionId"), "versionId")?;
            get_object(store, req, bucket, key).await
        }
        Method::DELETE if req.has("uploadId") => {
            let id = req.q("uploadId").unwrap_or("").to_string();
            blocking(store, move |s| s.abort_upload(&bucket, &key, &id)).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        Method::DELETE => {
            unsupported(req)?;
            // `versionId=null` deletes the object, its only version (as ListObjectVersions
            // lists it), and says so.
            let versioned = version_named(req.q("versionId"), "versionId")?;
            let ctx = req.ctx.clone();
            change(store, move |s| s.delete_objects(&bucket, &[key], &ctx)).await?;
            let mut resp = empty(StatusCode::NO_CONTENT);
            if versioned {
                set(&mut resp, "x-amz-version-id", "null");
            }
            Ok(resp)
        }
        Method::POST if req.has("uploads") => create_upload(store, req, bucket, key).await,
        Method::POST if req.has("uploadId") => complete_upload(store, req, body, bucket, key).await,
        Method::POST => Err(S3Error::not_implemented(
            "This POST request is not implemented.",
        )),
        _ => Err(S3Error::method_not_allowed(
            "The specified method is not allowed against this resource.",
        )),
    }
}

/// The headers S3 stores with an object and returns on GET.
const STORED_HEADERS: [&str; 6] = [
    "content-type",
    "content-encoding",
    "content-disposition",
    "content-language",
    "cache-control",
    "expires",
];

fn stored_headers(req: &Req) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for name in STORED_HEADERS {
        if let Some(v) = req.header(name) {
            let v = if name == "content-encoding" {
                // aws-chunked describes the transfer, not the object.
                v.split(',')
                    .map(str::trim)
                    .filter(|e| !e.eq_ignore_ascii_case("aws-chunked") && !e.is_empty())
                    .collect::<Vec<_>>()
                    .join(",")
            } else {
                v.to_string()
            };
            if !v.is_empty() {
                out.insert(name.to_string(), v);
            }
        }
    }
    out
}

fn user_metadata(req: &Req) -> Result<BTreeMap<String, String>, S3Error> {
    let mut out = BTreeMap::new();
    let mut total = 0;
    for (name, value) in &req.headers {
        if let Some(n) = name.as_str().strip_prefix("x-amz-meta-") {
            let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
            total += n.len() + v.len();
            out.entry(n.to_string())
                .and_modify(|e: &mut String| {
                    e.push(',');
                    e.push_str(&v);
                })
                .or_insert(v);
        }
    }
    if total > MAX_METADATA {
        return Err(S3Error::new(
            StatusCode::BAD_REQUEST,
            "MetadataTooLarge",
            "Your metadata headers exceed the maximum allowed metadata size",
        )
        .with("MaxSizeAllowed", MAX_METADATA.to_string()));
    }
    Ok(out)
}

fn content_md5(req: &Req) -> Result<Option<[u8; 16]>, S3Error> {
    let Some(v) = req.header("content-md5") else {
        return Ok(None);
    };
    base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .ok()
        .and_then(|raw| <[u8; 16]>::try_from(raw).ok())
        .map(Some)
        .ok_or_else(|| S3Error::invalid_digest("The Content-MD5 you specified was invalid."))
}

fn bad_content_md5() -> S3Error {
    S3Error::bad_digest("The Content-MD5 you specified did not match what we received.")
}

fn checksum_mismatch(alg: ChecksumAlgorithm) -> S3Error {
    S3Error::bad_digest(format!(
        "The {} you specified did not match the calculated checksum.",
        alg.name()
    ))
}

/// The checksum a write asks for: its algorithm, and the expected value from a header
/// now or from a trailer later.
#[derive(Debug, Default)]
struct ChecksumRequest {
    algorithm: Option<ChecksumAlgorithm>,
    header_value: Option<Vec<u8>>,
    trailer: Option<ChecksumAlgorithm>,
}

impl ChecksumRequest {
    fn from_headers(req: &Req) -> Result<Self, S3Error> {
        let mut out = Self::default();
        for (name, value) in &req.headers {
            let n = name.as_str();
            let Some(suffix) = n.strip_prefix("x-amz-checksum-") else {
                continue;
            };
            if matches!(suffix, "mode" | "type" | "algorithm") {
                continue;
            }
            let alg = ChecksumAlgorithm::from_header(n).ok_or_else(|| {
                S3Error::invalid_request(format!(
                    "The checksum algorithm {suffix} is not supported."
                ))
            })?;
            if out.algorithm.is_some() {
                return Err(S3Error::invalid_request(
                    "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.",
                ));
            }
            let raw = value
                .to_str()
                .ok()
                .and_then(|v| alg.decode(v))
                .ok_or_else(|| {
                    S3Error::invalid_request(format!("Value for {n} header is invalid."))
                })?;
            out.algorithm = Some(alg);
            out.header_value = Some(raw);
        }
        if let Some(t) = req.header("x-amz-trailer") {
            let alg = ChecksumAlgorithm::from_header(t).ok_or_else(|| {
                S3Error::invalid_request(format!("The trailer {t} is not supported."))
            })?;
            if out.algorithm.is_some_and(|a| a != alg) {
                return Err(S3Error::invalid_request(
                    "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.",
                ));
            }
            if !matches!(req.auth.payload, PayloadAuth::Chunked { trailer: true, .. }) {
                return Err(S3Error::invalid_request(
                    "x-amz-trailer needs a STREAMING-*-TRAILER payload",
                ));
            }
            out.algorithm = Some(alg);
            out.trailer = Some(alg);
        }
        for h in ["x-amz-sdk-checksum-algorithm", "x-amz-checksum-algorithm"] {
            if let Some(v) = req.header(h) {
                let alg = ChecksumAlgorithm::from_name(v).ok_or_else(|| {
                    S3Error::invalid_request(format!(
                        "The checksum algorithm {v} is not supported."
                    ))
                })?;
                if out.algorithm.is_some_and(|a| a != alg) {
                    return Err(S3Error::invalid_request(format!(
                        "{h} does not match the checksum sent"
                    )));
                }
                out.algorithm = Some(alg);
            }
        }
        Ok(out)
    }
}

/// The payload length a write declares, checked against `max`.
fn declared_length(req: &Req, chunked: bool, max: u64) -> Result<Option<u64>, S3Error> {
    let parse = |name: &str| -> Result<Option<u64>, S3Error> {
        req.header(name)
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| S3Error::invalid_argument(format!("{name} is not a number")))
            })
            .transpose()
    };
    let len = if chunked {
        parse("x-amz-decoded-content-length")?
    } else {
        let l = parse("content-length")?;
        // A chunked transfer must say how long the object is (S3 answers 411); a
        // request with neither header (HTTP/1.1: no body; HTTP/2: until the end) is read
        // to its end.
        if l.is_none() && req.headers.contains_key(header::TRANSFER_ENCODING) {
            return Err(S3Error::missing_content_length(
                "You must provide the Content-Length HTTP header.",
            ));
        }
        l
    };
    if let Some(l) = len
        && l > max
    {
        return Err(S3Error::entity_too_large(
            "Your proposed upload exceeds the maximum allowed size",
        )
        .with("ProposedSize", l.to_string())
        .with("MaxSizeAllowed", max.to_string()));
    }
    Ok(len)
}

/// Reads a write's body into a staged file and checks length, Content-MD5, the signed
/// SHA-256 and the requested checksum.
async fn receive(
    store: &Arc<ObjectStore>,
    req: &Req,
    body: Body,
    max: u64,
    want: &ChecksumRequest,
) -> Result<crate::store::Staged, S3Error> {
    let mut payload = Payload::new(body, &req.auth.payload);
    let expected_len = declared_length(req, payload.is_chunked(), max)?;
    let md5 = content_md5(req)?;
    let sha256 = match req.auth.payload {
        PayloadAuth::Sha256(h) => Some(h),
        _ => None,
    };
    let hashing = Hashing {
        sha256: sha256.is_some(),
        checksum: want.algorithm,
    };
    let staged = store.ingest(&mut payload, hashing, max).await?;
    let d = &staged.digests;
    if let Some(l) = expected_len
        && d.size != l
    {
        return Err(S3Error::incomplete_body(
            "You did not provide the number of bytes specified by the Content-Length HTTP header.",
        ));
    }
    if let Some(m) = md5
        && m != d.md5
    {
        return Err(bad_content_md5());
    }
    if let Some(h) = sha256
        && d.sha256 != Some(h)
    {
        return Err(S3Error::content_sha256_mismatch(
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        ));
    }
    let expected = match (&want.header_value, want.trailer) {
        (Some(v), _) => Some(v.clone()),
        (None, Some(alg)) => {
            let v = payload
                .trailers()
                .iter()
                .find(|(n, _)| n == alg.header())
                .map(|(_, v)| v.clone())
                .ok_or_else(|| {
                    S3Error::malformed_trailer(format!("The {} trailer is missing.", alg.header()))
                })?;
            Some(alg.decode(&v).ok_or_else(|| {
                S3Error::invalid_request(format!("Value for {} trailer is invalid.", alg.header()))
            })?)
        }
        (None, None) => None,
    };
    if let (Some(expected), Some((alg, got))) = (expected, &d.checksum)
        && expected != *got
    {
        return Err(checksum_mismatch(*alg));
    }
    Ok(staged)
}

fn write_condition(req: &Req) -> WriteCondition {
    if req.header("if-none-match").is_some_and(|v| v.trim() == "*") {
        WriteCondition::IfAbsent
    } else if let Some(v) = req.header("if-match") {
        WriteCondition::IfMatch(v.to_string())
    } else {
        WriteCondition::None
    }
}

fn set_checksum_headers(resp: &mut Response, checksum: Option<&ObjectChecksum>) {
    if let Some(c) = checksum {
        set(resp, c.algorithm.header(), &c.value);
        set(resp, "x-amz-checksum-type", c.kind.name());
    }
}

async fn put_object(
    store: &Arc<ObjectStore>,
    req: &Req,
    body: Body,
    bucket: String,
    key: String,
) -> Result<Response, S3Error> {
    let want = ChecksumRequest::from_headers(req)?;
    let headers = stored_headers(req);
    let metadata = user_metadata(req)?;
    let condition = write_condition(req);
    let staged = receive(store, req, body, store.config().max_object_size, &want).await?;
    let ctx = req.ctx.clone();
    let info = change(store, move |s| {
        let (blob, d) = s.promote(staged)?;
        let new = NewObject {
            headers,
            metadata,
            condition,
            kind: CreatedKind::Put,
            ..one_blob(bucket, key, &blob, d)
        };
        s.commit_object(new, vec![blob], &ctx)
    })
    .await?;
    let mut resp = empty(StatusCode::OK);
    set(&mut resp, "etag", &quoted(&info.etag));
    set_checksum_headers(&mut resp, info.checksum.as_ref());
    Ok(resp)
}

/// An object made of one new blob, as PutObject and CopyObject store it; the caller sets
/// its headers, metadata, write condition and kind.
fn one_blob(bucket: String, key: String, blob: &BlobFile, d: Digests) -> NewObject {
    NewObject {
        bucket,
        key,
        etag: hex::encode(d.md5),
        size: d.size,
        headers: BTreeMap::new(),
        metadata: BTreeMap::new(),
        checksum: d.checksum.map(|(algorithm, raw)| ObjectChecksum {
            algorithm,
            value: checksum::to_base64(&raw),
            kind: ChecksumType::FullObject,
        }),
        segments: vec![Segment {
            blob: blob.id.clone(),
            size: d.size,
        }],
        parts_count: None,
        condition: WriteCondition::None,
        kind: CreatedKind::Put,
    }
}

/// The outcome of evaluating GET/HEAD preconditions.
enum Precondition {
    Proceed,
    NotModified,
}

fn seconds(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

fn check_preconditions(
    headers: &HeaderMap,
    prefix: &str,
    info: &ObjectInfo,
) -> Result<Precondition, S3Error> {
    let get = |n: &str| {
        headers
            .get(format!("{prefix}{n}"))
            .and_then(|v| v.to_str().ok())
    };
    let failed = |cond: &str| {
        S3Error::precondition_failed(
            "At least one of the pre-conditions you specified did not hold",
        )
        .with("Condition", cond)
    };
    let modified = seconds(info.last_modified);
    if let Some(m) = get("if-match") {
        if !etag_matches(m, &info.etag) {
            return Err(failed("If-Match"));
        }
    } else if let Some(t) = get("if-unmodified-since").and_then(parse_http_date)
        && modified > seconds(t)
    {
        return Err(failed("If-Unmodified-Since"));
    }
    if let Some(m) = get("if-none-match") {
        if etag_matches(m, &info.etag) {
            return Ok(Precondition::NotModified);
        }
    } else if let Some(t) = get("if-modified-since").and_then(parse_http_date)
        && modified <= seconds(t)
    {
        return Ok(Precondition::NotModified);
    }
    Ok(Precondition::Proceed)
}

enum RangeSpec {
    Whole,
    Part(u64, u64),
    Unsatisfiable,
}

/// Parses a `Range` header against an object of `size` bytes. Syntactically invalid or
/// multi-range headers are ignored, as HTTP allows (S3 serves no multi-ranges either).
fn parse_range(value: &str, size: u64) -> RangeSpec {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeSpec::Whole;
    };
    if spec.contains(',') {
        return RangeSpec::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let Ok(n) = b.parse::<u64>() else {
            return RangeSpec::Whole;
        };
        if n == 0 || size == 0 {
            return RangeSpec::Unsatisfiable;
        }
        return RangeSpec::Part(size - n.min(size), size - 1);
    }
    let Ok(start) = a.parse::<u64>() else {
        return RangeSpec::Whole;
    };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e,
            _ => return RangeSpec::Whole,
        }
    };
    if start >= size {
        return RangeSpec::Unsatisfiable;
    }
    RangeSpec::Part(start, end.min(size - 1))
}

/// Streams `len` bytes from `start` of a sequence of blob files.
fn file_body(files: Vec<(PathBuf, u64)>, start: u64, len: u64, pin: PinGuard) -> Body {
    struct St {
        files: Vec<(PathBuf, u64)>,
        index: usize,
        offset: u64,
        remaining: u64,
        file: Option<tokio::fs::File>,
        _pin: PinGuard,
    }
    let mut index = 0;
    let mut offset = start;
    while index < files.len() && offset >= files[index].1 {
        offset -= files[index].1;
        index += 1;
    }
    let st = St {
        files,
        index,
        offset,
        remaining: len,
        file: None,
        _pin: pin,
    };
    let stream = futures::stream::unfold(st, |mut st| async move {
        loop {
            if st.remaining == 0 || st.index >= st.files.len() {
                return None;
            }
            if st.file.is_none() {
                let opened = async {
                    let mut f = tokio::fs::File::open(&st.files[st.index].0).await?;
                    if st.offset > 0 {
                        f.seek(std::io::SeekFrom::Start(st.offset)).await?;
                    }
                    Ok::<_, std::io::Error>(f)
                }
                .await;
                match opened {
                    Ok(f) => st.file = Some(f),
                    Err(e) => {
                        st.remaining = 0;
                        return Some((Err(e), st));
                    }
                }
            }
            let want = st.remaining.min(256 * 1024) as usize;
            let mut buf = BytesMut::with_capacity(want);
            let read = match st.file.as_mut() {
                Some(f) => f.take(want as u64).read_buf(&mut buf).await,
                None => Ok(0),
            };
            match read {
                Ok(0) => {
                    st.file = None;
                    st.index += 1;
                    st.offset = 0;
                }
                Ok(n) => {
                    st.remaining -= n as u64;
                    return Some((Ok::<Bytes, std::io::Error>(buf.freeze()), st));
                }
                Err(e) => {
                    st.remaining = 0;
                    return Some((Err(e), st));
                }
            }
        }
    });
    Body::from_stream(stream)
}

fn object_headers(resp: &mut Response, info: &ObjectInfo) {
    set(resp, "etag", &quoted(&info.etag));
    set(resp, "last-modified", &http_date(info.last_modified));
    set(resp, "content-type", info.content_type());
    for (name, value) in &info.headers {
        if name != "content-type" {
            set(resp, name, value);
        }
    }
    for (name, value) in &info.metadata {
        set(resp, &format!("x-amz-meta-{name}"), value);
    }
    set(resp, "accept-ranges", "bytes");
    if let Some(n) = info.parts_count {
        set(resp, "x-amz-mp-parts-count", &n.to_string());
    }
}

async fn get_object(
    store: &Arc<ObjectStore>,
    req: &Req,
    bucket: String,
    key: String,
) -> Result<Response, S3Error> {
    let (info, files, pin) = blocking(store, move |s| s.get_for_read(&bucket, &key)).await?;
    match check_preconditions(&req.headers, "", &info)? {
        Precondition::Proceed => {}
        Precondition::NotModified => {
            let mut resp = empty(StatusCode::NOT_MODIFIED);
            set(&mut resp, "etag", &quoted(&info.etag));
            set(&mut resp, "last-modified", &http_date(info.last_modified));
            return Ok(resp);
        }
    }
    let size = info.size;
    let mut range = match req.header("range") {
        Some(r) => parse_range(r, size),
        None => RangeSpec::Whole,
    };
    if let Some(p) = req.q("partNumber") {
        let n: usize = p
            .parse()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| {
                S3Error::invalid_argument(
                    "Part number must be an integer between 1 and 10000, inclusive",
                )
                .with("ArgumentName", "partNumber")
                .with("ArgumentValue", p)
            })?;
        if req.headers.contains_key(header::RANGE) {
            return Err(S3Error::invalid_request(
                "Cannot specify both Range header and partNumber query parameter",
            ));
        }
        let sizes: Vec<u64> = if info.parts_count.is_some() {
            files.iter().map(|f| f.1).collect()
        } else {
            vec![size]
        };
        if n > sizes.len() {
            // 416, as S3 answers (and MinIO, Swift's s3api and others that copy it); RGW
            // answers 400 InvalidPart (ceph/s3-tests test_multipart_get_part).
            return Err(S3Error::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "InvalidPartNumber",
                "The requested partnumber is not satisfiable",
            )
            .with("PartNumberRequested", n.to_string())
            .with("ActualPartCount", sizes.len().to_string()));
        }
        let start: u64 = sizes[..n - 1].iter().sum();
        range = if sizes[n - 1] == 0 {
            RangeSpec::Whole
        } else {
            RangeSpec::Part(start, start + sizes[n - 1] - 1)
        };
    }
    let (status, start, len) = match range {
        RangeSpec::Whole => (StatusCode::OK, 0, size),
        RangeSpec::Part(a, b) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        RangeSpec::Unsatisfiable => {
            return Err(
                S3Error::invalid_range("The requested range is not satisfiable")
                    .with("RangeRequested", req.header("range").unwrap_or(""))
                    .with("ActualObjectSize", size.to_string())
                    .with_header("content-range", format!("bytes */{size}")),
            );
        }
    };
    let body = if req.method == Method::HEAD {
        drop(pin);
        Body::empty()
    } else {
        file_body(files, start, len, pin)
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    object_headers(&mut resp, &info);
    set(&mut resp, "content-length", &len.to_string());
    if status == StatusCode::PARTIAL_CONTENT {
        set(
            &mut resp,
            "content-range",
            &format!("bytes {start}-{}/{size}", start + len - 1),
        );
    }
    if status == StatusCode::OK
        && req
            .header("x-amz-checksum-mode")
            .is_some_and(|m| m.eq_ignore_ascii_case("enabled"))
    {
        set_checksum_headers(&mut resp, info.checksum.as_ref());
    }
    for (q, h) in [
        ("response-content-type", "content-type"),
        ("response-content-language", "content-language"),
        ("response-expires", "expires"),
        ("response-cache-control", "cache-control"),
        ("response-content-disposition", "content-disposition"),
        ("response-content-encoding", "content-encoding"),
    ] {
        if let Some(v) = req.q(q) {
            set(&mut resp, h, v);
        }
    }
    Ok(resp)
}

/// `x-amz-copy-source`: `[/]bucket/key[?versionId=...]`, URL-encoded.
fn copy_source(req: &Req) -> Result<(String, String), S3Error> {
    let raw = req.header("x-amz-copy-source").unwrap_or("");
    let (path, query) = raw.split_once('?').unwrap_or((raw, ""));
    if let Some(v) = query.strip_prefix("versionId=")
        && v != "null"
    {
        return Err(S3Error::invalid_argument(
            "Versioning is not supported; versionId must be null",
        )
        .with("ArgumentName", "x-amz-copy-source"));
    }
    let decoded = decode_utf8(path, "copy source")?;
    let decoded = decoded.strip_prefix('/').unwrap_or(&decoded);
    match decoded.split_once('/') {
        Some((b, k)) if !b.is_empty() && !k.is_empty() => Ok((b.to_string(), k.to_string())),
        _ => Err(S3Error::invalid_argument(
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
        )
        .with("ArgumentName", "x-amz-copy-source")
        .with("ArgumentValue", raw)),
    }
}

async fn copy_object(
    store: &Arc<ObjectStore>,
    req: &Req,
    bucket: String,
    key: String,
) -> Result<Response, S3Error> {
    let (src_bucket, src_key) = copy_source(req)?;
    let replace = match req.header("x-amz-metadata-directive") {
        None => false,
        Some(d) if d.eq_ignore_ascii_case("COPY") => false,
        Some(d) if d.eq_ignore_ascii_case("REPLACE") => true,
        Some(d) => {
            return Err(S3Error::invalid_argument("Unknown metadata directive.")
                .with("ArgumentName", "x-amz-metadata-directive")
                .with("ArgumentValue", d));
        }
    };
    if src_bucket == bucket && src_key == key && !replace {
        return Err(S3Error::invalid_request(
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
        ));
    }
    let want = ChecksumRequest::from_headers(req)?;
    let (headers, metadata) = if replace {
        (stored_headers(req), user_metadata(req)?)
    } else {
        (BTreeMap::new(), BTreeMap::new())
    };
    let condition = write_condition(req);
    let req_headers = req.headers.clone();
    let ctx = req.ctx.clone();
    let max = store.config().max_object_size;
    let info = change(store, move |s| {
        let (src, files, pin) = s.get_for_read(&src_bucket, &src_key)?;
        if let Precondition::NotModified =
            check_preconditions(&req_headers, "x-amz-copy-source-", &src)?
        {
            return Err(S3Error::precondition_failed(
                "At least one of the pre-conditions you specified did not hold",
            ));
        }
        if src.size > max {
            return Err(S3Error::invalid_request(format!(
                "The specified copy source is larger than the maximum allowable size for a copy source: {max}"
            )));
        }
        let alg = want
            .algorithm
            .or_else(|| src.checksum.as_ref().map(|c| c.algorithm));
        let (blob, d) = s.copy_data(&files, None, alg)?;
        drop(pin);
        let (headers, metadata) = if replace {
            (headers, metadata)
        } else {
            (src.headers.clone(), src.metadata.clone())
        };
        let new = NewObject {
            headers,
            metadata,
            condition,
            kind: CreatedKind::Copy,
            ..one_blob(bucket, key, &blob, d)
        };
        s.commit_object(new, vec![blob], &ctx)
    })
    .await?;
    let mut x = XmlWriter::new("CopyObjectResult");
    x.elem("LastModified", iso8601_millis(info.last_modified))
        .elem("ETag", quoted(&info.etag));
    if let Some(c) = &info.checksum {
        x.elem(c.algorithm.xml_element(), &c.value)
            .elem("ChecksumType", c.kind.name());
    }
    Ok(xml_response(StatusCode::OK, x.finish("CopyObjectResult")))
}

fn part_number(req: &Req) -> Result<u32, S3Error> {
    req.q("partNumber")
        .and_then(|p| p.parse::<u32>().ok())
        .filter(|n| (1..=10_000).contains(n))
        .ok_or_else(|| {
            S3Error::invalid_argument(
                "Part number must be an integer between 1 and 10000, inclusive",
            )
            .with("ArgumentName", "partNumber")
        })
}

async fn upload_part(
    store: &Arc<ObjectStore>,
    req: &Req,
    body: Body,
    bucket: String,
    key: String,
) -> Result<Response, S3Error> {
    let number = part_number(req)?;
    let upload_id = req
        .q("uploadId")
        .ok_or_else(|| S3Error::invalid_argument("uploadId is required"))?
        .to_string();
    let upload = blocking(store, {
        let (b, k, id) = (bucket.clone(), key.clone(), upload_id.clone());
        move |s| s.upload(&b, &k, &id)
    })
    .await?;
    let mut want = ChecksumRequest::from_headers(req)?;
    if let Some((alg, _)) = upload.checksum {
        if want.algorithm.is_some_and(|a| a != alg) {
            return Err(S3Error::invalid_request(format!(
                "Checksum Type mismatch occurred, expected checksum Type: {}, actual checksum Type: {}",
                alg.name().to_lowercase(),
                want.algorithm
                    .map(|a| a.name().to_lowercase())
                    .unwrap_or_default()
            )));
        }
        want.algorithm = Some(alg);
    }
    let max = store.config().max_part_size;
    if req.headers.contains_key("x-amz-copy-source") {
        return upload_part_copy(store, req, upload, number, want.algorithm, max).await;
    }
    let staged = receive(store, req, body, max, &want).await?;
    let (etag, d) = blocking(store, move |s| {
        let (blob, d) = s.promote(staged)?;
        let etag = s.commit_part(&upload, number, &d, blob)?;
        Ok((etag, d))
    })
    .await?;
    let mut resp = empty(StatusCode::OK);
    set(&mut resp, "etag", &quoted(&etag));
    if let Some((alg, raw)) = &d.checksum {
        set(&mut resp, alg.header(), &checksum::to_base64(raw));
    }
    Ok(resp)
}

async fn upload_part_copy(
    store: &Arc<ObjectStore>,
    req: &Req,
    upload: Upload,
    number: u32,
    alg: Option<ChecksumAlgorithm>,
    max: u64,
) -> Result<Response, S3Error> {
    let (src_bucket, src_key) = copy_source(req)?;
    let range_header = req.header("x-amz-copy-source-range").map(str::to_string);
    let req_headers = req.headers.clone();
    let (etag, d, modified): (String, Digests, OffsetDateTime) = blocking(store, move |s| {
        let (src, files, pin) = s.get_for_read(&src_bucket, &src_key)?;
        if let Precondition::NotModified =
            check_preconditions(&req_headers, "x-amz-copy-source-", &src)?
        {
            return Err(S3Error::precondition_failed(
                "At least one of the pre-conditions you specified did not hold",
            ));
        }
        let range = match &range_header {
            None => None,
            Some(r) => {
                let spec = r.trim().strip_prefix("bytes=").and_then(|s| {
                    let (a, b) = s.split_once('-')?;
                    Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?))
                });
                match spec {
                    Some((a, b)) if a <= b && b < src.size => Some((a, b)),
                    _ => {
                        return Err(S3Error::invalid_range(
                            "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy",
                        ));
                    }
                }
            }
        };
        let len = range.map_or(src.size, |(a, b)| b - a + 1);
        if len > max {
            return Err(S3Error::entity_too_large("Your proposed upload exceeds the maximum allowed size"));
        }
        let (blob, d) = s.copy_data(&files, range, alg)?;
        drop(pin);
        let etag = s.commit_part(&upload, number, &d, blob)?;
        Ok((etag, d, OffsetDateTime::now_utc()))
    })
    .await?;
    let mut x = XmlWriter::new("CopyPartResult");
    x.elem("LastModified", iso8601_millis(modified))
        .elem("ETag", quoted(&etag));
    if let Some((alg, raw)) = &d.checksum {
        x.elem(alg.xml_element(), checksum::to_base64(raw));
    }
    Ok(xml_response(StatusCode::OK, x.finish("CopyPartResult")))
}

async fn create_upload(
    store: &Arc<ObjectStore>,
    req: &Req,
    bucket: String,
    key: String,
) -> Result<Response, S3Error> {
    let algorithm = match req.header("x-amz-checksum-algorithm") {
        None => None,
        Some(a) => Some(ChecksumAlgorithm::from_name(a).ok_or_else(|| {
            S3Error::invalid_request(format!("The checksum algorithm {a} is not supported."))
        })?),
    };
    let kind = match req.header("x-amz-checksum-type") {
        None => None,
        Some(t) => Some(ChecksumType::from_name(t).ok_or_else(|| {
            S3Error::invalid_request(format!("The checksum type {t} is not supported."))
        })?),
    };
    let checksum = match (algorithm, kind) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(S3Error::invalid_request(
                "x-amz-checksum-type needs x-amz-checksum-algorithm",
            ));
        }
        (Some(a), k) => {
            let k = k.unwrap_or(if a == ChecksumAlgorithm::Crc64Nvme {
                ChecksumType::FullObject
            } else {
                ChecksumType::Composite
            });
            if k == ChecksumType::FullObject && !a.is_crc() {
                return Err(S3Error::invalid_request(format!(
                    "The FULL_OBJECT checksum type cannot be used with the {} checksum algorithm.",
                    a.name().to_lowercase()
                )));
            }
            if k == ChecksumType::Composite && a == ChecksumAlgorithm::Crc64Nvme {
                return Err(S3Error::invalid_request(
                    "The COMPOSITE checksum type cannot be used with the crc64nvme checksum algorithm.",
                ));
            }
            Some((a, k))
        }
    };
    let upload = Upload {
        upload_id: format!("{:032x}", rand::random::<u128>()),
        bucket: bucket.clone(),
        key: key.clone(),
        initiated: OffsetDateTime::now_utc(),
        headers: stored_headers(req),
        metadata: user_metadata(req)?,
        checksum,
    };
    let id = upload.upload_id.clone();
    blocking(store, move |s| s.create_upload(&upload)).await?;
    let mut x = XmlWriter::new("InitiateMultipartUploadResult");
    x.elem("Bucket", &bucket)
        .elem("Key", &key)
        .elem("UploadId", &id);
    let mut resp = xml_response(StatusCode::OK, x.finish("InitiateMultipartUploadResult"));
    if let Some((a, k)) = checksum {
        set(&mut resp, "x-amz-checksum-algorithm", a.name());
        set(&mut resp, "x-amz-checksum-type", k.name());
    }
    Ok(resp)
}

async fn complete_upload(
    store: &Arc<ObjectStore>,
    req: &Req,
    body: Body,
    bucket: String,
    key: String,
) -> Result<Response, S3Error> {
    let upload_id = req.q("uploadId").unwrap_or("").to_string();
    let doc = read_small(body, &req.auth.payload, MAX_XML).await?;
    let root = xml::parse(&doc).map_err(|e| malformed_xml(&e))?;
    if root.name != "CompleteMultipartUpload" {
        return Err(malformed_xml(
            "the root element is not CompleteMultipartUpload",
        ));
    }
    let mut parts = Vec::new();
    for p in root.children_named("Part") {
        let number = p
            .child_text("PartNumber")
            .and_then(|n| n.trim().parse::<u32>().ok())
            .ok_or_else(|| malformed_xml("a Part has no valid PartNumber"))?;
        let etag = p
            .child_text("ETag")
            .ok_or_else(|| malformed_xml("a Part has no ETag"))?
            .to_string();
        let checksums = ALGORITHMS
            .iter()
            .filter_map(|a| p.child_text(a.xml_element()).map(|v| (*a, v.to_string())))
            .collect();
        parts.push(CompletePart {
            number,
            etag,
            checksums,
        });
    }
    let full = ALGORITHMS
        .iter()
        .find_map(|a| req.header(a.header()).map(|v| (*a, v.to_string())));
    let condition = write_condition(req);
    let ctx = req.ctx.clone();
    let info = change(store, {
        let (b, k) = (bucket.clone(), key.clone());
        move |s| {
            s.complete_upload(
                Completion {
                    bucket: &b,
                    key: &k,
                    upload_id: &upload_id,
                    parts: &parts,
                    full_object_checksum: full,
                    condition,
                },
                &ctx,
            )
        }
    })
    .await?;
    let location = format!(
        "http://{}/{}/{}",
        req.host,
        bucket,
        crate::names::uri_encode(key.as_bytes(), false)
    );
    let mut x = XmlWriter::new("CompleteMultipartUploadResult");
    x.elem("Location", location)
        .elem("Bucket", &bucket)
        .elem("Key", &key)
        .elem("ETag", quoted(&info.etag));
    if let Some(c) = &info.checksum {
        x.elem(c.algorithm.xml_element(), &c.value)
            .elem("ChecksumType", c.kind.name());
    }
    Ok(xml_response(
        StatusCode::OK,
        x.finish("CompleteMultipartUploadResult"),
    ))
}

async fn list_parts(
    store: &Arc<ObjectStore>,
    req: &Req,
    bucket: String,
    key: String,
) -> Result<Response, S3Error> {
    let upload_id = req.q("uploadId").unwrap_or("").to_string();
    let marker: u32 = match req.q("part-number-marker") {
        None => 0,
        Some(m) => m.trim().parse().map_err(|_| {
            S3Error::invalid_argument("part-number-marker must be an integer")
                .with("ArgumentName", "part-number-marker")
        })?,
    };
    let max = parse_max(req, "max-parts", 1000)?;
    let (upload, parts) = blocking(store, {
        let (b, k, id) = (bucket.clone(), key.clone(), upload_id.clone());
        move |s| {
            let u = s.upload(&b, &k, &id)?;
            let parts = s.list_parts(&u)?;
            Ok((u, parts))
        }
    })
    .await?;
    let after: Vec<_> = parts.into_iter().filter(|p| p.number > marker).collect();
    let truncated = after.len() > max;
    let shown = &after[..after.len().min(max)];
    let config = store.config();
    let mut x = XmlWriter::new("ListPartsResult");
    x.elem("Bucket", &bucket)
        .elem("Key", &key)
        .elem("UploadId", &upload_id)
        .elem("PartNumberMarker", marker.to_string());
    if let Some(last) = shown.last() {
        x.elem("NextPartNumberMarker", last.number.to_string());
    }
    x.elem("MaxParts", max.to_string())
        .elem("IsTruncated", if truncated { "true" } else { "false" });
    for p in shown {
        x.open("Part")
            .elem("PartNumber", p.number.to_string())
            .elem("LastModified", iso8601_millis(p.last_modified))
            .elem("ETag", quoted(&p.etag))
            .elem("Size", p.size.to_string());
        if let (Some((alg, _)), Some(raw)) = (upload.checksum, &p.checksum) {
            x.elem(alg.xml_element(), checksum::to_base64(raw));
        }
        x.close("Part");
    }
    for who in ["Initiator", "Owner"] {
        x.open(who)
            .elem("ID", &config.owner_id)
            .elem("DisplayName", &config.owner_display_name)
            .close(who);
    }
    x.elem("StorageClass", "STANDARD");
    if let Some((alg, kind)) = upload.checksum {
        x.elem("ChecksumAlgorithm", alg.name())
            .elem("ChecksumType", kind.name());
    }
    Ok(xml_response(StatusCode::OK, x.finish("ListPartsResult")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_http_and_s3() {
        let part = |r: &str, size| match parse_range(r, size) {
            RangeSpec::Part(a, b) => Some((a, b)),
            RangeSpec::Whole => None,
            RangeSpec::Unsatisfiable => Some((u64::MAX, u64::MAX)),
        };
        assert_eq!(part("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(part("bytes=90-200", 100), Some((90, 99)));
        assert_eq!(part("bytes=90-", 100), Some((90, 99)));
        assert_eq!(part("bytes=-10", 100), Some((90, 99)));
        assert_eq!(part("bytes=-500", 100), Some((0, 99)));
        assert_eq!(part("bytes=100-", 100), Some((u64::MAX, u64::MAX)));
        assert_eq!(part("bytes=0-0", 0), Some((u64::MAX, u64::MAX)));
        assert_eq!(part("bytes=5-1", 100), None);
        assert_eq!(part("bytes=0-1,5-6", 100), None);
        assert_eq!(part("items=0-1", 100), None);
    }

    #[test]
    fn addressing_path_and_virtual_hosted() {
        let sfx = vec!["localhost".to_string()];
        assert_eq!(address("/", "127.0.0.1:9000", &sfx).unwrap(), (None, None));
        assert_eq!(
            address("/b/a%20b//c/", "127.0.0.1:9000", &sfx).unwrap(),
            (Some("b".into()), Some("a b//c/".into()))
        );
        assert_eq!(
            address("/b/", "localhost:9000", &sfx).unwrap(),
            (Some("b".into()), None)
        );
        assert_eq!(
            address("/dir/k%2B1", "photos.localhost:9000", &sfx).unwrap(),
            (Some("photos".into()), Some("dir/k+1".into()))
        );
        assert_eq!(
            address("/", "photos.localhost", &sfx).unwrap(),
            (Some("photos".into()), None)
        );
        let long = format!("/b/{}", "k".repeat(1025));
        assert_eq!(
            address(&long, "localhost", &sfx).unwrap_err().code,
            "KeyTooLongError"
        );
        assert_eq!(
            address("/b/%FF", "localhost", &sfx).unwrap_err().code,
            "InvalidURI"
        );
    }

    #[test]
    fn markers_in_common_prefix_form_skip_the_prefix() {
        assert!(matches!(after_marker("a/", "", Some("/")), ListAfter::Prefix(p) if p == "a/"));
        assert!(matches!(
            after_marker("a/b", "", Some("/")),
            ListAfter::Key(_)
        ));
        assert!(matches!(
            after_marker("a/", "a/", Some("/")),
            ListAfter::Key(_)
        ));
        assert!(matches!(after_marker("a/", "", None), ListAfter::Key(_)));
        assert!(matches!(after_marker("", "", Some("/")), ListAfter::Start));
        let t = encode_token(&ListEntry::Prefix("x/é".into()));
        assert!(matches!(decode_token(&t), Some(ListAfter::Prefix(p)) if p == "x/é"));
        assert!(decode_token("zzz").is_none());
    }
}
