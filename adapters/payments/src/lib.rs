//! Payment adapters for the kernel's [`berth_kernel::payment::PaymentProvider`] port:
//! - [`stripe`]: Stripe through async-stripe (manual-capture PaymentIntents, Checkout for chat);
//! - [`plugin`]: any payment-provider Wasm plugin (PayPal ships as one);
//! - [`fake`]: local Stripe and PayPal servers that honour the real wire formats, for tests and
//!   the demo.

pub mod fake;
pub mod plugin;
pub mod stripe;
pub mod stripe_signature;
