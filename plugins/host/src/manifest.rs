//! `plugin.toml`: what a plugin is, what it may do, and its limits. Parsing is strict: unknown
//! keys, bad versions, worlds this host does not speak and absurd limits are errors that say
//! exactly what to fix.

use std::time::Duration;

use serde::Deserialize;

use crate::Limits;

/// The worlds this host runs, with the contract version it implements.
pub const SUPPORTED_WORLDS: &[&str] = &["sensor-decoder", "payment-provider", "chat-channel"];
pub const CONTRACT_VERSION: (u64, u64) = (0, 1);

pub(crate) const MAX_MEMORY_MIB: u64 = 512;
const MAX_TIMEOUT_MS: u64 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum World {
    SensorDecoder,
    PaymentProvider,
    ChatChannel,
}

#[derive(Debug, Clone)]
pub struct Manifest {
    pub id: String,
    pub version: String,
    pub world: World,
    pub vendor: String,
    pub description: String,
    pub limits: Limits,
    pub http_hosts: Vec<String>,
    pub config_keys: Vec<String>,
    pub secrets: Vec<String>,
    /// The component file, relative to the manifest (default `plugin.wasm`).
    pub component: String,
    /// For sensor decoders: the device models it decodes, and its example files.
    pub models: Vec<String>,
    pub examples: Vec<ExampleFile>,
}

/// A file of decoding examples (The Things Network codec example shape) and the device model
/// they are for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExampleFile {
    /// Relative to the manifest.
    pub file: String,
    pub model: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    id: String,
    version: String,
    world: String,
    vendor: String,
    #[serde(default)]
    description: String,
    component: Option<String>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    capabilities: RawCapabilities,
    sensor: Option<RawSensor>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory_mib: Option<u64>,
    timeout_ms: Option<u64>,
    max_output_kib: Option<u64>,
    max_consecutive_faults: Option<u32>,
    http_timeout_ms: Option<u64>,
    max_response_kib: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapabilities {
    #[serde(default)]
    http_hosts: Vec<String>,
    #[serde(default)]
    config_keys: Vec<String>,
    #[serde(default)]
    secrets: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSensor {
    models: Vec<String>,
    examples: Option<RawExamples>,
}

/// `examples = "examples.json"` (for the first model), or a list of `{ file, model }` tables.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawExamples {
    One(String),
    Many(Vec<RawExampleFile>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExampleFile {
    file: String,
    model: String,
}

/// A manifest problem, worded for the plugin author.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin.toml: {0}")]
pub struct ManifestError(pub String);

fn fail<T>(message: impl Into<String>) -> Result<T, ManifestError> {
    Err(ManifestError(message.into()))
}

fn is_slug(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
}

fn parse_semver(text: &str) -> Option<(u64, u64, u64)> {
    let core = text.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|part| part.parse::<u64>().ok());
    let version = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(version)
}

impl Manifest {
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| ManifestError(e.message().to_owned()))?;
        if !is_slug(&raw.id) {
            return fail(format!("id '{}' must be 1-64 characters of a-z, 0-9 and '-'", raw.id));
        }
        if parse_semver(&raw.version).is_none() {
            return fail(format!("version '{}' is not semantic versioning (MAJOR.MINOR.PATCH)", raw.version));
        }
        let (world_name, world_version) = raw.world.split_once('@').ok_or_else(|| {
            ManifestError(format!("world '{}' must name a version, e.g. 'sensor-decoder@0.1'", raw.world))
        })?;
        let world = match world_name {
            "sensor-decoder" => World::SensorDecoder,
            "payment-provider" => World::PaymentProvider,
            "chat-channel" => World::ChatChannel,
            other => {
                return fail(format!("unknown world '{other}'; this host runs {}", SUPPORTED_WORLDS.join(", ")));
            }
        };
        let mut version_parts = world_version.split('.').map(|part| part.parse::<u64>().ok());
        let (Some(Some(major)), Some(Some(minor))) = (version_parts.next(), version_parts.next()) else {
            return fail(format!("world version '{world_version}' must be MAJOR.MINOR, e.g. 0.1"));
        };
        let (host_major, host_minor) = CONTRACT_VERSION;
        if major != host_major || minor > host_minor {
            return fail(format!(
                "world {world_name}@{major}.{minor} is not supported; this host implements {world_name}@{host_major}.{host_minor}"
            ));
        }
        if raw.vendor.trim().is_empty() {
            return fail("vendor must not be empty");
        }
        let limits = validate_limits(&raw.limits, &world)?;
        for host in &raw.capabilities.http_hosts {
            let valid = !host.is_empty()
                && !host.contains("://")
                && !host.contains('/')
                && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
            if !valid {
                return fail(format!("capabilities.http_hosts: '{host}' must be a host name such as api.example.com"));
            }
        }
        if world == World::SensorDecoder && !raw.capabilities.http_hosts.is_empty() {
            return fail("capabilities.http_hosts: sensor decoders cannot make HTTP calls");
        }
        let (models, examples) = match (world == World::SensorDecoder, raw.sensor) {
            (true, Some(sensor)) => {
                if sensor.models.is_empty() {
                    return fail("sensor.models must list at least one device model");
                }
                let examples = match sensor.examples {
                    None => Vec::new(),
                    Some(RawExamples::One(file)) => vec![ExampleFile { file, model: sensor.models[0].clone() }],
                    Some(RawExamples::Many(files)) => files
                        .into_iter()
                        .map(|example| {
                            if sensor.models.contains(&example.model) {
                                Ok(ExampleFile { file: example.file, model: example.model })
                            } else {
                                fail(format!("sensor.examples: model '{}' is not in sensor.models", example.model))
                            }
                        })
                        .collect::<Result<_, _>>()?,
                };
                (sensor.models, examples)
            }
            (true, None) => return fail("a sensor-decoder plugin needs a [sensor] table with its device models"),
            (false, Some(_)) => return fail(format!("[sensor] is only for sensor-decoder plugins, not {world_name}")),
            (false, None) => (Vec::new(), Vec::new()),
        };
        let component = raw.component.unwrap_or_else(|| "plugin.wasm".to_owned());
        if component.is_empty() || component.ends_with('/') {
            return fail(format!("component '{component}' must name a .wasm file"));
        }
        Ok(Manifest {
            id: raw.id,
            version: raw.version,
            world,
            vendor: raw.vendor,
            description: raw.description,
            limits,
            http_hosts: raw.capabilities.http_hosts,
            config_keys: raw.capabilities.config_keys,
            secrets: raw.capabilities.secrets,
            component,
            models,
            examples,
        })
    }
}

fn validate_limits(raw: &RawLimits, world: &World) -> Result<Limits, ManifestError> {
    let defaults = Limits::default();
    // Payment and chat plugins wait on HTTP calls; decoders only compute.
    let default_timeout_ms = if *world == World::SensorDecoder { 50 } else { 5_000 };
    let memory_mib = raw.memory_mib.unwrap_or((defaults.memory_bytes / (1024 * 1024)) as u64);
    if !(1..=MAX_MEMORY_MIB).contains(&memory_mib) {
        return fail(format!("limits.memory_mib must be between 1 and {MAX_MEMORY_MIB} (got {memory_mib})"));
    }
    let timeout_ms = raw.timeout_ms.unwrap_or(default_timeout_ms);
    if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
        return fail(format!("limits.timeout_ms must be between 1 and {MAX_TIMEOUT_MS} (got {timeout_ms})"));
    }
    let max_output_kib = raw.max_output_kib.unwrap_or((defaults.max_output_bytes / 1024) as u64);
    if !(1..=4096).contains(&max_output_kib) {
        return fail(format!("limits.max_output_kib must be between 1 and 4096 (got {max_output_kib})"));
    }
    let http_timeout_ms = raw.http_timeout_ms.unwrap_or(timeout_ms.min(defaults.http_timeout.as_millis() as u64));
    if !(1..=timeout_ms).contains(&http_timeout_ms) {
        return fail(format!(
            "limits.http_timeout_ms must be between 1 and limits.timeout_ms ({timeout_ms}) (got {http_timeout_ms})"
        ));
    }
    let max_response_kib = raw.max_response_kib.unwrap_or((defaults.max_http_response_bytes / 1024) as u64);
    if !(1..=16 * 1024).contains(&max_response_kib) {
        return fail(format!("limits.max_response_kib must be between 1 and 16384 (got {max_response_kib})"));
    }
    let max_consecutive_faults = raw.max_consecutive_faults.unwrap_or(defaults.max_consecutive_faults);
    if !(1..=1000).contains(&max_consecutive_faults) {
        return fail(format!(
            "limits.max_consecutive_faults must be between 1 and 1000 (got {max_consecutive_faults})"
        ));
    }
    Ok(Limits {
        memory_bytes: (memory_mib * 1024 * 1024) as usize,
        call_timeout: Duration::from_millis(timeout_ms),
        max_output_bytes: (max_output_kib * 1024) as usize,
        max_consecutive_faults,
        http_timeout: Duration::from_millis(http_timeout_ms),
        max_http_response_bytes: (max_response_kib * 1024) as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden errors: each `tests/manifests/bad/NAME.toml` fails with exactly the message in
    /// `NAME.err`; each `tests/manifests/good/*.toml` parses.
    #[test]
    fn golden_manifests() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/manifests");
        let mut n_bad = 0;
        for entry in std::fs::read_dir(dir.join("bad")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|ext| ext == "toml") {
                let expected = std::fs::read_to_string(path.with_extension("err")).unwrap();
                let error = Manifest::parse(&std::fs::read_to_string(&path).unwrap()).unwrap_err();
                assert_eq!(error.to_string(), expected.trim_end(), "{}", path.display());
                n_bad += 1;
            }
        }
        assert!(n_bad >= 10, "only {n_bad} bad manifest fixtures");
        for entry in std::fs::read_dir(dir.join("good")).unwrap() {
            let path = entry.unwrap().path();
            Manifest::parse(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }

    #[test]
    fn defaults_depend_on_the_world() {
        let manifest = Manifest::parse(
            "id = \"nwave\"\nversion = \"1.2.3\"\nworld = \"sensor-decoder@0.1\"\nvendor = \"Nwave\"\n[sensor]\nmodels = [\"nps405\"]\n",
        )
        .unwrap();
        assert_eq!(manifest.limits.call_timeout, Duration::from_millis(50));
        assert_eq!(manifest.limits.memory_bytes, 16 * 1024 * 1024);
        assert_eq!(manifest.models, ["nps405"]);
    }
}
