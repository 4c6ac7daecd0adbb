//! The demo's simulated sensors: a fleet of Bosch, Nwave, TEKZITEL and Dingtek parking sensors on
//! the demo garage's ground floor, publishing their vendors' real payload layouts through the
//! MQTT broker (berth native topics), so availability visibly changes. Arrivals and departures
//! come every couple of seconds; every sensor also sends a heartbeat now and then.

use std::time::Duration;

use anyhow::Context;
use berth_kernel::Kernel;
use berth_kernel::auth::Principal;
use berth_kernel::device::DeviceInput;
use berth_kernel::ids::SiteId;
use berth_kernel::ports::SpaceFilter;
use berth_mqtt::{BrokerAddress, Publisher};
use rand::Rng;

/// One simulated sensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatedSensor {
    pub external_id: String,
    pub vendor: &'static str,
    pub model: &'static str,
    pub space_id: berth_kernel::ids::SpaceId,
}

/// The fleet's mix: vendor, model, DevEUI prefix (the vendor's OUI-like range).
const FLEET: &[(&str, &str, &str)] = &[
    ("bosch", "tps110", "FCD6BD00"),
    ("nwave", "nps405", "70B3D5E7"),
    ("tekzitel", "tekzipark", "70B3D531"),
    ("dingtek", "do201", "F0A2D100"),
];

/// Sensors on the first spaces of the garage.
pub const FLEET_SIZE: usize = 40;

/// The payload a sensor of `model` sends for a state: (f-port, bytes), in the vendor's layout
/// (see shared/sensor-corpus). `heartbeat` picks the vendor's periodic frame where it has one.
pub fn payload(model: &str, occupied: bool, heartbeat: bool) -> (u8, Vec<u8>) {
    let bit = u8::from(occupied);
    match model {
        // TPS110: port 1 parking status, port 2 heartbeat; bit 0 of byte 0 is "occupied".
        "tps110" => (if heartbeat { 2 } else { 1 }, vec![bit]),
        // NPS405: port 1 status (bit 0), port 2 heartbeat with battery and temperature.
        "nps405" if heartbeat => (2, vec![bit, 0xd3, 0x1c]),
        "nps405" => (1, vec![bit]),
        // TEKZIPARK: flags (bit 7 occupied, bit 5 good battery, bit 0 keep-alive), °C, parking id.
        "tekzipark" => (1, vec![bit << 7 | 0x20 | u8::from(heartbeat), 18, 7]),
        // DO201 telemetry frame: 0x80 … 0x81, 23 bytes; the high nibble of byte 7 is "parked".
        "do201" => {
            let mut frame = vec![
                0x80, 0x00, 0x31, 0x02, 0x17, 0x06, 0xb4, 0x00, 0x00, 0x01, 0x61, 0x00, 0x10, 0xff, 0xf6, 0xff, 0xf0,
                0x8b, 0x2d, 0x00, 0x01, 0x00, 0x81,
            ];
            frame[7] = bit << 4;
            (3, frame)
        }
        other => unreachable!("the simulator has no payload for model {other}"),
    }
}

/// Registers a fleet of `size` sensors on the site's first spaces (once; later runs find it).
pub async fn ensure_fleet(
    kernel: &Kernel,
    operator_admin: &Principal,
    site: SiteId,
    size: usize,
) -> anyhow::Result<Vec<SimulatedSensor>> {
    let mut spaces = Vec::with_capacity(size);
    let mut page = berth_kernel::page::PageRequest::first(berth_kernel::page::MAX_PAGE_SIZE);
    while spaces.len() < size {
        let filter = SpaceFilter { site_id: Some(site), ..Default::default() };
        let found = kernel.list_spaces(operator_admin, filter, page).await.context("listing the site's spaces")?;
        spaces.extend(found.items.into_iter().take(size - spaces.len()));
        match found.next_after {
            Some(after) => page.after = Some(after),
            None => break,
        }
    }
    // DevEUI-like ids: the vendor's prefix, 16 bits of the site, the sensor's number.
    let site_tag = site.as_uuid().as_u128() as u16;
    let mut fleet = Vec::with_capacity(spaces.len());
    for (index, space) in spaces.iter().enumerate() {
        let (vendor, model, prefix) = FLEET[index % FLEET.len()];
        let external_id = format!("{prefix}{site_tag:04X}{index:04X}");
        let sensor = SimulatedSensor { external_id, vendor, model, space_id: space.id };
        let input = DeviceInput {
            external_id: sensor.external_id.clone(),
            vendor: vendor.to_owned(),
            model: model.to_owned(),
            name: Some(format!("{vendor} {model} on {}", space.details.code)),
            space_id: Some(space.id),
        };
        match kernel.register_device(operator_admin, input).await {
            Ok(_) | Err(berth_kernel::KernelError::Conflict(_)) => {}
            Err(error) => return Err(error).context("registering a simulated sensor"),
        }
        fleet.push(sensor);
    }
    Ok(fleet)
}

/// Publishes the fleet's traffic until dropped.
pub struct Simulator {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Simulator {
    /// Starts publishing for `operator` (its slug or id, as in the topic) on `broker`.
    pub fn start(
        broker: &BrokerAddress,
        credentials: Option<(String, String)>,
        operator: &str,
        fleet: Vec<SimulatedSensor>,
        tick: Duration,
    ) -> Self {
        let publisher = Publisher::connect(broker, "berth-demo-simulator", credentials);
        let operator = operator.to_owned();
        let task = tokio::spawn(async move {
            let mut occupied: Vec<bool> = {
                let mut rng = rand::thread_rng();
                fleet.iter().map(|_| rng.gen_bool(0.6)).collect()
            };
            let mut counters = vec![0u32; fleet.len()];
            // Everyone reports once at start, so the garage fills in at once.
            for index in 0..fleet.len() {
                send(&publisher, &operator, &fleet[index], &mut counters[index], occupied[index], false).await;
            }
            let mut ticker = tokio::time::interval(tick);
            loop {
                ticker.tick().await;
                let (index, heartbeat) = {
                    let mut rng = rand::thread_rng();
                    (rng.gen_range(0..fleet.len().max(1)), rng.gen_bool(0.3))
                };
                let Some(sensor) = fleet.get(index) else { continue };
                if !heartbeat {
                    occupied[index] = !occupied[index];
                }
                send(&publisher, &operator, sensor, &mut counters[index], occupied[index], heartbeat).await;
            }
        });
        Self { task }
    }
}

/// A sensor's uplink as a berth native MQTT message: (topic, body).
pub fn uplink_message(
    operator: &str,
    sensor: &SimulatedSensor,
    counter: u32,
    occupied: bool,
    heartbeat: bool,
) -> (String, Vec<u8>) {
    let (f_port, bytes) = payload(sensor.model, occupied, heartbeat);
    let body = serde_json::json!({
        "f_port": f_port,
        "payload_hex": hex::encode(bytes),
        "counter": counter,
        "time": chrono::Utc::now().to_rfc3339(),
    });
    (format!("berth/v1/{operator}/uplink/{}", sensor.external_id), body.to_string().into_bytes())
}

async fn send(
    publisher: &Publisher,
    operator: &str,
    sensor: &SimulatedSensor,
    counter: &mut u32,
    occupied: bool,
    heartbeat: bool,
) {
    *counter += 1;
    let (topic, body) = uplink_message(operator, sensor, *counter, occupied, heartbeat);
    if let Err(error) = publisher.publish(&topic, body).await {
        tracing::warn!(%error, "simulator could not publish");
    }
}
