//! The WhatsApp channel end to end: the bundled Wasm plugin (`plugins/chat/whatsapp`) against
//! the local fake of the Cloud API. Meta's subscription check, signed webhooks in (stored before
//! the answer, duplicates and delivery statuses ignored, bad signatures refused), the booking
//! dialogue, reply buttons and lists out, and the 24-hour window.

use std::time::Duration;

use berth::config::Secret;
use berth_kernel::conversation::{Choice, MessageBody};
use berth_whatsapp::{FakeWhatsapp, FakeWhatsappConfig, SERVICE_WINDOW, button_reply, location_message, text_message};

use crate::helpers::{Backend, TestApp};

pub const WAIT: Duration = Duration::from_secs(20);

pub fn settings() -> FakeWhatsappConfig {
    FakeWhatsappConfig {
        phone_number_id: "106540352242922".into(),
        access_token: "EAAG-test-token".into(),
        app_secret: "TEST_APP_SECRET".into(),
        verify_token: "meatyhamhock".into(),
    }
}

/// A server with the WhatsApp plugin installed and configured against `fake`.
pub async fn whatsapp_app(backend: Backend, fake: &FakeWhatsapp) -> (TestApp, tempfile::TempDir) {
    whatsapp_app_with(backend, fake, |_| {}).await
}

/// The same, with more configuration.
pub async fn whatsapp_app_with(
    backend: Backend,
    fake: &FakeWhatsapp,
    customise: impl FnOnce(&mut berth::config::Config),
) -> (TestApp, tempfile::TempDir) {
    let plugins_dir = tempfile::tempdir().unwrap();
    crate::helpers::install_bundled_plugin(plugins_dir.path(), "whatsapp", &fake.host);
    let (dir, base_url, settings) = (plugins_dir.path().to_owned(), fake.base_url.clone(), settings());
    let app = TestApp::spawn_with(backend, move |config| {
        customise(config);
        config.plugins.dir = Some(dir);
        let values = [
            ("base_url", base_url),
            ("phone_number_id", settings.phone_number_id.clone()),
            ("reminder_template", "booking_update".into()),
            ("template_language", "en_GB".into()),
            ("timezone", "Europe/Lisbon".into()),
        ];
        config.plugins.config.insert("whatsapp".into(), values.into_iter().map(|(k, v)| (k.to_owned(), v)).collect());
        let secrets = [
            ("access_token", settings.access_token),
            ("app_secret", settings.app_secret),
            ("verify_token", settings.verify_token),
        ];
        config
            .plugins
            .secrets
            .insert("whatsapp".into(), secrets.into_iter().map(|(k, v)| (k.to_owned(), Secret::new(v))).collect());
    })
    .await;
    (app, plugins_dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_books_on_whatsapp_sqlite() {
    run(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_books_on_whatsapp_postgres() {
    if crate::helpers::postgres_url().is_none() {
        eprintln!("BERTH_TEST_POSTGRES_URL not set: PostgreSQL run skipped");
        return;
    }
    run(Backend::Postgres).await;
}

async fn run(backend: Backend) {
    let fake = FakeWhatsapp::start(settings()).await.unwrap();
    let (app, _plugins) = whatsapp_app(backend, &fake).await;
    let hook = format!("{}/v1/webhooks/chat/whatsapp", app.base_url);

    // Meta checks the callback first: a wrong token is refused, the right one echoes the challenge.
    assert!(fake.subscribe(&hook, "wrong-token").await.is_err());
    let refused =
        app.client.get(&hook).query(&[("hub.mode", "subscribe"), ("hub.challenge", "7"), ("hub.verify_token", "x")]);
    let refused = refused.send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert!(refused.headers()["content-type"].to_str().unwrap().starts_with("application/problem+json"));
    fake.subscribe(&hook, "meatyhamhock").await.unwrap();

    let tenant = app.new_tenant("wa-op").await;
    crate::bookings::priced_site(&app, &tenant, 3).await;
    let user = "351912345678";

    assert_eq!(
        fake.deliver(user, text_message("wamid.A1", user, "book Trindade next monday at 10 for 2 hours"))
            .await
            .unwrap(),
        200
    );
    let sent = fake.wait_for(user, 1, WAIT).await;
    assert!(sent[0].text.contains("registration"), "{sent:?}");

    fake.deliver(user, text_message("wamid.A2", user, "my reg is AB12 CDE")).await.unwrap();
    let sent = fake.wait_for(user, 2, WAIT).await;
    // One option: a reply button, its title cut to WhatsApp's 20 characters.
    assert_eq!(sent[1].kind, "interactive", "{sent:?}");
    assert!(sent[1].text.contains("Trindade: €4.00"), "{sent:?}");
    assert_eq!(sent[1].choices, [("1".to_owned(), "1. Trindade".to_owned())]);

    // Pressing the button answers with its id.
    fake.deliver(user, button_reply("wamid.A3", user, "1", "1. Trindade")).await.unwrap();
    let sent = fake.wait_for(user, 3, WAIT).await;
    assert!(sent[2].text.contains("Shall I book it") && sent[2].text.contains("AB12CDE"), "{sent:?}");
    assert_eq!(sent[2].choices.len(), 2, "yes and no: {sent:?}");

    // WhatsApp redelivers a webhook it thinks failed: it is not answered twice.
    assert_eq!(fake.deliver(user, button_reply("wamid.A3", user, "1", "1. Trindade")).await.unwrap(), 200);
    fake.deliver(user, button_reply("wamid.A4", user, "yes", "Yes")).await.unwrap();
    let sent = fake.wait_for(user, 4, WAIT).await;
    assert!(sent[3].text.contains("holding a space at Trindade"), "{sent:?}");
    let sent = fake.wait_for(user, 5, Duration::from_millis(300)).await;
    assert_eq!(sent.len(), 4, "the redelivered press was answered again: {sent:?}");

    // Delivery statuses carry no message; a sticker is nothing berth reads.
    for status in ["sent", "delivered", "read", "failed"] {
        let body = fixture(&format!("webhook.status-{status}.json"));
        assert_eq!(fake.post_signed(&body, "TEST_APP_SECRET").await.unwrap(), 200, "{status}");
    }
    let sticker = serde_json::json!({"from": user, "id": "wamid.S1", "timestamp": "1", "type": "sticker", "sticker": {"id": "1"}});
    assert_eq!(fake.deliver(user, sticker).await.unwrap(), 200);

    // Another user shares a location near the site instead of naming it.
    let other = "351987654321";
    fake.deliver(other, location_message("wamid.B1", other, 41.1507, -8.6096)).await.unwrap();
    let sent = fake.wait_for(other, 1, WAIT).await;
    assert!(sent[0].text.contains("When will you arrive"), "{sent:?}");

    // A body not signed with the app secret, or not signed at all, or tampered with, is refused.
    let body = berth_whatsapp::escaped_json(&fake.envelope(user, text_message("wamid.X1", user, "hi")));
    assert_eq!(fake.post_signed(&body, "another-secret").await.unwrap(), 401);
    let unsigned = app.client.post(&hook).header("content-type", "application/json").body(body.clone());
    assert_eq!(unsigned.send().await.unwrap().status(), 401);
    let signature = berth_whatsapp::signature("TEST_APP_SECRET", &body);
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let tampered = app.client.post(&hook).header("x-hub-signature-256", signature).body(tampered);
    assert_eq!(tampered.send().await.unwrap().status(), 401);
    // One message berth cannot take does not hold back the others of its webhook.
    let mut batch = fake.envelope(other, text_message("wamid.B2", other, &"a".repeat(2_500)));
    let messages = batch["entry"][0]["changes"][0]["value"]["messages"].as_array_mut().unwrap();
    messages.push(text_message("wamid.B3", other, "hello"));
    assert_eq!(fake.post_signed(&berth_whatsapp::escaped_json(&batch), "TEST_APP_SECRET").await.unwrap(), 200);
    let sent = fake.wait_for(other, 2, WAIT).await;
    assert!(sent[1].text.starts_with("Hi!"), "{sent:?}");
    let n_sent = fake.wait_for(other, 99, Duration::from_millis(300)).await.len();
    // Messages to another number of the same account are not this channel's.
    let mut elsewhere = fake.envelope(other, text_message("wamid.B4", other, "hello again"));
    elsewhere["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = serde_json::json!("999");
    assert_eq!(fake.post_signed(&berth_whatsapp::escaped_json(&elsewhere), "TEST_APP_SECRET").await.unwrap(), 200);
    assert_eq!(fake.wait_for(other, n_sent + 1, Duration::from_millis(300)).await.len(), n_sent);
    // A signed body that is not a WhatsApp webhook is a clear 422.
    assert_eq!(fake.post_signed(br#"{"object":"page"}"#, "TEST_APP_SECRET").await.unwrap(), 422);
    app.cleanup().await;
}

/// Free-form messages go out only within 24 hours of the user's last message; after that the
/// plugin sends the configured template, which WhatsApp accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_the_24_hour_window_a_template_is_sent() {
    let fake = FakeWhatsapp::start(settings()).await.unwrap();
    let (app, _plugins) = whatsapp_app(Backend::Sqlite, &fake).await;
    fake.subscribe(&format!("{}/v1/webhooks/chat/whatsapp", app.base_url), "meatyhamhock").await.unwrap();
    let user = "447700900123";
    fake.deliver(user, text_message("wamid.W1", user, "hello")).await.unwrap();
    fake.wait_for(user, 1, WAIT).await;

    let channel = app.kernel().plugins().chat_channel("whatsapp").expect("the plugin is a channel");
    let body = MessageBody {
        text: "Your booking at Trindade starts at 09:00.\nReply to change it.".into(),
        choices: vec![Choice { label: "Cancel".into(), reply: "cancel".into() }],
        ..MessageBody::default()
    };
    let now = chrono::Utc::now();
    channel.send(user, &body, Some(now - chrono::Duration::hours(1))).await.unwrap();
    let sent = fake.wait_for(user, 2, WAIT).await;
    assert_eq!((sent[1].kind.as_str(), sent[1].template.as_deref()), ("interactive", None));

    // A day later WhatsApp refuses free-form messages; the plugin knows and sends the template.
    fake.age_last_inbound(user, SERVICE_WINDOW + Duration::from_secs(60));
    channel.send(user, &body, Some(now - chrono::Duration::hours(25))).await.unwrap();
    let sent = fake.wait_for(user, 3, WAIT).await;
    assert_eq!(sent[2].template.as_deref(), Some("booking_update"), "{sent:?}");
    assert_eq!(sent[2].text, "Your booking at Trindade starts at 09:00. Reply to change it.");
    assert_eq!(sent[2].body["template"]["language"]["code"], "en_GB");
    app.cleanup().await;
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../shared/wire-formats/whatsapp/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}
