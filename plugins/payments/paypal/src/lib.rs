//! PayPal as a berth payment-provider plugin (world `payment-provider`): PayPal Checkout
//! orders with intent `AUTHORIZE`, then Payments v2 captures, voids and refunds, over the host's
//! allow-listed HTTP.
//!
//! **The provider reference is the order id** for the whole life of a payment; authorizations,
//! captures and refunds are found through the order when a call needs them.
//!
//! - `authorize` creates the order (`PayPal-Request-Id` = the idempotency key) and answers
//!   `requires-action` with the approval page. Nothing is held yet.
//! - The payer approves on PayPal; PayPal sends `CHECKOUT.ORDER.APPROVED`. `verify-webhook`
//!   then **authorizes the order** (`POST /v2/checkout/orders/{id}/authorize`, request id
//!   `<order id>-authorize`) and reports `authorized`: with intent `AUTHORIZE` an approved order
//!   holds nothing until the merchant authorizes it, server-side. `capture` does the same for an
//!   approved order that no webhook has authorized yet; the shared request id makes the two one
//!   authorization.
//! - `capture` captures the authorization (`final_capture`: the rest of the hold is released),
//!   `cancel` voids it (an order nobody authorized holds nothing: `voided` without a call),
//!   `refund` refunds the capture, `retrieve` reads the order and never moves money (an
//!   approved, unauthorized order still `requires-action`).
//! - Webhooks are verified by PayPal itself (`POST /v1/notifications/verify-webhook-signature`
//!   with the event bytes as received). A pending capture is reported as `authorized`: the money
//!   has not moved yet.
//!
//! Known limit: if the payer approves an order after berth cancelled it, the approval webhook
//! still authorizes it; the kernel, which knows the payment is voided, must cancel again.
//!
//! Configuration: `base_url` (`https://api-m.paypal.com` or `https://api-m.sandbox.paypal.com`),
//! `client_id`, `webhook_id`, and the secret `client_secret` (`BERTH_PLUGIN_PAYPAL_CLIENT_SECRET`).
//!
//! [`money`] and [`model`] are pure and tested natively; the component glue is compiled for
//! `wasm32` only.

#[cfg(target_arch = "wasm32")]
mod component;
pub mod model;
pub mod money;
