//! Drivers and their vehicles. A licence plate is personal data: it never appears in `Debug`
//! output or logs, and only its owner (and, later, the operator of a booking) can read it.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::error::ValidationError;
use crate::ids::{DriverId, VehicleId};
use crate::validate::optional_text;
use crate::vehicle_type::VehicleType;

#[derive(Debug, Clone, PartialEq)]
pub struct Driver {
    pub id: DriverId,
    pub email: Option<Email>,
    pub display_name: Option<String>,
    /// `issuer|subject` for drivers who sign in through an external OpenID Connect provider.
    pub external_subject: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A lower-cased e-mail address.
#[derive(Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        let email = text.trim().to_lowercase();
        let valid = email.len() <= 254
            && email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
            })
            && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            && email.matches('@').count() == 1;
        if !valid {
            return Err(ValidationError::new("email", "is not a valid e-mail address"));
        }
        Ok(Email(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Personal data: keep the domain for debugging, hide the person.
        let domain = self.0.split_once('@').map_or("", |(_, domain)| domain);
        write!(f, "Email(***@{domain})")
    }
}

pub const MIN_PASSWORD_CHARS: usize = 10;
pub const MAX_PASSWORD_CHARS: usize = 256;

pub fn validate_password(password: &str) -> Result<(), ValidationError> {
    let n_chars = password.chars().count();
    if n_chars < MIN_PASSWORD_CHARS {
        return Err(ValidationError::new("password", format!("must be at least {MIN_PASSWORD_CHARS} characters")));
    }
    if n_chars > MAX_PASSWORD_CHARS {
        return Err(ValidationError::new("password", format!("must be at most {MAX_PASSWORD_CHARS} characters")));
    }
    Ok(())
}

pub fn validate_display_name(name: Option<&str>) -> Result<Option<String>, ValidationError> {
    optional_text("display_name", name, 100)
}

/// A licence plate, normalised: upper case, letters and digits only (spaces, dots and dashes are
/// dropped, so `ab-12 cd` and `AB12CD` are the same plate).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Plate(String);

impl Plate {
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        let mut plate = String::new();
        for c in text.trim().chars() {
            if c.is_alphanumeric() {
                plate.extend(c.to_uppercase());
            } else if !matches!(c, ' ' | '-' | '.' | '·') {
                return Err(ValidationError::new("plate", "may contain only letters, digits, spaces, dots and dashes"));
            }
        }
        let n_chars = plate.chars().count();
        if !(2..=12).contains(&n_chars) {
            return Err(ValidationError::new("plate", "must have 2 to 12 letters and digits"));
        }
        Ok(Plate(plate))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Plate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Plate(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Vehicle {
    pub id: VehicleId,
    pub driver_id: DriverId,
    pub plate: Plate,
    pub vehicle_type: VehicleType,
    pub label: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plates_normalise_and_never_print() {
        let plate = Plate::parse(" ab-12 cd ").unwrap();
        assert_eq!(plate.as_str(), "AB12CD");
        assert_eq!(format!("{plate:?}"), "Plate(<redacted>)");
        assert!(Plate::parse("A").is_err());
        assert!(Plate::parse("AB/12").is_err());
        assert_eq!(Plate::parse("м123ав").unwrap().as_str(), "М123АВ");
    }

    #[test]
    fn emails_are_lowercased_and_hidden() {
        let email = Email::parse(" Ana@Example.COM ").unwrap();
        assert_eq!(email.as_str(), "ana@example.com");
        assert_eq!(format!("{email:?}"), "Email(***@example.com)");
        for bad in ["", "ana", "ana@", "@x.com", "a@b", "a b@c.com", "a@@b.com"] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }
}
