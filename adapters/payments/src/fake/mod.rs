//! Local fakes of the payment providers: small HTTP servers on loopback that keep state, speak
//! the providers' wire formats, sign and send webhooks, and fail on request.

pub mod paypal;
pub mod stripe;
