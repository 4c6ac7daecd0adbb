//! The sensor-decoder contract: an uplink in, a normalised reading plus the vendor's full decoded
//! object out, or an error with a message.

use serde_json::Value;

/// One uplink as the network server delivered it.
#[derive(Debug, Clone, Copy)]
pub struct Uplink<'a> {
    /// The device model as registered (`nps405`, `do201`); lets one plugin serve a vendor's range.
    pub model: &'a str,
    pub f_port: u8,
    pub bytes: &'a [u8],
}

impl Uplink<'_> {
    /// Fails with "unknown device model" unless this plugin claims the uplink's model.
    pub fn require_model(&self, models: &[&str]) -> Result<(), DecodeError> {
        if models.contains(&self.model) { Ok(()) } else { Err(DecodeError::unknown_model(self.model)) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occupancy {
    Occupied,
    Free,
    Unknown,
}

impl Occupancy {
    pub fn from_bool(occupied: bool) -> Self {
        if occupied { Occupancy::Occupied } else { Occupancy::Free }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// The sensor reports a change of state.
    Change,
    /// A periodic "still alive" message, which may repeat the current state.
    Heartbeat,
    /// The device (re)started.
    Startup,
    /// Configuration, diagnostics, counters: nothing about the space.
    Other,
}

/// What berth needs from every sensor, whatever the vendor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub occupancy: Occupancy,
    pub kind: MessageKind,
    pub battery_mv: Option<u32>,
    pub temperature_c: Option<f64>,
}

impl Reading {
    pub fn new(occupancy: Occupancy, kind: MessageKind) -> Self {
        Self { occupancy, kind, battery_mv: None, temperature_c: None }
    }

    pub fn other() -> Self {
        Self::new(Occupancy::Unknown, MessageKind::Other)
    }

    pub fn with_battery_mv(mut self, battery_mv: u32) -> Self {
        self.battery_mv = Some(battery_mv);
        self
    }

    pub fn with_temperature_c(mut self, temperature_c: f64) -> Self {
        self.temperature_c = Some(temperature_c);
        self
    }
}

/// A successful decoding: the normalised reading and the vendor's object, field for field.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub reading: Reading,
    pub object: Value,
}

/// Why a payload could not be decoded; the message is shown to operators as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl DecodeError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    pub fn unknown_port() -> Self {
        Self::new("unknown FPort")
    }

    pub fn unknown_model(model: &str) -> Self {
        Self::new(format!("unknown device model '{model}'"))
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

/// A JSON number the way a JavaScript decoder would print it: integral values as integers.
pub fn js_number(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < 9_007_199_254_740_992.0 {
        Value::from(value as i64)
    } else {
        Value::from(value)
    }
}
