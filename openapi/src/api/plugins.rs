//! `/v1/plugins`: the WebAssembly plugins the platform runs (platform admin): what is loaded,
//! its health, uploads of new versions, and reloads.

use berth_kernel::plugin::{PluginInfo, PluginSource, PluginStatus, PluginWorld};
use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::types::multipart::Upload;
use poem_openapi::{ApiResponse, Multipart, Object, OpenApi};

use super::ApiTags;
use crate::problem::{ApiError, ApiResult};
use crate::state::{AppState, BerthAuth};

mirror_enum!(
    /// The contract a plugin implements.
    PluginWorldDto <=> PluginWorld { SensorDecoder, PaymentProvider, ChatChannel }
);
mirror_enum!(
    /// `active` takes calls; `quarantined` refuses them after too many consecutive faults until
    /// reloaded; `failed` never loaded (see `reload_error`).
    PluginStatusDto <=> PluginStatus { Active, Quarantined, Failed }
);
mirror_enum!(
    /// `bundled` ships with berth; `installed` was uploaded or placed in the plugins directory.
    PluginSourceDto <=> PluginSource { Bundled, Installed }
);

/// A plugin, the version that runs, and its health.
#[derive(Debug, Clone, Object)]
pub struct PluginView {
    /// The manifest's id (`nwave`).
    pub id: String,
    pub status: PluginStatusDto,
    pub source: PluginSourceDto,
    #[oai(skip_serializing_if_is_none)]
    pub version: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub world: Option<PluginWorldDto>,
    #[oai(skip_serializing_if_is_none)]
    pub vendor: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub description: Option<String>,
    /// Hex SHA-256 of the running component.
    #[oai(skip_serializing_if_is_none)]
    pub sha256: Option<String>,
    /// Device models a sensor decoder claims.
    pub models: Vec<String>,
    /// Hosts the plugin may call.
    pub http_hosts: Vec<String>,
    pub memory_limit_bytes: u64,
    pub timeout_ms: u64,
    #[oai(skip_serializing_if_is_none)]
    pub loaded_at: Option<DateTime<Utc>>,
    /// Calls since this version loaded.
    pub calls: u64,
    /// Faults (traps, timeouts, memory-limit hits, invalid output) since this version loaded.
    pub faults_total: u64,
    pub consecutive_faults: u32,
    /// Largest memory an instance of this version used.
    pub peak_memory_bytes: u64,
    /// The latest fault.
    #[oai(skip_serializing_if_is_none)]
    pub last_error: Option<String>,
    /// Why the latest load or reload failed; the previous version, if any, keeps running.
    #[oai(skip_serializing_if_is_none)]
    pub reload_error: Option<String>,
}

impl From<PluginInfo> for PluginView {
    fn from(info: PluginInfo) -> Self {
        Self {
            id: info.id,
            status: info.status.into(),
            source: info.source.into(),
            version: info.version,
            world: info.world.map(Into::into),
            vendor: info.vendor,
            description: info.description,
            sha256: info.sha256,
            models: info.models,
            http_hosts: info.http_hosts,
            memory_limit_bytes: info.memory_limit_bytes,
            timeout_ms: info.timeout_ms,
            loaded_at: info.loaded_at,
            calls: info.calls,
            faults_total: info.faults_total,
            consecutive_faults: info.consecutive_faults,
            peak_memory_bytes: info.peak_memory_bytes,
            last_error: info.last_error,
            reload_error: info.reload_error,
        }
    }
}

#[derive(Debug, Clone, Object)]
pub struct PluginList {
    pub items: Vec<PluginView>,
}

/// A plugin upload: its manifest and its component.
#[derive(Debug, Multipart)]
pub struct PluginUpload {
    /// The `plugin.toml` text.
    pub manifest: String,
    /// The WebAssembly component (`.wasm`).
    pub component: Upload,
}

#[derive(ApiResponse)]
pub enum Installed {
    /// A new plugin.
    #[oai(status = 201)]
    Created(Json<PluginView>),
    /// A new version of an existing plugin; calls in flight finished on the old one.
    #[oai(status = 200)]
    Upgraded(Json<PluginView>),
}

pub struct PluginsApi;

#[OpenApi(tag = "ApiTags::Plugins")]
impl PluginsApi {
    /// List plugins with their status and health (platform admin).
    #[oai(path = "/v1/plugins", method = "get", operation_id = "listPlugins")]
    async fn list(&self, state: Data<&AppState>, auth: BerthAuth) -> ApiResult<Json<PluginList>> {
        let plugins = state.kernel.list_plugins(&auth.0).await?;
        Ok(Json(PluginList { items: plugins.into_iter().map(Into::into).collect() }))
    }

    /// Upload a plugin or a new version of one (platform admin). The component is compiled,
    /// linked against its world and validated before it replaces the running version.
    #[oai(path = "/v1/plugins", method = "post", operation_id = "installPlugin")]
    async fn install(&self, state: Data<&AppState>, auth: BerthAuth, body: PluginUpload) -> ApiResult<Installed> {
        let component = body
            .component
            .into_vec()
            .await
            .map_err(|e| ApiError::bad_request(format!("component: cannot read the upload: {e}")))?;
        if component.is_empty() {
            return Err(ApiError::validation("component", "component: the upload is empty"));
        }
        let (plugin, created) = state.kernel.install_plugin(&auth.0, body.manifest, component).await?;
        Ok(if created { Installed::Created(Json(plugin.into())) } else { Installed::Upgraded(Json(plugin.into())) })
    }

    /// Get one plugin (platform admin).
    #[oai(path = "/v1/plugins/:plugin_id", method = "get", operation_id = "getPlugin")]
    async fn get(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        plugin_id: Path<String>,
    ) -> ApiResult<Json<PluginView>> {
        Ok(Json(state.kernel.get_plugin(&auth.0, &plugin_id.0).await?.into()))
    }

    /// Reload a plugin from its files: picks up changes and lifts a quarantine (platform admin).
    #[oai(path = "/v1/plugins/:plugin_id/reload", method = "post", operation_id = "reloadPlugin")]
    async fn reload(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        plugin_id: Path<String>,
    ) -> ApiResult<Json<PluginView>> {
        Ok(Json(state.kernel.reload_plugin(&auth.0, &plugin_id.0).await?.into()))
    }
}
