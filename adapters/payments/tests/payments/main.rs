//! Integration tests of the payment adapters against the local provider fakes, over loopback
//! HTTP, through the real adapters. One binary, one module per provider.

mod paypal;
mod stripe;
