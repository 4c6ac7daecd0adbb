//! The component: the WIT exports over [`crate`]'s pure functions, the configuration, and the
//! Graph API call through the host's HTTP import.

// The generated export glue is `unsafe` (raw ABI functions); it is wit-bindgen's, not ours.
#![allow(unsafe_code)]

wit_bindgen::generate!({ path: "../../wit", world: "chat-channel" });

use berth::plugin::{clock, config, http};
use exports::berth::plugin::channel::{ChannelError, GeoPoint, Guest, InboundMessage, OutboundMessage, Webhook};

use crate::{Failure, Template};

struct Plugin;

export!(Plugin);

impl From<Failure> for ChannelError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Unauthenticated(reason) => ChannelError::SignatureInvalid(reason),
            Failure::Invalid(reason) => ChannelError::InvalidRequest(reason),
            Failure::Unavailable(reason) => ChannelError::Unavailable(reason),
        }
    }
}

fn required(key: &str) -> Result<String, ChannelError> {
    config::get(key)
        .filter(|value| !value.is_empty())
        .ok_or_else(|| ChannelError::InvalidRequest(format!("{key} is not configured")))
}

impl Guest for Plugin {
    fn verify_subscription(query: Vec<(String, String)>) -> Result<String, ChannelError> {
        Ok(crate::verify_subscription(&query, config::get("verify_token").as_deref())?)
    }

    fn verify_and_parse(webhook: Webhook) -> Result<Vec<InboundMessage>, ChannelError> {
        crate::verify_signature(&config::get("app_secret").unwrap_or_default(), &webhook.headers, &webhook.body)?;
        let ours = config::get("phone_number_id").filter(|id| !id.is_empty());
        Ok(crate::parse_webhook(&webhook.body)?
            .into_iter()
            // An account may hold several numbers; only this channel's are read.
            .filter(|message| ours.is_none() || message.phone_number_id == ours)
            .map(|message| InboundMessage {
                message_id: message.message_id,
                sender_id: message.sender_id,
                chat_id: message.chat_id,
                text: message.text,
                location: message.location.map(|(lat, lon)| GeoPoint { lat, lon }),
                button_payload: message.button_payload,
                sent_at_ms: message.sent_at_ms,
            })
            .collect())
    }

    fn send(message: OutboundMessage) -> Result<String, ChannelError> {
        let base = config::get("base_url").filter(|url| !url.is_empty());
        let base = base.as_deref().unwrap_or(crate::DEFAULT_BASE_URL).trim_end_matches('/').to_owned();
        let phone_number_id = required("phone_number_id")?;
        let token = required("access_token")?;
        let template = config::get("reminder_template").filter(|name| !name.is_empty()).map(|name| Template {
            name,
            language: config::get("template_language").filter(|code| !code.is_empty()).unwrap_or_else(|| "en".into()),
        });
        let buttons: Vec<crate::Button> = message
            .buttons
            .into_iter()
            .map(|button| crate::Button { label: button.label, payload: button.payload, url: button.url })
            .collect();
        let within = crate::within_window(clock::now_ms(), message.last_inbound_ms);
        let body = crate::render(&message.chat_id, &message.text, &buttons, within, template.as_ref())?;
        let request = http::Request {
            method: "POST".into(),
            url: format!("{base}/{phone_number_id}/messages"),
            headers: vec![
                http::Header { name: "content-type".into(), value: "application/json".into() },
                http::Header { name: "authorization".into(), value: format!("Bearer {token}") },
            ],
            body: body.to_string().into_bytes(),
        };
        let response = http::send(&request).map_err(|error| match error {
            http::HttpError::Denied(host) => ChannelError::InvalidRequest(format!("{host} is not allow-listed")),
            http::HttpError::Timeout => ChannelError::Unavailable("WhatsApp did not answer in time".into()),
            http::HttpError::TooLarge => ChannelError::Unavailable("WhatsApp's answer was too large".into()),
            http::HttpError::Failed(reason) => ChannelError::Unavailable(reason),
        })?;
        Ok(crate::read_send_answer(response.status, &response.body)?)
    }
}
