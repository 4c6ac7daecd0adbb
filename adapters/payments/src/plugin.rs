//! Any payment-provider Wasm plugin (PayPal ships as one) behind the kernel's
//! [`PaymentProvider`] port. Plugin calls block (wasmtime runs synchronously; the host's HTTP
//! import is a blocking client), so each runs on tokio's blocking pool, never on a reactor
//! thread. WIT types are converted here, at the boundary.
//!
//! A fault of the plugin itself (a trap, its deadline, its memory limit, quarantine) is
//! [`PaymentFailure::Unavailable`]: the payment did not fail, the provider could not be asked.

use std::sync::Arc;

use async_trait::async_trait;
use berth_kernel::payment::{
    AuthorizeRequest, Money, PaymentEvent, PaymentFailure, PaymentProvider, ProviderPayment, ProviderStatus,
};
use berth_plugin_host::payment::{self as wit, PaymentPlugin, PaymentResult};

/// A loaded payment-provider plugin as a [`PaymentProvider`].
#[derive(Clone)]
pub struct PluginPaymentProvider {
    name: String,
    plugin: Arc<PaymentPlugin>,
}

impl std::fmt::Debug for PluginPaymentProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginPaymentProvider").field("name", &self.name).finish_non_exhaustive()
    }
}

impl PluginPaymentProvider {
    /// `name` is the provider's name in configuration, payments and webhook URLs (`paypal`).
    pub fn new(name: impl Into<String>, plugin: Arc<PaymentPlugin>) -> Self {
        Self { name: name.into(), plugin }
    }

    /// Runs one plugin call on the blocking pool and maps both layers of failure.
    async fn call<T: Send + 'static>(
        &self,
        call: impl FnOnce(&PaymentPlugin) -> PaymentResult<T> + Send + 'static,
    ) -> Result<T, PaymentFailure> {
        let plugin = self.plugin.clone();
        let outcome = tokio::task::spawn_blocking(move || call(&plugin)).await.map_err(|join_error| {
            PaymentFailure::Unavailable(format!("payment plugin {}: the call did not finish: {join_error}", self.name))
        })?;
        match outcome {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => Err(failure(error)),
            Err(fault) => {
                tracing::warn!(provider = %self.name, error = %fault, "payment plugin call faulted");
                Err(PaymentFailure::Unavailable(format!("payment plugin {}: {fault}", self.name)))
            }
        }
    }

    /// A state answer, with the one thing the kernel cannot do without: a provider reference.
    fn payment(&self, state: wit::PaymentState) -> Result<ProviderPayment, PaymentFailure> {
        if state.provider_ref.is_empty() {
            return Err(PaymentFailure::Unavailable(format!(
                "payment plugin {} answered without a provider reference",
                self.name
            )));
        }
        Ok(ProviderPayment {
            provider_ref: state.provider_ref,
            status: status(state.status),
            action_url: state.action_url,
            amount: money(state.amount),
        })
    }
}

fn failure(error: wit::PaymentError) -> PaymentFailure {
    match error {
        wit::PaymentError::Declined(reason) => PaymentFailure::Declined(reason),
        wit::PaymentError::InvalidRequest(reason) => PaymentFailure::Invalid(reason),
        wit::PaymentError::Unavailable(reason) => PaymentFailure::Unavailable(reason),
        wit::PaymentError::SignatureInvalid(reason) => PaymentFailure::SignatureInvalid(reason),
    }
}

fn status(status: wit::PaymentStatus) -> ProviderStatus {
    match status {
        wit::PaymentStatus::RequiresAction => ProviderStatus::RequiresAction,
        wit::PaymentStatus::Authorized => ProviderStatus::Authorized,
        wit::PaymentStatus::Captured => ProviderStatus::Captured,
        wit::PaymentStatus::Voided => ProviderStatus::Voided,
        wit::PaymentStatus::Refunded => ProviderStatus::Refunded,
        wit::PaymentStatus::PartiallyRefunded => ProviderStatus::PartiallyRefunded,
        wit::PaymentStatus::Failed => ProviderStatus::Failed,
    }
}

fn money(money: wit::Money) -> Money {
    Money { amount_minor: money.amount_minor, currency: money.currency }
}

fn wit_money(money: &Money) -> wit::Money {
    wit::Money { amount_minor: money.amount_minor, currency: money.currency.clone() }
}

#[async_trait]
impl PaymentProvider for PluginPaymentProvider {
    fn name(&self) -> &str {
        &self.name
    }

    /// The kernel's `payment_ref` is the plugin's `booking-ref`; `payment_method` has no WIT
    /// field (plugins that need one send the driver to their approval page).
    async fn authorize(&self, request: &AuthorizeRequest) -> Result<ProviderPayment, PaymentFailure> {
        let request = wit::AuthorizeRequest {
            idempotency_key: request.idempotency_key.clone(),
            booking_ref: request.payment_ref.clone(),
            amount: wit_money(&request.amount),
            description: request.description.clone(),
            return_url: request.return_url.clone(),
        };
        let state = self.call(move |plugin| plugin.authorize(&request)).await?;
        self.payment(state)
    }

    async fn capture(
        &self,
        provider_ref: &str,
        amount: &Money,
        idempotency_key: &str,
    ) -> Result<ProviderPayment, PaymentFailure> {
        let (provider_ref, amount, key) = (provider_ref.to_owned(), wit_money(amount), idempotency_key.to_owned());
        let state = self.call(move |plugin| plugin.capture(&provider_ref, &amount, &key)).await?;
        self.payment(state)
    }

    async fn cancel(&self, provider_ref: &str, idempotency_key: &str) -> Result<ProviderPayment, PaymentFailure> {
        let (provider_ref, key) = (provider_ref.to_owned(), idempotency_key.to_owned());
        let state = self.call(move |plugin| plugin.cancel(&provider_ref, &key)).await?;
        self.payment(state)
    }

    async fn refund(
        &self,
        provider_ref: &str,
        amount: &Money,
        idempotency_key: &str,
    ) -> Result<ProviderPayment, PaymentFailure> {
        let (provider_ref, amount, key) = (provider_ref.to_owned(), wit_money(amount), idempotency_key.to_owned());
        let state = self.call(move |plugin| plugin.refund(&provider_ref, &amount, &key)).await?;
        self.payment(state)
    }

    async fn retrieve(&self, provider_ref: &str) -> Result<ProviderPayment, PaymentFailure> {
        let provider_ref = provider_ref.to_owned();
        let state = self.call(move |plugin| plugin.retrieve(&provider_ref)).await?;
        self.payment(state)
    }

    /// The WIT event has no payment reference (PayPal's `custom_id` stays inside the plugin), so
    /// `payment_ref` is `None`: the kernel finds the payment by its provider reference.
    async fn verify_webhook(&self, headers: &[(String, String)], body: &[u8]) -> Result<PaymentEvent, PaymentFailure> {
        let webhook = wit::Webhook { headers: headers.to_vec(), body: body.to_vec() };
        let event = self.call(move |plugin| plugin.verify_webhook(&webhook)).await?;
        if event.event_id.is_empty() || event.provider_ref.is_empty() {
            return Err(PaymentFailure::Invalid(format!(
                "payment plugin {} read an event without an id or a provider reference",
                self.name
            )));
        }
        Ok(PaymentEvent {
            event_id: event.event_id,
            provider_ref: event.provider_ref,
            payment_ref: None,
            status: status(event.status),
            amount: event.amount.map(money),
        })
    }
}
