//! Browan (TABS) TBMS100 motion / room-occupancy sensor. Port 102: status, battery,
//! board temperature, time since last event, event count.

use berth_plugin_sdk::bytes::Bytes;
use berth_plugin_sdk::{DecodeError, Decoded, MessageKind, Occupancy, Reading, Uplink, sensor::js_number};
use serde_json::json;

pub const MODELS: &[&str] = &["tbms100"];

berth_plugin_sdk::export_sensor_decoder!(crate::decode);

pub fn decode(uplink: &Uplink) -> Result<Decoded, DecodeError> {
    uplink.require_model(MODELS)?;
    decode_tbms100(uplink.f_port, uplink.bytes)
}

pub fn decode_tbms100(f_port: u8, payload: &[u8]) -> Result<Decoded, DecodeError> {
    if f_port != 102 {
        return Err(DecodeError::unknown_port());
    }
    // The device sends zeros when it has nothing to report: no data, no error.
    if payload.iter().all(|byte| *byte == 0) {
        return Ok(Decoded { reading: Reading::other(), object: json!({}) });
    }
    let bytes = Bytes::new(payload);
    bytes.require(8)?;
    let status = bytes.u8(0)? & 1;
    let decivolts = 25 + u32::from(bytes.u8(1)? & 0x0f);
    let celsius = i32::from(bytes.u8(2)? & 0x7f) - 32;
    Ok(Decoded {
        reading: Reading::new(Occupancy::from_bool(status == 1), MessageKind::Change)
            .with_battery_mv(decivolts * 100)
            .with_temperature_c(f64::from(celsius)),
        object: json!({
            "status": status,
            "battery": js_number(f64::from(decivolts) / 10.0),
            "temperatureBoard": celsius,
            "time": bytes.u16_le(3)?,
            "count": bytes.u24_le(5)?,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus() {
        berth_plugin_sdk::corpus::assert_corpus("browan-tbms100.json", decode_tbms100);
    }

    #[test]
    fn empty_reports_decode_to_nothing() {
        assert_eq!(decode_tbms100(102, &[0, 0, 0]).unwrap().object, json!({}));
        assert!(decode_tbms100(102, &[1, 2]).is_err());
    }
}
