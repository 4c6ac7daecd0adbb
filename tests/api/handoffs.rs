//! What the chat does besides answering: the web chat's stream of later messages, handoffs to
//! the operator's team (read, reply through the driver's channel, hand back), reminders before
//! a booking starts, and messages left unanswered by a stopped node.

use std::time::Duration;

use berth_telegram::fake::text_update;
use berth_whatsapp::{FakeWhatsapp, SERVICE_WINDOW, text_message};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp};
use crate::live::Sse;
use crate::on_each_backend;
use crate::whatsapp::WAIT;

on_each_backend!(a_handed_off_web_chat_is_answered_by_the_operators_team);

async fn a_handed_off_web_chat_is_answered_by_the_operators_team(app: &TestApp) {
    let tenant = app.new_tenant("handoff-op").await;
    let other = app.new_tenant("handoff-other").await;
    crate::bookings::priced_site(app, &tenant, 3).await;
    let driver = app.new_driver("handoff@example.com").await;
    app.post("/v1/drivers/me/vehicles", &driver, json!({"plate": "AA11 AAA"})).await.expect(201);
    let say = |text: &'static str| {
        let driver = driver.clone();
        async move {
            app.post("/v1/chat/web/messages", &driver, json!({"text": text, "timezone": "Europe/Lisbon"}))
                .await
                .expect(200)
        }
    };
    let first = say("book Trindade next monday at 10 for 2 hours").await;
    let conversation = first["conversation_id"].as_str().unwrap().to_owned();
    // The driver follows the conversation; nothing is sent until something new is stored.
    let mut stream = Sse::open(app, &format!("/v1/chat/web/conversations/{conversation}/stream"), &driver, None).await;

    let handed = say("I want to talk to a human").await;
    assert!(handed["replies"][0]["text"].as_str().unwrap().contains("someone from the car park's team"), "{handed}");
    // The stream carries the new messages: the driver's, then the bot's.
    let (id, kind, message) = stream.next().await;
    // `message` is SSE's default event type, which the stream leaves implicit.
    assert!(matches!(kind.as_str(), "" | "message"), "{kind}");
    assert_eq!(message["direction"], "inbound");
    assert_eq!(message["id"], json!(id));
    let (_, _, reply) = stream.next().await;
    assert_eq!(reply["direction"], "outbound");

    // It is handed to the team of the car park it was about, with its messages.
    let list = app.get("/v1/handoffs", &tenant.admin_key).await.expect(200);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(
        (items[0]["conversation_id"].as_str(), items[0]["channel"].as_str()),
        (Some(&*conversation), Some("web"))
    );
    // From the driver's request on: what came before may be about another operator's car park.
    assert_eq!(items[0]["messages"][0]["text"], "I want to talk to a human", "{list}");
    // Not to another operator's, nor to the platform's.
    assert_eq!(app.get("/v1/handoffs", &other.admin_key).await.expect(200)["items"], json!([]));
    let admin = app.config.auth.admin_key.as_ref().unwrap().expose().to_owned();
    assert_eq!(app.get("/v1/handoffs", &admin).await.expect(200)["items"], json!([]));
    let path = format!("/v1/handoffs/{conversation}");
    app.get(&path, &other.admin_key).await.problem(404);
    app.post(&format!("{path}/replies"), &other.admin_key, json!({"text": "hi"})).await.problem(404);

    // Staff keys read it; replying takes an admin key. The driver's stream gets the reply at
    // once, signed.
    app.get(&path, &tenant.staff_key).await.expect(200);
    app.post(&format!("{path}/replies"), &tenant.staff_key, json!({"text": "hi"})).await.problem(403);
    app.delete(&path, &tenant.staff_key).await.problem(403);
    let reply = app
        .post(
            &format!("{path}/replies"),
            &tenant.admin_key,
            json!({"text": "Hello, Marta here. How can I help?", "author": "Marta"}),
        )
        .await
        .expect(201);
    assert_eq!(reply["delivered"], true, "{reply}");
    let (_, _, streamed) = stream.next().await;
    assert_eq!(
        (streamed["text"].as_str(), streamed["author"].as_str()),
        (Some("Hello, Marta here. How can I help?"), Some("Marta"))
    );
    assert_eq!(streamed["id"], reply["message"]["id"]);
    // A stream resumed from an earlier message replays what came after it.
    let mut resumed =
        Sse::open(app, &format!("/v1/chat/web/conversations/{conversation}/stream"), &driver, Some(&id)).await;
    assert_eq!(resumed.next().await.2["direction"], "outbound");
    assert_eq!(resumed.next().await.2["author"], "Marta");
    // Bad replies are clear errors.
    app.post(&format!("{path}/replies"), &tenant.admin_key, json!({"text": "  "})).await.problem(422);
    app.post(&format!("{path}/replies"), &tenant.admin_key, json!({"text": "x".repeat(4097)})).await.problem(422);
    app.post(&format!("{path}/replies"), &tenant.admin_key, json!({"text": "hi", "author": "x".repeat(61)}))
        .await
        .problem(422);
    app.get("/v1/handoffs/not-an-id", &tenant.admin_key).await.problem(404);
    app.get("/v1/handoffs?limit=0", &tenant.admin_key).await.problem(400);
    // Drivers do not read handoffs.
    app.get("/v1/handoffs", &driver).await.problem(403);

    // Handed back to the bot: it leaves the list, and the driver sees it.
    app.delete(&path, &tenant.admin_key).await.expect(204);
    assert_eq!(app.get("/v1/handoffs", &tenant.admin_key).await.expect(200)["items"], json!([]));
    app.get(&path, &tenant.admin_key).await.problem(404);
    let messages =
        app.get(&format!("/v1/chat/web/conversations/{conversation}/messages?limit=200"), &driver).await.expect(200);
    assert_eq!(messages["handoff"], false);
    // Other drivers cannot follow the conversation.
    let stranger = app.new_driver("handoff-stranger@example.com").await;
    app.get(&format!("/v1/chat/web/conversations/{conversation}/stream"), &stranger).await.problem(404);
    let bad_cursor = format!("/v1/chat/web/conversations/{conversation}/stream?after=nope");
    app.get(&bad_cursor, &driver).await.problem(400);
}

/// On WhatsApp, a person's reply goes out as a message while the window is open; once the
/// user has been silent for 24 hours WhatsApp refuses free-form messages, and the reply says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whatsapp_handoff_is_answered_through_whatsapp() {
    let fake = FakeWhatsapp::start(crate::whatsapp::settings()).await.unwrap();
    let (app, _plugins) = crate::whatsapp::whatsapp_app(Backend::Sqlite, &fake).await;
    fake.subscribe(&format!("{}/v1/webhooks/chat/whatsapp", app.base_url), "meatyhamhock").await.unwrap();
    let tenant = app.new_tenant("wa-handoff").await;
    crate::bookings::priced_site(&app, &tenant, 2).await;
    let user = "351911111111";
    fake.deliver(user, text_message("wamid.H1", user, "book Trindade next monday at 10 for 2 hours")).await.unwrap();
    fake.wait_for(user, 1, WAIT).await;
    fake.deliver(user, text_message("wamid.H2", user, "talk to a human please")).await.unwrap();
    fake.wait_for(user, 2, WAIT).await;

    let list = app.get("/v1/handoffs", &tenant.admin_key).await.expect(200);
    assert_eq!(list["items"][0]["channel"], "whatsapp", "{list}");
    let path = format!("/v1/handoffs/{}/replies", list["items"][0]["conversation_id"].as_str().unwrap());
    let reply = app.post(&path, &tenant.admin_key, json!({"text": "Hi, this is Rui from Trindade."})).await.expect(201);
    assert_eq!(reply["delivered"], true, "{reply}");
    let sent = fake.wait_for(user, 3, WAIT).await;
    assert_eq!((sent[2].kind.as_str(), sent[2].text.as_str()), ("text", "Hi, this is Rui from Trindade."));

    // A day later WhatsApp refuses it; the reply is kept and the team is told why.
    fake.age_last_inbound(user, SERVICE_WINDOW + Duration::from_secs(60));
    let late = app.post(&path, &tenant.admin_key, json!({"text": "Are you still there?"})).await.expect(201);
    assert_eq!(late["delivered"], false, "{late}");
    assert!(late["delivery_error"].as_str().unwrap().contains("131047"), "{late}");
    app.cleanup().await;
}

/// A confirmed booking about to start is reminded once, in the driver's chat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_are_reminded_of_a_booking_once_in_their_chat() {
    let telegram = berth_telegram::fake::FakeTelegram::start("42:reminder").await.unwrap();
    let api_url = telegram.url.clone();
    let app = TestApp::spawn_with(Backend::Sqlite, |config| {
        config.telegram.token = Some(berth::config::Secret::new("42:reminder"));
        config.telegram.api_url = Some(api_url);
        config.telegram.timezone = Some("Europe/Lisbon".into());
        // The test runs the reminders itself.
        config.chat.reminder_minutes = 0;
    })
    .await;
    telegram.set_webhook(&format!("{}/v1/webhooks/chat/telegram", app.base_url), "");
    let tenant = app.new_tenant("reminder-op").await;
    crate::bookings::priced_site(&app, &tenant, 2).await;
    let chat = 515_151;
    for (n, text) in
        ["book Trindade next monday at 10 for 2 hours", "my reg is AB12 CDE", "1", "yes"].iter().enumerate()
    {
        telegram.deliver(&text_update(n as i64 + 1, chat, text)).await.unwrap();
        let sent = telegram.wait_for(chat, n + 1, WAIT).await;
        assert!(sent.len() > n, "{sent:?}");
    }
    let driver = app.channel_driver_token("telegram", &chat.to_string()).await;
    let bookings = app.get("/v1/bookings", &driver).await.expect(200);
    let booking = bookings["items"][0].clone();
    assert_eq!(booking["status"], "pending_payment", "{bookings}");
    // Nothing to remind of until it is paid.
    assert_eq!(app.kernel().send_booking_reminders(chrono::Duration::days(30), 100).await.unwrap(), 0);
    // Staged as paid (the payment flow is tested in payments.rs).
    app.execute_sql("UPDATE bookings SET status = 'confirmed' WHERE status = 'pending_payment'").await;
    // Not yet within the lead time.
    assert_eq!(app.kernel().send_booking_reminders(chrono::Duration::minutes(30), 100).await.unwrap(), 0);
    assert_eq!(app.kernel().send_booking_reminders(chrono::Duration::days(30), 100).await.unwrap(), 1);
    let sent = telegram.wait_for(chat, 5, WAIT).await;
    let reminder = &sent[4];
    assert!(
        reminder.text.starts_with("Reminder: your booking BK-") && reminder.text.contains("Trindade"),
        "{reminder:?}"
    );
    assert!(reminder.text.contains("10:00"), "in the driver's timezone: {reminder:?}");
    assert!(reminder.buttons.iter().any(|(_, data)| data == "cancel my booking"), "{reminder:?}");
    // Once only, however many passes.
    assert_eq!(app.kernel().send_booking_reminders(chrono::Duration::days(30), 100).await.unwrap(), 0);
    assert_eq!(telegram.wait_for(chat, 6, Duration::from_millis(300)).await.len(), 5);
    app.cleanup().await;
}

/// A message stored while another node held the conversation and then stopped is answered (and
/// its reply sent) by the pass every node makes at start-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_a_stopped_node_left_unanswered_are_answered_at_start_up() {
    let telegram = berth_telegram::fake::FakeTelegram::start("42:sweep").await.unwrap();
    let api_url = telegram.url.clone();
    let app = TestApp::spawn_with(Backend::Sqlite, |config| {
        config.telegram.token = Some(berth::config::Secret::new("42:sweep"));
        config.telegram.api_url = Some(api_url);
    })
    .await;
    telegram.set_webhook(&format!("{}/v1/webhooks/chat/telegram", app.base_url), "");
    let chat = 616_161;
    telegram.deliver(&text_update(1, chat, "hello")).await.unwrap();
    telegram.wait_for(chat, 1, WAIT).await;
    // A node takes the conversation and dies holding it.
    let driver = app.channel_driver_token("telegram", &chat.to_string()).await;
    let export = app.get("/v1/drivers/me/data", &driver).await.expect(200);
    let conversation =
        berth_kernel::ids::ConversationId::parse(export["conversations"][0]["conversation_id"].as_str().unwrap())
            .unwrap();
    let store = app.kernel().store().clone();
    let now = chrono::Utc::now();
    assert!(
        store.lease_conversation(conversation, "dead-node", now + chrono::Duration::seconds(60), now).await.unwrap()
    );
    // The message is stored and acknowledged; answering it waits for the lease and gives up.
    assert_eq!(telegram.deliver(&text_update(2, chat, "what can you do")).await.unwrap(), 200);
    let waiting = || async {
        let export = app.get("/v1/drivers/me/data", &driver).await.expect(200);
        export["conversations"][0]["messages"].as_array().unwrap().clone()
    };
    let messages: Vec<Value> = waiting().await;
    assert_eq!(messages.last().unwrap()["text"], "what can you do");
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(telegram.sent().len(), 1, "answered while the lease was held");
    // The lease runs out (the dead node's); the start-up pass answers and sends.
    store.release_conversation(conversation, "dead-node").await.unwrap();
    assert_eq!(app.kernel().answer_waiting_conversations().await.unwrap(), 1);
    let sent = telegram.wait_for(chat, 2, WAIT).await;
    assert!(sent[1].text.contains("Tell me where and when"), "{sent:?}");
    assert_eq!(app.kernel().answer_waiting_conversations().await.unwrap(), 0);
    app.cleanup().await;
}
