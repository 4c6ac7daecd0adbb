//! Bosch Parking Lot Sensor TPS110 (firmware 0.29.2). Ports: 1 status change, 2 heartbeat (with
//! temperature), 3 startup (debug codes, firmware, reset cause), 4/5 raw device information and
//! usage, 6 debug record.

use berth_plugin_sdk::bytes::Bytes;
use berth_plugin_sdk::{DecodeError, Decoded, MessageKind, Occupancy, Reading, Uplink};
use serde_json::{Value, json};

pub const MODELS: &[&str] = &["tps110"];

berth_plugin_sdk::export_sensor_decoder!(crate::decode);

pub fn decode(uplink: &Uplink) -> Result<Decoded, DecodeError> {
    uplink.require_model(MODELS)?;
    decode_tps110(uplink.f_port, uplink.bytes)
}

fn reset_cause(code: u8) -> Value {
    match code {
        1 => json!("watchdog"),
        2 => json!("power on"),
        3 => json!("system request"),
        4 => json!("other"),
        _ => Value::Null,
    }
}

pub fn decode_tps110(f_port: u8, payload: &[u8]) -> Result<Decoded, DecodeError> {
    let bytes = Bytes::new(payload);
    match f_port {
        1 => {
            let occupied = bytes.bit(0, 0)?;
            Ok(Decoded {
                reading: Reading::new(Occupancy::from_bool(occupied), MessageKind::Change),
                object: json!({"type": "parking status", "occupied": occupied}),
            })
        }
        2 => {
            let occupied = bytes.bit(0, 0)?;
            let mut object = json!({"type": "heartbeat", "occupied": occupied});
            let mut reading = Reading::new(Occupancy::from_bool(occupied), MessageKind::Heartbeat);
            if bytes.len() >= 2 {
                let celsius = bytes.i8(1)?;
                object["temperature"] = json!(celsius);
                reading = reading.with_temperature_c(f64::from(celsius));
            }
            Ok(Decoded { reading, object })
        }
        3 => {
            bytes.require(17)?;
            let debug_codes: Vec<u16> = (0..3)
                .map(|slot| bytes.u16_le(slot * 4).map(|raw| raw & 0x0fff))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .filter(|code| *code != 0)
                .collect();
            let occupied = bytes.bit(16, 0)?;
            let mut object = json!({
                "type": "startup",
                "debugCodes": debug_codes,
                "firmwareVersion": format!("{}.{}.{}", bytes.u8(12)?, bytes.u8(13)?, bytes.u8(14)?),
                "occupied": occupied,
            });
            let cause = reset_cause(bytes.u8(15)?);
            // The reference omits an unknown cause rather than writing null.
            if !cause.is_null() {
                object["resetCause"] = cause;
            }
            Ok(Decoded { reading: Reading::new(Occupancy::from_bool(occupied), MessageKind::Startup), object })
        }
        4 | 5 => {
            let kind = if f_port == 4 { "device information" } else { "device usage" };
            Ok(Decoded { reading: Reading::other(), object: json!({"type": kind, "bytes": payload}) })
        }
        6 => Ok(Decoded {
            reading: Reading::other(),
            object: json!({
                "type": "debug",
                "timestamp": bytes.u32_le(0)?,
                "debugCode": bytes.u16_le(4)? & 0x0fff,
                "sequenceNumber": bytes.u16_le(8)?,
            }),
        }),
        _ => Err(DecodeError::unknown_port()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus() {
        berth_plugin_sdk::corpus::assert_corpus("bosch-tps110.json", decode_tps110);
    }

    #[test]
    fn short_payloads_are_errors_not_panics() {
        assert!(decode_tps110(3, &[0x24, 0x03]).is_err());
        assert!(decode_tps110(1, &[]).is_err());
        assert_eq!(decode_tps110(9, &[1]).unwrap_err(), DecodeError::unknown_port());
    }
}
