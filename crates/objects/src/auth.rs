//! Checking a request's SigV4 signature (the `Authorization` header or a presigned URL)
//! against the platform's access keys.

use base64::Engine;
use http::request::Parts;
use http::{HeaderMap, Uri};
use time::{Duration, OffsetDateTime};

use crate::error::S3Error;
use crate::names::percent_decode;
use crate::sigv4::{self, ALGORITHM};
use crate::timefmt;

/// Secret keys by access key id. The platform issues the keys; this crate only checks
/// signatures made with them.
pub trait Credentials: Send + Sync {
    fn secret(&self, access_key_id: &str) -> Option<String>;
}

/// Access keys held in memory.
#[derive(Debug, Default)]
pub struct StaticCredentials {
    keys: std::sync::RwLock<std::collections::HashMap<String, String>>,
}

impl StaticCredentials {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a key, builder style.
    pub fn with(self, access_key_id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.insert(access_key_id, secret);
        self
    }

    pub fn insert(&self, access_key_id: impl Into<String>, secret: impl Into<String>) {
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(access_key_id.into(), secret.into());
    }

    /// Revokes a key; whether it existed.
    pub fn remove(&self, access_key_id: &str) -> bool {
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(access_key_id)
            .is_some()
    }
}

impl Credentials for StaticCredentials {
    fn secret(&self, access_key_id: &str) -> Option<String> {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(access_key_id)
            .cloned()
    }
}

/// What verifying the chunks of a signed aws-chunked body needs.
#[derive(Debug, Clone)]
pub(crate) struct ChunkSigner {
    pub key: [u8; 32],
    pub amz_date: String,
    pub scope: String,
    pub seed_signature: String,
}

/// How the body of an authenticated request is to be checked.
#[derive(Debug, Clone)]
pub(crate) enum PayloadAuth {
    /// Not signed (`UNSIGNED-PAYLOAD`, presigned URLs).
    Unsigned,
    /// Signed by its SHA-256, checked once the body is read.
    Sha256([u8; 32]),
    /// aws-chunked: signed chunks when `signer` is set; trailers expected when `trailer`.
    Chunked {
        signer: Option<ChunkSigner>,
        trailer: bool,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Authenticated {
    pub access_key_id: String,
    pub payload: PayloadAuth,
}

pub(crate) struct AuthSettings<'a> {
    pub credentials: &'a dyn super::Credentials,
    pub max_skew: std::time::Duration,
    pub now: OffsetDateTime,
    /// Host suffixes of virtual-hosted addressing (for SigV2's canonical resource).
    pub virtual_host_suffixes: &'a [String],
    /// The store's region: SigV4 credential scopes must name it, as S3 requires of the
    /// region a bucket is in.
    pub region: &'a str,
}

impl AuthSettings<'_> {
    fn virtual_bucket(&self, host: &str) -> Option<String> {
        let hostname = host
            .rsplit_once(':')
            .map_or(host, |(h, _)| h)
            .to_ascii_lowercase();
        self.virtual_host_suffixes.iter().find_map(|suffix| {
            hostname
                .strip_suffix(suffix.as_str())
                .and_then(|b| b.strip_suffix('.'))
                .filter(|b| !b.is_empty())
                .map(str::to_string)
        })
    }
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|p| {
        let (n, v) = p.split_once('=').unwrap_or((p, ""));
        (percent_decode(n) == name.as_bytes())
            .then(|| String::from_utf8_lossy(&percent_decode(v)).into_owned())
    })
}

/// The canonical headers for `signed` (`host;x-amz-date;...`), from the request.
fn canonical_headers(
    headers: &HeaderMap,
    uri: &Uri,
    signed: &str,
) -> Result<Vec<(String, String)>, S3Error> {
    let mut out = Vec::new();
    for name in signed.split(';') {
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(S3Error::authorization_header_malformed(
                "SignedHeaders must be lowercase names separated by ';'",
            ));
        }
        let values: Vec<&[u8]> = headers.get_all(name).iter().map(|v| v.as_bytes()).collect();
        let value = if values.is_empty() && name == "host" {
            uri.authority()
                .map(|a| a.as_str().to_string())
                .unwrap_or_default()
        } else {
            sigv4::canonical_header_value(values)
        };
        out.push((name.to_string(), value));
    }
    // Kept in the client's order: a client that did not sort them signed them so.
    if !out.iter().any(|(n, _)| n == "host") {
        return Err(S3Error::access_denied("the host header must be signed"));
    }
    Ok(out)
}

struct Credential {
    access_key_id: String,
    date: String,
    region: String,
    service: String,
}

fn parse_credential(value: &str) -> Option<Credential> {
    let mut it = value.rsplitn(5, '/');
    let terminator = it.next()?;
    let service = it.next()?;
    let region = it.next()?;
    let date = it.next()?;
    let access_key_id = it.next()?;
    if terminator != "aws4_request" || access_key_id.is_empty() || date.len() != 8 {
        return None;
    }
    Some(Credential {
        access_key_id: access_key_id.to_string(),
        date: date.to_string(),
        region: region.to_string(),
        service: service.to_string(),
    })
}

fn payload_auth(
    hash: &str,
    key: &[u8; 32],
    amz_date: &str,
    scope: &str,
    seed: &str,
) -> Result<PayloadAuth, S3Error> {
    let signer = || ChunkSigner {
        key: *key,
        amz_date: amz_date.to_string(),
        scope: scope.to_string(),
        seed_signature: seed.to_string(),
    };
    Ok(match hash {
        sigv4::UNSIGNED_PAYLOAD => PayloadAuth::Unsigned,
        sigv4::STREAMING_PAYLOAD => PayloadAuth::Chunked {
            signer: Some(signer()),
            trailer: false,
        },
        sigv4::STREAMING_PAYLOAD_TRAILER => PayloadAuth::Chunked {
            signer: Some(signer()),
            trailer: true,
        },
        sigv4::STREAMING_UNSIGNED_PAYLOAD_TRAILER => PayloadAuth::Chunked {
            signer: None,
            trailer: true,
        },
        h => {
            let mut raw = [0u8; 32];
            if h.len() != 64 || hex::decode_to_slice(h, &mut raw).is_err() {
                return Err(S3Error::invalid_argument(
                    "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, a STREAMING-* value, or the hex SHA-256 of the body",
                ));
            }
            PayloadAuth::Sha256(raw)
        }
    })
}

/// Checks the signature of a request. `signing_uri` is the URI as the client sent it
/// (before any nesting stripped a prefix).
pub(crate) fn authenticate(
    parts: &Parts,
    signing_uri: &Uri,
    settings: &AuthSettings<'_>,
) -> Result<Authenticated, S3Error> {
    let raw_query = signing_uri.query().unwrap_or("");
    if let Some(auth) = parts.headers.get(http::header::AUTHORIZATION) {
        let auth = auth
            .to_str()
            .map_err(|_| S3Error::authorization_header_malformed("unreadable Authorization"))?;
        return header_auth(parts, signing_uri, raw_query, auth, settings);
    }
    if query_param(raw_query, "X-Amz-Algorithm").is_some() {
        return presigned_auth(parts, signing_uri, raw_query, settings);
    }
    if query_param(raw_query, "Signature").is_some()
        && query_param(raw_query, "AWSAccessKeyId").is_some()
    {
        return presigned_v2_auth(parts, signing_uri, raw_query, settings);
    }
    Err(S3Error::access_denied("Anonymous access is not allowed"))
}

/// The longest a presigned URL may be valid: 7 days, as S3 allows.
pub(crate) const MAX_PRESIGNED_EXPIRY: i64 = 7 * 24 * 3600;

fn check_skew(t: OffsetDateTime, settings: &AuthSettings<'_>) -> Result<(), S3Error> {
    let max = Duration::try_from(settings.max_skew).unwrap_or(Duration::minutes(15));
    if (settings.now - t).abs() > max {
        return Err(S3Error::request_time_too_skewed(
            "The difference between the request time and the current time is too large.",
        )
        .with("RequestTime", sigv4::format_amz_date(t))
        .with("ServerTime", timefmt::iso8601_millis(settings.now))
        .with(
            "MaxAllowedSkewMilliseconds",
            max.whole_milliseconds().to_string(),
        ));
    }
    Ok(())
}

fn lookup_secret(settings: &AuthSettings<'_>, access_key_id: &str) -> Result<String, S3Error> {
    settings.credentials.secret(access_key_id).ok_or_else(|| {
        S3Error::invalid_access_key_id(
            "The AWS Access Key Id you provided does not exist in our records.",
        )
        .with("AWSAccessKeyId", access_key_id)
    })
}

fn header_auth(
    parts: &Parts,
    uri: &Uri,
    raw_query: &str,
    auth: &str,
    settings: &AuthSettings<'_>,
) -> Result<Authenticated, S3Error> {
    let Some(rest) = auth.strip_prefix(ALGORITHM) else {
        if auth.starts_with("AWS ") {
            return Err(S3Error::invalid_request(
                "Signature Version 2 is not supported; use AWS4-HMAC-SHA256",
            ));
        }
        return Err(S3Error::authorization_header_malformed(
            "the authorization mechanism is not supported; use AWS4-HMAC-SHA256",
        ));
    };
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for field in rest.split(',') {
        let field = field.trim();
        if let Some(v) = field.strip_prefix("Credential=") {
            credential = Some(v.trim());
        } else if let Some(v) = field.strip_prefix("SignedHeaders=") {
            signed = Some(v.trim());
        } else if let Some(v) = field.strip_prefix("Signature=") {
            signature = Some(v.trim());
        }
    }
    let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature) else {
        return Err(S3Error::authorization_header_malformed(
            "the Authorization header needs Credential, SignedHeaders and Signature",
        ));
    };
    let cred = parse_credential(credential).ok_or_else(|| {
        S3Error::authorization_header_malformed(
            "the Credential is not <key id>/<date>/<region>/s3/aws4_request",
        )
    })?;
    if cred.service != "s3" {
        return Err(S3Error::authorization_header_malformed(
            "the credential's service must be s3",
        ));
    }
    if cred.region != settings.region {
        // S3's words; botocore re-signs for the region in <Region> (or, for a HEAD, which
        // has no body, in x-amz-bucket-region).
        return Err(S3Error::authorization_header_malformed(format!(
            "The authorization header is malformed; the region '{}' is wrong; expecting '{}'",
            cred.region, settings.region
        ))
        .with("Region", settings.region)
        .with_header("x-amz-bucket-region", settings.region));
    }
    let (amz_date, t) = match parts.headers.get("x-amz-date") {
        Some(v) => {
            let s = v.to_str().unwrap_or("");
            let t = sigv4::parse_amz_date(s)
                .ok_or_else(|| S3Error::access_denied("x-amz-date is not a valid date"))?;
            (s.to_string(), t)
        }
        None => {
            let t = parts
                .headers
                .get(http::header::DATE)
                .and_then(|v| v.to_str().ok())
                .and_then(timefmt::parse_http_date)
                .ok_or_else(|| {
                    S3Error::access_denied(
                        "AWS authentication requires a valid Date or x-amz-date header",
                    )
                })?;
            (sigv4::format_amz_date(t), t)
        }
    };
    if amz_date[..8] != cred.date {
        return Err(S3Error::authorization_header_malformed(
            "the credential's date is not the date of x-amz-date",
        ));
    }
    check_skew(t, settings)?;
    let secret = lookup_secret(settings, &cred.access_key_id)?;
    let payload_hash = parts
        .headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            S3Error::invalid_request(
                "Missing required header for this request: x-amz-content-sha256",
            )
        })?
        .trim()
        .to_string();
    let headers = canonical_headers(&parts.headers, uri, signed)?;
    let creq = sigv4::canonical_request(
        parts.method.as_str(),
        &sigv4::canonical_uri(uri.path()),
        &sigv4::canonical_query(raw_query, false),
        &headers,
        &payload_hash,
    );
    let scope = sigv4::credential_scope(&cred.date, &cred.region, &cred.service);
    let sts = sigv4::string_to_sign(&amz_date, &scope, &creq);
    let key = sigv4::signing_key(&secret, &cred.date, &cred.region, &cred.service);
    let expected = sigv4::sign(&key, &sts);
    if !sigv4::constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
        return Err(signature_mismatch(&cred.access_key_id, &sts, &creq));
    }
    Ok(Authenticated {
        access_key_id: cred.access_key_id,
        payload: payload_auth(&payload_hash, &key, &amz_date, &scope, signature)?,
    })
}

fn signature_mismatch(access_key_id: &str, sts: &str, creq: &str) -> S3Error {
    S3Error::signature_does_not_match(
        "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
    )
    .with("AWSAccessKeyId", access_key_id)
    .with("StringToSign", sts)
    .with("CanonicalRequest", creq)
}

fn presigned_auth(
    parts: &Parts,
    uri: &Uri,
    raw_query: &str,
    settings: &AuthSettings<'_>,
) -> Result<Authenticated, S3Error> {
    let param = |name: &str| {
        query_param(raw_query, name).ok_or_else(|| {
            S3Error::authorization_query_malformed(format!(
                "Query-string authentication requires the {name} parameter"
            ))
        })
    };
    if param("X-Amz-Algorithm")? != ALGORITHM {
        return Err(S3Error::authorization_query_malformed(
            "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"",
        ));
    }
    let credential = param("X-Amz-Credential")?;
    let amz_date = param("X-Amz-Date")?;
    let expires = param("X-Amz-Expires")?;
    let signed = param("X-Amz-SignedHeaders")?;
    let signature = param("X-Amz-Signature")?;
    let cred = parse_credential(&credential).ok_or_else(|| {
        S3Error::authorization_query_malformed(
            "X-Amz-Credential is not <key id>/<date>/<region>/s3/aws4_request",
        )
    })?;
    if cred.service != "s3" {
        return Err(S3Error::authorization_query_malformed(
            "the credential's service must be s3",
        ));
    }
    if cred.region != settings.region {
        return Err(S3Error::authorization_query_malformed(format!(
            "Error parsing the X-Amz-Credential parameter; the region '{}' is wrong; expecting '{}'",
            cred.region, settings.region
        ))
        .with("Region", settings.region)
        .with_header("x-amz-bucket-region", settings.region));
    }
    let t = sigv4::parse_amz_date(&amz_date).ok_or_else(|| {
        S3Error::authorization_query_malformed("X-Amz-Date must be in the ISO8601 Long Format")
    })?;
    if amz_date[..8] != cred.date {
        return Err(S3Error::authorization_query_malformed(
            "the credential's date is not the date of X-Amz-Date",
        ));
    }
    // As S3: a negative or over-a-week X-Amz-Expires is a malformed URL (400); 0 is a
    // well-formed URL that has expired as soon as it was made (403 below).
    // (ceph/s3-tests' test_object_raw_get_x_amz_expires_out_max_range and
    // _out_positive_range expect 403 for those two, as RGW answers; AWS answers 400.)
    let expires: i64 = expires
        .parse()
        .map_err(|_| S3Error::authorization_query_malformed("X-Amz-Expires should be a number"))?;
    if expires < 0 {
        return Err(S3Error::authorization_query_malformed(
            "X-Amz-Expires must be non-negative",
        ));
    }
    if expires > MAX_PRESIGNED_EXPIRY {
        return Err(S3Error::authorization_query_malformed(
            "X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires must be less than 604800 seconds",
        ));
    }
    let max_skew = Duration::try_from(settings.max_skew).unwrap_or(Duration::minutes(15));
    if t - settings.now > max_skew {
        return Err(S3Error::access_denied("Request is not valid yet"));
    }
    if settings.now > t + Duration::seconds(expires) {
        return Err(S3Error::access_denied("Request has expired")
            .with("X-Amz-Expires", expires.to_string())
            .with(
                "Expires",
                timefmt::iso8601_millis(t + Duration::seconds(expires)),
            )
            .with("ServerTime", timefmt::iso8601_millis(settings.now)));
    }
    let secret = lookup_secret(settings, &cred.access_key_id)?;
    let payload_hash = query_param(raw_query, "X-Amz-Content-Sha256")
        .unwrap_or_else(|| sigv4::UNSIGNED_PAYLOAD.to_string());
    let headers = canonical_headers(&parts.headers, uri, &signed)?;
    let creq = sigv4::canonical_request(
        parts.method.as_str(),
        &sigv4::canonical_uri(uri.path()),
        &sigv4::canonical_query(raw_query, true),
        &headers,
        &payload_hash,
    );
    let scope = sigv4::credential_scope(&cred.date, &cred.region, &cred.service);
    let sts = sigv4::string_to_sign(&amz_date, &scope, &creq);
    let key = sigv4::signing_key(&secret, &cred.date, &cred.region, &cred.service);
    let expected = sigv4::sign(&key, &sts);
    if !sigv4::constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
        return Err(signature_mismatch(&cred.access_key_id, &sts, &creq));
    }
    let payload = match payload_auth(&payload_hash, &key, &amz_date, &scope, &signature)? {
        // Streaming bodies are signed by the header form only.
        PayloadAuth::Chunked { .. } => PayloadAuth::Unsigned,
        p => p,
    };
    Ok(Authenticated {
        access_key_id: cred.access_key_id,
        payload,
    })
}

/// The query arguments that are part of a SigV2 canonical resource.
const V2_SUBRESOURCES: &[&str] = &[
    "accelerate",
    "acl",
    "analytics",
    "cors",
    "defaultObjectAcl",
    "delete",
    "inventory",
    "lifecycle",
    "location",
    "logging",
    "metrics",
    "notification",
    "object-lock",
    "partNumber",
    "policy",
    "replication",
    "requestPayment",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "restore",
    "select",
    "select-type",
    "storageClass",
    "tagging",
    "torrent",
    "uploadId",
    "uploads",
    "versionId",
    "versioning",
    "versions",
    "website",
];

/// The SigV2 string to sign of a presigned (query-string) request.
pub(crate) fn v2_string_to_sign(
    method: &str,
    headers: &HeaderMap,
    expires: &str,
    resource_path: &str,
    raw_query: &str,
) -> String {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .trim()
            .to_string()
    };
    let mut out = format!(
        "{method}\n{}\n{}\n{expires}\n",
        header("content-md5"),
        header("content-type")
    );
    let mut amz: Vec<(String, String)> = Vec::new();
    for name in headers.keys() {
        let n = name.as_str();
        if n.starts_with("x-amz-") && !amz.iter().any(|(a, _)| a == n) {
            let v: Vec<String> = headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
                .collect();
            amz.push((n.to_string(), v.join(",")));
        }
    }
    amz.sort();
    for (n, v) in amz {
        out.push_str(&format!("{n}:{v}\n"));
    }
    out.push_str(resource_path);
    let mut sub: Vec<(String, Option<String>)> = raw_query
        .split('&')
        .filter_map(|p| {
            let (n, v) = match p.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (p, None),
            };
            V2_SUBRESOURCES.contains(&n).then(|| {
                (
                    n.to_string(),
                    v.map(|v| String::from_utf8_lossy(&percent_decode(v)).into_owned()),
                )
            })
        })
        .collect();
    sub.sort_by(|a, b| a.0.cmp(&b.0));
    for (i, (n, v)) in sub.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(n);
        if let Some(v) = v {
            out.push('=');
            out.push_str(v);
        }
    }
    out
}

/// Signature Version 2 presigned URLs (`AWSAccessKeyId`, `Expires`, `Signature`), which
/// botocore's `generate_presigned_url` makes for S3 unless told to use SigV4.
fn presigned_v2_auth(
    parts: &Parts,
    uri: &Uri,
    raw_query: &str,
    settings: &AuthSettings<'_>,
) -> Result<Authenticated, S3Error> {
    let access_key_id = query_param(raw_query, "AWSAccessKeyId").unwrap_or_default();
    let signature = query_param(raw_query, "Signature").unwrap_or_default();
    let expires_raw = query_param(raw_query, "Expires").ok_or_else(|| {
        S3Error::access_denied("Query-string authentication requires the Expires parameter")
    })?;
    let expires: i64 = expires_raw
        .parse()
        .map_err(|_| S3Error::access_denied("Expires is not a number of seconds"))?;
    if settings.now.unix_timestamp() > expires {
        return Err(S3Error::access_denied("Request has expired")
            .with("Expires", expires_raw.clone())
            .with("ServerTime", timefmt::iso8601_millis(settings.now)));
    }
    // SigV2's Expires is a point in time, so nothing in the URL bounds how long it stays
    // valid. S3 only signs SigV4 URLs for at most a week (X-Amz-Expires above) and
    // refuses those longer with 400 AuthorizationQueryParametersError; a SigV2 URL that
    // outlives that week is refused the same way, so no URL of this store grants access
    // for longer than a week. The clock skew allowance keeps a week-long URL made by a
    // client whose clock runs a little ahead valid.
    let max_skew = Duration::try_from(settings.max_skew).unwrap_or(Duration::minutes(15));
    let latest = settings.now + Duration::seconds(MAX_PRESIGNED_EXPIRY) + max_skew;
    if expires > latest.unix_timestamp() {
        return Err(S3Error::authorization_query_malformed(
            "Expires must be less than a week (in seconds) from now; that is, at most 604800 seconds after the request",
        )
        .with("Expires", expires_raw.clone())
        .with("ServerTime", timefmt::iso8601_millis(settings.now)));
    }
    let secret = lookup_secret(settings, &access_key_id)?;
    // The resource is the path as sent; virtual-hosted requests name the bucket in the
    // host, and the canonical resource puts it in front.
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let resource = match settings.virtual_bucket(host) {
        Some(b) => format!("/{b}{}", uri.path()),
        None => uri.path().to_string(),
    };
    let sts = v2_string_to_sign(
        parts.method.as_str(),
        &parts.headers,
        &expires_raw,
        &resource,
        raw_query,
    );
    let expected = base64::engine::general_purpose::STANDARD.encode(hmac_sha1(&secret, &sts));
    if !sigv4::constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
        return Err(S3Error::signature_does_not_match(
            "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
        )
        .with("AWSAccessKeyId", access_key_id)
        .with("StringToSign", sts));
    }
    Ok(Authenticated {
        access_key_id,
        payload: PayloadAuth::Unsigned,
    })
}

fn missing_post_field(name: &str) -> S3Error {
    S3Error::invalid_argument(format!(
        "Bucket POST must contain a field named '{name}'.  If it is specified, please check the order of the fields."
    ))
    .with("ArgumentName", name)
    .with("ArgumentValue", "")
}

/// Checks the signature of a browser form upload's policy (the `policy` field, base64,
/// as sent): SigV4 (`x-amz-algorithm`, `x-amz-credential`, `x-amz-date`,
/// `x-amz-signature`: the hex HMAC of the policy under the day's signing key) or SigV2
/// (`AWSAccessKeyId`, `signature`: the base64 HMAC-SHA1 of the policy). `field` looks a
/// form field up by name, case-insensitively. The access key id that signed.
pub(crate) fn verify_post_policy<'f>(
    field: impl Fn(&str) -> Option<&'f str>,
    policy_b64: &str,
    settings: &AuthSettings<'_>,
) -> Result<String, S3Error> {
    let Some(algorithm) = field("x-amz-algorithm") else {
        // SigV2, as boto3 signs form uploads unless told to use SigV4.
        let access_key_id =
            field("AWSAccessKeyId").ok_or_else(|| missing_post_field("AWSAccessKeyId"))?;
        let signature = field("signature").ok_or_else(|| missing_post_field("signature"))?;
        let secret = lookup_secret(settings, access_key_id)?;
        let expected =
            base64::engine::general_purpose::STANDARD.encode(hmac_sha1(&secret, policy_b64));
        if !sigv4::constant_time_eq(expected.as_bytes(), signature.trim().as_bytes()) {
            return Err(S3Error::signature_does_not_match(
                "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
            )
            .with("AWSAccessKeyId", access_key_id)
            .with("StringToSign", policy_b64));
        }
        return Ok(access_key_id.to_string());
    };
    if algorithm != ALGORITHM {
        return Err(S3Error::invalid_argument(
            "Only AWS4-HMAC-SHA256 is supported as x-amz-algorithm",
        )
        .with("ArgumentName", "x-amz-algorithm")
        .with("ArgumentValue", algorithm));
    }
    let credential =
        field("x-amz-credential").ok_or_else(|| missing_post_field("x-amz-credential"))?;
    let amz_date = field("x-amz-date").ok_or_else(|| missing_post_field("x-amz-date"))?;
    let signature =
        field("x-amz-signature").ok_or_else(|| missing_post_field("x-amz-signature"))?;
    let cred = parse_credential(credential)
        .filter(|c| c.service == "s3")
        .ok_or_else(|| {
            S3Error::invalid_argument(
                "Error parsing the X-Amz-Credential parameter; it is not <key id>/<date>/<region>/s3/aws4_request",
            )
            .with("ArgumentName", "x-amz-credential")
            .with("ArgumentValue", credential)
        })?;
    if cred.region != settings.region {
        return Err(S3Error::invalid_argument(format!(
            "Error parsing the X-Amz-Credential parameter; the region '{}' is wrong; expecting '{}'",
            cred.region, settings.region
        ))
        .with("Region", settings.region)
        .with_header("x-amz-bucket-region", settings.region));
    }
    if sigv4::parse_amz_date(amz_date).is_none() {
        return Err(S3Error::invalid_argument(
            "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"",
        )
        .with("ArgumentName", "x-amz-date")
        .with("ArgumentValue", amz_date));
    }
    if amz_date[..8] != cred.date {
        return Err(S3Error::invalid_argument(
            "the credential's date is not the date of x-amz-date",
        )
        .with("ArgumentName", "x-amz-credential")
        .with("ArgumentValue", credential));
    }
    let secret = lookup_secret(settings, &cred.access_key_id)?;
    let key = sigv4::signing_key(&secret, &cred.date, &cred.region, &cred.service);
    let expected = sigv4::sign(&key, policy_b64);
    if !sigv4::constant_time_eq(expected.as_bytes(), signature.trim().as_bytes()) {
        return Err(S3Error::signature_does_not_match(
            "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
        )
        .with("AWSAccessKeyId", &cred.access_key_id)
        .with("StringToSign", policy_b64));
    }
    Ok(cred.access_key_id)
}

fn hmac_sha1(key: &str, data: &str) -> Vec<u8> {
    use hmac::Mac;
    let mut mac =
        hmac::Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigv4::{SigningParams, sign_request};

    fn settings<'a>(creds: &'a StaticCredentials, now: OffsetDateTime) -> AuthSettings<'a> {
        AuthSettings {
            credentials: creds,
            max_skew: std::time::Duration::from_secs(900),
            now,
            virtual_host_suffixes: &[],
            region: "us-east-1",
        }
    }

    fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    #[test]
    fn accepts_the_s3_example_request_and_rejects_tampering() {
        let creds = StaticCredentials::new().with("AKIAIOSFODNN7EXAMPLE", SECRET);
        let now = sigv4::parse_amz_date("20130524T000500Z").unwrap();
        let auth = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41";
        let headers = [
            ("host", "examplebucket.s3.amazonaws.com"),
            ("range", "bytes=0-9"),
            ("x-amz-content-sha256", sigv4::EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
            ("authorization", auth),
        ];
        let parts = request("GET", "/test.txt", &headers);
        let ok = authenticate(&parts, &parts.uri, &settings(&creds, now)).unwrap();
        assert_eq!(ok.access_key_id, "AKIAIOSFODNN7EXAMPLE");
        assert!(matches!(ok.payload, PayloadAuth::Sha256(_)));

        let mut tampered = headers;
        tampered[1] = ("range", "bytes=0-10");
        let parts = request("GET", "/test.txt", &tampered);
        let err = authenticate(&parts, &parts.uri, &settings(&creds, now)).unwrap_err();
        assert_eq!(err.code, "SignatureDoesNotMatch");
        assert_eq!(err.status, 403);

        let parts = request("GET", "/test.txt", &headers);
        let later = now + Duration::minutes(20);
        let err = authenticate(&parts, &parts.uri, &settings(&creds, later)).unwrap_err();
        assert_eq!(err.code, "RequestTimeTooSkewed");

        let other = StaticCredentials::new().with("SOMEONEELSE", SECRET);
        let err = authenticate(&parts, &parts.uri, &settings(&other, now)).unwrap_err();
        assert_eq!(err.code, "InvalidAccessKeyId");

        let wrong = StaticCredentials::new().with("AKIAIOSFODNN7EXAMPLE", "not the secret");
        let err = authenticate(&parts, &parts.uri, &settings(&wrong, now)).unwrap_err();
        assert_eq!(err.code, "SignatureDoesNotMatch");
    }

    #[test]
    fn sigv2_presigned_url_of_the_s3_docs() {
        // "Query string request authentication alternative" in the S3 documentation:
        // GET /johnsmith/photos/puppy.jpg, Expires=1175139620.
        let sts = v2_string_to_sign(
            "GET",
            &HeaderMap::new(),
            "1175139620",
            "/johnsmith/photos/puppy.jpg",
            "AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Expires=1175139620&Signature=x",
        );
        assert_eq!(sts, "GET\n\n\n1175139620\n/johnsmith/photos/puppy.jpg");
        let sig = base64::engine::general_purpose::STANDARD
            .encode(hmac_sha1("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", &sts));
        assert_eq!(sig, "NpgCjnDzrM+WFzoENXmpNDUsSn8=");
        let creds = StaticCredentials::new().with(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        );
        let uri = "/johnsmith/photos/puppy.jpg?AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Expires=1175139620&Signature=NpgCjnDzrM%2BWFzoENXmpNDUsSn8%3D";
        let parts = request("GET", uri, &[("host", "s3.us-west-1.amazonaws.com")]);
        let before = OffsetDateTime::from_unix_timestamp(1_175_139_000).unwrap();
        assert!(authenticate(&parts, &parts.uri, &settings(&creds, before)).is_ok());
        let after = OffsetDateTime::from_unix_timestamp(1_175_139_621).unwrap();
        let err = authenticate(&parts, &parts.uri, &settings(&creds, after)).unwrap_err();
        assert_eq!(err.message, "Request has expired");
        let tampered = request("GET", &uri.replace("puppy", "kitten"), &[]);
        let err = authenticate(&tampered, &tampered.uri, &settings(&creds, before)).unwrap_err();
        assert_eq!(err.code, "SignatureDoesNotMatch");
    }

    #[test]
    fn anonymous_and_v2_requests_are_refused() {
        let creds = StaticCredentials::new();
        let now = OffsetDateTime::now_utc();
        let parts = request("GET", "/b/k", &[]);
        assert_eq!(
            authenticate(&parts, &parts.uri, &settings(&creds, now))
                .unwrap_err()
                .code,
            "AccessDenied"
        );
        let parts = request("GET", "/b/k", &[("authorization", "AWS AKID:sig")]);
        assert_eq!(
            authenticate(&parts, &parts.uri, &settings(&creds, now))
                .unwrap_err()
                .code,
            "InvalidRequest"
        );
    }

    #[test]
    fn presigned_urls_verify_and_expire() {
        let creds = StaticCredentials::new().with("AKID", "secret");
        let t = sigv4::parse_amz_date("20240101T000000Z").unwrap();
        let params = SigningParams {
            access_key_id: "AKID",
            secret: "secret",
            region: "us-east-1",
            service: "s3",
            time: t,
        };
        let url = sigv4::presign(&params, "GET", "localhost:9000", "/b/a%20key", "", 60);
        let parts = request("GET", &url, &[("host", "localhost:9000")]);
        let ok = authenticate(
            &parts,
            &parts.uri,
            &settings(&creds, t + Duration::seconds(30)),
        );
        assert!(matches!(ok.unwrap().payload, PayloadAuth::Unsigned));
        let err = authenticate(
            &parts,
            &parts.uri,
            &settings(&creds, t + Duration::seconds(61)),
        )
        .unwrap_err();
        assert_eq!(err.message, "Request has expired");
        let parts = request(
            "GET",
            &url.replace("a%20key", "b%20key"),
            &[("host", "localhost:9000")],
        );
        let err = authenticate(&parts, &parts.uri, &settings(&creds, t)).unwrap_err();
        assert_eq!(err.code, "SignatureDoesNotMatch");
    }

    #[test]
    fn header_signing_round_trips_through_verification() {
        let creds = StaticCredentials::new().with("AKID", "secret");
        let t = OffsetDateTime::now_utc();
        let date = sigv4::format_amz_date(t);
        let params = SigningParams {
            access_key_id: "AKID",
            secret: "secret",
            region: "eu-central-1",
            service: "s3",
            time: t,
        };
        let path = "/bucket/dir/%C3%A9t%C3%A9%20%2B%20more%21";
        let query = "list-type=2&prefix=a%2Fb&delimiter=%2F";
        let signed = sign_request(
            &params,
            "GET",
            path,
            query,
            &[
                ("host", "127.0.0.1:1234"),
                ("x-amz-date", &date),
                (
                    "x-amz-content-sha256",
                    sigv4::STREAMING_UNSIGNED_PAYLOAD_TRAILER,
                ),
            ],
            sigv4::STREAMING_UNSIGNED_PAYLOAD_TRAILER,
        );
        let parts = request(
            "GET",
            &format!("{path}?{query}"),
            &[
                ("host", "127.0.0.1:1234"),
                ("x-amz-date", &date),
                (
                    "x-amz-content-sha256",
                    sigv4::STREAMING_UNSIGNED_PAYLOAD_TRAILER,
                ),
                ("authorization", &signed.authorization),
            ],
        );
        let in_frankfurt = AuthSettings {
            region: "eu-central-1",
            ..settings(&creds, t)
        };
        let ok = authenticate(&parts, &parts.uri, &in_frankfurt).unwrap();
        assert!(matches!(
            ok.payload,
            PayloadAuth::Chunked {
                signer: None,
                trailer: true
            }
        ));
    }

    /// The URL `presign` makes, with X-Amz-Expires replaced (the signature no longer
    /// matches, but the expiry is checked first, as S3 does).
    fn with_expires(url: &str, expires: &str) -> String {
        url.replace("X-Amz-Expires=60", &format!("X-Amz-Expires={expires}"))
    }

    // ceph/s3-tests test_object_raw_get_x_amz_expires_out_range_zero (ExpiresIn=0),
    // test_object_raw_put_authenticated_expired (ExpiresIn=-1000) and
    // test_object_raw_get_x_amz_expires_out_max_range (609901), with AWS's answers: an
    // expired URL is 403 AccessDenied, a malformed X-Amz-Expires 400.
    #[test]
    fn presigned_expiry_bounds_are_s3s() {
        let creds = StaticCredentials::new().with("AKID", "secret");
        let t = sigv4::parse_amz_date("20240101T000000Z").unwrap();
        let params = SigningParams {
            access_key_id: "AKID",
            secret: "secret",
            region: "us-east-1",
            service: "s3",
            time: t,
        };
        let check = |expires: &str, at: OffsetDateTime| {
            let url = sigv4::presign(&params, "GET", "localhost:9000", "/b/k", "", 60);
            let url = if expires == "60" {
                url
            } else if let Ok(n) = expires.parse::<u64>() {
                // Signed properly for this expiry.
                sigv4::presign(&params, "GET", "localhost:9000", "/b/k", "", n)
            } else {
                with_expires(&url, expires)
            };
            let parts = request("GET", &url, &[("host", "localhost:9000")]);
            authenticate(&parts, &parts.uri, &settings(&creds, at))
        };
        // Zero seconds: valid in form, expired at once.
        let err = check("0", t + Duration::seconds(1)).unwrap_err();
        assert_eq!((err.status.as_u16(), err.code), (403, "AccessDenied"));
        assert_eq!(err.message, "Request has expired");
        let err = check("-1000", t).unwrap_err();
        assert_eq!(
            (err.status.as_u16(), err.code, err.message.as_str()),
            (
                400,
                "AuthorizationQueryParametersError",
                "X-Amz-Expires must be non-negative"
            )
        );
        let err = check("609901", t).unwrap_err();
        assert_eq!(
            (err.status.as_u16(), err.code),
            (400, "AuthorizationQueryParametersError")
        );
        assert!(err.message.contains("less than a week"), "{}", err.message);
        let err = check("soon", t).unwrap_err();
        assert_eq!(err.code, "AuthorizationQueryParametersError");
        // A week is the longest allowed, and it lasts a week.
        assert!(check("604800", t + Duration::days(6)).is_ok());
        let err = check("604800", t + Duration::days(7) + Duration::seconds(1)).unwrap_err();
        assert_eq!(err.message, "Request has expired");
    }

    #[test]
    fn sigv2_presigned_urls_last_at_most_a_week() {
        let creds = StaticCredentials::new().with(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        );
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let url_expiring = |expires: i64| {
            let sts = v2_string_to_sign("GET", &HeaderMap::new(), &expires.to_string(), "/b/k", "");
            let sig = base64::engine::general_purpose::STANDARD
                .encode(hmac_sha1("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", &sts));
            format!(
                "/b/k?AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Expires={expires}&Signature={}",
                crate::names::uri_encode(sig.as_bytes(), true)
            )
        };
        let at = |url: String| {
            let parts = request("GET", &url, &[("host", "localhost")]);
            authenticate(&parts, &parts.uri, &settings(&creds, now))
        };
        let week = 7 * 24 * 3600;
        assert!(at(url_expiring(now.unix_timestamp() + week)).is_ok());
        // What boto3 makes for ExpiresIn of ten years.
        let err = at(url_expiring(now.unix_timestamp() + 10 * 365 * 24 * 3600)).unwrap_err();
        assert_eq!(
            (err.status.as_u16(), err.code),
            (400, "AuthorizationQueryParametersError")
        );
        let err = at(url_expiring(now.unix_timestamp() - 1)).unwrap_err();
        assert_eq!(
            (err.status.as_u16(), err.message.as_str()),
            (403, "Request has expired")
        );
    }

    // S3 refuses a signature scoped to another region than the bucket's with 400
    // AuthorizationHeaderMalformed (naming the right one in <Region>), and a presigned
    // URL's with AuthorizationQueryParametersError.
    #[test]
    fn signatures_for_another_region_are_refused() {
        let creds = StaticCredentials::new().with("AKID", "secret");
        let t = OffsetDateTime::now_utc();
        let date = sigv4::format_amz_date(t);
        let params = SigningParams {
            access_key_id: "AKID",
            secret: "secret",
            region: "eu-west-1",
            service: "s3",
            time: t,
        };
        let headers = [
            ("host", "127.0.0.1:1234"),
            ("x-amz-date", date.as_str()),
            ("x-amz-content-sha256", sigv4::EMPTY_SHA256),
        ];
        let signed = sign_request(&params, "GET", "/b/k", "", &headers, sigv4::EMPTY_SHA256);
        let mut with_auth = headers.to_vec();
        with_auth.push(("authorization", &signed.authorization));
        let parts = request("GET", "/b/k", &with_auth);
        let err = authenticate(&parts, &parts.uri, &settings(&creds, t)).unwrap_err();
        assert_eq!(
            (err.status.as_u16(), err.code),
            (400, "AuthorizationHeaderMalformed")
        );
        assert_eq!(
            err.message,
            "The authorization header is malformed; the region 'eu-west-1' is wrong; expecting 'us-east-1'"
        );
        assert_eq!(err.details, vec![("Region", "us-east-1".to_string())]);
        let ireland = AuthSettings {
            region: "eu-west-1",
            ..settings(&creds, t)
        };
        assert!(authenticate(&parts, &parts.uri, &ireland).is_ok());

        let url = sigv4::presign(&params, "GET", "127.0.0.1:1234", "/b/k", "", 60);
        let parts = request("GET", &url, &[("host", "127.0.0.1:1234")]);
        let err = authenticate(&parts, &parts.uri, &settings(&creds, t)).unwrap_err();
        assert_eq!(
            (err.status.as_u16(), err.code),
            (400, "AuthorizationQueryParametersError")
        );
        assert!(err.message.contains("the region 'eu-west-1' is wrong"));
        assert!(authenticate(&parts, &parts.uri, &ireland).is_ok());
    }

    #[test]
    fn presigned_urls_verify_whatever_spacing_the_host_has() {
        // Found by fuzz/fuzz_targets/s3_auth.rs: presign signed the host as given, the
        // verifier its canonical value (trimmed, inner runs of spaces collapsed).
        let creds = StaticCredentials::new().with("AKID", "secret");
        let t = sigv4::parse_amz_date("20130524T000000Z").unwrap();
        let params = SigningParams {
            access_key_id: "AKID",
            secret: "secret",
            region: "us-east-1",
            service: "s3",
            time: t,
        };
        let host = "a  b ";
        let url = sigv4::presign(&params, "PUT", host, "/b/k", "x-id=PutObject", 60);
        let parts = request("PUT", &url, &[("host", host)]);
        let now = t + Duration::seconds(30);
        assert!(authenticate(&parts, &parts.uri, &settings(&creds, now)).is_ok());
    }
}
