//! Uplink envelopes: what LoRaWAN network servers (The Things Stack v3, ChirpStack v4 and v3) and
//! berth's own native format deliver over MQTT and webhooks, read into one [`Uplink`].
//!
//! Every quirk of the real servers is handled here and nowhere else: omitted zero values, base64
//! or hex identifiers, `Z` or `+00:00` timestamps, events that are not uplinks, MAC-only frames.
//! Pure functions: no I/O.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use berth_kernel::ingest::UplinkInput;
use chrono::{DateTime, Utc};
use serde_json::Value;

/// Largest envelope accepted, in bytes. Real uplinks are a few KiB.
pub const MAX_ENVELOPE_BYTES: usize = 64 * 1024;
/// Largest LoRaWAN application payload (the largest regional maximum is 242 bytes).
pub const MAX_PAYLOAD_BYTES: usize = 255;

/// Which format an envelope came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// berth's own envelope (see [`parse_native`]).
    Native,
    TheThingsStack,
    ChirpStackV4,
    ChirpStackV3,
}

impl Network {
    pub fn as_str(&self) -> &'static str {
        match self {
            Network::Native => "native",
            Network::TheThingsStack => "ttn",
            Network::ChirpStackV4 => "chirpstack_v4",
            Network::ChirpStackV3 => "chirpstack_v3",
        }
    }
}

/// One uplink, whatever the network server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    pub network: Network,
    /// The DevEUI, 16 upper-case hex digits, when the envelope carries one.
    pub dev_eui: Option<String>,
    /// The network server's device id or name (`eui-70b3…`, `Device_1`), when present.
    pub device_name: Option<String>,
    pub f_port: u8,
    pub payload: Vec<u8>,
    /// The frame counter; `None` when the server omitted it and it cannot be inferred.
    pub f_cnt: Option<u32>,
    /// When the network received the frame, as close to the radio as the envelope says.
    pub received_at: Option<DateTime<Utc>>,
    /// The server's own id for this uplink (ChirpStack `deduplicationId`), when present.
    pub dedup_id: Option<String>,
}

impl Uplink {
    /// The identity to look the device up by: the DevEUI, else the server's device name.
    pub fn device_key(&self) -> Option<&str> {
        self.dev_eui.as_deref().or(self.device_name.as_deref())
    }

    /// What the kernel ingests; `None` when the envelope names no device.
    pub fn into_input(self) -> Option<UplinkInput> {
        let device_key = self.device_key()?.to_owned();
        Some(UplinkInput {
            device_key,
            f_port: self.f_port,
            payload: self.payload,
            counter: self.f_cnt,
            event_time: self.received_at,
        })
    }
}

/// What an envelope turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope {
    Uplink(Uplink),
    /// A well-formed message that is not an application uplink (a join, a downlink ack, a status
    /// or log event, a MAC-only frame): acknowledged and ignored. The text says what it was.
    Ignored(String),
}

/// Why an envelope was refused. [`EnvelopeError::reason`] is the metrics label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("envelope is {0} bytes; the limit is {MAX_ENVELOPE_BYTES}")]
    TooLarge(usize),
    #[error("envelope is not JSON: {0}")]
    NotJson(String),
    #[error("{0}")]
    Malformed(String),
    #[error("{0}")]
    BadPayload(String),
}

impl EnvelopeError {
    pub fn reason(&self) -> &'static str {
        match self {
            EnvelopeError::TooLarge(_) => "oversized",
            EnvelopeError::NotJson(_) | EnvelopeError::Malformed(_) => "malformed_envelope",
            EnvelopeError::BadPayload(_) => "bad_payload",
        }
    }
}

fn json(body: &[u8]) -> Result<Value, EnvelopeError> {
    if body.len() > MAX_ENVELOPE_BYTES {
        return Err(EnvelopeError::TooLarge(body.len()));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
    if !value.is_object() {
        return Err(EnvelopeError::Malformed("envelope must be a JSON object".into()));
    }
    Ok(value)
}

fn malformed<T>(message: impl Into<String>) -> Result<T, EnvelopeError> {
    Err(EnvelopeError::Malformed(message.into()))
}

fn base64_payload(field: &str, text: &str) -> Result<Vec<u8>, EnvelopeError> {
    let bytes = BASE64.decode(text).map_err(|e| EnvelopeError::BadPayload(format!("{field} is not base64: {e}")))?;
    check_payload_size(bytes)
}

fn check_payload_size(bytes: Vec<u8>) -> Result<Vec<u8>, EnvelopeError> {
    if bytes.len() > MAX_PAYLOAD_BYTES {
        return Err(EnvelopeError::BadPayload(format!(
            "payload is {} bytes; a LoRaWAN payload is at most {MAX_PAYLOAD_BYTES}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

fn hex_payload(field: &str, text: &str) -> Result<Vec<u8>, EnvelopeError> {
    let text = text.trim_start_matches("0x");
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(EnvelopeError::BadPayload(format!("{field} is not hex")));
    }
    let bytes = (0..text.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(&text[index..index + 2], 16).expect("invariant: checked hex digits"))
        .collect();
    check_payload_size(bytes)
}

/// An RFC 3339 timestamp (`Z` or an offset, 0-9 fractional digits).
fn timestamp(value: &Value, field: &str) -> Result<Option<DateTime<Utc>>, EnvelopeError> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) => DateTime::parse_from_rfc3339(text)
            .map(|time| Some(time.with_timezone(&Utc)))
            .map_err(|_| EnvelopeError::Malformed(format!("{field}: '{text}' is not an RFC 3339 time"))),
        other => malformed(format!("{field}: expected an RFC 3339 time, found {other}")),
    }
}

fn port(value: &Value, field: &str) -> Result<u8, EnvelopeError> {
    match value {
        // Omitted zero values: a missing port is port 0.
        Value::Null => Ok(0),
        Value::Number(number) => number
            .as_u64()
            .and_then(|port| u8::try_from(port).ok())
            .ok_or_else(|| EnvelopeError::Malformed(format!("{field}: {number} is not a port (0-255)"))),
        other => malformed(format!("{field}: expected a number, found {other}")),
    }
}

fn counter(value: &Value, field: &str) -> Result<Option<u32>, EnvelopeError> {
    match value {
        Value::Null => Ok(None),
        Value::Number(number) => number
            .as_u64()
            .and_then(|count| u32::try_from(count).ok())
            .map(Some)
            .ok_or_else(|| EnvelopeError::Malformed(format!("{field}: {number} is not a frame counter"))),
        other => malformed(format!("{field}: expected a number, found {other}")),
    }
}

fn text(value: &Value) -> Option<String> {
    value.as_str().filter(|text| !text.is_empty()).map(str::to_owned)
}

/// A DevEUI in hex (any case) as 16 upper-case digits.
pub fn normalise_eui(text: &str) -> Option<String> {
    (text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit())).then(|| text.to_ascii_uppercase())
}

/// Port 0 carries only MAC commands: nothing for an application.
fn application_uplink(uplink: Uplink) -> Envelope {
    if uplink.f_port == 0 { Envelope::Ignored("MAC-only frame (FPort 0)".into()) } else { Envelope::Uplink(uplink) }
}

/// The Things Stack v3 `ApplicationUp` JSON (MQTT `v3/{app}@{tenant}/devices/{device}/up` or a
/// webhook). `device_hint` is the device id from the topic or URL, used when a field mask dropped
/// `end_device_ids`.
pub fn parse_ttn(body: &[u8], device_hint: Option<&str>) -> Result<Envelope, EnvelopeError> {
    let value = json(body)?;
    if value.get("name").is_some() && value["data"].get("@type").is_some() {
        return malformed(
            "this is an Events API message (name/data/@type), not an integration message; \
             send the MQTT or webhook body",
        );
    }
    let Some(message) = value.get("uplink_message") else {
        let kind = value
            .as_object()
            .and_then(|object| object.keys().find(|key| *key != "end_device_ids" && *key != "correlation_ids"))
            .cloned();
        return match kind {
            Some(kind) => Ok(Envelope::Ignored(format!("{kind} (not an uplink)"))),
            None => malformed("no uplink_message in a The Things Stack message"),
        };
    };
    if !message.is_object() {
        return malformed("uplink_message must be an object");
    }
    let ids = &value["end_device_ids"];
    let device_name = text(&ids["device_id"]).or_else(|| device_hint.map(str::to_owned));
    let dev_eui = match text(&ids["dev_eui"]) {
        Some(eui) => Some(normalise_eui(&eui).ok_or_else(|| {
            EnvelopeError::Malformed(format!("end_device_ids.dev_eui: '{eui}' is not 16 hex digits"))
        })?),
        // Device ids made by the console from the EUI: `eui-70b3d57ed0001a2b`.
        None => device_name.as_deref().and_then(|name| name.strip_prefix("eui-")).and_then(normalise_eui),
    };
    let payload = match message["frm_payload"].as_str() {
        Some(text) => base64_payload("uplink_message.frm_payload", text)?,
        None => Vec::new(),
    };
    let received_at = match timestamp(&message["received_at"], "uplink_message.received_at")? {
        Some(time) => Some(time),
        None => timestamp(&value["received_at"], "received_at")?,
    };
    let uplink = Uplink {
        network: Network::TheThingsStack,
        dev_eui,
        device_name,
        f_port: port(&message["f_port"], "uplink_message.f_port")?,
        payload,
        // Omitted zero values: a missing counter is 0 when the message is otherwise complete.
        f_cnt: counter(&message["f_cnt"], "uplink_message.f_cnt")?.or(Some(0)),
        received_at,
        dedup_id: None,
    };
    if uplink.device_key().is_none() {
        return malformed("the message names no device (end_device_ids missing); put the device id in the URL");
    }
    Ok(application_uplink(uplink))
}

/// ChirpStack v4 (`deviceInfo`) or v3 (`applicationID`) uplink JSON, from MQTT
/// `application/{id}/device/{devEui}/event/{event}` or an HTTP integration (`?event=up`). The body
/// never names its event: `event` comes from the topic or the query, and anything but `up` is
/// ignored.
pub fn parse_chirpstack(body: &[u8], event: Option<&str>) -> Result<Envelope, EnvelopeError> {
    let value = json(body)?;
    match event {
        None | Some("up") => {}
        Some(other) => return Ok(Envelope::Ignored(format!("{other} event (not an uplink)"))),
    }
    let (network, dev_eui, device_name, received_at) = if value["deviceInfo"].is_object() {
        let info = &value["deviceInfo"];
        let eui = text(&info["devEui"]).ok_or(EnvelopeError::Malformed("deviceInfo.devEui is missing".into()))?;
        let dev_eui = normalise_eui(&eui)
            .ok_or_else(|| EnvelopeError::Malformed(format!("deviceInfo.devEui: '{eui}' is not 16 hex digits")))?;
        (Network::ChirpStackV4, dev_eui, text(&info["deviceName"]), timestamp(&value["time"], "time")?)
    } else if value.get("applicationID").is_some() {
        let eui = text(&value["devEUI"]).ok_or(EnvelopeError::Malformed("devEUI is missing".into()))?;
        // The `json` marshaler sends bytes as base64 (24 characters); `json_v3` sends hex.
        let dev_eui = normalise_eui(&eui)
            .or_else(|| BASE64.decode(&eui).ok().filter(|bytes| bytes.len() == 8).map(|bytes| hex_upper(&bytes)))
            .ok_or_else(|| EnvelopeError::Malformed(format!("devEUI: '{eui}' is neither hex nor base64 of 8 bytes")))?;
        let time = match timestamp(&value["publishedAt"], "publishedAt")? {
            Some(time) => Some(time),
            None => value["rxInfo"]
                .as_array()
                .and_then(|gateways| gateways.iter().find_map(|gateway| gateway["time"].as_str()))
                .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
                .map(|time| time.with_timezone(&Utc)),
        };
        (Network::ChirpStackV3, dev_eui, text(&value["deviceName"]), time)
    } else {
        return malformed("not a ChirpStack uplink: no deviceInfo (v4) or applicationID (v3)");
    };
    let payload = match value["data"].as_str() {
        Some(text) => base64_payload("data", text)?,
        None => Vec::new(),
    };
    let uplink = Uplink {
        network,
        dev_eui: Some(dev_eui),
        device_name,
        f_port: port(&value["fPort"], "fPort")?,
        payload,
        // v4.0 omitted a zero counter; v4.1+ always sends it.
        f_cnt: counter(&value["fCnt"], "fCnt")?.or(Some(0)),
        received_at,
        dedup_id: text(&value["deduplicationId"]),
    };
    Ok(application_uplink(uplink))
}

/// berth's native envelope, for devices and gateways that talk to berth directly (MQTT topic
/// `berth/v1/{operator}/uplink/{device}`, or the native webhook):
///
/// ```json
/// {"f_port": 1, "payload_hex": "0112", "counter": 42, "time": "2026-11-26T10:00:00Z"}
/// ```
///
/// `payload_base64` may replace `payload_hex`; `counter` and `time` are optional. `device` is the
/// device's external id (DevEUI or serial), from the topic or the body's `device`.
pub fn parse_native(body: &[u8], device: Option<&str>) -> Result<Envelope, EnvelopeError> {
    match parse_plain_native(body, device) {
        Some(envelope) => Ok(envelope),
        None => parse_native_value(body, device),
    }
}

/// The native envelope in its plain form (the fields of their usual types, strings without
/// escapes), read without building a JSON tree: every uplink a sensor fleet sends this way
/// takes this path. `None` for anything else, which [`parse_native_value`] reads, or explains.
fn parse_plain_native(body: &[u8], device: Option<&str>) -> Option<Envelope> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Plain<'a> {
        device: Option<&'a str>,
        f_port: u8,
        payload_hex: Option<&'a str>,
        payload_base64: Option<&'a str>,
        counter: Option<u32>,
        time: Option<&'a str>,
    }
    // A derived struct would also read a JSON array.
    if body.len() > MAX_ENVELOPE_BYTES || body.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    let plain: Plain<'_> = serde_json::from_slice(body).ok()?;
    let device = plain.device.filter(|name| !name.is_empty()).or(device)?;
    let payload = match (plain.payload_hex, plain.payload_base64) {
        (Some(hex), None) => hex_payload("payload_hex", hex).ok()?,
        (None, Some(text)) => base64_payload("payload_base64", text).ok()?,
        _ => return None,
    };
    let received_at = match plain.time {
        Some(text) => Some(DateTime::parse_from_rfc3339(text).ok()?.with_timezone(&Utc)),
        None => None,
    };
    Some(application_uplink(Uplink {
        network: Network::Native,
        dev_eui: normalise_eui(device),
        device_name: Some(device.to_owned()),
        f_port: plain.f_port,
        payload,
        f_cnt: plain.counter,
        received_at,
        dedup_id: None,
    }))
}

/// The native envelope read as a JSON tree: any form, with an error that names what is wrong.
fn parse_native_value(body: &[u8], device: Option<&str>) -> Result<Envelope, EnvelopeError> {
    let value = json(body)?;
    let object = value.as_object().expect("invariant: json() returns objects");
    for key in object.keys() {
        if !matches!(key.as_str(), "device" | "f_port" | "payload_hex" | "payload_base64" | "counter" | "time") {
            return malformed(format!(
                "unknown field '{key}'; expected device, f_port, payload_hex or payload_base64, counter, time"
            ));
        }
    }
    let device = text(&value["device"]).or_else(|| device.map(str::to_owned));
    let Some(device) = device else {
        return malformed("device: name the device in the topic or the body");
    };
    let payload = match (value["payload_hex"].as_str(), value["payload_base64"].as_str()) {
        (Some(hex), None) => hex_payload("payload_hex", hex)?,
        (None, Some(text)) => base64_payload("payload_base64", text)?,
        (Some(_), Some(_)) => return malformed("give payload_hex or payload_base64, not both"),
        (None, None) => return malformed("payload_hex or payload_base64 is required"),
    };
    if value["f_port"].is_null() {
        return malformed("f_port is required");
    }
    let uplink = Uplink {
        network: Network::Native,
        dev_eui: normalise_eui(&device),
        device_name: Some(device),
        f_port: port(&value["f_port"], "f_port")?,
        payload,
        f_cnt: counter(&value["counter"], "counter")?,
        received_at: timestamp(&value["time"], "time")?,
        dedup_id: None,
    };
    Ok(application_uplink(uplink))
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02X}")).collect()
}

/// What an MQTT topic says about the message on it (borrowed from the topic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic<'a> {
    /// `v3/{app}[@{tenant}]/devices/{device}/{event...}`
    TheThingsStack { device: &'a str, event: &'a str },
    /// `application/{app}/device/{devEui}/event/{event}`
    ChirpStack { dev_eui: &'a str, event: &'a str },
    /// `berth/v1/{operator}/uplink/{device}`
    Native { operator: &'a str, device: &'a str },
}

impl<'a> Topic<'a> {
    /// The device the topic names.
    pub fn device(&self) -> &'a str {
        match *self {
            Topic::TheThingsStack { device, .. } | Topic::Native { device, .. } => device,
            Topic::ChirpStack { dev_eui, .. } => dev_eui,
        }
    }
}

/// The first `N` segments of a topic, the last holding the rest; `None` with fewer.
fn segments<const N: usize>(topic: &str) -> Option<[&str; N]> {
    let mut parts = topic.splitn(N, '/');
    let mut out = [""; N];
    for slot in &mut out {
        *slot = parts.next()?;
    }
    Some(out)
}

pub fn parse_topic(topic: &str) -> Option<Topic<'_>> {
    let whole = |last: &str| !last.contains('/');
    if topic.starts_with("application/") {
        return match segments::<6>(topic)? {
            ["application", _app, "device", dev_eui, "event", event] if whole(event) => {
                Some(Topic::ChirpStack { dev_eui, event })
            }
            _ => None,
        };
    }
    match segments::<5>(topic)? {
        ["v3", _app, "devices", device, event] => Some(Topic::TheThingsStack { device, event }),
        ["berth", "v1", operator, "uplink", device] if whole(device) => Some(Topic::Native { operator, device }),
        _ => None,
    }
}

/// Reads an MQTT message by its topic.
pub fn parse_mqtt(topic: &str, body: &[u8]) -> Result<Envelope, EnvelopeError> {
    parse_mqtt_on(topic, parse_topic(topic), body)
}

/// Reads an MQTT message by its topic, already parsed (`known`: [`parse_topic`] of `topic`).
pub fn parse_mqtt_on(topic: &str, known: Option<Topic<'_>>, body: &[u8]) -> Result<Envelope, EnvelopeError> {
    match known {
        Some(Topic::TheThingsStack { device, event: "up" }) => parse_ttn(body, Some(device)),
        Some(Topic::TheThingsStack { event, .. }) => Ok(Envelope::Ignored(format!("{event} (not an uplink)"))),
        Some(Topic::ChirpStack { event, .. }) => parse_chirpstack(body, Some(event)),
        Some(Topic::Native { device, .. }) => parse_native(body, Some(device)),
        None => malformed(format!("topic '{topic}' is not a berth, The Things Stack or ChirpStack topic")),
    }
}

#[cfg(test)]
mod tests;
