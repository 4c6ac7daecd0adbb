//! Host tests with real components: the bundled decoders against the vendor corpus, and the
//! hostile plugin's every misbehaviour contained while a well-behaved plugin keeps working.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

fn load(host: &PluginHost, name: &str, limits: Limits) -> SensorPlugin {
    let path = std::path::Path::new(BUNDLED_PLUGINS_DIR).join(format!("{name}.wasm"));
    let wasm = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    SensorPlugin::load(host, name, &wasm, limits, BTreeMap::new()).unwrap()
}

fn uplink(model: &str, f_port: u8, payload: &[u8]) -> Uplink {
    Uplink { device_id: "dev-1".into(), model: model.into(), f_port, payload: payload.to_vec(), received_at_ms: 0 }
}

const CORPUS: &[(&str, &str, &str)] = &[
    ("bosch-tps110.json", "berth_sensor_bosch", "tps110"),
    ("nwave-nps310sm.json", "berth_sensor_nwave", "nps310sm"),
    ("nwave-nps405.json", "berth_sensor_nwave", "nps405"),
    ("nwave-ncc405.json", "berth_sensor_nwave", "ncc405"),
    ("tekzitel-tekzipark.json", "berth_sensor_tekzitel", "tekzipark"),
    ("dingtek-do200.json", "berth_sensor_dingtek", "do200"),
    ("dingtek-do201.json", "berth_sensor_dingtek", "do201"),
    ("dingtek-do202.json", "berth_sensor_dingtek", "do202"),
    ("browan-tbms100.json", "berth_sensor_browan", "tbms100"),
    ("elsys-ers-eye.json", "berth_sensor_elsys", "ers-eye"),
    ("elsys-ems-desk.json", "berth_sensor_elsys", "ems-desk"),
];

#[test]
fn bundled_components_decode_the_whole_corpus() {
    let host = PluginHost::new().unwrap();
    for (file, plugin_name, model) in CORPUS {
        let plugin = load(&host, plugin_name, Limits::default());
        berth_plugin_sdk::corpus::assert_corpus(file, |f_port, bytes| {
            match plugin.decode(&uplink(model, f_port, bytes)) {
                Ok(decoded) => Ok(berth_plugin_sdk::Decoded {
                    reading: berth_plugin_sdk::Reading::other(),
                    object: decoded.object,
                }),
                Err(PluginError::Decode(message)) => Err(berth_plugin_sdk::DecodeError(message)),
                Err(fault) => panic!("{plugin_name} faulted on {file}: {fault}"),
            }
        });
        assert_eq!(plugin.total_faults(), 0);
    }
}

#[test]
fn readings_are_normalised_through_the_boundary() {
    let host = PluginHost::new().unwrap();
    let nwave = load(&host, "berth_sensor_nwave", Limits::default());
    let decoded = nwave.decode(&uplink("nps405", 2, &[0x01, 0xd3, 0xd8])).unwrap();
    assert_eq!(decoded.reading.occupancy, Occupancy::Occupied);
    assert_eq!(decoded.reading.kind, MessageKind::Heartbeat);
    assert_eq!(decoded.reading.battery_mv, Some(3344));
    assert_eq!(decoded.reading.temperature_c, Some(-10.0));
    let error = nwave.decode(&uplink("nps405", 2, &[0x01])).unwrap_err();
    assert_eq!(error, PluginError::Decode("payload too short: expected at least 3 bytes, got 1".into()));
    assert!(!error.is_fault());

    // The vendor's own example reports -117 °C: kept in the object, dropped from the reading.
    let dingtek = load(&host, "berth_sensor_dingtek", Limits::default());
    let frame = berth_plugin_sdk::corpus::parse_hex("800031021706b4000001610010fff6fff08b2d00010081").unwrap();
    let decoded = dingtek.decode(&uplink("do201", 3, &frame)).unwrap();
    assert_eq!(decoded.object["temperature"], -117);
    assert_eq!(decoded.reading.temperature_c, None);
    assert_eq!(decoded.reading.battery_mv, Some(3530));
}

#[test]
fn hostile_plugins_are_contained() {
    let host = PluginHost::new().unwrap();
    let limits = Limits { call_timeout: Duration::from_millis(50), max_consecutive_faults: 3, ..Limits::default() };
    let hostile = load(&host, "berth_plugin_hostile", limits);
    let nwave = load(&host, "berth_sensor_nwave", Limits::default());
    let healthy = |label: &str| {
        let decoded = nwave.decode(&uplink("nps310sm", 1, &[0x01])).unwrap_or_else(|e| panic!("after {label}: {e}"));
        assert_eq!(decoded.reading.occupancy, Occupancy::Occupied);
        let decoded = hostile.decode(&uplink("well-behaved", 1, &[0x01])).unwrap();
        assert_eq!(decoded.object, serde_json::json!({"occupied": true}));
    };
    healthy("start");
    type Expectation = fn(&PluginError) -> bool;
    let cases: [(&str, Expectation); 6] = [
        ("loop-forever", |e| matches!(e, PluginError::Timeout(50))),
        ("grow-memory", |e| matches!(e, PluginError::MemoryLimit(_))),
        ("panic", |e| matches!(e, PluginError::Trap(_))),
        ("huge-output", |e| matches!(e, PluginError::Malformed(m) if m.contains("limit"))),
        ("not-an-object", |e| matches!(e, PluginError::Malformed(_))),
        ("nan-temperature", |e| matches!(e, PluginError::Malformed(m) if m.contains("not a number"))),
    ];
    for (model, expected) in cases {
        let error = hostile.decode(&uplink(model, 1, &[0])).unwrap_err();
        assert!(expected(&error), "{model}: unexpected {error:?}");
        assert!(error.is_fault());
        assert_eq!(hostile.last_error(), Some(error.to_string()));
        // A success in between resets the streak; the other plugin never noticed.
        healthy(model);
    }
    assert_eq!(hostile.total_faults(), 6);
    assert!(!hostile.is_quarantined());

    for _ in 0..3 {
        assert!(hostile.decode(&uplink("panic", 1, &[0])).unwrap_err().is_fault());
    }
    assert!(hostile.is_quarantined());
    let error = hostile.decode(&uplink("well-behaved", 1, &[1])).unwrap_err();
    assert_eq!(error, PluginError::Quarantined(3));
    nwave.decode(&uplink("nps310sm", 1, &[0x00])).unwrap();
}

#[test]
fn a_component_of_another_world_is_refused() {
    let host = PluginHost::new().unwrap();
    let error = SensorPlugin::load(&host, "junk", b"not wasm at all", Limits::default(), BTreeMap::new())
        .err()
        .expect("junk must not load");
    assert!(matches!(error, PluginError::Load(_)), "{error:?}");
}
