//! The aws-chunked body decoder (`chunked.rs`, through `wisp_objects::fuzzing`).
//!
//! Input: one byte choosing how the body is signed (0: `STREAMING-UNSIGNED-PAYLOAD-TRAILER`,
//! 1: `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`, 2: its `-TRAILER` form), one byte the size of
//! the pieces the body arrives in, then the body. The body is decoded as sent (no panic,
//! and an unsigned one that decodes gives no more bytes than it had); then the rest of the
//! input, as payload, is encoded by `sigv4::encode_*_chunks` and must decode back as it was.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use wisp_objects::fuzzing::{ChunkSigning, read_chunked};
use wisp_objects::sigv4::{self, SigningParams};

const SEED: &str = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";

fn params() -> SigningParams<'static> {
    SigningParams {
        access_key_id: "AKIAIOSFODNN7EXAMPLE",
        secret: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        region: "us-east-1",
        service: "s3",
        time: sigv4::parse_amz_date("20130524T000000Z").unwrap(),
    }
}

fn signing() -> ChunkSigning {
    let p = params();
    ChunkSigning {
        key: sigv4::signing_key(p.secret, "20130524", p.region, p.service),
        amz_date: "20130524T000000Z".into(),
        scope: sigv4::credential_scope("20130524", p.region, p.service),
        seed_signature: SEED.into(),
    }
}

fn pieces(body: &[u8], size: usize) -> Vec<Bytes> {
    body.chunks(size.max(1))
        .map(Bytes::copy_from_slice)
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let [mode, piece, body @ ..] = data else {
        return;
    };
    let mode = mode % 3;
    let piece = usize::from(*piece) + 1;
    let signer = (mode != 0).then(signing);
    let trailer = mode != 1;

    if let Ok(got) = read_chunked(pieces(body, piece), signer.clone(), trailer) {
        assert!(got.data.len() <= body.len());
    }

    // Round trip: what the encoders make decodes to the payload and trailers.
    let trailers: &[(&str, &str)] = if trailer {
        &[("x-amz-checksum-crc32", "sOO8/Q==")]
    } else {
        &[]
    };
    let chunk = 1 + body.len() / (1 + usize::from(data[0] / 3) % 4);
    let encoded = match mode {
        0 => sigv4::encode_unsigned_chunks(body, chunk, trailers),
        _ => sigv4::encode_signed_chunks(&params(), SEED, body, chunk, trailers),
    };
    let got = read_chunked(pieces(&encoded, piece), signer, trailer)
        .unwrap_or_else(|e| panic!("an encoded body does not decode: {e}"));
    assert_eq!(got.data, body);
    let want: Vec<(String, String)> = trailers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    assert_eq!(got.trailers, want);
});
