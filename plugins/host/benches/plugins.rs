//! Plugin benchmark (not a test): cold compile time per bundled plugin, decode cost per message
//! through the component boundary, and resident memory per loaded plugin.
//! Run with `cargo bench -p berth-plugin-host`.

use std::collections::BTreeMap;
use std::time::Instant;

use berth_plugin_host::{BUNDLED_PLUGINS_DIR, Limits, PluginHost, SensorPlugin, Uplink};

const PLUGINS: &[(&str, &str, u8, &str)] = &[
    ("berth_sensor_bosch", "tps110", 2, "01ff"),
    ("berth_sensor_nwave", "nps405", 2, "00d3d800590b"),
    ("berth_sensor_tekzitel", "tekzipark", 1, "a82d63b000550120"),
    ("berth_sensor_dingtek", "do201", 3, "800031021706b4000001610010fff6fff08b2d00010081"),
    ("berth_sensor_browan", "tbms100", 102, "01bb340400dc7801"),
    ("berth_sensor_elsys", "ers-eye", 1, "0100e2022904002705061101"),
];

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| status.lines().find(|line| line.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|line| line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    let host = PluginHost::new().expect("engine");
    println!("{:<24} {:>12} {:>14} {:>12}", "plugin", "compile ms", "decode ns/msg", "RSS +KiB");
    for (name, model, f_port, hex) in PLUGINS {
        let wasm = std::fs::read(std::path::Path::new(BUNDLED_PLUGINS_DIR).join(format!("{name}.wasm"))).unwrap();
        let rss_before = rss_kib();
        let started = Instant::now();
        let plugin = SensorPlugin::load(&host, name, &wasm, Limits::default(), BTreeMap::new()).unwrap();
        let compile_ms = started.elapsed().as_secs_f64() * 1000.0;
        let payload = berth_plugin_sdk::corpus::parse_hex(hex).unwrap();
        let uplink =
            Uplink { device_id: "bench".into(), model: (*model).into(), f_port: *f_port, payload, received_at_ms: 0 };
        plugin.decode(&uplink).expect("warm-up decode");
        let rss_loaded = rss_kib();
        let n_calls = 100_000;
        let started = Instant::now();
        for _ in 0..n_calls {
            std::hint::black_box(plugin.decode(std::hint::black_box(&uplink)).unwrap());
        }
        let ns_per_call = started.elapsed().as_nanos() as f64 / f64::from(n_calls);
        println!(
            "{:<24} {:>12.1} {:>14.0} {:>12}",
            name,
            compile_ms,
            ns_per_call,
            rss_loaded.saturating_sub(rss_before)
        );
    }
}
