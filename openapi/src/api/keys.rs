//! `/v1/keys`: the caller's own keys. Operator admins manage their operator's keys; platform
//! admins manage platform keys here (and operators' keys under `/v1/operators/{id}/keys`).

use berth_kernel::ids::ApiKeyId;
use poem::web::Data;
use poem_openapi::OpenApi;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use uuid::Uuid;

use super::{ApiTags, Created, page_request};
use crate::dto::{ApiKeyCreate, ApiKeyCreated, ApiKeyPage, ApiKeyView};
use crate::problem::ApiResult;
use crate::state::{AppState, BerthAuth};

pub struct KeysApi;

#[OpenApi(tag = "ApiTags::Keys")]
impl KeysApi {
    /// Create a key for the caller's operator (operator admin) or a platform key (platform admin).
    #[oai(path = "/v1/keys", method = "post", operation_id = "createKey")]
    async fn create(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        body: Json<ApiKeyCreate>,
    ) -> ApiResult<Created<ApiKeyCreated>> {
        let created = state.kernel.create_api_key(&auth.0, None, body.0.into()).await?;
        Ok(Created::Created(Json(created.into())))
    }

    /// List the caller's operator's keys (or platform keys, for a platform admin).
    #[oai(path = "/v1/keys", method = "get", operation_id = "listKeys")]
    async fn list(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        after: Query<Option<String>>,
        limit: Query<Option<u32>>,
    ) -> ApiResult<Json<ApiKeyPage>> {
        let page = state.kernel.list_api_keys(&auth.0, None, page_request(after.0, limit.0)?).await?;
        Ok(Json(page.into()))
    }

    /// Revoke a key. Takes effect on the next request; revoking twice is harmless.
    #[oai(path = "/v1/keys/:key_id", method = "delete", operation_id = "revokeKey")]
    async fn revoke(&self, state: Data<&AppState>, auth: BerthAuth, key_id: Path<Uuid>) -> ApiResult<Json<ApiKeyView>> {
        let key = state.kernel.revoke_api_key(&auth.0, ApiKeyId::from_uuid(key_id.0)).await?;
        Ok(Json(key.into()))
    }
}
