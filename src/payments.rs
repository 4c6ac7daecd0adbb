//! Wires the configured payment providers into the kernel: Stripe (built in) and payment
//! plugins from the registry (PayPal is bundled), in order of preference.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use berth_kernel::payment::{
    AuthorizeRequest, Money, PaymentEvent, PaymentFailure, PaymentProvider, Payments, ProviderPayment,
};
use berth_payments::plugin::PluginPaymentProvider;
use berth_payments::stripe::{StripeConfig, StripeProvider};
use berth_plugin_host::Registry;
use berth_plugin_host::registry::LoadedPlugin;

use crate::config::Config;

/// The providers `payments.providers` names, with the configured breaker, backoff and lease.
pub fn payments(config: &Config, registry: Option<&Registry>) -> anyhow::Result<Payments> {
    let settings = &config.payments;
    let mut providers: Vec<Arc<dyn PaymentProvider>> = Vec::new();
    for name in &settings.providers {
        if providers.iter().any(|provider| provider.name() == name) {
            anyhow::bail!("payments.providers lists \"{name}\" twice");
        }
        let provider: Arc<dyn PaymentProvider> = match name.as_str() {
            "stripe" => {
                let stripe = settings
                    .stripe
                    .as_ref()
                    .context("payments.providers lists \"stripe\" but [payments.stripe] is not set")?;
                let mut client = StripeConfig::new(stripe.secret_key.expose());
                client.webhook_secrets =
                    stripe.webhook_secrets.iter().map(|secret| secret.expose().to_owned()).collect();
                client.base_url = stripe.base_url.clone();
                client.timeout = Duration::from_secs(stripe.timeout_secs.max(1));
                client.checkout_success_url = stripe.return_url.clone();
                client.checkout_cancel_url = stripe.return_url.clone();
                Arc::new(StripeProvider::new(client).context("setting payments.stripe")?)
            }
            plugin => {
                let registry = registry
                    .with_context(|| format!("payments.providers lists \"{plugin}\", a plugin, but plugins are off"))?;
                match registry.plugin(plugin) {
                    Some(LoadedPlugin::Payment(_)) => {}
                    Some(_) => anyhow::bail!("payments.providers lists \"{plugin}\", which is not a payment plugin"),
                    None => anyhow::bail!(
                        "payments.providers lists \"{plugin}\", but no payment plugin of that id is loaded \
                         (a bundled one loads once [plugins.config.{plugin}] is set)"
                    ),
                }
                Arc::new(RegistryProvider { name: plugin.to_owned(), registry: registry.clone() })
            }
        };
        providers.push(provider);
    }
    Ok(Payments::new(providers)
        .with_breaker(settings.breaker_threshold, Duration::from_secs(settings.breaker_cooldown_secs))
        .with_backoff(Duration::from_millis(settings.retry_base_ms.max(1)), Duration::from_secs(300))
        .with_lease(Duration::from_secs(settings.lease_secs.max(1)))
        .with_quiet(Duration::from_secs(settings.reconcile_quiet_secs))
        .with_capture_within(chrono::Duration::hours(i64::try_from(settings.capture_within_hours).unwrap_or(144))))
}

/// A payment plugin looked up at each call, so an upgraded plugin takes over at once.
struct RegistryProvider {
    name: String,
    registry: Registry,
}

impl RegistryProvider {
    fn current(&self) -> Result<PluginPaymentProvider, PaymentFailure> {
        match self.registry.plugin(&self.name) {
            Some(LoadedPlugin::Payment(plugin)) => Ok(PluginPaymentProvider::new(self.name.clone(), plugin)),
            _ => Err(PaymentFailure::Unavailable(format!("payment plugin '{}' is not loaded", self.name))),
        }
    }
}

#[async_trait]
impl PaymentProvider for RegistryProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn authorize(&self, request: &AuthorizeRequest) -> Result<ProviderPayment, PaymentFailure> {
        self.current()?.authorize(request).await
    }

    async fn capture(&self, provider_ref: &str, amount: &Money, key: &str) -> Result<ProviderPayment, PaymentFailure> {
        self.current()?.capture(provider_ref, amount, key).await
    }

    async fn cancel(&self, provider_ref: &str, key: &str) -> Result<ProviderPayment, PaymentFailure> {
        self.current()?.cancel(provider_ref, key).await
    }

    async fn refund(&self, provider_ref: &str, amount: &Money, key: &str) -> Result<ProviderPayment, PaymentFailure> {
        self.current()?.refund(provider_ref, amount, key).await
    }

    async fn retrieve(&self, provider_ref: &str) -> Result<ProviderPayment, PaymentFailure> {
        self.current()?.retrieve(provider_ref).await
    }

    async fn verify_webhook(&self, headers: &[(String, String)], body: &[u8]) -> Result<PaymentEvent, PaymentFailure> {
        self.current()?.verify_webhook(headers, body).await
    }
}
