//! Spaces (FIWARE `ParkingSpot`): one bay inside a site, with its live status.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::geo::GeoPoint;
use crate::ids::{OperatorId, SiteId, SpaceId};
use crate::validate::required_text;
use crate::vehicle_type::VehicleType;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpaceStatus {
    Free,
    Occupied,
    Closed,
    Unknown,
}

impl SpaceStatus {
    pub const ALL: [SpaceStatus; 4] =
        [SpaceStatus::Free, SpaceStatus::Occupied, SpaceStatus::Closed, SpaceStatus::Unknown];

    pub fn as_str(&self) -> &'static str {
        match self {
            SpaceStatus::Free => "free",
            SpaceStatus::Occupied => "occupied",
            SpaceStatus::Closed => "closed",
            SpaceStatus::Unknown => "unknown",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }
}

/// What kind of bay this is, beyond the vehicle it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpaceCategory {
    Standard,
    Compact,
    Large,
    Family,
    Loading,
    Staff,
}

impl SpaceCategory {
    pub const ALL: [SpaceCategory; 6] = [
        SpaceCategory::Standard,
        SpaceCategory::Compact,
        SpaceCategory::Large,
        SpaceCategory::Family,
        SpaceCategory::Loading,
        SpaceCategory::Staff,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            SpaceCategory::Standard => "standard",
            SpaceCategory::Compact => "compact",
            SpaceCategory::Large => "large",
            SpaceCategory::Family => "family",
            SpaceCategory::Loading => "loading",
            SpaceCategory::Staff => "staff",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|category| category.as_str() == text)
    }
}

/// A space is never further than this from its site's reference point: a larger distance is
/// almost always swapped latitude and longitude.
pub const MAX_SPACE_DISTANCE_FROM_SITE_M: f64 = 10_000.0;

/// At most this many spaces in one bulk request.
pub const MAX_SPACES_PER_BATCH: usize = 10_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Space {
    pub id: SpaceId,
    pub operator_id: OperatorId,
    pub site_id: SiteId,
    pub details: SpaceDetails,
    pub state: SpaceState,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// What the space shows now (sensor, age, override), when a sensor was ever heard. Filled by
    /// the reads that show spaces; `None` from storage.
    pub live: Option<crate::live::Effective>,
}

/// The operator-editable description of a space.
#[derive(Debug, Clone, PartialEq)]
pub struct SpaceDetails {
    /// Unique within the site, as painted on the bay (`A-13`).
    pub code: String,
    pub location: Option<GeoPoint>,
    pub category: SpaceCategory,
    pub vehicle_type: VehicleType,
    pub ev_charger: bool,
    pub accessible: bool,
}

/// The observed state of a space.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpaceState {
    pub status: SpaceStatus,
    pub status_since: DateTime<Utc>,
    /// 0.0 (no idea) to 1.0 (certain).
    pub confidence: f64,
}

impl SpaceState {
    pub fn unknown_since(at: DateTime<Utc>) -> Self {
        Self { status: SpaceStatus::Unknown, status_since: at, confidence: 0.0 }
    }
}

#[derive(Debug, Clone)]
pub struct SpaceInput {
    pub code: String,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub category: Option<SpaceCategory>,
    pub vehicle_type: Option<VehicleType>,
    pub ev_charger: bool,
    pub accessible: bool,
}

/// Partial update of a space. Setting `status` records an operator-declared state.
#[derive(Debug, Clone, Default)]
pub struct SpacePatch {
    pub code: Option<String>,
    pub location: Option<Option<(f64, f64)>>,
    pub category: Option<SpaceCategory>,
    pub vehicle_type: Option<VehicleType>,
    pub ev_charger: Option<bool>,
    pub accessible: Option<bool>,
    pub status: Option<SpaceStatus>,
}

impl SpaceInput {
    pub fn validate(&self, site_location: &GeoPoint) -> Result<SpaceDetails, ValidationError> {
        let code = validate_code(&self.code)?;
        let location = match (self.lat, self.lon) {
            (None, None) => None,
            (Some(lat), Some(lon)) => Some(validate_location(lat, lon, site_location)?),
            _ => return Err(ValidationError::new("location", "give both lat and lon, or neither")),
        };
        Ok(SpaceDetails {
            code,
            location,
            category: self.category.unwrap_or(SpaceCategory::Standard),
            vehicle_type: self.vehicle_type.unwrap_or(VehicleType::Car),
            ev_charger: self.ev_charger,
            accessible: self.accessible,
        })
    }
}

impl SpaceDetails {
    pub fn apply(&self, patch: &SpacePatch, site_location: &GeoPoint) -> Result<SpaceDetails, ValidationError> {
        let mut next = self.clone();
        if let Some(code) = &patch.code {
            next.code = validate_code(code)?;
        }
        if let Some(location) = patch.location {
            next.location = location.map(|(lat, lon)| validate_location(lat, lon, site_location)).transpose()?;
        }
        next.category = patch.category.unwrap_or(next.category);
        next.vehicle_type = patch.vehicle_type.unwrap_or(next.vehicle_type);
        next.ev_charger = patch.ev_charger.unwrap_or(next.ev_charger);
        next.accessible = patch.accessible.unwrap_or(next.accessible);
        Ok(next)
    }
}

fn validate_code(code: &str) -> Result<String, ValidationError> {
    required_text("code", code, 32)
}

fn validate_location(lat: f64, lon: f64, site_location: &GeoPoint) -> Result<GeoPoint, ValidationError> {
    let point = GeoPoint::new(lat, lon).map_err(|e| e.within("location"))?;
    let distance_m = point.distance_m(site_location);
    if distance_m > MAX_SPACE_DISTANCE_FROM_SITE_M {
        return Err(ValidationError::new(
            "location",
            format!(
                "is {:.1} km from the site; a space must be within {} km (are lat and lon swapped?)",
                distance_m / 1000.0,
                MAX_SPACE_DISTANCE_FROM_SITE_M / 1000.0
            ),
        ));
    }
    Ok(point)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swapped_coordinates_are_caught() {
        let site = GeoPoint::new(41.15, -8.61).unwrap();
        let input = SpaceInput {
            code: "A-1".into(),
            lat: Some(-8.61),
            lon: Some(41.15),
            category: None,
            vehicle_type: None,
            ev_charger: false,
            accessible: false,
        };
        let error = input.validate(&site).unwrap_err();
        assert_eq!(error.field, "location");
        assert!(error.message.contains("swapped"), "{}", error.message);
    }
}
