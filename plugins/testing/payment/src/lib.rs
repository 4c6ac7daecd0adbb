//! A minimal payment provider for the host's tests. It speaks a tiny JSON protocol to the
//! `base_url` in its config (a local fake), through the host's allow-listed HTTP capability.
//! An authorization whose description is `fetch <url>` instead calls that URL, so tests can
//! check that hosts off the allow-list are refused.

// The generated export glue is `unsafe` (raw ABI functions); it is wit-bindgen's, not ours.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod plugin {
    use serde_json::{Value, json};

    wit_bindgen::generate!({ path: "../../wit", world: "payment-provider" });

    use berth::plugin::{config, http};
    use exports::berth::plugin::payment::{
        AuthorizeRequest, Guest, Money, PaymentError, PaymentEvent, PaymentState, PaymentStatus, Webhook,
    };

    struct Plugin;

    fn status(text: &str) -> PaymentStatus {
        match text {
            "authorized" => PaymentStatus::Authorized,
            "captured" => PaymentStatus::Captured,
            "voided" => PaymentStatus::Voided,
            "refunded" => PaymentStatus::Refunded,
            "requires_action" => PaymentStatus::RequiresAction,
            _ => PaymentStatus::Failed,
        }
    }

    fn describe(error: http::HttpError) -> String {
        match error {
            http::HttpError::Denied(reason) => format!("denied: {reason}"),
            http::HttpError::Timeout => "timeout".into(),
            http::HttpError::TooLarge => "too large".into(),
            http::HttpError::Failed(reason) => format!("failed: {reason}"),
        }
    }

    fn post(path: &str, key: &str, body: Value) -> Result<Value, PaymentError> {
        let base = config::get("base_url").ok_or_else(|| PaymentError::InvalidRequest("base_url not set".into()))?;
        let request = http::Request {
            method: "POST".into(),
            url: format!("{base}{path}"),
            headers: vec![
                http::Header { name: "content-type".into(), value: "application/json".into() },
                http::Header { name: "idempotency-key".into(), value: key.into() },
            ],
            body: body.to_string().into_bytes(),
        };
        let response = http::send(&request).map_err(|e| PaymentError::Unavailable(describe(e)))?;
        if response.status >= 500 {
            return Err(PaymentError::Unavailable(format!("provider answered {}", response.status)));
        }
        let value: Value = serde_json::from_slice(&response.body)
            .map_err(|e| PaymentError::Unavailable(format!("provider answered non-JSON: {e}")))?;
        if response.status >= 400 {
            return Err(PaymentError::Declined(value["error"].as_str().unwrap_or("declined").into()));
        }
        Ok(value)
    }

    fn state(value: &Value, amount: Money) -> PaymentState {
        PaymentState {
            provider_ref: value["id"].as_str().unwrap_or_default().into(),
            status: status(value["status"].as_str().unwrap_or_default()),
            action_url: value["action_url"].as_str().map(str::to_owned),
            amount,
        }
    }

    impl Guest for Plugin {
        fn authorize(request: AuthorizeRequest) -> Result<PaymentState, PaymentError> {
            if let Some(url) = request.description.strip_prefix("fetch ") {
                let probe = http::Request { method: "GET".into(), url: url.into(), headers: vec![], body: vec![] };
                let response = http::send(&probe).map_err(|e| PaymentError::Unavailable(describe(e)))?;
                return Err(PaymentError::InvalidRequest(format!("fetched {} bytes", response.body.len())));
            }
            let body = json!({
                "booking": request.booking_ref,
                "amount": request.amount.amount_minor,
                "currency": request.amount.currency,
            });
            let value = post("/authorize", &request.idempotency_key, body)?;
            Ok(state(&value, request.amount))
        }

        fn capture(provider_ref: String, amount: Money, idempotency_key: String) -> Result<PaymentState, PaymentError> {
            let value = post("/capture", &idempotency_key, json!({"id": provider_ref, "amount": amount.amount_minor}))?;
            Ok(state(&value, amount))
        }

        fn cancel(provider_ref: String, idempotency_key: String) -> Result<PaymentState, PaymentError> {
            let value = post("/cancel", &idempotency_key, json!({"id": provider_ref}))?;
            Ok(state(&value, Money { amount_minor: 0, currency: String::new() }))
        }

        fn refund(provider_ref: String, amount: Money, idempotency_key: String) -> Result<PaymentState, PaymentError> {
            let value = post("/refund", &idempotency_key, json!({"id": provider_ref, "amount": amount.amount_minor}))?;
            Ok(state(&value, amount))
        }

        fn retrieve(provider_ref: String) -> Result<PaymentState, PaymentError> {
            let value = post("/retrieve", "", json!({"id": provider_ref}))?;
            Ok(state(&value, Money { amount_minor: 0, currency: String::new() }))
        }

        fn verify_webhook(webhook: Webhook) -> Result<PaymentEvent, PaymentError> {
            let secret = config::get("webhook_secret").unwrap_or_default();
            let presented = webhook
                .headers
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case("x-test-signature"))
                .map(|(_, value)| value.as_str());
            if secret.is_empty() || presented != Some(secret.as_str()) {
                return Err(PaymentError::SignatureInvalid("missing or wrong x-test-signature".into()));
            }
            let value: Value = serde_json::from_slice(&webhook.body)
                .map_err(|e| PaymentError::InvalidRequest(format!("body is not JSON: {e}")))?;
            Ok(PaymentEvent {
                event_id: value["event"].as_str().unwrap_or_default().into(),
                provider_ref: value["id"].as_str().unwrap_or_default().into(),
                status: status(value["status"].as_str().unwrap_or_default()),
                amount: None,
            })
        }
    }

    export!(Plugin);
}
