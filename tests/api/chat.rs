//! Conversation stories (tests/stories/*.yml) through every channel: the web chat, Telegram
//! (its fake Bot API) and WhatsApp (the plugin, against its fake Cloud API). Each driver turn,
//! what the bot understood, what it said (and, on a fake channel, what the channel received),
//! and the booking it left. Redeliveries and out-of-order deliveries are part of it.

use std::collections::HashMap;
use std::time::Duration;

use berth::config::Secret;
use berth_telegram::fake::{FakeTelegram, text_update};
use berth_whatsapp::{FakeWhatsapp, text_message};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp};

const TELEGRAM_TOKEN: &str = "123456:STORY-token";
const TELEGRAM_SECRET: &str = "story-hook-secret";

#[derive(Debug, Deserialize)]
struct StoryFile {
    stories: Vec<Story>,
}

#[derive(Debug, Deserialize)]
struct Story {
    story: String,
    /// The driver starts with a registered vehicle (default), or with none.
    #[serde(default = "yes")]
    vehicle: bool,
    steps: Vec<Step>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    user: String,
    /// The message's id (the web client's, Telegram's `update_id`, WhatsApp's `wamid`), to test
    /// redelivery.
    id: Option<String>,
    /// The intent the bot must have understood.
    intent: Option<String>,
    /// Phrases the replies must contain, in any reply.
    #[serde(default)]
    says: Vec<String>,
    /// The driver's latest booking's status after the turn (`none`: no booking).
    booking: Option<String>,
    handoff: Option<bool>,
    #[serde(default)]
    duplicate: bool,
}

/// The channels a story runs through, with their fakes.
struct Channels {
    telegram: FakeTelegram,
    whatsapp: FakeWhatsapp,
}

#[derive(Clone, Copy, Debug)]
enum Via {
    Web,
    Telegram,
    Whatsapp,
}

async fn app_with_every_channel(backend: Backend) -> (TestApp, Channels, tempfile::TempDir) {
    let telegram = FakeTelegram::start(TELEGRAM_TOKEN).await.unwrap();
    let whatsapp = FakeWhatsapp::start(crate::whatsapp::settings()).await.unwrap();
    let api_url = telegram.url.clone();
    let (app, plugins) = crate::whatsapp::whatsapp_app_with(backend, &whatsapp, move |config| {
        config.telegram.token = Some(Secret::new(TELEGRAM_TOKEN));
        config.telegram.webhook_secret = Some(Secret::new(TELEGRAM_SECRET));
        config.telegram.api_url = Some(api_url);
        config.telegram.timezone = Some("Europe/Lisbon".into());
    })
    .await;
    telegram.set_webhook(&format!("{}/v1/webhooks/chat/telegram", app.base_url), TELEGRAM_SECRET);
    let hook = format!("{}/v1/webhooks/chat/whatsapp", app.base_url);
    whatsapp.subscribe(&hook, &crate::whatsapp::settings().verify_token).await.unwrap();
    (app, Channels { telegram, whatsapp }, plugins)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stories_through_every_channel_sqlite() {
    stories_through_every_channel(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stories_through_every_channel_postgres() {
    if crate::helpers::postgres_url().is_none() {
        eprintln!("BERTH_TEST_POSTGRES_URL not set: PostgreSQL run skipped");
        return;
    }
    stories_through_every_channel(Backend::Postgres).await;
}

async fn stories_through_every_channel(backend: Backend) {
    let (app, channels, _plugins) = app_with_every_channel(backend).await;
    let tenant = app.new_tenant("chat-op").await;
    // Enough spaces for every channel's bookings of the same hours.
    crate::bookings::priced_site(&app, &tenant, 12).await;
    let files = ["booking.yml"];
    let mut user = 0u64;
    for file in files {
        let path = format!("{}/tests/stories/{file}", env!("CARGO_MANIFEST_DIR"));
        let stories: StoryFile = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for via in [Via::Web, Via::Telegram, Via::Whatsapp] {
            for story in &stories.stories {
                // Each story is a new driver, so stories do not see each other's bookings.
                user += 1;
                let mut run = StoryRun::start(&app, &channels, via, user).await;
                if story.vehicle {
                    app.post("/v1/drivers/me/vehicles", &run.driver, json!({"plate": "AA11 AAA"})).await.expect(201);
                }
                run.story(story).await;
            }
        }
    }
    app.cleanup().await;
}

/// One driver's conversation on one channel.
struct StoryRun<'a> {
    app: &'a TestApp,
    channels: &'a Channels,
    via: Via,
    /// The channel's id of the user (a Telegram chat id, a WhatsApp number).
    user: String,
    /// A token of the driver, to read what the channel's driver account holds.
    driver: String,
    /// Story message ids → the channel's ids.
    ids: HashMap<String, String>,
    next_id: u64,
}

impl<'a> StoryRun<'a> {
    async fn start(app: &'a TestApp, channels: &'a Channels, via: Via, n: u64) -> StoryRun<'a> {
        let (user, driver) = match via {
            Via::Web => (String::new(), app.new_driver(&format!("story{n}@example.com")).await),
            Via::Telegram => {
                let user = (700_000_000 + n).to_string();
                let driver = app.channel_driver_token("telegram", &user).await;
                (user, driver)
            }
            Via::Whatsapp => {
                let user = format!("3519{:08}", n);
                let driver = app.channel_driver_token("whatsapp", &user).await;
                (user, driver)
            }
        };
        StoryRun { app, channels, via, user, driver, ids: HashMap::new(), next_id: n * 1000 }
    }

    /// The channel's id for a step's message: the story's id mapped once, or a fresh one.
    fn message_id(&mut self, step: &Step) -> String {
        self.next_id += 1;
        let fresh = match self.via {
            Via::Web => format!("c-{}", self.next_id),
            Via::Telegram => self.next_id.to_string(),
            Via::Whatsapp => format!("wamid.story{}", self.next_id),
        };
        match &step.id {
            Some(id) => self.ids.entry(id.clone()).or_insert(fresh).clone(),
            None => fresh,
        }
    }

    /// Sends a user's message through the channel; answers the replies the conversation
    /// stored for it, after the channel received them.
    async fn say(&mut self, step: &Step, context: &str) -> Vec<Value> {
        let id = self.message_id(step);
        let before = self.conversation().await;
        let n_before = before.as_ref().map_or(0, |c| c["messages"].as_array().unwrap().len());
        match self.via {
            Via::Web => {
                let body = json!({"text": step.user, "timezone": "Europe/Lisbon", "message_id": id});
                let answer = self.app.post("/v1/chat/web/messages", &self.driver, body).await.expect(200);
                assert_eq!(answer["duplicate"], step.duplicate, "{context}: {answer}");
                return answer["replies"].as_array().unwrap().clone();
            }
            Via::Telegram => {
                let update = text_update(id.parse().unwrap(), self.user.parse().unwrap(), &step.user);
                assert_eq!(self.channels.telegram.deliver(&update).await.unwrap(), 200, "{context}");
            }
            Via::Whatsapp => {
                let message = text_message(&id, &self.user, &step.user);
                assert_eq!(self.channels.whatsapp.deliver(&self.user, message).await.unwrap(), 200, "{context}");
            }
        }
        if step.duplicate {
            // A redelivery stores nothing and is answered by nothing.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let after = self.conversation().await.unwrap();
            assert_eq!(after["messages"].as_array().unwrap().len(), n_before, "{context}: {after}");
            return Vec::new();
        }
        // Wait until the message was answered, then until the channel received every reply.
        let deadline = tokio::time::Instant::now() + crate::whatsapp::WAIT;
        loop {
            let conversation = self.conversation().await;
            let messages = conversation.as_ref().map(|c| c["messages"].as_array().unwrap().clone()).unwrap_or_default();
            let inbound = messages.iter().skip(n_before).find(|m| m["direction"] == "inbound").cloned();
            if let Some(inbound) = inbound {
                let replies: Vec<Value> =
                    messages.iter().filter(|m| m["in_reply_to"] == inbound["id"]).cloned().collect();
                let n_outbound = messages.iter().filter(|m| m["direction"] == "outbound").count();
                if !replies.is_empty() && self.delivered().await >= n_outbound {
                    let delivered = self.delivered_texts().await;
                    for reply in &replies {
                        let text = reply["text"].as_str().unwrap();
                        assert!(
                            delivered.iter().any(|sent| sent.contains(text.trim())),
                            "{context}: {text:?} not sent"
                        );
                    }
                    return replies;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "{context}: no answer; conversation: {conversation:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// How many messages the channel received for this user.
    async fn delivered(&self) -> usize {
        self.delivered_texts().await.len()
    }

    async fn delivered_texts(&self) -> Vec<String> {
        match self.via {
            Via::Web => Vec::new(),
            Via::Telegram => {
                let chat: i64 = self.user.parse().unwrap();
                self.channels.telegram.sent().into_iter().filter(|sent| sent.chat_id == chat).map(|s| s.text).collect()
            }
            Via::Whatsapp => {
                self.channels.whatsapp.sent().into_iter().filter(|sent| sent.to == self.user).map(|s| s.text).collect()
            }
        }
    }

    /// The driver's conversation on this channel, with its messages.
    async fn conversation(&self) -> Option<Value> {
        let channel = match self.via {
            Via::Web => "web",
            Via::Telegram => "telegram",
            Via::Whatsapp => "whatsapp",
        };
        let export = self.app.get("/v1/drivers/me/data", &self.driver).await.expect(200);
        export["conversations"].as_array().unwrap().iter().find(|c| c["channel"] == channel).cloned()
    }

    async fn story(&mut self, story: &Story) {
        for (number, step) in story.steps.iter().enumerate() {
            let context = format!("{:?}, story {:?}, step {} ({:?})", self.via, story.story, number + 1, step.user);
            let replies = self.say(step, &context).await;
            let said: Vec<&str> = replies.iter().map(|reply| reply["text"].as_str().unwrap()).collect();
            let all = said.join("\n");
            for phrase in &step.says {
                assert!(all.contains(phrase.as_str()), "{context}: expected {phrase:?} in:\n{all}");
            }
            if let Some(intent) = &step.intent {
                let understood = replies.first().map(|reply| reply["intent"].clone()).unwrap_or(Value::Null);
                assert_eq!(understood, json!(intent), "{context}: {replies:?}");
            }
            if let Some(expected) = &step.booking {
                let bookings = self.app.get("/v1/bookings", &self.driver).await.expect(200);
                let latest = bookings["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .max_by_key(|booking| booking["created_at"].as_str().unwrap().to_owned())
                    .cloned();
                let status = latest.map_or("none".to_owned(), |booking| booking["status"].as_str().unwrap().to_owned());
                assert_eq!(&status, expected, "{context}");
            }
            if let Some(handoff) = step.handoff {
                let conversation = self.conversation().await.unwrap();
                assert_eq!(conversation["handoff"], handoff, "{context}");
            }
        }
        // The conversation reads back in order: every message once, replies in the order of
        // the messages they answer.
        let conversation = self.conversation().await.unwrap();
        let messages = conversation["messages"].as_array().unwrap();
        let inbound: Vec<&Value> = messages.iter().filter(|message| message["direction"] == "inbound").collect();
        let expected = story.steps.iter().filter(|step| !step.duplicate).count();
        assert_eq!(inbound.len(), expected, "{:?}, story {:?}: {conversation}", self.via, story.story);
        assert_replies_in_order(messages);
    }
}

/// Replies come in the order of the messages they answer, and every message is answered.
fn assert_replies_in_order(messages: &[Value]) {
    let inbound: Vec<&Value> = messages.iter().filter(|m| m["direction"] == "inbound").map(|m| &m["id"]).collect();
    let mut answered: Vec<&Value> = Vec::new();
    for reply in messages.iter().filter(|m| m["direction"] == "outbound") {
        if answered.last() != Some(&&reply["in_reply_to"]) {
            answered.push(&reply["in_reply_to"]);
        }
    }
    assert_eq!(answered, inbound, "replies out of order: {messages:?}");
}

/// Two messages of one conversation arrive at once, the later one first (two webhook calls
/// racing, as Telegram and WhatsApp may make them): both are stored, each is answered once, and
/// the conversation answers them one at a time in the order they were stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_and_concurrent_deliveries_are_answered_once_each_in_order() {
    let (app, channels, _plugins) = app_with_every_channel(Backend::Sqlite).await;
    let chat = 808_080_i64;
    let (later, earlier) = (text_update(12, chat, "what can you do"), text_update(11, chat, "hello"));
    let (a, b) = tokio::join!(channels.telegram.deliver(&later), channels.telegram.deliver(&earlier));
    assert_eq!((a.unwrap(), b.unwrap()), (200, 200));
    // Telegram retries both: nothing new.
    let (a, b) = tokio::join!(channels.telegram.deliver(&earlier), channels.telegram.deliver(&later));
    assert_eq!((a.unwrap(), b.unwrap()), (200, 200));

    let user = "351900000001";
    let (first, second) =
        (text_message("wamid.OOO2", user, "what can you do"), text_message("wamid.OOO1", user, "hello"));
    let (a, b) =
        tokio::join!(channels.whatsapp.deliver(user, first.clone()), channels.whatsapp.deliver(user, second.clone()));
    assert_eq!((a.unwrap(), b.unwrap()), (200, 200));
    assert_eq!(channels.whatsapp.deliver(user, first).await.unwrap(), 200);

    for (channel, user) in [("telegram", chat.to_string()), ("whatsapp", user.to_owned())] {
        let driver = app.channel_driver_token(channel, &user).await;
        let deadline = tokio::time::Instant::now() + crate::whatsapp::WAIT;
        let messages = loop {
            let export = app.get("/v1/drivers/me/data", &driver).await.expect(200);
            let messages = export["conversations"][0]["messages"].as_array().cloned().unwrap_or_default();
            let inbound: Vec<&Value> = messages.iter().filter(|m| m["direction"] == "inbound").collect();
            let answered = inbound.iter().all(|m| messages.iter().any(|r| r["in_reply_to"] == m["id"]));
            if (inbound.len() == 2 && answered) || tokio::time::Instant::now() >= deadline {
                break messages;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let inbound: Vec<&str> =
            messages.iter().filter(|m| m["direction"] == "inbound").map(|m| m["text"].as_str().unwrap()).collect();
        assert_eq!(inbound.len(), 2, "{channel}: each message stored once: {messages:?}");
        assert_replies_in_order(&messages);
        let n_replies = messages.iter().filter(|m| m["direction"] == "outbound").count();
        // Every stored reply reached the channel, once.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = match channel {
            "telegram" => channels.telegram.sent().into_iter().filter(|s| s.chat_id == chat).count(),
            _ => channels.whatsapp.sent().into_iter().filter(|s| s.to == user).count(),
        };
        assert_eq!(sent, n_replies, "{channel}: {messages:?}");
    }
    app.cleanup().await;
}

#[tokio::test]
async fn web_chat_refuses_what_it_cannot_take() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let driver = app.new_driver("chat-bad@example.com").await;
    let tenant = app.new_tenant("chat-bad").await;
    let send = |token: &str, body: Value| {
        let token = token.to_owned();
        let app = &app;
        async move { app.post("/v1/chat/web/messages", &token, body).await }
    };
    send(&driver, json!({"text": ""})).await.problem(422);
    send(&driver, json!({"text": "a".repeat(2_001)})).await.problem(422);
    send(&driver, json!({"text": "hi", "timezone": "Nowhere/Land"})).await.problem(422);
    send(&driver, json!({"text": "", "location": {"lat": 91.0, "lon": 0.0}})).await.problem(422);
    // Operators do not chat as drivers, and nobody reads another driver's conversation.
    send(&tenant.admin_key, json!({"text": "hi"})).await.problem(403);
    let answer = send(&driver, json!({"text": "hi"})).await.expect(200);
    let path = format!("/v1/chat/web/conversations/{}/messages", answer["conversation_id"].as_str().unwrap());
    let other = app.new_driver("chat-other@example.com").await;
    app.get(&path, &other).await.problem(404);
    app.get(&path, &tenant.admin_key).await.problem(404);
    app.get("/v1/chat/web/conversations/not-an-id/messages", &driver).await.problem(404);
    // The driver's data export holds the conversation, every message in and out.
    let export = app.get("/v1/drivers/me/data", &driver).await.expect(200);
    let messages = export["conversations"][0]["messages"].as_array().unwrap();
    assert_eq!((messages[0]["direction"].as_str(), messages[0]["text"].as_str()), (Some("inbound"), Some("hi")));
    assert!(messages.iter().any(|message| message["direction"] == "outbound"), "{export}");
    // The web chat page talks to the same endpoint.
    let page = app.client.get(format!("{}/chat", app.base_url)).send().await.unwrap();
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let page = page.text().await.unwrap();
    assert!(page.contains("/v1/chat/web/messages") && page.contains("/stream"));
    app.cleanup().await;
}
