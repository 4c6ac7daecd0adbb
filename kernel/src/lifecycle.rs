//! A booking's life after it is made: payment confirms it, arrival makes it active (check-in, or
//! its space reports occupied), departure completes it (check-out, or the space reports free)
//! and captures the money, with overstay charged after. Drivers cancel and extend under the
//! operator's rules; holds run out; a booking nobody arrives for is a no-show.
//!
//! ```text
//! pending_payment ──paid──▶ confirmed ──arrived──▶ active ──departed──▶ completed
//!        │ unpaid              │ cancel / no arrival
//!        ▼                     ▼
//!     expired            cancelled / no_show
//! ```

use chrono::{DateTime, Duration, Utc};

use crate::auth::{Access, Principal};
use crate::booking::{Booking, BookingStatus, OVERLAP};
use crate::error::{KernelError, KernelResult, ValidationError};
use crate::ids::{BookingId, PaymentId};
use crate::payment::{
    BookingChange, CommandKind, Payment, PaymentCommand, PaymentPurpose, PaymentStatus, Receipt, ReceiptKind,
};
use crate::pricing::BookingMoments;
use crate::rules::EntryPoint;
use crate::service::{Kernel, now, operator_scope};
use crate::space::SpaceStatus;

/// How early before its start a driver may arrive.
pub const EARLY_ARRIVAL: Duration = Duration::minutes(15);
/// How long after its start a confirmed booking waits before it is a no-show.
pub const NO_SHOW_AFTER: Duration = Duration::minutes(30);

/// Who is asking to change a booking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Actor {
    Driver,
    Operator,
}

impl Kernel {
    /// The booking, if the caller may change it: its driver, or an operator admin of its site.
    async fn booking_for_change(&self, caller: &Principal, id: BookingId) -> KernelResult<(Booking, Actor)> {
        let booking = self.get_booking(caller, id).await?;
        match caller {
            Principal::Driver { .. } => Ok((booking, Actor::Driver)),
            other => {
                operator_scope(other, Access::Write)?;
                Ok((booking, Actor::Operator))
            }
        }
    }

    /// Check-in: the vehicle is here. From [`EARLY_ARRIVAL`] before the start until the end.
    pub async fn check_in(&self, caller: &Principal, id: BookingId) -> KernelResult<Booking> {
        let (booking, _) = self.booking_for_change(caller, id).await?;
        let at = now();
        if booking.status != BookingStatus::Confirmed {
            return Err(wrong_state(&booking, "checked in", "confirmed"));
        }
        if at < booking.start - EARLY_ARRIVAL || at >= booking.end {
            return Err(KernelError::Conflict(format!(
                "check-in is open from {} until {}",
                (booking.start - EARLY_ARRIVAL).to_rfc3339(),
                booking.end.to_rfc3339()
            )));
        }
        self.arrive(id, at).await
    }

    async fn arrive(&self, id: BookingId, at: DateTime<Utc>) -> KernelResult<Booking> {
        self.commit_with_retry(id, |booking, _| {
            if booking.status != BookingStatus::Confirmed {
                return Err(wrong_state(booking, "checked in", "confirmed"));
            }
            let mut next = booking.clone();
            next.status = BookingStatus::Active;
            next.arrived_at = Some(at);
            Ok(BookingChange { booking: Some(bump(next, booking, at)), ..BookingChange::default() })
        })
        .await
    }

    /// Check-out: the vehicle left. Captures what was authorized; staying past the end is
    /// charged under the operator's `overstay_fee`.
    pub async fn check_out(&self, caller: &Principal, id: BookingId) -> KernelResult<Booking> {
        let (booking, _) = self.booking_for_change(caller, id).await?;
        if booking.status != BookingStatus::Active {
            return Err(wrong_state(&booking, "checked out", "active"));
        }
        self.depart(&booking, now()).await
    }

    async fn depart(&self, booking: &Booking, at: DateTime<Utc>) -> KernelResult<Booking> {
        let overstay = if at > booking.end {
            let facts = Some(BookingMoments { departed_at: Some(at), ..BookingMoments::default() });
            let answer =
                self.booking_rule(booking, EntryPoint::OverstayFee, facts, (booking.start, booking.end), at).await?;
            match answer.amount_minor {
                Some(fee) => fee,
                // Not defined: the price of the extra time.
                None => {
                    let extra = self.booking_rule(booking, EntryPoint::Price, None, (booking.end, at), at).await?;
                    extra.amount_minor.unwrap_or(0)
                }
            }
        } else {
            0
        };
        self.commit_with_retry(booking.id, |current, payments| {
            if current.status != BookingStatus::Active {
                return Err(wrong_state(current, "checked out", "active"));
            }
            let mut next = current.clone();
            next.status = BookingStatus::Completed;
            next.departed_at = Some(at);
            let mut unit = BookingChange::default();
            capture_held(&mut unit, payments, at);
            if overstay > 0 {
                let payment = new_payment(current, payments, PaymentPurpose::Overstay, overstay, at);
                unit.commands.push(PaymentCommand::new(&payment, CommandKind::Authorize, "authorize", overstay, at));
                unit.payments.push(payment);
            }
            unit.booking = Some(bump(next, current, at));
            Ok(unit)
        })
        .await
    }

    /// Cancels a booking. A driver cancelling a confirmed booking pays the operator's
    /// `cancellation_fee` (taken from the hold; the rest is released or refunded); an unpaid
    /// hold, or an operator's cancellation, costs nothing.
    pub async fn cancel_booking(
        &self,
        caller: &Principal,
        id: BookingId,
        reason: Option<String>,
    ) -> KernelResult<Booking> {
        let (booking, actor) = self.booking_for_change(caller, id).await?;
        let at = now();
        if !matches!(booking.status, BookingStatus::PendingPayment | BookingStatus::Confirmed) {
            return Err(wrong_state(&booking, "cancelled", "pending_payment or confirmed"));
        }
        let fee = if booking.status == BookingStatus::Confirmed && actor == Actor::Driver {
            let answer = self
                .booking_rule(
                    &booking,
                    EntryPoint::CancellationFee,
                    Some(BookingMoments::default()),
                    (booking.start, booking.end),
                    at,
                )
                .await?;
            answer.amount_minor.unwrap_or(0).max(0)
        } else {
            0
        };
        let reason = reason
            .map(|reason| reason.trim().chars().take(500).collect::<String>())
            .filter(|reason| !reason.is_empty())
            .unwrap_or_else(|| match actor {
                Actor::Driver => "cancelled by the driver".to_owned(),
                Actor::Operator => "cancelled by the operator".to_owned(),
            });
        self.commit_with_retry(id, |current, payments| {
            if !matches!(current.status, BookingStatus::PendingPayment | BookingStatus::Confirmed) {
                return Err(wrong_state(current, "cancelled", "pending_payment or confirmed"));
            }
            let mut next = current.clone();
            next.status = BookingStatus::Cancelled;
            next.hold_expires_at = None;
            next.cancel_reason = Some(reason.clone());
            let mut unit = BookingChange::default();
            settle_with_fee(&mut unit, payments, fee, at);
            unit.booking = Some(bump(next, current, at));
            Ok(unit)
        })
        .await
    }

    /// Extends a confirmed or active booking to `new_end`: the operator's `extension` rule
    /// decides (by default the price of the longer stay minus what was paid), the difference is
    /// authorized as a payment of its own, and the space must be free until then.
    pub async fn extend_booking(
        &self,
        caller: &Principal,
        id: BookingId,
        new_end: DateTime<Utc>,
    ) -> KernelResult<Booking> {
        let (booking, _) = self.booking_for_change(caller, id).await?;
        let at = now();
        if !matches!(booking.status, BookingStatus::Confirmed | BookingStatus::Active) {
            return Err(wrong_state(&booking, "extended", "confirmed or active"));
        }
        if new_end <= booking.end {
            return Err(ValidationError::new("end", "the new end must be after the booking's end").into());
        }
        if new_end <= at {
            return Err(ValidationError::new("end", "the new end is in the past").into());
        }
        if new_end - booking.start > Duration::days(62) {
            return Err(ValidationError::new("end", "a stay is at most 62 days").into());
        }
        let facts = Some(BookingMoments { new_end: Some(new_end), ..BookingMoments::default() });
        let answer = self.booking_rule(&booking, EntryPoint::Extension, facts, (booking.start, new_end), at).await?;
        if !answer.allow {
            return Err(KernelError::NotAllowed(
                answer.reason.unwrap_or_else(|| "the operator's rules do not allow this extension".into()),
            ));
        }
        let extra = match answer.amount_minor {
            Some(amount) => amount,
            None => {
                let longer = self.booking_rule(&booking, EntryPoint::Price, None, (booking.start, new_end), at).await?;
                longer.amount_minor.unwrap_or(0) - booking.price_minor
            }
        }
        .max(0);
        let result = self
            .commit_with_retry(id, |current, payments| {
                if !matches!(current.status, BookingStatus::Confirmed | BookingStatus::Active) {
                    return Err(wrong_state(current, "extended", "confirmed or active"));
                }
                if current.end != booking.end {
                    return Err(KernelError::Conflict("the booking was extended meanwhile; ask again".into()));
                }
                let mut next = current.clone();
                next.end = new_end;
                next.price_minor = current.price_minor.saturating_add(extra);
                let mut unit = BookingChange::default();
                if extra > 0 {
                    let mut payment = new_payment(current, payments, PaymentPurpose::Extension, extra, at);
                    payment.reverts_end_to = Some(current.end);
                    unit.commands.push(PaymentCommand::new(&payment, CommandKind::Authorize, "authorize", extra, at));
                    unit.payments.push(payment);
                }
                unit.booking = Some(bump(next, current, at));
                Ok(unit)
            })
            .await;
        match result {
            Err(KernelError::Conflict(reason)) if reason == OVERLAP => {
                Err(KernelError::Conflict("the space is booked by someone else before the new end".into()))
            }
            other => other,
        }
    }

    /// The payments of a booking the caller was allowed to see.
    pub async fn payments_of(&self, booking: &Booking) -> KernelResult<Vec<Payment>> {
        Ok(self.store().list_payments(booking.id).await?)
    }

    /// The receipt of a booking, for its driver or its site's operator.
    pub async fn booking_receipt(&self, caller: &Principal, id: BookingId) -> KernelResult<(Receipt, Vec<Payment>)> {
        let booking = self.get_booking(caller, id).await?;
        let lines = self.store().list_receipt(id).await?;
        let payments = self.store().list_payments(id).await?;
        let sum = |kind: ReceiptKind| {
            lines.iter().filter(|line| line.kind == kind).map(|line| line.amount_minor).fold(0i64, i64::saturating_add)
        };
        let (charged_minor, refunded_minor) = (sum(ReceiptKind::Charge), sum(ReceiptKind::Refund));
        let held_minor = payments
            .iter()
            .filter(|payment| payment.status.holds_funds())
            .map(|payment| payment.amount_minor)
            .fold(0i64, i64::saturating_add);
        let receipt = Receipt {
            booking_id: id,
            currency: booking.currency.clone(),
            lines,
            charged_minor,
            refunded_minor,
            net_minor: charged_minor - refunded_minor,
            held_minor,
        };
        Ok((receipt, payments))
    }

    /// The booking clock: expires unpaid holds, starts bookings whose space reports occupied,
    /// completes active bookings whose space reports free again, and marks no-shows. Returns
    /// how many bookings changed.
    pub async fn tick_bookings(&self, limit: u32) -> KernelResult<u32> {
        let at = now();
        let mut changed = 0;
        for booking in self.store().list_bookings_in_play(at, limit).await? {
            let result = self.tick_booking(&booking, at).await;
            match result {
                Ok(true) => changed += 1,
                Ok(false) => {}
                Err(KernelError::Conflict(_)) => {}
                Err(error) => tracing::warn!(booking = %booking.id, %error, "booking clock could not update a booking"),
            }
        }
        Ok(changed)
    }

    async fn tick_booking(&self, booking: &Booking, at: DateTime<Utc>) -> KernelResult<bool> {
        match booking.status {
            BookingStatus::PendingPayment if booking.hold_expires_at.is_some_and(|until| until <= at) => {
                self.commit_with_retry(booking.id, |current, payments| {
                    if current.status != BookingStatus::PendingPayment {
                        return Ok(BookingChange::default());
                    }
                    let mut next = current.clone();
                    next.status = BookingStatus::Expired;
                    next.hold_expires_at = None;
                    let mut unit = BookingChange::default();
                    settle_with_fee(&mut unit, payments, 0, at);
                    unit.booking = Some(bump(next, current, at));
                    Ok(unit)
                })
                .await?;
                metrics::counter!("berth_bookings_expired_total").increment(1);
                Ok(true)
            }
            BookingStatus::Confirmed => {
                let live = self.store().get_space_live(booking.operator_id, booking.space_id).await?;
                let occupied_since = live
                    .filter(|live| live.sensed == SpaceStatus::Occupied)
                    .map(|live| live.sensed_since.unwrap_or(at).max(booking.start - EARLY_ARRIVAL));
                if let Some(since) = occupied_since.filter(|_| at >= booking.start - EARLY_ARRIVAL && at < booking.end)
                {
                    self.arrive(booking.id, since.min(at)).await?;
                    return Ok(true);
                }
                if at >= booking.start + NO_SHOW_AFTER.min(booking.end - booking.start) {
                    self.commit_with_retry(booking.id, |current, payments| {
                        if current.status != BookingStatus::Confirmed {
                            return Ok(BookingChange::default());
                        }
                        let mut next = current.clone();
                        next.status = BookingStatus::NoShow;
                        let mut unit = BookingChange::default();
                        // The space was kept: the booked price is due.
                        capture_held(&mut unit, payments, at);
                        unit.booking = Some(bump(next, current, at));
                        Ok(unit)
                    })
                    .await?;
                    metrics::counter!("berth_bookings_no_show_total").increment(1);
                    return Ok(true);
                }
                Ok(false)
            }
            BookingStatus::Active => {
                let live = self.store().get_space_live(booking.operator_id, booking.space_id).await?;
                let arrived = booking.arrived_at.unwrap_or(booking.start);
                let left_at = live
                    .filter(|live| live.sensed == SpaceStatus::Free)
                    .and_then(|live| live.sensed_since)
                    .filter(|since| *since > arrived);
                match left_at {
                    Some(since) => {
                        self.depart(booking, since.min(at)).await?;
                        Ok(true)
                    }
                    None => Ok(false),
                }
            }
            _ => Ok(false),
        }
    }
}

/// A new version of `next` (read at `current`'s version), stamped `at`.
fn bump(mut next: Booking, current: &Booking, at: DateTime<Utc>) -> (Booking, i64) {
    next.updated_at = at;
    next.version = current.version + 1;
    (next, current.version)
}

fn wrong_state(booking: &Booking, verb: &str, needed: &str) -> KernelError {
    KernelError::Conflict(format!("the booking is {}; only a {needed} booking can be {verb}", booking.status.as_str()))
}

/// A new payment of `booking` for `purpose`, paid the way its first payment was.
fn new_payment(
    booking: &Booking,
    payments: &[Payment],
    purpose: PaymentPurpose,
    amount: i64,
    at: DateTime<Utc>,
) -> Payment {
    let first = payments.iter().find(|payment| payment.purpose == PaymentPurpose::Booking);
    let same_purpose = payments.iter().filter(|payment| payment.purpose == purpose).count();
    let label = match same_purpose {
        0 => purpose.as_str().to_owned(),
        n => format!("{}-{}", purpose.as_str(), n + 1),
    };
    Payment {
        id: PaymentId::new(),
        booking_id: booking.id,
        operator_id: booking.operator_id,
        driver_id: booking.driver_id,
        purpose,
        label,
        // The money goes where the first payment went; no failover mid-booking.
        provider: first.and_then(|payment| payment.provider.clone()),
        provider_ref: None,
        status: PaymentStatus::Pending,
        amount_minor: amount,
        captured_minor: 0,
        refunded_minor: 0,
        currency: booking.currency.clone(),
        payment_method: first.and_then(|payment| payment.payment_method.clone()),
        action_url: None,
        capture_on_authorize: purpose == PaymentPurpose::Overstay,
        failure: None,
        reverts_end_to: None,
        created_at: at,
        updated_at: at,
    }
}

/// Captures everything still held.
fn capture_held(unit: &mut BookingChange, payments: &[Payment], at: DateTime<Utc>) {
    for payment in payments.iter().filter(|payment| payment.status.holds_funds()) {
        unit.commands.push(PaymentCommand::new(payment, CommandKind::Capture, "capture", payment.amount_minor, at));
    }
}

/// Ends a booking's money: `fee` is taken (from holds first, then kept from what was
/// captured), every other hold is released and every other captured amount refunded.
fn settle_with_fee(unit: &mut BookingChange, payments: &[Payment], fee: i64, at: DateTime<Utc>) {
    let mut fee_left = fee;
    for payment in payments {
        match payment.status {
            PaymentStatus::Authorized => {
                let take = fee_left.min(payment.amount_minor);
                fee_left -= take;
                let (kind, amount) = if take > 0 { (CommandKind::Capture, take) } else { (CommandKind::Void, 0) };
                unit.commands.push(PaymentCommand::new(payment, kind, kind.as_str(), amount, at));
            }
            PaymentStatus::Captured | PaymentStatus::PartiallyRefunded => {
                let refundable = payment.captured_minor - payment.refunded_minor;
                let keep = fee_left.min(refundable);
                fee_left -= keep;
                if refundable - keep > 0 {
                    let step = format!("refund-{}", payment.refunded_minor);
                    unit.commands.push(PaymentCommand::new(payment, CommandKind::Refund, &step, refundable - keep, at));
                }
            }
            // Nothing held yet: a waiting authorization is skipped; one the driver completes
            // later on the provider's page is voided when its event arrives.
            _ => {}
        }
    }
}
