//! The plugin host: runs WebAssembly components (wasmtime component model) that implement the
//! worlds in `plugins/wit/`, under hard limits. A trap, a timeout, a memory-limit hit or malformed
//! output fails that call only; after `max_consecutive_faults` such faults in a row the plugin
//! is quarantined until it is reloaded.
//!
//! - [`PluginHost`]: one shared engine (pooling allocator when the machine allows it), an epoch
//!   ticker for deadlines, and an optional on-disk cache of compiled components.
//! - [`SensorPlugin`], [`PaymentPlugin`], [`ChatPlugin`]: one loaded plugin version of each world.
//! - [`Registry`]: the plugins directory, uploads, hot reload, and the kernel's `Plugins` port.
//!
//! Deliberately absent: any knowledge of storage, devices or bookings. The host takes bytes and
//! returns answers.

mod bindings;
pub mod cache;
pub mod chat;
pub mod http;
pub mod manifest;
pub mod payment;
pub mod registry;
mod runner;
mod sensor;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use cache::{ArtifactCache, CacheOutcome};
pub use chat::{ChatPlugin, InboundMessage, OutboundMessage, PluginChannel};
pub use manifest::{Manifest, ManifestError, World};
pub use payment::{PaymentPlugin, PaymentState};
pub use registry::{Registry, RegistryOptions};
pub use runner::Health;
pub use sensor::{Decoded, MessageKind, Occupancy, Reading, SensorPlugin, Uplink};

/// Where the build put the bundled plugins: one directory per plugin with `plugin.toml` and
/// `plugin.wasm`.
pub const BUNDLED_PLUGINS_DIR: &str = env!("BERTH_BUNDLED_PLUGINS_DIR");
/// A plugin shipped inside the binary.
#[derive(Debug)]
pub struct BundledPlugin {
    pub manifest: &'static str,
    pub component: &'static [u8],
}

// `pub static BUNDLED: &[BundledPlugin]`, written by the build script: the bundled plugins,
// embedded so the binary needs no files beside it.
include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

/// Test-only components (`<name>.wasm`): the hostile decoder and minimal payment and chat plugins.
pub const TEST_PLUGINS_DIR: &str = env!("BERTH_TEST_PLUGINS_DIR");

/// Per-plugin limits. Defaults suit decoders: 16 MiB of memory, 50 ms per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: usize,
    pub call_timeout: Duration,
    /// Largest output (the decoded object as JSON, a list of messages) accepted from one call.
    pub max_output_bytes: usize,
    /// Consecutive faults after which the plugin is quarantined.
    pub max_consecutive_faults: u32,
    /// Timeout of one outbound HTTP request.
    pub http_timeout: Duration,
    /// Largest HTTP response body a plugin may receive.
    pub max_http_response_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 16 * 1024 * 1024,
            call_timeout: Duration::from_millis(50),
            max_output_bytes: 64 * 1024,
            max_consecutive_faults: 5,
            http_timeout: Duration::from_secs(3),
            max_http_response_bytes: 1024 * 1024,
        }
    }
}

/// Why a call failed. `Decode` is the plugin's own answer; `Quarantined` and `Load` are the
/// host's; the rest are faults that count towards quarantine.
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

/// How the host is set up.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Reuse pre-reserved memory slots for instances (faster instantiation). Falls back to
    /// on-demand allocation when the machine refuses the reservation.
    pub pooling: bool,
    /// Where compiled components are cached; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
}

impl Default for HostOptions {
    fn default() -> Self {
        Self { pooling: true, cache_dir: None }
    }
}

/// One shared engine for every plugin. A background thread advances the epoch every
/// millisecond; a call's deadline is counted in those ticks.
#[derive(Clone)]
pub struct PluginHost {
    engine: Engine,
    cache: Option<ArtifactCache>,
    pooling: bool,
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

/// Instances the pooling allocator keeps slots for, across all plugins.
const POOL_INSTANCES: u32 = 1000;

fn engine_config(pooling: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true).epoch_interruption(true);
    if pooling {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_INSTANCES)
            .total_core_instances(4 * POOL_INSTANCES)
            .total_memories(2 * POOL_INSTANCES)
            .total_tables(4 * POOL_INSTANCES)
            .max_memory_size(manifest::MAX_MEMORY_MIB as usize * 1024 * 1024);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

impl PluginHost {
    /// A host with the default options and no cache.
    pub fn new() -> Result<Self, PluginError> {
        Self::with_options(&HostOptions::default())
    }

    pub fn with_options(options: &HostOptions) -> Result<Self, PluginError> {
        let (engine, pooling) = match options.pooling.then(|| Engine::new(&engine_config(true))) {
            Some(Ok(engine)) => (engine, true),
            Some(Err(error)) => {
                tracing::warn!(%error, "pooling allocator unavailable; allocating plugin instances on demand");
                (Engine::new(&engine_config(false)).map_err(|e| PluginError::Load(e.to_string()))?, false)
            }
            None => (Engine::new(&engine_config(false)).map_err(|e| PluginError::Load(e.to_string()))?, false),
        };
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
        let cache = options.cache_dir.clone().map(ArtifactCache::new);
        Ok(Self { engine, cache, pooling, _ticker: Arc::new(EpochTicker { stop }) })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Whether instances come from the pooling allocator.
    pub fn is_pooling(&self) -> bool {
        self.pooling
    }

    /// Compiles a component, through the on-disk cache when there is one.
    pub fn compile(&self, wasm: &[u8]) -> Result<(Component, CacheOutcome), PluginError> {
        match &self.cache {
            Some(cache) => cache.load_or_compile(&self.engine, wasm),
            None => Component::new(&self.engine, wasm)
                .map(|component| (component, CacheOutcome::Disabled))
                .map_err(|e| PluginError::Load(format!("{e:#}"))),
        }
    }
}

/// The memory limiter of one store: enforces the plugin's limit and records the peak.
pub(crate) struct Limiter {
    memory_limit: usize,
    memory_now: usize,
    pub(crate) memory_peak: usize,
}

/// The error a store's memory limiter raises; it becomes [`PluginError::MemoryLimit`].
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {0} bytes reached")]
pub(crate) struct MemoryLimitHit(pub(crate) usize);

/// Table elements one plugin may have; far beyond what a Rust component needs.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let total = self.memory_now - current.min(self.memory_now) + desired;
        if total > self.memory_limit {
            return Err(MemoryLimitHit(self.memory_limit).into());
        }
        self.memory_now = total;
        self.memory_peak = self.memory_peak.max(total);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        16
    }

    fn tables(&self) -> usize {
        16
    }

    fn memories(&self) -> usize {
        4
    }
}

/// What a plugin's store holds: WASI (no files, no network, no environment), the memory limiter,
/// the plugin's configuration values and, for worlds that have it, its HTTP policy.
pub(crate) struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    plugin_id: Arc<str>,
    config: Arc<std::collections::BTreeMap<String, String>>,
    http: Option<Arc<http::HttpPolicy>>,
    n_log_lines: u32,
    n_http_calls: u32,
}

/// Log lines a plugin may write per call; more are dropped.
const MAX_LOG_LINES_PER_CALL: u32 = 20;
/// Longest log line kept, in bytes.
const MAX_LOG_LINE_BYTES: usize = 512;

impl PluginState {
    pub(crate) fn new(
        plugin_id: Arc<str>,
        config: Arc<std::collections::BTreeMap<String, String>>,
        http: Option<Arc<http::HttpPolicy>>,
        limits: &Limits,
    ) -> Self {
        Self {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limiter: Limiter { memory_limit: limits.memory_bytes, memory_now: 0, memory_peak: 0 },
            plugin_id,
            config,
            http,
            n_log_lines: 0,
            n_http_calls: 0,
        }
    }

    pub(crate) fn reset_call_budget(&mut self) {
        self.n_log_lines = 0;
        self.n_http_calls = 0;
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

use bindings::sensor::berth::plugin::{clock, config, log};

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
