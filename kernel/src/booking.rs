//! Bookings: a driver turns an unexpired quote into a hold on a space for the quoted window, at
//! the quoted price. No two live bookings of one space overlap: the store guarantees it
//! (PostgreSQL: an exclusion constraint; SQLite: one writer checks and inserts in a
//! transaction), so concurrent requests for the same time get exactly one hold.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use crate::auth::{Access, Principal};
use crate::error::{KernelError, KernelResult, StoreError, ValidationError};
use crate::ids::{BookingId, DriverId, OperatorId, PaymentId, QuoteId, SiteId, SpaceId, VehicleId};
use crate::page::{Page, PageRequest};
use crate::payment::{CommandKind, Payment, PaymentCommand, PaymentPurpose, PaymentStatus};
use crate::pricing::Quote;
use crate::service::{Kernel, now, operator_scope};
use crate::space::SpaceStatus;
use crate::vehicle_type::VehicleType;

/// How long a booking waits for its payment before the space is released.
pub const HOLD: Duration = Duration::minutes(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BookingStatus {
    /// Holding the space until `hold_expires_at`, waiting for payment.
    PendingPayment,
    Confirmed,
    /// The vehicle arrived.
    Active,
    Completed,
    Cancelled,
    /// The hold ran out unpaid.
    Expired,
    NoShow,
}

impl BookingStatus {
    pub const ALL: [BookingStatus; 7] = [
        BookingStatus::PendingPayment,
        BookingStatus::Confirmed,
        BookingStatus::Active,
        BookingStatus::Completed,
        BookingStatus::Cancelled,
        BookingStatus::Expired,
        BookingStatus::NoShow,
    ];

    /// States that occupy the space for their window.
    pub const LIVE: [BookingStatus; 3] =
        [BookingStatus::PendingPayment, BookingStatus::Confirmed, BookingStatus::Active];

    /// States of a booking that is over.
    pub const ENDED: [BookingStatus; 4] =
        [BookingStatus::Completed, BookingStatus::Cancelled, BookingStatus::Expired, BookingStatus::NoShow];

    pub fn as_str(self) -> &'static str {
        match self {
            BookingStatus::PendingPayment => "pending_payment",
            BookingStatus::Confirmed => "confirmed",
            BookingStatus::Active => "active",
            BookingStatus::Completed => "completed",
            BookingStatus::Cancelled => "cancelled",
            BookingStatus::Expired => "expired",
            BookingStatus::NoShow => "no_show",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Booking {
    pub id: BookingId,
    pub operator_id: OperatorId,
    pub site_id: SiteId,
    pub space_id: SpaceId,
    pub driver_id: DriverId,
    pub vehicle_id: Option<VehicleId>,
    /// The vehicle's plate as booked, for the operator's enforcement; erased after the
    /// retention period once the booking is over, and when the driver erases their data.
    pub plate: Option<String>,
    pub quote_id: QuoteId,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub status: BookingStatus,
    pub price_minor: i64,
    pub currency: String,
    pub hold_expires_at: Option<DateTime<Utc>>,
    /// When the vehicle arrived (check-in, or the space reported occupied).
    pub arrived_at: Option<DateTime<Utc>>,
    /// When it left.
    pub departed_at: Option<DateTime<Utc>>,
    /// Why it was cancelled, in words for the driver.
    pub cancel_reason: Option<String>,
    /// Bumped by every change; a change written against an older version is refused.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct BookingInput {
    pub quote_id: QuoteId,
    pub vehicle_id: Option<VehicleId>,
    /// A provider token for the driver's payment method (`pm_...`); without one the payment
    /// answers with a page to pay on.
    pub payment_method: Option<String>,
    /// A provider the driver chose; otherwise the primary, or the next while it is down.
    pub provider: Option<String>,
}

impl Kernel {
    /// Books the quoted stay: the quoted space, or the first free fitting space of the quoted
    /// site. A window another live booking overlaps is a conflict.
    pub async fn create_booking(&self, caller: &Principal, input: BookingInput) -> KernelResult<Booking> {
        let Principal::Driver { driver_id } = caller else {
            return Err(KernelError::Forbidden("bookings are made by drivers".into()));
        };
        let at = now();
        let quote = self.quote_terms(*driver_id, input.quote_id).await?;
        if quote.expires_at <= at {
            return Err(KernelError::Conflict(format!(
                "the quote expired at {}; ask for a new one",
                quote.expires_at.to_rfc3339()
            )));
        }
        let mut plate = None;
        if let Some(vehicle_id) = input.vehicle_id {
            let vehicle = self
                .store()
                .get_vehicle(*driver_id, vehicle_id)
                .await?
                .ok_or_else(|| KernelError::not_found("vehicle"))?;
            if vehicle.vehicle_type != quote.vehicle_type {
                return Err(ValidationError::new(
                    "vehicle_id",
                    format!(
                        "the quote is for a {}, this vehicle is a {}",
                        quote.vehicle_type.as_str(),
                        vehicle.vehicle_type.as_str()
                    ),
                )
                .into());
            }
            plate = Some(vehicle.plate.as_str().to_owned());
        }
        if let Some(provider) = &input.provider
            && !self.payments().names().contains(&provider.as_str())
        {
            return Err(ValidationError::new(
                "provider",
                format!("'{provider}' is not a payment provider here; choose one of {:?}", self.payments().names()),
            )
            .into());
        }
        if let Some(method) = &input.payment_method
            && (method.is_empty() || method.len() > 255 || !method.chars().all(|c| c.is_ascii_graphic()))
        {
            return Err(
                ValidationError::new("payment_method", "a provider token of 1 to 255 visible characters").into()
            );
        }
        let candidates: Vec<SpaceId> = match quote.space_id {
            Some(space) => vec![space],
            None => self
                .site_availability_for(quote.operator_id, quote.site_id)
                .await?
                .spaces
                .iter()
                .filter(|(space, shown)| {
                    space.details.vehicle_type == quote.vehicle_type && shown.status != SpaceStatus::Closed
                })
                .map(|(space, _)| space.id)
                .collect(),
        };
        for space_id in &candidates {
            let booking = Booking {
                id: BookingId::new(),
                operator_id: quote.operator_id,
                site_id: quote.site_id,
                space_id: *space_id,
                driver_id: *driver_id,
                vehicle_id: input.vehicle_id,
                plate: plate.clone(),
                quote_id: quote.id,
                start: quote.start,
                end: quote.end,
                status: BookingStatus::PendingPayment,
                price_minor: quote.total_minor,
                currency: quote.currency.clone(),
                hold_expires_at: Some(at + HOLD),
                arrived_at: None,
                departed_at: None,
                cancel_reason: None,
                version: 0,
                created_at: at,
                updated_at: at,
            };
            let payment = Payment {
                id: PaymentId::new(),
                booking_id: booking.id,
                operator_id: booking.operator_id,
                driver_id: booking.driver_id,
                purpose: PaymentPurpose::Booking,
                label: PaymentPurpose::Booking.as_str().to_owned(),
                provider: input.provider.clone(),
                provider_ref: None,
                status: PaymentStatus::Pending,
                amount_minor: booking.price_minor,
                captured_minor: 0,
                refunded_minor: 0,
                currency: booking.currency.clone(),
                payment_method: input.payment_method.clone(),
                action_url: None,
                capture_on_authorize: false,
                failure: None,
                reverts_end_to: None,
                created_at: at,
                updated_at: at,
            };
            // A free stay has nothing to authorize: it is confirmed at once.
            let free = booking.price_minor == 0;
            let (booking, payments, commands) = if free {
                let mut confirmed = booking;
                confirmed.status = BookingStatus::Confirmed;
                confirmed.hold_expires_at = None;
                (confirmed, Vec::new(), Vec::new())
            } else {
                let command =
                    PaymentCommand::new(&payment, CommandKind::Authorize, "authorize", payment.amount_minor, at);
                (booking, vec![payment], vec![command])
            };
            match self.store().insert_booking(&booking, at, &payments, &commands).await {
                Ok(()) => {
                    self.quote_terms.forget(quote.id);
                    metrics::counter!("berth_bookings_created_total").increment(1);
                    // Try the authorization at once, so the answer says how the payment went;
                    // the relay retries it otherwise.
                    if let Some(command) = commands.first() {
                        self.run_command_now(command.id).await;
                        self.await_first_attempt(booking.id, command.id).await;
                        return Ok(self.store().get_booking(booking.id).await?.unwrap_or(booking));
                    }
                    return Ok(booking);
                }
                // Another live booking overlaps on this space: try the next one.
                Err(StoreError::Conflict(reason)) if reason == OVERLAP => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(KernelError::Conflict(match quote.space_id {
            Some(_) => "the space is already booked for an overlapping time".to_owned(),
            None => "no fitting space at this site is free for that window".to_owned(),
        }))
    }

    /// A booking, for its driver or the operator of its site.
    pub async fn get_booking(&self, caller: &Principal, id: BookingId) -> KernelResult<Booking> {
        let booking = self.store().get_booking(id).await?.ok_or_else(|| KernelError::not_found("booking"))?;
        let visible = match caller {
            Principal::Driver { driver_id } => booking.driver_id == *driver_id,
            Principal::PlatformAdmin { .. } => false,
            other => operator_scope(other, Access::Read).is_ok_and(|operator| operator == booking.operator_id),
        };
        if visible { Ok(booking) } else { Err(KernelError::not_found("booking")) }
    }

    /// A driver's own bookings, or an operator's sites' bookings, oldest first.
    pub async fn list_bookings(&self, caller: &Principal, page: PageRequest) -> KernelResult<Page<Booking>> {
        match caller {
            Principal::Driver { driver_id } => {
                Ok(self.store().list_bookings(BookingOwner::Driver(*driver_id), page).await?)
            }
            other => {
                let operator = operator_scope(other, Access::Read)?;
                Ok(self.store().list_bookings(BookingOwner::Operator(operator), page).await?)
            }
        }
    }
}

/// What a booking takes from its quote: the quote without its explanation.
#[derive(Debug, Clone)]
pub(crate) struct QuoteTerms {
    pub id: QuoteId,
    pub operator_id: OperatorId,
    pub site_id: SiteId,
    pub space_id: Option<SpaceId>,
    pub driver_id: Option<DriverId>,
    pub vehicle_type: VehicleType,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub total_minor: i64,
    pub currency: String,
    pub expires_at: DateTime<Utc>,
}

impl From<&Quote> for QuoteTerms {
    fn from(quote: &Quote) -> Self {
        Self {
            id: quote.id,
            operator_id: quote.operator_id,
            site_id: quote.site_id,
            space_id: quote.space_id,
            driver_id: quote.driver_id,
            vehicle_type: quote.vehicle_type,
            start: quote.start,
            end: quote.end,
            total_minor: quote.price.total_minor,
            currency: quote.price.currency.clone(),
            expires_at: quote.expires_at,
        }
    }
}

/// The terms of the quotes this node gave, until they are booked or expire: a driver books on
/// the node that quoted without reading the quote back (quotes never change).
#[derive(Default)]
pub(crate) struct QuoteTermsCache {
    terms: std::sync::Mutex<HashMap<QuoteId, Arc<QuoteTerms>>>,
}

/// Quotes' terms kept at most (a few hundred bytes each).
const MAX_QUOTE_TERMS: usize = 100_000;

impl QuoteTermsCache {
    pub(crate) fn remember(&self, quote: &Quote) {
        let mut terms = self.terms.lock().unwrap();
        if terms.len() >= MAX_QUOTE_TERMS {
            let at = now();
            terms.retain(|_, kept| kept.expires_at > at);
            if terms.len() >= MAX_QUOTE_TERMS {
                terms.clear();
            }
        }
        terms.insert(quote.id, Arc::new(QuoteTerms::from(quote)));
    }

    fn get(&self, id: QuoteId) -> Option<Arc<QuoteTerms>> {
        self.terms.lock().unwrap().get(&id).cloned()
    }

    fn forget(&self, id: QuoteId) {
        self.terms.lock().unwrap().remove(&id);
    }
}

impl Kernel {
    /// A driver's own quote's terms: from this node's memory, else from the store.
    async fn quote_terms(&self, driver: DriverId, id: QuoteId) -> KernelResult<Arc<QuoteTerms>> {
        if let Some(terms) = self.quote_terms.get(id) {
            return if terms.driver_id == Some(driver) { Ok(terms) } else { Err(KernelError::not_found("quote")) };
        }
        let quote = self.get_quote(&Principal::Driver { driver_id: driver }, id).await?;
        Ok(Arc::new(QuoteTerms::from(&quote)))
    }
}

/// Whose bookings a list is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookingOwner {
    Driver(DriverId),
    Operator(OperatorId),
}

/// The conflict a store reports when a live booking of the same space overlaps.
pub const OVERLAP: &str = "the space is already booked for an overlapping time";
