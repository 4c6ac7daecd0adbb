//! A fake of the Telegram Bot API on loopback, for tests and benchmarks. It answers as the
//! official server does: `POST /bot<token>/<method>` with a JSON body, method names matched
//! without regard to case, `{"ok":true,"result":…}` on success and
//! `{"ok":false,"error_code":N,"description":"…"}` with the HTTP status equal to `error_code` on
//! failure (401 `Unauthorized` for a wrong token, 400 `Bad Request: …`, 404 for an unknown
//! method). It records every message the bot sends, and delivers updates to the bot's webhook
//! as Telegram does: a JSON `POST` with the secret token header and the body starting
//! `{"update_id":N,` and a newline.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use poem::http::StatusCode;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::{Data, Path};
use poem::{EndpointExt, IntoResponse, Response, Route, Server, handler, post};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::SECRET_HEADER;

/// A message the bot sent, as the fake received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub chat_id: i64,
    pub text: String,
    /// Inline buttons, row by row flattened: (label, callback data or URL).
    pub buttons: Vec<(String, String)>,
    /// When the fake received it.
    pub at: Instant,
}

#[derive(Default)]
struct State {
    token: String,
    /// Updates waiting for `getUpdates` (long polling), oldest first.
    pending: Mutex<Vec<Value>>,
    arrived: Notify,
    sent: Mutex<Vec<Sent>>,
    answered_callbacks: Mutex<Vec<String>>,
    next_message_id: Mutex<i64>,
    changed: Notify,
}

/// A running fake Bot API.
pub struct FakeTelegram {
    /// The API URL to give the client (`http://127.0.0.1:port/`).
    pub url: String,
    state: Arc<State>,
    client: reqwest::Client,
    webhook: Mutex<Option<(String, String)>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn ok(result: Value) -> Response {
    poem::web::Json(json!({"ok": true, "result": result})).into_response()
}

fn error(code: u16, description: &str) -> Response {
    let body = json!({"ok": false, "error_code": code, "description": description});
    poem::web::Json(body).with_status(StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST)).into_response()
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs() as i64)
}

#[handler]
async fn api(state: Data<&Arc<State>>, Path((bot, method)): Path<(String, String)>, body: Vec<u8>) -> Response {
    if bot.strip_prefix("bot") != Some(state.token.as_str()) {
        return error(401, "Unauthorized");
    }
    let params: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(params) => params,
            Err(_) => return error(400, "Bad Request: can't parse JSON object"),
        }
    };
    match method.to_ascii_lowercase().as_str() {
        "getme" => ok(json!({"id": 1, "is_bot": true, "first_name": "berth", "username": "berth_bot"})),
        "setwebhook" | "deletewebhook" => ok(json!(true)),
        "getupdates" => {
            // Confirms everything before `offset`, then waits up to `timeout` seconds for more.
            let offset = params.get("offset").and_then(Value::as_i64).unwrap_or(0);
            let timeout = Duration::from_secs(params.get("timeout").and_then(Value::as_u64).unwrap_or(0).min(50));
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let arrived = state.arrived.notified();
                let waiting: Vec<Value> = {
                    let mut pending = state.pending.lock().unwrap();
                    pending.retain(|update| update["update_id"].as_i64().unwrap_or(0) >= offset);
                    pending.clone()
                };
                if !waiting.is_empty() || tokio::time::Instant::now() >= deadline {
                    return ok(Value::Array(waiting));
                }
                let _ = tokio::time::timeout_at(deadline, arrived).await;
            }
        }
        "answercallbackquery" => {
            let Some(id) = params.get("callback_query_id").and_then(Value::as_str) else {
                return error(400, "Bad Request: parameter \"callback_query_id\" is required");
            };
            state.answered_callbacks.lock().unwrap().push(id.to_owned());
            ok(json!(true))
        }
        "sendmessage" => {
            let chat_id = match params.get("chat_id") {
                Some(Value::Number(id)) => id.as_i64(),
                Some(Value::String(id)) => id.parse().ok(),
                _ => None,
            };
            let Some(chat_id) = chat_id else { return error(400, "Bad Request: chat not found") };
            let text = params.get("text").and_then(Value::as_str).unwrap_or("");
            if text.trim().is_empty() {
                return error(400, "Bad Request: message text is empty");
            }
            let mut buttons = Vec::new();
            if let Some(rows) = params.pointer("/reply_markup/inline_keyboard").and_then(Value::as_array) {
                for button in rows.iter().filter_map(Value::as_array).flatten() {
                    let label = button.get("text").and_then(Value::as_str).unwrap_or("").to_owned();
                    let action = button.get("callback_data").or_else(|| button.get("url")).and_then(Value::as_str);
                    buttons.push((label, action.unwrap_or("").to_owned()));
                }
            }
            let message_id = {
                let mut next = state.next_message_id.lock().unwrap();
                *next += 1;
                *next
            };
            state.sent.lock().unwrap().push(Sent { chat_id, text: text.to_owned(), buttons, at: Instant::now() });
            state.changed.notify_waiters();
            let mut message = json!({
                "message_id": message_id,
                "from": {"id": 1, "is_bot": true, "first_name": "berth", "username": "berth_bot"},
                "chat": {"id": chat_id, "first_name": "Driver", "type": "private"},
                "date": unix_now(),
                "text": text,
            });
            if let Some(markup) = params.get("reply_markup") {
                message["reply_markup"] = markup.clone();
            }
            ok(message)
        }
        _ => error(404, "Not Found: method not found"),
    }
}

impl FakeTelegram {
    /// Starts the fake for the bot `token` on a free loopback port.
    pub async fn start(token: &str) -> std::io::Result<FakeTelegram> {
        let state = Arc::new(State { token: token.to_owned(), ..State::default() });
        let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await?;
        let addr = acceptor
            .local_addr()
            .first()
            .and_then(|addr| addr.as_socket_addr().copied())
            .ok_or_else(|| std::io::Error::other("the fake has no socket address"))?;
        let app = Route::new().at("/:bot/:method", post(api)).data(state.clone());
        let task = tokio::spawn(async move {
            let _ = Server::new_with_acceptor(acceptor).run(app).await;
        });
        Ok(FakeTelegram {
            url: format!("http://{addr}/"),
            state,
            client: reqwest::Client::new(),
            webhook: Mutex::new(None),
            task,
        })
    }

    /// Where updates are delivered, with the secret token `setWebhook` was given.
    pub fn set_webhook(&self, url: &str, secret: &str) {
        *self.webhook.lock().unwrap() = Some((url.to_owned(), secret.to_owned()));
    }

    /// Delivers an update to the webhook; answers the HTTP status berth replied with.
    pub async fn deliver(&self, update: &Value) -> reqwest::Result<u16> {
        let (url, secret) = self.webhook.lock().unwrap().clone().expect("set_webhook first");
        self.deliver_with_secret(&url, &secret, update).await
    }

    /// Delivers an update with any secret (or a wrong one).
    pub async fn deliver_with_secret(&self, url: &str, secret: &str, update: &Value) -> reqwest::Result<u16> {
        let response = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header(SECRET_HEADER, secret)
            .header("accept-encoding", "gzip, deflate")
            .body(webhook_body(update))
            .send()
            .await?;
        Ok(response.status().as_u16())
    }

    /// Queues an update for `getUpdates` (a bot that long-polls).
    pub fn push_update(&self, update: Value) {
        self.state.pending.lock().unwrap().push(update);
        self.state.arrived.notify_waiters();
    }

    /// Everything the bot sent so far.
    pub fn sent(&self) -> Vec<Sent> {
        self.state.sent.lock().unwrap().clone()
    }

    /// Callback queries the bot answered.
    pub fn answered_callbacks(&self) -> Vec<String> {
        self.state.answered_callbacks.lock().unwrap().clone()
    }

    /// Waits until at least `count` messages were sent to `chat_id`, or `timeout` passed;
    /// answers that chat's messages.
    pub async fn wait_for(&self, chat_id: i64, count: usize, timeout: Duration) -> Vec<Sent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.changed.notified();
            let to_chat: Vec<Sent> = self.sent().into_iter().filter(|sent| sent.chat_id == chat_id).collect();
            if to_chat.len() >= count || tokio::time::Instant::now() >= deadline {
                return to_chat;
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }
}

/// The body as Telegram writes it: `{"update_id":N,` then a newline, then the rest.
pub fn webhook_body(update: &Value) -> Vec<u8> {
    let mut rest = update.as_object().cloned().unwrap_or_default();
    let update_id = rest.remove("update_id").unwrap_or(Value::Null);
    let rest = serde_json::to_string(&Value::Object(rest)).unwrap_or_else(|_| "{}".into());
    let tail = rest.strip_prefix('{').unwrap_or(&rest);
    if tail == "}" {
        format!("{{\"update_id\":{update_id}\n}}").into_bytes()
    } else {
        format!("{{\"update_id\":{update_id},\n{tail}").into_bytes()
    }
}

/// A private text message from user `chat_id`.
pub fn text_update(update_id: i64, chat_id: i64, text: &str) -> Value {
    json!({
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "from": {"id": chat_id, "is_bot": false, "first_name": "Driver", "language_code": "en"},
            "chat": {"id": chat_id, "first_name": "Driver", "type": "private"},
            "date": unix_now(),
            "text": text
        }
    })
}

/// A press of an inline button whose callback data is `data`, on the bot's message.
pub fn callback_update(update_id: i64, chat_id: i64, data: &str) -> Value {
    json!({
        "update_id": update_id,
        "callback_query": {
            "id": format!("{}", 4_382_000_000_000_000_000i64 + update_id),
            "from": {"id": chat_id, "is_bot": false, "first_name": "Driver", "language_code": "en"},
            "message": {
                "message_id": update_id,
                "from": {"id": 1, "is_bot": true, "first_name": "berth", "username": "berth_bot"},
                "chat": {"id": chat_id, "first_name": "Driver", "type": "private"},
                "date": unix_now(),
                "text": "…"
            },
            "chat_instance": "-8263471298456103241",
            "data": data
        }
    })
}

/// A shared location from user `chat_id`.
pub fn location_update(update_id: i64, chat_id: i64, lat: f64, lon: f64) -> Value {
    json!({
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "from": {"id": chat_id, "is_bot": false, "first_name": "Driver"},
            "chat": {"id": chat_id, "first_name": "Driver", "type": "private"},
            "date": unix_now(),
            "location": {"latitude": lat, "longitude": lon}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_bodies_start_as_telegrams_do() {
        let body = String::from_utf8(webhook_body(&text_update(7, 42, "hi"))).unwrap();
        assert!(body.starts_with("{\"update_id\":7,\n{".trim_end_matches('{')), "{body}");
        let parsed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["update_id"], 7);
        assert_eq!(parsed["message"]["text"], "hi");
    }
}
