//! The payment-provider port: what berth asks of Stripe, PayPal or any provider plugin.
//! Amounts are integer minor units; every money-moving call carries an idempotency key derived
//! from the booking and the step, so a retried call is one call at the provider.

use async_trait::async_trait;

/// An amount in minor units of an ISO 4217 currency (`EUR`, upper case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Money {
    pub amount_minor: i64,
    pub currency: String,
}

impl Money {
    pub fn new(amount_minor: i64, currency: impl Into<String>) -> Self {
        Self { amount_minor, currency: currency.into() }
    }
}

/// Where a payment stands at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderStatus {
    /// The driver must act first (an approval page, 3-D Secure, a checkout link).
    RequiresAction,
    /// Funds are held, not taken.
    Authorized,
    Captured,
    /// The authorization was released without taking anything.
    Voided,
    Refunded,
    PartiallyRefunded,
    Failed,
}

impl ProviderStatus {
    pub const ALL: [ProviderStatus; 7] = [
        ProviderStatus::RequiresAction,
        ProviderStatus::Authorized,
        ProviderStatus::Captured,
        ProviderStatus::Voided,
        ProviderStatus::Refunded,
        ProviderStatus::PartiallyRefunded,
        ProviderStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderStatus::RequiresAction => "requires_action",
            ProviderStatus::Authorized => "authorized",
            ProviderStatus::Captured => "captured",
            ProviderStatus::Voided => "voided",
            ProviderStatus::Refunded => "refunded",
            ProviderStatus::PartiallyRefunded => "partially_refunded",
            ProviderStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }

    /// How far along a payment is. Events never move a payment back (a late
    /// `amount_capturable_updated` after the capture changes nothing).
    pub fn rank(self) -> u8 {
        match self {
            ProviderStatus::RequiresAction => 0,
            ProviderStatus::Authorized => 1,
            ProviderStatus::Captured => 2,
            ProviderStatus::PartiallyRefunded => 3,
            ProviderStatus::Voided | ProviderStatus::Refunded | ProviderStatus::Failed => 4,
        }
    }
}

/// Hold an amount for a booking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizeRequest {
    /// Derived from the booking and the step; the provider treats repeats as one request.
    pub idempotency_key: String,
    /// berth's payment id. Providers keep it with the payment (Stripe metadata, PayPal
    /// `custom_id`) and return it in webhook events.
    pub payment_ref: String,
    pub amount: Money,
    /// What the driver sees on the statement or the approval page.
    pub description: String,
    /// A provider token for the driver's payment method (`pm_...`), when the driver has one;
    /// without it the provider answers `RequiresAction` with a page to pay on.
    pub payment_method: Option<String>,
    /// Where the driver returns after paying on the provider's page.
    pub return_url: Option<String>,
}

/// The provider's view of one payment after a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderPayment {
    /// The provider's id for the payment (PaymentIntent, Checkout Session, PayPal order).
    pub provider_ref: String,
    pub status: ProviderStatus,
    /// A page the driver must visit (checkout, approval, 3-D Secure).
    pub action_url: Option<String>,
    /// What the call held, took or returned.
    pub amount: Money,
}

/// A verified webhook event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentEvent {
    /// The provider's event id: the inbox key that makes redelivery a no-op.
    pub event_id: String,
    /// The provider's id of the payment the event is about.
    pub provider_ref: String,
    /// berth's payment id, when the provider echoes it (metadata); lets an event about a
    /// payment created on a checkout page find its payment.
    pub payment_ref: Option<String>,
    pub status: ProviderStatus,
    pub amount: Option<Money>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentFailure {
    /// The provider refused the payment (card declined, insufficient funds).
    #[error("declined: {0}")]
    Declined(String),
    /// The request was wrong (an unknown payment, a capture above the authorization).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Temporary: a timeout, a 5xx, a broken connection. Retry later, or fail over.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// A webhook whose signature does not verify.
    #[error("signature invalid: {0}")]
    SignatureInvalid(String),
}

/// One payment provider. Implementations are adapters (`adapters/payments`) or Wasm plugins.
#[async_trait]
pub trait PaymentProvider: Send + Sync {
    /// The provider's name in configuration, payments and webhook URLs (`stripe`, `paypal`).
    fn name(&self) -> &str;
    async fn authorize(&self, request: &AuthorizeRequest) -> Result<ProviderPayment, PaymentFailure>;
    /// Takes `amount` (at most what was authorized); the rest of the hold is released.
    async fn capture(
        &self,
        provider_ref: &str,
        amount: &Money,
        idempotency_key: &str,
    ) -> Result<ProviderPayment, PaymentFailure>;
    /// Voids an authorization.
    async fn cancel(&self, provider_ref: &str, idempotency_key: &str) -> Result<ProviderPayment, PaymentFailure>;
    /// Returns part or all of a captured amount.
    async fn refund(
        &self,
        provider_ref: &str,
        amount: &Money,
        idempotency_key: &str,
    ) -> Result<ProviderPayment, PaymentFailure>;
    /// The provider's current view of a payment (for reconciliation).
    async fn retrieve(&self, provider_ref: &str) -> Result<ProviderPayment, PaymentFailure>;
    /// Verifies a webhook on its raw body and headers (names lower case) and reads its event.
    async fn verify_webhook(&self, headers: &[(String, String)], body: &[u8]) -> Result<PaymentEvent, PaymentFailure>;
}
