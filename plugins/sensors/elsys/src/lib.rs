//! Elsys sensors (ERS EYE room occupancy, EMS Desk desk occupancy, and the rest of the range):
//! a type-length-value stream, one type byte followed by a fixed-size value. An unknown type
//! ends the stream, as in the vendor's decoder.

use berth_plugin_sdk::bytes::Bytes;
use berth_plugin_sdk::{DecodeError, Decoded, MessageKind, Occupancy, Reading, Uplink, sensor::js_number};
use serde_json::{Map, Value, json};

pub const MODELS: &[&str] = &["ers-eye", "ems-desk"];

berth_plugin_sdk::export_sensor_decoder!(crate::decode);

pub fn decode(uplink: &Uplink) -> Result<Decoded, DecodeError> {
    uplink.require_model(MODELS)?;
    decode_tlv(uplink.f_port, uplink.bytes)
}

fn tenths(raw: i16) -> Value {
    js_number(f64::from(raw) / 10.0)
}

pub fn decode_tlv(_f_port: u8, payload: &[u8]) -> Result<Decoded, DecodeError> {
    let bytes = Bytes::new(payload);
    let mut object = Map::new();
    let mut idx = 0;
    while idx < payload.len() {
        let value_at = idx + 1;
        let size = match payload[idx] {
            0x01 => {
                object.insert("temperature".into(), tenths(bytes.i16_be(value_at)?));
                2
            }
            0x02 => {
                object.insert("humidity".into(), json!(bytes.u8(value_at)?));
                1
            }
            0x03 => {
                object.insert("x".into(), json!(bytes.i8(value_at)?));
                object.insert("y".into(), json!(bytes.i8(value_at + 1)?));
                object.insert("z".into(), json!(bytes.i8(value_at + 2)?));
                3
            }
            0x04 => {
                object.insert("light".into(), json!(bytes.u16_be(value_at)?));
                2
            }
            0x05 => {
                object.insert("motion".into(), json!(bytes.u8(value_at)?));
                1
            }
            0x06 => {
                object.insert("co2".into(), json!(bytes.u16_be(value_at)?));
                2
            }
            0x07 => {
                object.insert("vdd".into(), json!(bytes.u16_be(value_at)?));
                2
            }
            0x11 => {
                object.insert("occupancy".into(), json!(bytes.u8(value_at)?));
                1
            }
            0x12 => {
                object.insert("waterleak".into(), json!(bytes.u8(value_at)?));
                1
            }
            0x1c => {
                object.insert("tvoc".into(), json!(bytes.u16_be(value_at)?));
                2
            }
            _ => break,
        };
        idx = value_at + size;
    }
    // Occupancy: 0 free, 1 pending (motion seen), 2 occupied.
    let occupancy = match object.get("occupancy").and_then(Value::as_u64) {
        Some(2) => Occupancy::Occupied,
        Some(0) => Occupancy::Free,
        _ => Occupancy::Unknown,
    };
    let mut reading = Reading::new(occupancy, MessageKind::Heartbeat);
    if let Some(millivolts) = object.get("vdd").and_then(Value::as_u64) {
        reading = reading.with_battery_mv(millivolts as u32);
    }
    if let Some(celsius) = object.get("temperature").and_then(Value::as_f64) {
        reading = reading.with_temperature_c(celsius);
    }
    Ok(Decoded { reading, object: Value::Object(object) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_ers_eye() {
        berth_plugin_sdk::corpus::assert_corpus("elsys-ers-eye.json", decode_tlv);
    }

    #[test]
    fn corpus_ems_desk() {
        berth_plugin_sdk::corpus::assert_corpus("elsys-ems-desk.json", decode_tlv);
    }

    #[test]
    fn truncated_values_are_errors() {
        assert!(decode_tlv(1, &[0x01, 0x00]).is_err());
        assert_eq!(decode_tlv(1, &[0x11, 0x02, 0xff, 0x01]).unwrap().reading.occupancy, Occupancy::Occupied);
    }
}
