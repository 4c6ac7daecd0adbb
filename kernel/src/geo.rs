//! WGS84 points. Validated on construction so that no NaN or out-of-range coordinate is ever stored.

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GeoPoint {
    lat: f64,
    lon: f64,
}

impl GeoPoint {
    pub fn new(lat: f64, lon: f64) -> Result<Self, ValidationError> {
        if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
            return Err(ValidationError::new("lat", "latitude must be between -90 and 90"));
        }
        if !lon.is_finite() || !(-180.0..=180.0).contains(&lon) {
            return Err(ValidationError::new("lon", "longitude must be between -180 and 180"));
        }
        Ok(Self { lat, lon })
    }

    pub fn lat(&self) -> f64 {
        self.lat
    }

    pub fn lon(&self) -> f64 {
        self.lon
    }

    /// Great-circle distance in metres (haversine; good to ~0.5% which is plenty for search radii).
    pub fn distance_m(&self, other: &GeoPoint) -> f64 {
        const EARTH_RADIUS_M: f64 = 6_371_008.8;
        let (lat1, lat2) = (self.lat.to_radians(), other.lat.to_radians());
        let d_lat = lat2 - lat1;
        let d_lon = (other.lon - self.lon).to_radians();
        let a = (d_lat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (d_lon / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_M * a.sqrt().asin()
    }
}

/// A WGS84 box, as `min_lon,min_lat,max_lon,max_lat` (the GeoJSON `bbox` order). Boxes across
/// the antimeridian are not supported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoundingBox {
    south_west: GeoPoint,
    north_east: GeoPoint,
}

impl BoundingBox {
    /// Reads `min_lon,min_lat,max_lon,max_lat`; errors name `field`.
    pub fn parse(field: &str, text: &str) -> Result<Self, ValidationError> {
        let invalid = |message: &str| ValidationError::new(field, message);
        let numbers: Vec<f64> = text
            .split(',')
            .map(|part| part.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| invalid("must be four numbers: min_lon,min_lat,max_lon,max_lat"))?;
        let [min_lon, min_lat, max_lon, max_lat] = numbers[..] else {
            return Err(invalid("must be four numbers: min_lon,min_lat,max_lon,max_lat"));
        };
        let south_west = GeoPoint::new(min_lat, min_lon).map_err(|e| invalid(&e.message))?;
        let north_east = GeoPoint::new(max_lat, max_lon).map_err(|e| invalid(&e.message))?;
        if min_lat > max_lat || min_lon > max_lon {
            return Err(invalid("min must not exceed max (boxes across the antimeridian are not supported)"));
        }
        Ok(Self { south_west, north_east })
    }

    pub fn contains(&self, point: &GeoPoint) -> bool {
        (self.south_west.lat..=self.north_east.lat).contains(&point.lat)
            && (self.south_west.lon..=self.north_east.lon).contains(&point.lon)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounding_boxes() {
        let porto = BoundingBox::parse("bbox", "-8.7,41.1,-8.5,41.2").unwrap();
        assert!(porto.contains(&GeoPoint::new(41.1507, -8.6096).unwrap()));
        assert!(!porto.contains(&GeoPoint::new(43.4630, -3.8036).unwrap()));
        assert!(BoundingBox::parse("bbox", "1,2,3").is_err());
        assert!(BoundingBox::parse("bbox", "-8.5,41.1,-8.7,41.2").is_err());
        assert_eq!(BoundingBox::parse("bbox", "0,95,1,96").unwrap_err().field, "bbox");
    }

    #[test]
    fn rejects_out_of_range_and_nan() {
        assert_eq!(GeoPoint::new(91.0, 0.0).unwrap_err().field, "lat");
        assert_eq!(GeoPoint::new(0.0, -180.5).unwrap_err().field, "lon");
        assert!(GeoPoint::new(f64::NAN, 0.0).is_err());
        assert!(GeoPoint::new(41.15, -8.61).is_ok());
    }

    #[test]
    fn distance_porto_to_santander_is_about_470_km() {
        let porto = GeoPoint::new(41.1507, -8.6096).unwrap();
        let santander = GeoPoint::new(43.4630, -3.8036).unwrap();
        let km = porto.distance_m(&santander) / 1000.0;
        assert!((460.0..480.0).contains(&km), "{km}");
    }
}
