//! `/v1/drivers`: registration, login, the driver's own profile and vehicles.

use berth_kernel::ids::VehicleId;
use poem::web::Data;
use poem_openapi::OpenApi;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use uuid::Uuid;

use super::bookings::{BookingView, ReceiptLineView};
use super::{ApiTags, Created, Deleted, page_request};
use crate::dto::{AccessTokenView, DriverLogin, DriverRegister, DriverView, VehicleCreate, VehiclePage, VehicleView};
use crate::problem::ApiResult;
use crate::state::{AppState, BerthAuth};

pub struct DriversApi;

#[OpenApi(tag = "ApiTags::Drivers")]
impl DriversApi {
    /// Register a driver account (no credentials needed).
    #[oai(path = "/v1/drivers", method = "post", operation_id = "registerDriver")]
    async fn register(&self, state: Data<&AppState>, body: Json<DriverRegister>) -> ApiResult<Created<DriverView>> {
        let body = body.0;
        let driver = state.kernel.register_driver(&body.email, &body.password, body.display_name.as_deref()).await?;
        Ok(Created::Created(Json(driver.into())))
    }

    /// Log in with e-mail and password; returns a bearer token.
    #[oai(path = "/v1/drivers/login", method = "post", operation_id = "loginDriver")]
    async fn login(&self, state: Data<&AppState>, body: Json<DriverLogin>) -> ApiResult<Json<AccessTokenView>> {
        let driver = state.kernel.login_driver(&body.0.email, &body.0.password).await?;
        let token = state.tokens.issue(driver.id);
        Ok(Json(AccessTokenView {
            access_token: token.token,
            token_type: "Bearer".to_owned(),
            expires_in: token.expires_in_secs,
            driver: driver.into(),
        }))
    }

    /// The calling driver.
    #[oai(path = "/v1/drivers/me", method = "get", operation_id = "getMe")]
    async fn me(&self, state: Data<&AppState>, auth: BerthAuth) -> ApiResult<Json<DriverView>> {
        Ok(Json(state.kernel.get_driver(&auth.0).await?.into()))
    }

    /// Everything berth keeps about the calling driver: profile, vehicles, every booking with
    /// its payments and receipt, and every chat conversation (a data export).
    #[oai(path = "/v1/drivers/me/data", method = "get", operation_id = "exportMyData")]
    async fn export(&self, state: Data<&AppState>, auth: BerthAuth) -> ApiResult<Json<DriverDataView>> {
        let export = state.kernel.export_driver_data(&auth.0).await?;
        Ok(Json(DriverDataView {
            driver: export.driver.into(),
            vehicles: export.vehicles.into_iter().map(Into::into).collect(),
            bookings: export
                .bookings
                .into_iter()
                .map(|record| BookingRecordView {
                    booking: BookingView::with_payments(record.booking, record.payments),
                    receipt: record.receipt.into_iter().map(ReceiptLineView::from).collect(),
                })
                .collect(),
            conversations: export
                .conversations
                .into_iter()
                .map(|(conversation, messages)| ConversationRecordView {
                    conversation_id: conversation.id.to_string(),
                    channel: conversation.channel,
                    handoff: conversation.handoff,
                    created_at: conversation.created_at,
                    messages: messages.into_iter().map(crate::api::chat::message_dto).collect(),
                })
                .collect(),
            exported_at: export.exported_at,
        }))
    }

    /// Erase the calling driver's data: the account, vehicles, and the plates and payment
    /// methods on their bookings. Operators keep the amounts and dates of past bookings for their
    /// books, no longer linked to a person. 409 while a booking is pending, confirmed or active.
    #[oai(path = "/v1/drivers/me/data", method = "delete", operation_id = "eraseMyData")]
    async fn erase(&self, state: Data<&AppState>, auth: BerthAuth) -> ApiResult<Deleted> {
        state.kernel.erase_driver_data(&auth.0).await?;
        Ok(Deleted::NoContent)
    }

    /// Add a vehicle to the calling driver.
    #[oai(path = "/v1/drivers/me/vehicles", method = "post", operation_id = "addVehicle")]
    async fn add_vehicle(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        body: Json<VehicleCreate>,
    ) -> ApiResult<Created<VehicleView>> {
        let body = body.0;
        let vehicle = state
            .kernel
            .add_vehicle(&auth.0, &body.plate, body.vehicle_type.map(Into::into), body.label.as_deref())
            .await?;
        Ok(Created::Created(Json(vehicle.into())))
    }

    /// List the calling driver's vehicles.
    #[oai(path = "/v1/drivers/me/vehicles", method = "get", operation_id = "listVehicles")]
    async fn list_vehicles(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        after: Query<Option<String>>,
        limit: Query<Option<u32>>,
    ) -> ApiResult<Json<VehiclePage>> {
        let page = state.kernel.list_vehicles(&auth.0, page_request(after.0, limit.0)?).await?;
        Ok(Json(page.into()))
    }

    /// Get one of the calling driver's vehicles.
    #[oai(path = "/v1/drivers/me/vehicles/:vehicle_id", method = "get", operation_id = "getVehicle")]
    async fn get_vehicle(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        vehicle_id: Path<Uuid>,
    ) -> ApiResult<Json<VehicleView>> {
        Ok(Json(state.kernel.get_vehicle(&auth.0, VehicleId::from_uuid(vehicle_id.0)).await?.into()))
    }

    /// Remove one of the calling driver's vehicles.
    #[oai(path = "/v1/drivers/me/vehicles/:vehicle_id", method = "delete", operation_id = "deleteVehicle")]
    async fn delete_vehicle(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        vehicle_id: Path<Uuid>,
    ) -> ApiResult<Deleted> {
        state.kernel.delete_vehicle(&auth.0, VehicleId::from_uuid(vehicle_id.0)).await?;
        Ok(Deleted::NoContent)
    }
}

/// A booking with its receipt lines, in a data export.
#[derive(Debug, poem_openapi::Object)]
pub struct BookingRecordView {
    pub booking: BookingView,
    pub receipt: Vec<ReceiptLineView>,
}

/// Everything berth keeps about a driver.
#[derive(Debug, poem_openapi::Object)]
pub struct DriverDataView {
    pub driver: crate::dto::DriverView,
    pub vehicles: Vec<VehicleView>,
    pub bookings: Vec<BookingRecordView>,
    /// Chat conversations (web, Telegram, …) with every message in and out.
    pub conversations: Vec<ConversationRecordView>,
    pub exported_at: chrono::DateTime<chrono::Utc>,
}

/// One chat conversation in a data export.
#[derive(Debug, poem_openapi::Object)]
pub struct ConversationRecordView {
    pub conversation_id: String,
    /// `web`, `telegram` or `whatsapp`.
    pub channel: String,
    pub handoff: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub messages: Vec<crate::api::chat::ChatMessageDto>,
}
