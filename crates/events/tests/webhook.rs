//! Webhook signatures: GitHub, Stripe and generic headers.
use std::time::Duration;

use jiff::Timestamp;
use wisp_events::webhook::{
    Encoding, STRIPE_TOLERANCE, Scheme, WebhookError, WebhookVerifier, sign_github, sign_stripe,
    verify_generic, verify_github, verify_stripe,
};

// GitHub's documented test values ("Validating webhook deliveries").
const GH_SECRET: &[u8] = b"It's a Secret to Everybody";
const GH_BODY: &[u8] = b"Hello, World!";
const GH_SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

// Stripe's header format, with t from Stripe's documentation example; v1 computed
// independently (Python's hmac) over "1492774577." + body.
const STRIPE_SECRET: &[u8] = b"whsec_test_secret";
const STRIPE_BODY: &[u8] = br#"{"id":"evt_1","object":"event"}"#;
const STRIPE_T: i64 = 1_492_774_577;
const STRIPE_V1: &str = "654b43d3508ecadb3f8cefc4bc7d3d2bdc5ba9e03bf2c89b2d0657a8e24e4543";

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).unwrap()
}

#[test]
fn github_valid_invalid_missing_malformed() {
    assert_eq!(sign_github(GH_SECRET, GH_BODY), GH_SIG);
    assert_eq!(verify_github(GH_SECRET, Some(GH_SIG), GH_BODY), Ok(()));
    assert_eq!(
        verify_github(GH_SECRET, Some(GH_SIG), b"Hello, World?"),
        Err(WebhookError::BadSignature)
    );
    assert_eq!(
        verify_github(b"wrong", Some(GH_SIG), GH_BODY),
        Err(WebhookError::BadSignature)
    );
    let e = verify_github(GH_SECRET, None, GH_BODY).unwrap_err();
    assert_eq!(
        e.to_string(),
        "missing signature header X-Hub-Signature-256"
    );
    let e = verify_github(GH_SECRET, Some(&GH_SIG[7..]), GH_BODY).unwrap_err();
    assert!(e.to_string().contains("expected sha256=<hex>"), "{e}");
    let e = verify_github(GH_SECRET, Some("sha256=zz"), GH_BODY).unwrap_err();
    assert!(e.to_string().contains("not hex"), "{e}");
    let e = verify_github(GH_SECRET, Some("sha256=abcd"), GH_BODY).unwrap_err();
    assert!(e.to_string().contains("64 hex digits"), "{e}");
    // A wrong signature's error never shows the expected one.
    let wrong = format!("sha256={}", "0".repeat(64));
    let e = verify_github(GH_SECRET, Some(&wrong), GH_BODY)
        .unwrap_err()
        .to_string();
    assert!(
        !e.contains(&GH_SIG[7..]) && !e.contains(&GH_SIG[7..20]),
        "{e}"
    );
}

#[test]
fn stripe_valid_invalid_missing_and_replayed() {
    let header = format!(
        "t={STRIPE_T},v1={STRIPE_V1},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"
    );
    assert_eq!(
        sign_stripe(STRIPE_SECRET, STRIPE_T, STRIPE_BODY),
        format!("t={STRIPE_T},v1={STRIPE_V1}")
    );
    let check = |h: Option<&str>, body: &[u8], now: i64| {
        verify_stripe(STRIPE_SECRET, h, body, at(now), STRIPE_TOLERANCE)
    };
    assert_eq!(check(Some(&header), STRIPE_BODY, STRIPE_T + 10), Ok(()));
    assert_eq!(check(Some(&header), STRIPE_BODY, STRIPE_T + 300), Ok(()));
    // The same valid delivery replayed later than the tolerance.
    assert_eq!(
        check(Some(&header), STRIPE_BODY, STRIPE_T + 301),
        Err(WebhookError::TooOld {
            age_secs: 301,
            tolerance_secs: 300
        })
    );
    assert!(
        check(Some(&header), STRIPE_BODY, STRIPE_T - 301)
            .unwrap_err()
            .to_string()
            .contains("in the future")
    );
    // A forged timestamp breaks the signature (t is signed).
    let forged = format!("t={},v1={STRIPE_V1}", STRIPE_T + 1000);
    assert_eq!(
        check(Some(&forged), STRIPE_BODY, STRIPE_T + 1000),
        Err(WebhookError::BadSignature)
    );
    assert_eq!(
        check(Some(&header), b"{}", STRIPE_T),
        Err(WebhookError::BadSignature)
    );
    // Several v1 (secret rotation): one matching is enough.
    let rotated = format!("t={STRIPE_T},v1={},v1={STRIPE_V1}", "1".repeat(64));
    assert_eq!(check(Some(&rotated), STRIPE_BODY, STRIPE_T), Ok(()));
    assert_eq!(
        check(None, STRIPE_BODY, STRIPE_T),
        Err(WebhookError::MissingHeader("Stripe-Signature".into()))
    );
    assert!(
        check(Some(&format!("v1={STRIPE_V1}")), STRIPE_BODY, STRIPE_T)
            .unwrap_err()
            .to_string()
            .contains("no t=")
    );
    assert!(
        check(Some(&format!("t={STRIPE_T}")), STRIPE_BODY, STRIPE_T)
            .unwrap_err()
            .to_string()
            .contains("no v1=")
    );
    assert!(
        check(Some("garbage"), STRIPE_BODY, STRIPE_T)
            .unwrap_err()
            .to_string()
            .contains("key=value")
    );
    assert!(
        check(Some("t=yesterday,v1=00"), STRIPE_BODY, STRIPE_T)
            .unwrap_err()
            .to_string()
            .contains("Unix timestamp")
    );
    let e = check(Some(&forged), STRIPE_BODY, STRIPE_T)
        .unwrap_err()
        .to_string();
    assert!(!e.contains(STRIPE_V1), "{e}");
}

#[test]
fn verifier_reads_headers_and_redacts_its_secret() {
    let now = at(STRIPE_T + 5);
    let mut headers = http::HeaderMap::new();
    headers.insert("x-hub-signature-256", GH_SIG.parse().unwrap());
    headers.insert(
        "stripe-signature",
        sign_stripe(STRIPE_SECRET, STRIPE_T, STRIPE_BODY)
            .parse()
            .unwrap(),
    );
    let gh = WebhookVerifier::new(Scheme::GitHub, GH_SECRET);
    assert_eq!(gh.verify(&headers, GH_BODY, now), Ok(()));
    assert!(!format!("{gh:?}").contains("Secret to Everybody"));
    let stripe = WebhookVerifier::new(
        Scheme::Stripe {
            tolerance: Duration::from_secs(300),
        },
        STRIPE_SECRET,
    );
    assert_eq!(stripe.verify(&headers, STRIPE_BODY, now), Ok(()));
    assert_eq!(
        stripe.verify(&headers, STRIPE_BODY, at(STRIPE_T + 600)),
        Err(WebhookError::TooOld {
            age_secs: 600,
            tolerance_secs: 300
        })
    );
    assert_eq!(
        stripe.verify(&http::HeaderMap::new(), STRIPE_BODY, now),
        Err(WebhookError::MissingHeader("Stripe-Signature".into()))
    );
}

#[test]
fn generic_header_in_hex_base64_and_prefixed() {
    let hex_sig = &GH_SIG[7..];
    let b64 = "dXEH6g6yUJ/CESIczphLijdXC211hsIsRvQ3nIsEPhc=";
    let v =
        |enc: &Encoding, h: &str| verify_generic(GH_SECRET, "X-Signature", enc, Some(h), GH_BODY);
    assert_eq!(v(&Encoding::Hex, hex_sig), Ok(()));
    assert_eq!(v(&Encoding::Base64, b64), Ok(()));
    assert_eq!(v(&Encoding::PrefixedHex, GH_SIG), Ok(()));
    assert_eq!(
        v(
            &Encoding::Base64,
            "dXEH6g6yUJ/CESIczphLijdXC211hsIsRvQ3nIsEPhg="
        ),
        Err(WebhookError::BadSignature)
    );
    assert!(
        v(&Encoding::Base64, "%%%")
            .unwrap_err()
            .to_string()
            .contains("not base64")
    );
    let mut headers = http::HeaderMap::new();
    headers.insert("x-signature", b64.parse().unwrap());
    let generic = WebhookVerifier::new(
        Scheme::Generic {
            header: "x-signature".into(),
            encoding: Encoding::Base64,
        },
        GH_SECRET,
    );
    assert_eq!(generic.verify(&headers, GH_BODY, at(0)), Ok(()));
    assert_eq!(
        generic.verify(&headers, b"other", at(0)),
        Err(WebhookError::BadSignature)
    );
}

#[test]
fn stripe_timestamps_far_from_now_are_refused_not_overflowed() {
    // Found by fuzz/fuzz_targets/webhook.rs: a correctly signed header with a t far in
    // the past made `now - t` overflow (a panic in debug builds, a wrong answer in release).
    let now = at(1_700_000_000);
    let t = -9_223_372_036_854_775_806;
    let header = sign_stripe(b"", t, b"");
    assert_eq!(
        verify_stripe(b"", Some(&header), b"", now, STRIPE_TOLERANCE),
        Err(WebhookError::TooOld {
            age_secs: i64::MAX,
            tolerance_secs: 300
        })
    );
    let header = sign_stripe(b"", i64::MAX, b"");
    assert!(matches!(
        verify_stripe(b"", Some(&header), b"", now, STRIPE_TOLERANCE),
        Err(WebhookError::InFuture { .. })
    ));
    // A tolerance over i64::MAX seconds accepts every timestamp rather than none.
    let header = sign_stripe(b"", STRIPE_T, b"");
    let forever = Duration::from_secs(u64::MAX);
    assert_eq!(verify_stripe(b"", Some(&header), b"", now, forever), Ok(()));
}
