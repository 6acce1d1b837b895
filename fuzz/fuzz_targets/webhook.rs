//! Webhook signature checks (`wisp_events::webhook`): fuzzed signature headers never
//! panic and verify only when they carry the body's real HMAC; signatures made by
//! `sign_github` / `sign_stripe` (or by hand for the generic encodings) always verify
//! (Stripe's within the tolerance of its timestamp).
#![no_main]

use base64::Engine as _;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use std::time::Duration;
use wisp_events::Timestamp;
use wisp_events::webhook::{
    Encoding, Scheme, WebhookError, WebhookVerifier, sign_github, sign_stripe, verify_generic,
    verify_github, verify_stripe,
};

/// The input is text:
///   line 1: the secret
///   line 2: the scheme (`github`, `stripe`, `hex` or `base64`; anything else: github)
///   line 3: the signature header's value, as a client sent it
///   line 4: `<now> <t> <tolerance>`: Unix seconds of now and of a signature, and the
///           Stripe tolerance in seconds
///   then: the body
struct Input {
    secret: Vec<u8>,
    body: Vec<u8>,
    header: Vec<u8>,
    scheme: u8,
    now: i64,
    t: i64,
    tolerance: u32,
}

fn input(data: &[u8]) -> Option<Input> {
    let mut lines = data.splitn(5, |b| *b == b'\n');
    let secret = lines.next()?.to_vec();
    let scheme = match lines.next()? {
        b"stripe" => 1,
        b"hex" => 2,
        b"base64" => 3,
        _ => 0,
    };
    let header = lines.next()?.to_vec();
    let nums = std::str::from_utf8(lines.next()?).ok()?;
    let mut nums = nums.split(' ').map(|n| n.parse::<i64>().ok());
    let now = nums.next().flatten().unwrap_or(1_700_000_000);
    let t = nums.next().flatten().unwrap_or(now);
    let tolerance = nums.next().flatten().map_or(300, |n| n as u32);
    let body = lines.next().unwrap_or_default().to_vec();
    Some(Input {
        secret,
        body,
        header,
        scheme,
        now,
        t,
        tolerance,
    })
}

fn mac(secret: &[u8], data: &[&[u8]]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    for d in data {
        m.update(d);
    }
    m.finalize().into_bytes().to_vec()
}

fuzz_target!(|data: &[u8]| {
    let Some(i) = input(data) else {
        return;
    };
    // Timestamps jiff can hold.
    let now_s = i.now.rem_euclid(253_402_207_200);
    let now = Timestamp::from_second(now_s).unwrap();
    let tolerance = Duration::from_secs(u64::from(i.tolerance));
    let expected = mac(&i.secret, &[&i.body]);

    // Any header: no panic, and an accepted one holds the real signature.
    let mut headers = http::HeaderMap::new();
    let value = http::HeaderValue::from_bytes(&i.header).ok();
    let (scheme, name) = match i.scheme % 4 {
        0 => (Scheme::GitHub, "x-hub-signature-256"),
        1 => (Scheme::Stripe { tolerance }, "stripe-signature"),
        2 => (
            Scheme::Generic {
                header: "x-signature".into(),
                encoding: Encoding::Hex,
            },
            "x-signature",
        ),
        _ => (
            Scheme::Generic {
                header: "x-signature".into(),
                encoding: Encoding::Base64,
            },
            "x-signature",
        ),
    };
    if let Some(v) = value {
        headers.insert(name, v);
    }
    let verifier = WebhookVerifier::new(scheme.clone(), i.secret.clone());
    let result = verifier.verify(&headers, &i.body, now);
    if result.is_ok() {
        let text = std::str::from_utf8(&i.header).unwrap().trim();
        match scheme {
            Scheme::GitHub => assert_eq!(
                // (Whitespace after `sha256=` is accepted, as around the value.)
                hex::decode(text.strip_prefix("sha256=").unwrap().trim()).unwrap(),
                expected
            ),
            Scheme::Generic {
                encoding: Encoding::Hex,
                ..
            } => assert_eq!(hex::decode(text).unwrap(), expected),
            Scheme::Generic { .. } => assert_eq!(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .unwrap(),
                expected
            ),
            Scheme::Stripe { .. } => {
                assert!(text.contains("v1="), "{text}");
            }
        }
    }
    if headers.is_empty() {
        assert!(matches!(result, Err(WebhookError::MissingHeader(_))));
    }

    // What the signers make verifies.
    let github = sign_github(&i.secret, &i.body);
    assert_eq!(verify_github(&i.secret, Some(&github), &i.body), Ok(()));
    let hex_sig = hex::encode(&expected);
    assert_eq!(
        verify_generic(&i.secret, "x", &Encoding::Hex, Some(&hex_sig), &i.body),
        Ok(())
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(&expected);
    assert_eq!(
        verify_generic(&i.secret, "x", &Encoding::Base64, Some(&b64), &i.body),
        Ok(())
    );
    // Tampering with the body is caught (unless the change is no change).
    let mut other = i.body.clone();
    other.push(b'x');
    assert_eq!(
        verify_github(&i.secret, Some(&github), &other),
        Err(WebhookError::BadSignature)
    );

    let stripe = sign_stripe(&i.secret, i.t, &i.body);
    let got = verify_stripe(&i.secret, Some(&stripe), &i.body, now, tolerance);
    let age = i128::from(now_s) - i128::from(i.t);
    let tol = i128::from(i.tolerance);
    if age > tol {
        assert!(matches!(got, Err(WebhookError::TooOld { .. })), "{got:?}");
    } else if -age > tol {
        assert!(matches!(got, Err(WebhookError::InFuture { .. })), "{got:?}");
    } else {
        assert_eq!(got, Ok(()));
    }
    // Another v1 (a rotated secret) beside the real one still verifies.
    let rotated = format!("{stripe},v1={}", hex::encode([0u8; 32]));
    assert_eq!(
        verify_stripe(&i.secret, Some(&rotated), &i.body, now, tolerance).is_ok(),
        got.is_ok()
    );
});
