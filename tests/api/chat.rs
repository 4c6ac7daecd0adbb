//! Conversation stories (tests/stories/*.yml) through the web chat channel: each driver turn,
//! what the bot understood, what it said, and the booking it left.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp};
use crate::on_each_backend;

on_each_backend!(stories_through_the_web_channel);

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
    /// The client's message id (to test redelivery).
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

async fn stories_through_the_web_channel(app: &TestApp) {
    let tenant = app.new_tenant("chat-op").await;
    crate::bookings::priced_site(app, &tenant, 3).await;
    let files = ["booking.yml"];
    for file in files {
        let path = format!("{}/tests/stories/{file}", env!("CARGO_MANIFEST_DIR"));
        let stories: StoryFile = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for (idx, story) in stories.stories.iter().enumerate() {
            // Each story is a new driver, so stories do not see each other's bookings.
            let driver = app.new_driver(&format!("story{idx}-{}@example.com", file.trim_end_matches(".yml"))).await;
            if story.vehicle {
                app.post("/v1/drivers/me/vehicles", &driver, json!({"plate": "AA11 AAA"})).await.expect(201);
            }
            run_story(app, &driver, story).await;
        }
    }
}

async fn run_story(app: &TestApp, driver: &str, story: &Story) {
    let mut conversation_id = String::new();
    for (number, step) in story.steps.iter().enumerate() {
        let context = format!("story {:?}, step {} ({:?})", story.story, number + 1, step.user);
        let mut body = json!({"text": step.user, "timezone": "Europe/Lisbon"});
        if let Some(id) = &step.id {
            body["message_id"] = json!(id);
        }
        let answer = app.post("/v1/chat/web/messages", driver, body).await.expect(200);
        conversation_id = answer["conversation_id"].as_str().unwrap().to_owned();
        assert_eq!(answer["duplicate"], step.duplicate, "{context}: {answer}");
        let replies = answer["replies"].as_array().unwrap();
        let said: Vec<&str> = replies.iter().map(|reply| reply["text"].as_str().unwrap()).collect();
        let all = said.join("\n");
        for phrase in &step.says {
            assert!(all.contains(phrase.as_str()), "{context}: expected {phrase:?} in:\n{all}");
        }
        if let Some(intent) = &step.intent {
            let understood = replies.first().map(|reply| reply["intent"].clone()).unwrap_or(Value::Null);
            assert_eq!(understood, json!(intent), "{context}: {answer}");
        }
        if let Some(expected) = &step.booking {
            let bookings = app.get("/v1/bookings", driver).await.expect(200);
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
            let messages =
                app.get(&format!("/v1/chat/web/conversations/{conversation_id}/messages"), driver).await.expect(200);
            assert_eq!(messages["handoff"], handoff, "{context}");
        }
    }
    // The conversation reads back in order: each inbound message followed by its replies.
    let messages =
        app.get(&format!("/v1/chat/web/conversations/{conversation_id}/messages?limit=200"), driver).await.expect(200);
    let inbound =
        messages["messages"].as_array().unwrap().iter().filter(|message| message["direction"] == "inbound").count();
    let expected = story.steps.iter().filter(|step| !step.duplicate).count();
    assert_eq!(inbound, expected, "story {:?}: {messages}", story.story);
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
    assert!(page.text().await.unwrap().contains("/v1/chat/web/messages"));
    app.cleanup().await;
}
