//! Sensor-decoder plugins: compiled once (`InstancePre`), instantiated into a small pool of
//! stores that are reused across calls and discarded after any fault.

use std::collections::BTreeMap;

use wasmtime::component::Component;

use crate::bindings::sensor::exports::berth::plugin::decoder as wit;
use crate::bindings::sensor::{SensorDecoder, SensorDecoderPre};
use crate::runner::{self, Health, Runner};
use crate::{Limits, PluginError, PluginHost, PluginState, truncate};

/// One uplink for a decoder (the WIT record itself, so a call lowers it without copying it first).
pub use wit::Uplink;
pub use wit::{MessageKind, Occupancy, Reading};

/// A decoding: the normalised reading and the vendor's object.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub reading: Reading,
    /// The vendor's object as JSON text, checked to be one well-formed JSON object. Kept as text:
    /// storing it needs no parse, and most uplinks are never looked at again.
    pub object_json: String,
}

impl Decoded {
    /// The vendor's object, parsed.
    pub fn object(&self) -> serde_json::Value {
        serde_json::from_str(&self.object_json).unwrap_or(serde_json::Value::Null)
    }
}

/// A loaded sensor-decoder plugin. Cheap to share; calls may run concurrently.
pub struct SensorPlugin {
    runner: Runner<SensorDecoder>,
}

impl SensorPlugin {
    /// Compiles and links a component. Fails if it does not implement the `sensor-decoder` world.
    pub fn load(
        host: &PluginHost,
        id: &str,
        wasm: &[u8],
        limits: Limits,
        config: BTreeMap<String, String>,
    ) -> Result<Self, PluginError> {
        Self::from_component(host, id, &runner::component(host, wasm)?, limits, config)
    }

    pub fn from_component(
        host: &PluginHost,
        id: &str,
        component: &Component,
        limits: Limits,
        config: BTreeMap<String, String>,
    ) -> Result<Self, PluginError> {
        let runner = runner::world_runner!(
            host,
            id,
            component,
            limits,
            config,
            None,
            SensorDecoder,
            SensorDecoderPre<PluginState>,
            "sensor-decoder"
        );
        Ok(Self { runner })
    }

    pub fn id(&self) -> &str {
        self.runner.id()
    }

    pub fn is_quarantined(&self) -> bool {
        self.runner.is_quarantined()
    }

    pub fn health(&self) -> Health {
        self.runner.health()
    }

    pub fn total_faults(&self) -> u64 {
        self.runner.health().faults_total
    }

    pub fn last_error(&self) -> Option<String> {
        self.runner.health().last_error
    }

    /// Decodes one uplink. A fault fails this call only; the instance that faulted is dropped.
    pub fn decode(&self, uplink: &Uplink) -> Result<Decoded, PluginError> {
        self.runner.call(|bindings, store| {
            let answer = bindings.berth_plugin_decoder().call_decode(store, uplink)?;
            Ok(match answer {
                Ok(decoded) => self.validate(decoded),
                Err(message) => Err(PluginError::Decode(truncate(message, 1024))),
            })
        })
    }

    fn validate(&self, decoded: wit::Decoded) -> Result<Decoded, PluginError> {
        self.runner.check_output_size("decoded object", decoded.object_json.len())?;
        // Validate without building a tree: well-formed JSON whose top level is an object.
        if !decoded.object_json.trim_start().starts_with('{') {
            return Err(PluginError::Malformed("object-json must be a JSON object".into()));
        }
        serde_json::from_str::<serde::de::IgnoredAny>(&decoded.object_json)
            .map_err(|e| PluginError::Malformed(format!("object-json is not JSON: {e}")))?;
        let mut reading = decoded.reading;
        if let Some(celsius) = reading.temperature_c {
            if !celsius.is_finite() {
                return Err(PluginError::Malformed(format!("temperature {celsius} is not a number")));
            }
            // A finite but impossible value is the sensor's problem, not the plugin's: the
            // vendor object keeps it, the normalised reading does not.
            if !(PLAUSIBLE_CELSIUS).contains(&celsius) {
                reading.temperature_c = None;
            }
        }
        Ok(Decoded { reading, object_json: decoded.object_json })
    }
}

/// Temperatures a parking sensor can report; anything else is a sensor fault.
const PLAUSIBLE_CELSIUS: std::ops::RangeInclusive<f64> = -60.0..=90.0;
