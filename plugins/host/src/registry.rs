//! The registry: every plugin berth runs, from the bundled directory and the plugins directory
//! (where uploads land and where an operator may drop a plugin by hand).
//!
//! A plugin is a directory holding `plugin.toml` and its component. Loading compiles (through the
//! cache), links and validates the new version completely before it replaces the old one in a
//! single swap; calls already running keep their `Arc` to the old version and finish on it. A
//! failed load leaves the previous version serving and records why. A watcher reloads a plugin
//! whose files change.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use berth_kernel::plugin::{
    self as port, PluginInfo, PluginPortError, PluginSource, PluginStatus, PluginWorld, Plugins, SensorReading,
    SensorUplink,
};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::http::HttpPolicy;
use crate::manifest::{Manifest, World};
use crate::{
    BundledPlugin, CacheOutcome, ChatPlugin, Health, MessageKind, Occupancy, PaymentPlugin, PluginError, PluginHost,
    SensorPlugin, Uplink,
};

pub const MANIFEST_FILE: &str = "plugin.toml";

/// How the registry is set up.
#[derive(Clone)]
pub struct RegistryOptions {
    /// Plugins shipped with berth ([`crate::BUNDLED`], embedded in the binary); empty for none.
    /// Those that need configuration load only once configured (see `bundled_is_wanted`).
    pub bundled: &'static [BundledPlugin],
    /// Installed plugins: uploads are written here, and it is watched for changes. A plugin
    /// here replaces a bundled plugin of the same id.
    pub plugins_dir: PathBuf,
    pub watch: bool,
    /// Configuration values per plugin id; a plugin sees only the keys its manifest declares.
    pub config: BTreeMap<String, BTreeMap<String, String>>,
    /// Largest component accepted.
    pub max_component_bytes: usize,
    /// The `BERTH_PLUGIN_*` environment variables, where secrets come from (see
    /// [`secret_variable`]). The binary snapshots them at start.
    pub secret_env: BTreeMap<String, String>,
}

impl std::fmt::Debug for RegistryOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets never reach a log line.
        f.debug_struct("RegistryOptions")
            .field("bundled", &self.bundled.len())
            .field("plugins_dir", &self.plugins_dir)
            .field("watch", &self.watch)
            .field("max_component_bytes", &self.max_component_bytes)
            .field("secret_env", &self.secret_env.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl RegistryOptions {
    /// Snapshots the `BERTH_PLUGIN_*` variables of this process.
    pub fn secrets_from_process_env() -> BTreeMap<String, String> {
        std::env::vars().filter(|(name, _)| name.starts_with("BERTH_PLUGIN_")).collect()
    }
}

/// A loaded plugin of any world.
#[derive(Clone)]
pub enum LoadedPlugin {
    Sensor(Arc<SensorPlugin>),
    Payment(Arc<PaymentPlugin>),
    Chat(Arc<ChatPlugin>),
}

impl LoadedPlugin {
    fn health(&self) -> Health {
        match self {
            LoadedPlugin::Sensor(plugin) => plugin.health(),
            LoadedPlugin::Payment(plugin) => plugin.health(),
            LoadedPlugin::Chat(plugin) => plugin.health(),
        }
    }
}

/// One version that loaded.
#[derive(Clone)]
struct Version {
    manifest: Manifest,
    manifest_text: String,
    sha256: String,
    loaded_at: DateTime<Utc>,
    plugin: LoadedPlugin,
    cache: CacheOutcome,
}

/// Where a plugin's files are.
#[derive(Clone)]
enum Origin {
    Dir(PathBuf),
    Embedded(&'static BundledPlugin),
}

#[derive(Clone)]
struct Entry {
    id: String,
    source: PluginSource,
    origin: Origin,
    version: Option<Version>,
    reload_error: Option<String>,
}

#[derive(Default)]
struct State {
    entries: BTreeMap<String, Entry>,
    /// Device model → sensor plugin id.
    models: HashMap<String, String>,
}

struct Inner {
    host: PluginHost,
    options: RegistryOptions,
    state: RwLock<State>,
    /// Serialises loads that touch the plugins directory (uploads, reloads, the watcher).
    files: Mutex<()>,
}

/// The plugin registry. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
    _watcher: Option<Arc<notify::RecommendedWatcher>>,
}

/// What went wrong loading one plugin directory.
struct LoadFailure {
    id: Option<String>,
    error: PluginPortError,
}

/// How long the watcher waits for a burst of file events to settle before reloading.
const SETTLE: Duration = Duration::from_millis(200);

impl Registry {
    /// Loads the bundled plugins, then the plugins directory (created if missing), and starts
    /// watching it when asked. A plugin that fails to load is listed as failed; it does not stop
    /// the others.
    pub fn open(host: PluginHost, options: RegistryOptions) -> Result<Self, String> {
        std::fs::create_dir_all(&options.plugins_dir)
            .map_err(|e| format!("cannot create plugins directory {}: {e}", options.plugins_dir.display()))?;
        let watch = options.watch;
        let inner = Arc::new(Inner { host, options, state: RwLock::new(State::default()), files: Mutex::new(()) });
        for bundled in inner.options.bundled {
            if inner.bundled_is_wanted(bundled) {
                inner.load_and_apply(Origin::Embedded(bundled), PluginSource::Bundled);
            }
        }
        for dir in plugin_dirs(&inner.options.plugins_dir) {
            inner.load_and_apply(Origin::Dir(dir), PluginSource::Installed);
        }
        let watcher = if watch { Some(Arc::new(start_watcher(&inner)?)) } else { None };
        Ok(Self { inner, _watcher: watcher })
    }

    pub fn host(&self) -> &PluginHost {
        &self.inner.host
    }

    pub fn list_info(&self) -> Vec<PluginInfo> {
        let state = self.inner.state.read().expect("invariant: registry lock is never poisoned");
        state.entries.values().map(info).collect()
    }

    pub fn info(&self, id: &str) -> Option<PluginInfo> {
        let state = self.inner.state.read().expect("invariant: registry lock is never poisoned");
        state.entries.get(id).map(info)
    }

    /// The sensor plugin that claims `model`.
    pub fn sensor_for_model(&self, model: &str) -> Option<Arc<SensorPlugin>> {
        let state = self.inner.state.read().expect("invariant: registry lock is never poisoned");
        let id = state.models.get(model)?;
        match state.entries.get(id)?.version.as_ref()?.plugin {
            LoadedPlugin::Sensor(ref plugin) => Some(plugin.clone()),
            _ => None,
        }
    }

    /// The loaded version of a plugin.
    pub fn plugin(&self, id: &str) -> Option<LoadedPlugin> {
        let state = self.inner.state.read().expect("invariant: registry lock is never poisoned");
        state.entries.get(id)?.version.as_ref().map(|version| version.plugin.clone())
    }

    /// How the running version of `id` was compiled (for tests and the benchmark).
    pub fn cache_outcome(&self, id: &str) -> Option<CacheOutcome> {
        let state = self.inner.state.read().expect("invariant: registry lock is never poisoned");
        state.entries.get(id)?.version.as_ref().map(|version| version.cache)
    }

    /// Installs or upgrades a plugin from an upload: validated and loaded first, then written to
    /// the plugins directory, then swapped in. Returns the plugin and whether it is new.
    pub fn install_blocking(&self, manifest_text: &str, wasm: &[u8]) -> Result<(PluginInfo, bool), PluginPortError> {
        let manifest = Manifest::parse(manifest_text).map_err(|e| PluginPortError::InvalidManifest(e.to_string()))?;
        if manifest.component.contains(['/', '\\']) || manifest.component.starts_with('.') {
            return Err(PluginPortError::InvalidManifest(format!(
                "plugin.toml: component '{}' must be a plain file name for an uploaded plugin",
                manifest.component
            )));
        }
        let inner = &self.inner;
        let _files = inner.files.lock().expect("invariant: files lock is never poisoned");
        let dir = inner.options.plugins_dir.join(&manifest.id);
        let version = inner.load_version(manifest, manifest_text.to_owned(), wasm)?;
        inner.check_models(&version)?;
        write_plugin_files(&dir, &version.manifest.component, wasm, manifest_text)
            .map_err(|e| PluginPortError::Unavailable(format!("cannot write plugin files: {e}")))?;
        let id = version.manifest.id.clone();
        let created =
            !inner.state.read().expect("invariant: registry lock is never poisoned").entries.contains_key(&id);
        inner.apply(&id, PluginSource::Installed, Origin::Dir(dir), Ok(version));
        Ok((self.info(&id).expect("invariant: just installed"), created))
    }

    /// Reloads a plugin from its directory: a fresh instance, so a quarantine is lifted.
    pub fn reload_blocking(&self, id: &str) -> Result<PluginInfo, PluginPortError> {
        let inner = &self.inner;
        let _files = inner.files.lock().expect("invariant: files lock is never poisoned");
        let (origin, source) = {
            let state = inner.state.read().expect("invariant: registry lock is never poisoned");
            let entry = state.entries.get(id).ok_or_else(|| PluginPortError::NotFound(id.to_owned()))?;
            (entry.origin.clone(), entry.source)
        };
        let loaded = inner.load_origin(&origin);
        let outcome = loaded.as_ref().map(|_| ()).map_err(|failure| failure.error.clone());
        inner.apply(id, source, origin, loaded.map_err(|failure| failure.error.to_string()));
        outcome?;
        let info = self.info(id).ok_or_else(|| PluginPortError::NotFound(id.to_owned()))?;
        match info.reload_error.clone() {
            Some(error) => Err(PluginPortError::Conflict(error)),
            None => Ok(info),
        }
    }

    /// Decodes an uplink with the plugin that claims its device model. Call it from a blocking
    /// context (a plain thread or `spawn_blocking`), never on an async worker.
    pub fn decode_blocking(&self, uplink: &SensorUplink) -> Result<SensorReading, PluginPortError> {
        let plugin =
            self.sensor_for_model(&uplink.model).ok_or_else(|| PluginPortError::NoDecoder(uplink.model.clone()))?;
        let input = Uplink {
            device_id: uplink.device_id.clone(),
            model: uplink.model.clone(),
            f_port: uplink.f_port,
            payload: uplink.payload.clone(),
            received_at_ms: uplink.received_at.timestamp_millis().max(0) as u64,
        };
        match plugin.decode(&input) {
            Ok(decoded) => Ok(SensorReading {
                plugin_id: plugin.id().to_owned(),
                occupancy: match decoded.reading.occupancy {
                    Occupancy::Occupied => port::Occupancy::Occupied,
                    Occupancy::Free => port::Occupancy::Free,
                    Occupancy::Unknown => port::Occupancy::Unknown,
                },
                kind: match decoded.reading.kind {
                    MessageKind::Change => port::ReadingKind::Change,
                    MessageKind::Heartbeat => port::ReadingKind::Heartbeat,
                    MessageKind::Startup => port::ReadingKind::Startup,
                    MessageKind::Other => port::ReadingKind::Other,
                },
                battery_mv: decoded.reading.battery_mv,
                temperature_c: decoded.reading.temperature_c,
                object_json: decoded.object_json,
            }),
            Err(PluginError::Decode(message)) => Err(PluginPortError::Rejected(message)),
            Err(other) => Err(PluginPortError::Fault(other.to_string())),
        }
    }
}

impl Inner {
    /// Whether a bundled plugin loads. One that needs configuration (it declares config keys or
    /// secrets, as the PayPal provider does) is opt-in: it loads once the operator configures it,
    /// under `[plugins.config.<id>]` or with one of its secrets, and is not listed until then
    /// (rather than listed as failed on every installation that does not use it). A manifest
    /// that does not parse loads, so that its error is listed.
    fn bundled_is_wanted(&self, bundled: &BundledPlugin) -> bool {
        let Ok(manifest) = Manifest::parse(bundled.manifest) else { return true };
        if manifest.config_keys.is_empty() && manifest.secrets.is_empty() {
            return true;
        }
        let wanted = self.options.config.contains_key(&manifest.id)
            || manifest
                .secrets
                .iter()
                .any(|key| self.options.secret_env.contains_key(&secret_variable(&manifest.id, key)));
        if !wanted {
            tracing::debug!(plugin = %manifest.id, "bundled plugin not configured; not loaded");
        }
        wanted
    }

    fn load_and_apply(&self, origin: Origin, source: PluginSource) {
        let loaded = self.load_origin(&origin);
        let id = match (&loaded, &origin) {
            (Ok(version), _) => version.manifest.id.clone(),
            (Err(LoadFailure { id: Some(id), .. }), _) => id.clone(),
            // Without a readable id, name the plugin after its directory.
            (Err(LoadFailure { id: None, .. }), Origin::Dir(dir)) => dir_name(dir),
            (Err(LoadFailure { id: None, .. }), Origin::Embedded(_)) => "bundled".to_owned(),
        };
        self.apply(&id, source, origin, loaded.map_err(|failure| failure.error.to_string()));
    }

    fn load_origin(&self, origin: &Origin) -> Result<Version, LoadFailure> {
        match origin {
            Origin::Dir(dir) => self.load_dir(dir),
            Origin::Embedded(bundled) => {
                let manifest = Manifest::parse(bundled.manifest)
                    .map_err(|e| LoadFailure { id: None, error: PluginPortError::InvalidManifest(e.to_string()) })?;
                let id = manifest.id.clone();
                self.load_version(manifest, bundled.manifest.to_owned(), bundled.component)
                    .map_err(|error| LoadFailure { id: Some(id), error })
            }
        }
    }

    fn load_dir(&self, dir: &Path) -> Result<Version, LoadFailure> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let manifest_text = std::fs::read_to_string(&manifest_path).map_err(|e| LoadFailure {
            id: None,
            error: PluginPortError::InvalidManifest(format!("cannot read {}: {e}", manifest_path.display())),
        })?;
        let manifest = Manifest::parse(&manifest_text)
            .map_err(|e| LoadFailure { id: None, error: PluginPortError::InvalidManifest(e.to_string()) })?;
        let id = manifest.id.clone();
        if id != dir_name(dir) {
            return Err(LoadFailure {
                id: Some(dir_name(dir)),
                error: PluginPortError::InvalidManifest(format!(
                    "plugin.toml: id '{id}' does not match its directory '{}'",
                    dir_name(dir)
                )),
            });
        }
        let component_path = dir.join(&manifest.component);
        let wasm = std::fs::read(&component_path).map_err(|e| LoadFailure {
            id: Some(id.clone()),
            error: PluginPortError::InvalidComponent(format!("cannot read {}: {e}", component_path.display())),
        })?;
        self.load_version(manifest, manifest_text, &wasm).map_err(|error| LoadFailure { id: Some(id), error })
    }

    /// Compiles, links and validates one version; nothing is swapped yet.
    fn load_version(&self, manifest: Manifest, manifest_text: String, wasm: &[u8]) -> Result<Version, PluginPortError> {
        if wasm.len() > self.options.max_component_bytes {
            return Err(PluginPortError::InvalidComponent(format!(
                "component is {} bytes; the limit is {}",
                wasm.len(),
                self.options.max_component_bytes
            )));
        }
        let config = self.plugin_config(&manifest)?;
        let invalid = |error: PluginError| PluginPortError::InvalidComponent(error.to_string());
        let (component, cache) = self.host.compile(wasm).map_err(invalid)?;
        let plugin = match manifest.world {
            World::SensorDecoder => LoadedPlugin::Sensor(Arc::new(
                SensorPlugin::from_component(&self.host, &manifest.id, &component, manifest.limits, config)
                    .map_err(invalid)?,
            )),
            World::PaymentProvider => {
                let http = HttpPolicy::new(&manifest.http_hosts, &manifest.limits);
                LoadedPlugin::Payment(Arc::new(
                    PaymentPlugin::from_component(&self.host, &manifest.id, &component, manifest.limits, config, http)
                        .map_err(invalid)?,
                ))
            }
            World::ChatChannel => {
                let http = HttpPolicy::new(&manifest.http_hosts, &manifest.limits);
                LoadedPlugin::Chat(Arc::new(
                    ChatPlugin::from_component(&self.host, &manifest.id, &component, manifest.limits, config, http)
                        .map_err(invalid)?,
                ))
            }
        };
        Ok(Version {
            manifest,
            manifest_text,
            sha256: hex::encode(Sha256::digest(wasm)),
            loaded_at: berth_kernel::service::now(),
            plugin,
            cache,
        })
    }

    /// The values a plugin may read: its declared config keys from berth's configuration, and
    /// its declared secrets from the environment (`BERTH_PLUGIN_<ID>_<KEY>`).
    fn plugin_config(&self, manifest: &Manifest) -> Result<BTreeMap<String, String>, PluginPortError> {
        let configured = self.options.config.get(&manifest.id);
        let mut values = BTreeMap::new();
        for key in &manifest.config_keys {
            if let Some(value) = configured.and_then(|config| config.get(key)) {
                values.insert(key.clone(), value.clone());
            }
        }
        for key in &manifest.secrets {
            let variable = secret_variable(&manifest.id, key);
            let value = self.options.secret_env.get(&variable).cloned().ok_or_else(|| {
                PluginPortError::InvalidManifest(format!(
                    "secret '{key}' is not set: define the environment variable {variable}"
                ))
            })?;
            values.insert(key.clone(), value);
        }
        Ok(values)
    }

    /// A sensor plugin may not claim a model another plugin already decodes.
    fn check_models(&self, version: &Version) -> Result<(), PluginPortError> {
        let state = self.state.read().expect("invariant: registry lock is never poisoned");
        for model in &version.manifest.models {
            if let Some(owner) = state.models.get(model).filter(|owner| **owner != version.manifest.id) {
                return Err(PluginPortError::Conflict(format!(
                    "device model '{model}' is already decoded by plugin '{owner}'"
                )));
            }
        }
        Ok(())
    }

    /// Swaps in a loaded version, or records why loading failed (keeping any running version).
    fn apply(&self, id: &str, source: PluginSource, origin: Origin, loaded: Result<Version, String>) {
        let loaded = loaded.and_then(|version| {
            self.check_models(&version).map_err(|e| e.to_string())?;
            Ok(version)
        });
        let mut state = self.state.write().expect("invariant: registry lock is never poisoned");
        let previous = state.entries.get(id).cloned();
        // A bundled plugin never replaces an installed one of the same id.
        if source == PluginSource::Bundled
            && previous.as_ref().is_some_and(|entry| entry.source == PluginSource::Installed)
        {
            return;
        }
        let entry = match loaded {
            Ok(version) => {
                tracing::info!(
                    plugin = id,
                    version = %version.manifest.version,
                    sha256 = %version.sha256,
                    cache = ?version.cache,
                    "plugin loaded"
                );
                Entry { id: id.to_owned(), source, origin, version: Some(version), reload_error: None }
            }
            Err(error) => {
                tracing::warn!(plugin = id, %error, "plugin failed to load");
                match previous {
                    Some(previous) if previous.version.is_some() => Entry { reload_error: Some(error), ..previous },
                    _ => Entry { id: id.to_owned(), source, origin, version: None, reload_error: Some(error) },
                }
            }
        };
        state.entries.insert(id.to_owned(), entry);
        state.models = claimed_models(&state.entries);
    }

    /// Handles a change under the plugins directory: reloads the plugin if its files differ from
    /// what runs, drops it (falling back to a bundled one) if its directory is gone.
    fn reload_if_changed(&self, dir: &Path) {
        let _files = self.files.lock().expect("invariant: files lock is never poisoned");
        let id = dir_name(dir);
        if !dir.join(MANIFEST_FILE).exists() {
            if dir.exists() {
                return; // Being written; the manifest's own event comes later.
            }
            let removed = {
                let mut state = self.state.write().expect("invariant: registry lock is never poisoned");
                let installed = state.entries.get(&id).is_some_and(|entry| entry.source == PluginSource::Installed);
                if installed {
                    state.entries.remove(&id);
                    state.models = claimed_models(&state.entries);
                }
                installed
            };
            if removed {
                tracing::info!(plugin = %id, "plugin directory removed; plugin unloaded");
                if let Some(bundled) = self.options.bundled.iter().find(|bundled| {
                    Manifest::parse(bundled.manifest).is_ok_and(|manifest| manifest.id == id)
                        && self.bundled_is_wanted(bundled)
                }) {
                    self.load_and_apply(Origin::Embedded(bundled), PluginSource::Bundled);
                }
            }
            return;
        }
        let unchanged = {
            let state = self.state.read().expect("invariant: registry lock is never poisoned");
            state.entries.get(&id).and_then(|entry| entry.version.as_ref()).is_some_and(|version| {
                std::fs::read_to_string(dir.join(MANIFEST_FILE)).is_ok_and(|text| text == version.manifest_text)
                    && std::fs::read(dir.join(&version.manifest.component))
                        .is_ok_and(|wasm| hex::encode(Sha256::digest(&wasm)) == version.sha256)
            })
        };
        if !unchanged {
            tracing::info!(plugin = %id, "plugin files changed; reloading");
            self.load_and_apply(Origin::Dir(dir.to_owned()), PluginSource::Installed);
        }
    }
}

fn claimed_models(entries: &BTreeMap<String, Entry>) -> HashMap<String, String> {
    entries
        .values()
        .filter_map(|entry| entry.version.as_ref().map(|version| (entry, version)))
        .flat_map(|(entry, version)| version.manifest.models.iter().map(|model| (model.clone(), entry.id.clone())))
        .collect()
}

/// The environment variable holding a plugin's secret: `BERTH_PLUGIN_<ID>_<KEY>`, upper case,
/// `-` as `_`.
pub fn secret_variable(plugin_id: &str, key: &str) -> String {
    format!("BERTH_PLUGIN_{}_{}", plugin_id, key).to_ascii_uppercase().replace(['-', '.'], "_")
}

fn dir_name(dir: &Path) -> String {
    dir.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Subdirectories of `dir` that hold a manifest, in name order. Hidden ones (uploads in
/// progress) are skipped.
pub(crate) fn plugin_dirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_dir() && !dir_name(path).starts_with('.') && path.join(MANIFEST_FILE).exists())
        .collect();
    dirs.sort();
    dirs
}

/// Writes the component, then the manifest, each through a rename so no reader sees half a file.
fn write_plugin_files(dir: &Path, component: &str, wasm: &[u8], manifest_text: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in [(component, wasm), (MANIFEST_FILE, manifest_text.as_bytes())] {
        let temporary = dir.join(format!(".{name}.upload"));
        std::fs::write(&temporary, bytes)?;
        std::fs::File::open(&temporary)?.sync_all()?;
        std::fs::rename(&temporary, dir.join(name))?;
    }
    Ok(())
}

fn start_watcher(inner: &Arc<Inner>) -> Result<notify::RecommendedWatcher, String> {
    use notify::Watcher;
    let root = inner.options.plugins_dir.canonicalize().map_err(|e| e.to_string())?;
    let (sender, receiver) = mpsc::channel::<PathBuf>();
    let watch_root = root.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            for path in event.paths {
                // The plugin directory is the first component under the root.
                if let Some(first) = path.strip_prefix(&watch_root).ok().and_then(|rest| rest.components().next()) {
                    let _ = sender.send(watch_root.join(first));
                }
            }
        }
    })
    .map_err(|e| format!("cannot watch the plugins directory: {e}"))?;
    watcher
        .watch(&root, notify::RecursiveMode::Recursive)
        .map_err(|e| format!("cannot watch {}: {e}", root.display()))?;
    let weak: Weak<Inner> = Arc::downgrade(inner);
    std::thread::Builder::new()
        .name("berth-plugin-watch".into())
        .spawn(move || {
            while let Ok(first) = receiver.recv() {
                let mut changed = std::collections::BTreeSet::from([first]);
                // Let a burst (a copy, an upload) settle.
                while let Ok(path) = receiver.recv_timeout(SETTLE) {
                    changed.insert(path);
                }
                let Some(inner) = weak.upgrade() else { break };
                for dir in changed {
                    if !dir_name(&dir).starts_with('.') {
                        inner.reload_if_changed(&dir);
                    }
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(watcher)
}

fn info(entry: &Entry) -> PluginInfo {
    let health = entry.version.as_ref().map(|version| version.plugin.health()).unwrap_or_default();
    let status = match &entry.version {
        None => PluginStatus::Failed,
        Some(_) if health.quarantined => PluginStatus::Quarantined,
        Some(_) => PluginStatus::Active,
    };
    let manifest = entry.version.as_ref().map(|version| &version.manifest);
    PluginInfo {
        id: entry.id.clone(),
        source: entry.source,
        status,
        version: manifest.map(|m| m.version.clone()),
        world: manifest.map(|m| match m.world {
            World::SensorDecoder => PluginWorld::SensorDecoder,
            World::PaymentProvider => PluginWorld::PaymentProvider,
            World::ChatChannel => PluginWorld::ChatChannel,
        }),
        vendor: manifest.map(|m| m.vendor.clone()),
        description: manifest.map(|m| m.description.clone()).filter(|text| !text.is_empty()),
        sha256: entry.version.as_ref().map(|version| version.sha256.clone()),
        models: manifest.map(|m| m.models.clone()).unwrap_or_default(),
        http_hosts: manifest.map(|m| m.http_hosts.clone()).unwrap_or_default(),
        memory_limit_bytes: manifest.map_or(0, |m| m.limits.memory_bytes as u64),
        timeout_ms: manifest.map_or(0, |m| m.limits.call_timeout.as_millis() as u64),
        loaded_at: entry.version.as_ref().map(|version| version.loaded_at),
        calls: health.calls,
        faults_total: health.faults_total,
        consecutive_faults: health.consecutive_faults,
        peak_memory_bytes: health.peak_memory_bytes,
        last_error: health.last_error,
        reload_error: entry.reload_error.clone(),
    }
}

/// Runs registry work (compiles, file I/O) off the async reactor.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
    }
}

#[async_trait]
impl Plugins for Registry {
    async fn list(&self) -> Vec<PluginInfo> {
        self.list_info()
    }

    async fn get(&self, id: &str) -> Option<PluginInfo> {
        self.info(id)
    }

    async fn install(&self, manifest: String, component: Vec<u8>) -> Result<(PluginInfo, bool), PluginPortError> {
        let registry = self.clone();
        blocking(move || registry.install_blocking(&manifest, &component)).await
    }

    async fn reload(&self, id: &str) -> Result<PluginInfo, PluginPortError> {
        let registry = self.clone();
        let id = id.to_owned();
        blocking(move || registry.reload_blocking(&id)).await
    }

    /// Plugin calls never run on an async worker: WASI's blocking shims would try to start a
    /// runtime inside the runtime.
    async fn decode(&self, uplink: SensorUplink) -> Result<SensorReading, PluginPortError> {
        let registry = self.clone();
        blocking(move || registry.decode_blocking(&uplink)).await
    }

    async fn decode_many(&self, uplinks: Vec<SensorUplink>) -> Vec<Result<SensorReading, PluginPortError>> {
        let registry = self.clone();
        blocking(move || uplinks.iter().map(|uplink| registry.decode_blocking(uplink)).collect()).await
    }

    fn chat_channel(&self, id: &str) -> Option<Arc<dyn berth_kernel::chat::ChatChannel>> {
        match self.plugin(id)? {
            LoadedPlugin::Chat(plugin) => Some(Arc::new(crate::chat::PluginChannel::new(id, plugin))),
            _ => None,
        }
    }
}
