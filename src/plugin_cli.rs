//! `berth plugin`: the vendor's kit. `new sensor NAME` writes a crate that builds as generated;
//! `test PATH` runs a plugin's example files against its component (diff, time, peak memory);
//! `run PATH` prints one decoding.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use berth_plugin_host::{Manifest, MessageKind, Occupancy, PluginError, PluginHost, SensorPlugin, Uplink, World};
use berth_plugin_sdk::corpus::{self, Expected};

/// The files `plugin new sensor` writes, with `{{name}}`, `{{crate}}` and `{{sdk}}` placeholders.
pub const TEMPLATE: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("plugin_template/Cargo.toml.tmpl")),
    ("src/lib.rs", include_str!("plugin_template/lib.rs.tmpl")),
    ("plugin.toml", include_str!("plugin_template/plugin.toml.tmpl")),
    ("examples.json", include_str!("plugin_template/examples.json.tmpl")),
];

/// The SDK beside this binary's sources, when they are there.
pub fn default_sdk_path() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/sdk");
    path.join("Cargo.toml").exists().then_some(path)
}

/// Renders one template file for a plugin called `name`.
pub fn render(template: &str, name: &str, sdk: &Path) -> String {
    template
        .replace("{{name}}", name)
        .replace("{{crate}}", &name.replace('-', "_"))
        .replace("{{sdk}}", &sdk.display().to_string())
}

/// Writes a new sensor plugin crate into `parent/NAME`; returns its directory.
pub fn new_sensor(name: &str, parent: &Path, sdk: &Path) -> anyhow::Result<PathBuf> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.starts_with(|c: char| c.is_ascii_lowercase());
    if !valid {
        bail!("plugin name '{name}' must start with a-z and use only a-z, 0-9 and '-' (at most 64)");
    }
    let sdk = sdk.canonicalize().with_context(|| format!("SDK not found at {}", sdk.display()))?;
    let dir = parent.join(name);
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    for (file, template) in TEMPLATE {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().expect("invariant: template files sit in a directory"))?;
        std::fs::write(&path, render(template, name, &sdk))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(dir)
}

/// A plugin directory (or its `plugin.toml`) and its parsed manifest.
fn open_manifest(path: &Path) -> anyhow::Result<(PathBuf, Manifest)> {
    let (dir, file) = if path.is_dir() {
        (path.to_owned(), path.join("plugin.toml"))
    } else {
        (path.parent().unwrap_or(Path::new(".")).to_owned(), path.to_owned())
    };
    let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let manifest = Manifest::parse(&text)?;
    Ok((dir, manifest))
}

/// A loaded sensor plugin, and how long the compile took.
fn load_sensor(
    dir: &Path,
    manifest: &Manifest,
    component: Option<&Path>,
) -> anyhow::Result<(SensorPlugin, Duration, usize)> {
    if manifest.world != World::SensorDecoder {
        bail!("plugin '{}' is not a sensor decoder", manifest.id);
    }
    let path = component.map(Path::to_owned).unwrap_or_else(|| dir.join(&manifest.component));
    let wasm = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read the component {} (build it with `cargo build --release --target wasm32-wasip2`)",
            path.display()
        )
    })?;
    let host = PluginHost::new()?;
    let started = Instant::now();
    let plugin = SensorPlugin::load(&host, &manifest.id, &wasm, manifest.limits, BTreeMap::new())?;
    Ok((plugin, started.elapsed(), wasm.len()))
}

/// The outcome of `plugin test`.
#[derive(Debug)]
pub struct TestReport {
    pub text: String,
    pub passed: usize,
    pub failed: usize,
}

/// Runs every example file of the manifest against the component.
pub fn test(path: &Path, component: Option<&Path>) -> anyhow::Result<TestReport> {
    let (dir, manifest) = open_manifest(path)?;
    if manifest.examples.is_empty() {
        bail!("plugin.toml lists no examples: add `examples = \"examples.json\"` under [sensor]");
    }
    let (plugin, compile_time, size) = load_sensor(&dir, &manifest, component)?;
    let mut text = format!(
        "plugin {} {} ({} KiB, compiled in {} ms)\n",
        manifest.id,
        manifest.version,
        size / 1024,
        compile_time.as_millis()
    );
    let (mut passed, mut failed, mut timings) = (0, 0, Vec::new());
    for example_file in &manifest.examples {
        let file = dir.join(&example_file.file);
        let json = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
        let examples =
            corpus::parse_examples(&json).map_err(anyhow::Error::msg).with_context(|| file.display().to_string())?;
        let mut file_failed = 0;
        let mut details = String::new();
        for example in &examples {
            let uplink = Uplink {
                device_id: "berth-plugin-test".into(),
                model: example_file.model.clone(),
                f_port: example.f_port,
                payload: example.bytes.clone(),
                received_at_ms: 0,
            };
            let started = Instant::now();
            let outcome = plugin.decode(&uplink);
            timings.push(started.elapsed());
            let object = outcome.as_ref().map(|decoded| decoded.object()).ok();
            let decoded = match &outcome {
                Ok(_) => Ok(object.as_ref().expect("invariant: set for Ok")),
                Err(PluginError::Decode(message)) => Err(berth_plugin_sdk::DecodeError(message.clone())),
                Err(fault) => Err(berth_plugin_sdk::DecodeError(format!("FAULT: {fault}"))),
            };
            let Some(mismatch) = corpus::check_example(example, decoded.as_ref().map(|object| *object)) else {
                continue;
            };
            file_failed += 1;
            let _ = writeln!(
                details,
                "    FAIL {} (port {}, {})",
                mismatch.description, mismatch.f_port, mismatch.bytes_hex
            );
            match (&example.expected, &outcome) {
                (Expected::Object(expected), Ok(decoded)) => {
                    for line in corpus::json_diff(expected, &decoded.object()) {
                        let _ = writeln!(details, "      {line}");
                    }
                }
                _ => {
                    let _ =
                        writeln!(details, "      expected {}\n      actual   {}", mismatch.expected, mismatch.actual);
                }
            }
        }
        passed += examples.len() - file_failed;
        failed += file_failed;
        let _ = writeln!(
            text,
            "  {:<10} {}: {}/{} passed",
            example_file.model,
            example_file.file,
            examples.len() - file_failed,
            examples.len()
        );
        text.push_str(&details);
    }
    timings.sort();
    let mean = timings.iter().sum::<Duration>() / timings.len().max(1) as u32;
    let max = timings.last().copied().unwrap_or_default();
    let _ = writeln!(
        text,
        "{} examples: {passed} passed, {failed} failed; decode mean {:.1} µs, max {:.1} µs; peak memory {} KiB (limit {} KiB)",
        passed + failed,
        mean.as_secs_f64() * 1e6,
        max.as_secs_f64() * 1e6,
        plugin.health().peak_memory_bytes / 1024,
        manifest.limits.memory_bytes / 1024,
    );
    Ok(TestReport { text, passed, failed })
}

/// Decodes one payload and renders the result as JSON.
pub fn run(
    path: &Path,
    component: Option<&Path>,
    model: Option<&str>,
    f_port: u8,
    hex: &str,
) -> anyhow::Result<serde_json::Value> {
    let (dir, manifest) = open_manifest(path)?;
    let (plugin, _, _) = load_sensor(&dir, &manifest, component)?;
    let model = model.map(str::to_owned).unwrap_or_else(|| manifest.models[0].clone());
    let payload = corpus::parse_hex(hex.trim_start_matches("0x")).map_err(anyhow::Error::msg)?;
    let uplink = Uplink { device_id: "berth-plugin-run".into(), model, f_port, payload, received_at_ms: 0 };
    let decoded = plugin.decode(&uplink)?;
    let reading = &decoded.reading;
    Ok(serde_json::json!({
        "reading": {
            "occupancy": match reading.occupancy {
                Occupancy::Occupied => "occupied",
                Occupancy::Free => "free",
                Occupancy::Unknown => "unknown",
            },
            "kind": match reading.kind {
                MessageKind::Change => "change",
                MessageKind::Heartbeat => "heartbeat",
                MessageKind::Startup => "startup",
                MessageKind::Other => "other",
            },
            "battery_mv": reading.battery_mv,
            "temperature_c": reading.temperature_c,
        },
        "object": decoded.object(),
    }))
}
