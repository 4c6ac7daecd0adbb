//! berth's Telegram channel. Intake is berth's own webhook endpoint: the
//! `X-Telegram-Bot-Api-Secret-Token` header is compared in constant time, and updates are read
//! leniently (text and location messages, inline-button presses; anything else is no message).
//! Replies go out through the Bot API with teloxide's client, buttons as an inline keyboard and
//! a payment link as a URL button. [`fake`] is a local Bot API for tests and the demo.

pub mod fake;

use async_trait::async_trait;
use berth_kernel::chat::{ChannelError, ChannelInbound, ChatChannel};
use berth_kernel::conversation::MessageBody;
use serde_json::Value;
use subtle::ConstantTimeEq as _;
use teloxide_core::Bot;
use teloxide_core::payloads::{AnswerCallbackQuerySetters as _, SendMessageSetters as _};
use teloxide_core::requests::Requester as _;
use teloxide_core::types::{CallbackQueryId, ChatId, InlineKeyboardButton, InlineKeyboardMarkup};

/// The header Telegram sends the webhook's secret in.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";
/// Telegram's limit on a callback button's data.
const MAX_CALLBACK_DATA_BYTES: usize = 64;

/// The Telegram channel of one bot.
pub struct TelegramChannel {
    bot: Bot,
    webhook_secret: Option<String>,
    timezone: Option<String>,
}

impl std::fmt::Debug for TelegramChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramChannel").field("api_url", &self.bot.api_url().as_str()).finish_non_exhaustive()
    }
}

impl TelegramChannel {
    /// A channel for the bot `token`; `api_url` points it at another Bot API server (a local
    /// one, or the fake); `webhook_secret` is what `setWebhook` was given as `secret_token`.
    pub fn new(token: &str, api_url: Option<&str>, webhook_secret: Option<String>) -> Result<Self, String> {
        let mut bot = Bot::new(token);
        if let Some(url) = api_url {
            let url = reqwest::Url::parse(url).map_err(|error| format!("telegram api_url {url:?}: {error}"))?;
            bot = bot.set_api_url(url);
        }
        Ok(Self { bot, webhook_secret, timezone: None })
    }

    /// The timezone replies are written in (Telegram does not tell a user's).
    pub fn with_timezone(mut self, timezone: Option<String>) -> Self {
        self.timezone = timezone;
        self
    }
}

/// Long polling for local use, where Telegram cannot reach a webhook: `getUpdates` in a loop,
/// each update handed to `deliver` as the JSON a webhook would carry, offsets confirmed only
/// after `deliver` returned. A webhook and `getUpdates` exclude each other, so the webhook is
/// deleted first. Never returns; back-off on errors up to 30 s.
pub async fn poll<F, Fut>(api_url: Option<&str>, token: &str, deliver: F) -> std::convert::Infallible
where
    F: Fn(Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let base = api_url.unwrap_or("https://api.telegram.org/").trim_end_matches('/').to_owned();
    let client = reqwest::Client::new();
    let call = |method: &str, body: Value| {
        client
            .post(format!("{base}/bot{token}/{method}"))
            .json(&body)
            .timeout(std::time::Duration::from_secs(40))
            .send()
    };
    let mut offset = 0i64;
    let mut pause = std::time::Duration::from_secs(1);
    let mut webhook_deleted = false;
    loop {
        if !webhook_deleted {
            webhook_deleted =
                call("deleteWebhook", serde_json::json!({})).await.is_ok_and(|response| response.status().is_success());
        }
        let answer = async {
            let body =
                serde_json::json!({"offset": offset, "timeout": 25, "allowed_updates": ["message", "callback_query"]});
            call("getUpdates", body).await?.error_for_status()?.json::<Value>().await
        }
        .await;
        let updates = match answer {
            Ok(answer) => answer.get("result").and_then(Value::as_array).cloned().unwrap_or_default(),
            Err(error) => {
                tracing::warn!(error = %error, "telegram getUpdates failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(30));
                continue;
            }
        };
        pause = std::time::Duration::from_secs(1);
        for update in updates {
            if let Some(id) = update.get("update_id").and_then(Value::as_i64) {
                offset = offset.max(id + 1);
            }
            deliver(serde_json::to_vec(&update).unwrap_or_default()).await;
        }
    }
}

/// Reads one update; `None` for updates that carry no message for the bot (edits, joins).
pub fn read_update(update: &Value) -> Result<Option<ChannelInbound>, ChannelError> {
    let malformed = |what: &str| ChannelError::Malformed(format!("not a Telegram update: {what}"));
    let update_id = update.get("update_id").and_then(Value::as_i64).ok_or_else(|| malformed("no update_id"))?;
    if let Some(message) = update.get("message") {
        let chat =
            message.pointer("/chat/id").and_then(Value::as_i64).ok_or_else(|| malformed("message without chat.id"))?;
        let location = message
            .get("location")
            .and_then(|location| Some((location.get("latitude")?.as_f64()?, location.get("longitude")?.as_f64()?)));
        let text = message.get("text").or_else(|| message.get("caption")).and_then(Value::as_str).unwrap_or("");
        if text.is_empty() && location.is_none() {
            return Ok(None);
        }
        return Ok(Some(ChannelInbound {
            external_user: chat.to_string(),
            message_id: update_id.to_string(),
            text: text.to_owned(),
            location,
            acknowledge: None,
        }));
    }
    if let Some(query) = update.get("callback_query") {
        // A button press: its data is what the button says to send. Old or inline-message
        // queries have no `message`; their chat is the user's private chat (`from.id`).
        let chat = query
            .pointer("/message/chat/id")
            .and_then(Value::as_i64)
            .or_else(|| query.pointer("/from/id").and_then(Value::as_i64))
            .ok_or_else(|| malformed("callback_query without a chat or a user"))?;
        let id = match query.get("id") {
            Some(Value::String(id)) => id.clone(),
            Some(Value::Number(id)) => id.to_string(),
            _ => return Err(malformed("callback_query without id")),
        };
        let Some(data) = query.get("data").and_then(Value::as_str) else { return Ok(None) };
        return Ok(Some(ChannelInbound {
            external_user: chat.to_string(),
            message_id: update_id.to_string(),
            text: data.to_owned(),
            location: None,
            acknowledge: Some(id),
        }));
    }
    Ok(None)
}

fn keyboard(body: &MessageBody) -> Option<InlineKeyboardMarkup> {
    let mut rows: Vec<Vec<InlineKeyboardButton>> = body
        .choices
        .iter()
        .filter(|choice| choice.reply.len() <= MAX_CALLBACK_DATA_BYTES)
        .map(|choice| vec![InlineKeyboardButton::callback(choice.label.clone(), choice.reply.clone())])
        .collect();
    if let Some(link) = body.link.as_deref().and_then(|link| reqwest::Url::parse(link).ok()) {
        rows.push(vec![InlineKeyboardButton::url("Pay", link)]);
    }
    (!rows.is_empty()).then(|| InlineKeyboardMarkup::new(rows))
}

#[async_trait]
impl ChatChannel for TelegramChannel {
    fn name(&self) -> &str {
        "telegram"
    }

    fn default_timezone(&self) -> Option<&str> {
        self.timezone.as_deref()
    }

    async fn read_webhook(
        &self,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Vec<ChannelInbound>, ChannelError> {
        if let Some(secret) = &self.webhook_secret {
            let presented =
                headers.iter().find(|(name, _)| name.eq_ignore_ascii_case(SECRET_HEADER)).map(|(_, value)| value);
            let matches = presented.is_some_and(|presented| bool::from(presented.as_bytes().ct_eq(secret.as_bytes())));
            if !matches {
                return Err(ChannelError::Unauthenticated(format!("missing or wrong {SECRET_HEADER}")));
            }
        }
        let update: Value =
            serde_json::from_slice(body).map_err(|error| ChannelError::Malformed(format!("not JSON: {error}")))?;
        Ok(read_update(&update)?.into_iter().collect())
    }

    async fn acknowledge(&self, inbound: &ChannelInbound) -> Result<(), ChannelError> {
        let Some(id) = &inbound.acknowledge else { return Ok(()) };
        self.bot
            .answer_callback_query(CallbackQueryId(id.clone()))
            .text("")
            .await
            .map(|_| ())
            .map_err(|error| ChannelError::Unavailable(error.to_string()))
    }

    /// Telegram has no service window: a bot may write to a chat whenever the user has not
    /// blocked it.
    async fn send(
        &self,
        external_user: &str,
        body: &MessageBody,
        _last_inbound: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<(), ChannelError> {
        let chat: i64 = external_user
            .parse()
            .map_err(|_| ChannelError::Malformed(format!("{external_user:?} is not a Telegram chat id")))?;
        let mut request = self.bot.send_message(ChatId(chat), body.text.clone());
        if let Some(markup) = keyboard(body) {
            request = request.reply_markup(markup);
        }
        request.await.map(|_| ()).map_err(|error| ChannelError::Unavailable(error.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!("{}/../../../shared/wire-formats/telegram/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"))).unwrap()
    }

    #[test]
    fn real_updates_read_as_messages() {
        let text = read_update(&fixture("update.message-text.official-docs.json")).unwrap().unwrap();
        assert!(!text.text.is_empty() && text.location.is_none() && text.acknowledge.is_none());
        let teloxide = read_update(&fixture("update.message-text.teloxide.json")).unwrap().unwrap();
        assert!(!teloxide.text.is_empty());
        let location = read_update(&fixture("update.message-location.assembled.json")).unwrap().unwrap();
        assert!(location.location.is_some(), "{location:?}");
        // The docs' old callback example (no message, `type` inside `from`) still reads.
        let pressed = read_update(&fixture("update.callback-query.official-docs.json")).unwrap().unwrap();
        assert!(pressed.acknowledge.is_some() && !pressed.text.is_empty(), "{pressed:?}");
        // An edit is not a new message.
        assert_eq!(read_update(&fixture("update.edited-message.official-docs.json")).unwrap(), None);
        assert!(read_update(&serde_json::json!({"message": {}})).is_err());
    }

    #[tokio::test]
    async fn the_webhook_secret_is_required_when_set() {
        let channel = TelegramChannel::new("123:abc", Some("http://127.0.0.1:1/"), Some("s3cret".into())).unwrap();
        let body = serde_json::to_vec(&fixture("update.message-text.official-docs.json")).unwrap();
        let with = |value: &str| vec![(SECRET_HEADER.to_owned(), value.to_owned())];
        assert_eq!(channel.read_webhook(&with("s3cret"), &body).await.unwrap().len(), 1);
        assert!(matches!(channel.read_webhook(&with("wrong"), &body).await, Err(ChannelError::Unauthenticated(_))));
        assert!(matches!(channel.read_webhook(&[], &body).await, Err(ChannelError::Unauthenticated(_))));
        assert!(matches!(channel.read_webhook(&with("s3cret"), b"{").await, Err(ChannelError::Malformed(_))));
    }
}
