//! Stripe webhook signatures (`Stripe-Signature: t=<unix secs>,v1=<hex>[,v1=...][,v0=...]`):
//! HMAC-SHA256 keyed with the endpoint secret over `"<t>.<raw body>"`.
//!
//! Verification accepts any `v1` entry under any of the configured secrets (so secrets can be
//! rotated without dropping events) and ignores `v0` (Stripe's legacy test-mode scheme). It
//! works on the raw bytes as received: re-serialised JSON would not verify.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Stripe's default tolerance between the signed timestamp and the receiver's clock.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// Why a `Stripe-Signature` header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header has no valid timestamp (t=...)")]
    MissingTimestamp,
    #[error("the signature header has no v1 signature")]
    NoV1Signature,
    #[error("no webhook secret is configured")]
    NoSecretConfigured,
    #[error("the signature timestamp is {skew_secs} s away from now, beyond the tolerance of {tolerance_secs} s")]
    TimestampOutsideTolerance { skew_secs: u64, tolerance_secs: i64 },
    #[error("no v1 signature matches the body under any configured secret")]
    NoSignatureMatches,
}

/// Checks `header` (the `Stripe-Signature` value) against the raw `body`.
///
/// Passes when any `v1` entry matches under any of `secrets` (compared in constant time) and
/// the signed timestamp is within `tolerance_secs` of `now_unix`, in either direction.
pub fn verify(
    header: &str,
    body: &[u8],
    secrets: &[String],
    now_unix: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let parsed = ParsedHeader::parse(header);
    let timestamp = parsed.timestamp.ok_or(SignatureError::MissingTimestamp)?;
    if parsed.v1_signatures.is_empty() {
        return Err(SignatureError::NoV1Signature);
    }
    if secrets.is_empty() {
        return Err(SignatureError::NoSecretConfigured);
    }
    // The signature is checked before the clock, as Stripe's SDKs do: "outside tolerance" then
    // only ever describes an authentic but replayed (or clock-skewed) delivery.
    let matches = secrets.iter().any(|secret| {
        parsed.v1_signatures.iter().any(|signature| {
            let mac = keyed_mac(secret, timestamp, body);
            // `verify_slice` compares in constant time.
            mac.verify_slice(signature).is_ok()
        })
    });
    if !matches {
        return Err(SignatureError::NoSignatureMatches);
    }
    let skew_secs = now_unix.abs_diff(timestamp);
    if skew_secs > tolerance_secs.max(0).unsigned_abs() {
        return Err(SignatureError::TimestampOutsideTolerance { skew_secs, tolerance_secs });
    }
    Ok(())
}

/// The full `Stripe-Signature` header value (`t=<timestamp>,v1=<hex>`) for `body`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let signature = keyed_mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(signature))
}

fn keyed_mac(secret: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The parts of a `Stripe-Signature` header that matter; unknown and malformed entries are
/// skipped, as Stripe's SDKs do.
struct ParsedHeader {
    timestamp: Option<i64>,
    v1_signatures: Vec<Vec<u8>>,
}

impl ParsedHeader {
    fn parse(header: &str) -> Self {
        let mut timestamp = None;
        let mut v1_signatures = Vec::new();
        for (key, value) in header.split(',').filter_map(|item| item.trim().split_once('=')) {
            match key.trim() {
                "t" => timestamp = value.trim().parse::<i64>().ok(),
                "v1" => {
                    if let Ok(signature) = hex::decode(value.trim()) {
                        v1_signatures.push(signature);
                    }
                }
                _ => {}
            }
        }
        Self { timestamp, v1_signatures }
    }
}
