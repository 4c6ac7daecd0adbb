//! The berth plugin SDK: the types a sensor decoder returns, a bounds-checked byte reader, and
//! the corpus check vendors run against their examples. Plugin crates depend only on this.
//!
//! Deliberately absent: any I/O. A decoder is a pure function of (model, f-port, bytes).

pub mod bytes;
pub mod corpus;
pub mod sensor;

pub use sensor::{DecodeError, Decoded, MessageKind, Occupancy, Reading, Uplink};

/// Guest bindings for the `sensor-decoder` world, generated from `plugins/wit/`. Only compiled
/// for WebAssembly; plugin crates use [`export_sensor_decoder!`].
#[cfg(target_arch = "wasm32")]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "sensor-decoder",
        pub_export_macro: true,
        export_macro_name: "export_bindings",
        default_bindings_module: "berth_plugin_sdk::bindings",
    });
}

/// Exports a decoder function `fn(&Uplink) -> Result<Decoded, DecodeError>` as the plugin's
/// `decoder` interface. Expands to nothing outside WebAssembly, so the same crate tests natively.
#[macro_export]
macro_rules! export_sensor_decoder {
    ($decode:path) => {
        #[cfg(target_arch = "wasm32")]
        mod __berth_sensor_export {
            use $crate::bindings::exports::berth::plugin::decoder as wit;

            pub struct Plugin;

            impl wit::Guest for Plugin {
                fn decode(uplink: wit::Uplink) -> Result<wit::Decoded, String> {
                    let native = $crate::Uplink { model: &uplink.model, f_port: uplink.f_port, bytes: &uplink.payload };
                    let decoded = $decode(&native).map_err(|error| error.0)?;
                    Ok($crate::wasm::to_wit(decoded))
                }
            }

            $crate::bindings::export_bindings!(Plugin);
        }
    };
}

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod wasm {
    use crate::bindings::exports::berth::plugin::decoder as wit;
    use crate::sensor::{Decoded, MessageKind, Occupancy};

    pub fn to_wit(decoded: Decoded) -> wit::Decoded {
        let reading = decoded.reading;
        wit::Decoded {
            reading: wit::Reading {
                occupancy: match reading.occupancy {
                    Occupancy::Occupied => wit::Occupancy::Occupied,
                    Occupancy::Free => wit::Occupancy::Free,
                    Occupancy::Unknown => wit::Occupancy::Unknown,
                },
                kind: match reading.kind {
                    MessageKind::Change => wit::MessageKind::Change,
                    MessageKind::Heartbeat => wit::MessageKind::Heartbeat,
                    MessageKind::Startup => wit::MessageKind::Startup,
                    MessageKind::Other => wit::MessageKind::Other,
                },
                battery_mv: reading.battery_mv,
                temperature_c: reading.temperature_c,
            },
            object_json: serde_json::to_string(&decoded.object).unwrap_or_default(),
        }
    }
}
