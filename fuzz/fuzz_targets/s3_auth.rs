//! S3 request authentication (`auth.rs`/`sigv4.rs`, through `wisp_objects::fuzzing`).
//!
//! The input is an HTTP request head and body as text (`GET /b/k?x=1 HTTP/1.1`, header
//! lines, an empty line, the body). Three checks:
//!  1. the request as given (`Authorization` header, SigV4 or SigV2 presigned query):
//!     verifying it, then reading its body, never panics; only the one key passes;
//!  2. the same request signed with `sigv4::sign_request` always verifies, and its body,
//!     sent as its `x-amz-content-sha256` says (aws-chunked with signed chunks and
//!     trailers, too), reads back as it was;
//!  3. the same request presigned with `sigv4::presign` verifies until it expires.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use time::{Duration, OffsetDateTime};
use wisp_objects::StaticCredentials;
use wisp_objects::fuzzing::{PayloadKind, authenticate};
use wisp_objects::sigv4::{self, SigningParams};

const KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const REGION: &str = "us-east-1";

struct Req {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn parse(data: &[u8]) -> Option<Req> {
    let split = data.windows(2).position(|w| w == b"\n\n");
    let (head, body) = match split {
        Some(i) => (&data[..i], data[i + 2..].to_vec()),
        None => (data, Vec::new()),
    };
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.lines();
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim_start().to_string()))
        .collect();
    Some(Req {
        method,
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body,
    })
}

fn parts(method: &str, uri: &str, headers: &[(String, String)]) -> Option<http::request::Parts> {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (n, v) in headers {
        let name = http::HeaderName::from_bytes(n.as_bytes()).ok()?;
        let value = http::HeaderValue::from_str(v).ok()?;
        b = b.header(name, value);
    }
    Some(b.body(()).ok()?.into_parts().0)
}

fn pieces(body: &[u8], size: usize) -> Vec<Bytes> {
    body.chunks(size.max(1))
        .map(Bytes::copy_from_slice)
        .collect()
}

fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|p| {
        let (n, v) = p.split_once('=')?;
        (n == name).then(|| v.to_string())
    })
}

fuzz_target!(|data: &[u8]| {
    let Some(req) = parse(data) else {
        return;
    };
    let creds = StaticCredentials::new().with(KEY_ID, SECRET);
    let header = |n: &str| {
        req.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    // The signing time: the request's own, so that real signed requests verify.
    let t = header("x-amz-date")
        .and_then(sigv4::parse_amz_date)
        .or_else(|| {
            query_value(&req.query, "X-Amz-Date")
                .as_deref()
                .and_then(sigv4::parse_amz_date)
        })
        .filter(|t| (1970..2200).contains(&t.year()))
        .unwrap_or_else(|| sigv4::parse_amz_date("20130524T000000Z").unwrap());
    let now = match query_value(&req.query, "Expires").and_then(|e| e.parse::<i64>().ok()) {
        Some(e) if header("authorization").is_none() && (0..7_000_000_000).contains(&e) => {
            OffsetDateTime::from_unix_timestamp(e - 600).unwrap()
        }
        _ => t + Duration::seconds(30),
    };
    let uri = if req.query.is_empty() {
        req.path.clone()
    } else {
        format!("{}?{}", req.path, req.query)
    };

    // 1. As given.
    if let Some(p) = parts(&req.method, &uri, &req.headers) {
        let suffixes = ["localhost".to_string()];
        if let Ok(auth) = authenticate(&p, &creds, now, REGION, &suffixes) {
            // (`now` is Expires - 10 min for a SigV2 URL, else 30 s after the signing time.)
            assert_eq!(auth.access_key_id(), KEY_ID);
            let _ = auth.read_payload(pieces(&req.body, 7));
            let _ = auth.read_small(pieces(&req.body, 3), 1 << 20);
        }
    }

    // The request as sent must keep its path and query for a signature to mean anything.
    let Ok(parsed) = uri.parse::<http::Uri>() else {
        return;
    };
    if parsed.path() != req.path || parsed.query().unwrap_or("") != req.query {
        return;
    }
    let params = SigningParams {
        access_key_id: KEY_ID,
        secret: SECRET,
        region: REGION,
        service: "s3",
        time: t,
    };
    let date = sigv4::format_amz_date(t);
    let own = ["authorization", "x-amz-date", "x-amz-content-sha256"];
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .filter(|(n, _)| !own.contains(&n.as_str()) && !n.is_empty())
        .cloned()
        .collect();
    if !headers.iter().any(|(n, _)| n == "host") {
        headers.push(("host".into(), "localhost:9000".into()));
    }
    let host = headers
        .iter()
        .find(|(n, _)| n == "host")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();

    // 2. Signed in the Authorization header, the body as the request says.
    let hash = match header("x-amz-content-sha256").map(str::trim) {
        Some(
            h @ (sigv4::UNSIGNED_PAYLOAD
            | sigv4::STREAMING_PAYLOAD
            | sigv4::STREAMING_PAYLOAD_TRAILER
            | sigv4::STREAMING_UNSIGNED_PAYLOAD_TRAILER),
        ) => h.to_string(),
        _ => sigv4::sha256_hex(&req.body),
    };
    headers.push(("x-amz-date".into(), date.clone()));
    headers.push(("x-amz-content-sha256".into(), hash.clone()));
    let signed_with: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let signed = sigv4::sign_request(
        &params,
        &req.method,
        &req.path,
        &req.query,
        &signed_with,
        &hash,
    );
    headers.push(("authorization".into(), signed.authorization.clone()));
    if let Some(p) = parts(&req.method, &uri, &headers) {
        let auth = authenticate(&p, &creds, t + Duration::seconds(30), REGION, &[]);
        let auth = auth.unwrap_or_else(|e| {
            panic!(
                "a request signed by sign_request does not verify: {e}\n{}",
                signed.canonical_request
            )
        });
        let trailers = [("x-amz-checksum-crc32", "AAAAAA==")];
        match (hash.as_str(), auth.payload_kind()) {
            (sigv4::UNSIGNED_PAYLOAD, PayloadKind::Unsigned) => {
                let got = auth.read_payload(pieces(&req.body, 5)).unwrap();
                assert_eq!(got.data, req.body);
            }
            (
                sigv4::STREAMING_PAYLOAD,
                PayloadKind::Chunked {
                    signed: true,
                    trailer: false,
                },
            ) => {
                let body = sigv4::encode_signed_chunks(
                    &params,
                    &signed.signature,
                    &req.body,
                    1 + req.body.len() / 3,
                    &[],
                );
                let got = auth.read_payload(pieces(&body, 11)).unwrap();
                assert_eq!(got.data, req.body);
                assert!(got.trailers.is_empty());
            }
            (
                sigv4::STREAMING_PAYLOAD_TRAILER,
                PayloadKind::Chunked {
                    signed: true,
                    trailer: true,
                },
            ) => {
                let body = sigv4::encode_signed_chunks(
                    &params,
                    &signed.signature,
                    &req.body,
                    1 + req.body.len() / 2,
                    &trailers,
                );
                let got = auth.read_payload(pieces(&body, 13)).unwrap();
                assert_eq!(got.data, req.body);
                assert_eq!(
                    got.trailers,
                    [("x-amz-checksum-crc32".to_string(), "AAAAAA==".to_string())]
                );
            }
            (
                sigv4::STREAMING_UNSIGNED_PAYLOAD_TRAILER,
                PayloadKind::Chunked {
                    signed: false,
                    trailer: true,
                },
            ) => {
                let body = sigv4::encode_unsigned_chunks(&req.body, 4, &trailers);
                let got = auth.read_payload(pieces(&body, 3)).unwrap();
                assert_eq!(got.data, req.body);
                assert_eq!(got.trailers.len(), 1);
            }
            (_, PayloadKind::Sha256) => {
                let got = auth.read_small(pieces(&req.body, 9), 1 << 20).unwrap();
                assert_eq!(got, req.body);
                let mut tampered = req.body.clone();
                tampered.push(b'!');
                assert!(auth.read_small(pieces(&tampered, 9), 1 << 20).is_err());
            }
            (h, kind) => panic!("x-amz-content-sha256 {h} gave {kind:?}"),
        }
    }

    // 3. Presigned. The request's own query must not carry presigning parameters.
    let decoded_names_clash = req.query.split('&').any(|p| {
        let name = p.split_once('=').map_or(p, |(n, _)| n);
        let name = wisp_objects::names::percent_decode(name);
        name.starts_with(b"X-Amz-")
    });
    if decoded_names_clash {
        return;
    }
    let url = sigv4::presign(&params, &req.method, &host, &req.path, &req.query, 60);
    let Some(p) = parts(&req.method, &url, &[("host".into(), host.clone())]) else {
        return;
    };
    let at = |s: i64| t + Duration::seconds(s);
    let ok = authenticate(&p, &creds, at(30), REGION, &[]);
    match ok {
        Ok(auth) => assert_eq!(auth.payload_kind(), PayloadKind::Unsigned),
        Err(e) => panic!("a presigned URL does not verify: {e}\n{url}"),
    }
    let late = authenticate(&p, &creds, at(61), REGION, &[]).unwrap_err();
    assert_eq!(late.message, "Request has expired", "{url}");
});
