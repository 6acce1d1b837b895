//! AWS Signature Version 4 as S3 uses it: canonical requests (the path encoded once,
//! never normalised), signing keys, seed/chunk/trailer signatures, and a small signer
//! for clients (tests, or a node handing out presigned URLs).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::macros::format_description;

use crate::names::{percent_decode, uri_encode};

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// SHA-256 of the empty string, in hex.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// aws-chunked body, each chunk signed.
pub const STREAMING_PAYLOAD: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
/// aws-chunked body, each chunk signed, then signed trailers (checksums).
pub const STREAMING_PAYLOAD_TRAILER: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
/// aws-chunked body, unsigned, then unsigned trailers (checksums).
pub const STREAMING_UNSIGNED_PAYLOAD_TRAILER: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";

type HmacSha256 = Hmac<Sha256>;

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().into()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The canonical URI of a request whose path is `raw_path` as sent (still
/// percent-encoded): decoded once, then encoded as SigV4 requires. S3 does not
/// normalise paths, so `//` and `.` segments stay.
pub fn canonical_uri(raw_path: &str) -> String {
    if raw_path.is_empty() {
        return "/".into();
    }
    uri_encode(&percent_decode(raw_path), false)
}

/// The canonical query string of `raw_query` as sent: each name and value decoded, then
/// encoded (a `/` too), sorted by name then value; a name without `=` gets an empty value.
/// `X-Amz-Signature` is left out when `presigned`.
pub fn canonical_query(raw_query: &str, presigned: bool) -> String {
    let mut pairs: Vec<(String, String)> = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            let name = uri_encode(&percent_decode(name), true);
            if presigned && name == "X-Amz-Signature" {
                return None;
            }
            Some((name, uri_encode(&percent_decode(value), true)))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// A header's canonical value: each occurrence trimmed with inner runs of spaces
/// collapsed to one, occurrences joined by `,` in the order they came.
pub fn canonical_header_value<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> String {
    values
        .into_iter()
        .map(|v| {
            let v = String::from_utf8_lossy(v);
            v.split_ascii_whitespace().collect::<Vec<_>>().join(" ")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The canonical request. `headers` are (lowercase name, canonical value), sorted by
/// name; they are exactly the signed headers.
pub fn canonical_request(
    method: &str,
    canonical_uri: &str,
    canonical_query: &str,
    headers: &[(String, String)],
    payload_hash: &str,
) -> String {
    let mut out = format!("{method}\n{canonical_uri}\n{canonical_query}\n");
    for (name, value) in headers {
        out.push_str(name);
        out.push(':');
        out.push_str(value);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers(headers));
    out.push('\n');
    out.push_str(payload_hash);
    out
}

/// `host;x-amz-date;...` from sorted canonical headers.
pub fn signed_headers(headers: &[(String, String)]) -> String {
    headers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";")
}

/// `20130524/us-east-1/s3/aws4_request`
pub fn credential_scope(date: &str, region: &str, service: &str) -> String {
    format!("{date}/{region}/{service}/aws4_request")
}

pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// The signing key of a secret for one day, region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

/// The hex signature of a string to sign.
pub fn sign(key: &[u8; 32], string_to_sign: &str) -> String {
    hex::encode(hmac_sha256(key, string_to_sign.as_bytes()))
}

/// The string to sign of one chunk of a `STREAMING-AWS4-HMAC-SHA256-PAYLOAD` body.
pub fn chunk_string_to_sign(
    amz_date: &str,
    scope: &str,
    previous_signature: &str,
    chunk_sha256_hex: &str,
) -> String {
    format!(
        "AWS4-HMAC-SHA256-PAYLOAD\n{amz_date}\n{scope}\n{previous_signature}\n{EMPTY_SHA256}\n{chunk_sha256_hex}"
    )
}

/// The signature of one chunk, chained on the previous one (the seed signature first).
pub fn chunk_signature(
    key: &[u8; 32],
    amz_date: &str,
    scope: &str,
    previous_signature: &str,
    chunk_sha256_hex: &str,
) -> String {
    sign(
        key,
        &chunk_string_to_sign(amz_date, scope, previous_signature, chunk_sha256_hex),
    )
}

/// The signature of the trailers of a `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`
/// body; `canonical_trailers` is `name:value\n` for each trailer.
pub fn trailer_signature(
    key: &[u8; 32],
    amz_date: &str,
    scope: &str,
    previous_signature: &str,
    canonical_trailers: &str,
) -> String {
    let sts = format!(
        "AWS4-HMAC-SHA256-TRAILER\n{amz_date}\n{scope}\n{previous_signature}\n{}",
        sha256_hex(canonical_trailers.as_bytes())
    );
    sign(key, &sts)
}

/// Compares two signatures without leaking where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `20130524T000000Z`
pub fn format_amz_date(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.format(format_description!(
        "[year][month][day]T[hour][minute][second]Z"
    ))
    .unwrap_or_default()
}

/// Parses `20130524T000000Z`.
pub fn parse_amz_date(s: &str) -> Option<OffsetDateTime> {
    time::PrimitiveDateTime::parse(
        s,
        format_description!("[year][month][day]T[hour][minute][second]Z"),
    )
    .ok()
    .map(|p| p.assume_utc())
}

/// What a client signs with.
#[derive(Debug, Clone)]
pub struct SigningParams<'a> {
    pub access_key_id: &'a str,
    pub secret: &'a str,
    pub region: &'a str,
    pub service: &'a str,
    pub time: OffsetDateTime,
}

impl SigningParams<'_> {
    fn scope(&self) -> String {
        credential_scope(&format_amz_date(self.time)[..8], self.region, self.service)
    }

    fn key(&self) -> [u8; 32] {
        signing_key(
            self.secret,
            &format_amz_date(self.time)[..8],
            self.region,
            self.service,
        )
    }
}

/// The result of signing a request's headers.
#[derive(Debug, Clone)]
pub struct SignedRequest {
    pub authorization: String,
    pub signature: String,
    pub canonical_request: String,
    pub string_to_sign: String,
}

/// Signs a request with an `Authorization` header. `headers` must already hold every
/// header to sign (`host`, `x-amz-date` = [`format_amz_date`] of `params.time`, and for
/// S3 `x-amz-content-sha256`); all of them are signed. `raw_path` and `raw_query` are as
/// they will be sent (percent-encoded).
pub fn sign_request(
    params: &SigningParams<'_>,
    method: &str,
    raw_path: &str,
    raw_query: &str,
    headers: &[(&str, &str)],
    payload_hash: &str,
) -> SignedRequest {
    let mut canon: Vec<(String, String)> = Vec::new();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        let value = canonical_header_value([value.as_bytes()]);
        match canon.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                v.push(',');
                v.push_str(&value);
            }
            None => canon.push((name, value)),
        }
    }
    canon.sort_by(|a, b| a.0.cmp(&b.0));
    let creq = canonical_request(
        method,
        &canonical_uri(raw_path),
        &canonical_query(raw_query, false),
        &canon,
        payload_hash,
    );
    let scope = params.scope();
    let sts = string_to_sign(&format_amz_date(params.time), &scope, &creq);
    let signature = sign(&params.key(), &sts);
    SignedRequest {
        authorization: format!(
            "{ALGORITHM} Credential={}/{scope}, SignedHeaders={}, Signature={signature}",
            params.access_key_id,
            signed_headers(&canon)
        ),
        signature,
        canonical_request: creq,
        string_to_sign: sts,
    }
}

/// A presigned URL's path and query (`/bucket/key?X-Amz-Algorithm=...&X-Amz-Signature=...`)
/// signing only `host`, valid for `expires_secs` seconds from `params.time`.
/// `raw_query` holds the request's own parameters, already encoded (may be empty).
pub fn presign(
    params: &SigningParams<'_>,
    method: &str,
    host: &str,
    raw_path: &str,
    raw_query: &str,
    expires_secs: u64,
) -> String {
    let credential = format!("{}/{}", params.access_key_id, params.scope());
    let mut query = String::from(raw_query);
    for (name, value) in [
        ("X-Amz-Algorithm", ALGORITHM.to_string()),
        ("X-Amz-Credential", credential),
        ("X-Amz-Date", format_amz_date(params.time)),
        ("X-Amz-Expires", expires_secs.to_string()),
        ("X-Amz-SignedHeaders", "host".to_string()),
    ] {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(name);
        query.push('=');
        query.push_str(&uri_encode(value.as_bytes(), true));
    }
    // As the verifier reads it: trimmed, inner runs of spaces collapsed.
    let canon = vec![(
        "host".to_string(),
        canonical_header_value([host.as_bytes()]),
    )];
    let creq = canonical_request(
        method,
        &canonical_uri(raw_path),
        &canonical_query(&query, true),
        &canon,
        UNSIGNED_PAYLOAD,
    );
    let sts = string_to_sign(&format_amz_date(params.time), &params.scope(), &creq);
    let signature = sign(&params.key(), &sts);
    format!("{raw_path}?{query}&X-Amz-Signature={signature}")
}

/// Encodes `data` as an aws-chunked body with signed chunks of `chunk_size` bytes
/// (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`), chained on `seed_signature`; with
/// `trailers`, as `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`, the trailers signed last.
pub fn encode_signed_chunks(
    params: &SigningParams<'_>,
    seed_signature: &str,
    data: &[u8],
    chunk_size: usize,
    trailers: &[(&str, &str)],
) -> Vec<u8> {
    let key = params.key();
    let scope = params.scope();
    let date = format_amz_date(params.time);
    let mut prev = seed_signature.to_string();
    let mut out = Vec::with_capacity(data.len() + 256);
    let chunks: Vec<&[u8]> = data.chunks(chunk_size.max(1)).chain([&[][..]]).collect();
    for chunk in chunks {
        let sig = chunk_signature(&key, &date, &scope, &prev, &sha256_hex(chunk));
        out.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        if !chunk.is_empty() || trailers.is_empty() {
            out.extend_from_slice(b"\r\n");
        }
        prev = sig;
    }
    if !trailers.is_empty() {
        let mut canonical = String::new();
        for (name, value) in trailers {
            canonical.push_str(&format!("{}:{}\n", name.to_ascii_lowercase(), value.trim()));
            out.extend_from_slice(format!("{name}:{value}\r\n").as_bytes());
        }
        let sig = trailer_signature(&key, &date, &scope, &prev, &canonical);
        out.extend_from_slice(format!("x-amz-trailer-signature:{sig}\r\n\r\n").as_bytes());
    }
    out
}

/// Encodes `data` as an unsigned aws-chunked body with trailers
/// (`STREAMING-UNSIGNED-PAYLOAD-TRAILER`), the way botocore does.
pub fn encode_unsigned_chunks(
    data: &[u8],
    chunk_size: usize,
    trailers: &[(&str, &str)],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 128);
    for chunk in data.chunks(chunk_size.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers {
        out.extend_from_slice(format!("{name}:{value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // The generic aws-sig-v4-test-suite: region us-east-1, service "service",
    // 2015-08-30T12:36:00Z, AKIDEXAMPLE.
    const SUITE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn suite_params() -> SigningParams<'static> {
        SigningParams {
            access_key_id: "AKIDEXAMPLE",
            secret: SUITE_SECRET,
            region: "us-east-1",
            service: "service",
            time: parse_amz_date("20150830T123600Z").unwrap(),
        }
    }

    fn suite_sign(
        method: &str,
        path: &str,
        query: &str,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> SignedRequest {
        let mut headers = vec![
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
        ];
        headers.extend_from_slice(extra);
        sign_request(
            &suite_params(),
            method,
            path,
            query,
            &headers,
            &sha256_hex(body),
        )
    }

    #[test]
    fn suite_get_vanilla() {
        let s = suite_sign("GET", "/", "", &[], b"");
        assert_eq!(
            s.canonical_request,
            format!(
                "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n{EMPTY_SHA256}"
            )
        );
        assert_eq!(
            s.string_to_sign,
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\nbb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
        );
        assert_eq!(
            s.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn suite_query_order_key_case_and_value() {
        let s = suite_sign("GET", "/", "Param2=value2&Param1=value1", &[], b"");
        assert_eq!(
            s.canonical_request.lines().nth(2),
            Some("Param1=value1&Param2=value2")
        );
        assert_eq!(
            sha256_hex(s.canonical_request.as_bytes()),
            "816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0"
        );
        assert_eq!(
            s.signature,
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
        let s = suite_sign("GET", "/", "Param1=value2&Param1=value1", &[], b"");
        assert_eq!(
            s.signature,
            "5772eed61e12b33fae39ee5e7012498b51d56abc0abb7c60486157bd471c4694"
        );
    }

    #[test]
    fn suite_unreserved_and_utf8() {
        let s = suite_sign(
            "GET",
            "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            "",
            &[],
            b"",
        );
        assert_eq!(
            s.signature,
            "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f"
        );
        // get-vanilla-utf8-query: "/?ሴ=bar", sent encoded.
        let s = suite_sign("GET", "/", "%E1%88%B4=bar", &[], b"");
        assert_eq!(s.canonical_request.lines().nth(2), Some("%E1%88%B4=bar"));
        assert_eq!(
            s.signature,
            "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04"
        );
        // get-utf8's canonical URI.
        assert_eq!(canonical_uri("/%E1%88%B4"), "/%E1%88%B4");
        assert_eq!(canonical_uri("/\u{1234}"), "/%E1%88%B4");
    }

    #[test]
    fn suite_headers_trim_order_and_duplicates() {
        let s = suite_sign(
            "GET",
            "/",
            "",
            &[("My-Header1", " value1"), ("My-Header2", "\"a   b   c\"")],
            b"",
        );
        assert!(
            s.canonical_request
                .contains("my-header1:value1\nmy-header2:\"a b c\"\n")
        );
        assert_eq!(
            s.signature,
            "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"
        );
        let s = suite_sign(
            "GET",
            "/",
            "",
            &[
                ("My-Header1", "value4"),
                ("My-Header1", "value1"),
                ("My-Header1", "value3"),
                ("My-Header1", "value2"),
            ],
            b"",
        );
        assert_eq!(
            s.signature,
            "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01"
        );
        let s = suite_sign(
            "GET",
            "/",
            "",
            &[
                ("My-Header1", "value2"),
                ("My-Header1", "value2"),
                ("My-Header1", "value1"),
            ],
            b"",
        );
        assert_eq!(
            s.signature,
            "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea"
        );
    }

    #[test]
    fn suite_post_x_www_form_urlencoded() {
        let s = suite_sign(
            "POST",
            "/",
            "",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            b"Param1=value1",
        );
        assert!(s.canonical_request.ends_with(
            "content-type;host;x-amz-date\n9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"
        ));
        assert_eq!(
            s.signature,
            "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
        );
    }

    // The S3 API reference examples: examplebucket, 2013-05-24, AKIAIOSFODNN7EXAMPLE.
    const S3_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn s3_params() -> SigningParams<'static> {
        SigningParams {
            access_key_id: "AKIAIOSFODNN7EXAMPLE",
            secret: S3_SECRET,
            region: "us-east-1",
            service: "s3",
            time: parse_amz_date("20130524T000000Z").unwrap(),
        }
    }

    #[test]
    fn s3_example_get_object_with_range() {
        let s = sign_request(
            &s3_params(),
            "GET",
            "/test.txt",
            "",
            &[
                ("Host", "examplebucket.s3.amazonaws.com"),
                ("Range", "bytes=0-9"),
                ("x-amz-content-sha256", EMPTY_SHA256),
                ("x-amz-date", "20130524T000000Z"),
            ],
            EMPTY_SHA256,
        );
        assert_eq!(
            s.canonical_request,
            format!(
                "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\nx-amz-content-sha256:{EMPTY_SHA256}\nx-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n{EMPTY_SHA256}"
            )
        );
        assert_eq!(
            s.string_to_sign,
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
        );
        assert_eq!(
            s.signature,
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn s3_example_put_object() {
        let body = b"Welcome to Amazon S3.";
        let hash = sha256_hex(body);
        assert_eq!(
            hash,
            "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
        );
        let s = sign_request(
            &s3_params(),
            "PUT",
            "/test$file.text",
            "",
            &[
                ("Host", "examplebucket.s3.amazonaws.com"),
                ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
                ("x-amz-date", "20130524T000000Z"),
                ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
                ("x-amz-content-sha256", &hash),
            ],
            &hash,
        );
        assert_eq!(
            s.canonical_request.lines().nth(1),
            Some("/test%24file.text")
        );
        assert_eq!(
            s.signature,
            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
        );
    }

    #[test]
    fn s3_example_get_bucket_lifecycle_and_list_objects() {
        let headers = [
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-content-sha256", EMPTY_SHA256),
        ];
        let s = sign_request(
            &s3_params(),
            "GET",
            "/",
            "lifecycle",
            &headers,
            EMPTY_SHA256,
        );
        assert_eq!(s.canonical_request.lines().nth(2), Some("lifecycle="));
        assert_eq!(
            s.signature,
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
        );
        let s = sign_request(
            &s3_params(),
            "GET",
            "/",
            "max-keys=2&prefix=J",
            &headers,
            EMPTY_SHA256,
        );
        assert_eq!(
            s.signature,
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
        );
    }

    #[test]
    fn s3_example_chunked_upload() {
        let params = s3_params();
        let s = sign_request(
            &params,
            "PUT",
            "/examplebucket/chunkObject.txt",
            "",
            &[
                ("Host", "s3.amazonaws.com"),
                ("x-amz-date", "20130524T000000Z"),
                ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
                ("x-amz-content-sha256", STREAMING_PAYLOAD),
                ("Content-Encoding", "aws-chunked"),
                ("x-amz-decoded-content-length", "66560"),
                ("Content-Length", "66824"),
            ],
            STREAMING_PAYLOAD,
        );
        assert_eq!(
            s.signature,
            "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
        );
        let key = params.key();
        let scope = "20130524/us-east-1/s3/aws4_request";
        let date = "20130524T000000Z";
        let c1 = chunk_signature(&key, date, scope, &s.signature, &sha256_hex(&[b'a'; 65536]));
        assert_eq!(
            c1,
            "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"
        );
        let c2 = chunk_signature(&key, date, scope, &c1, &sha256_hex(&[b'a'; 1024]));
        assert_eq!(
            c2,
            "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"
        );
        let c3 = chunk_signature(&key, date, scope, &c2, EMPTY_SHA256);
        assert_eq!(
            c3,
            "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"
        );
        // The whole body is the documented 66824 bytes.
        let body = encode_signed_chunks(&params, &s.signature, &[b'a'; 66560], 65536, &[]);
        assert_eq!(body.len(), 66824);
    }

    #[test]
    fn canonical_uri_encodes_once_and_never_normalises() {
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/b/a%20b"), "/b/a%20b");
        assert_eq!(canonical_uri("/b/a b"), "/b/a%20b");
        assert_eq!(canonical_uri("/b/a%2Bb+c"), "/b/a%2Bb%2Bc");
        assert_eq!(canonical_uri("//example//./x/../"), "//example//./x/../");
        assert_eq!(canonical_uri("/b/%7Etilde%2a"), "/b/~tilde%2A");
        assert_eq!(canonical_uri("/b/a%2Fb"), "/b/a/b");
    }

    #[test]
    fn canonical_query_sorts_and_encodes() {
        assert_eq!(canonical_query("b&a=1", false), "a=1&b=");
        assert_eq!(canonical_query("q=a+b&p=a%20b", false), "p=a%20b&q=a%2Bb");
        assert_eq!(
            canonical_query("prefix=a/b&delimiter=%2F", false),
            "delimiter=%2F&prefix=a%2Fb"
        );
        assert_eq!(
            canonical_query("X-Amz-Signature=abc&X-Amz-Date=1", true),
            "X-Amz-Date=1"
        );
        assert_eq!(canonical_query("a=1=2", false), "a=1%3D2");
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
