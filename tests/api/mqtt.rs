//! MQTT ingest: the embedded broker carrying all three envelope formats, an external broker
//! (`BERTH_TEST_MQTT_URL`, Mosquitto on CI) with a persistent session across a broken connection, bad messages counted
//! by reason without stalling the pipeline, and the port-taken error.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use berth::config::{MqttMode, MqttSubscriptionConfig};
use berth_mqtt::{BrokerAddress, Publisher};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::{Backend, Tenant, TestApp};
use crate::live::{BOSCH_EUI, fixture};

/// The external broker (Mosquitto on CI), as `host:port` from `BERTH_TEST_MQTT_URL`.
fn mosquitto() -> Option<&'static str> {
    let url = std::env::var("BERTH_TEST_MQTT_URL").ok().filter(|url| !url.is_empty())?;
    let address = url.trim_start_matches("mqtt://").trim_start_matches("tcp://").trim_end_matches('/').to_owned();
    Some(Box::leak(address.into_boxed_str()))
}

/// Polls a space's shown status until it is `want` (10 s at most).
async fn wait_for_status(app: &TestApp, tenant: &Tenant, site: &str, space: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let availability = app.get(&format!("/v1/sites/{site}/availability"), &tenant.staff_key).await.expect(200);
        let shown = availability["spaces"].as_array().unwrap().iter().find(|s| s["id"] == space).unwrap().clone();
        if shown["status"] == want {
            return shown;
        }
        assert!(Instant::now() < deadline, "space {space} never became {want}: {shown}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn register(app: &TestApp, tenant: &Tenant, external_id: &str, vendor: &str, model: &str, space: &str) {
    let body = json!({"external_id": external_id, "vendor": vendor, "model": model, "space_id": space});
    app.post("/v1/devices", &tenant.admin_key, body).await.expect(201);
}

fn native(f_port: u8, hex: &str, counter: u32) -> Vec<u8> {
    json!({"f_port": f_port, "payload_hex": hex, "counter": counter, "time": chrono::Utc::now().to_rfc3339()})
        .to_string()
        .into_bytes()
}

/// The embedded broker takes The Things Stack, ChirpStack and native topics; bad messages are
/// rejected by reason and the next good one still goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_carries_every_envelope() {
    let app = TestApp::spawn_with(Backend::Sqlite, |config| {
        config.mqtt.mode = MqttMode::Embedded;
        config.mqtt.listen = "127.0.0.1:0".parse().unwrap();
        config.mqtt.subscriptions.extend([
            MqttSubscriptionConfig { topic: "v3/+/devices/+/up".into(), operator: Some("mqtt-porto".into()) },
            MqttSubscriptionConfig {
                topic: "application/+/device/+/event/+".into(),
                operator: Some("mqtt-porto".into()),
            },
        ]);
    })
    .await;
    let tenant = app.new_tenant("mqtt-porto").await;
    let (site, spaces) = tenant.site_with_spaces(&app, "Garage", 3).await;
    register(&app, &tenant, BOSCH_EUI, "bosch", "tps110", &spaces[0]).await;
    register(&app, &tenant, "70B3D53100000001", "tekzitel", "tekzipark", &spaces[1]).await;
    let mqtt = app.mqtt();
    assert!(mqtt.embedded.is_some());
    let publisher = Publisher::connect(&mqtt.broker, "test-publisher", None);

    // The Things Stack v3: the captured Bosch heartbeat says occupied.
    publisher
        .publish("v3/application-tts-name@ttn/devices/eui-1000000000000001/up", fixture("ttn-v3-up.bosch-parking.json"))
        .await
        .unwrap();
    wait_for_status(&app, &tenant, &site, &spaces[0], "occupied").await;
    // ChirpStack v4, same sensor, newer capture: a refresh. A status event is ignored.
    publisher
        .publish("application/1/device/1000000000000001/event/up", fixture("chirpstack-v4-up.bosch-parking.json"))
        .await
        .unwrap();
    publisher
        .publish(
            "application/1/device/24e124707c481005/event/status",
            fixture("chirpstack-v4-status.milesight-am308.json"),
        )
        .await
        .unwrap();
    // Native: TEKZIPARK flags with the occupied bit.
    publisher.publish("berth/v1/mqtt-porto/uplink/70B3D53100000001", native(1, "a01207", 1)).await.unwrap();
    wait_for_status(&app, &tenant, &site, &spaces[1], "occupied").await;

    // Bad input: not JSON, an unknown device, an operator nobody has, a device nobody
    // registered (The Things Stack), a payload the plugin refuses, an oversized message.
    let bad: [(&str, Vec<u8>); 6] = [
        ("berth/v1/mqtt-porto/uplink/70B3D53100000001", b"{not json".to_vec()),
        ("berth/v1/mqtt-porto/uplink/FFFFFFFFFFFFFFFF", native(1, "01", 1)),
        ("berth/v1/nobody/uplink/70B3D53100000001", native(1, "01", 1)),
        ("v3/app@ttn/devices/x/up", fixture("ttn-v3-up.ezurio-rs26x.json")),
        ("berth/v1/mqtt-porto/uplink/1000000000000001", native(9, "01", 11)),
        ("berth/v1/mqtt-porto/uplink/70B3D53100000001", vec![b' '; 100 * 1024]),
    ];
    for (topic, body) in bad {
        publisher.publish(topic, body).await.unwrap();
    }
    // ...and the pipeline goes on: the bay empties.
    publisher.publish("berth/v1/mqtt-porto/uplink/70B3D53100000001", native(1, "201207", 2)).await.unwrap();
    wait_for_status(&app, &tenant, &site, &spaces[1], "free").await;

    let stats = app.mqtt().ingest.stats().clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats.rejected.load(Ordering::Relaxed) < 6 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stats.rejected.load(Ordering::Relaxed), 6);
    assert_eq!(stats.ignored.load(Ordering::Relaxed), 1, "the status event");
    assert!(stats.applied.load(Ordering::Relaxed) >= 4);
    assert_eq!(stats.failed.load(Ordering::Relaxed), 0);
    // The plugin's refusal lands in the device's health.
    let devices = app.get("/v1/devices", &tenant.staff_key).await.expect(200);
    let bosch = devices["items"].as_array().unwrap().iter().find(|d| d["external_id"] == BOSCH_EUI).unwrap();
    let health =
        app.get(&format!("/v1/devices/{}/health", bosch["id"].as_str().unwrap()), &tenant.staff_key).await.expect(200);
    assert_eq!(health["rejected"]["plugin_rejected"], 1, "{health}");
    // Rejections are metrics too.
    let metrics = app.client.get(format!("{}/metrics", app.base_url)).send().await.unwrap().text().await.unwrap();
    for line in [
        r#"berth_ingest_rejected_total{source="mqtt",reason="malformed_envelope"}"#,
        r#"berth_ingest_rejected_total{source="mqtt",reason="oversized"}"#,
        r#"berth_ingest_rejected_total{source="mqtt",reason="unknown_operator"}"#,
        r#"berth_ingest_rejected_total{source="ingest",reason="unknown_device"}"#,
        r#"berth_ingest_rejected_total{source="ingest",reason="plugin_rejected"}"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from /metrics");
    }
    publisher.disconnect().await;
    app.cleanup().await;
}

/// A TCP pass-through we can cut and restore, to break berth's connection to Mosquitto.
struct Cable {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Cable {
    async fn plug(addr: SocketAddr, to: &'static str) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut links = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                links.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { addr, task }
    }

    /// Closes the listener and every connection through it.
    fn cut(self) -> SocketAddr {
        self.task.abort();
        self.addr
    }
}

/// An external broker: QoS 1 on a persistent session. Messages published while berth's
/// connection is down are delivered after it reconnects (with backoff), none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_broker_session_survives_a_broken_connection() {
    let Some(mosquitto) = mosquitto() else {
        eprintln!("BERTH_TEST_MQTT_URL not set: external broker run skipped");
        return;
    };
    let cable = Cable::plug("127.0.0.1:0".parse().unwrap(), mosquitto).await;
    let slug = format!("ext-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let client_id = format!("berth-test-{slug}");
    let (url, id, topic_filter) =
        (format!("mqtt://{}", cable.addr), client_id.clone(), format!("berth/v1/{slug}/uplink/+"));
    let app = TestApp::spawn_with(Backend::Sqlite, move |config| {
        config.mqtt.mode = MqttMode::External;
        config.mqtt.url = Some(url);
        config.mqtt.client_id = id;
        config.mqtt.subscriptions = vec![MqttSubscriptionConfig { topic: topic_filter, operator: None }];
    })
    .await;
    let tenant = app.new_tenant(&slug).await;
    let (site, spaces) = tenant.site_with_spaces(&app, "Kerb", 1).await;
    register(&app, &tenant, BOSCH_EUI, "bosch", "tps110", &spaces[0]).await;
    let ingest = app.mqtt().ingest.stats().clone();
    wait_until(|| ingest.connected.load(Ordering::Relaxed)).await;

    let direct = BrokerAddress::parse(&format!("mqtt://{mosquitto}")).unwrap();
    let mut publisher = Publisher::connect(&direct, &format!("{slug}-sensor"), None);
    let topic = format!("berth/v1/{slug}/uplink/{BOSCH_EUI}");
    publisher.publish(&topic, native(1, "01", 1)).await.unwrap();
    wait_for_status(&app, &tenant, &site, &spaces[0], "occupied").await;

    // Cut berth off, publish while it is away (Mosquitto queues for the session).
    let addr = cable.cut();
    wait_until(|| !ingest.connected.load(Ordering::Relaxed)).await;
    publisher.publish(&topic, native(1, "00", 2)).await.unwrap();
    assert!(publisher.wait_acked(2, Duration::from_secs(10)).await, "Mosquitto took the message");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shown = app.get(&format!("/v1/sites/{site}/availability"), &tenant.staff_key).await.expect(200);
    assert_eq!(shown["by_status"]["occupied"], 1, "nothing arrives while disconnected");

    // Restore the cable: berth reconnects, resumes its session, gets the queued message.
    let _cable = Cable::plug(addr, mosquitto).await;
    wait_for_status(&app, &tenant, &site, &spaces[0], "free").await;
    assert!(ingest.connects.load(Ordering::Relaxed) >= 2);

    // The connections share the subscription: each message is handled once (not once per
    // connection), and readings apply by device time whichever connection took them.
    let connections = app.config.mqtt.connections;
    assert!(connections > 1);
    let before = ingest.received.load(Ordering::Relaxed);
    for counter in 3..13u32 {
        publisher.publish(&topic, native(1, if counter % 2 == 0 { "01" } else { "00" }, counter)).await.unwrap();
    }
    wait_until(|| ingest.received.load(Ordering::Relaxed) >= before + 10).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ingest.received.load(Ordering::Relaxed) - before, 10, "each message once");
    wait_for_status(&app, &tenant, &site, &spaces[0], "occupied").await;
    publisher.disconnect().await;
    app.cleanup().await;
    for connection in 0..connections {
        forget_session(&direct, &format!("{client_id}-{connection}")).await;
    }
}

/// The in-process link under back-pressure: with room for only a few messages at a time, a
/// burst far larger than the router's buffer still arrives whole and in order (each reading a
/// change, the last one deciding the bay), the router holding the rest until asked for more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_through_the_embedded_broker_arrives_whole_and_in_order() {
    let app = TestApp::spawn_with(Backend::Sqlite, |config| {
        config.mqtt.mode = MqttMode::Embedded;
        config.mqtt.listen = "127.0.0.1:0".parse().unwrap();
        config.mqtt.max_in_flight = 8;
    })
    .await;
    let tenant = app.new_tenant("mqtt-braga").await;
    let (site, spaces) = tenant.site_with_spaces(&app, "Garage", 1).await;
    register(&app, &tenant, "70B3D53100000002", "tekzitel", "tekzipark", &spaces[0]).await;
    let publisher = Publisher::connect(&app.mqtt().broker, "test-burst", None);
    const BURST: u32 = 1000;
    let start = chrono::Utc::now() - chrono::Duration::seconds(i64::from(BURST));
    for counter in 1..=BURST {
        // Occupied on odd counters, one second apart.
        let flags = if counter % 2 == 1 { "a01207" } else { "201207" };
        let time = start + chrono::Duration::seconds(i64::from(counter));
        let body = json!({"f_port": 1, "payload_hex": flags, "counter": counter, "time": time.to_rfc3339()});
        publisher.publish("berth/v1/mqtt-braga/uplink/70B3D53100000002", body.to_string().into_bytes()).await.unwrap();
    }
    let stats = app.mqtt().ingest.stats().clone();
    wait_until(|| stats.applied.load(Ordering::Relaxed) >= u64::from(BURST)).await;
    assert_eq!(stats.received.load(Ordering::Relaxed), u64::from(BURST));
    assert_eq!((stats.rejected.load(Ordering::Relaxed), stats.failed.load(Ordering::Relaxed)), (0, 0));
    wait_for_status(&app, &tenant, &site, &spaces[0], "free").await;
    let history = app.get(&format!("/v1/spaces/{}/history?limit=1000", spaces[0]), &tenant.staff_key).await.expect(200);
    let changes = history["items"].as_array().unwrap();
    assert_eq!(changes.len(), BURST as usize, "every reading applied in order is a change");
    assert!(changes.iter().all(|event| event["kind"] == "sensed"), "{history}");
    publisher.disconnect().await;
    app.cleanup().await;
}

async fn wait_until(condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Removes a test's persistent session from Mosquitto (a clean-session connect does).
async fn forget_session(broker: &BrokerAddress, client_id: &str) {
    let mut options = rumqttc::MqttOptions::new(client_id, &broker.host, broker.port);
    options.set_clean_session(true);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(event) = eventloop.poll().await {
            if matches!(event, rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) {
                let _ = client.try_disconnect();
            }
            if matches!(event, rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
}

/// `serve` refuses to start when the broker's port is taken, naming the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_mqtt_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = berth::config::Config { data_dir: data_dir.path().to_path_buf(), ..Default::default() };
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.plugins.enabled = false;
    config.mqtt.listen = taken.local_addr().unwrap();
    let store = berth::open_store(&config).await.unwrap();
    let error = berth::start(&config, store, std::future::pending()).await.err().expect("must not start");
    let message = format!("{error:#}");
    assert!(message.contains("mqtt.listen") && message.contains(&taken.local_addr().unwrap().to_string()), "{message}");
}

/// The demo simulator's payloads are what the bundled plugins decode to the intended state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_sensors_speak_their_vendors_layouts() {
    use berth_kernel::plugin::{Occupancy, SensorUplink};
    let app = TestApp::spawn(Backend::Sqlite).await;
    let plugins: Arc<dyn berth_kernel::plugin::Plugins> = app.kernel().plugins().clone();
    for model in ["tps110", "nps405", "tekzipark", "do201"] {
        for occupied in [true, false] {
            for heartbeat in [false, true] {
                let (f_port, payload) = berth::simulator::payload(model, occupied, heartbeat);
                let uplink = SensorUplink {
                    device_id: "sim".into(),
                    model: model.into(),
                    f_port,
                    payload,
                    received_at: chrono::Utc::now(),
                };
                let reading = plugins.decode(uplink).await.unwrap_or_else(|e| panic!("{model}: {e}"));
                let want = if occupied { Occupancy::Occupied } else { Occupancy::Free };
                assert_eq!(reading.occupancy, want, "{model} occupied={occupied} heartbeat={heartbeat}");
            }
        }
    }
    app.cleanup().await;
}
