//! Nwave parking sensors NPS-3.10-SM and NPS-4.5 (G4), and the NCC-4.5 car counter.
//! Ports: 1 status change (or count), 2 heartbeat, 3 startup, 6 debug, 10 tag registration (NPS-4.5).

use berth_plugin_sdk::bytes::Bytes;
use berth_plugin_sdk::{DecodeError, Decoded, MessageKind, Occupancy, Reading, Uplink, sensor::js_number};
use serde_json::{Value, json};

pub const MODELS: &[&str] = &["nps310sm", "nps405", "ncc405"];

berth_plugin_sdk::export_sensor_decoder!(crate::decode);

pub fn decode(uplink: &Uplink) -> Result<Decoded, DecodeError> {
    match uplink.model {
        "nps310sm" => decode_nps310sm(uplink.f_port, uplink.bytes),
        "nps405" => decode_nps405(uplink.f_port, uplink.bytes),
        "ncc405" => decode_ncc405(uplink.f_port, uplink.bytes),
        other => Err(DecodeError::unknown_model(other)),
    }
}

fn reset_cause(code: u8) -> Value {
    match code {
        0 => json!("rejoining_lorawan_network"),
        1 => json!("watchdog"),
        2 => json!("power_on"),
        3 => json!("user_request"),
        6 => json!("brownout"),
        7 => json!("other"),
        _ => Value::Null,
    }
}

/// Port 3, shared by the range: firmware b0.b1.b2, reset cause b3.
fn startup_fields(bytes: &Bytes) -> Result<Value, DecodeError> {
    let mut object = json!({
        "type": "startup",
        "firmware_version": format!("{}.{}.{}", bytes.u8(0)?, bytes.u8(1)?, bytes.u8(2)?),
    });
    let cause = reset_cause(bytes.u8(3)?);
    if !cause.is_null() {
        object["reset_cause"] = cause;
    }
    Ok(object)
}

/// Port 3 of the parking sensors: the shared startup fields plus occupancy in b4.
fn parking_sensor_startup(bytes: &Bytes) -> Result<Decoded, DecodeError> {
    let occupied = bytes.bit(4, 0)?;
    let mut object = startup_fields(bytes)?;
    object["occupied"] = json!(occupied);
    Ok(Decoded { reading: Reading::new(Occupancy::from_bool(occupied), MessageKind::Startup), object })
}

/// Battery voltage coding of the G4 range: 2500 mV + 4 mV per step.
fn battery_mv(step: u8) -> u32 {
    2500 + 4 * u32::from(step)
}

fn volts(millivolts: u32) -> Value {
    js_number(f64::from(millivolts) / 1000.0)
}

fn debug(payload: &[u8]) -> Decoded {
    Decoded { reading: Reading::other(), object: json!({"type": "debug", "bytes": payload}) }
}

pub fn decode_nps310sm(f_port: u8, payload: &[u8]) -> Result<Decoded, DecodeError> {
    let bytes = Bytes::new(payload);
    match f_port {
        1 | 2 => {
            let occupied = bytes.bit(0, 0)?;
            let (kind, label) = if f_port == 1 {
                (MessageKind::Change, "parking_status")
            } else {
                (MessageKind::Heartbeat, "heartbeat")
            };
            Ok(Decoded {
                reading: Reading::new(Occupancy::from_bool(occupied), kind),
                object: json!({"type": label, "occupied": occupied}),
            })
        }
        3 => parking_sensor_startup(&bytes),
        6 => Ok(debug(payload)),
        _ => Err(DecodeError::unknown_port()),
    }
}

/// The G4 compressed duration of the previous state: exact below 90, then steps of 5 and of 60;
/// 127 means "longer than the scale".
fn previous_state(compressed: u8) -> [(&'static str, Value); 3] {
    let (duration, error, overflow) = match compressed {
        0..90 => (json!(compressed), json!(0), false),
        90..120 => (json!(90 + (u32::from(compressed) - 90) * 5), json!(4), false),
        120..127 => (json!(240 + (u32::from(compressed) - 120) * 60), json!(59), false),
        _ => (json!(660), Value::Null, true),
    };
    [
        ("previous_state_duration", duration),
        ("previous_state_duration_error", error),
        ("previous_state_duration_overflow", json!(overflow)),
    ]
}

pub fn decode_nps405(f_port: u8, payload: &[u8]) -> Result<Decoded, DecodeError> {
    let bytes = Bytes::new(payload);
    match f_port {
        1 => {
            let status = bytes.u8(0)?;
            let occupied = status & 1 == 1;
            let mut object = json!({"type": "parking_status", "occupied": occupied});
            for (key, value) in previous_state(status >> 1 & 0x7f) {
                object[key] = value;
            }
            Ok(Decoded { reading: Reading::new(Occupancy::from_bool(occupied), MessageKind::Change), object })
        }
        2 => {
            bytes.require(3)?;
            let status = bytes.u8(0)?;
            let occupied = status & 1 == 1;
            let temperature = f64::from(bytes.i8(2)?) / 2.0 + 10.0;
            let millivolts = battery_mv(bytes.u8(1)?);
            let (critical_mv, low_mv) = if temperature >= -5.0 { (2900, 3000) } else { (2800, 2900) };
            let health = if millivolts >= low_mv {
                "normal"
            } else if millivolts >= critical_mv {
                "low"
            } else {
                "critical"
            };
            Ok(Decoded {
                reading: Reading::new(Occupancy::from_bool(occupied), MessageKind::Heartbeat)
                    .with_battery_mv(millivolts)
                    .with_temperature_c(temperature),
                object: json!({
                    "type": "heartbeat",
                    "occupied": occupied,
                    "hw_health_status": status & 0x7f,
                    "temperature": js_number(temperature),
                    "battery_voltage": volts(millivolts),
                    "battery_health": health,
                }),
            })
        }
        3 => parking_sensor_startup(&bytes),
        6 => Ok(debug(payload)),
        10 => {
            let status = bytes.u8(0)?;
            let tag_id = format!("{:X}", bytes.u32_be(1)?);
            let mut object = json!({"type": "user_registration", "tag_id": tag_id});
            let occupancy = if status & 1 == 1 {
                object["occupied"] = json!(true);
                for (key, value) in previous_state(status >> 1 & 0x7f) {
                    object[key] = value;
                }
                Occupancy::Occupied
            } else {
                for key in [
                    "occupied",
                    "previous_state_duration",
                    "previous_state_duration_error",
                    "previous_state_duration_overflow",
                ] {
                    object[key] = Value::Null;
                }
                Occupancy::Unknown
            };
            Ok(Decoded { reading: Reading::new(occupancy, MessageKind::Other), object })
        }
        _ => Err(DecodeError::unknown_port()),
    }
}

pub fn decode_ncc405(f_port: u8, payload: &[u8]) -> Result<Decoded, DecodeError> {
    let bytes = Bytes::new(payload);
    match f_port {
        1 => Ok(Decoded {
            reading: Reading::other(),
            object: json!({"type": "counter_update", "counter_value": bytes.u16_be(0)?}),
        }),
        2 => {
            let millivolts = battery_mv(bytes.u8(1)?);
            Ok(Decoded {
                reading: Reading::new(Occupancy::Unknown, MessageKind::Heartbeat).with_battery_mv(millivolts),
                object: json!({
                    "type": "heartbeat",
                    "hw_health_status": bytes.u8(0)? & 0x7f,
                    "battery_voltage": volts(millivolts),
                    "battery_voltage_mean_24h": volts(battery_mv(bytes.u8(2)?)),
                }),
            })
        }
        3 => Ok(Decoded {
            reading: Reading::new(Occupancy::Unknown, MessageKind::Startup),
            object: startup_fields(&bytes)?,
        }),
        6 => Ok(debug(payload)),
        _ => Err(DecodeError::unknown_port()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_nps310sm() {
        berth_plugin_sdk::corpus::assert_corpus("nwave-nps310sm.json", decode_nps310sm);
    }

    #[test]
    fn corpus_nps405() {
        berth_plugin_sdk::corpus::assert_corpus("nwave-nps405.json", decode_nps405);
    }

    #[test]
    fn corpus_ncc405() {
        berth_plugin_sdk::corpus::assert_corpus("nwave-ncc405.json", decode_ncc405);
    }

    #[test]
    fn compressed_durations_cover_the_scale() {
        let duration = |c| previous_state(c)[0].1.clone();
        assert_eq!(duration(89), json!(89));
        assert_eq!(duration(90), json!(90));
        assert_eq!(duration(119), json!(235));
        assert_eq!(duration(120), json!(240));
        assert_eq!(previous_state(127)[2].1, json!(true));
    }

    #[test]
    fn heartbeat_reading_is_normalised() {
        let decoded = decode_nps405(2, &[0x01, 0xd3, 0xd8]).unwrap();
        assert_eq!(decoded.reading.occupancy, Occupancy::Occupied);
        assert_eq!(decoded.reading.battery_mv, Some(3344));
        assert_eq!(decoded.reading.temperature_c, Some(-10.0));
    }
}
