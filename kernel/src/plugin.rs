//! Plugins as the kernel sees them: what is loaded and how healthy it is, and the one call the
//! domain makes today (decode a sensor uplink). How plugins run (WebAssembly, wasmtime) is the
//! adapter's business; see `plugins/host`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// The contract a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginWorld {
    SensorDecoder,
    PaymentProvider,
    ChatChannel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginStatus {
    /// Loaded and taking calls.
    Active,
    /// Loaded, but refusing calls after too many consecutive faults; a reload clears it.
    Quarantined,
    /// Never loaded: its manifest or component is broken (see `reload_error`).
    Failed,
}

/// Where a plugin comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginSource {
    /// Shipped with berth.
    Bundled,
    /// In the plugins directory: uploaded through the API or placed there by an operator.
    Installed,
}

/// One plugin, its version and its health.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    pub id: String,
    pub source: PluginSource,
    pub status: PluginStatus,
    /// `None` only when the plugin never loaded.
    pub version: Option<String>,
    pub world: Option<PluginWorld>,
    pub vendor: Option<String>,
    pub description: Option<String>,
    /// Hex SHA-256 of the component that is running.
    pub sha256: Option<String>,
    /// Device models a sensor decoder claims.
    pub models: Vec<String>,
    pub http_hosts: Vec<String>,
    pub memory_limit_bytes: u64,
    pub timeout_ms: u64,
    pub loaded_at: Option<DateTime<Utc>>,
    pub calls: u64,
    pub faults_total: u64,
    pub consecutive_faults: u32,
    /// Largest linear memory any instance of this version reached.
    pub peak_memory_bytes: u64,
    pub last_error: Option<String>,
    /// Why the latest (re)load failed; the previous version, if any, keeps running.
    pub reload_error: Option<String>,
}

/// One uplink for a sensor decoder.
#[derive(Debug, Clone)]
pub struct SensorUplink {
    pub device_id: String,
    /// The registered device model; it selects the plugin.
    pub model: String,
    pub f_port: u8,
    pub payload: Vec<u8>,
    pub received_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occupancy {
    Occupied,
    Free,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadingKind {
    Change,
    Heartbeat,
    Startup,
    Other,
}

/// What a decoder made of an uplink: the normalised reading and the vendor's full object.
#[derive(Debug, Clone)]
pub struct SensorReading {
    pub plugin_id: String,
    pub occupancy: Occupancy,
    pub kind: ReadingKind,
    pub battery_mv: Option<u32>,
    pub temperature_c: Option<f64>,
    /// The vendor's full object as JSON text (a well-formed JSON object); parse it with
    /// [`SensorReading::object`] when needed.
    pub object_json: String,
}

impl SensorReading {
    pub fn object(&self) -> serde_json::Value {
        serde_json::from_str(&self.object_json).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginPortError {
    #[error("plugin '{0}' not found")]
    NotFound(String),
    /// The manifest is wrong; the message says how.
    #[error("{0}")]
    InvalidManifest(String),
    /// The component does not compile or does not implement the manifest's world.
    #[error("{0}")]
    InvalidComponent(String),
    /// Another plugin already claims a device model, for instance.
    #[error("{0}")]
    Conflict(String),
    #[error("no sensor plugin decodes device model '{0}'")]
    NoDecoder(String),
    /// The plugin ran and says the payload cannot be decoded.
    #[error("{0}")]
    Rejected(String),
    /// The plugin faulted (trap, timeout, memory, bad output) or is quarantined.
    #[error("{0}")]
    Fault(String),
    #[error("{0}")]
    Unavailable(String),
}

/// The plugin registry port.
#[async_trait]
pub trait Plugins: Send + Sync {
    async fn list(&self) -> Vec<PluginInfo>;
    async fn get(&self, id: &str) -> Option<PluginInfo>;
    /// Installs or upgrades a plugin; `true` when it is new. The previous version, if any, is
    /// replaced atomically once the new one compiled and linked.
    async fn install(&self, manifest: String, component: Vec<u8>) -> Result<(PluginInfo, bool), PluginPortError>;
    /// Reloads a plugin from its files: picks up changes and clears a quarantine.
    async fn reload(&self, id: &str) -> Result<PluginInfo, PluginPortError>;
    async fn decode(&self, uplink: SensorUplink) -> Result<SensorReading, PluginPortError>;
    /// The chat-channel plugin of this id as a channel (WhatsApp ships as one), if one is loaded.
    fn chat_channel(&self, _id: &str) -> Option<std::sync::Arc<dyn crate::chat::ChatChannel>> {
        None
    }
    /// Decodes many uplinks at once, answers in the same order. Hosts that run plugins off the
    /// async runtime do it in one hop rather than one per uplink.
    async fn decode_many(&self, uplinks: Vec<SensorUplink>) -> Vec<Result<SensorReading, PluginPortError>> {
        let mut readings = Vec::with_capacity(uplinks.len());
        for uplink in uplinks {
            readings.push(self.decode(uplink).await);
        }
        readings
    }
}

/// A registry with nothing in it, for processes that run no plugins.
#[derive(Debug, Default)]
pub struct NoPlugins;

#[async_trait]
impl Plugins for NoPlugins {
    async fn list(&self) -> Vec<PluginInfo> {
        Vec::new()
    }

    async fn get(&self, _id: &str) -> Option<PluginInfo> {
        None
    }

    async fn install(&self, _manifest: String, _component: Vec<u8>) -> Result<(PluginInfo, bool), PluginPortError> {
        Err(PluginPortError::Unavailable("this process runs no plugin host".into()))
    }

    async fn reload(&self, id: &str) -> Result<PluginInfo, PluginPortError> {
        Err(PluginPortError::NotFound(id.to_owned()))
    }

    async fn decode(&self, uplink: SensorUplink) -> Result<SensorReading, PluginPortError> {
        Err(PluginPortError::NoDecoder(uplink.model))
    }
}
