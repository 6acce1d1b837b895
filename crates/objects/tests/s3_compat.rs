//! Behaviours where S3 (AWS's answers, and the ceph/s3-tests cases named in each test)
//! decides what a client sees: presigned URL bounds, signing regions, repeated
//! completions, part numbers, listings, versions, CORS and browser POST uploads.

mod common;

use common::{Payload, Resp, start};
use wisp_objects::Config;

fn assert_error(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "body: {}", r.text());
    assert_eq!(r.code(), code, "body: {}", r.text());
}

async fn raw_get(addr: std::net::SocketAddr, path_and_query: &str) -> Resp {
    let r = reqwest::get(format!("http://{addr}{path_and_query}"))
        .await
        .unwrap();
    Resp {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.bytes().await.unwrap().to_vec(),
    }
}

// ceph/s3-tests test_object_raw_get_x_amz_expires_out_range_zero: a URL presigned for
// 0 seconds has expired (403 AccessDenied), it is not malformed (400).
#[tokio::test]
async fn an_expired_presigned_url_is_403_access_denied() {
    let server = start(Config::default()).await;
    let c = server.client();
    c.create_bucket("bkt").await;
    assert_eq!(c.put("/bkt/k", b"data").await.status, 200);
    let mut earlier = c.clone();
    earlier.clock_offset = time::Duration::seconds(-2);
    let url = earlier.presign("GET", "/bkt/k", 0);
    let r = raw_get(server.addr, &url).await;
    assert_error(&r, 403, "AccessDenied");
    assert_eq!(r.xml("Message").as_deref(), Some("Request has expired"));
    // Over a week is malformed, as S3 says.
    let r = raw_get(server.addr, &c.presign("GET", "/bkt/k", 604_801)).await;
    assert_error(&r, 400, "AuthorizationQueryParametersError");
    assert_eq!(
        raw_get(server.addr, &c.presign("GET", "/bkt/k", 604_800))
            .await
            .status,
        200
    );
}

// S3 wants the bucket's region in the credential scope and says which one it is.
#[tokio::test]
async fn requests_signed_for_another_region_are_refused_naming_the_right_one() {
    let server = start(Config {
        region: "eu-west-1".into(),
        ..Config::default()
    })
    .await;
    let mut c = server.client();
    c.region = "eu-west-1".into();
    c.create_bucket("bkt").await;
    let mut elsewhere = c.clone();
    elsewhere.region = "us-east-1".into();
    let r = elsewhere.get("/bkt", "").await;
    assert_error(&r, 400, "AuthorizationHeaderMalformed");
    assert_eq!(r.xml("Region").as_deref(), Some("eu-west-1"));
    assert_eq!(r.header("x-amz-bucket-region"), Some("eu-west-1"));
    assert_eq!(
        r.xml("Message").as_deref(),
        Some(
            "The authorization header is malformed; the region 'us-east-1' is wrong; expecting 'eu-west-1'"
        )
    );
    let r = raw_get(server.addr, &elsewhere.presign("GET", "/bkt", 60)).await;
    assert_error(&r, 400, "AuthorizationQueryParametersError");
    assert_eq!(r.xml("Region").as_deref(), Some("eu-west-1"));
    let r = c
        .send("GET", "/bkt", "list-type=2", &[], vec![], Payload::Signed)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Starts a multipart upload at `path`, uploads `parts`, and returns the upload id and
/// the CompleteMultipartUpload document naming them all.
async fn upload_parts(c: &common::Client, path: &str, parts: &[Vec<u8>]) -> (String, Vec<u8>) {
    let r = c
        .send("POST", path, "uploads", &[], vec![], Payload::Signed)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.xml("UploadId").unwrap();
    let mut doc = String::from("<CompleteMultipartUpload>");
    for (i, data) in parts.iter().enumerate() {
        let q = format!("partNumber={}&uploadId={id}", i + 1);
        let r = c
            .send("PUT", path, &q, &[], data.clone(), Payload::Signed)
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        doc.push_str(&format!(
            "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
            i + 1,
            r.header("etag").unwrap().replace('"', "&quot;")
        ));
    }
    doc.push_str("</CompleteMultipartUpload>");
    (id, doc.into_bytes())
}

fn small_parts_config() -> Config {
    Config {
        min_part_size: 1,
        ..Config::default()
    }
}

// ceph/s3-tests test_multipart_get_part ("request PartNumber out of range"). S3 answers
// 416 InvalidPartNumber with the part count (RGW: 400 InvalidPart).
#[tokio::test]
async fn part_numbers_past_the_last_part_are_invalid_part_number() {
    let server = start(small_parts_config()).await;
    let c = server.client();
    c.create_bucket("parts").await;
    let (id, doc) = upload_parts(
        &c,
        "/parts/mp",
        &[b"one".to_vec(), b"two".to_vec(), b"three".to_vec()],
    )
    .await;
    let q = format!("uploadId={id}");
    assert_eq!(
        c.send("POST", "/parts/mp", &q, &[], doc, Payload::Signed)
            .await
            .status,
        200
    );
    let r = c.get("/parts/mp", "partNumber=3").await;
    assert_eq!((r.status, r.body.as_slice()), (206, b"three".as_slice()));
    assert_eq!(r.header("x-amz-mp-parts-count"), Some("3"));
    let r = c.get("/parts/mp", "partNumber=4").await;
    assert_error(&r, 416, "InvalidPartNumber");
    assert_eq!(
        r.xml("Message").as_deref(),
        Some("The requested partnumber is not satisfiable")
    );
    assert_eq!(r.xml("PartNumberRequested").as_deref(), Some("4"));
    assert_eq!(r.xml("ActualPartCount").as_deref(), Some("3"));
    // A plain object is one part.
    assert_eq!(c.put("/parts/plain", b"whole").await.status, 200);
    assert_eq!(c.get("/parts/plain", "partNumber=1").await.body, b"whole");
    let r = c.get("/parts/plain", "partNumber=2").await;
    assert_error(&r, 416, "InvalidPartNumber");
    assert_eq!(r.xml("ActualPartCount").as_deref(), Some("1"));
    // Out of 1..=10000 is a bad argument; with a Range it is ambiguous (S3: 400).
    assert_error(
        &c.get("/parts/mp", "partNumber=0").await,
        400,
        "InvalidArgument",
    );
    let r = c
        .send(
            "GET",
            "/parts/mp",
            "partNumber=1",
            &[("range", "bytes=0-1")],
            vec![],
            Payload::Signed,
        )
        .await;
    assert_error(&r, 400, "InvalidRequest");
}

// ceph/s3-tests test_bucket_list_delimiter_empty, test_bucket_listv2_continuationtoken_empty
// and test_bucket_list_prefix_basic (as boto3 sees it: it always sends encoding-type=url).
#[tokio::test]
async fn listing_prefix_delimiter_and_token_edge_cases() {
    let server = start(Config::default()).await;
    let c = server.client();
    c.create_bucket("lst").await;
    for k in ["a b/1", "a b/2", "bar", "baz"] {
        assert_eq!(
            c.put(&format!("/lst/{}", common::enc(k)), b"x")
                .await
                .status,
            200
        );
    }
    // v1 with encoding-type=url: keys, markers and delimiter are encoded, the Prefix not.
    let r = c
        .get("/lst", "encoding-type=url&prefix=a%20b%2F&delimiter=%2F")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.xml("Prefix").as_deref(), Some("a b/"), "{}", r.text());
    assert_eq!(r.xml_all("Key"), vec!["a%20b/1", "a%20b/2"]);
    assert_eq!(r.xml("Delimiter").as_deref(), Some("/"));
    // v2 encodes its Prefix (boto3 decodes it there).
    let r = c
        .get("/lst", "list-type=2&encoding-type=url&prefix=a%20b%2F")
        .await;
    assert_eq!(r.xml("Prefix").as_deref(), Some("a%20b/"), "{}", r.text());
    // An empty delimiter is not echoed, in either version.
    for q in ["delimiter=", "list-type=2&delimiter="] {
        let r = c.get("/lst", q).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(!r.text().contains("<Delimiter>"), "{q}: {}", r.text());
        assert_eq!(r.xml_all("Key").len(), 4);
    }
    // An empty continuation token is none: the whole listing, the token echoed.
    let r = c.get("/lst", "list-type=2&continuation-token=").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.xml("ContinuationToken").as_deref(), Some(""));
    assert_eq!(r.xml("IsTruncated").as_deref(), Some("false"));
    assert_eq!(r.xml_all("Key").len(), 4);
    // A token that is not one of ours is still refused.
    assert_error(
        &c.get("/lst", "list-type=2&continuation-token=bogus").await,
        400,
        "InvalidArgument",
    );
}

// ceph/s3-tests test_multipart_upload and test_multipart_upload_small ("check extra
// client.complete_multipart_upload"): completing an upload again with the same parts
// answers as the first time, as S3 does for SDK retries.
#[tokio::test]
async fn a_repeated_completion_gets_the_same_answer() {
    let mut server = start(small_parts_config()).await;
    let c = server.client();
    c.create_bucket("mpu").await;
    let (id, doc) = upload_parts(&c, "/mpu/big%20one", &[b"ab".to_vec(), b"cd".to_vec()]).await;
    let q = format!("uploadId={id}");
    let first = c
        .send(
            "POST",
            "/mpu/big%20one",
            &q,
            &[],
            doc.clone(),
            Payload::Signed,
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.text());
    let again = c
        .send(
            "POST",
            "/mpu/big%20one",
            &q,
            &[],
            doc.clone(),
            Payload::Signed,
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.text());
    for tag in ["ETag", "Location", "Bucket", "Key"] {
        assert_eq!(again.xml(tag), first.xml(tag), "{tag}");
    }
    assert!(first.xml("ETag").unwrap().ends_with("-2\""));
    assert_eq!(c.get("/mpu/big%20one", "").await.body, b"abcd");
    // Each answer was a success, so each handed on its event (the first may have been
    // a 503 whose retry this is).
    let mut completions = 0;
    while let Ok(e) = server.events.try_recv() {
        if e.kind
            == wisp_objects::EventKind::ObjectCreated(
                wisp_objects::CreatedKind::CompleteMultipartUpload,
            )
        {
            assert_eq!(e.key, "big one");
            completions += 1;
        }
    }
    assert_eq!(completions, 2);

    // Other parts than the completion named: the upload is gone.
    let other = String::from_utf8(doc.clone())
        .unwrap()
        .replace("<PartNumber>2</PartNumber>", "<PartNumber>3</PartNumber>");
    let r = c
        .send(
            "POST",
            "/mpu/big%20one",
            &q,
            &[],
            other.into_bytes(),
            Payload::Signed,
        )
        .await;
    assert_error(&r, 404, "NoSuchUpload");
    // Another key with that upload id: no such upload either.
    let r = c
        .send("POST", "/mpu/other", &q, &[], doc.clone(), Payload::Signed)
        .await;
    assert_error(&r, 404, "NoSuchUpload");
    // Once the object is overwritten, the completion is history.
    assert_eq!(c.put("/mpu/big%20one", b"replaced").await.status, 200);
    let r = c
        .send(
            "POST",
            "/mpu/big%20one",
            &q,
            &[],
            doc.clone(),
            Payload::Signed,
        )
        .await;
    assert_error(&r, 404, "NoSuchUpload");
    assert_eq!(c.get("/mpu/big%20one", "").await.body, b"replaced");
    // Deleted: the same.
    let (id, doc) = upload_parts(&c, "/mpu/gone", &[b"x".to_vec()]).await;
    let q = format!("uploadId={id}");
    let r = c
        .send("POST", "/mpu/gone", &q, &[], doc.clone(), Payload::Signed)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(c.delete("/mpu/gone").await.status, 204);
    let r = c
        .send("POST", "/mpu/gone", &q, &[], doc, Payload::Signed)
        .await;
    assert_error(&r, 404, "NoSuchUpload");
}

/// Fails the first event it gets, acknowledges the others; forwards them all.
struct FailFirst {
    failed: std::sync::atomic::AtomicBool,
    forward: tokio::sync::mpsc::UnboundedSender<wisp_objects::ObjectEvent>,
}

impl wisp_objects::EventSink for FailFirst {
    fn send(&self, event: wisp_objects::ObjectEvent) -> wisp_objects::Ack {
        let _ = self.forward.send(event);
        if self.failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            wisp_objects::Ack::done()
        } else {
            wisp_objects::Ack::failed("the event store is closed")
        }
    }
}

// The completion whose event was not handed on is answered 503; the client's retry,
// answered with success, hands the event on (the promise of a 200).
#[tokio::test]
async fn a_completion_retried_after_a_503_triggers_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(
        wisp_objects::ObjectStore::open(dir.path().join("objects"), small_parts_config()).unwrap(),
    );
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let sink = std::sync::Arc::new(FailFirst {
        failed: false.into(),
        forward: tx,
    });
    let creds = std::sync::Arc::new(
        wisp_objects::StaticCredentials::new().with(common::ACCESS_KEY, common::SECRET),
    );
    let app = wisp_objects::router(store.clone(), creds, sink.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let c = common::Client::new(addr);
    c.create_bucket("bkt").await;
    let (id, doc) = upload_parts(&c, "/bkt/k", &[b"data".to_vec()]).await;
    let q = format!("uploadId={id}");
    let r = c
        .send("POST", "/bkt/k", &q, &[], doc.clone(), Payload::Signed)
        .await;
    assert_error(&r, 503, "ServiceUnavailable");
    let r = c
        .send("POST", "/bkt/k", &q, &[], doc, Payload::Signed)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut sent = Vec::new();
    while let Ok(e) = events.try_recv() {
        sent.push((e.kind.event_name(), e.key));
    }
    let completed = ("ObjectCreated:CompleteMultipartUpload", "k".to_string());
    assert_eq!(sent, vec![completed.clone(), completed]);
}

// What ListObjectVersions answers for an unversioned bucket (s3-tests has no such case;
// it is what `aws s3api list-object-versions` and boto3's
// `bucket.object_versions.delete()` see on S3 before versioning is ever enabled).
#[tokio::test]
async fn object_versions_of_an_unversioned_bucket_are_null_and_latest() {
    let server = start(Config::default()).await;
    let c = server.client();
    c.create_bucket("ver").await;
    for k in ["a", "b b", "dir/x", "dir/y", "z"] {
        let path = format!("/ver/{}", common::enc(k));
        assert_eq!(c.put(&path, k.as_bytes()).await.status, 200);
    }
    let r = c.get("/ver", "versions").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("<ListVersionsResult"), "{}", r.text());
    assert_eq!(r.xml_all("Key"), vec!["a", "b b", "dir/x", "dir/y", "z"]);
    assert_eq!(r.xml_all("VersionId"), vec!["null"; 5]);
    assert_eq!(r.xml_all("IsLatest"), vec!["true"; 5]);
    assert_eq!(r.xml("IsTruncated").as_deref(), Some("false"));
    assert!(!r.text().contains("<DeleteMarker>"));
    let etag = format!(
        "\"{}\"",
        hex::encode(<md5::Md5 as md5::Digest>::digest(b"a"))
    );
    assert_eq!(r.xml("ETag"), Some(etag));

    // Prefix and delimiter, url-encoded when asked.
    let r = c
        .get("/ver", "versions&delimiter=%2F&encoding-type=url")
        .await;
    assert_eq!(r.xml_all("Key"), vec!["a", "b%20b", "z"]);
    assert_eq!(
        common::xml_values(&r.text(), "CommonPrefixes"),
        vec!["<Prefix>dir/</Prefix>"]
    );
    let r = c.get("/ver", "versions&prefix=dir%2F").await;
    assert_eq!(r.xml_all("Key"), vec!["dir/x", "dir/y"]);

    // Pages of two, resuming at NextKeyMarker / NextVersionIdMarker.
    let mut keys = Vec::new();
    let mut query = String::from("versions&max-keys=2");
    for _ in 0..10 {
        let r = c.get("/ver", &query).await;
        assert_eq!(r.status, 200, "{}", r.text());
        keys.extend(r.xml_all("Key"));
        if r.xml("IsTruncated").as_deref() == Some("false") {
            break;
        }
        assert_eq!(r.xml("NextVersionIdMarker").as_deref(), Some("null"));
        query = format!(
            "versions&max-keys=2&key-marker={}&version-id-marker=null",
            common::enc_q(&r.xml("NextKeyMarker").unwrap())
        );
    }
    assert_eq!(keys, vec!["a", "b b", "dir/x", "dir/y", "z"]);
    // A common prefix as the marker skips all under it.
    let r = c
        .get("/ver", "versions&delimiter=%2F&key-marker=dir%2F")
        .await;
    assert_eq!(r.xml_all("Key"), vec!["z"]);

    // Markers S3 refuses.
    assert_error(
        &c.get("/ver", "versions&version-id-marker=null").await,
        400,
        "InvalidArgument",
    );
    assert_error(
        &c.get(
            "/ver",
            "versions&key-marker=a&version-id-marker=3HL4kqtJlcpXroDTDmJ",
        )
        .await,
        400,
        "InvalidArgument",
    );

    // The null version is the object: read it, delete it.
    assert_eq!(c.get("/ver/a", "versionId=null").await.body, b"a");
    assert_error(
        &c.get("/ver/a", "versionId=3HL4kqtJlcpXroDTDmJ").await,
        400,
        "InvalidArgument",
    );
    let r = c
        .send(
            "DELETE",
            "/ver/a",
            "versionId=null",
            &[],
            vec![],
            Payload::Signed,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(r.header("x-amz-version-id"), Some("null"));
    assert_error(&c.get("/ver/a", "").await, 404, "NoSuchKey");
    let r = c
        .send(
            "DELETE",
            "/ver/z",
            "versionId=other",
            &[],
            vec![],
            Payload::Signed,
        )
        .await;
    assert_error(&r, 400, "InvalidArgument");
    assert_eq!(c.get("/ver/z", "").await.status, 200);

    // DeleteObjects with the null version id, as tools that empty buckets send it.
    let doc = b"<Delete><Object><Key>b b</Key><VersionId>null</VersionId></Object>\
        <Object><Key>z</Key><VersionId>other</VersionId></Object>\
        <Object><Key>dir/x</Key></Object></Delete>"
        .to_vec();
    let r = c
        .send("POST", "/ver", "delete", &[], doc, Payload::Signed)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let deleted = common::xml_values(&r.text(), "Deleted");
    assert_eq!(
        deleted,
        vec![
            "<Key>b b</Key><VersionId>null</VersionId>",
            "<Key>dir/x</Key>"
        ]
    );
    let errors = common::xml_values(&r.text(), "Error");
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].contains("<Key>z</Key><VersionId>other</VersionId>"),
        "{}",
        errors[0]
    );
    let r = c.get("/ver", "versions").await;
    assert_eq!(r.xml_all("Key"), vec!["dir/y", "z"]);
    // An empty bucket lists no versions.
    c.create_bucket("empty").await;
    let r = c.get("/empty", "versions").await;
    assert_eq!(r.status, 200);
    assert!(r.xml_all("Key").is_empty());
    assert_error(&c.get("/nobucket", "versions").await, 404, "NoSuchBucket");
}

async fn raw(
    method: &str,
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Resp {
    let mut rb =
        reqwest::Client::new().request(method.parse().unwrap(), format!("http://{addr}{path}"));
    for (n, v) in headers {
        rb = rb.header(*n, *v);
    }
    let r = rb.send().await.unwrap();
    Resp {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.bytes().await.unwrap().to_vec(),
    }
}

fn allowed(r: &Resp) -> (Option<&str>, Option<&str>) {
    (
        r.header("access-control-allow-origin"),
        r.header("access-control-allow-methods"),
    )
}

// ceph/s3-tests test_set_cors, test_cors_origin_response, test_cors_origin_wildcard and
// test_cors_header_option, with S3's error codes.
#[tokio::test]
async fn bucket_cors_rules_answer_preflights_and_actual_requests() {
    let server = start(Config::default()).await;
    let c = server.client();
    c.create_bucket("web").await;
    assert_eq!(c.put("/web/bar", b"data").await.status, 200);
    let r = c.get("/web", "cors").await;
    assert_error(&r, 404, "NoSuchCORSConfiguration");
    // Preflights of a bucket without CORS, and incomplete ones.
    let r = raw("OPTIONS", server.addr, "/web/bar", &[]).await;
    assert_error(&r, 400, "BadRequest");
    let r = raw(
        "OPTIONS",
        server.addr,
        "/web/bar",
        &[("origin", "foo.suffix")],
    )
    .await;
    assert_error(&r, 400, "BadRequest");
    let preflight = [
        ("origin", "foo.suffix"),
        ("access-control-request-method", "GET"),
    ];
    let r = raw("OPTIONS", server.addr, "/web/bar", &preflight).await;
    assert_error(&r, 403, "AccessForbidden");

    let doc = "<CORSConfiguration>\
        <CORSRule><AllowedMethod>GET</AllowedMethod><AllowedOrigin>*suffix</AllowedOrigin>\
          <ExposeHeader>ETag</ExposeHeader><ExposeHeader>x-amz-meta-owner</ExposeHeader><MaxAgeSeconds>600</MaxAgeSeconds></CORSRule>\
        <CORSRule><AllowedMethod>GET</AllowedMethod><AllowedOrigin>start*end</AllowedOrigin></CORSRule>\
        <CORSRule><AllowedMethod>GET</AllowedMethod><AllowedOrigin>prefix*</AllowedOrigin></CORSRule>\
        <CORSRule><ID>puts</ID><AllowedMethod>PUT</AllowedMethod><AllowedOrigin>*.put</AllowedOrigin>\
          <AllowedHeader>content-*</AllowedHeader><AllowedHeader>x-amz-date</AllowedHeader></CORSRule>\
        </CORSConfiguration>";
    let r = c
        .send(
            "PUT",
            "/web",
            "cors",
            &[],
            doc.as_bytes().to_vec(),
            Payload::Signed,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c.get("/web", "cors").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.xml_all("AllowedOrigin"),
        vec!["*suffix", "start*end", "prefix*", "*.put"]
    );
    assert_eq!(r.xml("ID").as_deref(), Some("puts"));
    assert_eq!(r.xml("MaxAgeSeconds").as_deref(), Some("600"));

    // Preflights, as test_cors_origin_response sends them.
    for (origin, method, status, allow) in [
        ("foo.suffix", "GET", 200, Some("foo.suffix")),
        ("foo.bar", "GET", 403, None),
        ("foo.suffix.get", "GET", 403, None),
        ("startend", "GET", 200, Some("startend")),
        ("start12end", "GET", 200, Some("start12end")),
        ("0start12end", "GET", 403, None),
        ("prefix.suffix", "GET", 200, Some("prefix.suffix")),
        ("bla.prefix", "GET", 403, None),
        ("foo.put", "GET", 403, None),
        ("foo.put", "PUT", 200, Some("foo.put")),
    ] {
        let h = [
            ("origin", origin),
            ("access-control-request-method", method),
        ];
        let r = raw("OPTIONS", server.addr, "/web/bar", &h).await;
        assert_eq!(r.status, status, "{origin} {method}: {}", r.text());
        assert_eq!(r.header("access-control-allow-origin"), allow, "{origin}");
        if status == 403 {
            assert_eq!(r.code(), "AccessForbidden");
            assert!(
                r.text()
                    .contains("CORSResponse: This CORS request is not allowed.")
            );
        }
    }
    let r = raw("OPTIONS", server.addr, "/web/bar", &preflight).await;
    assert_eq!(allowed(&r), (Some("foo.suffix"), Some("GET")));
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("ETag, x-amz-meta-owner")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert!(r.header("vary").is_some_and(|v| v.contains("Origin")));
    // Requested headers must each be allowed; they are echoed back.
    let h = [
        ("origin", "a.put"),
        ("access-control-request-method", "PUT"),
        ("access-control-request-headers", "Content-Type, X-Amz-Date"),
    ];
    let r = raw("OPTIONS", server.addr, "/web/new", &h).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("content-type, x-amz-date")
    );
    let h = [
        ("origin", "a.put"),
        ("access-control-request-method", "PUT"),
        ("access-control-request-headers", "x-amz-meta-secret"),
    ];
    assert_error(
        &raw("OPTIONS", server.addr, "/web/new", &h).await,
        403,
        "AccessForbidden",
    );

    // Actual requests: the matching rule's headers, on errors too; none without a match.
    let get = |origin: &'static str| {
        let c = c.clone();
        async move {
            c.send(
                "GET",
                "/web/bar",
                "",
                &[("origin", origin)],
                vec![],
                Payload::Signed,
            )
            .await
        }
    };
    let r = get("foo.suffix").await;
    assert_eq!(r.status, 200);
    assert_eq!(allowed(&r), (Some("foo.suffix"), Some("GET")));
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("ETag, x-amz-meta-owner")
    );
    assert_eq!(allowed(&get("foo.bar").await), (None, None));
    assert_eq!(
        allowed(&get("start1end").await),
        (Some("start1end"), Some("GET"))
    );
    let r = c.get("/web/bar", "").await;
    assert_eq!(allowed(&r), (None, None));
    let r = c
        .send(
            "GET",
            "/web/missing",
            "",
            &[("origin", "foo.suffix")],
            vec![],
            Payload::Signed,
        )
        .await;
    assert_error(&r, 404, "NoSuchKey");
    assert_eq!(allowed(&r), (Some("foo.suffix"), Some("GET")));
    let r = raw("GET", server.addr, "/web/bar", &[("origin", "foo.suffix")]).await;
    assert_error(&r, 403, "AccessDenied");
    assert_eq!(allowed(&r), (Some("foo.suffix"), Some("GET")));
    let r = c
        .send(
            "PUT",
            "/web/up",
            "",
            &[("origin", "foo.put")],
            b"x".to_vec(),
            Payload::Signed,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(allowed(&r), (Some("foo.put"), Some("PUT")));
    let r = c
        .send(
            "PUT",
            "/web/up",
            "",
            &[("origin", "foo.suffix")],
            b"x".to_vec(),
            Payload::Signed,
        )
        .await;
    assert_eq!(allowed(&r), (None, None));

    // Wildcard origin: `*` (and no credentials).
    let doc = "<CORSConfiguration><CORSRule><AllowedMethod>GET</AllowedMethod>\
        <AllowedOrigin>*</AllowedOrigin></CORSRule></CORSConfiguration>";
    let r = c
        .send(
            "PUT",
            "/web",
            "cors",
            &[],
            doc.as_bytes().to_vec(),
            Payload::Signed,
        )
        .await;
    assert_eq!(r.status, 200);
    let r = get("example.origin").await;
    assert_eq!(allowed(&r), (Some("*"), Some("GET")));
    assert_eq!(r.header("access-control-allow-credentials"), None);

    // Invalid configurations are refused and change nothing.
    for (doc, code) in [
        (
            "<CORSConfiguration><CORSRule><AllowedMethod>PATCH</AllowedMethod><AllowedOrigin>*</AllowedOrigin></CORSRule></CORSConfiguration>",
            "InvalidRequest",
        ),
        (
            "<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin></CORSRule></CORSConfiguration>",
            "MalformedXML",
        ),
        ("<CORSConfiguration/>", "MalformedXML"),
        ("not xml", "MalformedXML"),
    ] {
        let r = c
            .send(
                "PUT",
                "/web",
                "cors",
                &[],
                doc.as_bytes().to_vec(),
                Payload::Signed,
            )
            .await;
        assert_error(&r, 400, code);
    }
    assert_eq!(
        c.get("/web", "cors").await.xml_all("AllowedOrigin"),
        vec!["*"]
    );

    // Deleted: gone, and preflights are refused again.
    let r = c
        .send("DELETE", "/web", "cors", &[], vec![], Payload::Signed)
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_error(&c.get("/web", "cors").await, 404, "NoSuchCORSConfiguration");
    let r = raw("OPTIONS", server.addr, "/web/bar", &preflight).await;
    assert_error(&r, 403, "AccessForbidden");
    assert_error(&c.get("/nobucket", "cors").await, 404, "NoSuchBucket");
}

/// A multipart/form-data body of `fields` (in order) and then a file.
fn form_body(fields: &[(&str, String)], filename: &str, file: &[u8]) -> (String, Vec<u8>) {
    let boundary = "----wisp-form-7d1f";
    let mut body = Vec::new();
    for (n, v) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{n}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// The fields of a SigV4 POST policy over `conditions` (the signing fields added), as
/// boto3's generate_presigned_post makes them, expiring `expires_in` from now.
fn signed_fields(
    conditions: serde_json::Value,
    expires_in: time::Duration,
    secret: &str,
) -> Vec<(&'static str, String)> {
    let now = time::OffsetDateTime::now_utc();
    let amz_date = wisp_objects::sigv4::format_amz_date(now);
    let credential = format!(
        "{}/{}/us-east-1/s3/aws4_request",
        common::ACCESS_KEY,
        &amz_date[..8]
    );
    let mut conditions = conditions.as_array().unwrap().clone();
    conditions.push(serde_json::json!({"x-amz-algorithm": "AWS4-HMAC-SHA256"}));
    conditions.push(serde_json::json!({"x-amz-credential": credential}));
    conditions.push(serde_json::json!({"x-amz-date": amz_date}));
    let expiration = (now + expires_in)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let policy = serde_json::json!({"expiration": expiration, "conditions": conditions});
    let policy = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        policy.to_string(),
    );
    let key = wisp_objects::sigv4::signing_key(secret, &amz_date[..8], "us-east-1", "s3");
    let signature = wisp_objects::sigv4::sign(&key, &policy);
    vec![
        ("x-amz-algorithm", "AWS4-HMAC-SHA256".into()),
        ("x-amz-credential", credential),
        ("x-amz-date", amz_date),
        ("policy", policy),
        ("x-amz-signature", signature),
    ]
}

async fn post_form(
    addr: std::net::SocketAddr,
    path: &str,
    fields: &[(&str, String)],
    filename: &str,
    file: &[u8],
) -> Resp {
    let (content_type, body) = form_body(fields, filename, file);
    let r = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    Resp {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.bytes().await.unwrap().to_vec(),
    }
}

// ceph/s3-tests test_post_object_authenticated_request, _set_success_code,
// _set_key_from_filename, _success_redirect_action, _user_specified_header,
// _upload_size_limit_exceeded, _upload_size_below_minimum, _expired_policy,
// _invalid_signature, _wrong_bucket, _request_missing_policy_specified_field,
// _anonymous_request (refused here: the store has no public buckets), with SigV4.
#[tokio::test]
async fn browser_form_uploads_follow_their_signed_policy() {
    let mut server = start(Config::default()).await;
    let c = server.client();
    c.create_bucket("forms").await;
    c.create_bucket("other").await;
    let conditions = serde_json::json!([
        {"bucket": "forms"},
        ["starts-with", "$key", "uploads/"],
        ["starts-with", "$Content-Type", "text/"],
        ["content-length-range", 1, 64],
        ["starts-with", "$x-amz-meta-owner", ""],
        ["eq", "$success_action_status", "201"],
    ]);
    let mut fields = vec![
        ("key", "uploads/${filename}".to_string()),
        ("Content-Type", "text/plain".into()),
        ("x-amz-meta-owner", "ada".into()),
        ("success_action_status", "201".into()),
    ];
    fields.extend(signed_fields(
        conditions.clone(),
        time::Duration::minutes(5),
        common::SECRET,
    ));
    let r = post_form(server.addr, "/forms", &fields, "notes 1.txt", b"hello form").await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.xml("Key").as_deref(), Some("uploads/notes 1.txt"));
    assert_eq!(r.xml("Bucket").as_deref(), Some("forms"));
    let etag = format!(
        "\"{}\"",
        hex::encode(<md5::Md5 as md5::Digest>::digest(b"hello form"))
    );
    assert_eq!(r.xml("ETag"), Some(etag.clone()));
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert!(
        r.header("location")
            .is_some_and(|l| l.ends_with("/forms/uploads/notes%201.txt")),
        "{:?}",
        r.header("location")
    );
    let got = c.get("/forms/uploads/notes%201.txt", "").await;
    assert_eq!(got.body, b"hello form");
    assert_eq!(got.header("content-type"), Some("text/plain"));
    assert_eq!(got.header("x-amz-meta-owner"), Some("ada"));
    let e = server.events.try_recv().unwrap();
    assert_eq!(e.kind.event_name(), "ObjectCreated:Post");
    assert_eq!((e.key.as_str(), e.size), ("uploads/notes 1.txt", 10));
    assert_eq!(e.principal, common::ACCESS_KEY);

    // Too large for the policy, too small, the wrong key prefix: refused, nothing stored.
    let r = post_form(server.addr, "/forms", &fields, "big.txt", &[b'x'; 65]).await;
    assert_error(&r, 400, "EntityTooLarge");
    let r = post_form(server.addr, "/forms", &fields, "empty.txt", b"").await;
    assert_error(&r, 400, "EntityTooSmall");
    let mut elsewhere = fields.clone();
    elsewhere[0].1 = "private/x.txt".into();
    let r = post_form(server.addr, "/forms", &elsewhere, "x.txt", b"data").await;
    assert_error(&r, 403, "AccessDenied");
    assert!(
        r.xml("Message")
            .unwrap()
            .starts_with("Invalid according to Policy: Policy Condition failed"),
        "{}",
        r.text()
    );
    // Posted to another bucket than the policy's.
    let r = post_form(server.addr, "/other", &fields, "x.txt", b"data").await;
    assert_error(&r, 403, "AccessDenied");
    // A field the policy does not mention.
    let mut extra = fields.clone();
    extra.insert(0, ("x-amz-meta-extra", "1".into()));
    let r = post_form(server.addr, "/forms", &extra, "x.txt", b"data").await;
    assert_error(&r, 403, "AccessDenied");
    assert_eq!(
        r.xml("Message").as_deref(),
        Some("Invalid according to Policy: Extra input fields: x-amz-meta-extra")
    );
    // Expired.
    let mut expired = fields[..4].to_vec();
    expired.extend(signed_fields(
        conditions.clone(),
        time::Duration::minutes(-1),
        common::SECRET,
    ));
    let r = post_form(server.addr, "/forms", &expired, "x.txt", b"data").await;
    assert_error(&r, 403, "AccessDenied");
    assert_eq!(
        r.xml("Message").as_deref(),
        Some("Invalid according to Policy: Policy expired.")
    );
    // Signed with another secret; no signature at all; no policy at all.
    let mut forged = fields[..4].to_vec();
    forged.extend(signed_fields(
        conditions.clone(),
        time::Duration::minutes(5),
        "guess",
    ));
    let r = post_form(server.addr, "/forms", &forged, "x.txt", b"data").await;
    assert_error(&r, 403, "SignatureDoesNotMatch");
    let unsigned: Vec<_> = fields
        .iter()
        .filter(|(n, _)| *n != "x-amz-signature")
        .cloned()
        .collect();
    let r = post_form(server.addr, "/forms", &unsigned, "x.txt", b"data").await;
    assert_error(&r, 400, "InvalidArgument");
    let r = post_form(
        server.addr,
        "/forms",
        &[("key", "uploads/anon.txt".into())],
        "x.txt",
        b"data",
    )
    .await;
    assert_error(&r, 403, "AccessDenied");
    assert!(
        server.events.try_recv().is_err(),
        "a refused upload emitted an event"
    );
    let r = c.get("/forms", "list-type=2").await;
    assert_eq!(r.xml_all("Key"), vec!["uploads/notes 1.txt"]);

    // success_action_redirect: 303 to it with bucket, key and etag.
    let conditions = serde_json::json!([
        {"bucket": "forms"},
        {"key": "r.txt"},
        ["starts-with", "$success_action_redirect", "https://app.example.com/"],
    ]);
    let mut fields = vec![
        ("key", "r.txt".to_string()),
        (
            "success_action_redirect",
            "https://app.example.com/done".into(),
        ),
    ];
    fields.extend(signed_fields(
        conditions,
        time::Duration::minutes(5),
        common::SECRET,
    ));
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("http://{}/forms", server.addr))
        .header("content-type", form_body(&fields, "r.txt", b"r").0)
        .body(form_body(&fields, "r.txt", b"r").1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with("https://app.example.com/done?bucket=forms&key=r.txt&etag=%22"),
        "{location}"
    );
    // No success_action_status: 204.
    let conditions = serde_json::json!([{"bucket": "forms"}, {"key": "plain.bin"}]);
    let mut fields = vec![("key", "plain.bin".to_string())];
    fields.extend(signed_fields(
        conditions,
        time::Duration::minutes(5),
        common::SECRET,
    ));
    let r = post_form(server.addr, "/forms", &fields, "p", b"plain").await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(c.get("/forms/plain.bin", "").await.body, b"plain");
    assert_eq!(
        c.get("/forms/plain.bin", "").await.header("content-type"),
        Some("binary/octet-stream")
    );
}

// The upload is answered only once its event is handed on: a sink that fails gets the
// client a 503, as for PutObject.
#[tokio::test]
async fn a_form_upload_waits_for_its_event_to_be_handed_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(
        wisp_objects::ObjectStore::open(dir.path().join("objects"), Config::default()).unwrap(),
    );
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let sink = std::sync::Arc::new(FailFirst {
        failed: false.into(),
        forward: tx,
    });
    let creds = std::sync::Arc::new(
        wisp_objects::StaticCredentials::new().with(common::ACCESS_KEY, common::SECRET),
    );
    let app = wisp_objects::router(store.clone(), creds, sink);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    common::Client::new(addr).create_bucket("forms").await;
    let conditions = serde_json::json!([{"bucket": "forms"}, {"key": "k"}]);
    let mut fields = vec![("key", "k".to_string())];
    fields.extend(signed_fields(
        conditions,
        time::Duration::minutes(5),
        common::SECRET,
    ));
    let r = post_form(addr, "/forms", &fields, "k", b"data").await;
    assert_error(&r, 503, "ServiceUnavailable");
    let r = post_form(addr, "/forms", &fields, "k", b"data").await;
    assert_eq!(r.status, 204);
    let kinds: Vec<_> = std::iter::from_fn(|| events.try_recv().ok())
        .map(|e| e.kind.event_name())
        .collect();
    assert_eq!(kinds, ["ObjectCreated:Post", "ObjectCreated:Post"]);
}
