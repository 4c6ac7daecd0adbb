//! Wire types (JSON shapes of the API) and their conversions from and to kernel types. Kernel
//! types never derive poem traits; this module is the only place that knows both.

use berth_kernel::auth::{ApiKey, ApiKeyKind, OperatorRole};
use berth_kernel::device::Device;
use berth_kernel::driver::{Driver, Vehicle};
use berth_kernel::geo::GeoPoint;
use berth_kernel::operator::Operator;
use berth_kernel::site::{self, OpeningHours, OpeningHoursInput, Site, SiteKind};
use berth_kernel::space::{Space, SpaceCategory, SpaceStatus};
use berth_kernel::vehicle_type::VehicleType;
use chrono::{DateTime, Utc};
use poem_openapi::Object;
use poem_openapi::types::MaybeUndefined;
use uuid::Uuid;

/// Declares a wire enum mirroring a kernel enum, with conversions both ways.
macro_rules! mirror_enum {
    ($(#[$meta:meta])* $wire:ident <=> $kernel:ident { $($variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, ::poem_openapi::Enum)]
        #[oai(rename_all = "snake_case")]
        pub enum $wire { $($variant),+ }

        impl From<$wire> for $kernel {
            fn from(value: $wire) -> Self {
                match value { $($wire::$variant => $kernel::$variant),+ }
            }
        }

        impl From<$kernel> for $wire {
            fn from(value: $kernel) -> Self {
                match value { $($kernel::$variant => $wire::$variant),+ }
            }
        }
    };
}

mirror_enum!(
    /// Vehicle category (FIWARE `allowedVehicleType`, snake_case).
    VehicleTypeDto <=> VehicleType { Car, Motorcycle, Moped, Bicycle, Van, Lorry, Bus, CarWithTrailer, Caravan }
);
mirror_enum!(
    /// `off_street`: a lot or garage; `on_street`: a kerbside zone.
    SiteKindDto <=> SiteKind { OffStreet, OnStreet }
);
mirror_enum!(
    /// Kind of bay.
    SpaceCategoryDto <=> SpaceCategory { Standard, Compact, Large, Family, Loading, Staff }
);
mirror_enum!(
    /// Observed status of a space.
    SpaceStatusDto <=> SpaceStatus { Free, Occupied, Closed, Unknown }
);
mirror_enum!(
    /// What a key may do: manage the platform, manage one operator, or push one operator's device data.
    ApiKeyKindDto <=> ApiKeyKind { PlatformAdmin, Operator, Integration }
);
mirror_enum!(
    /// `operator_admin` reads and writes; `operator_staff` only reads.
    OperatorRoleDto <=> OperatorRole { OperatorAdmin, OperatorStaff }
);

/// Opaque cursor for the next page; pass it back as `after`.
pub fn cursor(next_after: Option<Uuid>) -> Option<String> {
    next_after.map(|id| id.simple().to_string())
}

macro_rules! page_type {
    ($(#[$meta:meta])* $name:ident of $item:ty) => {
        $(#[$meta])*
        #[derive(Debug, Object)]
        pub struct $name {
            pub items: Vec<$item>,
            /// Cursor of the next page (pass as `after`); absent on the last page.
            #[oai(skip_serializing_if_is_none)]
            pub next_cursor: Option<String>,
        }

        impl<T: Into<$item>> From<::berth_kernel::page::Page<T>> for $name {
            fn from(page: ::berth_kernel::page::Page<T>) -> Self {
                Self { next_cursor: $crate::dto::cursor(page.next_after), items: page.items.into_iter().map(Into::into).collect() }
            }
        }
    };
}

// ----- operators and keys ---------------------------------------------------------------------

#[derive(Debug, Object)]
pub struct OperatorCreate {
    /// Display name.
    pub name: String,
    /// URL-safe handle, unique: 2-63 of `a-z 0-9 -`.
    pub slug: String,
}

#[derive(Debug, Object)]
pub struct OperatorView {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub created_at: DateTime<Utc>,
}

impl From<Operator> for OperatorView {
    fn from(operator: Operator) -> Self {
        Self { id: operator.id.as_uuid(), name: operator.name, slug: operator.slug, created_at: operator.created_at }
    }
}

page_type!(OperatorPage of OperatorView);

#[derive(Debug, Object)]
pub struct ApiKeyCreate {
    /// What the key is for (`ttn-integration`, `back-office`).
    pub name: String,
    pub kind: ApiKeyKindDto,
    /// For operator keys; defaults to `operator_staff` (read-only).
    pub role: Option<OperatorRoleDto>,
}

#[derive(Debug, Object)]
pub struct ApiKeyView {
    pub id: Uuid,
    #[oai(skip_serializing_if_is_none)]
    pub operator_id: Option<Uuid>,
    pub kind: ApiKeyKindDto,
    #[oai(skip_serializing_if_is_none)]
    pub role: Option<OperatorRoleDto>,
    pub name: String,
    /// The first characters of the token, to recognise it.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    #[oai(skip_serializing_if_is_none)]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKey> for ApiKeyView {
    fn from(key: ApiKey) -> Self {
        Self {
            id: key.id.as_uuid(),
            operator_id: key.operator_id.map(|id| id.as_uuid()),
            kind: key.kind.into(),
            role: key.role.map(Into::into),
            name: key.name,
            prefix: key.display_prefix,
            created_at: key.created_at,
            revoked_at: key.revoked_at,
        }
    }
}

page_type!(ApiKeyPage of ApiKeyView);

impl From<ApiKeyCreate> for berth_kernel::service::ApiKeyInput {
    fn from(create: ApiKeyCreate) -> Self {
        Self { name: create.name, kind: create.kind.into(), role: create.role.map(Into::into) }
    }
}

#[derive(Debug, Object)]
pub struct ApiKeyCreated {
    pub key: ApiKeyView,
    /// The secret token. Shown only in this response: store it now.
    pub token: String,
}

impl From<(ApiKey, berth_kernel::auth::IssuedToken)> for ApiKeyCreated {
    fn from((key, token): (ApiKey, berth_kernel::auth::IssuedToken)) -> Self {
        Self { key: key.into(), token: token.0 }
    }
}

// ----- sites ----------------------------------------------------------------------------------

/// A WGS84 point.
#[derive(Debug, Clone, Copy, Object)]
pub struct GeoPointDto {
    /// Latitude in degrees, -90 to 90.
    pub lat: f64,
    /// Longitude in degrees, -180 to 180.
    pub lon: f64,
}

impl From<GeoPoint> for GeoPointDto {
    fn from(point: GeoPoint) -> Self {
        Self { lat: point.lat(), lon: point.lon() }
    }
}

#[derive(Debug, Clone, Default, Object)]
pub struct AddressDto {
    #[oai(skip_serializing_if_is_none)]
    pub street: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub locality: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub postal_code: Option<String>,
    /// ISO 3166-1 alpha-2 (`PT`).
    #[oai(skip_serializing_if_is_none)]
    pub country: Option<String>,
}

impl From<AddressDto> for site::Address {
    fn from(address: AddressDto) -> Self {
        Self {
            street: address.street,
            locality: address.locality,
            postal_code: address.postal_code,
            country: address.country,
        }
    }
}

impl From<site::Address> for AddressDto {
    fn from(address: site::Address) -> Self {
        Self {
            street: address.street,
            locality: address.locality,
            postal_code: address.postal_code,
            country: address.country,
        }
    }
}

/// On `days`, open from `opens` to `closes` (local time, `HH:MM`; `closes` ≤ `opens` runs past
/// midnight; `00:00`-`24:00` is all day).
#[derive(Debug, Clone, Object)]
pub struct OpeningHoursDto {
    /// `mon` .. `sun`.
    pub days: Vec<String>,
    pub opens: String,
    pub closes: String,
}

impl From<OpeningHoursDto> for OpeningHoursInput {
    fn from(hours: OpeningHoursDto) -> Self {
        Self { days: hours.days, opens: hours.opens, closes: hours.closes }
    }
}

impl From<OpeningHours> for OpeningHoursDto {
    fn from(hours: OpeningHours) -> Self {
        Self {
            days: hours.days.iter().map(|day| site::weekday_code(*day).to_owned()).collect(),
            opens: OpeningHours::format_clock(hours.opens_min),
            closes: OpeningHours::format_clock(hours.closes_min),
        }
    }
}

#[derive(Debug, Object)]
pub struct SiteCreate {
    pub kind: SiteKindDto,
    pub name: String,
    pub description: Option<String>,
    /// Reference point: the entrance of a lot, the middle of a zone.
    pub location: GeoPointDto,
    pub address: Option<AddressDto>,
    /// IANA time zone (`Europe/Lisbon`): prices and opening hours are in this zone.
    pub timezone: String,
    /// ISO 4217 code (`EUR`); all prices at this site are in it.
    pub currency: String,
    /// Empty or absent: open around the clock.
    #[oai(default)]
    pub opening_hours: Vec<OpeningHoursDto>,
    pub max_stay_minutes: Option<u32>,
    /// Defaults to `[car]`.
    #[oai(default)]
    pub allowed_vehicle_types: Vec<VehicleTypeDto>,
    /// Height limit in centimetres (garages).
    pub max_height_cm: Option<u32>,
}

impl From<SiteCreate> for site::SiteInput {
    fn from(create: SiteCreate) -> Self {
        Self {
            kind: Some(create.kind.into()),
            name: create.name,
            description: create.description,
            lat: create.location.lat,
            lon: create.location.lon,
            address: create.address.unwrap_or_default().into(),
            timezone: create.timezone,
            currency: create.currency,
            opening_hours: create.opening_hours.into_iter().map(Into::into).collect(),
            max_stay_minutes: create.max_stay_minutes,
            allowed_vehicle_types: create.allowed_vehicle_types.into_iter().map(Into::into).collect(),
            max_height_cm: create.max_height_cm,
        }
    }
}

/// Partial update: absent fields are kept; `null` clears an optional field.
#[derive(Debug, Object)]
pub struct SiteUpdate {
    pub name: Option<String>,
    pub description: MaybeUndefined<String>,
    pub location: Option<GeoPointDto>,
    pub address: Option<AddressDto>,
    pub timezone: Option<String>,
    pub currency: Option<String>,
    pub opening_hours: Option<Vec<OpeningHoursDto>>,
    pub max_stay_minutes: MaybeUndefined<u32>,
    pub allowed_vehicle_types: Option<Vec<VehicleTypeDto>>,
    pub max_height_cm: MaybeUndefined<u32>,
}

fn maybe<T>(value: MaybeUndefined<T>) -> Option<Option<T>> {
    match value {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(value) => Some(Some(value)),
    }
}

impl From<SiteUpdate> for site::SitePatch {
    fn from(update: SiteUpdate) -> Self {
        Self {
            name: update.name,
            description: maybe(update.description),
            lat: update.location.map(|point| point.lat),
            lon: update.location.map(|point| point.lon),
            address: update.address.map(Into::into),
            timezone: update.timezone,
            currency: update.currency,
            opening_hours: update.opening_hours.map(|hours| hours.into_iter().map(Into::into).collect()),
            max_stay_minutes: maybe(update.max_stay_minutes),
            allowed_vehicle_types: update
                .allowed_vehicle_types
                .map(|types| types.into_iter().map(Into::into).collect()),
            max_height_cm: maybe(update.max_height_cm),
        }
    }
}

#[derive(Debug, Object)]
pub struct SiteView {
    pub id: Uuid,
    pub operator_id: Uuid,
    pub kind: SiteKindDto,
    pub name: String,
    #[oai(skip_serializing_if_is_none)]
    pub description: Option<String>,
    pub location: GeoPointDto,
    pub address: AddressDto,
    pub timezone: String,
    pub currency: String,
    pub opening_hours: Vec<OpeningHoursDto>,
    #[oai(skip_serializing_if_is_none)]
    pub max_stay_minutes: Option<u32>,
    pub allowed_vehicle_types: Vec<VehicleTypeDto>,
    #[oai(skip_serializing_if_is_none)]
    pub max_height_cm: Option<u32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Site> for SiteView {
    fn from(site: Site) -> Self {
        let details = site.details;
        Self {
            id: site.id.as_uuid(),
            operator_id: site.operator_id.as_uuid(),
            kind: details.kind.into(),
            name: details.name,
            description: details.description,
            location: details.location.into(),
            address: details.address.into(),
            timezone: details.timezone.name().to_owned(),
            currency: details.currency.code(),
            opening_hours: details.opening_hours.into_iter().map(Into::into).collect(),
            max_stay_minutes: details.max_stay_minutes,
            allowed_vehicle_types: details.allowed_vehicle_types.into_iter().map(Into::into).collect(),
            max_height_cm: details.max_height_cm,
            created_at: site.created_at,
            updated_at: site.updated_at,
        }
    }
}

page_type!(SitePage of SiteView);

// ----- spaces ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Object)]
pub struct SpaceCreate {
    /// Label painted on the bay (`A-13`), unique within the site.
    pub code: String,
    /// Within 10 km of the site; optional.
    pub location: Option<GeoPointDto>,
    /// Defaults to `standard`.
    pub category: Option<SpaceCategoryDto>,
    /// Defaults to `car`; must be allowed by the site.
    pub vehicle_type: Option<VehicleTypeDto>,
    #[oai(default)]
    pub ev_charger: bool,
    #[oai(default)]
    pub accessible: bool,
}

impl From<SpaceCreate> for berth_kernel::space::SpaceInput {
    fn from(create: SpaceCreate) -> Self {
        Self {
            code: create.code,
            lat: create.location.map(|point| point.lat),
            lon: create.location.map(|point| point.lon),
            category: create.category.map(Into::into),
            vehicle_type: create.vehicle_type.map(Into::into),
            ev_charger: create.ev_charger,
            accessible: create.accessible,
        }
    }
}

/// Partial update. Setting `status` declares the space's state (confidence 1).
#[derive(Debug, Object)]
pub struct SpaceUpdate {
    pub code: Option<String>,
    pub location: MaybeUndefined<GeoPointDto>,
    pub category: Option<SpaceCategoryDto>,
    pub vehicle_type: Option<VehicleTypeDto>,
    pub ev_charger: Option<bool>,
    pub accessible: Option<bool>,
    pub status: Option<SpaceStatusDto>,
}

impl From<SpaceUpdate> for berth_kernel::space::SpacePatch {
    fn from(update: SpaceUpdate) -> Self {
        Self {
            code: update.code,
            location: maybe(update.location).map(|location| location.map(|point| (point.lat, point.lon))),
            category: update.category.map(Into::into),
            vehicle_type: update.vehicle_type.map(Into::into),
            ev_charger: update.ev_charger,
            accessible: update.accessible,
            status: update.status.map(Into::into),
        }
    }
}

#[derive(Debug, Object)]
pub struct SpaceView {
    pub id: Uuid,
    pub site_id: Uuid,
    pub code: String,
    #[oai(skip_serializing_if_is_none)]
    pub location: Option<GeoPointDto>,
    pub category: SpaceCategoryDto,
    pub vehicle_type: VehicleTypeDto,
    pub ev_charger: bool,
    pub accessible: bool,
    pub status: SpaceStatusDto,
    /// When the current status began.
    pub status_since: DateTime<Utc>,
    /// 0 (no idea) to 1 (certain): full while the sensor's data is fresh, lower as it ages or
    /// when the sensor flaps, 0 when stale or unknown.
    pub confidence: f64,
    /// Seconds since the space's sensor was last heard; absent when never heard.
    #[oai(skip_serializing_if_is_none)]
    pub data_age_secs: Option<i64>,
    /// No sensor data within the stale window (status shows `unknown`).
    pub stale: bool,
    /// The sensor changes state too often; its reading is held with lowered confidence.
    pub flapping: bool,
    /// An operator override decides the status.
    pub overridden: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Space> for SpaceView {
    fn from(space: Space) -> Self {
        let details = space.details;
        Self {
            id: space.id.as_uuid(),
            site_id: space.site_id.as_uuid(),
            code: details.code,
            location: details.location.map(Into::into),
            category: details.category.into(),
            vehicle_type: details.vehicle_type.into(),
            ev_charger: details.ev_charger,
            accessible: details.accessible,
            status: space.live.as_ref().map_or(space.state.status, |live| live.status).into(),
            status_since: space.state.status_since,
            confidence: space.live.as_ref().map_or(space.state.confidence, |live| live.confidence),
            data_age_secs: space.live.as_ref().and_then(|live| live.data_age_secs),
            stale: space.live.as_ref().is_some_and(|live| live.stale),
            flapping: space.live.as_ref().is_some_and(|live| live.flapping),
            overridden: space.live.as_ref().is_some_and(|live| live.overridden),
            created_at: space.created_at,
            updated_at: space.updated_at,
        }
    }
}

page_type!(SpacePage of SpaceView);

#[derive(Debug, Object)]
pub struct SpacesCreated {
    /// How many spaces were created (all of the request, or none on error).
    pub created: u32,
    pub items: Vec<SpaceView>,
}

// ----- devices --------------------------------------------------------------------------------

#[derive(Debug, Object)]
pub struct DeviceCreate {
    /// LoRaWAN DevEUI (16 hex digits) or the vendor's serial; unique per operator.
    pub external_id: String,
    /// Vendor id (`browan`, `nwave`), lower case.
    pub vendor: String,
    /// Model id as the vendor names it (`tbms100`).
    pub model: String,
    pub name: Option<String>,
    /// Bind to this space right away.
    pub space_id: Option<Uuid>,
}

#[derive(Debug, Object)]
pub struct DeviceBinding {
    /// The space to bind to, or `null` to unbind.
    pub space_id: Option<Uuid>,
}

#[derive(Debug, Object)]
pub struct DeviceView {
    pub id: Uuid,
    pub external_id: String,
    pub vendor: String,
    pub model: String,
    #[oai(skip_serializing_if_is_none)]
    pub name: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub space_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Device> for DeviceView {
    fn from(device: Device) -> Self {
        Self {
            id: device.id.as_uuid(),
            external_id: device.details.external_id,
            vendor: device.details.vendor,
            model: device.details.model,
            name: device.details.name,
            space_id: device.space_id.map(|id| id.as_uuid()),
            created_at: device.created_at,
            updated_at: device.updated_at,
        }
    }
}

page_type!(DevicePage of DeviceView);

// ----- drivers and vehicles -------------------------------------------------------------------

#[derive(Debug, Object)]
pub struct DriverRegister {
    pub email: String,
    /// At least 10 characters.
    #[oai(write_only)]
    pub password: String,
    pub display_name: Option<String>,
}

#[derive(Debug, Object)]
pub struct DriverLogin {
    pub email: String,
    #[oai(write_only)]
    pub password: String,
}

#[derive(Debug, Object)]
pub struct AccessTokenView {
    /// Send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    pub expires_in: u64,
    pub driver: DriverView,
}

#[derive(Debug, Object)]
pub struct DriverView {
    pub id: Uuid,
    #[oai(skip_serializing_if_is_none)]
    pub email: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub display_name: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<Driver> for DriverView {
    fn from(driver: Driver) -> Self {
        Self {
            id: driver.id.as_uuid(),
            email: driver.email.map(|email| email.as_str().to_owned()),
            display_name: driver.display_name,
            created_at: driver.created_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct VehicleCreate {
    /// Licence plate; spaces, dots and dashes are ignored (`AB-12 CD` = `AB12CD`).
    pub plate: String,
    /// Defaults to `car`.
    pub vehicle_type: Option<VehicleTypeDto>,
    /// A name for the driver's own use ("work van").
    pub label: Option<String>,
}

#[derive(Debug, Object)]
pub struct VehicleView {
    pub id: Uuid,
    /// Normalised plate (personal data: visible to its owner only).
    pub plate: String,
    pub vehicle_type: VehicleTypeDto,
    #[oai(skip_serializing_if_is_none)]
    pub label: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<Vehicle> for VehicleView {
    fn from(vehicle: Vehicle) -> Self {
        Self {
            id: vehicle.id.as_uuid(),
            plate: vehicle.plate.as_str().to_owned(),
            vehicle_type: vehicle.vehicle_type.into(),
            label: vehicle.label,
            created_at: vehicle.created_at,
        }
    }
}

page_type!(VehiclePage of VehicleView);
