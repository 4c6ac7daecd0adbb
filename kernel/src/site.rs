//! Sites: an off-street lot or garage, or an on-street zone. Modelled after FIWARE
//! `OffStreetParking` / `OnStreetParking`, reduced to what pricing, search and policy need.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc, Weekday};
use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::geo::GeoPoint;
use crate::ids::{OperatorId, SiteId};
use crate::validate::{optional_text, required_text};
use crate::vehicle_type::VehicleType;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteKind {
    /// A car park, garage or lot with its own entrance (FIWARE `OffStreetParking`).
    OffStreet,
    /// A kerbside zone (FIWARE `OnStreetParking`).
    OnStreet,
}

impl SiteKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            SiteKind::OffStreet => "off_street",
            SiteKind::OnStreet => "on_street",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "off_street" => Some(SiteKind::OffStreet),
            "on_street" => Some(SiteKind::OnStreet),
            _ => None,
        }
    }
}

/// An IANA time zone such as `Europe/Lisbon`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Timezone(chrono_tz::Tz);

impl Timezone {
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        chrono_tz::Tz::from_str(text.trim())
            .map(Timezone)
            .map_err(|_| ValidationError::new("timezone", format!("unknown IANA time zone '{}'", text.trim())))
    }

    pub fn tz(&self) -> chrono_tz::Tz {
        self.0
    }

    pub fn name(&self) -> &'static str {
        self.0.name()
    }
}

impl fmt::Debug for Timezone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An active ISO 4217 currency code such as `EUR`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Currency(iso_currency::Currency);

impl Currency {
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        let code = text.trim();
        iso_currency::Currency::from_code(code)
            .filter(|_| code.bytes().all(|b| b.is_ascii_uppercase()))
            .map(Currency)
            .ok_or_else(|| ValidationError::new("currency", format!("'{code}' is not an ISO 4217 currency code")))
    }

    pub fn code(&self) -> String {
        self.0.code().to_owned()
    }

    /// Digits after the decimal point (2 for EUR, 0 for JPY): the scale of minor units.
    pub fn minor_unit_digits(&self) -> u16 {
        self.0.exponent().unwrap_or(0)
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.code())
    }
}

/// One line of opening hours: on `days`, open from `opens` to `closes` (minutes after local
/// midnight). `closes <= opens` means the period runs past midnight; `0..1440` is all day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpeningHours {
    pub days: Vec<Weekday>,
    pub opens_min: u16,
    pub closes_min: u16,
}

impl OpeningHours {
    /// Parses `HH:MM` (00:00-24:00) into minutes after midnight.
    pub fn parse_clock(field: &str, text: &str) -> Result<u16, ValidationError> {
        let bad = || ValidationError::new(field, format!("'{text}' is not a time of day (HH:MM)"));
        let (hours, minutes) = text.trim().split_once(':').ok_or_else(bad)?;
        if hours.len() != 2 || minutes.len() != 2 {
            return Err(bad());
        }
        let hours: u16 = hours.parse().map_err(|_| bad())?;
        let minutes: u16 = minutes.parse().map_err(|_| bad())?;
        if minutes > 59 || hours > 24 || (hours == 24 && minutes != 0) {
            return Err(bad());
        }
        Ok(hours * 60 + minutes)
    }

    pub fn format_clock(minutes: u16) -> String {
        format!("{:02}:{:02}", minutes / 60, minutes % 60)
    }

    pub fn parse_weekday(field: &str, text: &str) -> Result<Weekday, ValidationError> {
        Weekday::from_str(text.trim())
            .map_err(|_| ValidationError::new(field, format!("'{text}' is not a weekday (mon, tue, ... sun)")))
    }
}

/// A validated site, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    pub id: SiteId,
    pub operator_id: OperatorId,
    pub details: SiteDetails,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Address {
    pub street: Option<String>,
    pub locality: Option<String>,
    pub postal_code: Option<String>,
    /// ISO 3166-1 alpha-2, upper case.
    pub country: Option<String>,
}

/// The operator-editable part of a site, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteDetails {
    pub kind: SiteKind,
    pub name: String,
    pub description: Option<String>,
    pub location: GeoPoint,
    pub address: Address,
    pub timezone: Timezone,
    pub currency: Currency,
    /// Empty means open around the clock.
    pub opening_hours: Vec<OpeningHours>,
    pub max_stay_minutes: Option<u32>,
    /// Never empty.
    pub allowed_vehicle_types: Vec<VehicleType>,
    pub max_height_cm: Option<u32>,
}

/// Unvalidated site fields as they arrive from a client.
#[derive(Debug, Clone, Default)]
pub struct SiteInput {
    pub kind: Option<SiteKind>,
    pub name: String,
    pub description: Option<String>,
    pub lat: f64,
    pub lon: f64,
    pub address: Address,
    pub timezone: String,
    pub currency: String,
    pub opening_hours: Vec<OpeningHoursInput>,
    pub max_stay_minutes: Option<u32>,
    pub allowed_vehicle_types: Vec<VehicleType>,
    pub max_height_cm: Option<u32>,
}

#[derive(Debug, Clone, Default)]
pub struct OpeningHoursInput {
    pub days: Vec<String>,
    pub opens: String,
    pub closes: String,
}

/// A partial update: `None` keeps the current value; `Some(None)` clears an optional one.
#[derive(Debug, Clone, Default)]
pub struct SitePatch {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub address: Option<Address>,
    pub timezone: Option<String>,
    pub currency: Option<String>,
    pub opening_hours: Option<Vec<OpeningHoursInput>>,
    pub max_stay_minutes: Option<Option<u32>>,
    pub allowed_vehicle_types: Option<Vec<VehicleType>>,
    pub max_height_cm: Option<Option<u32>>,
}

/// A week is the longest stay anyone sells as "parking"; longer belongs to leases.
const MAX_STAY_LIMIT_MINUTES: u32 = 60 * 24 * 31;
/// 10 m: no vehicle we park is taller; a larger number is a unit mistake (mm for cm).
const MAX_HEIGHT_LIMIT_CM: u32 = 1000;

impl SiteInput {
    pub fn validate(self) -> Result<SiteDetails, ValidationError> {
        let kind = self.kind.ok_or_else(|| ValidationError::new("kind", "is required"))?;
        let name = required_text("name", &self.name, 200)?;
        let description = optional_text("description", self.description.as_deref(), 2000)?;
        let location = GeoPoint::new(self.lat, self.lon).map_err(|e| e.within("location"))?;
        let address = validate_address(self.address)?;
        let timezone = Timezone::parse(&self.timezone)?;
        let currency = Currency::parse(&self.currency)?;
        if self.opening_hours.len() > 28 {
            return Err(ValidationError::new("opening_hours", "at most 28 entries"));
        }
        let opening_hours = self
            .opening_hours
            .iter()
            .enumerate()
            .map(|(idx, hours)| validate_hours(hours).map_err(|e| e.within(&format!("opening_hours[{idx}]"))))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(minutes) = self.max_stay_minutes
            && !(1..=MAX_STAY_LIMIT_MINUTES).contains(&minutes)
        {
            return Err(ValidationError::new(
                "max_stay_minutes",
                format!("must be between 1 and {MAX_STAY_LIMIT_MINUTES}"),
            ));
        }
        let mut allowed_vehicle_types = self.allowed_vehicle_types;
        allowed_vehicle_types.sort();
        allowed_vehicle_types.dedup();
        if allowed_vehicle_types.is_empty() {
            allowed_vehicle_types.push(VehicleType::Car);
        }
        if let Some(height) = self.max_height_cm
            && !(100..=MAX_HEIGHT_LIMIT_CM).contains(&height)
        {
            return Err(ValidationError::new(
                "max_height_cm",
                format!("must be between 100 and {MAX_HEIGHT_LIMIT_CM} centimetres"),
            ));
        }
        Ok(SiteDetails {
            kind,
            name,
            description,
            location,
            address,
            timezone,
            currency,
            opening_hours,
            max_stay_minutes: self.max_stay_minutes,
            allowed_vehicle_types,
            max_height_cm: self.max_height_cm,
        })
    }
}

fn validate_address(address: Address) -> Result<Address, ValidationError> {
    let country = optional_text("address.country", address.country.as_deref(), 2)?;
    if let Some(code) = &country
        && (code.len() != 2 || !code.bytes().all(|b| b.is_ascii_alphabetic()))
    {
        return Err(ValidationError::new("address.country", "must be an ISO 3166-1 alpha-2 code such as PT"));
    }
    Ok(Address {
        street: optional_text("address.street", address.street.as_deref(), 200)?,
        locality: optional_text("address.locality", address.locality.as_deref(), 100)?,
        postal_code: optional_text("address.postal_code", address.postal_code.as_deref(), 20)?,
        country: country.map(|code| code.to_ascii_uppercase()),
    })
}

fn validate_hours(hours: &OpeningHoursInput) -> Result<OpeningHours, ValidationError> {
    if hours.days.is_empty() {
        return Err(ValidationError::new("days", "must name at least one weekday"));
    }
    let mut days =
        hours.days.iter().map(|day| OpeningHours::parse_weekday("days", day)).collect::<Result<Vec<_>, _>>()?;
    days.sort_by_key(Weekday::num_days_from_monday);
    days.dedup();
    let opens_min = OpeningHours::parse_clock("opens", &hours.opens)?;
    let closes_min = OpeningHours::parse_clock("closes", &hours.closes)?;
    if opens_min == 1440 {
        return Err(ValidationError::new("opens", "24:00 is only valid as a closing time"));
    }
    Ok(OpeningHours { days, opens_min, closes_min })
}

impl SiteDetails {
    /// The input that would produce these details; the base a patch is applied to.
    pub fn to_input(&self) -> SiteInput {
        SiteInput {
            kind: Some(self.kind),
            name: self.name.clone(),
            description: self.description.clone(),
            lat: self.location.lat(),
            lon: self.location.lon(),
            address: self.address.clone(),
            timezone: self.timezone.name().to_owned(),
            currency: self.currency.code(),
            opening_hours: self
                .opening_hours
                .iter()
                .map(|hours| OpeningHoursInput {
                    days: hours.days.iter().map(|day| weekday_code(*day).to_owned()).collect(),
                    opens: OpeningHours::format_clock(hours.opens_min),
                    closes: OpeningHours::format_clock(hours.closes_min),
                })
                .collect(),
            max_stay_minutes: self.max_stay_minutes,
            allowed_vehicle_types: self.allowed_vehicle_types.clone(),
            max_height_cm: self.max_height_cm,
        }
    }

    pub fn apply(&self, patch: SitePatch) -> Result<SiteDetails, ValidationError> {
        let mut input = self.to_input();
        if let Some(name) = patch.name {
            input.name = name;
        }
        if let Some(description) = patch.description {
            input.description = description;
        }
        if let Some(lat) = patch.lat {
            input.lat = lat;
        }
        if let Some(lon) = patch.lon {
            input.lon = lon;
        }
        if let Some(address) = patch.address {
            input.address = address;
        }
        if let Some(timezone) = patch.timezone {
            input.timezone = timezone;
        }
        if let Some(currency) = patch.currency {
            input.currency = currency;
        }
        if let Some(hours) = patch.opening_hours {
            input.opening_hours = hours;
        }
        if let Some(max_stay) = patch.max_stay_minutes {
            input.max_stay_minutes = max_stay;
        }
        if let Some(types) = patch.allowed_vehicle_types {
            input.allowed_vehicle_types = types;
        }
        if let Some(height) = patch.max_height_cm {
            input.max_height_cm = height;
        }
        input.validate()
    }
}

/// Three-letter lower-case weekday code used on the wire and in storage.
pub fn weekday_code(day: Weekday) -> &'static str {
    match day {
        Weekday::Mon => "mon",
        Weekday::Tue => "tue",
        Weekday::Wed => "wed",
        Weekday::Thu => "thu",
        Weekday::Fri => "fri",
        Weekday::Sat => "sat",
        Weekday::Sun => "sun",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn porto() -> SiteInput {
        SiteInput {
            kind: Some(SiteKind::OffStreet),
            name: "Parque Trindade".into(),
            lat: 41.150_691_773,
            lon: -8.609_611_988,
            timezone: "Europe/Lisbon".into(),
            currency: "EUR".into(),
            ..SiteInput::default()
        }
    }

    #[test]
    fn validates_and_defaults_vehicle_types() {
        let details = porto().validate().unwrap();
        assert_eq!(details.allowed_vehicle_types, vec![VehicleType::Car]);
        assert_eq!(details.currency.minor_unit_digits(), 2);
    }

    #[test]
    fn names_the_failing_field() {
        type Mutation = Box<dyn Fn(&mut SiteInput)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|s| s.timezone = "Mars/Olympus".into()), "timezone"),
            (Box::new(|s| s.currency = "eur".into()), "currency"),
            (Box::new(|s| s.currency = "XYZ".into()), "currency"),
            (Box::new(|s| s.lat = 123.0), "location.lat"),
            (Box::new(|s| s.max_height_cm = Some(20_000)), "max_height_cm"),
            (Box::new(|s| s.address.country = Some("Portugal".into())), "address.country"),
            (
                Box::new(|s| {
                    s.opening_hours =
                        vec![OpeningHoursInput { days: vec!["mon".into()], opens: "8".into(), closes: "20:00".into() }]
                }),
                "opening_hours[0].opens",
            ),
        ];
        for (mutate, field) in cases {
            let mut input = porto();
            mutate(&mut input);
            assert_eq!(input.validate().unwrap_err().field, field);
        }
    }

    #[test]
    fn opening_hours_round_trip_through_patch() {
        let mut input = porto();
        input.opening_hours = vec![OpeningHoursInput {
            days: vec!["sat".into(), "mon".into()],
            opens: "22:00".into(),
            closes: "06:00".into(),
        }];
        let details = input.validate().unwrap();
        let same = details.apply(SitePatch::default()).unwrap();
        assert_eq!(details, same);
        assert_eq!(same.opening_hours[0].days, vec![Weekday::Mon, Weekday::Sat]);
    }
}
