//! `/v1/devices`: sensors and their binding to spaces.

use berth_kernel::device::DeviceInput;
use berth_kernel::ids::{DeviceId, SpaceId};
use berth_kernel::ports::DeviceFilter;
use poem::web::Data;
use poem_openapi::OpenApi;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use uuid::Uuid;

use super::{ApiTags, Created, Deleted, page_request};
use crate::dto::{DeviceBinding, DeviceCreate, DevicePage, DeviceView};
use crate::problem::ApiResult;
use crate::state::{AppState, BerthAuth};

pub struct DevicesApi;

#[OpenApi(tag = "ApiTags::Devices")]
impl DevicesApi {
    /// Register a device, optionally bound to a space.
    #[oai(path = "/v1/devices", method = "post", operation_id = "registerDevice")]
    async fn register(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        body: Json<DeviceCreate>,
    ) -> ApiResult<Created<DeviceView>> {
        let body = body.0;
        let input = DeviceInput {
            external_id: body.external_id,
            vendor: body.vendor,
            model: body.model,
            name: body.name,
            space_id: body.space_id.map(SpaceId::from_uuid),
        };
        let device = state.kernel.register_device(&auth.0, input).await?;
        Ok(Created::Created(Json(device.into())))
    }

    /// List devices.
    #[oai(path = "/v1/devices", method = "get", operation_id = "listDevices")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        /// Only the device bound to this space.
        space_id: Query<Option<Uuid>>,
        /// Only devices of this vendor.
        vendor: Query<Option<String>>,
        /// `true`: only bound devices; `false`: only unbound ones.
        bound: Query<Option<bool>>,
        after: Query<Option<String>>,
        limit: Query<Option<u32>>,
    ) -> ApiResult<Json<DevicePage>> {
        let filter = DeviceFilter { space_id: space_id.0.map(SpaceId::from_uuid), vendor: vendor.0, bound: bound.0 };
        let page = state.kernel.list_devices(&auth.0, filter, page_request(after.0, limit.0)?).await?;
        Ok(Json(page.into()))
    }

    /// Get a device.
    #[oai(path = "/v1/devices/:device_id", method = "get", operation_id = "getDevice")]
    async fn get(&self, state: Data<&AppState>, auth: BerthAuth, device_id: Path<Uuid>) -> ApiResult<Json<DeviceView>> {
        let device = state.kernel.get_device(&auth.0, DeviceId::from_uuid(device_id.0)).await?;
        Ok(Json(device.into()))
    }

    /// Bind a device to a space, or unbind it with `{"space_id": null}`. A space takes one device.
    #[oai(path = "/v1/devices/:device_id/space", method = "put", operation_id = "bindDevice")]
    async fn bind(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        device_id: Path<Uuid>,
        body: Json<DeviceBinding>,
    ) -> ApiResult<Json<DeviceView>> {
        let device = state
            .kernel
            .bind_device(&auth.0, DeviceId::from_uuid(device_id.0), body.0.space_id.map(SpaceId::from_uuid))
            .await?;
        Ok(Json(device.into()))
    }

    /// Delete a device.
    #[oai(path = "/v1/devices/:device_id", method = "delete", operation_id = "deleteDevice")]
    async fn delete(&self, state: Data<&AppState>, auth: BerthAuth, device_id: Path<Uuid>) -> ApiResult<Deleted> {
        state.kernel.delete_device(&auth.0, DeviceId::from_uuid(device_id.0)).await?;
        Ok(Deleted::NoContent)
    }
}
