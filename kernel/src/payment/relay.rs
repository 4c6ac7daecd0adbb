//! The providers, the outbox relay, webhook intake and reconciliation.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{
    BookingChange, Breaker, BreakerState, CommandKind, CommandStatus, DUPLICATE_EVENT, Payment, PaymentCommand,
    PaymentEvent, PaymentFailure, PaymentProvider, PaymentStatus, ProviderPayment, ReceiptKind, ReceiptLine, STALE,
};
use crate::booking::{Booking, BookingStatus};
use crate::error::{KernelError, KernelResult, StoreError};
use crate::ids::{BookingId, PaymentCommandId, ReceiptLineId};
use crate::service::{Kernel, now};

/// The configured providers, first the primary, each behind its circuit breaker.
pub struct Payments {
    providers: Vec<(Arc<dyn PaymentProvider>, Breaker)>,
    /// Retry backoff: `base * 2^attempts`, at most `max`.
    base: Duration,
    max: Duration,
    /// Authorizations older than this are captured even if the stay is not over, before the
    /// provider lets them lapse (Stripe: 7 days for cards).
    capture_within: chrono::Duration,
    /// How long a relay owns a command it took; after that another relay (another node, or
    /// this one after a crash) runs it again, with the same idempotency key.
    lease: chrono::Duration,
    /// A payment this long without news is asked about at its provider.
    quiet: chrono::Duration,
    wake: tokio::sync::Notify,
}

impl std::fmt::Debug for Payments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payments").field("providers", &self.names()).finish()
    }
}

impl Default for Payments {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

/// What one relay pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayReport {
    pub done: u32,
    pub failed: u32,
    pub retrying: u32,
}

/// What a webhook delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// The event moved a payment (and maybe its booking).
    Applied,
    /// Received before: nothing done.
    Duplicate,
    /// Verified, but about nothing berth tracks or already known: recorded, nothing done.
    Ignored,
}

impl Payments {
    /// Providers in order of preference: the first is the primary, the next take over while
    /// it is down.
    pub fn new(providers: Vec<Arc<dyn PaymentProvider>>) -> Self {
        Self {
            providers: providers
                .into_iter()
                .map(|provider| (provider, Breaker::new(3, Duration::from_secs(30))))
                .collect(),
            base: Duration::from_millis(500),
            max: Duration::from_secs(300),
            capture_within: chrono::Duration::days(6),
            lease: chrono::Duration::seconds(60),
            quiet: chrono::Duration::minutes(5),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Breaker settings: consecutive failures that open it, and how long it stays open.
    pub fn with_breaker(mut self, threshold: u32, cooldown: Duration) -> Self {
        for (_, breaker) in &mut self.providers {
            *breaker = Breaker::new(threshold, cooldown);
        }
        self
    }

    /// Retry backoff of provider calls.
    pub fn with_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.base = base;
        self.max = max;
        self
    }

    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(60));
        self
    }

    /// How long a payment must be quiet before reconciliation asks its provider about it.
    pub fn with_quiet(mut self, quiet: Duration) -> Self {
        self.quiet = chrono::Duration::from_std(quiet).unwrap_or(chrono::Duration::minutes(5));
        self
    }

    pub fn with_capture_within(mut self, within: chrono::Duration) -> Self {
        self.capture_within = within;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    pub fn names(&self) -> Vec<&str> {
        self.providers.iter().map(|(provider, _)| provider.name()).collect()
    }

    pub fn breaker_states(&self) -> Vec<(&str, BreakerState)> {
        self.providers.iter().map(|(provider, breaker)| (provider.name(), breaker.state())).collect()
    }

    fn get(&self, name: &str) -> Option<&(Arc<dyn PaymentProvider>, Breaker)> {
        self.providers.iter().find(|(provider, _)| provider.name() == name)
    }

    /// Tells the relay there is work.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits until [`Payments::wake`] or `timeout`.
    pub async fn woken(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.wake.notified()).await;
    }

    fn backoff(&self, attempts: u32) -> chrono::Duration {
        let wait = self.base.saturating_mul(2u32.saturating_pow(attempts.min(20))).min(self.max);
        chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::seconds(300))
    }

    /// The provider for a new authorization: the primary, else the next whose breaker lets
    /// calls through.
    fn pick_for_authorize(&self) -> Option<&(Arc<dyn PaymentProvider>, Breaker)> {
        self.providers.iter().find(|(_, breaker)| breaker.allows())
    }
}

/// The result of one provider call, before it is written down.
enum Outcome {
    Answered(String, ProviderPayment),
    Refused(String, PaymentFailure),
    Retry(String),
    /// The call was not needed (the booking ended before its authorization went out).
    Skipped,
}

impl Kernel {
    pub fn payments(&self) -> &Payments {
        &self.payments
    }

    /// Runs the due outbox commands (at most `limit`), each once.
    pub async fn relay_payments(&self, limit: u32) -> KernelResult<RelayReport> {
        let mut report = RelayReport::default();
        if self.payments.is_empty() {
            return Ok(report);
        }
        let at = now();
        let commands = self.store().claim_payment_commands(at, at + self.payments.lease, limit).await?;
        for command in commands {
            match self.run_command(command).await {
                Ok(CommandStatus::Done) => report.done += 1,
                Ok(CommandStatus::Failed) => report.failed += 1,
                Ok(CommandStatus::Pending) => report.retrying += 1,
                Err(error) => {
                    tracing::warn!(%error, "payment command could not be written; the lease will bring it back");
                    report.retrying += 1;
                }
            }
        }
        Ok(report)
    }

    /// Runs one command now if no relay holds it (a booking's first authorization, so the
    /// driver sees its outcome in the response).
    pub(crate) async fn run_command_now(&self, id: PaymentCommandId) {
        if self.payments.is_empty() {
            return;
        }
        let at = now();
        match self.store().claim_payment_command(id, at, at + self.payments.lease).await {
            Ok(Some(command)) => {
                if let Err(error) = self.run_command(command).await {
                    tracing::warn!(%error, "payment command could not be written; the relay retries it");
                }
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "payment command could not be taken; the relay runs it"),
        }
        self.payments.wake();
    }

    /// Waits (a few seconds at most) until a command's first attempt is over, whoever made it:
    /// the relay on this or another node may have taken it before [`Self::run_command_now`]
    /// could, and an answer read in the middle of that attempt would mix the booking before it
    /// with the payment after it.
    pub(crate) async fn await_first_attempt(&self, booking: BookingId, id: PaymentCommandId) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let settled = match self.store().list_payment_commands(booking).await {
                Ok(commands) => commands
                    .iter()
                    .find(|command| command.id == id)
                    .is_none_or(|command| command.status != CommandStatus::Pending || command.attempts > 0),
                Err(_) => true,
            };
            if settled || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    async fn run_command(&self, command: PaymentCommand) -> KernelResult<CommandStatus> {
        let payment =
            self.store().get_payment(command.payment_id).await?.ok_or_else(|| {
                KernelError::Unavailable(format!("payment {} of a command is gone", command.payment_id))
            })?;
        let booking =
            self.store().get_booking(command.booking_id).await?.ok_or_else(|| {
                KernelError::Unavailable(format!("booking {} of a command is gone", command.booking_id))
            })?;
        let outcome = self.call_provider(&command, &payment, &booking).await;
        let status = match &outcome {
            Outcome::Answered(..) | Outcome::Skipped => CommandStatus::Done,
            Outcome::Refused(..) => CommandStatus::Failed,
            Outcome::Retry(_) => CommandStatus::Pending,
        };
        let kind = command.kind.as_str();
        metrics::counter!("berth_payment_commands_total", "kind" => kind, "status" => status.as_str()).increment(1);
        self.commit_with_retry(command.booking_id, |booking, payments| {
            settle_command(self, &command, &outcome, booking, payments, now())
        })
        .await?;
        Ok(status)
    }

    async fn call_provider(&self, command: &PaymentCommand, payment: &Payment, booking: &Booking) -> Outcome {
        let provider = match (&command.kind, &payment.provider) {
            // An authorization for a booking that ended unpaid is no longer wanted.
            (CommandKind::Authorize, _)
                if payment.provider_ref.is_none()
                    && matches!(booking.status, BookingStatus::Cancelled | BookingStatus::Expired) =>
            {
                return Outcome::Skipped;
            }
            (CommandKind::Authorize, None) => self.payments.pick_for_authorize(),
            (_, Some(name)) => self.payments.get(name).filter(|(_, breaker)| breaker.allows()),
            (_, None) => return Outcome::Skipped,
        };
        let Some((provider, breaker)) = provider else {
            return Outcome::Retry(match &payment.provider {
                Some(name) => format!("provider {name} is down or not configured"),
                None => "every payment provider is down".to_owned(),
            });
        };
        let name = provider.name().to_owned();
        let provider_ref = payment.provider_ref.clone().unwrap_or_default();
        let amount = payment.money(command.amount_minor);
        let key = &command.idempotency_key;
        let answer = match command.kind {
            CommandKind::Authorize => {
                let request = super::AuthorizeRequest {
                    idempotency_key: key.clone(),
                    payment_ref: payment.id.to_string(),
                    amount,
                    description: format!("Parking, {} ({})", payment.purpose.as_str(), booking.id),
                    payment_method: payment.payment_method.clone(),
                    return_url: None,
                };
                provider.authorize(&request).await
            }
            CommandKind::Capture => provider.capture(&provider_ref, &amount, key).await,
            CommandKind::Void => provider.cancel(&provider_ref, key).await,
            CommandKind::Refund => provider.refund(&provider_ref, &amount, key).await,
        };
        match answer {
            Ok(answer) => {
                breaker.record_success();
                Outcome::Answered(name, answer)
            }
            Err(PaymentFailure::Unavailable(reason)) => {
                breaker.record_failure();
                metrics::counter!("berth_payment_provider_failures_total", "provider" => name.clone()).increment(1);
                tracing::warn!(provider = %name, kind = command.kind.as_str(), %reason, "payment provider unavailable");
                Outcome::Retry(format!("{name}: {reason}"))
            }
            Err(refusal) => {
                breaker.record_success();
                Outcome::Refused(name, refusal)
            }
        }
    }

    /// Loads the booking and its payments, lets `change` decide, and writes the change; when
    /// the booking moved on meanwhile, decides again on the new state.
    pub(crate) async fn commit_with_retry(
        &self,
        booking_id: crate::ids::BookingId,
        mut change: impl FnMut(&Booking, &[Payment]) -> KernelResult<BookingChange>,
    ) -> KernelResult<Booking> {
        for _ in 0..5 {
            let booking =
                self.store().get_booking(booking_id).await?.ok_or_else(|| KernelError::not_found("booking"))?;
            let payments = self.store().list_payments(booking_id).await?;
            let mut unit = change(&booking, &payments)?;
            let touches_money = !(unit.payments.is_empty() && unit.commands.is_empty() && unit.receipt.is_empty());
            if unit.booking.is_none() && touches_money {
                // Every change of a booking's money moves its version, so two of them never
                // both write from the same state.
                let mut same = booking.clone();
                same.version += 1;
                unit.booking = Some((same, booking.version));
            }
            let written = unit.booking.as_ref().map(|(booking, _)| booking.clone()).unwrap_or(booking);
            match self.store().save_booking_change(&unit).await {
                Ok(()) => {
                    if unit.commands.iter().any(|command| command.status == CommandStatus::Pending) {
                        self.payments.wake();
                    }
                    return Ok(written);
                }
                Err(StoreError::Conflict(reason)) if reason == STALE => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(KernelError::Conflict("the booking is changing too often; try again".into()))
    }

    /// Verifies and applies a provider's webhook delivery.
    pub async fn payment_webhook(
        &self,
        provider_name: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> KernelResult<WebhookOutcome> {
        let Some((provider, _)) = self.payments.get(provider_name) else {
            return Err(KernelError::not_found("payment provider"));
        };
        let event = match provider.verify_webhook(headers, body).await {
            Ok(event) => event,
            Err(PaymentFailure::SignatureInvalid(reason)) => {
                metrics::counter!("berth_payment_webhooks_total", "outcome" => "forged").increment(1);
                tracing::warn!(provider = provider_name, %reason, "webhook refused: signature does not verify");
                return Err(KernelError::Unauthenticated(format!("webhook signature does not verify: {reason}")));
            }
            Err(PaymentFailure::Unavailable(reason)) => {
                return Err(KernelError::Unavailable(format!("the webhook cannot be verified now: {reason}")));
            }
            Err(other) => {
                // Verified but of a kind berth does not act on: acknowledged, so the provider
                // stops sending it.
                tracing::debug!(provider = provider_name, reason = %other, "webhook ignored");
                return Ok(WebhookOutcome::Ignored);
            }
        };
        let outcome = self.apply_event(provider_name, &event, true).await?;
        let label = match outcome {
            WebhookOutcome::Applied => "applied",
            WebhookOutcome::Duplicate => "duplicate",
            WebhookOutcome::Ignored => "ignored",
        };
        metrics::counter!("berth_payment_webhooks_total", "outcome" => label).increment(1);
        Ok(outcome)
    }

    /// Applies what a provider says of a payment: a verified event (`inbox`: recorded, so a
    /// second delivery is a no-op) or a reconciliation lookup.
    async fn apply_event(&self, provider: &str, event: &PaymentEvent, inbox: bool) -> KernelResult<WebhookOutcome> {
        let store = self.store();
        if inbox && store.webhook_seen(provider, &event.event_id).await? {
            return Ok(WebhookOutcome::Duplicate);
        }
        let mut payment = store.find_payment_by_provider_ref(provider, &event.provider_ref).await?;
        if payment.is_none()
            && let Some(id) = event.payment_ref.as_deref().and_then(|id| id.parse().ok())
        {
            payment = store.get_payment(id).await?;
        }
        let inbox_key = inbox.then(|| (provider.to_owned(), event.event_id.clone()));
        let Some(payment) = payment else {
            if let Some(key) = inbox_key {
                let unit = BookingChange { inbox: Some(key), ..BookingChange::default() };
                return match store.save_booking_change(&unit).await {
                    Ok(()) | Err(StoreError::Conflict(_)) => Ok(WebhookOutcome::Ignored),
                    Err(error) => Err(error.into()),
                };
            }
            return Ok(WebhookOutcome::Ignored);
        };
        let mut applied = false;
        let result = self
            .commit_with_retry(payment.booking_id, |booking, payments| {
                let mut unit = BookingChange { inbox: inbox_key.clone(), ..BookingChange::default() };
                let Some(current) = payments.iter().find(|candidate| candidate.id == payment.id) else {
                    return Ok(unit);
                };
                applied = apply_provider_state(
                    &mut unit,
                    booking,
                    current,
                    provider,
                    &event.provider_ref,
                    event.status.into(),
                    event.amount.as_ref().map(|money| money.amount_minor),
                    None,
                    now(),
                );
                Ok(unit)
            })
            .await;
        match result {
            Ok(_) if applied => Ok(WebhookOutcome::Applied),
            Ok(_) => Ok(WebhookOutcome::Ignored),
            Err(KernelError::Conflict(reason)) if reason == DUPLICATE_EVENT => Ok(WebhookOutcome::Duplicate),
            Err(error) => Err(error),
        }
    }

    /// Reconciliation: asks providers about payments that have been quiet a while and repairs
    /// any booking whose payment disagrees; captures authorizations about to lapse; settles
    /// holds of bookings that ended without their capture or void in the outbox.
    pub async fn reconcile_payments(&self, limit: u32) -> KernelResult<u32> {
        let at = now();
        let mut repaired = 0;
        for payment in self.store().list_payments_to_reconcile(at - self.payments.quiet, limit).await? {
            let (Some(name), Some(provider_ref)) = (payment.provider.clone(), payment.provider_ref.clone()) else {
                continue;
            };
            let Some((provider, breaker)) = self.payments.get(&name) else { continue };
            if !breaker.allows() {
                continue;
            }
            let seen = match provider.retrieve(&provider_ref).await {
                Ok(seen) => {
                    breaker.record_success();
                    seen
                }
                Err(PaymentFailure::Unavailable(reason)) => {
                    breaker.record_failure();
                    tracing::warn!(provider = %name, %reason, "reconciliation: provider unavailable");
                    continue;
                }
                Err(other) => {
                    tracing::warn!(provider = %name, payment = %payment.id, error = %other, "reconciliation: lookup refused");
                    continue;
                }
            };
            let commands = self.store().list_payment_commands(payment.booking_id).await?;
            let capture_within = self.payments.capture_within;
            let mut changed = false;
            self.commit_with_retry(payment.booking_id, |booking, payments| {
                let mut unit = BookingChange::default();
                let Some(current) = payments.iter().find(|candidate| candidate.id == payment.id) else {
                    return Ok(unit);
                };
                changed = apply_provider_state(
                    &mut unit,
                    booking,
                    current,
                    &name,
                    &seen.provider_ref,
                    seen.status.into(),
                    Some(seen.amount.amount_minor),
                    None,
                    at,
                );
                let current = unit.payments.last().cloned().unwrap_or_else(|| current.clone());
                let in_flight = commands
                    .iter()
                    .any(|command| command.payment_id == current.id && command.status == CommandStatus::Pending);
                if current.status.holds_funds() && !in_flight && unit.commands.is_empty() {
                    let lapsing = at - current.created_at >= capture_within;
                    let step = match booking.status {
                        BookingStatus::Completed | BookingStatus::NoShow => Some(CommandKind::Capture),
                        BookingStatus::Cancelled | BookingStatus::Expired => Some(CommandKind::Void),
                        BookingStatus::Confirmed | BookingStatus::Active if lapsing => Some(CommandKind::Capture),
                        _ => None,
                    };
                    if let Some(kind) = step {
                        let amount = if kind == CommandKind::Capture { current.amount_minor } else { 0 };
                        unit.commands.push(PaymentCommand::new(&current, kind, kind.as_str(), amount, at));
                        changed = true;
                    }
                }
                Ok(unit)
            })
            .await?;
            if changed {
                repaired += 1;
                metrics::counter!("berth_payment_reconciled_total").increment(1);
            }
        }
        Ok(repaired)
    }
}

/// Writes down the result of a provider call: the command settles or waits, the payment takes
/// the provider's view, the booking follows.
fn settle_command(
    kernel: &Kernel,
    command: &PaymentCommand,
    outcome: &Outcome,
    booking: &Booking,
    payments: &[Payment],
    at: DateTime<Utc>,
) -> KernelResult<BookingChange> {
    let mut unit = BookingChange::default();
    let mut settled = command.clone();
    settled.updated_at = at;
    settled.attempts = command.attempts.saturating_add(1);
    let Some(payment) = payments.iter().find(|payment| payment.id == command.payment_id) else {
        settled.status = CommandStatus::Failed;
        settled.last_error = Some("the payment is gone".into());
        unit.commands.push(settled);
        return Ok(unit);
    };
    match outcome {
        Outcome::Skipped => {
            settled.status = CommandStatus::Done;
            settled.last_error = Some("not needed: the booking ended first".into());
            if payment.status == PaymentStatus::Pending {
                let mut voided = payment.clone();
                voided.status = PaymentStatus::Voided;
                voided.updated_at = at;
                unit.payments.push(voided);
            }
        }
        Outcome::Retry(reason) => {
            settled.status = CommandStatus::Pending;
            settled.last_error = Some(reason.clone());
            settled.next_attempt_at = at + kernel.payments.backoff(command.attempts);
        }
        Outcome::Refused(provider, failure) => {
            settled.status = CommandStatus::Failed;
            settled.last_error = Some(failure.to_string());
            tracing::warn!(%provider, kind = command.kind.as_str(), booking = %booking.id, %failure, "payment refused");
            if command.kind == CommandKind::Authorize {
                let mut failed = payment.clone();
                failed.provider = Some(provider.clone());
                failed.status = PaymentStatus::Failed;
                failed.failure = Some(failure.to_string());
                failed.updated_at = at;
                unit.payments.push(failed.clone());
                payment_failed(&mut unit, booking, &failed, at);
            }
        }
        Outcome::Answered(provider, answer) => {
            settled.status = CommandStatus::Done;
            settled.last_error = None;
            let (status, amount) = match command.kind {
                CommandKind::Capture => (PaymentStatus::Captured, Some(answer.amount.amount_minor)),
                CommandKind::Refund => {
                    let refunded = payment.refunded_minor.saturating_add(command.amount_minor);
                    let status = if refunded >= payment.captured_minor {
                        PaymentStatus::Refunded
                    } else {
                        PaymentStatus::PartiallyRefunded
                    };
                    (status, Some(refunded))
                }
                CommandKind::Void => (PaymentStatus::Voided, None),
                CommandKind::Authorize => (answer.status.into(), Some(answer.amount.amount_minor)),
            };
            apply_provider_state(
                &mut unit,
                booking,
                payment,
                provider,
                &answer.provider_ref,
                status,
                amount,
                answer.action_url.clone(),
                at,
            );
        }
    }
    unit.commands.push(settled);
    Ok(unit)
}

/// Moves a payment to what its provider reports, if that is further along, with receipt
/// lines for money that moved, and the booking's consequences. Returns whether anything
/// changed. `amount` is what the status is about: held, captured, or refunded in all.
#[allow(clippy::too_many_arguments)]
fn apply_provider_state(
    unit: &mut BookingChange,
    booking: &Booking,
    payment: &Payment,
    provider: &str,
    provider_ref: &str,
    status: PaymentStatus,
    amount: Option<i64>,
    action_url: Option<String>,
    at: DateTime<Utc>,
) -> bool {
    let refund_news = matches!(status, PaymentStatus::PartiallyRefunded | PaymentStatus::Refunded)
        && amount.is_some_and(|refunded| refunded > payment.refunded_minor);
    let new_ref = payment.provider_ref.as_deref() != Some(provider_ref) && !provider_ref.is_empty();
    let further = status.rank() > payment.status.rank();
    let action = status == PaymentStatus::RequiresAction && action_url.is_some() && payment.action_url != action_url;
    let moves = further || refund_news || action || (new_ref && status.rank() >= payment.status.rank());
    if !moves {
        return false;
    }
    let mut next = payment.clone();
    next.provider = Some(provider.to_owned());
    if !provider_ref.is_empty() {
        next.provider_ref = Some(provider_ref.to_owned());
    }
    if action_url.is_some() {
        next.action_url = action_url;
    }
    next.updated_at = at;
    if further || refund_news {
        next.status = status;
    }
    let line = |kind: ReceiptKind, description: String, amount_minor: i64| ReceiptLine {
        id: ReceiptLineId::new(),
        booking_id: booking.id,
        payment_id: payment.id,
        kind,
        description,
        amount_minor,
        currency: payment.currency.clone(),
        provider: provider.to_owned(),
        provider_ref: next.provider_ref.clone().unwrap_or_default(),
        at,
    };
    match status {
        PaymentStatus::Captured if payment.captured_minor == 0 => {
            let captured = amount.unwrap_or(payment.amount_minor).min(payment.amount_minor.max(0));
            next.captured_minor = captured;
            if captured > 0 {
                unit.receipt.push(line(ReceiptKind::Charge, charge_description(booking, payment), captured));
            }
        }
        PaymentStatus::PartiallyRefunded | PaymentStatus::Refunded if refund_news => {
            let refunded =
                amount.unwrap_or(payment.captured_minor).min(next.captured_minor.max(payment.captured_minor));
            let delta = refunded - payment.refunded_minor;
            next.refunded_minor = refunded;
            next.status = if refunded >= next.captured_minor {
                PaymentStatus::Refunded
            } else {
                PaymentStatus::PartiallyRefunded
            };
            if delta > 0 {
                unit.receipt.push(line(ReceiptKind::Refund, format!("Refund ({})", payment.purpose.as_str()), delta));
            }
        }
        _ => {}
    }
    // What the booking does about it.
    let live = BookingStatus::LIVE.contains(&booking.status);
    match next.status {
        PaymentStatus::Authorized | PaymentStatus::Captured
            if payment.status.rank() < PaymentStatus::Authorized.rank() =>
        {
            if booking.status == BookingStatus::PendingPayment && payment.purpose == super::PaymentPurpose::Booking {
                let mut confirmed = booking.clone();
                confirmed.status = BookingStatus::Confirmed;
                confirmed.hold_expires_at = None;
                confirmed.updated_at = at;
                confirmed.version += 1;
                unit.booking = Some((confirmed, booking.version));
                metrics::counter!("berth_bookings_confirmed_total").increment(1);
            } else if !live
                && next.status == PaymentStatus::Authorized
                && payment.purpose == super::PaymentPurpose::Booking
                && matches!(booking.status, BookingStatus::Cancelled | BookingStatus::Expired)
            {
                // Paid after the booking ended: release the money.
                unit.commands.push(PaymentCommand::new(&next, CommandKind::Void, "void", 0, at));
            } else if next.status == PaymentStatus::Authorized && next.capture_on_authorize {
                unit.commands.push(PaymentCommand::new(&next, CommandKind::Capture, "capture", next.amount_minor, at));
            }
        }
        PaymentStatus::Failed | PaymentStatus::Voided if further => payment_failed(unit, booking, &next, at),
        _ => {}
    }
    unit.payments.push(next);
    true
}

/// A booking whose payment failed or was voided before it was confirmed is cancelled; an
/// extension whose payment failed is undone.
fn payment_failed(unit: &mut BookingChange, booking: &Booking, payment: &Payment, at: DateTime<Utc>) {
    let reason = payment.failure.clone().unwrap_or_else(|| match payment.status {
        PaymentStatus::Failed => "the payment was declined".into(),
        _ => "the payment was cancelled".into(),
    });
    match payment.purpose {
        super::PaymentPurpose::Booking if booking.status == BookingStatus::PendingPayment => {
            let mut cancelled = booking.clone();
            cancelled.status = BookingStatus::Cancelled;
            cancelled.hold_expires_at = None;
            cancelled.cancel_reason = Some(format!("payment failed: {reason}"));
            cancelled.updated_at = at;
            cancelled.version += 1;
            unit.booking = Some((cancelled, booking.version));
        }
        super::PaymentPurpose::Extension => {
            if let Some(previous_end) = payment.reverts_end_to {
                let mut undone = booking.clone();
                undone.end = previous_end;
                undone.price_minor = booking.price_minor.saturating_sub(payment.amount_minor);
                undone.updated_at = at;
                undone.version += 1;
                unit.booking = Some((undone, booking.version));
            }
        }
        _ => {}
    }
}

fn charge_description(booking: &Booking, payment: &Payment) -> String {
    let window = format!("{} to {}", booking.start.format("%Y-%m-%d %H:%M"), booking.end.format("%Y-%m-%d %H:%M UTC"));
    match payment.purpose {
        super::PaymentPurpose::Booking => match booking.status {
            BookingStatus::Cancelled => "Cancellation fee".to_owned(),
            BookingStatus::NoShow => format!("No-show, parking {window}"),
            _ => format!("Parking {window}"),
        },
        super::PaymentPurpose::Extension => format!("Extension to {}", booking.end.format("%Y-%m-%d %H:%M UTC")),
        super::PaymentPurpose::Overstay => "Overstay".to_owned(),
    }
}
