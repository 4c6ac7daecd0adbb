//! Dingtek parking occupancy sensors DO200 (ultrasonic + magnetic), DO201 (ultrasonic + magnetic,
//! with temperature and humidity) and DO202 (radar + magnetic). Port 3 carries framed packets
//! `80 <device:2> <type> <length> ... 81`: telemetry or parameters.

use berth_plugin_sdk::bytes::Bytes;
use berth_plugin_sdk::{DecodeError, Decoded, MessageKind, Occupancy, Reading, Uplink, sensor::js_number};
use serde_json::{Map, Value, json};

pub const MODELS: &[&str] = &["do200", "do201", "do202"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    Do200,
    Do201,
    Do202,
}

berth_plugin_sdk::export_sensor_decoder!(crate::decode);

pub fn decode(uplink: &Uplink) -> Result<Decoded, DecodeError> {
    let model = match uplink.model {
        "do200" => Model::Do200,
        "do201" => Model::Do201,
        "do202" => Model::Do202,
        other => return Err(DecodeError::unknown_model(other)),
    };
    decode_model(model, uplink.f_port, uplink.bytes)
}

pub fn decode_model(model: Model, f_port: u8, payload: &[u8]) -> Result<Decoded, DecodeError> {
    if f_port != 3 {
        return Err(DecodeError::unknown_port());
    }
    let bytes = Bytes::new(payload);
    bytes.require(5)?;
    if bytes.u8(0)? != 0x80 || payload.last() != Some(&0x81) {
        return Err(DecodeError::new("not a Dingtek frame (expected 0x80 ... 0x81)"));
    }
    let length = usize::from(bytes.u8(4)?);
    if length != payload.len() {
        return Err(DecodeError::new(format!("frame length byte says {length}, payload has {} bytes", payload.len())));
    }
    let telemetry_type = if model == Model::Do200 { 0x01 } else { 0x02 };
    match bytes.u8(3)? {
        kind if kind == telemetry_type => telemetry(model, &bytes),
        0x03 => parameters(model, &bytes),
        other => Err(DecodeError::new(format!("unknown frame type 0x{other:02x}"))),
    }
}

fn telemetry(model: Model, bytes: &Bytes) -> Result<Decoded, DecodeError> {
    bytes.require(if model == Model::Do200 { 21 } else { 23 })?;
    let park_level = bytes.u8(7)?;
    let magnet_battery = bytes.u8(8)?;
    let centivolts = bytes.u16_be(9)?;
    let occupied = park_level >> 4 != 0;
    let mut object = Map::new();
    if model != Model::Do202 {
        object.insert("level".into(), json!(bytes.u16_be(5)?));
    }
    object.insert("volt".into(), js_number(f64::from(centivolts) / 100.0));
    object.insert("alarmPark".into(), json!(occupied));
    object.insert("alarmLevel".into(), json!(park_level & 0x0f != 0));
    object.insert("alarmMagnet".into(), json!(magnet_battery >> 4 != 0));
    object.insert("alarmBattery".into(), json!(magnet_battery & 0x0f != 0));
    object.insert("xMagnet".into(), json!(bytes.i16_be(11)?));
    object.insert("yMagnet".into(), json!(bytes.i16_be(13)?));
    object.insert("zMagnet".into(), json!(bytes.i16_be(15)?));
    let mut reading = Reading::new(Occupancy::from_bool(occupied), MessageKind::Heartbeat)
        .with_battery_mv(u32::from(centivolts) * 10);
    if model == Model::Do200 {
        object.insert("Frame_Counter".into(), json!(bytes.u16_be(17)?));
    } else {
        let celsius = bytes.i8(17)?;
        object.insert("temperature".into(), json!(celsius));
        object.insert("humidity".into(), json!(bytes.u8(18)?));
        object.insert("frameCounter".into(), json!(bytes.u16_be(19)?));
        reading = reading.with_temperature_c(f64::from(celsius));
    }
    Ok(Decoded { reading, object: Value::Object(object) })
}

fn parameters(model: Model, bytes: &Bytes) -> Result<Decoded, DecodeError> {
    let mut object = Map::new();
    object.insert("firmware".into(), json!(format!("{}.{}", bytes.u8(5)?, bytes.u8(6)?)));
    object.insert("uploadInterval".into(), json!(bytes.u8(7)?));
    if model == Model::Do200 {
        bytes.require(17)?;
        object.insert("ultraDetectInterval".into(), json!(bytes.u8(8)?));
        object.insert("magDetectInterval".into(), json!(bytes.u8(9)?));
        object.insert("magThreshold".into(), json!(bytes.u16_be(12)?));
    } else {
        bytes.require(16)?;
        object.insert("detectInterval".into(), json!(bytes.u8(8)?));
        if model == Model::Do201 {
            object.insert("levelThreshold".into(), json!(bytes.u8(9)?));
        }
        object.insert("magnetThreshold".into(), json!(bytes.u16_be(10)?));
        object.insert("batteryThreshold".into(), json!(bytes.u8(12)?));
    }
    Ok(Decoded { reading: Reading::other(), object: Value::Object(object) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_do200() {
        berth_plugin_sdk::corpus::assert_corpus("dingtek-do200.json", |port, bytes| {
            decode_model(Model::Do200, port, bytes)
        });
    }

    #[test]
    fn corpus_do201() {
        berth_plugin_sdk::corpus::assert_corpus("dingtek-do201.json", |port, bytes| {
            decode_model(Model::Do201, port, bytes)
        });
    }

    #[test]
    fn corpus_do202() {
        berth_plugin_sdk::corpus::assert_corpus("dingtek-do202.json", |port, bytes| {
            decode_model(Model::Do202, port, bytes)
        });
    }

    #[test]
    fn park_alarm_means_occupied() {
        let mut frame = berth_plugin_sdk::corpus::parse_hex("800031021706b4000001610010fff6fff08b2d00010081").unwrap();
        frame[7] = 0x10;
        let decoded = decode_model(Model::Do201, 3, &frame).unwrap();
        assert_eq!(decoded.reading.occupancy, Occupancy::Occupied);
        assert_eq!(decoded.object["alarmPark"], json!(true));
        assert_eq!(decoded.reading.battery_mv, Some(3530));
        assert!(decode_model(Model::Do201, 3, &frame[..10]).is_err());
    }
}
