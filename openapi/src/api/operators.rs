//! `/v1/operators`: tenants, managed by platform admins.

use berth_kernel::ids::OperatorId;
use berth_kernel::operator::OperatorInput;
use poem::web::Data;
use poem_openapi::OpenApi;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use uuid::Uuid;

use super::{ApiTags, Created, page_request};
use crate::dto::{ApiKeyCreate, ApiKeyCreated, ApiKeyPage, OperatorCreate, OperatorPage, OperatorView};
use crate::problem::ApiResult;
use crate::state::{AppState, BerthAuth};

pub struct OperatorsApi;

#[OpenApi(tag = "ApiTags::Operators")]
impl OperatorsApi {
    /// Create an operator (platform admin).
    #[oai(path = "/v1/operators", method = "post", operation_id = "createOperator")]
    async fn create(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        body: Json<OperatorCreate>,
    ) -> ApiResult<Created<OperatorView>> {
        let input = OperatorInput { name: body.0.name, slug: body.0.slug };
        let operator = state.kernel.create_operator(&auth.0, input).await?;
        Ok(Created::Created(Json(operator.into())))
    }

    /// List operators (platform admin).
    #[oai(path = "/v1/operators", method = "get", operation_id = "listOperators")]
    async fn list(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        after: Query<Option<String>>,
        limit: Query<Option<u32>>,
    ) -> ApiResult<Json<OperatorPage>> {
        let page = state.kernel.list_operators(&auth.0, page_request(after.0, limit.0)?).await?;
        Ok(Json(page.into()))
    }

    /// Get an operator (platform admin, or the operator's own keys).
    #[oai(path = "/v1/operators/:operator_id", method = "get", operation_id = "getOperator")]
    async fn get(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        operator_id: Path<Uuid>,
    ) -> ApiResult<Json<OperatorView>> {
        let operator = state.kernel.get_operator(&auth.0, OperatorId::from_uuid(operator_id.0)).await?;
        Ok(Json(operator.into()))
    }

    /// Create a key for an operator (platform admin). The token is shown once.
    #[oai(path = "/v1/operators/:operator_id/keys", method = "post", operation_id = "createOperatorKey")]
    async fn create_key(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        operator_id: Path<Uuid>,
        body: Json<ApiKeyCreate>,
    ) -> ApiResult<Created<ApiKeyCreated>> {
        require_platform_admin(&auth)?;
        let operator_id = Some(OperatorId::from_uuid(operator_id.0));
        let created = state.kernel.create_api_key(&auth.0, operator_id, body.0.into()).await?;
        Ok(Created::Created(Json(created.into())))
    }

    /// List an operator's keys (platform admin).
    #[oai(path = "/v1/operators/:operator_id/keys", method = "get", operation_id = "listOperatorKeys")]
    async fn list_keys(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        operator_id: Path<Uuid>,
        after: Query<Option<String>>,
        limit: Query<Option<u32>>,
    ) -> ApiResult<Json<ApiKeyPage>> {
        let page_request = page_request(after.0, limit.0)?;
        require_platform_admin(&auth)?;
        let page =
            state.kernel.list_api_keys(&auth.0, Some(OperatorId::from_uuid(operator_id.0)), page_request).await?;
        Ok(Json(page.into()))
    }
}

/// Keys under `/v1/operators/{id}` are managed by platform admins; operators use `/v1/keys`.
fn require_platform_admin(auth: &BerthAuth) -> ApiResult<()> {
    match auth.0 {
        berth_kernel::auth::Principal::PlatformAdmin { .. } => Ok(()),
        _ => Err(berth_kernel::KernelError::Forbidden(
            "this endpoint needs a platform admin key; operators manage keys under /v1/keys".into(),
        )
        .into()),
    }
}
