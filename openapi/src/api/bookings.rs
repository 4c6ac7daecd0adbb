//! `/v1/bookings`: a driver turns a quote into a hold on a space.

use berth_kernel::booking::{Booking, BookingInput};
use berth_kernel::ids::{BookingId, QuoteId};
use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use uuid::Uuid;

use super::{ApiTags, Created, page_request};
use crate::problem::ApiResult;
use crate::state::{AppState, BerthAuth};

pub struct BookingsApi;

#[derive(Debug, Object)]
pub struct BookingCreate {
    /// An unexpired quote of the calling driver; the booking keeps its window and price.
    pub quote_id: Uuid,
    /// One of the driver's vehicles, of the quoted type.
    pub vehicle_id: Option<Uuid>,
}

#[derive(Debug, Object)]
pub struct BookingView {
    pub id: Uuid,
    pub site_id: Uuid,
    /// The space held: the quoted one, or the first free fitting space of the quoted site.
    pub space_id: Uuid,
    #[oai(skip_serializing_if_is_none)]
    pub vehicle_id: Option<Uuid>,
    pub quote_id: Uuid,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// `pending_payment`, `confirmed`, `active`, `completed`, `cancelled`, `expired`, `no_show`.
    pub status: String,
    pub price_minor: i64,
    pub currency: String,
    /// Until then the space is held for payment.
    #[oai(skip_serializing_if_is_none)]
    pub hold_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl From<Booking> for BookingView {
    fn from(booking: Booking) -> Self {
        Self {
            id: booking.id.as_uuid(),
            site_id: booking.site_id.as_uuid(),
            space_id: booking.space_id.as_uuid(),
            vehicle_id: booking.vehicle_id.map(|vehicle| vehicle.as_uuid()),
            quote_id: booking.quote_id.as_uuid(),
            start: booking.start,
            end: booking.end,
            status: booking.status.as_str().to_owned(),
            price_minor: booking.price_minor,
            currency: booking.currency,
            hold_expires_at: booking.hold_expires_at,
            created_at: booking.created_at,
        }
    }
}

page_type!(BookingPage of BookingView);

#[OpenApi(tag = "ApiTags::Bookings")]
impl BookingsApi {
    /// Book a quoted stay (drivers). The space is held until `hold_expires_at`. When a live booking
    /// of the space overlaps the window, the answer is 409, however many requests race.
    #[oai(path = "/v1/bookings", method = "post", operation_id = "createBooking")]
    async fn create(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        body: Json<BookingCreate>,
    ) -> ApiResult<Created<BookingView>> {
        let input = BookingInput {
            quote_id: QuoteId::from_uuid(body.0.quote_id),
            vehicle_id: body.0.vehicle_id.map(Into::into),
        };
        let booking = state.kernel.create_booking(&auth.0, input).await?;
        Ok(Created::Created(Json(booking.into())))
    }

    /// The caller's bookings: a driver's own, or an operator's sites', oldest first.
    #[oai(path = "/v1/bookings", method = "get", operation_id = "listBookings")]
    async fn list(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        /// Cursor from the previous page's `next_cursor`.
        after: Query<Option<String>>,
        /// Page size, 1-1000 (default 100).
        limit: Query<Option<u32>>,
    ) -> ApiResult<Json<BookingPage>> {
        let page = state.kernel.list_bookings(&auth.0, page_request(after.0, limit.0)?).await?;
        Ok(Json(page.into()))
    }

    /// Get a booking (its driver, or the site's operator).
    #[oai(path = "/v1/bookings/:booking_id", method = "get", operation_id = "getBooking")]
    async fn get(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        booking_id: Path<Uuid>,
    ) -> ApiResult<Json<BookingView>> {
        let booking = state.kernel.get_booking(&auth.0, BookingId::from_uuid(booking_id.0)).await?;
        Ok(Json(booking.into()))
    }
}
