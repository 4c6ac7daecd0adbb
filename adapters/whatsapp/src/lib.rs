//! A fake of the WhatsApp Cloud API on loopback, for tests, the demo and benchmarks. berth's
//! WhatsApp channel is a Wasm plugin (`plugins/chat/whatsapp`); this is the other side of its
//! wire, and it honours Meta's formats as `shared/wire-formats/whatsapp/` records them:
//!
//! - **Send.** `POST /<version>/<phone-number-id>/messages` with `Authorization: Bearer <token>`
//!   and a JSON body; answers `{messaging_product, contacts:[{input, wa_id}], messages:[{id}]}`.
//!   Errors are Graph errors, `{"error":{message,type,code,error_subcode?,fbtrace_id}}`: 401 code
//!   190 for a wrong token, 400 code 100 for a body WhatsApp refuses (more than 3 reply buttons,
//!   a button title over 20 characters, a list over 10 rows, an empty text…), 400 code 131047
//!   for a free-form message to a user who has not written in 24 hours (templates pass), and 404
//!   for another phone number id.
//! - **Webhooks.** Messages from users are posted to the callback URL as Meta does: the
//!   `whatsapp_business_account` envelope with string timestamps and ids, non-ASCII written as
//!   `\uXXXX`, and `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, the exact bytes)>`.
//! - **Verification.** [`FakeWhatsapp::subscribe`] makes Meta's `GET ?hub.mode=subscribe&
//!   hub.challenge=N&hub.verify_token=T` and checks the challenge comes back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac as _};
use poem::http::StatusCode;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::{Data, Path};
use poem::{EndpointExt, IntoResponse, Request, Response, Route, Server, handler, post};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::Notify;

/// How long after a user's last message free-form messages may be sent.
pub const SERVICE_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// What the fake is set up with.
#[derive(Debug, Clone)]
pub struct FakeWhatsappConfig {
    pub phone_number_id: String,
    pub access_token: String,
    pub app_secret: String,
    pub verify_token: String,
}

/// A message the business sent, as the fake accepted it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub id: String,
    pub to: String,
    /// `text`, `interactive` or `template`.
    pub kind: String,
    /// The text body, the interactive body, or the template's body parameters joined.
    pub text: String,
    /// Reply buttons or list rows: (id, title).
    pub choices: Vec<(String, String)>,
    /// The template's name, for templates.
    pub template: Option<String>,
    pub body: Value,
}

#[derive(Default)]
struct State {
    config: Option<FakeWhatsappConfig>,
    sent: Mutex<Vec<Sent>>,
    /// When each user last wrote (what opens the service window).
    last_inbound: Mutex<HashMap<String, SystemTime>>,
    next_id: Mutex<u64>,
    changed: Notify,
}

impl State {
    fn config(&self) -> &FakeWhatsappConfig {
        self.config.as_ref().expect("invariant: the fake is always configured")
    }

    fn new_id(&self) -> String {
        let mut next = self.next_id.lock().unwrap();
        *next += 1;
        format!("wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI{:016X}", *next)
    }
}

/// A running fake.
pub struct FakeWhatsapp {
    /// The Graph API base URL to configure the plugin with (`http://127.0.0.1:port/v21.0`).
    pub base_url: String,
    /// `127.0.0.1:port`, for a plugin manifest's allow-list.
    pub host: String,
    state: Arc<State>,
    client: reqwest::Client,
    callback: Mutex<Option<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeWhatsapp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn graph_error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = json!({"error": {
        "message": message,
        "type": if code == 190 { "OAuthException" } else { "GraphMethodException" },
        "code": code,
        "fbtrace_id": "AbCdEfGhIjKlMnOpQrStUvW",
    }});
    poem::web::Json(body).with_status(status).into_response()
}

fn invalid(message: &str) -> Response {
    graph_error(StatusCode::BAD_REQUEST, 100, &format!("(#100) Invalid parameter: {message}"))
}

fn chars(value: &Value) -> usize {
    value.as_str().map_or(0, |text| text.chars().count())
}

/// What the fake records of an accepted send.
struct Checked {
    text: String,
    choices: Vec<(String, String)>,
    template: Option<String>,
}

/// Checks a send request the way the Cloud API does; answers what the fake records.
fn check(body: &Value) -> Result<Checked, String> {
    let kind = body["type"].as_str().unwrap_or("text");
    match kind {
        "text" => {
            let text = body.pointer("/text/body").and_then(Value::as_str).unwrap_or("");
            if text.trim().is_empty() || text.chars().count() > 4096 {
                return Err(String::from("text.body must be 1 to 4096 characters"));
            }
            Ok(Checked { text: text.to_owned(), choices: Vec::new(), template: None })
        }
        "interactive" => {
            let text = body.pointer("/interactive/body/text").and_then(Value::as_str).unwrap_or("");
            if text.trim().is_empty() || text.chars().count() > 1024 {
                return Err(String::from("interactive.body.text must be 1 to 1024 characters"));
            }
            let mut choices = Vec::new();
            match body.pointer("/interactive/type").and_then(Value::as_str) {
                Some("button") => {
                    let buttons = body.pointer("/interactive/action/buttons").and_then(Value::as_array);
                    let buttons = buttons.map(Vec::as_slice).unwrap_or_default();
                    if buttons.is_empty() || buttons.len() > 3 {
                        return Err(String::from("interactive.action.buttons must hold 1 to 3 buttons"));
                    }
                    for button in buttons {
                        let (id, title) = (&button["reply"]["id"], &button["reply"]["title"]);
                        if button["type"] != "reply"
                            || !(1..=256).contains(&chars(id))
                            || !(1..=20).contains(&chars(title))
                        {
                            return Err(String::from(
                                "a reply button needs an id of 1 to 256 and a title of 1 to 20 characters",
                            ));
                        }
                        choices.push((id.as_str().unwrap_or("").to_owned(), title.as_str().unwrap_or("").to_owned()));
                    }
                }
                Some("list") => {
                    let sections = body.pointer("/interactive/action/sections").and_then(Value::as_array);
                    for row in sections.into_iter().flatten().filter_map(|section| section["rows"].as_array()).flatten()
                    {
                        if !(1..=200).contains(&chars(&row["id"])) || !(1..=24).contains(&chars(&row["title"])) {
                            return Err(String::from(
                                "a list row needs an id of 1 to 200 and a title of 1 to 24 characters",
                            ));
                        }
                        choices.push((
                            row["id"].as_str().unwrap_or("").to_owned(),
                            row["title"].as_str().unwrap_or("").to_owned(),
                        ));
                    }
                    if choices.is_empty() || choices.len() > 10 {
                        return Err(String::from("a list holds 1 to 10 rows"));
                    }
                    if !(1..=20).contains(&chars(&body["interactive"]["action"]["button"])) {
                        return Err(String::from("interactive.action.button must be 1 to 20 characters"));
                    }
                }
                _ => return Err("interactive.type".into()),
            }
            if choices.iter().enumerate().any(|(n, (id, _))| choices[..n].iter().any(|(other, _)| other == id)) {
                return Err(String::from("button ids must be unique"));
            }
            Ok(Checked { text: text.to_owned(), choices, template: None })
        }
        "template" => {
            let name = body.pointer("/template/name").and_then(Value::as_str).unwrap_or("");
            if name.is_empty() || body.pointer("/template/language/code").and_then(Value::as_str).is_none() {
                return Err(String::from("template.name and template.language.code are required"));
            }
            let mut text = Vec::new();
            let components = body.pointer("/template/components").and_then(Value::as_array);
            for parameter in components.into_iter().flatten().filter_map(|c| c["parameters"].as_array()).flatten() {
                let value = parameter["text"].as_str().unwrap_or("");
                if value.contains(['\n', '\t']) || value.contains("     ") {
                    return Err(String::from("a template parameter cannot hold new lines, tabs or more than 4 spaces"));
                }
                text.push(value.to_owned());
            }
            Ok(Checked { text: text.join(" "), choices: Vec::new(), template: Some(name.to_owned()) })
        }
        other => Err(format!("type {other:?} is not supported by this fake")),
    }
}

#[handler]
async fn messages(
    state: Data<&Arc<State>>,
    Path((_version, phone)): Path<(String, String)>,
    request: &Request,
    body: Vec<u8>,
) -> Response {
    let config = state.config();
    let bearer = request.headers().get("authorization").and_then(|value| value.to_str().ok());
    if bearer != Some(format!("Bearer {}", config.access_token).as_str()) {
        return graph_error(StatusCode::UNAUTHORIZED, 190, "Invalid OAuth access token - Cannot parse access token");
    }
    if phone != config.phone_number_id {
        return graph_error(
            StatusCode::NOT_FOUND,
            100,
            &format!("Unsupported post request. Object with ID '{phone}' does not exist"),
        );
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else { return invalid("the body is not JSON") };
    if body["messaging_product"] != "whatsapp" {
        return invalid("messaging_product must be \"whatsapp\"");
    }
    let Some(to) = body["to"].as_str().filter(|to| !to.is_empty()).map(str::to_owned) else {
        return invalid("to is required");
    };
    let Checked { text, choices, template } = match check(&body) {
        Ok(checked) => checked,
        Err(refused) => return invalid(&refused),
    };
    if template.is_none() {
        let last = state.last_inbound.lock().unwrap().get(&to).copied();
        let open = last.is_some_and(|at| at.elapsed().unwrap_or_default() < SERVICE_WINDOW);
        if !open {
            return graph_error(
                StatusCode::BAD_REQUEST,
                131_047,
                "Re-engagement message: more than 24 hours have passed since the recipient last replied",
            );
        }
    }
    let id = state.new_id();
    let kind = body["type"].as_str().unwrap_or("text").to_owned();
    state.sent.lock().unwrap().push(Sent { id: id.clone(), to: to.clone(), kind, text, choices, template, body });
    state.changed.notify_waiters();
    poem::web::Json(json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": to}],
        "messages": [{"id": id}],
    }))
    .into_response()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}

/// JSON with every non-ASCII character written as a `\uXXXX` escape (UTF-16 units).
pub fn escaped_json(value: &Value) -> Vec<u8> {
    let text = serde_json::to_string(value).unwrap_or_else(|_| "{}".into());
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if ch.is_ascii() {
            out.push(ch);
        } else {
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out.into_bytes()
}

/// The `X-Hub-Signature-256` of a body.
pub fn signature(app_secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl FakeWhatsapp {
    /// Starts the fake on a free loopback port.
    pub async fn start(config: FakeWhatsappConfig) -> std::io::Result<FakeWhatsapp> {
        let state = Arc::new(State { config: Some(config), ..State::default() });
        let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await?;
        let addr = acceptor
            .local_addr()
            .first()
            .and_then(|addr| addr.as_socket_addr().copied())
            .ok_or_else(|| std::io::Error::other("the fake has no socket address"))?;
        let app = Route::new().at("/:version/:phone/messages", post(messages)).data(state.clone());
        let task = tokio::spawn(async move {
            let _ = Server::new_with_acceptor(acceptor).run(app).await;
        });
        Ok(FakeWhatsapp {
            base_url: format!("http://{addr}/v21.0"),
            host: addr.to_string(),
            state,
            client: reqwest::Client::new(),
            callback: Mutex::new(None),
            task,
        })
    }

    /// Checks the callback URL as Meta does before it sends anything there, and remembers it.
    /// Fails when the answer is not the challenge.
    pub async fn subscribe(&self, callback: &str, verify_token: &str) -> Result<(), String> {
        let challenge = (unix_now() % 1_000_000_000 + 1_000_000_000).to_string();
        let response = self
            .client
            .get(callback)
            .query(&[("hub.mode", "subscribe"), ("hub.challenge", &challenge), ("hub.verify_token", verify_token)])
            .send()
            .await
            .map_err(|error| error.to_string())?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|error| error.to_string())?;
        if status != 200 || body != challenge {
            return Err(format!("the callback answered {status} {body:?}, not the challenge"));
        }
        *self.callback.lock().unwrap() = Some(callback.to_owned());
        Ok(())
    }

    /// Posts a webhook body, signed with `app_secret` (the right one, or not); answers the status.
    pub async fn post_signed(&self, body: &[u8], app_secret: &str) -> reqwest::Result<u16> {
        let callback = self.callback.lock().unwrap().clone().expect("subscribe first");
        let response = self
            .client
            .post(callback)
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature(app_secret, body))
            .header("user-agent", "facebookexternalua")
            .body(body.to_vec())
            .send()
            .await?;
        Ok(response.status().as_u16())
    }

    /// Delivers a user's message (the `messages[]` entry) from `from`: opens that user's
    /// service window, then posts the webhook. Answers the status berth replied with.
    pub async fn deliver(&self, from: &str, message: Value) -> reqwest::Result<u16> {
        self.state.last_inbound.lock().unwrap().insert(from.to_owned(), SystemTime::now());
        let body = escaped_json(&self.envelope(from, message));
        self.post_signed(&body, &self.state.config().app_secret).await
    }

    /// The webhook body Meta posts for one message.
    pub fn envelope(&self, from: &str, message: Value) -> Value {
        let config = self.state.config();
        json!({
            "object": "whatsapp_business_account",
            "entry": [{
                "id": "102290129340398",
                "changes": [{
                    "value": {
                        "messaging_product": "whatsapp",
                        "metadata": {"display_phone_number": "15550783881", "phone_number_id": config.phone_number_id},
                        "contacts": [{"profile": {"name": "Driver"}, "wa_id": from}],
                        "messages": [message],
                    },
                    "field": "messages",
                }],
            }],
        })
    }

    /// Moves a user's last message back in time (to test the 24-hour window).
    pub fn age_last_inbound(&self, from: &str, by: Duration) {
        if let Some(at) = self.state.last_inbound.lock().unwrap().get_mut(from) {
            *at -= by;
        }
    }

    /// Everything sent so far.
    pub fn sent(&self) -> Vec<Sent> {
        self.state.sent.lock().unwrap().clone()
    }

    /// Waits until at least `count` messages were sent to `to`, or `timeout` passed; answers
    /// that user's messages.
    pub async fn wait_for(&self, to: &str, count: usize, timeout: Duration) -> Vec<Sent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.changed.notified();
            let sent: Vec<Sent> = self.sent().into_iter().filter(|sent| sent.to == to).collect();
            if sent.len() >= count || tokio::time::Instant::now() >= deadline {
                return sent;
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }
}

/// A text message from `from`, with a fresh `wamid`.
pub fn text_message(id: &str, from: &str, text: &str) -> Value {
    json!({"from": from, "id": id, "timestamp": unix_now().to_string(), "text": {"body": text}, "type": "text"})
}

/// A press of a reply button (`interactive.button_reply`).
pub fn button_reply(id: &str, from: &str, button_id: &str, title: &str) -> Value {
    json!({
        "context": {"from": "15550783881", "id": "wamid.previous"},
        "from": from, "id": id, "timestamp": unix_now().to_string(), "type": "interactive",
        "interactive": {"type": "button_reply", "button_reply": {"id": button_id, "title": title}},
    })
}

/// A choice from a list (`interactive.list_reply`).
pub fn list_reply(id: &str, from: &str, row_id: &str, title: &str) -> Value {
    json!({
        "context": {"from": "15550783881", "id": "wamid.previous"},
        "from": from, "id": id, "timestamp": unix_now().to_string(), "type": "interactive",
        "interactive": {"type": "list_reply", "list_reply": {"id": row_id, "title": title}},
    })
}

/// A shared location.
pub fn location_message(id: &str, from: &str, lat: f64, lon: f64) -> Value {
    json!({
        "from": from, "id": id, "timestamp": unix_now().to_string(), "type": "location",
        "location": {"latitude": lat, "longitude": lon},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_escape_non_ascii_and_sign_the_bytes_sent() {
        let body = escaped_json(&json!({"text": "Café 🚗"}));
        assert_eq!(String::from_utf8(body.clone()).unwrap(), r#"{"text":"Caf\u00e9 \ud83d\ude97"}"#);
        let parsed: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed["text"], "Café 🚗");
        // Meta's SDK test vector.
        assert_eq!(
            signature("TEST_APP_SECRET", b"test"),
            "sha256=0c61947b610d4f45e65f3d680e26027121ec2413e77598bcb6cfc6e0d9888221"
        );
    }

    #[test]
    fn sends_are_checked_as_the_cloud_api_does() {
        let buttons = |n: usize| {
            let buttons: Vec<Value> =
                (0..n).map(|i| json!({"type": "reply", "reply": {"id": format!("b{i}"), "title": "ok"}})).collect();
            json!({"type": "interactive", "interactive": {"type": "button", "body": {"text": "pick"}, "action": {"buttons": buttons}}})
        };
        assert!(check(&buttons(3)).is_ok());
        assert!(check(&buttons(4)).is_err());
        assert!(check(&json!({"type": "text", "text": {"body": ""}})).is_err());
        let template = |text: &str| {
            json!({"type": "template", "template": {"name": "t", "language": {"code": "en"},
                "components": [{"type": "body", "parameters": [{"type": "text", "text": text}]}]}})
        };
        assert_eq!(check(&template("starts at 9")).unwrap().template.as_deref(), Some("t"));
        assert!(check(&template("two\nlines")).is_err());
    }
}
