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
