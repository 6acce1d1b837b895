//! S3 errors (`<Error><Code>..</Code><Message>..</Message><RequestId>..</RequestId></Error>`)
//! and the store's own errors.

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};

use crate::xml::escape;

/// An error as S3 reports it: a code, a message and an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Error {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra elements of the `<Error>` document (`BucketName`, `Key`, `UploadId`, ...).
    pub details: Vec<(&'static str, String)>,
    /// Extra response headers (`Content-Range` of a 416).
    pub headers: Vec<(&'static str, String)>,
}

impl std::fmt::Display for S3Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code,
            self.status.as_u16(),
            self.message
        )
    }
}

impl std::error::Error for S3Error {}

macro_rules! s3_errors {
    ($($fn:ident => $status:ident, $code:literal;)*) => {
        impl S3Error {
            $(
                pub fn $fn(message: impl Into<String>) -> Self {
                    Self::new(StatusCode::$status, $code, message)
                }
            )*
        }
    };
}

s3_errors! {
    access_denied => FORBIDDEN, "AccessDenied";
    signature_does_not_match => FORBIDDEN, "SignatureDoesNotMatch";
    invalid_access_key_id => FORBIDDEN, "InvalidAccessKeyId";
    request_time_too_skewed => FORBIDDEN, "RequestTimeTooSkewed";
    authorization_header_malformed => BAD_REQUEST, "AuthorizationHeaderMalformed";
    authorization_query_malformed => BAD_REQUEST, "AuthorizationQueryParametersError";
    invalid_request => BAD_REQUEST, "InvalidRequest";
    invalid_argument => BAD_REQUEST, "InvalidArgument";
    invalid_bucket_name => BAD_REQUEST, "InvalidBucketName";
    invalid_uri => BAD_REQUEST, "InvalidURI";
    key_too_long => BAD_REQUEST, "KeyTooLongError";
    malformed_xml => BAD_REQUEST, "MalformedXML";
    bad_digest => BAD_REQUEST, "BadDigest";
    invalid_digest => BAD_REQUEST, "InvalidDigest";
    content_sha256_mismatch => BAD_REQUEST, "XAmzContentSHA256Mismatch";
    incomplete_body => BAD_REQUEST, "IncompleteBody";
    entity_too_large => BAD_REQUEST, "EntityTooLarge";
    entity_too_small => BAD_REQUEST, "EntityTooSmall";
    invalid_part => BAD_REQUEST, "InvalidPart";
    invalid_part_order => BAD_REQUEST, "InvalidPartOrder";
    malformed_trailer => BAD_REQUEST, "MalformedTrailerError";
    invalid_chunk => BAD_REQUEST, "InvalidChunkSizeError";
    missing_content_length => LENGTH_REQUIRED, "MissingContentLength";
    no_such_bucket => NOT_FOUND, "NoSuchBucket";
    no_such_key => NOT_FOUND, "NoSuchKey";
    no_such_upload => NOT_FOUND, "NoSuchUpload";
    bucket_already_owned_by_you => CONFLICT, "BucketAlreadyOwnedByYou";
    bucket_not_empty => CONFLICT, "BucketNotEmpty";
    precondition_failed => PRECONDITION_FAILED, "PreconditionFailed";
    invalid_range => RANGE_NOT_SATISFIABLE, "InvalidRange";
    method_not_allowed => METHOD_NOT_ALLOWED, "MethodNotAllowed";
    not_implemented => NOT_IMPLEMENTED, "NotImplemented";
    internal => INTERNAL_SERVER_ERROR, "InternalError";
    service_unavailable => SERVICE_UNAVAILABLE, "ServiceUnavailable";
}

impl S3Error {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            headers: Vec::new(),
        }
    }

    pub fn with(mut self, element: &'static str, value: impl Into<String>) -> Self {
        self.details.push((element, value.into()));
        self
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The XML document of this error.
    pub fn to_xml(&self, request_id: &str, resource: &str) -> String {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>");
        out.push_str(&format!("<Code>{}</Code>", self.code));
        out.push_str(&format!("<Message>{}</Message>", escape(&self.message)));
        for (name, value) in &self.details {
            out.push_str(&format!("<{name}>{}</{name}>", escape(value)));
        }
        if !resource.is_empty() {
            out.push_str(&format!("<Resource>{}</Resource>", escape(resource)));
        }
        out.push_str(&format!("<RequestId>{}</RequestId>", escape(request_id)));
        out.push_str("</Error>");
        out
    }

    /// The HTTP response: the XML document, or no body for HEAD (as S3 does).
    pub fn to_response(&self, request_id: &str, resource: &str, head: bool) -> Response {
        let body = if head {
            Body::empty()
        } else {
            Body::from(self.to_xml(request_id, resource))
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = self.status;
        if !head {
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/xml"),
            );
        }
        for (name, value) in &self.headers {
            if let Ok(v) = HeaderValue::from_str(value) {
                resp.headers_mut().insert(*name, v);
            }
        }
        resp
    }
}

/// Errors of the storage layer itself (disk, SQLite).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object storage I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("object metadata database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("object metadata is corrupt: {0}")]
    Corrupt(String),
}

impl From<StoreError> for S3Error {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "object store failure");
        S3Error::internal("We encountered an internal error. Please try again.")
    }
}

impl From<std::io::Error> for S3Error {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e).into()
    }
}

impl From<rusqlite::Error> for S3Error {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e).into()
    }
}
