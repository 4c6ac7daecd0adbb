//! Every envelope in `shared/uplink-envelopes/` (real captures, docs examples and unit-test
//! goldens of The Things Stack and ChirpStack) read as its manifest says, plus the bad inputs.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::*;

fn envelopes_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("BERTH_UPLINK_ENVELOPES") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("shared/uplink-envelopes"))
        .find(|dir| dir.join("manifest.json").exists())
        .expect("shared/uplink-envelopes not found beside the checkout; set BERTH_UPLINK_ENVELOPES")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn time(value: &Value) -> Option<DateTime<Utc>> {
    value.as_str().map(|text| DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc))
}

#[test]
fn every_fixture_reads_as_its_manifest_says() {
    let dir = envelopes_dir();
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let mut n_uplinks = 0;
    for entry in manifest["files"].as_array().unwrap() {
        let file = entry["file"].as_str().unwrap();
        let body = std::fs::read(dir.join(file)).unwrap();
        let (schema, event, values) =
            (entry["schema"].as_str().unwrap(), entry["event"].as_str().unwrap(), &entry["values"]);
        let parsed = match schema {
            "ttn-v3" => parse_ttn(&body, None),
            "ttn-v3-events-api" => parse_ttn(&body, None),
            "chirpstack-v4" | "chirpstack-v3-json" => parse_chirpstack(&body, Some(event)),
            other => panic!("{file}: unknown schema {other}"),
        };
        match (schema, event) {
            ("ttn-v3-events-api", _) => {
                let error = parsed.unwrap_err();
                assert!(error.to_string().contains("Events API"), "{file}: {error}");
            }
            (_, "up") if values["f_port"].is_null() => {
                assert_eq!(parsed, Ok(Envelope::Ignored("MAC-only frame (FPort 0)".into())), "{file}");
            }
            (_, "up") if values["device_id"].is_null() && values["dev_eui"].is_null() && schema == "ttn-v3" => {
                // A field-masked webhook: the device comes from the URL.
                assert!(parsed.is_err(), "{file}");
                let Envelope::Uplink(uplink) = parse_ttn(&body, Some("eui-70b3d57ed0000001")).unwrap() else {
                    panic!("{file}: not an uplink")
                };
                assert_eq!(uplink.dev_eui.as_deref(), Some("70B3D57ED0000001"));
                assert_eq!(hex(&uplink.payload), values["frm_payload_hex"].as_str().unwrap());
                n_uplinks += 1;
            }
            (_, "up") => {
                let Ok(Envelope::Uplink(uplink)) = parsed else { panic!("{file}: {parsed:?}") };
                let (eui, payload, expected_time) = match schema {
                    "ttn-v3" => (
                        values["dev_eui"].as_str().map(str::to_owned).or_else(|| {
                            values["device_id"].as_str().and_then(|id| id.strip_prefix("eui-")).map(str::to_uppercase)
                        }),
                        &values["frm_payload_hex"],
                        time(&values["uplink_message_received_at"]).or_else(|| time(&values["received_at"])),
                    ),
                    "chirpstack-v4" => {
                        (values["dev_eui"].as_str().map(str::to_uppercase), &values["data_hex"], time(&values["time"]))
                    }
                    _ => (
                        values["dev_eui_hex"].as_str().map(str::to_uppercase),
                        &values["data_hex"],
                        time(&values["published_at"]),
                    ),
                };
                assert_eq!(uplink.dev_eui, eui, "{file}");
                assert_eq!(u64::from(uplink.f_port), values["f_port"].as_u64().unwrap(), "{file}");
                assert_eq!(uplink.f_cnt.map(u64::from), Some(values["f_cnt"].as_u64().unwrap_or(0)), "{file}");
                assert_eq!(hex(&uplink.payload), payload.as_str().unwrap(), "{file}");
                assert_eq!(uplink.received_at, expected_time, "{file}");
                n_uplinks += 1;
            }
            _ => assert!(matches!(parsed, Ok(Envelope::Ignored(_))), "{file}: {parsed:?}"),
        }
    }
    assert!(n_uplinks >= 10, "only {n_uplinks} uplinks in the fixtures");
}

#[test]
fn chirpstack_v4_quirks() {
    let dir = envelopes_dir();
    let body = std::fs::read(dir.join("chirpstack-v4-up.lansitec.json")).unwrap();
    let Envelope::Uplink(uplink) = parse_chirpstack(&body, None).unwrap() else { panic!() };
    assert_eq!(uplink.network, Network::ChirpStackV4);
    assert_eq!(uplink.device_name.as_deref(), Some("70B3D5A4D4104770"));
    assert!(uplink.dedup_id.is_some());
    // The same body on a status topic is not an uplink.
    assert!(matches!(parse_chirpstack(&body, Some("status")), Ok(Envelope::Ignored(_))));
    let v3 = std::fs::read(dir.join("chirpstack-v3-up.protojson-thingsboard-docs.json")).unwrap();
    let Envelope::Uplink(uplink) = parse_chirpstack(&v3, Some("up")).unwrap() else { panic!() };
    assert_eq!((uplink.network, uplink.dev_eui.as_deref()), (Network::ChirpStackV3, Some("7B710FF12A9E662C")));
}

#[test]
fn topics_route_to_their_parser() {
    assert_eq!(
        parse_topic("v3/app1@ttn/devices/eui-70b3d57ed0000001/up"),
        Some(Topic::TheThingsStack { device: "eui-70b3d57ed0000001", event: "up" })
    );
    assert_eq!(
        parse_topic("v3/app1/devices/dev1/down/ack"),
        Some(Topic::TheThingsStack { device: "dev1", event: "down/ack" })
    );
    assert_eq!(
        parse_topic("application/ca739e26/device/70b3d57ed0000001/event/up"),
        Some(Topic::ChirpStack { dev_eui: "70b3d57ed0000001", event: "up" })
    );
    assert_eq!(
        parse_topic("berth/v1/acme/uplink/70B3D57ED0000001"),
        Some(Topic::Native { operator: "acme", device: "70B3D57ED0000001" })
    );
    assert_eq!(parse_topic("something/else"), None);
    for extra in ["berth/v1/acme/uplink/D1/more", "application/7/device/0004a30b/event/up/more", "v3/app1/devices/dev1"]
    {
        assert_eq!(parse_topic(extra), None, "{extra}");
    }
    let dir = envelopes_dir();
    let ttn = std::fs::read(dir.join("ttn-v3-up.bosch-parking.json")).unwrap();
    let Envelope::Uplink(uplink) = parse_mqtt("v3/app@ttn/devices/eui-1000000000000001/up", &ttn).unwrap() else {
        panic!()
    };
    assert_eq!((uplink.f_port, hex(&uplink.payload)), (2, "0112".to_owned()));
    assert!(matches!(parse_mqtt("v3/app@ttn/devices/x/join", &ttn), Ok(Envelope::Ignored(_))));
    assert!(parse_mqtt("nope/topic", &ttn).is_err());
}

#[test]
fn native_envelopes() {
    let body = br#"{"f_port": 1, "payload_hex": "0112", "counter": 7, "time": "2026-11-26T10:00:00+01:00"}"#;
    let Envelope::Uplink(uplink) = parse_native(body, Some("70b3d57ed0000001")).unwrap() else { panic!() };
    assert_eq!(uplink.dev_eui.as_deref(), Some("70B3D57ED0000001"));
    assert_eq!((uplink.f_port, uplink.payload.as_slice(), uplink.f_cnt), (1, &[1u8, 0x12][..], Some(7)));
    assert_eq!(uplink.received_at, Some("2026-11-26T09:00:00Z".parse().unwrap()));
    let body = br#"{"device": "SERIAL-9", "f_port": 3, "payload_base64": "ARI="}"#;
    let Envelope::Uplink(uplink) = parse_native(body, None).unwrap() else { panic!() };
    assert_eq!((uplink.dev_eui, uplink.device_name.as_deref()), (None, Some("SERIAL-9")));
}

/// The plain native form is read without a JSON tree; whatever it reads, the tree reads the same,
/// and whatever it leaves (other types, escapes, duplicates, errors) the tree reads or refuses.
#[test]
fn the_plain_native_path_reads_as_the_tree_does() {
    let bodies: &[&[u8]] = &[
        br#"{"f_port": 1, "payload_hex": "0112", "counter": 7, "time": "2026-11-26T10:00:00+01:00"}"#,
        br#" {"payload_base64": "ARI=", "f_port": 2, "counter": null, "time": null}"#,
        br#"{"device": "SERIAL-9", "f_port": 3, "payload_base64": "ARI="}"#,
        br#"{"device": "", "f_port": 3, "payload_hex": "0x01"}"#,
        br#"{"device": "70b3d57ed0000002", "f_port": 0, "payload_hex": "01"}"#,
        br#"{"device": "caf\u00e9", "f_port": 3, "payload_hex": "01"}"#,
        br#"{"f_port": 1, "f_port": 2, "payload_hex": "01"}"#,
        br#"{"f_port": 1.0, "payload_hex": "01"}"#,
        br#"{"f_port": "1", "payload_hex": "01"}"#,
        br#"{"f_port": null, "payload_hex": "01"}"#,
        br#"{"f_port": 1, "payload_hex": "01", "counter": 4294967296}"#,
        br#"{"f_port": 1, "payload_hex": "01", "counter": -1}"#,
        br#"{"f_port": 1, "payload_hex": "01", "payload_base64": "AQ=="}"#,
        br#"{"f_port": 1, "payload_hex": "01"} trailing"#,
        br#"[1, "01"]"#,
    ];
    for body in bodies {
        for device in [Some("70b3d57ed0000001"), None] {
            let tree = parse_native_value(body, device);
            if let Some(plain) = parse_plain_native(body, device) {
                assert_eq!(Ok(plain), tree, "{}", String::from_utf8_lossy(body));
            }
            assert_eq!(parse_native(body, device), tree, "{}", String::from_utf8_lossy(body));
        }
    }
    let plain = |body: &[u8]| parse_plain_native(body, Some("dev")).is_some();
    assert!(plain(bodies[0]) && plain(bodies[1]) && plain(bodies[2]));
    assert!(!plain(bodies[6]) && !plain(bodies[7]) && !plain(bodies[14]));
}

#[test]
fn bad_envelopes_say_what_is_wrong() {
    let cases: &[(&[u8], &str, &str)] = &[
        (b"not json", "malformed_envelope", "not JSON"),
        (b"[1, 2]", "malformed_envelope", "must be a JSON object"),
        (br#"{"f_port": 1, "payload_hex": "zz"}"#, "bad_payload", "payload_hex is not hex"),
        (br#"{"f_port": 1, "payload_base64": "%%%"}"#, "bad_payload", "payload_base64 is not base64"),
        (br#"{"f_port": 1}"#, "malformed_envelope", "payload_hex or payload_base64 is required"),
        (br#"{"f_port": 300, "payload_hex": "01"}"#, "malformed_envelope", "is not a port"),
        (br#"{"f_port": 1, "payload_hex": "01", "colour": 1}"#, "malformed_envelope", "unknown field 'colour'"),
        (br#"{"f_port": 1, "payload_hex": "01", "time": "yesterday"}"#, "malformed_envelope", "not an RFC 3339 time"),
    ];
    for (body, reason, message) in cases {
        let error = parse_native(body, Some("dev")).unwrap_err();
        assert_eq!(error.reason(), *reason, "{}", String::from_utf8_lossy(body));
        assert!(error.to_string().contains(message), "{error}");
    }
    let huge = format!(r#"{{"f_port": 1, "payload_hex": "{}"}}"#, "00".repeat(300));
    assert!(parse_native(huge.as_bytes(), Some("dev")).unwrap_err().to_string().contains("at most 255"));
    let enormous = vec![b' '; MAX_ENVELOPE_BYTES + 1];
    assert_eq!(parse_native(&enormous, None).unwrap_err().reason(), "oversized");
    assert!(parse_chirpstack(br#"{"deviceInfo": {"devEui": "xyz"}, "fPort": 1}"#, None).is_err());
    assert!(parse_chirpstack(br#"{"hello": 1}"#, None).unwrap_err().to_string().contains("not a ChirpStack uplink"));
    assert!(
        parse_ttn(
            br#"{"uplink_message": {"f_port": 1, "frm_payload": "!!"}, "end_device_ids": {"device_id": "d"}}"#,
            None
        )
        .unwrap_err()
        .to_string()
        .contains("not base64")
    );
}
