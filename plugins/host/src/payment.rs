//! Payment-provider plugins: authorize, capture, cancel, refund, retrieve and verify a webhook,
//! each a guarded call with outbound HTTP limited to the manifest's hosts.

use std::collections::BTreeMap;

use wasmtime::component::Component;

use crate::bindings::payment::exports::berth::plugin::payment as wit;
use crate::bindings::payment::{PaymentProvider, PaymentProviderPre};
use crate::http::HttpPolicy;
use crate::runner::{self, Health, Runner};
use crate::{Limits, PluginError, PluginHost, PluginState};

pub use wit::{AuthorizeRequest, Money, PaymentError, PaymentEvent, PaymentState, PaymentStatus, Webhook};

/// A loaded payment-provider plugin.
pub struct PaymentPlugin {
    runner: Runner<PaymentProvider>,
}

/// The plugin's own answer: a payment state or the provider's error.
pub type PaymentResult<T> = Result<Result<T, PaymentError>, PluginError>;

impl PaymentPlugin {
    pub fn load(
        host: &PluginHost,
        id: &str,
        wasm: &[u8],
        limits: Limits,
        config: BTreeMap<String, String>,
        http: HttpPolicy,
    ) -> Result<Self, PluginError> {
        Self::from_component(host, id, &runner::component(host, wasm)?, limits, config, http)
    }

    pub fn from_component(
        host: &PluginHost,
        id: &str,
        component: &Component,
        limits: Limits,
        config: BTreeMap<String, String>,
        http: HttpPolicy,
    ) -> Result<Self, PluginError> {
        let runner = runner::world_runner!(
            host,
            id,
            component,
            limits,
            config,
            Some(http),
            PaymentProvider,
            PaymentProviderPre<PluginState>,
            "payment-provider"
        );
        Ok(Self { runner })
    }

    pub fn health(&self) -> Health {
        self.runner.health()
    }

    pub fn authorize(&self, request: &AuthorizeRequest) -> PaymentResult<PaymentState> {
        self.runner.call(|bindings, store| Ok(Ok(bindings.berth_plugin_payment().call_authorize(store, request)?)))
    }

    pub fn capture(&self, provider_ref: &str, amount: &Money, idempotency_key: &str) -> PaymentResult<PaymentState> {
        self.runner.call(|bindings, store| {
            Ok(Ok(bindings.berth_plugin_payment().call_capture(store, provider_ref, amount, idempotency_key)?))
        })
    }

    pub fn cancel(&self, provider_ref: &str, idempotency_key: &str) -> PaymentResult<PaymentState> {
        self.runner.call(|bindings, store| {
            Ok(Ok(bindings.berth_plugin_payment().call_cancel(store, provider_ref, idempotency_key)?))
        })
    }

    pub fn refund(&self, provider_ref: &str, amount: &Money, idempotency_key: &str) -> PaymentResult<PaymentState> {
        self.runner.call(|bindings, store| {
            Ok(Ok(bindings.berth_plugin_payment().call_refund(store, provider_ref, amount, idempotency_key)?))
        })
    }

    /// The provider's current view of a payment (reconciliation); moves no money.
    pub fn retrieve(&self, provider_ref: &str) -> PaymentResult<PaymentState> {
        self.runner
            .call(|bindings, store| Ok(Ok(bindings.berth_plugin_payment().call_retrieve(store, provider_ref)?)))
    }

    pub fn verify_webhook(&self, webhook: &Webhook) -> PaymentResult<PaymentEvent> {
        self.runner
            .call(|bindings, store| Ok(Ok(bindings.berth_plugin_payment().call_verify_webhook(store, webhook)?)))
    }
}
