//! WhatsApp (Cloud API) as a berth chat-channel plugin (world `chat-channel`).
//!
//! - **Subscription.** Meta checks the callback URL with
//!   `GET ?hub.mode=subscribe&hub.challenge=N&hub.verify_token=T`; the challenge is answered when
//!   the token matches the configured `verify_token` (compared in constant time).
//! - **Webhooks.** `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>` is
//!   verified over the bytes as received, in constant time, before the body is read. Text,
//!   location, reply-button (`interactive.button_reply`), list (`interactive.list_reply`) and
//!   template quick-reply (`button`) messages are read; delivery statuses and other events carry
//!   no message. Both the phone-number shape and the business-scoped user id (BSUID) shape of
//!   `contacts` are read.
//! - **Replies.** `POST <base_url>/<phone_number_id>/messages` with the access token. Inside the
//!   24-hour customer service window: text; up to 3 choices as reply buttons (titles cut to 20
//!   characters); 4 to 10 as a list; links written into the text. Outside it (or when the user
//!   never wrote), only a template may be sent: the configured `reminder_template`, with the
//!   reply as its one body parameter; without one the send is refused.
//!
//! Configuration: `base_url` (default `https://graph.facebook.com/v21.0`), `phone_number_id`
//! (messages to other numbers of the account are not read), `reminder_template`,
//! `template_language` (default `en`), `timezone` (read by the host: the timezone replies are
//! written in), and the secrets `access_token`, `app_secret` and `verify_token`
//! (`BERTH_PLUGIN_WHATSAPP_<KEY>`).
//!
//! Everything here but the component glue is pure and tested natively.

#[cfg(target_arch = "wasm32")]
mod component;

use hmac::{Hmac, Mac as _};
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

/// The header Meta signs webhooks in.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// The Graph API used when `base_url` is not configured.
pub const DEFAULT_BASE_URL: &str = "https://graph.facebook.com/v21.0";
/// How long after the user's last message free-form replies may be sent.
pub const SERVICE_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;
/// At most this many reply buttons in one message.
pub const MAX_REPLY_BUTTONS: usize = 3;
/// At most this many rows in a list message.
pub const MAX_LIST_ROWS: usize = 10;
const MAX_BUTTON_TITLE: usize = 20;
const MAX_ROW_TITLE: usize = 24;
const MAX_BUTTON_ID: usize = 256;
const MAX_ROW_ID: usize = 200;
const MAX_INTERACTIVE_BODY: usize = 1024;
const MAX_TEXT_BODY: usize = 4096;
const MAX_TEMPLATE_PARAMETER: usize = 1024;

/// Why the plugin refused something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Not from Meta: the signature or the verify token is wrong or missing.
    Unauthenticated(String),
    /// Not a request this channel understands, or one WhatsApp refuses for good.
    Invalid(String),
    /// WhatsApp could not take it now; trying later may work.
    Unavailable(String),
}

/// One message a user sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    /// The `wamid`: the inbox key.
    pub message_id: String,
    /// The user (`wa_id`, or the business-scoped user id when there is no phone number).
    pub sender_id: String,
    /// Where to answer (the same id).
    pub chat_id: String,
    pub text: Option<String>,
    pub location: Option<(f64, f64)>,
    /// The id of a pressed reply button or list row, or a template button's payload.
    pub button_payload: Option<String>,
    pub sent_at_ms: u64,
    /// The business number it was sent to (`metadata.phone_number_id`).
    pub phone_number_id: Option<String>,
}

/// A choice or a link to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Button {
    pub label: String,
    pub payload: Option<String>,
    pub url: Option<String>,
}

/// The template sent outside the service window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub name: String,
    pub language: String,
}

/// Answers Meta's subscription check: the challenge, when the mode is `subscribe` and the token
/// matches.
pub fn verify_subscription(query: &[(String, String)], verify_token: Option<&str>) -> Result<String, Failure> {
    let get = |key: &str| query.iter().find(|(name, _)| name == key).map(|(_, value)| value.as_str());
    let (Some(mode), Some(challenge)) = (get("hub.mode"), get("hub.challenge")) else {
        return Err(Failure::Invalid("not a subscription check: hub.mode and hub.challenge are required".into()));
    };
    if mode != "subscribe" {
        return Err(Failure::Invalid(format!("hub.mode is {mode:?}; only \"subscribe\" is answered")));
    }
    let Some(expected) = verify_token.filter(|token| !token.is_empty()) else {
        return Err(Failure::Unauthenticated("no verify_token is configured".into()));
    };
    let presented = get("hub.verify_token").unwrap_or("");
    if !bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
        return Err(Failure::Unauthenticated("hub.verify_token does not match".into()));
    }
    Ok(challenge.to_owned())
}

/// The `X-Hub-Signature-256` value for a body: `sha256=` and the lowercase hex HMAC.
pub fn signature(app_secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a webhook's signature over the raw body, in constant time.
pub fn verify_signature(app_secret: &str, headers: &[(String, String)], body: &[u8]) -> Result<(), Failure> {
    if app_secret.is_empty() {
        return Err(Failure::Unauthenticated("no app_secret is configured".into()));
    }
    let presented = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(SIGNATURE_HEADER))
        .map(|(_, value)| value.trim())
        .ok_or_else(|| Failure::Unauthenticated(format!("no {SIGNATURE_HEADER} header")))?;
    let presented = presented.strip_prefix("sha256=").unwrap_or(presented);
    let Ok(presented) = hex::decode(presented) else {
        return Err(Failure::Unauthenticated(format!("{SIGNATURE_HEADER} is not hex")));
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(body);
    // `verify_slice` compares in constant time.
    if mac.verify_slice(&presented).is_err() {
        return Err(Failure::Unauthenticated(format!("{SIGNATURE_HEADER} does not match the body")));
    }
    Ok(())
}

/// Reads the messages of a (verified) webhook body. Statuses and other fields read as none;
/// a message of a kind berth does not read (a sticker, say) comes with neither text nor
/// location.
pub fn parse_webhook(body: &[u8]) -> Result<Vec<Inbound>, Failure> {
    let invalid = |what: &str| Failure::Invalid(format!("not a WhatsApp webhook: {what}"));
    let update: Value = serde_json::from_slice(body).map_err(|error| invalid(&format!("not JSON ({error})")))?;
    if update.get("object").and_then(Value::as_str) != Some("whatsapp_business_account") {
        return Err(invalid("object is not \"whatsapp_business_account\""));
    }
    let entries = update.get("entry").and_then(Value::as_array).ok_or_else(|| invalid("no entry list"))?;
    let mut messages = Vec::new();
    for change in entries.iter().filter_map(|entry| entry.get("changes")?.as_array()).flatten() {
        if change.get("field").and_then(Value::as_str) != Some("messages") {
            continue;
        }
        let Some(value) = change.get("value") else { continue };
        let phone_number_id = value.pointer("/metadata/phone_number_id").and_then(Value::as_str);
        for message in value.get("messages").and_then(Value::as_array).into_iter().flatten() {
            let mut read = read_message(message)?;
            read.phone_number_id = phone_number_id.map(str::to_owned);
            messages.push(read);
        }
    }
    Ok(messages)
}

fn read_message(message: &Value) -> Result<Inbound, Failure> {
    let text_of = |pointer: &str| message.pointer(pointer).and_then(Value::as_str).map(str::to_owned);
    let message_id = text_of("/id").ok_or_else(|| Failure::Invalid("a message without an id".into()))?;
    // The phone number when there is one; otherwise the message's own business-scoped user id
    // (never a `contacts` entry, which need not be this message's sender).
    let sender_id = text_of("/from")
        .or_else(|| text_of("/from_user_id"))
        .ok_or_else(|| Failure::Invalid(format!("message {message_id} has no sender")))?;
    let sent_at_ms = match message.get("timestamp") {
        Some(Value::String(seconds)) => seconds.parse::<u64>().ok(),
        Some(Value::Number(seconds)) => seconds.as_u64(),
        _ => None,
    }
    .map_or(0, |seconds| seconds.saturating_mul(1000));
    let (mut text, mut location, mut button_payload) = (None, None, None);
    match message.get("type").and_then(Value::as_str).unwrap_or("") {
        "text" => text = text_of("/text/body"),
        "location" => {
            let coordinate = |key: &str| message.pointer(&format!("/location/{key}")).and_then(Value::as_f64);
            location = coordinate("latitude").zip(coordinate("longitude"));
        }
        "interactive" => {
            let reply =
                message.pointer("/interactive/button_reply").or_else(|| message.pointer("/interactive/list_reply"));
            if let Some(reply) = reply {
                button_payload = reply.get("id").and_then(Value::as_str).map(str::to_owned);
                text = reply.get("title").and_then(Value::as_str).map(str::to_owned);
            }
        }
        "button" => {
            button_payload = text_of("/button/payload");
            text = text_of("/button/text");
        }
        _ => {}
    }
    Ok(Inbound {
        message_id,
        chat_id: sender_id.clone(),
        sender_id,
        text,
        location,
        button_payload,
        sent_at_ms,
        phone_number_id: None,
    })
}

/// Whether free-form messages may still be sent.
pub fn within_window(now_ms: u64, last_inbound_ms: Option<u64>) -> bool {
    last_inbound_ms.is_some_and(|last| now_ms.saturating_sub(last) < SERVICE_WINDOW_MS)
}

/// `text` cut to `max` characters, with an ellipsis when cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut kept: String = text.chars().take(max - 1).collect();
    kept.push('…');
    kept
}

/// The JSON body of `POST /<phone-number-id>/messages` for a reply.
pub fn render(
    to: &str,
    text: &str,
    buttons: &[Button],
    within_window: bool,
    template: Option<&Template>,
) -> Result<Value, Failure> {
    let mut body = text.trim().to_owned();
    for button in buttons.iter().filter(|button| button.payload.is_none()) {
        if let Some(url) = &button.url {
            body.push_str(&format!("\n\n{}: {url}", button.label));
        }
    }
    let head = json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": to});
    let with = |kind: &str, content: Value| {
        let mut message = head.clone();
        message["type"] = json!(kind);
        message[kind] = content;
        message
    };
    if !within_window {
        let Some(template) = template else {
            return Err(Failure::Invalid(
                "outside WhatsApp's 24-hour window only a template may be sent, and no reminder_template is configured"
                    .into(),
            ));
        };
        // A template parameter may not hold newlines, tabs or more than four spaces in a row.
        let flat = body.split_whitespace().collect::<Vec<_>>().join(" ");
        let parameter = json!({"type": "text", "text": cut(&flat, MAX_TEMPLATE_PARAMETER)});
        return Ok(with(
            "template",
            json!({
                "name": template.name,
                "language": {"code": template.language},
                "components": [{"type": "body", "parameters": [parameter]}],
            }),
        ));
    }
    let choices: Vec<(&str, &str)> = buttons
        .iter()
        .filter_map(|button| Some((button.label.as_str(), button.payload.as_deref()?)))
        .filter(|(_, payload)| !payload.is_empty())
        .collect();
    // Reply buttons take ids up to 256 characters, list rows up to 200.
    let max_id = if choices.len() <= MAX_REPLY_BUTTONS { MAX_BUTTON_ID } else { MAX_ROW_ID };
    let choices: Vec<(&str, &str)> =
        choices.into_iter().filter(|(_, payload)| payload.chars().count() <= max_id).collect();
    if body.is_empty() {
        body = "…".into();
    }
    if choices.is_empty() {
        let mut text = json!({"body": cut(&body, MAX_TEXT_BODY)});
        if body.contains("https://") {
            text["preview_url"] = json!(true);
        }
        return Ok(with("text", text));
    }
    if choices.len() <= MAX_REPLY_BUTTONS {
        let buttons: Vec<Value> = choices
            .iter()
            .map(|(label, id)| json!({"type": "reply", "reply": {"id": id, "title": cut(label, MAX_BUTTON_TITLE)}}))
            .collect();
        return Ok(with(
            "interactive",
            json!({"type": "button", "body": {"text": cut(&body, MAX_INTERACTIVE_BODY)}, "action": {"buttons": buttons}}),
        ));
    }
    let rows: Vec<Value> = choices
        .iter()
        .take(MAX_LIST_ROWS)
        .map(|(label, id)| {
            let mut row = json!({"id": id, "title": cut(label, MAX_ROW_TITLE)});
            if label.chars().count() > MAX_ROW_TITLE {
                row["description"] = json!(cut(label, 72));
            }
            row
        })
        .collect();
    Ok(with(
        "interactive",
        json!({
            "type": "list",
            "body": {"text": cut(&body, MAX_INTERACTIVE_BODY)},
            "action": {"button": "Choose", "sections": [{"title": "Options", "rows": rows}]},
        }),
    ))
}

/// Reads the Graph API's answer to a send: the new message's `wamid`, or why it failed.
pub fn read_send_answer(status: u16, body: &[u8]) -> Result<String, Failure> {
    let answer: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        return answer
            .pointer("/messages/0/id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| Failure::Unavailable("WhatsApp answered without a message id".into()));
    }
    let error = answer.get("error");
    let code = error.and_then(|error| error.get("code")).and_then(Value::as_i64);
    let message = error.and_then(|error| error.get("message")).and_then(Value::as_str).unwrap_or("no error message");
    let described = format!("WhatsApp answered {status} (code {}): {message}", code.unwrap_or(0));
    // Throttling (4, 80007, 130429, 131056), temporary errors (1, 2, 131016) and server errors
    // may pass; an expired token (190) needs the operator, but later calls work once it is fixed.
    let temporary = matches!(code, Some(1 | 2 | 4 | 190 | 80007 | 130429 | 131016 | 131056));
    if status == 429 || status >= 500 || temporary {
        Err(Failure::Unavailable(described))
    } else {
        Err(Failure::Invalid(described))
    }
}

#[cfg(test)]
mod tests;
