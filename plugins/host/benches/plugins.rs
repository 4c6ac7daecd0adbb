//! Plugin benchmark (not a test): per bundled plugin, the cold compile time, the load time from
//! the on-disk cache, the decode cost per message through the component boundary, the first
//! instantiation, and resident memory. Run with `cargo bench -p berth-plugin-host`
//! (`BERTH_BENCH_POOLING=0` to compare with on-demand instance allocation).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use berth_plugin_host::{
    BUNDLED_PLUGINS_DIR, CacheOutcome, HostOptions, Limits, PluginHost, SensorPlugin, TEST_PLUGINS_DIR, Uplink,
};

const PLUGINS: &[(&str, &str, u8, &str)] = &[
    ("bosch", "tps110", 2, "01ff"),
    ("nwave", "nps405", 2, "00d3d800590b"),
    ("tekzitel", "tekzipark", 1, "a82d63b000550120"),
    ("dingtek", "do201", 3, "800031021706b4000001610010fff6fff08b2d00010081"),
    ("browan", "tbms100", 102, "01bb340400dc7801"),
    ("elsys", "ers-eye", 1, "0100e2022904002705061101"),
];

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| status.lines().find(|line| line.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|line| line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()))
        .unwrap_or(0)
}

fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

fn main() {
    let cache_dir = std::env::temp_dir().join(format!("berth-bench-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache_dir);
    let pooling = std::env::var("BERTH_BENCH_POOLING").as_deref() != Ok("0");
    let options = HostOptions { pooling, cache_dir: Some(cache_dir.clone()) };
    let host = PluginHost::with_options(&options).expect("engine");
    println!("pooling allocator: {}", host.is_pooling());
    println!(
        "{:<10} {:>8} {:>11} {:>10} {:>13} {:>14} {:>9}",
        "plugin", "KiB", "compile ms", "cached ms", "1st call µs", "decode ns/msg", "RSS +KiB"
    );
    let mut decode_costs = Vec::new();
    for (name, model, f_port, hex) in PLUGINS {
        let wasm = std::fs::read(Path::new(BUNDLED_PLUGINS_DIR).join(name).join("plugin.wasm")).unwrap();
        let rss_before = rss_kib();
        let started = Instant::now();
        let (_, outcome) = host.compile(&wasm).unwrap();
        let compile_ms = ms(started);
        assert_eq!(outcome, CacheOutcome::Miss);
        // Cached load: what a restart or a reload of an unchanged plugin costs, linking included.
        let started = Instant::now();
        let (component, outcome) = host.compile(&wasm).unwrap();
        let plugin = SensorPlugin::from_component(&host, name, &component, Limits::default(), BTreeMap::new()).unwrap();
        let cached_ms = ms(started);
        assert_eq!(outcome, CacheOutcome::Hit);

        let payload = berth_plugin_sdk::corpus::parse_hex(hex).unwrap();
        let uplink =
            Uplink { device_id: "bench".into(), model: (*model).into(), f_port: *f_port, payload, received_at_ms: 0 };
        let started = Instant::now();
        plugin.decode(&uplink).expect("first decode");
        let first_call_us = started.elapsed().as_secs_f64() * 1e6;
        let rss_loaded = rss_kib();
        let n_calls = 200_000;
        let started = Instant::now();
        for _ in 0..n_calls {
            std::hint::black_box(plugin.decode(std::hint::black_box(&uplink)).unwrap());
        }
        let ns_per_call = started.elapsed().as_nanos() as f64 / f64::from(n_calls);
        decode_costs.push(ns_per_call);
        println!(
            "{:<10} {:>8} {:>11.1} {:>10.2} {:>13.0} {:>14.0} {:>9}",
            name,
            wasm.len() / 1024,
            compile_ms,
            cached_ms,
            first_call_us,
            ns_per_call,
            rss_loaded.saturating_sub(rss_before)
        );
    }
    // The floor: the boundary alone, with a decoder that returns a one-field object.
    let wasm = std::fs::read(Path::new(TEST_PLUGINS_DIR).join("berth_plugin_hostile.wasm")).unwrap();
    let plugin = SensorPlugin::load(&host, "floor", &wasm, Limits::default(), BTreeMap::new()).unwrap();
    let uplink = Uplink {
        device_id: "bench".into(),
        model: "well-behaved".into(),
        f_port: 1,
        payload: vec![1],
        received_at_ms: 0,
    };
    plugin.decode(&uplink).unwrap();
    let n_calls = 200_000;
    let started = Instant::now();
    for _ in 0..n_calls {
        std::hint::black_box(plugin.decode(std::hint::black_box(&uplink)).unwrap());
    }
    println!(
        "boundary floor (one-field object): {:.0} ns per call",
        started.elapsed().as_nanos() as f64 / f64::from(n_calls)
    );
    decode_costs.sort_by(f64::total_cmp);
    println!(
        "decode cost: best {:.0} ns, median {:.0} ns per message",
        decode_costs[0],
        decode_costs[decode_costs.len() / 2]
    );
    let _ = std::fs::remove_dir_all(&cache_dir);
}
