//! The plugin host: runs WebAssembly components (wasmtime component model) that implement the
//! worlds in `plugins/wit/`, under hard limits. A trap, a timeout, a memory-limit hit or malformed
//! output fails that call only; after `max_consecutive_faults` such faults in a row the plugin
//! is quarantined until it is reloaded.
//!
//! Deliberately absent: any knowledge of HTTP, storage or devices. The host takes bytes and
//! returns readings.

pub mod manifest;
mod sensor;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime::component::ResourceTable;
use wasmtime::{Config, Engine, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use manifest::{Manifest, ManifestError, World};
pub use sensor::{Decoded, MessageKind, Occupancy, Reading, SensorPlugin, Uplink};

/// Where the build put the bundled plugins (`berth_sensor_<vendor>.wasm`).
pub const BUNDLED_PLUGINS_DIR: &str = env!("BERTH_BUNDLED_PLUGINS_DIR");

/// Per-plugin limits. Defaults suit decoders: 16 MiB of memory, 50 ms per call.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub memory_bytes: usize,
    pub call_timeout: Duration,
    /// Largest output (the decoded object as JSON) accepted from one call.
    pub max_output_bytes: usize,
    /// Consecutive faults after which the plugin is quarantined.
    pub max_consecutive_faults: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 16 * 1024 * 1024,
            call_timeout: Duration::from_millis(50),
            max_output_bytes: 64 * 1024,
            max_consecutive_faults: 5,
        }
    }
}

/// Why a call failed. Only `Decode` is the plugin's own answer; the rest are faults.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// The plugin ran fine and says the payload cannot be decoded.
    #[error("{0}")]
    Decode(String),
    #[error("plugin exceeded its {0} ms time limit")]
    Timeout(u64),
    #[error("plugin exceeded its memory limit of {0} bytes")]
    MemoryLimit(usize),
    #[error("plugin trapped: {0}")]
    Trap(String),
    #[error("plugin returned invalid output: {0}")]
    Malformed(String),
    #[error("plugin is quarantined after {0} consecutive faults; reload it to retry")]
    Quarantined(u32),
    #[error("cannot load plugin: {0}")]
    Load(String),
}

impl PluginError {
    /// Whether this counts towards quarantine.
    pub fn is_fault(&self) -> bool {
        matches!(
            self,
            PluginError::Timeout(_) | PluginError::MemoryLimit(_) | PluginError::Trap(_) | PluginError::Malformed(_)
        )
    }
}

/// One shared engine for every plugin. A background thread advances the epoch every
/// millisecond; a call's deadline is counted in those ticks.
#[derive(Clone)]
pub struct PluginHost {
    engine: Engine,
    _ticker: Arc<EpochTicker>,
}

struct EpochTicker {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(1);

impl PluginHost {
    pub fn new() -> Result<Self, PluginError> {
        let mut config = Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| PluginError::Load(e.to_string()))?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let weak = engine.weak();
        let thread_stop = stop.clone();
        std::thread::Builder::new()
            .name("berth-plugin-epoch".into())
            .spawn(move || {
                while !thread_stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| PluginError::Load(e.to_string()))?;
        Ok(Self { engine, _ticker: Arc::new(EpochTicker { stop }) })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// What a plugin's store holds: WASI (no files, no network, no environment), the memory limiter,
/// and the plugin's configuration values.
pub(crate) struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: StoreLimits,
    plugin_id: Arc<str>,
    config: Arc<std::collections::BTreeMap<String, String>>,
    n_log_lines: u32,
}

/// Log lines a plugin may write per call; more are dropped.
const MAX_LOG_LINES_PER_CALL: u32 = 20;
/// Longest log line kept, in bytes.
const MAX_LOG_LINE_BYTES: usize = 512;

impl PluginState {
    pub(crate) fn new(
        plugin_id: Arc<str>,
        config: Arc<std::collections::BTreeMap<String, String>>,
        limits: &Limits,
    ) -> Self {
        Self {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .instances(4)
                .trap_on_grow_failure(true)
                .build(),
            plugin_id,
            config,
            n_log_lines: 0,
        }
    }

    pub(crate) fn reset_call_budget(&mut self) {
        self.n_log_lines = 0;
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

wasmtime::component::bindgen!({
    path: "../wit",
    world: "sensor-decoder",
});

use berth::plugin::{clock, config, log};

impl log::Host for PluginState {
    fn log(&mut self, level: log::Level, message: String) {
        self.n_log_lines += 1;
        if self.n_log_lines > MAX_LOG_LINES_PER_CALL {
            return;
        }
        let message = truncate(message, MAX_LOG_LINE_BYTES);
        let plugin = &*self.plugin_id;
        match level {
            log::Level::Debug => tracing::debug!(plugin, "{message}"),
            log::Level::Info => tracing::info!(plugin, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, "{message}"),
            log::Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

/// Cuts `text` to at most `max_bytes` (on a character boundary), marking the cut with `…`.
pub(crate) fn truncate(mut text: String, max_bytes: usize) -> String {
    if text.len() > max_bytes {
        let mut end = max_bytes;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

impl config::Host for PluginState {
    fn get(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }
}

impl clock::Host for PluginState {
    fn now_ms(&mut self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_millis() as u64).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests;
