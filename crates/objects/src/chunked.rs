//! Request bodies as a stream of payload bytes: plain, or decoded from aws-chunked
//! (`STREAMING-*` payloads), verifying each chunk's signature and the trailers'
//! signature as they go. Nothing is buffered beyond what one read of the socket brings.

use axum::body::{Body, BodyDataStream};
use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::auth::{ChunkSigner, PayloadAuth};
use crate::error::S3Error;
use crate::sigv4;

/// Longest chunk header or trailer line accepted.
const MAX_LINE: usize = 4096;
/// Most trailer lines accepted.
const MAX_TRAILERS: usize = 16;

enum State {
    Header,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

struct Chunked {
    signer: Option<ChunkSigner>,
    previous: String,
    expect_trailer: bool,
    state: State,
    chunk_hash: Sha256,
    chunk_signature: String,
}

/// Where the bytes of a new blob come from: a request's payload, or the file of a
/// browser form upload.
pub(crate) trait ByteSource: Send {
    /// The next piece, or None at the end (after all checks passed).
    fn next_bytes(
        &mut self,
    ) -> impl std::future::Future<Output = Result<Option<Bytes>, S3Error>> + Send;
}

impl ByteSource for Payload {
    async fn next_bytes(&mut self) -> Result<Option<Bytes>, S3Error> {
        self.next().await
    }
}

/// The payload of a request.
pub(crate) struct Payload {
    stream: BodyDataStream,
    buf: BytesMut,
    chunked: Option<Chunked>,
    eof: bool,
    trailers: Vec<(String, String)>,
}

fn incomplete() -> S3Error {
    S3Error::incomplete_body("The request body ended before the payload was complete.")
}

impl Payload {
    pub fn new(body: Body, auth: &PayloadAuth) -> Self {
        let chunked = match auth {
            PayloadAuth::Chunked { signer, trailer } => Some(Chunked {
                previous: signer
                    .as_ref()
                    .map(|s| s.seed_signature.clone())
                    .unwrap_or_default(),
                signer: signer.clone(),
                expect_trailer: *trailer,
                state: State::Header,
                chunk_hash: Sha256::new(),
                chunk_signature: String::new(),
            }),
            _ => None,
        };
        Self {
            stream: body.into_data_stream(),
            buf: BytesMut::new(),
            chunked,
            eof: false,
            trailers: Vec::new(),
        }
    }

    pub fn is_chunked(&self) -> bool {
        self.chunked.is_some()
    }

    /// The trailers of an aws-chunked body (lowercase names), once it is read.
    pub fn trailers(&self) -> &[(String, String)] {
        &self.trailers
    }

    async fn read_socket(&mut self) -> Result<Option<Bytes>, S3Error> {
        if self.eof {
            return Ok(None);
        }
        match self.stream.next().await {
            Some(Ok(b)) => Ok(Some(b)),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "request body failed");
                Err(incomplete())
            }
            None => {
                self.eof = true;
                Ok(None)
            }
        }
    }

    /// Reads more of the body into the buffer; false at its end.
    async fn fill(&mut self) -> Result<bool, S3Error> {
        match self.read_socket().await? {
            Some(b) => {
                self.buf.extend_from_slice(&b);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// One line without its line end (CRLF, or a bare LF), or None at the body's end.
    async fn line(&mut self) -> Result<Option<String>, S3Error> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line = self.buf.split_to(pos + 1);
                line.truncate(pos);
                if line.last() == Some(&b'\r') {
                    line.truncate(pos - 1);
                }
                return String::from_utf8(line.to_vec())
                    .map(Some)
                    .map_err(|_| S3Error::invalid_chunk("a chunk header is not UTF-8"));
            }
            if self.buf.len() > MAX_LINE {
                return Err(S3Error::invalid_chunk("a chunk header line is too long"));
            }
            if !self.fill().await? {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(incomplete())
                };
            }
        }
    }

    /// The next piece of payload, or None at its end (after all checks passed).
    pub async fn next(&mut self) -> Result<Option<Bytes>, S3Error> {
        if self.chunked.is_none() {
            return self.read_socket().await;
        }
        loop {
            let state = match &self.chunked {
                Some(c) => match c.state {
                    State::Header => 0,
                    State::Data(_) => 1,
                    State::DataEnd => 2,
                    State::Trailers => 3,
                    State::Done => 4,
                },
                None => 4,
            };
            match state {
                0 => self.chunk_header().await?,
                1 => {
                    if self.buf.is_empty() && !self.fill().await? {
                        return Err(incomplete());
                    }
                    let Some(c) = self.chunked.as_mut() else {
                        break;
                    };
                    let State::Data(remaining) = c.state else {
                        continue;
                    };
                    let n = remaining.min(self.buf.len() as u64) as usize;
                    let out = self.buf.split_to(n).freeze();
                    if c.signer.is_some() {
                        c.chunk_hash.update(&out);
                    }
                    c.state = if remaining == n as u64 {
                        State::DataEnd
                    } else {
                        State::Data(remaining - n as u64)
                    };
                    return Ok(Some(out));
                }
                2 => {
                    while self.buf.len() < 2 {
                        if !self.fill().await? {
                            return Err(incomplete());
                        }
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return Err(S3Error::invalid_chunk(
                            "a chunk's data is not followed by CRLF",
                        ));
                    }
                    self.buf.advance(2);
                    let Some(c) = self.chunked.as_mut() else {
                        break;
                    };
                    let hash = std::mem::replace(&mut c.chunk_hash, Sha256::new()).finalize();
                    verify_chunk(c, &hex::encode(hash))?;
                    c.state = State::Header;
                }
                3 => {
                    self.read_trailers().await?;
                    if let Some(c) = self.chunked.as_mut() {
                        c.state = State::Done;
                    }
                }
                _ => break,
            }
        }
        Ok(None)
    }

    async fn chunk_header(&mut self) -> Result<(), S3Error> {
        let line = self.line().await?.ok_or_else(incomplete)?;
        let (size, ext) = line.split_once(';').unwrap_or((line.as_str(), ""));
        let size = u64::from_str_radix(size.trim(), 16)
            .map_err(|_| S3Error::invalid_chunk(format!("bad chunk size {:?}", size.trim())))?;
        let Some(c) = self.chunked.as_mut() else {
            return Ok(());
        };
        if c.signer.is_some() {
            let sig = ext
                .split(';')
                .find_map(|e| e.trim().strip_prefix("chunk-signature="))
                .ok_or_else(|| {
                    S3Error::signature_does_not_match("a chunk of a signed body has no signature")
                })?;
            c.chunk_signature = sig.to_string();
        }
        if size == 0 {
            verify_chunk(c, sigv4::EMPTY_SHA256)?;
            c.state = State::Trailers;
        } else {
            c.state = State::Data(size);
        }
        Ok(())
    }

    async fn read_trailers(&mut self) -> Result<(), S3Error> {
        let expect_trailer = self.chunked.as_ref().is_some_and(|c| c.expect_trailer);
        let mut signature: Option<String> = None;
        loop {
            let Some(line) = self.line().await? else {
                // The body ended without the closing empty line: accept it only once
                // the trailers came.
                if expect_trailer && !self.trailers.is_empty() {
                    break;
                }
                return Err(incomplete());
            };
            if line.is_empty() {
                if !self.trailers.is_empty() || !expect_trailer {
                    break;
                }
                // Some clients end the last chunk with an empty line before the trailers.
                continue;
            }
            if self.trailers.len() >= MAX_TRAILERS {
                return Err(S3Error::malformed_trailer("too many trailers"));
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| S3Error::malformed_trailer("a trailer is not name:value"))?;
            let name = name.trim().to_ascii_lowercase();
            let value = value.trim().to_string();
            if name == "x-amz-trailer-signature" {
                signature = Some(value);
            } else {
                self.trailers.push((name, value));
            }
        }
        let Some(c) = self.chunked.as_ref() else {
            return Ok(());
        };
        if let Some(signer) = &c.signer
            && expect_trailer
        {
            let canonical: String = self
                .trailers
                .iter()
                .map(|(n, v)| format!("{n}:{v}\n"))
                .collect();
            let expected = sigv4::trailer_signature(
                &signer.key,
                &signer.amz_date,
                &signer.scope,
                &c.previous,
                &canonical,
            );
            let given = signature.unwrap_or_default();
            if !sigv4::constant_time_eq(expected.as_bytes(), given.as_bytes()) {
                return Err(S3Error::signature_does_not_match(
                    "The trailer signature does not match.",
                ));
            }
        }
        Ok(())
    }
}

fn verify_chunk(c: &mut Chunked, chunk_sha256_hex: &str) -> Result<(), S3Error> {
    let Some(signer) = &c.signer else {
        return Ok(());
    };
    let expected = sigv4::chunk_signature(
        &signer.key,
        &signer.amz_date,
        &signer.scope,
        &c.previous,
        chunk_sha256_hex,
    );
    if !sigv4::constant_time_eq(expected.as_bytes(), c.chunk_signature.as_bytes()) {
        return Err(S3Error::signature_does_not_match(
            "The chunk signature does not match.",
        ));
    }
    c.previous = expected;
    Ok(())
}

/// Reads a whole small body (an XML request document), at most `limit` bytes, checking
/// its SHA-256 when it was signed.
pub(crate) async fn read_small(
    body: Body,
    auth: &PayloadAuth,
    limit: usize,
) -> Result<Bytes, S3Error> {
    let mut payload = Payload::new(body, auth);
    let mut out = BytesMut::new();
    while let Some(b) = payload.next().await? {
        if out.len() + b.len() > limit {
            return Err(S3Error::malformed_xml("The request document is too large."));
        }
        out.extend_from_slice(&b);
    }
    if let PayloadAuth::Sha256(expected) = auth {
        let got: [u8; 32] = Sha256::digest(&out).into();
        if got != *expected {
            return Err(S3Error::content_sha256_mismatch(
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            ));
        }
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigv4::{
        SigningParams, encode_signed_chunks, encode_unsigned_chunks, parse_amz_date,
    };

    fn params() -> SigningParams<'static> {
        SigningParams {
            access_key_id: "AKIAIOSFODNN7EXAMPLE",
            secret: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            region: "us-east-1",
            service: "s3",
            time: parse_amz_date("20130524T000000Z").unwrap(),
        }
    }

    const SEED: &str = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";

    fn signer() -> ChunkSigner {
        let p = params();
        ChunkSigner {
            key: sigv4::signing_key(p.secret, "20130524", "us-east-1", "s3"),
            amz_date: "20130524T000000Z".into(),
            scope: "20130524/us-east-1/s3/aws4_request".into(),
            seed_signature: SEED.into(),
        }
    }

    /// Feeds `body` in pieces of `piece` bytes, as a socket might.
    fn body_in_pieces(body: Vec<u8>, piece: usize) -> Body {
        let pieces: Vec<Result<Bytes, std::io::Error>> = body
            .chunks(piece)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Body::from_stream(futures::stream::iter(pieces))
    }

    async fn drain(mut p: Payload) -> Result<(Vec<u8>, Vec<(String, String)>), S3Error> {
        let mut out = Vec::new();
        while let Some(b) = p.next().await? {
            out.extend_from_slice(&b);
        }
        Ok((out, p.trailers().to_vec()))
    }

    #[tokio::test]
    async fn decodes_the_aws_signed_chunk_example_in_any_split() {
        let body = encode_signed_chunks(&params(), SEED, &[b'a'; 66560], 65536, &[]);
        for piece in [1, 7, 1000, 65536, 100_000] {
            let auth = PayloadAuth::Chunked {
                signer: Some(signer()),
                trailer: false,
            };
            let p = Payload::new(body_in_pieces(body.clone(), piece), &auth);
            let (data, trailers) = drain(p).await.unwrap();
            assert_eq!(data, vec![b'a'; 66560], "piece {piece}");
            assert!(trailers.is_empty());
        }
    }

    #[tokio::test]
    async fn a_corrupted_chunk_fails_its_signature() {
        let mut body = encode_signed_chunks(&params(), SEED, &[b'a'; 66560], 65536, &[]);
        let at = body.len() - 200;
        body[at] = b'b';
        let auth = PayloadAuth::Chunked {
            signer: Some(signer()),
            trailer: false,
        };
        let err = drain(Payload::new(body_in_pieces(body, 4096), &auth))
            .await
            .unwrap_err();
        assert_eq!(err.code, "SignatureDoesNotMatch");
    }

    #[tokio::test]
    async fn signed_trailers_are_verified() {
        let trailers = [("x-amz-checksum-crc32", "DUoRhQ==")];
        let body = encode_signed_chunks(&params(), SEED, b"hello world", 4, &trailers);
        let auth = PayloadAuth::Chunked {
            signer: Some(signer()),
            trailer: true,
        };
        let (data, got) = drain(Payload::new(body_in_pieces(body.clone(), 3), &auth))
            .await
            .unwrap();
        assert_eq!(data, b"hello world");
        assert_eq!(
            got,
            vec![("x-amz-checksum-crc32".to_string(), "DUoRhQ==".to_string())]
        );
        let tampered = String::from_utf8(body)
            .unwrap()
            .replace("DUoRhQ==", "AAAAAA==");
        let err = drain(Payload::new(
            body_in_pieces(tampered.into_bytes(), 3),
            &auth,
        ))
        .await
        .unwrap_err();
        assert_eq!(err.code, "SignatureDoesNotMatch");
    }

    #[tokio::test]
    async fn unsigned_trailer_bodies_decode_like_botocores() {
        let body = encode_unsigned_chunks(
            b"hello world",
            1024 * 1024,
            &[("x-amz-checksum-crc32", "DUoRhQ==")],
        );
        assert_eq!(
            body,
            b"b\r\nhello world\r\n0\r\nx-amz-checksum-crc32:DUoRhQ==\r\n\r\n".to_vec()
        );
        let auth = PayloadAuth::Chunked {
            signer: None,
            trailer: true,
        };
        let (data, got) = drain(Payload::new(body_in_pieces(body, 5), &auth))
            .await
            .unwrap();
        assert_eq!(data, b"hello world");
        assert_eq!(got[0].1, "DUoRhQ==");
        // An empty object: just the last chunk and the trailer.
        let body = b"0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n".to_vec();
        let (data, got) = drain(Payload::new(body_in_pieces(body, 64), &auth))
            .await
            .unwrap();
        assert!(data.is_empty());
        assert_eq!(got.len(), 1);
    }

    #[tokio::test]
    async fn truncated_and_malformed_bodies_fail() {
        let auth = PayloadAuth::Chunked {
            signer: None,
            trailer: false,
        };
        let err = drain(Payload::new(
            body_in_pieces(b"a\r\nhello".to_vec(), 64),
            &auth,
        ))
        .await
        .unwrap_err();
        assert_eq!(err.code, "IncompleteBody");
        let err = drain(Payload::new(
            body_in_pieces(b"zz\r\nhello".to_vec(), 64),
            &auth,
        ))
        .await
        .unwrap_err();
        assert_eq!(err.code, "InvalidChunkSizeError");
        let err = drain(Payload::new(
            body_in_pieces(b"5\r\nhelloXX0\r\n\r\n".to_vec(), 64),
            &auth,
        ))
        .await
        .unwrap_err();
        assert_eq!(err.code, "InvalidChunkSizeError");
        let (data, _) = drain(Payload::new(
            body_in_pieces(b"5\r\nhello\r\n0\r\n\r\n".to_vec(), 2),
            &auth,
        ))
        .await
        .unwrap();
        assert_eq!(data, b"hello");
    }
}
