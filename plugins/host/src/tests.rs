//! Host tests with real components: the bundled decoders against the vendor corpus, the hostile
//! plugin's every misbehaviour contained while a well-behaved plugin keeps working, the payment
//! and chat worlds against a local fake over the HTTP capability, the compile cache, and the
//! registry (uploads, hot reload, quarantine).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_kernel::plugin::{PluginPortError, PluginSource, PluginStatus};

use super::*;

fn bundled_wasm(id: &str) -> Vec<u8> {
    let path = Path::new(BUNDLED_PLUGINS_DIR).join(id).join("plugin.wasm");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn test_wasm(name: &str) -> Vec<u8> {
    let path = Path::new(TEST_PLUGINS_DIR).join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn sensor(host: &PluginHost, id: &str, wasm: &[u8], limits: Limits) -> SensorPlugin {
    SensorPlugin::load(host, id, wasm, limits, BTreeMap::new()).unwrap()
}

fn uplink(model: &str, f_port: u8, payload: &[u8]) -> Uplink {
    Uplink { device_id: "dev-1".into(), model: model.into(), f_port, payload: payload.to_vec(), received_at_ms: 0 }
}

const CORPUS: &[(&str, &str, &str)] = &[
    ("bosch-tps110.json", "bosch", "tps110"),
    ("nwave-nps310sm.json", "nwave", "nps310sm"),
    ("nwave-nps405.json", "nwave", "nps405"),
    ("nwave-ncc405.json", "nwave", "ncc405"),
    ("tekzitel-tekzipark.json", "tekzitel", "tekzipark"),
    ("dingtek-do200.json", "dingtek", "do200"),
    ("dingtek-do201.json", "dingtek", "do201"),
    ("dingtek-do202.json", "dingtek", "do202"),
    ("browan-tbms100.json", "browan", "tbms100"),
    ("elsys-ers-eye.json", "elsys", "ers-eye"),
    ("elsys-ems-desk.json", "elsys", "ems-desk"),
];

#[test]
fn bundled_components_decode_the_whole_corpus() {
    let host = PluginHost::new().unwrap();
    for (file, id, model) in CORPUS {
        let plugin = sensor(&host, id, &bundled_wasm(id), Limits::default());
        berth_plugin_sdk::corpus::assert_corpus(file, |f_port, bytes| {
            match plugin.decode(&uplink(model, f_port, bytes)) {
                Ok(decoded) => Ok(berth_plugin_sdk::Decoded {
                    reading: berth_plugin_sdk::Reading::other(),
                    object: decoded.object(),
                }),
                Err(PluginError::Decode(message)) => Err(berth_plugin_sdk::DecodeError(message)),
                Err(fault) => panic!("{id} faulted on {file}: {fault}"),
            }
        });
        assert_eq!(plugin.total_faults(), 0);
    }
}

#[test]
fn readings_are_normalised_through_the_boundary() {
    let host = PluginHost::new().unwrap();
    let nwave = sensor(&host, "nwave", &bundled_wasm("nwave"), Limits::default());
    let decoded = nwave.decode(&uplink("nps405", 2, &[0x01, 0xd3, 0xd8])).unwrap();
    assert_eq!(decoded.reading.occupancy, Occupancy::Occupied);
    assert_eq!(decoded.reading.kind, MessageKind::Heartbeat);
    assert_eq!(decoded.reading.battery_mv, Some(3344));
    assert_eq!(decoded.reading.temperature_c, Some(-10.0));
    let error = nwave.decode(&uplink("nps405", 2, &[0x01])).unwrap_err();
    assert_eq!(error, PluginError::Decode("payload too short: expected at least 3 bytes, got 1".into()));
    assert!(!error.is_fault());

    // The vendor's own example reports -117 °C: kept in the object, dropped from the reading.
    let dingtek = sensor(&host, "dingtek", &bundled_wasm("dingtek"), Limits::default());
    let frame = berth_plugin_sdk::corpus::parse_hex("800031021706b4000001610010fff6fff08b2d00010081").unwrap();
    let decoded = dingtek.decode(&uplink("do201", 3, &frame)).unwrap();
    assert_eq!(decoded.object()["temperature"], -117);
    assert_eq!(decoded.reading.temperature_c, None);
    assert_eq!(decoded.reading.battery_mv, Some(3530));
    assert!(dingtek.health().peak_memory_bytes > 0);
}

#[test]
fn hostile_plugins_are_contained() {
    let host = PluginHost::new().unwrap();
    // A deadline long enough that only the endless loop meets it, however loaded the machine:
    // the memory hog must hit its memory limit, not the clock.
    let limits = Limits { call_timeout: Duration::from_millis(1000), max_consecutive_faults: 3, ..Limits::default() };
    let hostile = sensor(&host, "hostile", &test_wasm("berth_plugin_hostile"), limits);
    let nwave = sensor(&host, "nwave", &bundled_wasm("nwave"), Limits::default());
    let healthy = |label: &str| {
        let decoded = nwave.decode(&uplink("nps310sm", 1, &[0x01])).unwrap_or_else(|e| panic!("after {label}: {e}"));
        assert_eq!(decoded.reading.occupancy, Occupancy::Occupied);
        let decoded = hostile.decode(&uplink("well-behaved", 1, &[0x01])).unwrap();
        assert_eq!(decoded.object(), serde_json::json!({"occupied": true}));
    };
    healthy("start");
    type Expectation = fn(&PluginError) -> bool;
    let cases: [(&str, Expectation); 6] = [
        ("loop-forever", |e| matches!(e, PluginError::Timeout(1000))),
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
    // The memory hog was stopped at its limit, and that is what the peak shows.
    assert!(hostile.health().peak_memory_bytes <= limits.memory_bytes as u64);

    for _ in 0..3 {
        assert!(hostile.decode(&uplink("panic", 1, &[0])).unwrap_err().is_fault());
    }
    assert!(hostile.is_quarantined());
    let error = hostile.decode(&uplink("well-behaved", 1, &[1])).unwrap_err();
    assert_eq!(error, PluginError::Quarantined(3));
    nwave.decode(&uplink("nps310sm", 1, &[0x00])).unwrap();
}

/// Called by mistake on an async worker, a plugin that writes to stderr (as a Rust panic does)
/// makes wasmtime-wasi's blocking shim panic: that call fails, the process does not.
#[tokio::test]
async fn a_call_on_an_async_worker_fails_alone() {
    let host = PluginHost::new().unwrap();
    let hostile = sensor(&host, "hostile", &test_wasm("berth_plugin_hostile"), Limits::default());
    let error = hostile.decode(&uplink("panic", 1, &[0])).unwrap_err();
    assert!(matches!(&error, PluginError::Trap(_)), "{error:?}");
    assert!(hostile.decode(&uplink("well-behaved", 1, &[1])).is_ok());
}

#[test]
fn a_component_of_another_world_is_refused() {
    let host = PluginHost::new().unwrap();
    let error = SensorPlugin::load(&host, "junk", b"not wasm at all", Limits::default(), BTreeMap::new())
        .err()
        .expect("junk must not load");
    assert!(matches!(error, PluginError::Load(_)), "{error:?}");
    // A payment provider is not a sensor decoder.
    let error =
        SensorPlugin::load(&host, "pay", &test_wasm("berth_plugin_test_payment"), Limits::default(), BTreeMap::new())
            .err()
            .expect("a payment component must not load as a decoder");
    assert!(
        error.to_string().contains("not a sensor-decoder component") || error.to_string().contains("import"),
        "{error}"
    );
}

/// A local stand-in for a provider's API: records each request (method, path, headers, body)
/// and answers from `respond(path, body)`.
struct Fake {
    port: u16,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

/// Method, path, headers (lower-case names), body.
type Recorded = (String, String, Vec<(String, String)>, String);

fn fake(respond: fn(&str, &str) -> (u16, String)) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let log = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut parts = request_line.split_whitespace();
            let (method, path) = (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("").to_owned());
            let mut headers = Vec::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let (name, value) = line.split_once(':').unwrap();
                let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
                if name == "content-length" {
                    length = value.parse().unwrap();
                }
                headers.push((name, value));
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let body = String::from_utf8(body).unwrap();
            let (status, answer) = respond(&path, &body);
            log.lock().unwrap().push((method, path, headers, body));
            let response = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    Fake { port, requests }
}

fn provider(path: &str, body: &str) -> (u16, String) {
    let request: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    match path {
        "/authorize" if request["amount"].as_i64() == Some(666) => (402, r#"{"error":"card declined"}"#.into()),
        "/authorize" => (200, r#"{"id":"pay_1","status":"authorized"}"#.into()),
        "/capture" => (200, format!(r#"{{"id":{},"status":"captured"}}"#, request["id"])),
        "/cancel" => (200, format!(r#"{{"id":{},"status":"voided"}}"#, request["id"])),
        "/refund" => (200, format!(r#"{{"id":{},"status":"refunded"}}"#, request["id"])),
        "/send" => (200, r#"{"message_id":"m-42"}"#.into()),
        "/big" => (200, format!(r#"{{"blob":"{}"}}"#, "x".repeat(4096))),
        _ => (404, r#"{"error":"no such path"}"#.into()),
    }
}

fn config(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(key, value)| ((*key).to_owned(), value.clone())).collect()
}

fn payment_limits() -> Limits {
    Limits {
        call_timeout: Duration::from_secs(5),
        http_timeout: Duration::from_secs(2),
        max_http_response_bytes: 1024,
        ..Limits::default()
    }
}

#[test]
fn a_payment_plugin_reaches_only_its_allow_listed_host() {
    let host = PluginHost::new().unwrap();
    let allowed = fake(provider);
    let other = fake(provider);
    let limits = payment_limits();
    let http = http::HttpPolicy::new(&[format!("127.0.0.1:{}", allowed.port)], &limits);
    let plugin = PaymentPlugin::load(
        &host,
        "test-payment",
        &test_wasm("berth_plugin_test_payment"),
        limits,
        config(&[("base_url", format!("http://127.0.0.1:{}", allowed.port)), ("webhook_secret", "s3cret".into())]),
        http,
    )
    .unwrap();
    let money = payment::Money { amount_minor: 1250, currency: "EUR".into() };
    let request = |description: &str, amount: i64| payment::AuthorizeRequest {
        idempotency_key: "booking-1:authorize".into(),
        booking_ref: "B-1".into(),
        amount: payment::Money { amount_minor: amount, currency: "EUR".into() },
        description: description.into(),
        return_url: None,
    };

    let state = plugin.authorize(&request("parking", 1250)).unwrap().unwrap();
    assert_eq!((state.provider_ref.as_str(), state.status), ("pay_1", payment::PaymentStatus::Authorized));
    let captured = plugin.capture("pay_1", &money, "booking-1:capture").unwrap().unwrap();
    assert_eq!(captured.status, payment::PaymentStatus::Captured);
    let refunded = plugin.refund("pay_1", &money, "booking-1:refund").unwrap().unwrap();
    assert_eq!(refunded.status, payment::PaymentStatus::Refunded);
    assert_eq!(plugin.cancel("pay_1", "booking-1:cancel").unwrap().unwrap().status, payment::PaymentStatus::Voided);
    let declined = plugin.authorize(&request("parking", 666)).unwrap().unwrap_err();
    assert_eq!(declined, payment::PaymentError::Declined("card declined".into()));
    {
        let requests = allowed.requests.lock().unwrap();
        assert_eq!(requests.len(), 5);
        let (method, path, headers, body) = &requests[0];
        assert_eq!((method.as_str(), path.as_str()), ("POST", "/authorize"));
        assert!(headers.contains(&("idempotency-key".into(), "booking-1:authorize".into())));
        assert_eq!(serde_json::from_str::<serde_json::Value>(body).unwrap()["amount"], 1250);
    }

    // Off the allow-list: another port on the same host, another host, plain http elsewhere.
    for url in [
        format!("http://127.0.0.1:{}/authorize", other.port),
        "https://example.com/".to_owned(),
        "http://example.com/".to_owned(),
    ] {
        let error = plugin.authorize(&request(&format!("fetch {url}"), 1)).unwrap().unwrap_err();
        assert!(matches!(&error, payment::PaymentError::Unavailable(m) if m.starts_with("denied")), "{url}: {error:?}");
    }
    assert!(other.requests.lock().unwrap().is_empty(), "a request escaped the allow-list");
    // A response over the size cap is refused whole.
    let error = plugin.authorize(&request(&format!("fetch http://127.0.0.1:{}/big", allowed.port), 1)).unwrap();
    assert_eq!(error.unwrap_err(), payment::PaymentError::Unavailable("too large".into()));

    // Webhooks: only a correctly signed one is accepted.
    let webhook = |signature: &str| payment::Webhook {
        headers: vec![("X-Test-Signature".into(), signature.into())],
        body: br#"{"event":"evt_1","id":"pay_1","status":"captured"}"#.to_vec(),
    };
    let event = plugin.verify_webhook(&webhook("s3cret")).unwrap().unwrap();
    assert_eq!((event.event_id.as_str(), event.status), ("evt_1", payment::PaymentStatus::Captured));
    assert!(matches!(
        plugin.verify_webhook(&webhook("wrong")).unwrap(),
        Err(payment::PaymentError::SignatureInvalid(_))
    ));
    assert_eq!(plugin.health().faults_total, 0);
}

#[test]
fn a_slow_provider_times_out_as_an_http_error() {
    let host = PluginHost::new().unwrap();
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let _keep = std::thread::spawn(move || {
        let _streams: Vec<_> = listener.incoming().take(4).collect();
        std::thread::sleep(Duration::from_secs(10));
    });
    let limits = Limits { http_timeout: Duration::from_millis(300), ..payment_limits() };
    let http = http::HttpPolicy::new(&[format!("127.0.0.1:{port}")], &limits);
    let base = format!("http://127.0.0.1:{port}");
    let plugin = PaymentPlugin::load(
        &host,
        "test-payment",
        &test_wasm("berth_plugin_test_payment"),
        limits,
        config(&[("base_url", base)]),
        http,
    )
    .unwrap();
    let started = Instant::now();
    let answer = plugin.capture("pay_1", &payment::Money { amount_minor: 1, currency: "EUR".into() }, "k").unwrap();
    assert_eq!(answer.unwrap_err(), payment::PaymentError::Unavailable("timeout".into()));
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
}

#[test]
fn a_chat_plugin_verifies_webhooks_and_sends_through_its_channel() {
    let host = PluginHost::new().unwrap();
    let channel = fake(provider);
    let limits = payment_limits();
    let http = http::HttpPolicy::new(&[format!("127.0.0.1:{}", channel.port)], &limits);
    let plugin = ChatPlugin::load(
        &host,
        "test-chat",
        &test_wasm("berth_plugin_test_chat"),
        limits,
        config(&[("base_url", format!("http://127.0.0.1:{}", channel.port)), ("token", "t0ken".into())]),
        http,
    )
    .unwrap();
    let webhook = |token: &str| chat::Webhook {
        headers: vec![("x-test-token".into(), token.into())],
        body: br#"{"id":7,"from":"u1","chat":"c1","text":"park me near the station"}"#.to_vec(),
    };
    let messages = plugin.verify_and_parse(&webhook("t0ken")).unwrap().unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].message_id, "7");
    assert_eq!(messages[0].text.as_deref(), Some("park me near the station"));
    assert!(matches!(plugin.verify_and_parse(&webhook("nope")).unwrap(), Err(chat::ChannelError::SignatureInvalid(_))));

    let sent = plugin
        .send(&chat::OutboundMessage {
            chat_id: "c1".into(),
            text: "Found 3 spaces".into(),
            buttons: vec![chat::Button { label: "Book".into(), payload: Some("book:1".into()), url: None }],
            last_inbound_ms: None,
        })
        .unwrap()
        .unwrap();
    assert_eq!(sent, "m-42");
    let requests = channel.requests.lock().unwrap();
    let body: serde_json::Value = serde_json::from_str(&requests[0].3).unwrap();
    assert_eq!(body, serde_json::json!({"chat": "c1", "text": "Found 3 spaces", "buttons": ["Book"]}));
}

#[test]
fn compiled_components_are_cached_and_bad_entries_recompiled() {
    let cache_dir = tempfile::tempdir().unwrap();
    let host =
        PluginHost::with_options(&HostOptions { cache_dir: Some(cache_dir.path().into()), ..Default::default() })
            .unwrap();
    let wasm = bundled_wasm("bosch");
    let (_, outcome) = host.compile(&wasm).unwrap();
    assert_eq!(outcome, CacheOutcome::Miss);
    let (component, outcome) = host.compile(&wasm).unwrap();
    assert_eq!(outcome, CacheOutcome::Hit);
    let plugin = SensorPlugin::from_component(&host, "bosch", &component, Limits::default(), BTreeMap::new()).unwrap();
    plugin.decode(&uplink("tps110", 2, &[0x01, 0xff])).unwrap();

    // Flip a byte in the middle of the artifact: rejected, recompiled, rewritten.
    let entry = ArtifactCache::new(cache_dir.path().into()).entry_path(host.engine(), &wasm);
    let mut bytes = std::fs::read(&entry).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&entry, &bytes).unwrap();
    assert_eq!(host.compile(&wasm).unwrap().1, CacheOutcome::Rejected);
    assert_eq!(host.compile(&wasm).unwrap().1, CacheOutcome::Hit);
    // A truncated entry too.
    std::fs::write(&entry, &bytes[..10]).unwrap();
    assert_eq!(host.compile(&wasm).unwrap().1, CacheOutcome::Rejected);
    // Another engine configuration never reads this engine's entries.
    let other = PluginHost::with_options(&HostOptions {
        pooling: !host.is_pooling(),
        cache_dir: Some(cache_dir.path().into()),
    })
    .unwrap();
    let _ = other.compile(&wasm).unwrap();
}

// ----- registry --------------------------------------------------------------------------------

fn registry_options(plugins_dir: &Path) -> RegistryOptions {
    RegistryOptions {
        bundled: BUNDLED,
        plugins_dir: plugins_dir.to_owned(),
        watch: false,
        config: BTreeMap::new(),
        max_component_bytes: 16 * 1024 * 1024,
        secret_env: BTreeMap::new(),
    }
}

fn hostile_manifest(id: &str, version: &str, models: &[&str]) -> String {
    let models: Vec<String> = models.iter().map(|model| format!("\"{model}\"")).collect();
    format!(
        "id = \"{id}\"\nversion = \"{version}\"\nworld = \"sensor-decoder@0.1\"\nvendor = \"Test\"\n\n[limits]\ntimeout_ms = 2000\nmax_consecutive_faults = 2\n\n[sensor]\nmodels = [{}]\n",
        models.join(", ")
    )
}

fn sensor_uplink(model: &str, payload: &[u8]) -> berth_kernel::plugin::SensorUplink {
    berth_kernel::plugin::SensorUplink {
        device_id: "dev".into(),
        model: model.into(),
        f_port: 1,
        payload: payload.to_vec(),
        received_at: chrono::Utc::now(),
    }
}

#[test]
fn the_registry_loads_bundled_plugins_and_routes_by_model() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(PluginHost::new().unwrap(), registry_options(dir.path())).unwrap();
    let ids: Vec<String> = registry.list_info().into_iter().map(|info| info.id).collect();
    assert_eq!(ids, ["bosch", "browan", "dingtek", "elsys", "nwave", "tekzitel"]);
    let nwave = registry.info("nwave").unwrap();
    assert_eq!((nwave.status, nwave.source), (PluginStatus::Active, PluginSource::Bundled));
    assert_eq!(nwave.sha256.as_deref().map(str::len), Some(64));
    let reading = registry.decode_blocking(&sensor_uplink("nps310sm", &[0x01])).unwrap();
    assert_eq!((reading.plugin_id.as_str(), reading.occupancy), ("nwave", berth_kernel::plugin::Occupancy::Occupied));
    assert_eq!(
        registry.decode_blocking(&sensor_uplink("no-such-model", &[0])).unwrap_err(),
        PluginPortError::NoDecoder("no-such-model".into())
    );
    assert_eq!(registry.info("nwave").unwrap().calls, 1);
}

#[test]
fn uploads_are_validated_swapped_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(PluginHost::new().unwrap(), registry_options(dir.path())).unwrap();
    let wasm = test_wasm("berth_plugin_hostile");

    // Bad manifests and components are refused with the reason; nothing is written.
    let error = registry.install_blocking("id = \"x\"", &wasm).unwrap_err();
    assert!(matches!(&error, PluginPortError::InvalidManifest(m) if m.contains("missing field")), "{error:?}");
    let error = registry.install_blocking(&hostile_manifest("junk", "1.0.0", &["junk"]), b"\0asm junk").unwrap_err();
    assert!(matches!(error, PluginPortError::InvalidComponent(_)), "{error:?}");
    let error = registry
        .install_blocking(&hostile_manifest("pay", "1.0.0", &["pay"]), &test_wasm("berth_plugin_test_payment"))
        .unwrap_err();
    assert!(matches!(error, PluginPortError::InvalidComponent(_)), "{error:?}");
    let error = registry.install_blocking(&hostile_manifest("thief", "1.0.0", &["nps405"]), &wasm).unwrap_err();
    assert_eq!(error, PluginPortError::Conflict("device model 'nps405' is already decoded by plugin 'nwave'".into()));
    assert!(registry::plugin_dirs(dir.path()).is_empty());

    let (info, created) =
        registry.install_blocking(&hostile_manifest("hostile", "1.0.0", &["well-behaved", "panic"]), &wasm).unwrap();
    assert!(created);
    assert_eq!((info.version.as_deref(), info.source), (Some("1.0.0"), PluginSource::Installed));
    let (info, created) =
        registry.install_blocking(&hostile_manifest("hostile", "1.1.0", &["well-behaved", "panic"]), &wasm).unwrap();
    assert!(!created);
    assert_eq!(info.version.as_deref(), Some("1.1.0"));
    assert!(registry.decode_blocking(&sensor_uplink("well-behaved", &[1])).is_ok());

    // Two faults quarantine it (the manifest says so); the API view shows it; reload lifts it.
    for _ in 0..2 {
        assert!(matches!(registry.decode_blocking(&sensor_uplink("panic", &[1])), Err(PluginPortError::Fault(_))));
    }
    let info = registry.info("hostile").unwrap();
    assert_eq!((info.status, info.consecutive_faults, info.faults_total), (PluginStatus::Quarantined, 2, 2));
    assert!(info.last_error.unwrap().contains("trapped"));
    let error = registry.decode_blocking(&sensor_uplink("well-behaved", &[1])).unwrap_err();
    assert!(matches!(&error, PluginPortError::Fault(m) if m.contains("quarantined")), "{error:?}");
    let info = registry.reload_blocking("hostile").unwrap();
    assert_eq!((info.status, info.faults_total), (PluginStatus::Active, 0));
    assert!(registry.decode_blocking(&sensor_uplink("well-behaved", &[1])).is_ok());
    assert_eq!(registry.reload_blocking("nope").unwrap_err(), PluginPortError::NotFound("nope".into()));

    // A new process finds the upload in the plugins directory.
    drop(registry);
    let registry = Registry::open(PluginHost::new().unwrap(), registry_options(dir.path())).unwrap();
    let info = registry.info("hostile").unwrap();
    assert_eq!((info.version.as_deref(), info.status), (Some("1.1.0"), PluginStatus::Active));
}

#[test]
fn a_broken_plugin_directory_is_listed_as_failed_and_hurts_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("plugin.toml"), "id = \"broken\"\nversion = \"one\"\n").unwrap();
    let registry = Registry::open(PluginHost::new().unwrap(), registry_options(dir.path())).unwrap();
    let info = registry.info("broken").unwrap();
    assert_eq!(info.status, PluginStatus::Failed);
    assert!(info.reload_error.unwrap().contains("plugin.toml"));
    assert_eq!(registry.info("nwave").unwrap().status, PluginStatus::Active);
}

/// Waits until `check` holds, up to a generous bound (the watcher settles for 200 ms).
fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn changed_files_are_hot_reloaded_while_in_flight_calls_finish_on_the_old_version() {
    let dir = tempfile::tempdir().unwrap();
    let options = RegistryOptions { watch: true, ..registry_options(dir.path()) };
    let registry = Registry::open(PluginHost::new().unwrap(), options).unwrap();
    let plugin_dir = dir.path().join("parkco");
    let write = |manifest: &str, wasm: &[u8]| {
        std::fs::create_dir_all(&plugin_dir).unwrap();
        std::fs::write(plugin_dir.join("plugin.wasm"), wasm).unwrap();
        std::fs::write(plugin_dir.join("plugin.toml"), manifest).unwrap();
    };

    // Dropped in by hand: picked up.
    write(&hostile_manifest("parkco", "1.0.0", &["slow", "well-behaved"]), &test_wasm("berth_plugin_hostile"));
    eventually("the new plugin", || registry.info("parkco").is_some_and(|info| info.status == PluginStatus::Active));

    // A call that takes ~600 ms starts on 1.0.0...
    let in_flight = {
        let registry = registry.clone();
        std::thread::spawn(move || registry.decode_blocking(&sensor_uplink("slow", &[60])))
    };
    eventually("the slow call to start", || registry.info("parkco").unwrap().calls == 1);
    // ...while 2.0.0 (a different component under the same id) replaces it.
    let replacement = "id = \"parkco\"\nversion = \"2.0.0\"\nworld = \"sensor-decoder@0.1\"\nvendor = \"Test\"\n[sensor]\nmodels = [\"slow\", \"nps-x\"]\n";
    let bosch_like = bundled_wasm("bosch");
    write(replacement, &bosch_like);
    eventually("version 2.0.0", || registry.info("parkco").unwrap().version.as_deref() == Some("2.0.0"));
    let finished = in_flight.join().unwrap().unwrap();
    assert_eq!(finished.object(), serde_json::json!({"plugin": "hostile", "slow": true}));
    // New calls run the new component (bosch rejects a model it does not know).
    let error = registry.decode_blocking(&sensor_uplink("slow", &[1])).unwrap_err();
    assert!(matches!(error, PluginPortError::Rejected(m) if m.contains("slow")));

    // A broken update keeps 2.0.0 serving and says why.
    std::fs::write(plugin_dir.join("plugin.toml"), "id = \"parkco\"\nversion = \"3\"\n").unwrap();
    eventually("the reload error", || registry.info("parkco").unwrap().reload_error.is_some());
    let info = registry.info("parkco").unwrap();
    assert_eq!((info.version.as_deref(), info.status), (Some("2.0.0"), PluginStatus::Active));

    // Removing the directory unloads it.
    std::fs::remove_dir_all(&plugin_dir).unwrap();
    eventually("the plugin to go", || registry.info("parkco").is_none());
}

#[test]
fn secrets_come_from_the_environment_and_config_only_declared_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = registry_options(dir.path());
    options.bundled = &[];
    options.config = BTreeMap::from([(
        "test-chat".to_owned(),
        BTreeMap::from([
            ("base_url".to_owned(), "http://127.0.0.1:9".to_owned()),
            ("extra".to_owned(), "x".to_owned()),
        ]),
    )]);
    let registry = Registry::open(PluginHost::new().unwrap(), options).unwrap();
    let manifest = "id = \"test-chat\"\nversion = \"0.1.0\"\nworld = \"chat-channel@0.1\"\nvendor = \"Test\"\n\n[capabilities]\nhttp_hosts = [\"127.0.0.1:9\"]\nconfig_keys = [\"base_url\"]\nsecrets = [\"token\"]\n";
    let wasm = test_wasm("berth_plugin_test_chat");
    assert_eq!(registry::secret_variable("test-chat", "token"), "BERTH_PLUGIN_TEST_CHAT_TOKEN");
    let error = registry.install_blocking(manifest, &wasm).unwrap_err();
    assert_eq!(
        error,
        PluginPortError::InvalidManifest(
            "secret 'token' is not set: define the environment variable BERTH_PLUGIN_TEST_CHAT_TOKEN".into()
        )
    );
    let mut options = registry_options(dir.path());
    options.bundled = &[];
    options.secret_env = BTreeMap::from([("BERTH_PLUGIN_TEST_CHAT_TOKEN".to_owned(), "t0ken".to_owned())]);
    options.config = BTreeMap::from([(
        "test-chat".to_owned(),
        BTreeMap::from([("base_url".to_owned(), "http://127.0.0.1:9".to_owned())]),
    )]);
    assert!(!format!("{options:?}").contains("t0ken"), "a secret reached Debug output");
    drop(registry);
    let registry = Registry::open(PluginHost::new().unwrap(), options).unwrap();
    registry.install_blocking(manifest, &wasm).unwrap();
    let Some(registry::LoadedPlugin::Chat(chat)) = registry.plugin("test-chat") else { panic!("not a chat plugin") };
    let webhook =
        chat::Webhook { headers: vec![("x-test-token".into(), "t0ken".into())], body: br#"{"id":1}"#.to_vec() };
    assert_eq!(chat.verify_and_parse(&webhook).unwrap().unwrap().len(), 1);
}
