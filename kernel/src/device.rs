//! Devices: field sensors registered by an operator and optionally bound to one space.

use chrono::{DateTime, Utc};

use crate::error::ValidationError;
use crate::ids::{DeviceId, OperatorId, SpaceId};
use crate::validate::{optional_text, required_text};

#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub id: DeviceId,
    pub operator_id: OperatorId,
    pub details: DeviceDetails,
    /// The space this device reports on; at most one device per space.
    pub space_id: Option<SpaceId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceDetails {
    /// The network identity: a LoRaWAN DevEUI (16 hex digits, stored upper case) or the vendor's
    /// serial. Unique per operator.
    pub external_id: String,
    pub vendor: String,
    pub model: String,
    pub name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DeviceInput {
    pub external_id: String,
    pub vendor: String,
    pub model: String,
    pub name: Option<String>,
    pub space_id: Option<SpaceId>,
}

impl DeviceInput {
    pub fn validate(&self) -> Result<DeviceDetails, ValidationError> {
        let external_id = required_text("external_id", &self.external_id, 64)?;
        if !external_id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':' | b'.')) {
            return Err(ValidationError::new("external_id", "may contain only letters, digits, '-', '_', ':' and '.'"));
        }
        let external_id = normalise_external_id(&external_id);
        Ok(DeviceDetails {
            external_id,
            vendor: slug_like("vendor", &self.vendor)?,
            model: slug_like("model", &self.model)?,
            name: optional_text("name", self.name.as_deref(), 200)?,
        })
    }
}

/// The stored spelling of an external id: a DevEUI is case-insensitive hex, kept upper case so
/// lookups from any network server match; other ids are kept as given (trimmed).
pub fn normalise_external_id(id: &str) -> String {
    let id = id.trim();
    let is_dev_eui = id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit());
    if is_dev_eui { id.to_ascii_uppercase() } else { id.to_owned() }
}

fn slug_like(field: &str, value: &str) -> Result<String, ValidationError> {
    let value = required_text(field, value, 64)?.to_ascii_lowercase();
    if !value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return Err(ValidationError::new(field, "may contain only letters, digits, '-', '_' and '.'"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_eui_is_normalised() {
        let input = DeviceInput {
            external_id: "70b3d57ed0001a2b".into(),
            vendor: "Browan".into(),
            model: "tbms100".into(),
            name: None,
            space_id: None,
        };
        let details = input.validate().unwrap();
        assert_eq!(details.external_id, "70B3D57ED0001A2B");
        assert_eq!(details.vendor, "browan");
    }
}
