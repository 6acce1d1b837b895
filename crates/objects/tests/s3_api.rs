//! The S3 API over HTTP, driven by a SigV4 client written for these tests.

mod common;

use base64::Engine;
use common::{Client, Payload, Resp, enc, enc_q, start};
use md5::Digest;
use wisp_objects::Config;

fn b64(raw: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(raw)
}

fn md5_hex(data: &[u8]) -> String {
    hex::encode(md5::Md5::digest(data))
}

fn assert_error(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "body: {}", r.text());
    assert_eq!(r.code(), code, "body: {}", r.text());
    assert!(r.xml("RequestId").is_some_and(|id| !id.is_empty()));
    assert_eq!(r.xml("RequestId").as_deref(), r.header("x-amz-request-id"));
}

#[tokio::test]
async fn put_get_range_conditional_head_delete() {
    let server = start(Config::default()).await;
    let c = server.client();
    c.create_bucket("photos").await;
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let md5 = md5::Md5::digest(&body);
    let r = c
        .send(
            "PUT",
            "/photos/dir/a%20file.bin",
            "",
            &[
                ("content-type", "image/png"),
                ("content-md5", &b64(&md5)),
                ("x-amz-meta-owner", "Ada"),
                ("cache-control", "max-age=60"),
            ],
            body.clone(),
            Payload::Signed,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let etag = format!("\"{}\"", hex::encode(md5));
    assert_eq!(r.header("etag"), Some(etag.as_str()));

    let r = c.get("/photos/dir/a%20file.bin", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body);
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(r.header("content-type"), Some("image/png"));
    assert_eq!(r.header("content-length"), Some("100000"));
    assert_eq!(r.header("x-amz-meta-owner"), Some("Ada"));
    assert_eq!(r.header("cache-control"), Some("max-age=60"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    let last_modified = r.header("last-modified").unwrap().to_string();
    assert!(last_modified.ends_with(" GMT"), "{last_modified}");

    // Ranges.
    let range = |spec: &'static str| {
        let c = c.clone();
        async move {
            c.send(
                "GET",
                "/photos/dir/a%20file.bin",
                "",
                &[("range", spec)],
                vec![],
                Payload::Signed,
            )
            .await
        }
    };
    let r = range("bytes=10-19").await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, body[10..20]);
    assert_eq!(r.header("content-range"), Some("bytes 10-19/100000"));
    let r = range("bytes=-5").await;
    assert_eq!(r.body, body[99_995..]);
    let r = range("bytes=99990-").await;
    assert_eq!(r.body, body[99_990..]);
    let r = range("bytes=100000-").await;
    assert_error(&r, 416, "InvalidRange");
    assert_eq!(r.header("content-range"), Some("bytes */100000"));

    // Conditionals.
    let cond = |name: &'static str, value: String| {
        let c = c.clone();
        async move {
            c.send(
                "GET",
                "/photos/dir/a%20file.bin",
                "",
                &[(name, value.as_str())],
                vec![],
                Payload::Signed,
            )
            .await
        }
    };
    let r = cond("if-none-match", etag.clone()).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(cond("if-none-match", "\"other\"".into()).await.status, 200);
    assert_eq!(cond("if-match", etag.clone()).await.status, 200);
    assert_error(
        &cond("if-match", "\"other\"".into()).await,
        412,
        "PreconditionFailed",
    );
    assert_eq!(
        cond("if-modified-since", last_modified.clone())
            .await
            .status,
        304
    );
    assert_error(
        &cond(
            "if-unmodified-since",
            "Mon, 12 Oct 2009 17:50:30 GMT".into(),
        )
        .await,
        412,
        "PreconditionFailed",
    );

    // HEAD carries the same headers and no body.
    let r = c
        .send(
            "HEAD",
            "/photos/dir/a%20file.bin",
            "",
            &[],
            vec![],
            Payload::Signed,
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-length"), Some("100000"));
    assert_eq!(r.header("etag"), Some(etag.as_str()));

    // A bad Content-MD5 is refused and stores nothing.
    let r = c
        .send(
            "PUT",
            "/photos/bad-md5",
            "",
            &[("content-md5", &b64(&[0u8; 16]))],
            b"data".to_vec(),
            Payload::Signed,
        )
        .await;
    assert_error(&r, 400, "BadDigest");
    assert_error(&c.get("/photos/bad-md5", "").await, 404, "NoSuchKey");

    // A body that does not match the signed SHA-256 is refused.
    let r = c
        .send(
            "PUT",
            "/photos/x",
            "",
            &[],
            b"abc".to_vec(),
            Payload::Tampered,
        )
        .await;
    assert_error(&r, 400, "XAmzContentSHA256Mismatch");
    assert_error(&c.get("/photos/x", "").await, 404, "NoSuchKey");

    // Delete, then 404, then delete again (idempotent).
    assert_eq!(c.delete("/photos/dir/a%20file.bin").await.status, 204);
    let r = c.get("/photos/dir/a%20file.bin", "").await;
    assert_error(&r, 404, "NoSuchKey");
    assert_eq!(r.xml("Key").as_deref(), Some("dir/a file.bin"));
    assert_eq!(r.header("content-type"), Some("application/xml"));
    assert_eq!(c.delete("/photos/dir/a%20file.bin").await.status, 204);
    let r = c
        .send("HEAD", "/photos/missing", "", &[], vec![], Payload::Signed)
        .await;
    assert_eq!(r.status, 404);
    assert_error(&c.get("/nobucket/k", "").await, 404, "NoSuchBucket");

    // Empty objects and unsigned payloads.
    let r = c
        .send("PUT", "/photos/empty", "", &[], vec![], Payload::Unsigned)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("etag"),
        Some("\"d41d8cd98f00b204e9800998ecf8427e\"")
    );
    let r = c.get("/photos/empty", "").await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-type"), Some("binary/octet-stream"));
}

#[tokio::test]
async fn buckets_lifecycle_and_errors() {
    let server = start(Config::default()).await;
    let c = server.client();
    c.create_bucket("alpha").await;
    assert_error(&c.put("/alpha", b"").await, 409, "BucketAlreadyOwnedByYou");
    assert_error(&c.put("/Bad_Name", b"").await, 400, "InvalidBucketName");
    let r = c
        .send(
            "PUT",
            "/beta",
            "",
            &[],
            b"<CreateBucketConfiguration><LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>".to_vec(),
            Payload::Signed,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c.get("/beta", "location").await;
    assert_eq!(r.xml("LocationConstraint"), None); // has an xmlns attribute
    assert!(
        r.text().contains(">eu-west-1</LocationConstraint>"),
        "{}",
        r.text()
    );
    let r = c.get("/alpha", "location").await;
    assert!(r.text().contains("></LocationConstraint>"), "{}", r.text());

    let r = c.get("/", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.xml_all("Name"), vec!["alpha", "beta"]);

    let r = c
        .send("HEAD", "/alpha", "", &[], vec![], Payload::Signed)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-amz-bucket-region"), Some("us-east-1"));
    let r = c
        .send("HEAD", "/gamma", "", &[], vec![], Payload::Signed)
        .await;
    assert_eq!(r.status, 404);

    assert_eq!(c.put("/alpha/k", b"v").await.status, 200);
    assert_error(&c.delete("/alpha").await, 409, "BucketNotEmpty");
    assert_eq!(c.delete("/alpha/k").await.status, 204);
    assert_eq!(c.delete("/alpha").await.status, 204);
    assert_error(&c.delete("/alpha").await, 404, "NoSuchBucket");
    assert_error(&c.put("/alpha/k", b"v").await, 404, "NoSuchBucket");
    assert_error(&c.get("/beta", "acl").await, 501, "NotImplemented");
}

#[tokio::test]
async fn authentication_failures_are_s3_errors() {
    let server = start(Config::default()).await;
    let c = server.client();
    c.create_bucket("bkt").await;
    assert_eq!(c.put("/bkt/k", b"secret data").await.status, 200);

    let mut wrong = c.clone();
    wrong.secret = "not-the-secret".into();
    let r = wrong.get("/bkt/k", "").await;
    assert_error(&r, 403, "SignatureDoesNotMatch");
    assert!(r.xml("StringToSign").is_some());
    assert!(!r.text().contains("secret data"));

    let mut unknown = c.clone();
    unknown.access_key = "NOBODY".into();
    assert_error(&unknown.get("/bkt/k", "").await, 403, "InvalidAccessKeyId");

    let mut skewed = c.clone();
    skewed.clock_offset = time::Duration::minutes(20);
    assert_error(&skewed.get("/bkt/k", "").await, 403, "RequestTimeTooSkewed");
    skewed.clock_offset = time::Duration::minutes(-20);
    assert_error(&skewed.get("/bkt/k", "").await, 403, "RequestTimeTooSkewed");
    let mut slight = c.clone();
    slight.clock_offset = time::Duration::minutes(10);
    assert_eq!(slight.get("/bkt/k", "").await.status, 200);

    // Anonymous.
    let r = reqwest::get(format!("http://{}/bkt/k", server.addr))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("<Code>AccessDenied</Code>")
    );

    assert_eq!(c.put("/bkt/k2", b"other").await.status, 200);

    // Presigned GET: works, expires, and cannot be pointed elsewhere.
    let url = c.presign("GET", "/bkt/k", 60);
    let r = reqwest::get(format!("http://{}{}", server.addr, url))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"secret data");
    let r = reqwest::get(format!(
        "http://{}{}",
        server.addr,
        url.replace("/bkt/k?", "/bkt/k2?")
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    let mut old = c.clone();
    old.clock_offset = time::Duration::minutes(-2);
    let url = old.presign("GET", "/bkt/k", 60);
    let r = reqwest::get(format!("http://{}{}", server.addr, url))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("Request has expired"));

    // Presigned PUT.
    let url = c.presign("PUT", "/bkt/presigned", 60);
    let r = c
        .http
        .put(format!("http://{}{}", server.addr, url))
        .body("via presigned url")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(c.get("/bkt/presigned", "").await.body, b"via presigned url");
}

#[tokio::test]
async fn signed_chunked_and_trailer_uploads() {
    let server = start(Config::default()).await;
    let c = server.client();
    c.create_bucket("bkt").await;
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 256) as u8).collect();
    let crc = b64(&wisp_objects::checksum::ChecksumAlgorithm::Crc32.digest(&data));
    for (i, mode) in [
        Payload::SignedChunks(65536),
        Payload::SignedChunks(1000),
        Payload::SignedChunksTrailer(65536),
        Payload::UnsignedTrailer(1024 * 1024),
        Payload::UnsignedTrailer(333),
    ]
    .into_iter()
    .enumerate()
    {
        let path = format!("/bkt/chunked-{i}");
        let r = c.send("PUT", &path, "", &[], data.clone(), mode).await;
        assert_eq!(r.status, 200, "{mode:?}: {}", r.text());
        assert_eq!(
            r.header("etag"),
            Some(format!("\"{}\"", md5_hex(&data)).as_str())
        );
        let got = c
            .send(
                "GET",
                &path,
                "",
                &[("x-amz-checksum-mode", "ENABLED")],
                vec![],
                Payload::Signed,
            )
            .await;
        assert_eq!(got.body, data, "{mode:?}");
        assert_eq!(
            got.header("content-encoding"),
            None,
            "aws-chunked is not stored"
        );
        if matches!(
            mode,
            Payload::SignedChunksTrailer(_) | Payload::UnsignedTrailer(_)
        ) {
            assert_eq!(
                got.header("x-amz-checksum-crc32"),
                Some(crc.as_str()),
                "{mode:?}"
            );
            assert_eq!(got.header("x-amz-checksum-type"), Some("FULL_OBJECT"));
        }
    }
    // A checksum header that does not match the data.
    let r = c
        .send(
            "PUT",
            "/bkt/bad-crc",
            "",
            &[("x-amz-checksum-crc32", "AAAAAA==")],
            data.clone(),
            Payload::Signed,
        )
        .await;
    assert_error(&r, 400, "BadDigest");
    // A chunk signed with another key: the seed signature is fine (same client), so
    // make the chunks wrong by signing the body with a different secret.
    let mut other = c.clone();
    other.secret = "other".into();
    let r = other
        .send(
            "PUT",
            "/bkt/bad-chunks",
            "",
            &[],
            data.clone(),
            Payload::SignedChunks(65536),
        )
        .await;
    assert_error(&r, 403, "SignatureDoesNotMatch");
    assert_error(&c.get("/bkt/bad-crc", "").await, 404, "NoSuchKey");
    // Declared decoded length larger than the data.
    let r = c
        .send(
            "PUT",
            "/bkt/short",
            "",
            &[("x-amz-sdk-checksum-algorithm", "SHA256")],
            data.clone(),
            Payload::Unsigned,
        )
        .await;
    assert_eq!(r.status, 200);
    let got = c
        .send(
            "HEAD",
            "/bkt/short",
            "",
            &[("x-amz-checksum-mode", "ENABLED")],
            vec![],
            Payload::Signed,
        )
        .await;
    assert_eq!(
        got.header("x-amz-checksum-sha256"),
        Some(b64(&wisp_objects::checksum::ChecksumAlgorithm::Sha256.digest(&data)).as_str())
    );
}

fn keys_of(r: &Resp) -> Vec<String> {
    let text = r.text();
    let mut keys = Vec::new();
    for contents in text.split("<Contents>").skip(1) {
        keys.extend(common::xml_values(contents, "Key").into_iter().take(1));
    }
    keys
}

fn prefixes_of(r: &Resp) -> Vec<String> {
    let text = r.text();
    text.split("<CommonPrefixes>")
        .skip(1)
        .flat_map(|p| common::xml_values(p, "Prefix").into_iter().take(1))
        .collect()
}

#[tokio::test]
async fn listing_with_prefix_delimiter_and_pagination() {
    let server = start(Config::default()).await;
    let c = server.client();
    c.create_bucket("lst").await;
    let keys = [
        "a/1", "a/2", "a/b/3", "a/b/4", "b/1", "c", "d", "é/x", "z z", "a+b", "A", "a/",
    ];
    for k in keys {
        assert_eq!(
            c.put(&format!("/lst/{}", enc(k)), k.as_bytes())
                .await
                .status,
            200
        );
    }
    let mut sorted: Vec<&str> = keys.to_vec();
    sorted.sort(); // byte order, as S3

    let r = c.get("/lst", "list-type=2").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(keys_of(&r), sorted);
    assert_eq!(r.xml("KeyCount").as_deref(), Some("12"));
    assert_eq!(r.xml("IsTruncated").as_deref(), Some("false"));

    let r = c.get("/lst", "list-type=2&delimiter=%2F").await;
    assert_eq!(keys_of(&r), vec!["A", "a+b", "c", "d", "z z"]);
    assert_eq!(prefixes_of(&r), vec!["a/", "b/", "é/"]);

    let r = c.get("/lst", "list-type=2&delimiter=%2F&prefix=a%2F").await;
    assert_eq!(keys_of(&r), vec!["a/", "a/1", "a/2"]);
    assert_eq!(prefixes_of(&r), vec!["a/b/"]);

    // Paginate with max-keys=2 through the delimited listing: same result in pieces.
    let mut all_keys = Vec::new();
    let mut all_prefixes = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut q = "list-type=2&delimiter=%2F&max-keys=2".to_string();
        if let Some(t) = &token {
            q.push_str(&format!("&continuation-token={}", enc_q(t)));
        }
        let r = c.get("/lst", &q).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let (k, p) = (keys_of(&r), prefixes_of(&r));
        assert!(k.len() + p.len() <= 2);
        all_keys.extend(k);
        all_prefixes.extend(p);
        pages += 1;
        if r.xml("IsTruncated").as_deref() == Some("true") {
            token = r.xml("NextContinuationToken");
        } else {
            break;
        }
    }
    assert_eq!(pages, 4);
    assert_eq!(all_keys, vec!["A", "a+b", "c", "d", "z z"]);
    assert_eq!(all_prefixes, vec!["a/", "b/", "é/"]);

    // start-after.
    let r = c.get("/lst", "list-type=2&start-after=c").await;
    assert_eq!(keys_of(&r), vec!["d", "z z", "é/x"]);

    // encoding-type=url: keys come back encoded.
    let r = c
        .get("/lst", "list-type=2&encoding-type=url&prefix=z")
        .await;
    assert_eq!(keys_of(&r), vec!["z%20z"]);

    // v1 with marker and NextMarker.
    let r = c.get("/lst", "max-keys=3").await;
    assert_eq!(keys_of(&r), vec!["A", "a+b", "a/"]);
    assert_eq!(r.xml("IsTruncated").as_deref(), Some("true"));
    assert_eq!(r.xml("NextMarker").as_deref(), Some("a/"));
    let r = c.get("/lst", "marker=a%2F&max-keys=3").await;
    assert_eq!(keys_of(&r), vec!["a/1", "a/2", "a/b/3"]);
    let r = c.get("/lst", "delimiter=%2F&marker=a%2F").await;
    assert_eq!(keys_of(&r), vec!["c", "d", "z z"]);
    assert_eq!(prefixes_of(&r), vec!["b/", "é/"]);

    assert_error(
        &c.get("/lst", "list-type=2&max-keys=abc").await,
        400,
        "InvalidArgument",
    );
    assert_error(&c.get("/nope", "list-type=2").await, 404, "NoSuchBucket");
}

async fn multipart_upload(
    c: &Client,
    path: &str,
    parts: &[Vec<u8>],
    checksum: Option<&str>,
) -> (String, Vec<String>) {
    let headers: Vec<(&str, &str)> = checksum
        .map(|a| vec![("x-amz-checksum-algorithm", a)])
        .unwrap_or_default();
    let r = c
        .send("POST", path, "uploads", &headers, vec![], Payload::Signed)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let upload_id = r.xml("UploadId").unwrap();
    let mut etags = Vec::new();
    for (i, data) in parts.iter().enumerate() {
        let q = format!("partNumber={}&uploadId={}", i + 1, upload_id);
        let r = c
            .send(
                "PUT",
                path,
                &q,
                &[],
                data.clone(),
                // CRC32 parts go as botocore sends them over TLS; others signed whole.
                match checksum {
                    None | Some("CRC32") => Payload::UnsignedTrailer(65536),
                    Some(_) => Payload::Signed,
                },
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        etags.push(r.header("etag").unwrap().to_string());
    }
    (upload_id, etags)
}

fn complete_doc(etags: &[String], numbers: &[u32]) -> Vec<u8> {
    let mut doc = String::from("<CompleteMultipartUpload>");
    for (n, e) in numbers.iter().zip(etags) {
        doc.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
            e.replace('"', "&quot;")
        ));
    }
    doc.push_str("</CompleteMultipartUpload>");
    doc.into_bytes()
}

#[tokio::test]
async fn multipart_upload_complete_abort_and_validation() {
    let server = start(Config::default()).await;
    let c = server.client();
    c.create_bucket("mpu").await;
    let p1 = vec![b'x'; 5 * 1024 * 1024];
    let p2: Vec<u8> = (0..300_000u32).map(|i| (i % 7) as u8).collect();
    let (id, etags) = multipart_upload(
        &c,
        "/mpu/big%20file",
        &[p1.clone(), p2.clone()],
        Some("CRC32"),
    )
    .await;

    // ListParts and ListMultipartUploads see it.
    let r = c.get("/mpu/big%20file", &format!("uploadId={id}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.xml_all("PartNumber"), vec!["1", "2"]);
    assert_eq!(
        r.xml_all("Size"),
        vec![p1.len().to_string(), p2.len().to_string()]
    );
    let r = c.get("/mpu", "uploads").await;
    assert_eq!(r.xml_all("UploadId"), vec![id.clone()]);
    assert_eq!(r.xml_all("Key"), vec!["big file"]);

    // Out of order, wrong ETag, unknown part.
    let r = c
        .send(
            "POST",
            "/mpu/big%20file",
            &format!("uploadId={id}"),
            &[],
            complete_doc(&[etags[1].clone(), etags[0].clone()], &[2, 1]),
            Payload::Signed,
        )
        .await;
    assert_error(&r, 400, "InvalidPartOrder");
    let r = c
        .send(
            "POST",
            "/mpu/big%20file",
            &format!("uploadId={id}"),
            &[],
            complete_doc(&["\"0000\"".into(), etags[1].clone()], &[1, 2]),
            Payload::Signed,
        )
        .await;
    assert_error(&r, 400, "InvalidPart");
    let r = c
        .send(
            "POST",
            "/mpu/big%20file",
            &format!("uploadId={id}"),
            &[],
            complete_doc(&etags, &[1, 3]),
            Payload::Signed,
        )
        .await;
    assert_error(&r, 400, "InvalidPart");

    let r = c
        .send(
            "POST",
            "/mpu/big%20file",
            &format!("uploadId={id}"),
            &[],
            complete_doc(&etags, &[1, 2]),
            Payload::Signed,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut md5s = md5::Md5::new();
    md5s.update(md5::Md5::digest(&p1));
    md5s.update(md5::Md5::digest(&p2));
    let expected = format!("\"{}-2\"", hex::encode(md5s.finalize()));
    assert_eq!(r.xml("ETag").as_deref(), Some(expected.as_str()));
    let crc = wisp_objects::checksum::ChecksumAlgorithm::Crc32;
    let mut both = crc.digest(&p1);
    both.extend(crc.digest(&p2));
    let composite = format!("{}-2", b64(&crc.digest(&both)));
    assert_eq!(r.xml("ChecksumCRC32").as_deref(), Some(composite.as_str()));

    let mut whole = p1.clone();
    whole.extend_from_slice(&p2);
    let r = c
        .send(
            "GET",
            "/mpu/big%20file",
            "",
            &[("x-amz-checksum-mode", "ENABLED")],
            vec![],
            Payload::Signed,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), whole.len());
    assert!(r.body == whole);
    assert_eq!(r.header("etag"), Some(expected.as_str()));
    assert_eq!(r.header("x-amz-checksum-crc32"), Some(composite.as_str()));
    assert_eq!(r.header("x-amz-mp-parts-count"), Some("2"));
    // A range across the part boundary, and a part by number.
    let start = p1.len() - 10;
    let spec = format!("bytes={}-{}", start, start + 19);
    let r = c
        .send(
            "GET",
            "/mpu/big%20file",
            "",
            &[("range", &spec)],
            vec![],
            Payload::Signed,
        )
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, whole[start..start + 20]);
    let r = c.get("/mpu/big%20file", "partNumber=2").await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, p2);
    // The upload is gone.
    assert_error(
        &c.get("/mpu/big%20file", &format!("uploadId={id}")).await,
        404,
        "NoSuchUpload",
    );

    // A small part that is not the last: EntityTooSmall.
    let (id, etags) = multipart_upload(
        &c,
        "/mpu/small",
        &[b"tiny".to_vec(), b"last".to_vec()],
        None,
    )
    .await;
    let r = c
        .send(
            "POST",
            "/mpu/small",
            &format!("uploadId={id}"),
            &[],
            complete_doc(&etags, &[1, 2]),
            Payload::Signed,
        )
        .await;
    assert_error(&r, 400, "EntityTooSmall");
    // Completing with only the last part is fine (the one part is the last).
    let r = c
        .send(
            "POST",
            "/mpu/small",
            &format!("uploadId={id}"),
            &[],
            complete_doc(&etags[1..], &[2]),
            Payload::Signed,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(c.get("/mpu/small", "").await.body, b"last");

    // Abort.
    let (id, _) = multipart_upload(&c, "/mpu/aborted", &[b"x".to_vec()], None).await;
    let r = c
        .send(
            "DELETE",
            "/mpu/aborted",
            &format!("uploadId={id}"),
            &[],
            vec![],
            Payload::Signed,
        )
        .await;
    assert_eq!(r.status, 204);
    let r = c
        .send(
            "DELETE",
            "/mpu/aborted",
            &format!("uploadId={id}"),
            &[],
            vec![],
            Payload::Signed,
        )
        .await;
    assert_error(&r, 404, "NoSuchUpload");
    let r = c
        .send(
            "PUT",
            "/mpu/aborted",
            &format!("partNumber=1&uploadId={id}"),
            &[],
            b"x".to_vec(),
            Payload::Signed,
        )
        .await;
    assert_error(&r, 404, "NoSuchUpload");
    let r = c
        .send(
            "PUT",
            "/mpu/aborted",
            &format!("partNumber=0&uploadId={id}"),
            &[],
            b"x".to_vec(),
            Payload::Signed,
        )
        .await;
    assert_error(&r, 400, "InvalidArgument");

    // FULL_OBJECT CRC64NVME: the full object's checksum from the parts'.
    let nv = wisp_objects::checksum::ChecksumAlgorithm::Crc64Nvme;
    let (id, etags) = multipart_upload(
        &c,
        "/mpu/full",
        &[p1.clone(), p2.clone()],
        Some("CRC64NVME"),
    )
    .await;
    let r = c
        .send(
            "POST",
            "/mpu/full",
            &format!("uploadId={id}"),
            &[],
            complete_doc(&etags, &[1, 2]),
            Payload::Signed,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.xml("ChecksumCRC64NVME"), Some(b64(&nv.digest(&whole))));
    assert_eq!(r.xml("ChecksumType").as_deref(), Some("FULL_OBJECT"));

    // UploadPartCopy from an existing object, with a range.
    let r = c
        .send(
            "POST",
            "/mpu/copied",
            "uploads",
            &[],
            vec![],
            Payload::Signed,
        )
        .await;
    let id = r.xml("UploadId").unwrap();
    let r = c
        .send(
            "PUT",
            "/mpu/copied",
            &format!("partNumber=1&uploadId={id}"),
            &[
                ("x-amz-copy-source", "/mpu/big%20file"),
                ("x-amz-copy-source-range", "bytes=0-5242879"),
            ],
            vec![],
            Payload::Signed,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let e1 = r.xml("ETag").unwrap();
    let r = c
        .send(
            "PUT",
            "/mpu/copied",
            &format!("partNumber=2&uploadId={id}"),
            &[],
            b"tail".to_vec(),
            Payload::Signed,
        )
        .await;
    let e2 = r.header("etag").unwrap().to_string();
    let r = c
        .send(
            "POST",
            "/mpu/copied",
            &format!("uploadId={id}"),
            &[],
            complete_doc(&[e1, e2], &[1, 2]),
            Payload::Signed,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = c.get("/mpu/copied", "").await.body;
    assert_eq!(got.len(), p1.len() + 4);
    assert!(got[..p1.len()] == p1[..] && &got[p1.len()..] == b"tail");
}

#[tokio::test]
async fn copy_object_and_batch_delete() {
    let server = start(Config::default()).await;
    let c = server.client();
    c.create_bucket("src").await;
    c.create_bucket("dst").await;
    let r = c
        .send(
            "PUT",
            "/src/orig%2Bnal.txt",
            "",
            &[("content-type", "text/plain"), ("x-amz-meta-color", "blue")],
            b"copy me".to_vec(),
            Payload::Signed,
        )
        .await;
    assert_eq!(r.status, 200);
    let etag = r.header("etag").unwrap().to_string();

    let r = c
        .send(
            "PUT",
            "/dst/copy",
            "",
            &[("x-amz-copy-source", "/src/orig%2Bnal.txt")],
            vec![],
            Payload::Signed,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.xml("ETag").as_deref(), Some(etag.as_str()));
    let r = c.get("/dst/copy", "").await;
    assert_eq!(r.body, b"copy me");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("x-amz-meta-color"), Some("blue"));

    let r = c
        .send(
            "PUT",
            "/dst/replaced",
            "",
            &[
                ("x-amz-copy-source", "src/orig%2Bnal.txt"),
                ("x-amz-metadata-directive", "REPLACE"),
                ("x-amz-meta-color", "red"),
                ("content-type", "application/json"),
            ],
            vec![],
            Payload::Signed,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c.get("/dst/replaced", "").await;
    assert_eq!(r.header("x-amz-meta-color"), Some("red"));
    assert_eq!(r.header("content-type"), Some("application/json"));

    let r = c
        .send(
            "PUT",
            "/src/orig%2Bnal.txt",
            "",
            &[("x-amz-copy-source", "/src/orig%2Bnal.txt")],
            vec![],
            Payload::Signed,
        )
        .await;
    assert_error(&r, 400, "InvalidRequest");
    let r = c
        .send(
            "PUT",
            "/dst/x",
            "",
            &[("x-amz-copy-source", "/src/missing")],
            vec![],
            Payload::Signed,
        )
        .await;
    assert_error(&r, 404, "NoSuchKey");
    let r = c
        .send(
            "PUT",
            "/dst/x",
            "",
            &[
                ("x-amz-copy-source", "/src/orig%2Bnal.txt"),
                ("x-amz-copy-source-if-match", "\"nope\""),
            ],
            vec![],
            Payload::Signed,
        )
        .await;
    assert_error(&r, 412, "PreconditionFailed");

    // Conditional create.
    let r = c
        .send(
            "PUT",
            "/dst/copy",
            "",
            &[("if-none-match", "*")],
            b"new".to_vec(),
            Payload::Signed,
        )
        .await;
    assert_error(&r, 412, "PreconditionFailed");

    // DeleteObjects with Content-MD5, quiet off.
    let doc = b"<Delete><Object><Key>copy</Key></Object><Object><Key>replaced</Key></Object><Object><Key>never-existed</Key></Object></Delete>".to_vec();
    let md5 = b64(&md5::Md5::digest(&doc));
    let r = c
        .send(
            "POST",
            "/dst",
            "delete",
            &[("content-md5", &md5)],
            doc,
            Payload::Signed,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.xml_all("Key"), vec!["copy", "replaced", "never-existed"]);
    assert_error(&c.get("/dst/copy", "").await, 404, "NoSuchKey");
    let r = c
        .send(
            "POST",
            "/dst",
            "delete",
            &[],
            b"<Delete><Object>".to_vec(),
            Payload::Signed,
        )
        .await;
    assert_error(&r, 400, "MalformedXML");
}

#[tokio::test]
async fn virtual_hosted_and_nested_routers() {
    let server = start(Config::default()).await;
    let mut c = server.client();
    c.create_bucket("vhost").await;
    c.host = Some(format!("vhost.localhost:{}", server.addr.port()));
    let r = c.put("/dir/key%20one", b"vh").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c.get("/", "list-type=2").await;
    assert_eq!(keys_of(&r), vec!["dir/key one"]);
    c.host = None;
    assert_eq!(c.get("/vhost/dir/key%20one", "").await.body, b"vh");

    // Nested under /s3: signatures cover the full path the client used.
    let nested = common::start_with(Config::default(), "/s3").await;
    let mut c = nested.client();
    c.prefix = "/s3".into();
    c.create_bucket("nst").await;
    assert_eq!(c.put("/nst/k", b"nested").await.status, 200);
    assert_eq!(c.get("/nst/k", "").await.body, b"nested");
    let r = c.get("/nst", "list-type=2").await;
    assert_eq!(keys_of(&r), vec!["k"]);
}

#[tokio::test]
async fn limits_and_missing_length() {
    let config = Config {
        max_object_size: 1000,
        ..Config::default()
    };
    let server = start(config).await;
    let c = server.client();
    c.create_bucket("lim").await;
    assert_eq!(c.put("/lim/ok", &[1u8; 1000]).await.status, 200);
    assert_error(
        &c.put("/lim/big", &[1u8; 1001]).await,
        400,
        "EntityTooLarge",
    );
    // Chunked without a decoded length: the limit applies while streaming.
    let r = c
        .send(
            "PUT",
            "/lim/big2",
            "",
            &[],
            vec![7u8; 5000],
            Payload::UnsignedTrailer(100),
        )
        .await;
    assert_error(&r, 400, "EntityTooLarge");
    let long_key = format!("/lim/{}", "k".repeat(1025));
    assert_error(&c.put(&long_key, b"x").await, 400, "KeyTooLongError");
    let ok_key = format!("/lim/{}", "é".repeat(512));
    assert_eq!(c.put(&enc(&ok_key), b"x").await.status, 200);
}

/// Random keys (any UTF-8 but `.`/`..` segments, which HTTP clients resolve away) go
/// in and come back out byte for byte, through the signed path, GET, and a url-encoded
/// listing in UTF-8 byte order.
#[test]
fn random_keys_round_trip_over_http() {
    use proptest::prelude::*;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(start(Config::default()));
    let c = server.client();
    rt.block_on(c.create_bucket("prop"));
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 24,
        ..proptest::test_runner::Config::default()
    });
    let key = "[a/ é+%?#&=~\u{1F600}\u{1}\t]{1,10}|\\PC{1,20}"
        .prop_filter("no dot segments", |k: &String| {
            !k.split('/').any(|s| s == "." || s == "..")
        });
    let keys = proptest::collection::btree_set(key, 1..6);
    runner
        .run(&keys, |keys| {
            rt.block_on(async {
                for k in &keys {
                    let r = c.put(&format!("/prop/{}", enc(k)), k.as_bytes()).await;
                    assert_eq!(r.status, 200, "put {k:?}: {}", r.text());
                    let r = c.get(&format!("/prop/{}", enc(k)), "").await;
                    assert_eq!(r.body, k.as_bytes(), "get {k:?}");
                }
                let r = c.get("/prop", "list-type=2&encoding-type=url").await;
                let listed: Vec<String> = keys_of(&r)
                    .iter()
                    .map(|k| String::from_utf8(wisp_objects::names::percent_decode(k)).unwrap())
                    .collect();
                let expected: Vec<String> = keys.iter().cloned().collect();
                assert_eq!(listed, expected);
                for k in &keys {
                    assert_eq!(c.delete(&format!("/prop/{}", enc(k))).await.status, 204);
                }
            });
            Ok(())
        })
        .unwrap();
}
