//! A sensor plugin that misbehaves on purpose, chosen by the device model, for the host's
//! containment tests. Model `well-behaved` decodes like a real sensor.

use berth_plugin_sdk::{DecodeError, Decoded, MessageKind, Occupancy, Reading, Uplink};
use serde_json::json;

berth_plugin_sdk::export_sensor_decoder!(crate::decode);

pub fn decode(uplink: &Uplink) -> Result<Decoded, DecodeError> {
    match uplink.model {
        "loop-forever" => {
            let mut counter: u64 = 0;
            loop {
                counter = std::hint::black_box(counter.wrapping_add(1));
            }
        }
        "grow-memory" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1024 * 1024]);
                std::hint::black_box(&hoard);
            }
        }
        "panic" => panic!("this plugin panics on purpose"),
        "huge-output" => Ok(Decoded { reading: Reading::other(), object: json!({"blob": "x".repeat(1024 * 1024)}) }),
        "not-an-object" => Ok(Decoded { reading: Reading::other(), object: json!([1, 2, 3]) }),
        "nan-temperature" => Ok(Decoded { reading: Reading::other().with_temperature_c(f64::NAN), object: json!({}) }),
        "slow" => {
            // Busy for 10 ms per unit of the first byte: an in-flight call for reload tests.
            busy_wait_ms(u64::from(uplink.bytes.first().copied().unwrap_or(0)) * 10);
            Ok(Decoded { reading: Reading::other(), object: json!({"plugin": "hostile", "slow": true}) })
        }
        "well-behaved" => {
            let occupied = uplink.bytes.first().is_some_and(|byte| byte & 1 == 1);
            Ok(Decoded {
                reading: Reading::new(Occupancy::from_bool(occupied), MessageKind::Change),
                object: json!({"occupied": occupied}),
            })
        }
        other => Err(DecodeError::unknown_model(other)),
    }
}

#[cfg(target_arch = "wasm32")]
fn busy_wait_ms(ms: u64) {
    use berth_plugin_sdk::bindings::berth::plugin::clock::now_ms;
    let until = now_ms() + ms;
    while now_ms() < until {
        std::hint::spin_loop();
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn busy_wait_ms(ms: u64) {
    std::thread::sleep(std::time::Duration::from_millis(ms));
}
