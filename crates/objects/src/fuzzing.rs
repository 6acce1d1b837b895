//! Entry points for the fuzz targets in `fuzz/` (not an API): the crate's request
//! parsers, SigV4 verification, the aws-chunked decoder and the XML reader, behind
//! wrappers that keep their types crate-private.

use axum::body::Body;
use bytes::Bytes;
use time::OffsetDateTime;

use crate::auth::{AuthSettings, Authenticated, ChunkSigner, PayloadAuth};
use crate::{Credentials, S3Error};

pub use crate::xml::{Element as XmlElement, XmlWriter, escape as xml_escape, parse as parse_xml};

/// How an authenticated request's body is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    Unsigned,
    Sha256,
    Chunked { signed: bool, trailer: bool },
}

/// A request that passed [`authenticate`].
#[derive(Debug, Clone)]
pub struct Auth(Authenticated);

/// What verifying signed chunks needs (the signing key of the request's day, region and
/// service, its `x-amz-date`, credential scope and seed signature).
#[derive(Debug, Clone)]
pub struct ChunkSigning {
    pub key: [u8; 32],
    pub amz_date: String,
    pub scope: String,
    pub seed_signature: String,
}

/// Checks a request's SigV4 (or SigV2 presigned) signature for a store in `region`,
/// allowing 15 minutes of skew.
pub fn authenticate(
    parts: &http::request::Parts,
    credentials: &dyn Credentials,
    now: OffsetDateTime,
    region: &str,
    virtual_host_suffixes: &[String],
) -> Result<Auth, S3Error> {
    let settings = AuthSettings {
        credentials,
        max_skew: std::time::Duration::from_secs(15 * 60),
        now,
        virtual_host_suffixes,
        region,
    };
    crate::auth::authenticate(parts, &parts.uri, &settings).map(Auth)
}

impl Auth {
    pub fn access_key_id(&self) -> &str {
        &self.0.access_key_id
    }

    pub fn payload_kind(&self) -> PayloadKind {
        match &self.0.payload {
            PayloadAuth::Unsigned => PayloadKind::Unsigned,
            PayloadAuth::Sha256(_) => PayloadKind::Sha256,
            PayloadAuth::Chunked { signer, trailer } => PayloadKind::Chunked {
                signed: signer.is_some(),
                trailer: *trailer,
            },
        }
    }

    /// Reads a body arriving in `pieces` as the request's payload would be read.
    pub fn read_payload(&self, pieces: Vec<Bytes>) -> Result<ReadBody, S3Error> {
        read(pieces, &self.0.payload)
    }

    /// Reads a small request document (at most `limit` bytes) as the XML requests are.
    pub fn read_small(&self, pieces: Vec<Bytes>, limit: usize) -> Result<Bytes, S3Error> {
        futures::executor::block_on(crate::chunked::read_small(
            body(pieces),
            &self.0.payload,
            limit,
        ))
    }
}

/// A decoded body: the payload bytes, and the trailers of an aws-chunked one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBody {
    pub data: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

/// Decodes an aws-chunked body arriving in `pieces`: signed chunks when `signer` is set,
/// trailers expected when `trailer`.
pub fn read_chunked(
    pieces: Vec<Bytes>,
    signer: Option<ChunkSigning>,
    trailer: bool,
) -> Result<ReadBody, S3Error> {
    let signer = signer.map(|s| ChunkSigner {
        key: s.key,
        amz_date: s.amz_date,
        scope: s.scope,
        seed_signature: s.seed_signature,
    });
    read(pieces, &PayloadAuth::Chunked { signer, trailer })
}

fn body(pieces: Vec<Bytes>) -> Body {
    Body::from_stream(futures::stream::iter(
        pieces.into_iter().map(Ok::<_, std::io::Error>),
    ))
}

fn read(pieces: Vec<Bytes>, auth: &PayloadAuth) -> Result<ReadBody, S3Error> {
    futures::executor::block_on(async {
        let mut payload = crate::chunked::Payload::new(body(pieces), auth);
        let mut data = Vec::new();
        while let Some(b) = payload.next().await? {
            data.extend_from_slice(&b);
        }
        Ok(ReadBody {
            data,
            trailers: payload.trailers().to_vec(),
        })
    })
}
