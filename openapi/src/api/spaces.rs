//! Spaces: single, bulk JSON (up to 10,000, all or none) and CSV import under a site; listing
//! with filters; get, update, delete.

use berth_kernel::ids::{SiteId, SpaceId};
use berth_kernel::ports::SpaceFilter;
use berth_kernel::space::SpaceInput;
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiRequest, OpenApi};
use uuid::Uuid;

use super::{ApiTags, Created, Deleted, page_request};
use crate::csv_import::parse_spaces_csv;
use crate::dto::{SpaceCreate, SpacePage, SpaceStatusDto, SpaceUpdate, SpaceView, SpacesCreated, VehicleTypeDto};
use crate::problem::ApiResult;
use crate::state::{AppState, BerthAuth};

pub struct SpacesApi;

/// A CSV file with a header row. Columns: `code` (required), `lat`, `lon`, `category`,
/// `vehicle_type`, `ev_charger`, `accessible` (booleans: true/false, yes/no, 1/0).
#[derive(ApiRequest)]
pub enum SpacesCsv {
    #[oai(content_type = "text/csv")]
    Csv(PlainText<String>),
}

#[derive(Debug, Clone, Copy, Default)]
struct SpaceQuery {
    status: Option<SpaceStatusDto>,
    vehicle_type: Option<VehicleTypeDto>,
    ev_charger: Option<bool>,
    accessible: Option<bool>,
}

impl SpaceQuery {
    fn into_filter(self, site_id: Option<Uuid>) -> SpaceFilter {
        SpaceFilter {
            site_id: site_id.map(SiteId::from_uuid),
            status: self.status.map(Into::into),
            vehicle_type: self.vehicle_type.map(Into::into),
            ev_charger: self.ev_charger,
            accessible: self.accessible,
        }
    }
}

impl SpacesApi {
    async fn create_many(
        &self,
        state: &AppState,
        auth: &BerthAuth,
        site_id: Uuid,
        inputs: Vec<SpaceInput>,
    ) -> ApiResult<Created<SpacesCreated>> {
        let spaces = state.kernel.create_spaces(&auth.0, SiteId::from_uuid(site_id), inputs).await?;
        Ok(Created::Created(Json(SpacesCreated {
            created: spaces.len() as u32,
            items: spaces.into_iter().map(Into::into).collect(),
        })))
    }
}

#[OpenApi(tag = "ApiTags::Spaces")]
impl SpacesApi {
    /// Create one space in a site.
    #[oai(path = "/v1/sites/:site_id/spaces", method = "post", operation_id = "createSpace")]
    async fn create(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        site_id: Path<Uuid>,
        body: Json<SpaceCreate>,
    ) -> ApiResult<Created<SpaceView>> {
        let mut spaces = state.kernel.create_spaces(&auth.0, SiteId::from_uuid(site_id.0), vec![body.0.into()]).await?;
        let space = spaces.pop().expect("invariant: create_spaces returns one space per input");
        Ok(Created::Created(Json(space.into())))
    }

    /// Create up to 10,000 spaces in a site in one transaction: all or none. Errors name the
    /// item (`spaces[3].code`).
    #[oai(path = "/v1/sites/:site_id/spaces/bulk", method = "post", operation_id = "createSpacesBulk")]
    async fn create_bulk(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        site_id: Path<Uuid>,
        body: Json<Vec<SpaceCreate>>,
    ) -> ApiResult<Created<SpacesCreated>> {
        let inputs = body.0.into_iter().map(Into::into).collect();
        self.create_many(&state, &auth, site_id.0, inputs).await
    }

    /// Import spaces from CSV (same rules as bulk). Errors name the line and column.
    #[oai(path = "/v1/sites/:site_id/spaces/import", method = "post", operation_id = "importSpacesCsv")]
    async fn import_csv(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        site_id: Path<Uuid>,
        body: SpacesCsv,
    ) -> ApiResult<Created<SpacesCreated>> {
        let SpacesCsv::Csv(PlainText(text)) = body;
        let inputs = parse_spaces_csv(&text)?;
        self.create_many(&state, &auth, site_id.0, inputs).await
    }

    /// List the spaces of a site, in creation order.
    #[oai(path = "/v1/sites/:site_id/spaces", method = "get", operation_id = "listSiteSpaces")]
    #[allow(clippy::too_many_arguments)]
    async fn list_in_site(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        site_id: Path<Uuid>,
        status: Query<Option<SpaceStatusDto>>,
        vehicle_type: Query<Option<VehicleTypeDto>>,
        ev_charger: Query<Option<bool>>,
        accessible: Query<Option<bool>>,
        after: Query<Option<String>>,
        /// Page size, 1-1000 (default 100).
        limit: Query<Option<u32>>,
    ) -> ApiResult<Json<SpacePage>> {
        let query = SpaceQuery {
            status: status.0,
            vehicle_type: vehicle_type.0,
            ev_charger: ev_charger.0,
            accessible: accessible.0,
        };
        let page = state
            .kernel
            .list_spaces(&auth.0, query.into_filter(Some(site_id.0)), page_request(after.0, limit.0)?)
            .await?;
        Ok(Json(page.into()))
    }

    /// List spaces across the operator's sites.
    #[oai(path = "/v1/spaces", method = "get", operation_id = "listSpaces")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        site_id: Query<Option<Uuid>>,
        status: Query<Option<SpaceStatusDto>>,
        vehicle_type: Query<Option<VehicleTypeDto>>,
        ev_charger: Query<Option<bool>>,
        accessible: Query<Option<bool>>,
        after: Query<Option<String>>,
        /// Page size, 1-1000 (default 100).
        limit: Query<Option<u32>>,
    ) -> ApiResult<Json<SpacePage>> {
        let query = SpaceQuery {
            status: status.0,
            vehicle_type: vehicle_type.0,
            ev_charger: ev_charger.0,
            accessible: accessible.0,
        };
        let page =
            state.kernel.list_spaces(&auth.0, query.into_filter(site_id.0), page_request(after.0, limit.0)?).await?;
        Ok(Json(page.into()))
    }

    /// Get a space.
    #[oai(path = "/v1/spaces/:space_id", method = "get", operation_id = "getSpace")]
    async fn get(&self, state: Data<&AppState>, auth: BerthAuth, space_id: Path<Uuid>) -> ApiResult<Json<SpaceView>> {
        let space = state.kernel.get_space(&auth.0, SpaceId::from_uuid(space_id.0)).await?;
        Ok(Json(space.into()))
    }

    /// Update some fields of a space.
    #[oai(path = "/v1/spaces/:space_id", method = "patch", operation_id = "updateSpace")]
    async fn update(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        space_id: Path<Uuid>,
        body: Json<SpaceUpdate>,
    ) -> ApiResult<Json<SpaceView>> {
        let space = state.kernel.update_space(&auth.0, SpaceId::from_uuid(space_id.0), body.0.into()).await?;
        Ok(Json(space.into()))
    }

    /// Delete a space; a device bound to it becomes unbound.
    #[oai(path = "/v1/spaces/:space_id", method = "delete", operation_id = "deleteSpace")]
    async fn delete(&self, state: Data<&AppState>, auth: BerthAuth, space_id: Path<Uuid>) -> ApiResult<Deleted> {
        state.kernel.delete_space(&auth.0, SpaceId::from_uuid(space_id.0)).await?;
        Ok(Deleted::NoContent)
    }
}
