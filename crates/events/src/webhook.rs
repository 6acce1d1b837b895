//! Webhook signature checks: HMAC-SHA256 over the raw body, compared in constant time
//! (`hmac`'s `verify_slice`). Errors say what was wrong, never what was expected.
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

pub const GITHUB_HEADER: &str = "x-hub-signature-256";
pub const STRIPE_HEADER: &str = "stripe-signature";
/// Stripe's default tolerance: signatures older than this are refused as replays.
pub const STRIPE_TOLERANCE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("missing signature header {0}")]
    MissingHeader(String),
    #[error("malformed signature header {header}: {reason}")]
    Malformed { header: String, reason: String },
    #[error(
        "signature does not match the body (wrong secret, or the body was changed or re-encoded)"
    )]
    BadSignature,
    #[error(
        "signature timestamp is {age_secs} s old, over the {tolerance_secs} s tolerance (a replay?)"
    )]
    TooOld { age_secs: i64, tolerance_secs: u64 },
    #[error(
        "signature timestamp is {ahead_secs} s in the future, over the {tolerance_secs} s tolerance"
    )]
    InFuture {
        ahead_secs: i64,
        tolerance_secs: u64,
    },
}

/// How a generic signature header encodes the HMAC-SHA256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// `sha256=<hex>` (GitHub's form).
    PrefixedHex,
    Hex,
    Base64,
}

/// The signature scheme of a webhook endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scheme {
    GitHub,
    Stripe { tolerance: Duration },
    Generic { header: String, encoding: Encoding },
}

/// A configured check: scheme plus secret. `Debug` does not print the secret.
#[derive(Clone)]
pub struct WebhookVerifier {
    pub scheme: Scheme,
    secret: Vec<u8>,
}

impl fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookVerifier")
            .field("scheme", &self.scheme)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl WebhookVerifier {
    pub fn new(scheme: Scheme, secret: impl Into<Vec<u8>>) -> Self {
        Self {
            scheme,
            secret: secret.into(),
        }
    }

    /// Checks `body` (the raw bytes as received) against the request's headers.
    pub fn verify(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
        now: Timestamp,
    ) -> Result<(), WebhookError> {
        let get = |name: &str| -> Result<Option<&str>, WebhookError> {
            headers
                .get(name)
                .map(|v| {
                    v.to_str().map_err(|_| WebhookError::Malformed {
                        header: name.to_string(),
                        reason: "not visible ASCII".into(),
                    })
                })
                .transpose()
        };
        match &self.scheme {
            Scheme::GitHub => verify_github(&self.secret, get(GITHUB_HEADER)?, body),
            Scheme::Stripe { tolerance } => {
                verify_stripe(&self.secret, get(STRIPE_HEADER)?, body, now, *tolerance)
            }
            Scheme::Generic { header, encoding } => {
                verify_generic(&self.secret, header, encoding, get(header)?, body)
            }
        }
    }
}

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; the error case cannot happen.
    HmacSha256::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
}

fn malformed(header: &str, reason: &str) -> WebhookError {
    WebhookError::Malformed {
        header: header.to_string(),
        reason: reason.to_string(),
    }
}

fn decode_hex(header: &str, s: &str) -> Result<Vec<u8>, WebhookError> {
    let bytes = hex::decode(s.trim()).map_err(|_| malformed(header, "the signature is not hex"))?;
    if bytes.len() != 32 {
        return Err(malformed(header, "a SHA-256 signature is 64 hex digits"));
    }
    Ok(bytes)
}

/// GitHub: `X-Hub-Signature-256: sha256=<hex HMAC of the body>`.
pub fn verify_github(secret: &[u8], header: Option<&str>, body: &[u8]) -> Result<(), WebhookError> {
    verify_generic(
        secret,
        "X-Hub-Signature-256",
        &Encoding::PrefixedHex,
        header,
        body,
    )
}

/// Any header holding the HMAC-SHA256 of the body in `encoding`.
pub fn verify_generic(
    secret: &[u8],
    name: &str,
    encoding: &Encoding,
    header: Option<&str>,
    body: &[u8],
) -> Result<(), WebhookError> {
    let value = header
        .ok_or_else(|| WebhookError::MissingHeader(name.to_string()))?
        .trim();
    let sig = match encoding {
        Encoding::PrefixedHex => {
            let hex = value
                .strip_prefix("sha256=")
                .ok_or_else(|| malformed(name, "expected sha256=<hex>"))?;
            decode_hex(name, hex)?
        }
        Encoding::Hex => decode_hex(name, value)?,
        Encoding::Base64 => BASE64
            .decode(value)
            .map_err(|_| malformed(name, "the signature is not base64"))?,
    };
    let mut m = mac(secret);
    m.update(body);
    m.verify_slice(&sig).map_err(|_| WebhookError::BadSignature)
}

/// Stripe: `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]`, each `v1` the
/// HMAC-SHA256 of `"<t>.<body>"` (several during a secret rotation; any one matching is
/// enough). As Stripe's libraries do, the signature is checked first and the timestamp
/// (within `tolerance` of `now`, either way) second.
pub fn verify_stripe(
    secret: &[u8],
    header: Option<&str>,
    body: &[u8],
    now: Timestamp,
    tolerance: Duration,
) -> Result<(), WebhookError> {
    const NAME: &str = "Stripe-Signature";
    let value = header.ok_or_else(|| WebhookError::MissingHeader(NAME.into()))?;
    let mut t = None;
    let mut sigs = Vec::new();
    for part in value.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or_else(|| malformed(NAME, "expected comma-separated key=value pairs"))?;
        match k {
            "t" => {
                t = Some(
                    v.parse::<i64>()
                        .map_err(|_| malformed(NAME, "t is not a Unix timestamp"))?,
                )
            }
            "v1" => sigs.push(decode_hex(NAME, v)?),
            _ => {} // v0 (test mode) and future schemes are ignored, as Stripe does.
        }
    }
    let t = t.ok_or_else(|| malformed(NAME, "no t= timestamp"))?;
    if sigs.is_empty() {
        return Err(malformed(NAME, "no v1= signature"));
    }
    let mut m = mac(secret);
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    if !sigs.iter().any(|s| m.clone().verify_slice(s).is_ok()) {
        return Err(WebhookError::BadSignature);
    }
    // In i128: a signed `t` far from now (t=-9223372036854775806) overflowed i64, and a
    // tolerance over i64::MAX seconds turned negative.
    let age = i128::from(now.as_second()) - i128::from(t);
    let tolerance_secs = tolerance.as_secs();
    let secs = |n: i128| i64::try_from(n).unwrap_or(i64::MAX);
    if age > i128::from(tolerance_secs) {
        return Err(WebhookError::TooOld {
            age_secs: secs(age),
            tolerance_secs,
        });
    }
    if -age > i128::from(tolerance_secs) {
        return Err(WebhookError::InFuture {
            ahead_secs: secs(-age),
            tolerance_secs,
        });
    }
    Ok(())
}

/// `sha256=<hex>` for `body`: what GitHub sends (and what Wisp sends for outgoing webhooks).
pub fn sign_github(secret: &[u8], body: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// `t=<t>,v1=<hex>` for `body` at Unix time `t`: what Stripe sends.
pub fn sign_stripe(secret: &[u8], t: i64, body: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(format!("{t}.").as_bytes());
    m.update(body);
    format!("t={t},v1={}", hex::encode(m.finalize().into_bytes()))
}
