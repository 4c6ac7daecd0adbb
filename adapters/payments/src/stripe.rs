//! The Stripe adapter of the kernel's [`PaymentProvider`] port, through async-stripe (API
//! version pinned by the client, 2026-09-30).
//!
//! - A driver with a saved payment method gets a manual-capture PaymentIntent confirmed at once;
//!   a driver without one gets a Checkout Session (a hosted page to pay on) whose PaymentIntent
//!   is also manual-capture.
//! - Every money-moving call is a single attempt carrying berth's idempotency key. Retrying is
//!   the caller's job (its outbox relay repeats the same key, so Stripe replays the first
//!   answer); retrying here as well would only multiply the attempts.
//! - Webhooks are verified with [`crate::stripe_signature`] and read as plain JSON rather than
//!   async-stripe's event types, so events of older API versions (a PaymentIntent with a
//!   `charges` list) are read as well as current ones.
//!
//! Deliberately absent: logging of request bodies or of async-stripe's own error values (their
//! `Debug` output can carry a PaymentIntent's `client_secret`).

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use berth_kernel::payment::{
    AuthorizeRequest, Money, PaymentEvent, PaymentFailure, PaymentProvider, ProviderPayment, ProviderStatus,
};
use serde_json::Value;
use stripe::{ApiErrors, ApiErrorsType, IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionLineItemsPriceData,
    CreateCheckoutSessionPaymentIntentData, CreateCheckoutSessionPaymentIntentDataCaptureMethod, ExpireCheckoutSession,
    ProductData, RetrieveCheckoutSession,
};
use stripe_checkout::{CheckoutSession, CheckoutSessionMode, CheckoutSessionStatus};
use stripe_core::payment_intent::{
    CancelPaymentIntent, CapturePaymentIntent, CreatePaymentIntent, CreatePaymentIntentAutomaticPaymentMethods,
    CreatePaymentIntentAutomaticPaymentMethodsAllowRedirects, RetrievePaymentIntent,
};
use stripe_core::refund::CreateRefund;
use stripe_core::{Charge, PaymentIntent, PaymentIntentCaptureMethod, PaymentIntentStatus};
use stripe_types::{Currency, Expandable};

use crate::stripe_signature;

/// Stripe's API root; async-stripe appends `v1/...`.
pub const DEFAULT_BASE_URL: &str = "https://api.stripe.com/";

/// The metadata key under which berth's payment id travels with Stripe objects and comes back
/// in webhook events.
pub const PAYMENT_REF_METADATA_KEY: &str = "berth_payment";

/// Stripe's own default tolerance for webhook timestamps.
const WEBHOOK_TOLERANCE_SECS: i64 = stripe_signature::DEFAULT_TOLERANCE_SECS;

/// How berth talks to Stripe. `Debug` prints no secret.
#[derive(Clone)]
pub struct StripeConfig {
    /// The secret API key (`sk_...` or a restricted `rk_...`).
    pub secret_key: String,
    /// Webhook endpoint secrets (`whsec_...`); several while one is being rotated out.
    pub webhook_secrets: Vec<String>,
    /// The API root, ending in `/`; [`DEFAULT_BASE_URL`] except against a fake.
    pub base_url: String,
    /// Per-request timeout; a request that takes longer is reported as unavailable.
    pub timeout: Duration,
    /// Where Checkout sends the driver after paying, when the request has no `return_url`.
    pub checkout_success_url: String,
    /// Where Checkout sends the driver who gives up.
    pub checkout_cancel_url: String,
}

impl StripeConfig {
    /// A configuration against the real API with a 30 s timeout and no webhook secret yet.
    pub fn new(secret_key: impl Into<String>) -> Self {
        Self {
            secret_key: secret_key.into(),
            webhook_secrets: Vec::new(),
            base_url: DEFAULT_BASE_URL.to_owned(),
            timeout: Duration::from_secs(30),
            checkout_success_url: String::new(),
            checkout_cancel_url: String::new(),
        }
    }
}

impl fmt::Debug for StripeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeConfig")
            .field("secret_key", &"<redacted>")
            .field("webhook_secrets", &format_args!("[<redacted>; {}]", self.webhook_secrets.len()))
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .field("checkout_success_url", &self.checkout_success_url)
            .field("checkout_cancel_url", &self.checkout_cancel_url)
            .finish()
    }
}

/// The Stripe client could not be built from the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stripe configuration: {0}")]
pub struct StripeSetupError(String);

/// Stripe as a [`PaymentProvider`].
pub struct StripeProvider {
    client: stripe::Client,
    config: StripeConfig,
}

impl fmt::Debug for StripeProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeProvider").field("config", &self.config).finish_non_exhaustive()
    }
}

impl StripeProvider {
    /// Builds the HTTP client; nothing is sent to Stripe yet.
    pub fn new(mut config: StripeConfig) -> Result<Self, StripeSetupError> {
        // async-stripe joins the root and `v1/...` without a separator.
        if !config.base_url.ends_with('/') {
            config.base_url.push('/');
        }
        let client = stripe::ClientBuilder::new(config.secret_key.clone())
            .url(config.base_url.clone())
            .timeout(config.timeout)
            .request_strategy(RequestStrategy::Once)
            .build()
            .map_err(|error| StripeSetupError(describe_client_error(&error)))?;
        Ok(Self { client, config })
    }

    async fn create_payment_intent(
        &self,
        request: &AuthorizeRequest,
        payment_method: &str,
    ) -> Result<ProviderPayment, PaymentFailure> {
        let mut create = CreatePaymentIntent::new(request.amount.amount_minor, stripe_currency(&request.amount)?)
            .capture_method(PaymentIntentCaptureMethod::Manual)
            .confirm(true)
            .payment_method(payment_method)
            .metadata(payment_ref_metadata(&request.payment_ref));
        if !request.description.is_empty() {
            create = create.description(request.description.as_str());
        }
        // A server-side confirm must either say where a redirect-based step (3-D Secure) returns
        // to, or rule redirects out; without a return URL we rule them out, and a card that
        // needs authentication then ends in `requires_action` for the client SDK to handle.
        let mut automatic_payment_methods = CreatePaymentIntentAutomaticPaymentMethods::new(true);
        create = match &request.return_url {
            Some(return_url) => create.return_url(return_url.as_str()),
            None => {
                automatic_payment_methods.allow_redirects =
                    Some(CreatePaymentIntentAutomaticPaymentMethodsAllowRedirects::Never);
                create
            }
        };
        let intent = create
            .automatic_payment_methods(automatic_payment_methods)
            .customize()
            .request_strategy(idempotent(&request.idempotency_key)?)
            .send(&self.client)
            .await
            .map_err(|error| failure("authorize", error))?;
        Ok(payment_from_intent(&intent))
    }

    async fn create_checkout_session(&self, request: &AuthorizeRequest) -> Result<ProviderPayment, PaymentFailure> {
        let currency = stripe_currency(&request.amount)?;
        let mut price_data = CreateCheckoutSessionLineItemsPriceData::new(currency);
        price_data.unit_amount = Some(request.amount.amount_minor);
        let product_name =
            if request.description.is_empty() { "Parking".to_owned() } else { request.description.clone() };
        price_data.product_data = Some(ProductData::new(product_name));
        let mut line_item = CreateCheckoutSessionLineItems::new();
        line_item.price_data = Some(price_data);
        line_item.quantity = Some(1);

        let mut payment_intent_data = CreateCheckoutSessionPaymentIntentData::new();
        payment_intent_data.capture_method = Some(CreateCheckoutSessionPaymentIntentDataCaptureMethod::Manual);
        payment_intent_data.metadata = Some(payment_ref_metadata(&request.payment_ref));
        if !request.description.is_empty() {
            payment_intent_data.description = Some(request.description.clone());
        }

        let mut create = CreateCheckoutSession::new()
            .mode(CheckoutSessionMode::Payment)
            .line_items(vec![line_item])
            .payment_intent_data(payment_intent_data)
            .metadata(payment_ref_metadata(&request.payment_ref));
        let success_url = request.return_url.as_deref().unwrap_or(&self.config.checkout_success_url);
        if !success_url.is_empty() {
            create = create.success_url(success_url);
        }
        if !self.config.checkout_cancel_url.is_empty() {
            create = create.cancel_url(self.config.checkout_cancel_url.as_str());
        }
        let session = create
            .customize()
            .request_strategy(idempotent(&request.idempotency_key)?)
            .send(&self.client)
            .await
            .map_err(|error| failure("authorize", error))?;
        Ok(ProviderPayment {
            provider_ref: session.id.to_string(),
            status: ProviderStatus::RequiresAction,
            action_url: session.url.clone(),
            amount: request.amount.clone(),
        })
    }

    async fn retrieve_intent(&self, intent_id: &str) -> Result<PaymentIntent, PaymentFailure> {
        // The latest charge tells whether (and how much of) a captured payment was refunded.
        RetrievePaymentIntent::new(intent_id)
            .expand(vec!["latest_charge".to_owned()])
            .send(&self.client)
            .await
            .map_err(|error| failure("retrieve", error))
    }

    async fn retrieve_session(&self, session_id: &str) -> Result<CheckoutSession, PaymentFailure> {
        RetrieveCheckoutSession::new(session_id).send(&self.client).await.map_err(|error| failure("retrieve", error))
    }

    /// The PaymentIntent behind `provider_ref`: itself, or the one a paid Checkout Session made.
    async fn intent_id(&self, provider_ref: &str) -> Result<IntentOrSession, PaymentFailure> {
        // Ids go into URL paths: anything but Stripe's id alphabet would change the request.
        if provider_ref.is_empty() || !provider_ref.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_') {
            return Err(PaymentFailure::Invalid(format!("{provider_ref:?} is not a stripe id")));
        }
        if !is_checkout_session(provider_ref) {
            return Ok(IntentOrSession::Intent(provider_ref.to_owned()));
        }
        let session = self.retrieve_session(provider_ref).await?;
        Ok(match &session.payment_intent {
            Some(intent) => IntentOrSession::Intent(intent.id().to_string()),
            None => IntentOrSession::Session(Box::new(session)),
        })
    }
}

enum IntentOrSession {
    Intent(String),
    /// A Checkout Session nobody has paid yet.
    Session(Box<CheckoutSession>),
}

#[async_trait]
impl PaymentProvider for StripeProvider {
    fn name(&self) -> &str {
        "stripe"
    }

    async fn authorize(&self, request: &AuthorizeRequest) -> Result<ProviderPayment, PaymentFailure> {
        match &request.payment_method {
            Some(payment_method) => self.create_payment_intent(request, payment_method).await,
            None => self.create_checkout_session(request).await,
        }
    }

    async fn capture(
        &self,
        provider_ref: &str,
        amount: &Money,
        idempotency_key: &str,
    ) -> Result<ProviderPayment, PaymentFailure> {
        let intent_id = match self.intent_id(provider_ref).await? {
            IntentOrSession::Intent(intent_id) => intent_id,
            IntentOrSession::Session(_) => {
                return Err(PaymentFailure::Invalid(format!(
                    "checkout session {provider_ref} has not been paid; there is nothing to capture"
                )));
            }
        };
        let intent = CapturePaymentIntent::new(intent_id)
            .amount_to_capture(amount.amount_minor)
            .customize()
            .request_strategy(idempotent(idempotency_key)?)
            .send(&self.client)
            .await
            .map_err(|error| failure("capture", error))?;
        Ok(payment_from_intent(&intent))
    }

    async fn cancel(&self, provider_ref: &str, idempotency_key: &str) -> Result<ProviderPayment, PaymentFailure> {
        match self.intent_id(provider_ref).await? {
            IntentOrSession::Intent(intent_id) => {
                let intent = CancelPaymentIntent::new(intent_id)
                    .customize()
                    .request_strategy(idempotent(idempotency_key)?)
                    .send(&self.client)
                    .await
                    .map_err(|error| failure("cancel", error))?;
                Ok(payment_from_intent(&intent))
            }
            // An unpaid session is closed so that nobody can pay on it any more.
            IntentOrSession::Session(session) if session.status == Some(CheckoutSessionStatus::Open) => {
                let session = ExpireCheckoutSession::new(session.id.clone())
                    .customize()
                    .request_strategy(idempotent(idempotency_key)?)
                    .send(&self.client)
                    .await
                    .map_err(|error| failure("cancel", error))?;
                Ok(payment_from_session(&session))
            }
            IntentOrSession::Session(session) => Ok(payment_from_session(&session)),
        }
    }

    async fn refund(
        &self,
        provider_ref: &str,
        amount: &Money,
        idempotency_key: &str,
    ) -> Result<ProviderPayment, PaymentFailure> {
        let intent_id = match self.intent_id(provider_ref).await? {
            IntentOrSession::Intent(intent_id) => intent_id,
            IntentOrSession::Session(_) => {
                return Err(PaymentFailure::Invalid(format!(
                    "checkout session {provider_ref} has not been paid; there is nothing to refund"
                )));
            }
        };
        // Expanding the charge tells, in the same call, how much of it is refunded now.
        let refund = CreateRefund::new()
            .payment_intent(intent_id.as_str())
            .amount(amount.amount_minor)
            .expand(vec!["charge".to_owned()])
            .customize()
            .request_strategy(idempotent(idempotency_key)?)
            .send(&self.client)
            .await
            .map_err(|error| failure("refund", error))?;
        let fully_refunded = match refund.charge.as_ref().and_then(Expandable::as_object) {
            Some(charge) => is_fully_refunded(charge),
            None => {
                let intent = self.retrieve_intent(&intent_id).await?;
                intent.latest_charge.as_ref().and_then(Expandable::as_object).is_some_and(is_fully_refunded)
            }
        };
        Ok(ProviderPayment {
            provider_ref: intent_id,
            status: if fully_refunded { ProviderStatus::Refunded } else { ProviderStatus::PartiallyRefunded },
            action_url: None,
            amount: Money::new(refund.amount, berth_currency(&refund.currency)),
        })
    }

    async fn retrieve(&self, provider_ref: &str) -> Result<ProviderPayment, PaymentFailure> {
        match self.intent_id(provider_ref).await? {
            IntentOrSession::Intent(intent_id) => Ok(payment_from_intent(&self.retrieve_intent(&intent_id).await?)),
            IntentOrSession::Session(session) => Ok(payment_from_session(&session)),
        }
    }

    async fn verify_webhook(&self, headers: &[(String, String)], body: &[u8]) -> Result<PaymentEvent, PaymentFailure> {
        let signature = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("stripe-signature"))
            .map(|(_, value)| value.as_str())
            .ok_or_else(|| PaymentFailure::SignatureInvalid("no stripe-signature header".to_owned()))?;
        stripe_signature::verify(signature, body, &self.config.webhook_secrets, unix_now(), WEBHOOK_TOLERANCE_SECS)
            .map_err(|error| PaymentFailure::SignatureInvalid(error.to_string()))?;
        read_event(body)
    }
}

/// Reads a verified Stripe event. Only the fields berth needs are read, and every one of them
/// exists in both the 2020-08-27 shape and the current one.
fn read_event(body: &[u8]) -> Result<PaymentEvent, PaymentFailure> {
    let event: Value = serde_json::from_slice(body)
        .map_err(|error| PaymentFailure::Invalid(format!("the event body is not JSON: {error}")))?;
    let text = |value: &Value, field: &str| value.get(field).and_then(Value::as_str).map(str::to_owned);
    let event_id = text(&event, "id").ok_or_else(|| PaymentFailure::Invalid("the event has no id".to_owned()))?;
    let event_type =
        text(&event, "type").ok_or_else(|| PaymentFailure::Invalid(format!("event {event_id} has no type")))?;
    let object = event
        .pointer("/data/object")
        .filter(|object| object.is_object())
        .ok_or_else(|| PaymentFailure::Invalid(format!("event {event_id} has no data.object")))?;
    let object_id =
        text(object, "id").ok_or_else(|| PaymentFailure::Invalid(format!("event {event_id} is about no object id")))?;
    let payment_ref = object.pointer(&format!("/metadata/{PAYMENT_REF_METADATA_KEY}")).and_then(Value::as_str);
    let currency = text(object, "currency").map(|currency| currency.to_ascii_uppercase());
    let amount_of = |field: &str| {
        let amount_minor = object.get(field).and_then(Value::as_i64)?;
        Some(Money::new(amount_minor, currency.clone()?))
    };
    // `payment_intent` is an id, or an object when expanded, or null for a bare charge.
    let payment_intent_id = match object.get("payment_intent") {
        Some(Value::String(id)) => Some(id.clone()),
        Some(expanded @ Value::Object(_)) => text(expanded, "id"),
        _ => None,
    };

    let (provider_ref, status, amount) = match event_type.as_str() {
        "payment_intent.amount_capturable_updated" => {
            (object_id, ProviderStatus::Authorized, amount_of("amount_capturable"))
        }
        "payment_intent.succeeded" => (object_id, ProviderStatus::Captured, amount_of("amount_received")),
        "payment_intent.canceled" => (object_id, ProviderStatus::Voided, amount_of("amount")),
        "payment_intent.payment_failed" => (object_id, ProviderStatus::Failed, amount_of("amount")),
        "charge.refunded" => {
            let amount_refunded = object.get("amount_refunded").and_then(Value::as_i64).unwrap_or(0);
            // A partly captured charge is fully refunded once its captured part is.
            let refundable = object
                .get("amount_captured")
                .and_then(Value::as_i64)
                .or_else(|| object.get("amount").and_then(Value::as_i64))
                .unwrap_or(0);
            let refunded_flag = object.get("refunded").and_then(Value::as_bool).unwrap_or(false);
            let status = if refunded_flag || amount_refunded >= refundable {
                ProviderStatus::Refunded
            } else {
                ProviderStatus::PartiallyRefunded
            };
            // The amount is the charge's refunded total so far, not this refund's share of it.
            (payment_intent_id.unwrap_or(object_id), status, amount_of("amount_refunded"))
        }
        "checkout.session.completed" => {
            (payment_intent_id.unwrap_or(object_id), ProviderStatus::Authorized, amount_of("amount_total"))
        }
        other => return Err(PaymentFailure::Invalid(format!("event type {other} is not handled"))),
    };
    Ok(PaymentEvent { event_id, provider_ref, payment_ref: payment_ref.map(str::to_owned), status, amount })
}

fn payment_from_intent(intent: &PaymentIntent) -> ProviderPayment {
    let currency = berth_currency(&intent.currency);
    let (status, amount_minor) = match &intent.status {
        PaymentIntentStatus::RequiresCapture => (ProviderStatus::Authorized, intent.amount_capturable),
        PaymentIntentStatus::Succeeded => match intent.latest_charge.as_ref().and_then(Expandable::as_object) {
            Some(charge) if charge.amount_refunded > 0 => {
                let status = if is_fully_refunded(charge) {
                    ProviderStatus::Refunded
                } else {
                    ProviderStatus::PartiallyRefunded
                };
                (status, charge.amount_refunded)
            }
            _ => (ProviderStatus::Captured, intent.amount_received),
        },
        PaymentIntentStatus::Canceled => (ProviderStatus::Voided, intent.amount),
        // Waiting on the driver (3-D Secure, another card) or on the bank: nothing final yet.
        _ => (ProviderStatus::RequiresAction, intent.amount),
    };
    let action_url = intent
        .next_action
        .as_ref()
        .and_then(|next_action| next_action.redirect_to_url.as_ref())
        .and_then(|redirect| redirect.url.clone());
    ProviderPayment {
        provider_ref: intent.id.to_string(),
        status,
        action_url,
        amount: Money::new(amount_minor, currency),
    }
}

/// A Checkout Session that has no PaymentIntent yet.
fn payment_from_session(session: &CheckoutSession) -> ProviderPayment {
    let status = match &session.status {
        // Closed unpaid (expired, or cancelled by us): nothing was ever held.
        Some(CheckoutSessionStatus::Expired) => ProviderStatus::Voided,
        _ => ProviderStatus::RequiresAction,
    };
    let currency = session.currency.as_ref().map(berth_currency).unwrap_or_default();
    ProviderPayment {
        provider_ref: session.id.to_string(),
        status,
        action_url: session.url.clone(),
        amount: Money::new(session.amount_total.unwrap_or(0), currency),
    }
}

fn is_fully_refunded(charge: &Charge) -> bool {
    charge.refunded || charge.amount_refunded >= charge.amount_captured
}

fn is_checkout_session(provider_ref: &str) -> bool {
    provider_ref.starts_with("cs_")
}

fn payment_ref_metadata(payment_ref: &str) -> HashMap<String, String> {
    HashMap::from([(PAYMENT_REF_METADATA_KEY.to_owned(), payment_ref.to_owned())])
}

/// Stripe wants ISO 4217 codes in lower case.
fn stripe_currency(amount: &Money) -> Result<Currency, PaymentFailure> {
    let code = amount.currency.to_ascii_lowercase();
    if code.len() != 3 || !code.bytes().all(|byte| byte.is_ascii_lowercase()) {
        return Err(PaymentFailure::Invalid(format!("{:?} is not an ISO 4217 currency code", amount.currency)));
    }
    // Parsing is infallible: an unknown code becomes `Currency::Unknown`, which Stripe judges.
    let Ok(currency) = code.parse::<Currency>();
    Ok(currency)
}

fn berth_currency(currency: &Currency) -> String {
    currency.to_string().to_ascii_uppercase()
}

fn idempotent(key: &str) -> Result<RequestStrategy, PaymentFailure> {
    IdempotencyKey::new(key)
        .map(RequestStrategy::Idempotent)
        .map_err(|error| PaymentFailure::Invalid(format!("idempotency key: {error}")))
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(0))
}

/// Maps an async-stripe error to the port's failure, and logs it without request details.
fn failure(operation: &'static str, error: StripeError) -> PaymentFailure {
    let failure = match &error {
        StripeError::Stripe(api_error, status) => {
            let message = describe_api_error(api_error);
            match (*status, &api_error.type_) {
                (402, _) | (_, ApiErrorsType::CardError) => PaymentFailure::Declined(message),
                // 409: the same idempotency key is in flight; 429: rate limited. Both pass.
                (409 | 429, _) => PaymentFailure::Unavailable(message),
                (400..=499, _) => PaymentFailure::Invalid(message),
                _ => PaymentFailure::Unavailable(message),
            }
        }
        other => PaymentFailure::Unavailable(describe_client_error(other)),
    };
    match &failure {
        // A declined card is an everyday outcome, not a fault.
        PaymentFailure::Declined(_) => {
            tracing::info!(provider = "stripe", operation, error = %failure, "stripe declined")
        }
        _ => tracing::warn!(provider = "stripe", operation, error = %failure, "stripe call failed"),
    }
    failure
}

/// Stripe's message, with its codes for whoever reads the payment's failure.
fn describe_api_error(api_error: &ApiErrors) -> String {
    let codes: Vec<&str> = [api_error.code.as_ref().map(|code| code.as_str()), api_error.decline_code.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    let message = api_error.message.clone().unwrap_or_else(|| format!("stripe {} without a message", api_error.type_));
    if codes.is_empty() { message } else { format!("{message} ({})", codes.join(", ")) }
}

/// async-stripe's errors other than Stripe's own answers; none of them carries a secret.
fn describe_client_error(error: &StripeError) -> String {
    match error {
        StripeError::Stripe(api_error, status) => {
            format!("stripe answered {status}: {}", describe_api_error(api_error))
        }
        StripeError::JSONDeserialize(message) => format!("unreadable answer from stripe: {message}"),
        StripeError::ClientError(message) => format!("cannot reach stripe: {message}"),
        StripeError::ConfigError(message) => format!("stripe client configuration: {message}"),
        StripeError::Timeout => "stripe did not answer in time".to_owned(),
    }
}
