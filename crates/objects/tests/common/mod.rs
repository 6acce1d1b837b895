//! A test server on 127.0.0.1:0 over a temp dir, and a small SigV4 client for it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedReceiver;
use wisp_objects::sigv4::{self, SigningParams};
use wisp_objects::{Config, ObjectEvent, ObjectStore, StaticCredentials};

pub const ACCESS_KEY: &str = "WISPTESTKEY";
pub const SECRET: &str = "wisp-test-secret/with+odd=chars";

pub struct Server {
    pub addr: SocketAddr,
    pub store: Arc<ObjectStore>,
    pub events: UnboundedReceiver<ObjectEvent>,
    pub dir: tempfile::TempDir,
    pub task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub fn client(&self) -> Client {
        Client::new(self.addr)
    }
}

/// Starts the S3 router on 127.0.0.1:0 over a fresh temp dir.
pub async fn start(config: Config) -> Server {
    start_with(config, "").await
}

/// Starts the router, nested under `prefix` when it is not empty.
pub async fn start_with(config: Config, prefix: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(ObjectStore::open(dir.path().join("objects"), config).unwrap());
    let creds = Arc::new(StaticCredentials::new().with(ACCESS_KEY, SECRET));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let s3 = wisp_objects::router(store.clone(), creds, Arc::new(tx));
    let app = if prefix.is_empty() {
        s3
    } else {
        axum::Router::new().nest(prefix, s3)
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    Server {
        addr,
        store,
        events: rx,
        dir,
        task,
    }
}

/// How a request body is sent and signed.
#[derive(Debug, Clone, Copy)]
pub enum Payload {
    /// `x-amz-content-sha256` = SHA-256 of the body.
    Signed,
    /// `UNSIGNED-PAYLOAD`.
    Unsigned,
    /// Signed with the SHA-256 of the body, but its last byte changed on the way.
    Tampered,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`, chunks of this size.
    SignedChunks(usize),
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER` with a CRC32 trailer.
    SignedChunksTrailer(usize),
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER` with a CRC32 trailer, as botocore over TLS.
    UnsignedTrailer(usize),
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The text of the first `<tag>` in the body.
    pub fn xml(&self, tag: &str) -> Option<String> {
        xml_values(&self.text(), tag).into_iter().next()
    }

    pub fn xml_all(&self, tag: &str) -> Vec<String> {
        xml_values(&self.text(), tag)
    }

    /// The error code of an S3 error document.
    pub fn code(&self) -> String {
        self.xml("Code").unwrap_or_default()
    }
}

/// Values of every `<tag>...</tag>` (entities of keys undone).
pub fn xml_values(doc: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = doc;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(
            after[..j]
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&"),
        );
        rest = &after[j + close.len()..];
    }
    out
}

pub fn enc(key: &str) -> String {
    wisp_objects::names::uri_encode(key.as_bytes(), false)
}

pub fn enc_q(v: &str) -> String {
    wisp_objects::names::uri_encode(v.as_bytes(), true)
}

#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub addr: SocketAddr,
    pub access_key: String,
    pub secret: String,
    pub region: String,
    /// Added to the clock when signing (to test skew).
    pub clock_offset: time::Duration,
    /// Sent (and signed) as Host instead of the address (virtual-hosted tests).
    pub host: Option<String>,
    /// Path prefix for a nested router.
    pub prefix: String,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            http: reqwest::Client::new(),
            addr,
            access_key: ACCESS_KEY.into(),
            secret: SECRET.into(),
            region: "us-east-1".into(),
            clock_offset: time::Duration::ZERO,
            host: None,
            prefix: String::new(),
        }
    }

    pub fn host(&self) -> String {
        self.host.clone().unwrap_or_else(|| self.addr.to_string())
    }

    /// Sends a signed request. `path` and `query` are raw (already encoded).
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        payload: Payload,
    ) -> Resp {
        let path = format!("{}{}", self.prefix, path);
        let now = time::OffsetDateTime::now_utc() + self.clock_offset;
        let amz_date = sigv4::format_amz_date(now);
        let params = SigningParams {
            access_key_id: &self.access_key,
            secret: &self.secret,
            region: &self.region,
            service: "s3",
            time: now,
        };
        let host = self.host();
        let crc = wisp_objects::checksum::to_base64(
            &wisp_objects::checksum::ChecksumAlgorithm::Crc32.digest(&body),
        );
        let decoded_len = body.len().to_string();
        let (hash, mut extra): (String, Vec<(&str, String)>) = match payload {
            Payload::Signed | Payload::Tampered => (sigv4::sha256_hex(&body), vec![]),
            Payload::Unsigned => (sigv4::UNSIGNED_PAYLOAD.into(), vec![]),
            Payload::SignedChunks(_) => (
                sigv4::STREAMING_PAYLOAD.into(),
                vec![
                    ("content-encoding", "aws-chunked".into()),
                    ("x-amz-decoded-content-length", decoded_len.clone()),
                ],
            ),
            Payload::SignedChunksTrailer(_) => (
                sigv4::STREAMING_PAYLOAD_TRAILER.into(),
                vec![
                    ("content-encoding", "aws-chunked".into()),
                    ("x-amz-decoded-content-length", decoded_len.clone()),
                    ("x-amz-trailer", "x-amz-checksum-crc32".into()),
                ],
            ),
            Payload::UnsignedTrailer(_) => (
                sigv4::STREAMING_UNSIGNED_PAYLOAD_TRAILER.into(),
                vec![
                    ("content-encoding", "aws-chunked".into()),
                    ("x-amz-decoded-content-length", decoded_len.clone()),
                    ("x-amz-trailer", "x-amz-checksum-crc32".into()),
                ],
            ),
        };
        extra.push(("host", host.clone()));
        extra.push(("x-amz-date", amz_date.clone()));
        extra.push(("x-amz-content-sha256", hash.clone()));
        let mut to_sign: Vec<(&str, &str)> = extra.iter().map(|(n, v)| (*n, v.as_str())).collect();
        to_sign.extend_from_slice(headers);
        let signed = sigv4::sign_request(&params, method, &path, query, &to_sign, &hash);
        let body = match payload {
            Payload::SignedChunks(n) => {
                sigv4::encode_signed_chunks(&params, &signed.signature, &body, n, &[])
            }
            Payload::SignedChunksTrailer(n) => sigv4::encode_signed_chunks(
                &params,
                &signed.signature,
                &body,
                n,
                &[("x-amz-checksum-crc32", &crc)],
            ),
            Payload::UnsignedTrailer(n) => {
                sigv4::encode_unsigned_chunks(&body, n, &[("x-amz-checksum-crc32", &crc)])
            }
            Payload::Tampered => {
                let mut b = body;
                if let Some(last) = b.last_mut() {
                    *last ^= 1;
                }
                b
            }
            _ => body,
        };
        let url = if query.is_empty() {
            format!("http://{}{}", self.addr, path)
        } else {
            format!("http://{}{}?{}", self.addr, path, query)
        };
        let mut rb = self
            .http
            .request(method.parse().unwrap(), url)
            .header("authorization", signed.authorization);
        for (n, v) in to_sign {
            rb = rb.header(n, v);
        }
        let resp = rb.body(body).send().await.unwrap();
        Resp {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.bytes().await.unwrap().to_vec(),
        }
    }

    pub async fn get(&self, path: &str, query: &str) -> Resp {
        self.send("GET", path, query, &[], vec![], Payload::Signed)
            .await
    }

    pub async fn put(&self, path: &str, body: &[u8]) -> Resp {
        self.send("PUT", path, "", &[], body.to_vec(), Payload::Signed)
            .await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send("DELETE", path, "", &[], vec![], Payload::Signed)
            .await
    }

    pub async fn create_bucket(&self, bucket: &str) {
        let r = self.put(&format!("/{bucket}"), b"").await;
        assert_eq!(r.status, 200, "create bucket: {}", r.text());
    }

    /// A presigned URL (path and query) for this client's host.
    pub fn presign(&self, method: &str, path: &str, expires: u64) -> String {
        let now = time::OffsetDateTime::now_utc() + self.clock_offset;
        let params = SigningParams {
            access_key_id: &self.access_key,
            secret: &self.secret,
            region: &self.region,
            service: "s3",
            time: now,
        };
        sigv4::presign(&params, method, &self.host(), path, "", expires)
    }
}
