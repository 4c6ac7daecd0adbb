//! `/v1/bookings`: a driver turns a quote into a hold on a space, pays, arrives, leaves; cancels or
//! extends under the operator's rules; every charge and refund is on the receipt.

use berth_kernel::booking::{Booking, BookingInput};
use berth_kernel::ids::{BookingId, QuoteId};
use berth_kernel::payment::Payment;
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
    /// A payment-method token of the provider (Stripe: `pm_...`). Without one, the booking's
    /// payment answers with `payment.action_url`, a page where the driver pays.
    #[oai(validator(min_length = 1, max_length = 255))]
    pub payment_method: Option<String>,
    /// A payment provider to use (`stripe`, `paypal`); by default the primary, or the next one
    /// while it is down.
    #[oai(validator(min_length = 1, max_length = 64))]
    pub provider: Option<String>,
}

/// Where one payment of a booking stands.
#[derive(Debug, Object)]
pub struct PaymentView {
    pub id: Uuid,
    /// `booking`, `extension` or `overstay`.
    pub purpose: String,
    /// `pending`, `requires_action`, `authorized`, `captured`, `partially_refunded`, `refunded`,
    /// `voided`, `failed`.
    pub status: String,
    #[oai(skip_serializing_if_is_none)]
    pub provider: Option<String>,
    pub amount_minor: i64,
    pub captured_minor: i64,
    pub refunded_minor: i64,
    pub currency: String,
    /// A page the driver must visit to pay (checkout, approval).
    #[oai(skip_serializing_if_is_none)]
    pub action_url: Option<String>,
    /// Why the payment failed.
    #[oai(skip_serializing_if_is_none)]
    pub failure: Option<String>,
}

impl From<Payment> for PaymentView {
    fn from(payment: Payment) -> Self {
        Self {
            id: payment.id.as_uuid(),
            purpose: payment.purpose.as_str().to_owned(),
            status: payment.status.as_str().to_owned(),
            provider: payment.provider,
            amount_minor: payment.amount_minor,
            captured_minor: payment.captured_minor,
            refunded_minor: payment.refunded_minor,
            currency: payment.currency,
            action_url: payment.action_url,
            failure: payment.failure,
        }
    }
}

#[derive(Debug, Object)]
pub struct BookingCancel {
    /// Why, in words the other side reads (at most 500 characters).
    #[oai(validator(max_length = 500))]
    pub reason: Option<String>,
}

#[derive(Debug, Object)]
pub struct BookingExtend {
    /// The new end, after the current one.
    pub end: DateTime<Utc>,
}

#[derive(Debug, Object)]
pub struct ReceiptLineView {
    /// `charge` or `refund`.
    pub kind: String,
    pub description: String,
    pub amount_minor: i64,
    pub currency: String,
    pub provider: String,
    /// The provider's id of the payment.
    pub provider_ref: String,
    pub at: DateTime<Utc>,
}

impl From<berth_kernel::payment::ReceiptLine> for ReceiptLineView {
    fn from(line: berth_kernel::payment::ReceiptLine) -> Self {
        Self {
            kind: line.kind.as_str().to_owned(),
            description: line.description,
            amount_minor: line.amount_minor,
            currency: line.currency,
            provider: line.provider,
            provider_ref: line.provider_ref,
            at: line.at,
        }
    }
}

#[derive(Debug, Object)]
pub struct ReceiptView {
    pub booking_id: Uuid,
    pub currency: String,
    /// Every charge and refund, oldest first.
    pub lines: Vec<ReceiptLineView>,
    pub charged_minor: i64,
    pub refunded_minor: i64,
    /// What the driver paid in the end.
    pub net_minor: i64,
    /// Held on the driver's payment method, not yet taken or released.
    pub held_minor: i64,
    pub payments: Vec<PaymentView>,
}

#[derive(Debug, Object)]
pub struct BookingView {
    pub id: Uuid,
    pub site_id: Uuid,
    /// The space held: the quoted one, or the first free fitting space of the quoted site.
    pub space_id: Uuid,
    #[oai(skip_serializing_if_is_none)]
    pub vehicle_id: Option<Uuid>,
    /// The vehicle's plate as booked; erased after the retention period once the booking is
    /// over.
    #[oai(skip_serializing_if_is_none)]
    pub plate: Option<String>,
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
    #[oai(skip_serializing_if_is_none)]
    pub arrived_at: Option<DateTime<Utc>>,
    #[oai(skip_serializing_if_is_none)]
    pub departed_at: Option<DateTime<Utc>>,
    #[oai(skip_serializing_if_is_none)]
    pub cancel_reason: Option<String>,
    /// The booking's payments (in answers about one booking; lists leave them out).
    #[oai(skip_serializing_if_is_empty)]
    pub payments: Vec<PaymentView>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Booking> for BookingView {
    fn from(booking: Booking) -> Self {
        Self {
            id: booking.id.as_uuid(),
            site_id: booking.site_id.as_uuid(),
            space_id: booking.space_id.as_uuid(),
            vehicle_id: booking.vehicle_id.map(|vehicle| vehicle.as_uuid()),
            plate: booking.plate,
            quote_id: booking.quote_id.as_uuid(),
            start: booking.start,
            end: booking.end,
            status: booking.status.as_str().to_owned(),
            price_minor: booking.price_minor,
            currency: booking.currency,
            hold_expires_at: booking.hold_expires_at,
            arrived_at: booking.arrived_at,
            departed_at: booking.departed_at,
            cancel_reason: booking.cancel_reason,
            payments: Vec::new(),
            created_at: booking.created_at,
            updated_at: booking.updated_at,
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
            payment_method: body.0.payment_method,
            provider: body.0.provider,
        };
        let booking = state.kernel.create_booking(&auth.0, input).await?;
        Ok(Created::Created(Json(with_payments(&state, booking).await?)))
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
        Ok(Json(with_payments(&state, booking).await?))
    }

    /// Cancel a booking (its driver, or an operator admin of the site). A driver cancelling a
    /// confirmed booking pays the operator's cancellation fee, taken from the hold; the rest is
    /// released. An unpaid hold, or an operator's cancellation, costs nothing.
    #[oai(path = "/v1/bookings/:booking_id/cancel", method = "post", operation_id = "cancelBooking")]
    async fn cancel(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        booking_id: Path<Uuid>,
        body: Json<BookingCancel>,
    ) -> ApiResult<Json<BookingView>> {
        let id = BookingId::from_uuid(booking_id.0);
        let booking = state.kernel.cancel_booking(&auth.0, id, body.0.reason).await?;
        Ok(Json(with_payments(&state, booking).await?))
    }

    /// Extend a confirmed or active booking. The operator's rules decide whether and at what
    /// price (by default the longer stay's price minus what was paid); the difference is a
    /// payment of its own. 409 when the space is booked by someone else before the new end.
    #[oai(path = "/v1/bookings/:booking_id/extend", method = "post", operation_id = "extendBooking")]
    async fn extend(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        booking_id: Path<Uuid>,
        body: Json<BookingExtend>,
    ) -> ApiResult<Json<BookingView>> {
        let id = BookingId::from_uuid(booking_id.0);
        let booking = state.kernel.extend_booking(&auth.0, id, body.0.end).await?;
        Ok(Json(with_payments(&state, booking).await?))
    }

    /// Check in: the vehicle arrived (from 15 minutes before the start). A space sensor that
    /// reports the space occupied does the same.
    #[oai(path = "/v1/bookings/:booking_id/check-in", method = "post", operation_id = "checkInBooking")]
    async fn check_in(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        booking_id: Path<Uuid>,
    ) -> ApiResult<Json<BookingView>> {
        let booking = state.kernel.check_in(&auth.0, BookingId::from_uuid(booking_id.0)).await?;
        Ok(Json(with_payments(&state, booking).await?))
    }

    /// Check out: the vehicle left. What was authorized is captured; staying past the end is
    /// charged under the operator's overstay rule.
    #[oai(path = "/v1/bookings/:booking_id/check-out", method = "post", operation_id = "checkOutBooking")]
    async fn check_out(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        booking_id: Path<Uuid>,
    ) -> ApiResult<Json<BookingView>> {
        let booking = state.kernel.check_out(&auth.0, BookingId::from_uuid(booking_id.0)).await?;
        Ok(Json(with_payments(&state, booking).await?))
    }

    /// The receipt: every charge and refund of the booking, with its payments.
    #[oai(path = "/v1/bookings/:booking_id/receipt", method = "get", operation_id = "getBookingReceipt")]
    async fn receipt(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        booking_id: Path<Uuid>,
    ) -> ApiResult<Json<ReceiptView>> {
        let (receipt, payments) = state.kernel.booking_receipt(&auth.0, BookingId::from_uuid(booking_id.0)).await?;
        Ok(Json(ReceiptView {
            booking_id: receipt.booking_id.as_uuid(),
            currency: receipt.currency,
            lines: receipt.lines.into_iter().map(Into::into).collect(),
            charged_minor: receipt.charged_minor,
            refunded_minor: receipt.refunded_minor,
            net_minor: receipt.net_minor,
            held_minor: receipt.held_minor,
            payments: payments.into_iter().map(Into::into).collect(),
        }))
    }
}

impl BookingView {
    /// A booking with its payments.
    pub fn with_payments(booking: Booking, payments: Vec<Payment>) -> Self {
        Self { payments: payments.into_iter().map(Into::into).collect(), ..Self::from(booking) }
    }
}

/// A booking the caller may see, with its payments.
async fn with_payments(state: &AppState, booking: Booking) -> ApiResult<BookingView> {
    let payments = state.kernel.payments_of(&booking).await?;
    Ok(BookingView::with_payments(booking, payments))
}
