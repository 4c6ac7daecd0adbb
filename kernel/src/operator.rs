//! Operators: the tenants of the platform. Every site, space and device belongs to exactly one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::ids::OperatorId;
use crate::validate::required_text;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operator {
    pub id: OperatorId,
    pub name: String,
    /// Stable, URL-safe handle (`acme-parking`); unique across the platform.
    pub slug: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct OperatorInput {
    pub name: String,
    pub slug: String,
}

impl OperatorInput {
    pub fn validate(&self) -> Result<(String, String), ValidationError> {
        let name = required_text("name", &self.name, 200)?;
        let slug = self.slug.trim().to_owned();
        let slug_ok = (2..=63).contains(&slug.len())
            && slug.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !slug.starts_with('-')
            && !slug.ends_with('-');
        if !slug_ok {
            return Err(ValidationError::new(
                "slug",
                "must be 2-63 characters of a-z, 0-9 and '-', not starting or ending with '-'",
            ));
        }
        Ok((name, slug))
    }
}
