//! `/v1/sites`: the caller's operator's lots, garages and zones.

use berth_kernel::ids::SiteId;
use berth_kernel::ports::SiteFilter;
use poem::web::Data;
use poem_openapi::OpenApi;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use uuid::Uuid;

use super::{ApiTags, Created, Deleted, page_request};
use crate::dto::{SiteCreate, SiteKindDto, SitePage, SiteUpdate, SiteView};
use crate::problem::ApiResult;
use crate::state::{AppState, BerthAuth};

pub struct SitesApi;

#[OpenApi(tag = "ApiTags::Sites")]
impl SitesApi {
    /// Create a site.
    #[oai(path = "/v1/sites", method = "post", operation_id = "createSite")]
    async fn create(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        body: Json<SiteCreate>,
    ) -> ApiResult<Created<SiteView>> {
        let site = state.kernel.create_site(&auth.0, body.0.into()).await?;
        Ok(Created::Created(Json(site.into())))
    }

    /// List sites, oldest first.
    #[oai(path = "/v1/sites", method = "get", operation_id = "listSites")]
    async fn list(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        /// Only sites of this kind.
        kind: Query<Option<SiteKindDto>>,
        /// Cursor from the previous page's `next_cursor`.
        after: Query<Option<String>>,
        /// Page size, 1-1000 (default 100).
        limit: Query<Option<u32>>,
    ) -> ApiResult<Json<SitePage>> {
        let filter = SiteFilter { kind: kind.0.map(Into::into) };
        let page = state.kernel.list_sites(&auth.0, filter, page_request(after.0, limit.0)?).await?;
        Ok(Json(page.into()))
    }

    /// Get a site.
    #[oai(path = "/v1/sites/:site_id", method = "get", operation_id = "getSite")]
    async fn get(&self, state: Data<&AppState>, auth: BerthAuth, site_id: Path<Uuid>) -> ApiResult<Json<SiteView>> {
        let site = state.kernel.get_site(&auth.0, SiteId::from_uuid(site_id.0)).await?;
        Ok(Json(site.into()))
    }

    /// Update some fields of a site.
    #[oai(path = "/v1/sites/:site_id", method = "patch", operation_id = "updateSite")]
    async fn update(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        site_id: Path<Uuid>,
        body: Json<SiteUpdate>,
    ) -> ApiResult<Json<SiteView>> {
        let site = state.kernel.update_site(&auth.0, SiteId::from_uuid(site_id.0), body.0.into()).await?;
        Ok(Json(site.into()))
    }

    /// Delete a site that has no spaces left (409 otherwise).
    #[oai(path = "/v1/sites/:site_id", method = "delete", operation_id = "deleteSite")]
    async fn delete(&self, state: Data<&AppState>, auth: BerthAuth, site_id: Path<Uuid>) -> ApiResult<Deleted> {
        state.kernel.delete_site(&auth.0, SiteId::from_uuid(site_id.0)).await?;
        Ok(Deleted::NoContent)
    }
}
