//! Payments: the provider port, the payments and receipts of bookings, the outbox of provider
//! calls and its relay, webhook intake, failover between providers and reconciliation.
//!
//! Every money movement starts as a [`PaymentCommand`] committed in the same transaction as the
//! booking change that needs it (the outbox). A relay calls the provider with the command's
//! idempotency key, retrying with backoff, so a crash between the commit and the call only
//! delays the call, and a crash after the call only repeats it (the provider answers the repeat
//! with the first result).

mod breaker;
pub mod port;
mod relay;

use chrono::{DateTime, Utc};

pub use breaker::{Breaker, BreakerState};
pub use port::{
    AuthorizeRequest, Money, PaymentEvent, PaymentFailure, PaymentProvider, ProviderPayment, ProviderStatus,
};
pub use relay::{Payments, RelayReport, WebhookOutcome};

use crate::ids::{BookingId, DriverId, OperatorId, PaymentCommandId, PaymentId, ReceiptLineId};

/// What a payment pays for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentPurpose {
    /// The booked stay.
    Booking,
    /// The extra time of an extension.
    Extension,
    /// Staying past the end.
    Overstay,
}

impl PaymentPurpose {
    pub const ALL: [PaymentPurpose; 3] = [PaymentPurpose::Booking, PaymentPurpose::Extension, PaymentPurpose::Overstay];

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentPurpose::Booking => "booking",
            PaymentPurpose::Extension => "extension",
            PaymentPurpose::Overstay => "overstay",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|purpose| purpose.as_str() == text)
    }
}

/// Where one payment stands, as berth knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentStatus {
    /// Nothing at a provider yet: the authorization waits in the outbox.
    Pending,
    RequiresAction,
    Authorized,
    Captured,
    PartiallyRefunded,
    Refunded,
    Voided,
    Failed,
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 8] = [
        PaymentStatus::Pending,
        PaymentStatus::RequiresAction,
        PaymentStatus::Authorized,
        PaymentStatus::Captured,
        PaymentStatus::PartiallyRefunded,
        PaymentStatus::Refunded,
        PaymentStatus::Voided,
        PaymentStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::RequiresAction => "requires_action",
            PaymentStatus::Authorized => "authorized",
            PaymentStatus::Captured => "captured",
            PaymentStatus::PartiallyRefunded => "partially_refunded",
            PaymentStatus::Refunded => "refunded",
            PaymentStatus::Voided => "voided",
            PaymentStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }

    /// How far along the payment is; a payment never moves back.
    pub fn rank(self) -> u8 {
        match self {
            PaymentStatus::Pending => 0,
            PaymentStatus::RequiresAction => 1,
            PaymentStatus::Authorized => 2,
            PaymentStatus::Captured => 3,
            PaymentStatus::PartiallyRefunded => 4,
            PaymentStatus::Refunded | PaymentStatus::Voided | PaymentStatus::Failed => 5,
        }
    }

    /// Money is held and may still be captured or voided.
    pub fn holds_funds(self) -> bool {
        self == PaymentStatus::Authorized
    }

    /// Nothing is held and nothing will happen without a new payment.
    pub fn is_final(self) -> bool {
        matches!(self, PaymentStatus::Refunded | PaymentStatus::Voided | PaymentStatus::Failed)
    }
}

impl From<ProviderStatus> for PaymentStatus {
    fn from(status: ProviderStatus) -> Self {
        match status {
            ProviderStatus::RequiresAction => PaymentStatus::RequiresAction,
            ProviderStatus::Authorized => PaymentStatus::Authorized,
            ProviderStatus::Captured => PaymentStatus::Captured,
            ProviderStatus::Voided => PaymentStatus::Voided,
            ProviderStatus::Refunded => PaymentStatus::Refunded,
            ProviderStatus::PartiallyRefunded => PaymentStatus::PartiallyRefunded,
            ProviderStatus::Failed => PaymentStatus::Failed,
        }
    }
}

/// One payment of a booking.
#[derive(Debug, Clone, PartialEq)]
pub struct Payment {
    pub id: PaymentId,
    pub booking_id: BookingId,
    pub operator_id: OperatorId,
    pub driver_id: DriverId,
    pub purpose: PaymentPurpose,
    /// Unique within the booking (`booking`, `extension-2`, `overstay`): part of every
    /// idempotency key of this payment.
    pub label: String,
    /// The provider holding it, once one answered.
    pub provider: Option<String>,
    pub provider_ref: Option<String>,
    pub status: PaymentStatus,
    /// What is to be authorized.
    pub amount_minor: i64,
    pub captured_minor: i64,
    pub refunded_minor: i64,
    pub currency: String,
    /// The driver's payment method token, if they gave one.
    pub payment_method: Option<String>,
    /// A page the driver must visit to pay.
    pub action_url: Option<String>,
    /// Capture as soon as authorized (charges after the fact, like overstay).
    pub capture_on_authorize: bool,
    /// Why it failed, for the driver.
    pub failure: Option<String>,
    /// An extension's payment: the end the booking goes back to if the payment fails.
    pub reverts_end_to: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Payment {
    pub fn money(&self, amount_minor: i64) -> Money {
        Money::new(amount_minor, self.currency.clone())
    }

    /// The idempotency key of a step of this payment: booking, payment label and step.
    pub fn idempotency_key(&self, step: &str) -> String {
        format!("berth-{}-{}-{step}", self.booking_id, self.label)
    }
}

/// A provider call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandKind {
    Authorize,
    Capture,
    Void,
    Refund,
}

impl CommandKind {
    pub const ALL: [CommandKind; 4] =
        [CommandKind::Authorize, CommandKind::Capture, CommandKind::Void, CommandKind::Refund];

    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Authorize => "authorize",
            CommandKind::Capture => "capture",
            CommandKind::Void => "void",
            CommandKind::Refund => "refund",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandStatus {
    Pending,
    Done,
    /// The provider refused it for good; the message says why.
    Failed,
}

impl CommandStatus {
    pub const ALL: [CommandStatus; 3] = [CommandStatus::Pending, CommandStatus::Done, CommandStatus::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Pending => "pending",
            CommandStatus::Done => "done",
            CommandStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }
}

/// A provider call in the outbox, committed with the change that needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentCommand {
    pub id: PaymentCommandId,
    pub payment_id: PaymentId,
    pub booking_id: BookingId,
    pub kind: CommandKind,
    pub amount_minor: i64,
    pub idempotency_key: String,
    pub status: CommandStatus,
    pub attempts: u32,
    /// When the relay may (re)try it; a relay that takes it pushes this out as its lease.
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl PaymentCommand {
    /// A new command for `payment`; `step` names it within the payment (`capture`,
    /// `refund-2`) and so fixes its idempotency key.
    pub fn new(payment: &Payment, kind: CommandKind, step: &str, amount_minor: i64, at: DateTime<Utc>) -> Self {
        Self {
            id: PaymentCommandId::new(),
            payment_id: payment.id,
            booking_id: payment.booking_id,
            kind,
            amount_minor,
            idempotency_key: payment.idempotency_key(step),
            status: CommandStatus::Pending,
            attempts: 0,
            next_attempt_at: at,
            last_error: None,
            created_at: at,
            updated_at: at,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReceiptKind {
    /// Money taken from the driver.
    Charge,
    /// Money given back.
    Refund,
}

impl ReceiptKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptKind::Charge => "charge",
            ReceiptKind::Refund => "refund",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [ReceiptKind::Charge, ReceiptKind::Refund].into_iter().find(|kind| kind.as_str() == text)
    }
}

/// One line of a receipt: money that moved.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiptLine {
    pub id: ReceiptLineId,
    pub booking_id: BookingId,
    pub payment_id: PaymentId,
    pub kind: ReceiptKind,
    pub description: String,
    pub amount_minor: i64,
    pub currency: String,
    pub provider: String,
    pub provider_ref: String,
    pub at: DateTime<Utc>,
}

/// A booking's receipt: every charge and refund, and what they come to.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    pub booking_id: BookingId,
    pub currency: String,
    pub lines: Vec<ReceiptLine>,
    pub charged_minor: i64,
    pub refunded_minor: i64,
    /// What the driver paid in the end.
    pub net_minor: i64,
    /// Held on the driver's card and not yet taken or released.
    pub held_minor: i64,
}

/// One unit of work on a booking's money, written in one transaction: the booking's new state
/// (checked against the version it was read at), payments, new or settled outbox commands,
/// receipt lines, and the webhook event that caused it (the inbox).
#[derive(Debug, Clone, Default)]
pub struct BookingChange {
    /// The booking's new state and the version it must still have.
    pub booking: Option<(crate::booking::Booking, i64)>,
    /// Payments to insert or update.
    pub payments: Vec<Payment>,
    /// Commands to insert or update.
    pub commands: Vec<PaymentCommand>,
    pub receipt: Vec<ReceiptLine>,
    /// `(provider, event id)` of the webhook event this change applies; a second delivery is
    /// refused as a conflict.
    pub inbox: Option<(String, String)>,
}

/// The conflict a store reports when the booking's version moved on.
pub const STALE: &str = "the booking changed meanwhile";
/// The conflict a store reports when a webhook event was applied before.
pub const DUPLICATE_EVENT: &str = "this event was received before";
