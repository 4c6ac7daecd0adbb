//! Kernel errors. The HTTP layer maps each variant to one status code in one place.

use thiserror::Error;

/// A field-level validation failure: `field` uses the wire name (`location.lat`, `spaces[3].code`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }

    /// Prefixes the field path, e.g. `code` inside item 3 becomes `spaces[3].code`.
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = if self.field.is_empty() {
            prefix.to_owned()
        } else if self.field.starts_with('[') {
            format!("{prefix}{}", self.field)
        } else {
            format!("{prefix}.{}", self.field)
        };
        self
    }
}

/// What a storage adapter reports. Adapters never leak driver-specific error types.
#[derive(Debug, Clone, Error)]
pub enum StoreError {
    /// A uniqueness constraint was hit; the message names what collided.
    #[error("{0}")]
    Conflict(String),
    /// A referenced row does not exist (foreign key).
    #[error("{0}")]
    MissingReference(String),
    /// The database could not be reached or the operation failed.
    #[error("storage failure: {0}")]
    Backend(String),
}

#[derive(Debug, Error)]
pub enum KernelError {
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// The resource does not exist *for this caller*; other tenants' resources also answer this.
    #[error("{kind} not found")]
    NotFound { kind: &'static str },
    #[error("{0}")]
    Conflict(String),
    /// Authenticated, but this principal may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// Missing, malformed, expired or revoked credentials.
    #[error("{0}")]
    Unauthenticated(String),
    #[error(transparent)]
    Store(StoreError),
    /// The operator's rules refuse this; the message is their reason, for the driver.
    #[error("{0}")]
    NotAllowed(String),
    /// The operator's rules failed and their error policy is to refuse.
    #[error("{0}")]
    RuleFailed(String),
    /// A dependency other than storage cannot serve now; the message says which.
    #[error("{0}")]
    Unavailable(String),
}

impl From<StoreError> for KernelError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(message) => KernelError::Conflict(message),
            other => KernelError::Store(other),
        }
    }
}

impl KernelError {
    pub fn not_found(kind: &'static str) -> Self {
        KernelError::NotFound { kind }
    }
}

pub type KernelResult<T> = Result<T, KernelError>;
