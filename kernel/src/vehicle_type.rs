//! Vehicle categories, after FIWARE `allowedVehicleType` (DATEX II), in snake_case.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VehicleType {
    Car,
    Motorcycle,
    Moped,
    Bicycle,
    Van,
    Lorry,
    Bus,
    CarWithTrailer,
    Caravan,
}

impl VehicleType {
    pub const ALL: [VehicleType; 9] = [
        VehicleType::Car,
        VehicleType::Motorcycle,
        VehicleType::Moped,
        VehicleType::Bicycle,
        VehicleType::Van,
        VehicleType::Lorry,
        VehicleType::Bus,
        VehicleType::CarWithTrailer,
        VehicleType::Caravan,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            VehicleType::Car => "car",
            VehicleType::Motorcycle => "motorcycle",
            VehicleType::Moped => "moped",
            VehicleType::Bicycle => "bicycle",
            VehicleType::Van => "van",
            VehicleType::Lorry => "lorry",
            VehicleType::Bus => "bus",
            VehicleType::CarWithTrailer => "car_with_trailer",
            VehicleType::Caravan => "caravan",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}
