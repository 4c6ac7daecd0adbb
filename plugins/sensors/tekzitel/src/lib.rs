//! TEKZITEL TEKZIPARK (magnetometer + radar + BLE beacons). Port 1 status with optional beacon
//! scan, port 2 diagnostics.

use berth_plugin_sdk::bytes::Bytes;
use berth_plugin_sdk::{DecodeError, Decoded, MessageKind, Occupancy, Reading, Uplink};
use serde_json::{Map, Value, json};

pub const MODELS: &[&str] = &["tekzipark"];

berth_plugin_sdk::export_sensor_decoder!(crate::decode);

pub fn decode(uplink: &Uplink) -> Result<Decoded, DecodeError> {
    uplink.require_model(MODELS)?;
    decode_tekzipark(uplink.f_port, uplink.bytes)
}

/// The three bytes every uplink starts with: flags, temperature, parking id.
fn header(bytes: &Bytes) -> Result<(Map<String, Value>, Reading), DecodeError> {
    bytes.require(3)?;
    let flags = bytes.u8(0)?;
    let flag = |bit: u8| json!(flags >> bit & 1);
    let mut object = Map::new();
    object.insert("occupied".into(), flag(7));
    object.insert("keepAlive".into(), flag(0));
    object.insert("reset".into(), flag(1));
    object.insert("No_Beacon".into(), flag(2));
    object.insert("Radar".into(), flag(3));
    object.insert("Obstruction".into(), flag(4));
    object.insert("Good_Battery".into(), flag(5));
    let celsius = bytes.i8(1)?;
    object.insert("Temperature".into(), json!(celsius));
    object.insert("Parking_ID".into(), json!(bytes.u8(2)?));
    let kind = if flags & 0x02 != 0 {
        MessageKind::Startup
    } else if flags & 0x01 != 0 {
        MessageKind::Heartbeat
    } else {
        MessageKind::Change
    };
    let reading = Reading::new(Occupancy::from_bool(flags & 0x80 != 0), kind).with_temperature_c(f64::from(celsius));
    Ok((object, reading))
}

pub fn decode_tekzipark(f_port: u8, payload: &[u8]) -> Result<Decoded, DecodeError> {
    let bytes = Bytes::new(payload);
    match f_port {
        1 => {
            let (mut object, reading) = header(&bytes)?;
            if bytes.len() > 3 {
                object.insert("Beacon_RSSI".into(), json!(bytes.i8(3)?));
                let beacons = payload[4..].chunks(2).map(|pair| {
                    // A trailing odd byte is read as the high byte of an id, as the vendor does.
                    u16::from(pair[0]) << 8 | u16::from(pair.get(1).copied().unwrap_or(0))
                });
                object.insert("Beacons".into(), json!(beacons.collect::<Vec<_>>()));
            }
            Ok(Decoded { reading, object: Value::Object(object) })
        }
        2 => {
            bytes.require(12)?;
            let (mut object, mut reading) = header(&bytes)?;
            for (idx, key) in ["Deflection_X", "Deflection_Y", "Deflection_Z", "Baseline_X", "Baseline_Y", "Baseline_Z"]
                .iter()
                .enumerate()
            {
                object.insert((*key).into(), json!(bytes.i8(3 + idx)?));
            }
            object.insert("Fault_Code".into(), json!(bytes.u8(9)?));
            // Byte 10 replaces the flag bit, as in the vendor's decoder.
            object.insert("Obstruction".into(), json!(bytes.u8(10)?));
            object.insert("D_Reflection".into(), json!(bytes.u8(11)?));
            reading.kind = MessageKind::Other;
            Ok(Decoded { reading, object: Value::Object(object) })
        }
        _ => Err(DecodeError::unknown_port()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus() {
        berth_plugin_sdk::corpus::assert_corpus("tekzitel-tekzipark.json", decode_tekzipark);
    }

    #[test]
    fn keep_alive_is_a_heartbeat() {
        let decoded = decode_tekzipark(1, &[0x29, 0x2e, 0x62]).unwrap();
        assert_eq!(decoded.reading.kind, MessageKind::Heartbeat);
        assert_eq!(decoded.reading.occupancy, Occupancy::Free);
        assert!(decode_tekzipark(2, &[0x29, 0x2e, 0x62]).is_err());
    }
}
