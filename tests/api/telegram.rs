//! The Telegram channel end to end, against the local fake of the Bot API: webhook updates in
//! (secret checked, stored before the answer, duplicates ignored), the booking dialogue, replies
//! out through teloxide with inline keyboards, button presses acknowledged.

use std::time::Duration;

use berth::config::Secret;
use berth_telegram::fake::{FakeTelegram, callback_update, location_update, text_update};

use crate::helpers::{Backend, TestApp};

const TOKEN: &str = "123456:TEST-token";
const SECRET: &str = "hook-secret-0123456789";
const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_books_on_telegram_sqlite() {
    run(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_books_on_telegram_postgres() {
    if crate::helpers::postgres_url().is_none() {
        eprintln!("BERTH_TEST_POSTGRES_URL not set: PostgreSQL run skipped");
        return;
    }
    run(Backend::Postgres).await;
}

/// Without a public URL for a webhook: berth long-polls `getUpdates`, and updates take the same
/// path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polling_takes_the_same_path() {
    let fake = FakeTelegram::start(TOKEN).await.unwrap();
    let api_url = fake.url.clone();
    let app = TestApp::spawn_with(Backend::Sqlite, |config| {
        config.telegram.token = Some(Secret::new(TOKEN));
        config.telegram.api_url = Some(api_url);
        config.telegram.mode = berth::config::TelegramMode::Polling;
    })
    .await;
    let chat = 424_242;
    fake.push_update(text_update(1, chat, "hello"));
    fake.push_update(text_update(2, chat, "what can you do"));
    let sent = fake.wait_for(chat, 2, WAIT).await;
    assert!(sent.len() >= 2 && sent[0].text.contains("Hi!"), "{sent:?}");
    assert!(sent.iter().any(|sent| sent.text.contains("Tell me where and when")), "{sent:?}");
    app.cleanup().await;
}

async fn run(backend: Backend) {
    let fake = FakeTelegram::start(TOKEN).await.unwrap();
    let api_url = fake.url.clone();
    let app = TestApp::spawn_with(backend, |config| {
        config.telegram.token = Some(Secret::new(TOKEN));
        config.telegram.webhook_secret = Some(Secret::new(SECRET));
        config.telegram.api_url = Some(api_url);
        config.telegram.timezone = Some("Europe/Lisbon".into());
    })
    .await;
    let hook = format!("{}/v1/webhooks/chat/telegram", app.base_url);
    fake.set_webhook(&hook, SECRET);
    let tenant = app.new_tenant("tg-op").await;
    crate::bookings::priced_site(&app, &tenant, 3).await;
    let chat = 987_654_321;

    assert_eq!(fake.deliver(&text_update(1, chat, "book Trindade next monday at 10 for 2 hours")).await.unwrap(), 200);
    let sent = fake.wait_for(chat, 1, WAIT).await;
    assert!(sent[0].text.contains("registration"), "{sent:?}");

    fake.deliver(&text_update(2, chat, "my reg is AB12 CDE")).await.unwrap();
    let sent = fake.wait_for(chat, 2, WAIT).await;
    assert!(sent[1].text.contains("Trindade: €4.00"), "{sent:?}");
    assert_eq!(sent[1].buttons, [("1. Trindade".to_owned(), "1".to_owned())]);

    // A button press: its data is the answer; the query is acknowledged.
    let press = callback_update(3, chat, "1");
    fake.deliver(&press).await.unwrap();
    let sent = fake.wait_for(chat, 3, WAIT).await;
    assert!(sent[2].text.contains("Shall I book it") && sent[2].text.contains("AB12CDE"), "{sent:?}");
    let pressed_id = press["callback_query"]["id"].as_str().unwrap().to_owned();
    assert!(fake.answered_callbacks().contains(&pressed_id));

    // Telegram redelivers an update it thinks failed: it is not answered twice.
    assert_eq!(fake.deliver(&press).await.unwrap(), 200);
    fake.deliver(&callback_update(4, chat, "yes")).await.unwrap();
    let sent = fake.wait_for(chat, 4, WAIT).await;
    assert!(sent[3].text.contains("holding a space at Trindade"), "{sent:?}");
    let sent = fake.wait_for(chat, 5, Duration::from_millis(300)).await;
    assert_eq!(sent.len(), 4, "the redelivered press was answered again: {sent:?}");

    // Another user shares a location near the site instead of naming it.
    let other = 111_222_333;
    fake.deliver(&location_update(5, other, 41.1507, -8.6096)).await.unwrap();
    let sent = fake.wait_for(other, 1, WAIT).await;
    assert!(sent[0].text.contains("When will you arrive"), "{sent:?}");

    // Updates without the secret, or for a channel that is not configured, are refused.
    let wrong = fake.deliver_with_secret(&hook, "wrong", &text_update(6, chat, "hi")).await.unwrap();
    assert_eq!(wrong, 401);
    let whatsapp = format!("{}/v1/webhooks/chat/whatsapp", app.base_url);
    assert_eq!(fake.deliver_with_secret(&whatsapp, SECRET, &text_update(7, chat, "hi")).await.unwrap(), 404);
    app.cleanup().await;
}
