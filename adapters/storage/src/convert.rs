//! Row <-> kernel conversions. A row that does not convert is corrupt storage, reported as a
//! backend error naming the table and id rather than a panic.

use berth_kernel::StoreError;
use berth_kernel::auth::{ApiKey, ApiKeyKind, OperatorRole, SecretHash};
use berth_kernel::device::{Device, DeviceDetails};
use berth_kernel::driver::{Driver, Email, Plate, Vehicle};
use berth_kernel::geo::GeoPoint;
use berth_kernel::ids::{ApiKeyId, DeviceId, DriverId, OperatorId, SiteId, SpaceId, VehicleId};
use berth_kernel::operator::Operator;
use berth_kernel::site::{Currency, Site, SiteDetails, SiteKind, Timezone};
use berth_kernel::space::{Space, SpaceCategory, SpaceDetails, SpaceState, SpaceStatus};
use berth_kernel::vehicle_type::VehicleType;
use uuid::Uuid;

use crate::entity;

pub(crate) fn corrupt(table: &str, id: Uuid, what: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("corrupt row in {table} {id}: {what}"))
}

pub fn hash_to_hex(hash: &SecretHash) -> String {
    hash.0.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn hex_to_hash(hex: &str) -> Option<SecretHash> {
    if hex.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (idx, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(idx * 2..idx * 2 + 2)?, 16).ok()?;
    }
    Some(SecretHash(bytes))
}

pub fn operator_from_row(row: entity::operator::Model) -> Operator {
    Operator { id: OperatorId::from_uuid(row.id), name: row.name, slug: row.slug, created_at: row.created_at }
}

pub fn api_key_from_row(row: entity::api_key::Model) -> Result<ApiKey, StoreError> {
    let kind = ApiKeyKind::parse(&row.kind).ok_or_else(|| corrupt("api_keys", row.id, "kind"))?;
    let role = row
        .role
        .as_deref()
        .map(|role| OperatorRole::parse(role).ok_or_else(|| corrupt("api_keys", row.id, "role")))
        .transpose()?;
    let secret_hash = hex_to_hash(&row.secret_hash).ok_or_else(|| corrupt("api_keys", row.id, "secret_hash"))?;
    Ok(ApiKey {
        id: ApiKeyId::from_uuid(row.id),
        operator_id: row.operator_id.map(OperatorId::from_uuid),
        kind,
        role,
        name: row.name,
        display_prefix: row.display_prefix,
        secret_hash,
        created_at: row.created_at,
        revoked_at: row.revoked_at,
    })
}

pub fn site_to_row(site: &Site) -> entity::site::Model {
    let details = &site.details;
    entity::site::Model {
        id: site.id.as_uuid(),
        operator_id: site.operator_id.as_uuid(),
        kind: details.kind.as_str().to_owned(),
        name: details.name.clone(),
        description: details.description.clone(),
        lat: details.location.lat(),
        lon: details.location.lon(),
        address: to_json(&details.address),
        timezone: details.timezone.name().to_owned(),
        currency: details.currency.code(),
        opening_hours: to_json(&details.opening_hours),
        max_stay_minutes: details.max_stay_minutes.map(|minutes| minutes as i32),
        allowed_vehicle_types: to_json(&details.allowed_vehicle_types),
        max_height_cm: details.max_height_cm.map(|height| height as i32),
        created_at: site.created_at,
        updated_at: site.updated_at,
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("invariant: kernel value types serialise to JSON")
}

pub fn site_from_row(row: entity::site::Model) -> Result<Site, StoreError> {
    let id = row.id;
    let bad = |what: &str| corrupt("sites", id, what);
    let details = SiteDetails {
        kind: SiteKind::parse(&row.kind).ok_or_else(|| bad("kind"))?,
        name: row.name,
        description: row.description,
        location: GeoPoint::new(row.lat, row.lon).map_err(|_| bad("location"))?,
        address: serde_json::from_str(&row.address).map_err(|_| bad("address"))?,
        timezone: Timezone::parse(&row.timezone).map_err(|_| bad("timezone"))?,
        currency: Currency::parse(&row.currency).map_err(|_| bad("currency"))?,
        opening_hours: serde_json::from_str(&row.opening_hours).map_err(|_| bad("opening_hours"))?,
        max_stay_minutes: row.max_stay_minutes.map(|minutes| minutes as u32),
        allowed_vehicle_types: serde_json::from_str(&row.allowed_vehicle_types)
            .map_err(|_| bad("allowed_vehicle_types"))?,
        max_height_cm: row.max_height_cm.map(|height| height as u32),
    };
    Ok(Site {
        id: SiteId::from_uuid(row.id),
        operator_id: OperatorId::from_uuid(row.operator_id),
        details,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

pub fn space_to_row(space: &Space) -> entity::space::Model {
    let details = &space.details;
    entity::space::Model {
        id: space.id.as_uuid(),
        operator_id: space.operator_id.as_uuid(),
        site_id: space.site_id.as_uuid(),
        code: details.code.clone(),
        lat: details.location.map(|point| point.lat()),
        lon: details.location.map(|point| point.lon()),
        category: details.category.as_str().to_owned(),
        vehicle_type: details.vehicle_type.as_str().to_owned(),
        ev_charger: details.ev_charger,
        accessible: details.accessible,
        status: space.state.status.as_str().to_owned(),
        status_since: space.state.status_since,
        confidence: space.state.confidence,
        created_at: space.created_at,
        updated_at: space.updated_at,
    }
}

pub fn space_from_row(row: entity::space::Model) -> Result<Space, StoreError> {
    let id = row.id;
    let bad = |what: &str| corrupt("spaces", id, what);
    let location = match (row.lat, row.lon) {
        (Some(lat), Some(lon)) => Some(GeoPoint::new(lat, lon).map_err(|_| bad("location"))?),
        _ => None,
    };
    Ok(Space {
        id: SpaceId::from_uuid(row.id),
        operator_id: OperatorId::from_uuid(row.operator_id),
        site_id: SiteId::from_uuid(row.site_id),
        details: SpaceDetails {
            code: row.code,
            location,
            category: SpaceCategory::parse(&row.category).ok_or_else(|| bad("category"))?,
            vehicle_type: VehicleType::parse(&row.vehicle_type).ok_or_else(|| bad("vehicle_type"))?,
            ev_charger: row.ev_charger,
            accessible: row.accessible,
        },
        state: SpaceState {
            status: SpaceStatus::parse(&row.status).ok_or_else(|| bad("status"))?,
            status_since: row.status_since,
            confidence: row.confidence,
        },
        created_at: row.created_at,
        updated_at: row.updated_at,
        live: None,
    })
}

pub fn device_to_row(device: &Device) -> entity::device::Model {
    entity::device::Model {
        id: device.id.as_uuid(),
        operator_id: device.operator_id.as_uuid(),
        external_id: device.details.external_id.clone(),
        vendor: device.details.vendor.clone(),
        model: device.details.model.clone(),
        name: device.details.name.clone(),
        space_id: device.space_id.map(|id| id.as_uuid()),
        created_at: device.created_at,
        updated_at: device.updated_at,
    }
}

pub fn device_from_row(row: entity::device::Model) -> Device {
    Device {
        id: DeviceId::from_uuid(row.id),
        operator_id: OperatorId::from_uuid(row.operator_id),
        details: DeviceDetails { external_id: row.external_id, vendor: row.vendor, model: row.model, name: row.name },
        space_id: row.space_id.map(SpaceId::from_uuid),
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

pub fn driver_from_row(row: &entity::driver::Model) -> Result<Driver, StoreError> {
    let email = row
        .email
        .as_deref()
        .map(|email| Email::parse(email).map_err(|_| corrupt("drivers", row.id, "email")))
        .transpose()?;
    Ok(Driver {
        id: DriverId::from_uuid(row.id),
        email,
        display_name: row.display_name.clone(),
        external_subject: row.external_subject.clone(),
        created_at: row.created_at,
    })
}

pub fn vehicle_from_row(row: entity::vehicle::Model) -> Result<Vehicle, StoreError> {
    let bad = |what: &str| corrupt("vehicles", row.id, what);
    Ok(Vehicle {
        id: VehicleId::from_uuid(row.id),
        driver_id: DriverId::from_uuid(row.driver_id),
        plate: Plate::parse(&row.plate).map_err(|_| bad("plate"))?,
        vehicle_type: VehicleType::parse(&row.vehicle_type).ok_or_else(|| bad("vehicle_type"))?,
        label: row.label,
        created_at: row.created_at,
    })
}
