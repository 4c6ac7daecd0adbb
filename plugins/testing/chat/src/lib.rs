//! A minimal chat channel for the host's tests: a webhook authenticated by a shared token header
//! (the way Telegram's secret token works), and messages sent to the `base_url` in its config.

// The generated export glue is `unsafe` (raw ABI functions); it is wit-bindgen's, not ours.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod plugin {
    use serde_json::{Value, json};

    wit_bindgen::generate!({ path: "../../wit", world: "chat-channel" });

    use berth::plugin::{clock, config, http};
    use exports::berth::plugin::channel::{ChannelError, Guest, InboundMessage, OutboundMessage, Webhook};

    struct Plugin;

    impl Guest for Plugin {
        fn verify_and_parse(webhook: Webhook) -> Result<Vec<InboundMessage>, ChannelError> {
            let token = config::get("token").unwrap_or_default();
            let presented = webhook
                .headers
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case("x-test-token"))
                .map(|(_, value)| value.as_str());
            if token.is_empty() || presented != Some(token.as_str()) {
                return Err(ChannelError::SignatureInvalid("missing or wrong x-test-token".into()));
            }
            let update: Value = serde_json::from_slice(&webhook.body)
                .map_err(|e| ChannelError::InvalidRequest(format!("body is not JSON: {e}")))?;
            let text = |key: &str| update[key].as_str().map(str::to_owned);
            Ok(vec![InboundMessage {
                message_id: update["id"].to_string(),
                sender_id: text("from").unwrap_or_default(),
                chat_id: text("chat").unwrap_or_default(),
                text: text("text"),
                location: None,
                button_payload: None,
                sent_at_ms: clock::now_ms(),
            }])
        }

        fn verify_subscription(_query: Vec<(String, String)>) -> Result<String, ChannelError> {
            Err(ChannelError::InvalidRequest("this channel has no subscription handshake".into()))
        }

        fn send(message: OutboundMessage) -> Result<String, ChannelError> {
            let base =
                config::get("base_url").ok_or_else(|| ChannelError::InvalidRequest("base_url not set".into()))?;
            let buttons: Vec<&str> = message.buttons.iter().map(|button| button.label.as_str()).collect();
            let request = http::Request {
                method: "POST".into(),
                url: format!("{base}/send"),
                headers: vec![http::Header { name: "content-type".into(), value: "application/json".into() }],
                body: json!({"chat": message.chat_id, "text": message.text, "buttons": buttons})
                    .to_string()
                    .into_bytes(),
            };
            let response = http::send(&request).map_err(|e| ChannelError::Unavailable(format!("{e:?}")))?;
            let value: Value = serde_json::from_slice(&response.body)
                .map_err(|e| ChannelError::Unavailable(format!("channel answered non-JSON: {e}")))?;
            value["message_id"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| ChannelError::Unavailable("no message_id".into()))
        }
    }

    export!(Plugin);
}
