//! Identity: who is calling (a [`Principal`]), API keys, and driver passwords.
//!
//! API keys are 32 random bytes, shown once, stored only as their SHA-256. Lookup is by that hash,
//! and the final comparison is constant-time. Driver passwords are hashed with argon2id.

use std::fmt;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ValidationError;
use crate::ids::{ApiKeyId, DriverId, OperatorId};
use crate::validate::required_text;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiKeyKind {
    /// Manages operators and platform keys; sees no operator data.
    PlatformAdmin,
    /// Manages one operator's sites, spaces and devices.
    Operator,
    /// Pushes device data for one operator (network servers, gateways).
    Integration,
}

impl ApiKeyKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ApiKeyKind::PlatformAdmin => "platform_admin",
            ApiKeyKind::Operator => "operator",
            ApiKeyKind::Integration => "integration",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [ApiKeyKind::PlatformAdmin, ApiKeyKind::Operator, ApiKeyKind::Integration]
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }

    /// The visible prefix of keys of this kind, so that leaked keys are recognisable by scanners.
    fn token_prefix(&self) -> &'static str {
        match self {
            ApiKeyKind::PlatformAdmin => "berth_adm_",
            ApiKeyKind::Operator => "berth_op_",
            ApiKeyKind::Integration => "berth_int_",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorRole {
    /// Read and write everything of the operator, including its keys.
    OperatorAdmin,
    /// Read-only.
    OperatorStaff,
}

impl OperatorRole {
    pub fn as_str(&self) -> &'static str {
        match self {
            OperatorRole::OperatorAdmin => "operator_admin",
            OperatorRole::OperatorStaff => "operator_staff",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [OperatorRole::OperatorAdmin, OperatorRole::OperatorStaff].into_iter().find(|role| role.as_str() == text)
    }
}

/// A stored API key. The secret itself is never stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    /// `None` only for platform-admin keys.
    pub operator_id: Option<OperatorId>,
    pub kind: ApiKeyKind,
    /// Set for operator keys.
    pub role: Option<OperatorRole>,
    pub name: String,
    /// The first characters of the token, for recognising a key in a list.
    pub display_prefix: String,
    pub secret_hash: SecretHash,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// SHA-256 of a key's token.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecretHash(pub [u8; 32]);

impl SecretHash {
    pub fn of(token: &str) -> Self {
        SecretHash(Sha256::digest(token.as_bytes()).into())
    }

    pub fn matches(&self, other: &SecretHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

/// A freshly generated key's plaintext token. Shown to the caller once, then dropped.
pub struct IssuedToken(pub String);

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IssuedToken(<redacted>)")
    }
}

/// Generates the token for a new key of `kind`: `berth_op_` + 43 base64url characters (256 bits).
pub fn generate_token(kind: ApiKeyKind) -> IssuedToken {
    let mut secret = [0u8; 32];
    OsRng.fill_bytes(&mut secret);
    let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    IssuedToken(format!("{}{body}", kind.token_prefix()))
}

/// Length of [`ApiKey::display_prefix`]: the kind prefix plus a few random characters.
pub fn display_prefix(token: &str) -> String {
    let kind_len = token.find('_').and_then(|first| token[first + 1..].find('_').map(|second| first + second + 2));
    token.chars().take(kind_len.unwrap_or(0) + 6).collect()
}

pub fn validate_key_name(name: &str) -> Result<String, ValidationError> {
    required_text("name", name, 100)
}

/// Compares a presented secret with the configured one without leaking the length of the common
/// prefix through timing (both sides are hashed to a fixed size first).
pub fn secrets_equal(presented: &str, expected: &str) -> bool {
    SecretHash::of(presented).matches(&SecretHash::of(expected))
}

/// The authenticated caller of a kernel service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// `key_id` is `None` for the bootstrap key from configuration.
    PlatformAdmin {
        key_id: Option<ApiKeyId>,
    },
    Operator {
        operator_id: OperatorId,
        role: OperatorRole,
        key_id: ApiKeyId,
    },
    Integration {
        operator_id: OperatorId,
        key_id: ApiKeyId,
    },
    Driver {
        driver_id: DriverId,
    },
}

/// Whether an operation reads or changes operator data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Hashes a driver password with argon2id and a random salt (PHC string format).
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .expect("invariant: argon2 with default parameters hashes any password under 4 GiB")
}

/// Verifies a password against a PHC hash; a malformed hash is treated as a mismatch.
pub fn verify_password(password: &str, phc_hash: &str) -> bool {
    PasswordHash::new(phc_hash)
        .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        .unwrap_or(false)
}

/// A valid hash of a random password: verifying against it costs what a real check costs, so a
/// login for an unknown e-mail takes as long as one with a wrong password.
pub fn decoy_password_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let mut random = [0u8; 24];
        OsRng.fill_bytes(&mut random);
        hash_password(&base64::engine::general_purpose::STANDARD.encode(random))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_prefixed_and_hash_stably() {
        let first = generate_token(ApiKeyKind::Operator);
        let second = generate_token(ApiKeyKind::Operator);
        assert_ne!(first.0, second.0);
        assert!(first.0.starts_with("berth_op_"));
        assert_eq!(first.0.len(), "berth_op_".len() + 43);
        assert_eq!(display_prefix(&first.0), first.0[..15]);
        assert!(SecretHash::of(&first.0).matches(&SecretHash::of(&first.0)));
        assert!(!SecretHash::of(&first.0).matches(&SecretHash::of(&second.0)));
        assert_eq!(format!("{first:?}"), "IssuedToken(<redacted>)");
    }

    #[test]
    fn passwords_verify() {
        let hash = hash_password("correct horse battery");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("wrong horse battery", &hash));
        assert!(!verify_password("x", "not a hash"));
    }
}
