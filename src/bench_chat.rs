//! `berth bench chat`: webhook in → reply sent, through the Telegram channel and the local fake
//! of the Bot API, at a fixed rate. Each update is a new driver asking to book at the demo's
//! garage, so every one goes through the whole path: secret check, driver and conversation
//! created, message stored, lease, language model, place lookup, dialogue, turn stored, and
//! `sendMessage` through teloxide to the fake.

use std::time::{Duration, Instant};

use anyhow::Context;
use berth_telegram::fake::{FakeTelegram, text_update};

use crate::bench::{cores, ms, percentiles};
use crate::config::{Config, Secret};

const TOKEN: &str = "4242:bench-token";
const SECRET: &str = "bench-webhook-secret";

pub async fn chat(rate: u32, seconds: u64) -> anyhow::Result<()> {
    anyhow::ensure!(rate > 0 && seconds > 0, "--rate and --seconds must be positive");
    let fake = FakeTelegram::start(TOKEN).await?;
    let data_dir = std::env::temp_dir().join(format!("berth-bench-chat-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut config = Config { data_dir: data_dir.clone(), ..Config::default() };
    config.http.listen = "127.0.0.1:0".parse()?;
    config.mqtt.mode = crate::config::MqttMode::Off;
    config.plugins.watch = false;
    config.telegram.token = Some(Secret::new(TOKEN));
    config.telegram.webhook_secret = Some(Secret::new(SECRET));
    config.telegram.api_url = Some(fake.url.clone());
    let store = crate::open_store(&config).await?;
    crate::demo::seed(&crate::kernel(&config, store.clone()), &data_dir).await?;
    let server = crate::start(&config, store, std::future::pending()).await?;
    let hook = format!("http://{}/v1/webhooks/chat/telegram", server.addr);
    fake.set_webhook(&hook, SECRET);
    let fake = std::sync::Arc::new(fake);

    // Warm up: the first messages pay for connection set-up and caches.
    for warm in 0..20 {
        fake.deliver(&text_update(warm + 1, 1_000 + warm, "hello")).await?;
    }
    fake.wait_for(1_019, 1, Duration::from_secs(10)).await;

    let total = rate as u64 * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    let mut sends = Vec::with_capacity(total as usize);
    let mut tasks = Vec::with_capacity(total as usize);
    for idx in 0..total {
        let due = started + interval * idx as u32;
        tokio::time::sleep_until(due.into()).await;
        let chat = 100_000 + idx as i64;
        let update = text_update(1_000 + idx as i64, chat, "book Parque Trindade next monday at 10 for 2 hours");
        let fake = fake.clone();
        sends.push((chat, Instant::now()));
        tasks.push(tokio::spawn(async move { fake.deliver(&update).await }));
    }
    let mut refused = 0;
    for task in tasks {
        if !matches!(task.await, Ok(Ok(200))) {
            refused += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut latencies = Vec::with_capacity(sends.len());
    let mut unanswered = 0;
    for (chat, sent_at) in &sends {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match fake.wait_for(*chat, 1, remaining).await.first() {
            Some(reply) => latencies.push(reply.at.duration_since(*sent_at)),
            None => unanswered += 1,
        }
    }
    let (p50, p99) = percentiles(&mut latencies);
    let max = latencies.iter().max().copied().unwrap_or_default();
    println!("chat: Telegram webhook in -> reply sent (fake Bot API on loopback), {} cores", cores());
    println!("  {total} updates at {rate}/s over {seconds} s, each a new driver booking at the demo garage");
    println!("  answered {} (refused {refused}, unanswered {unanswered})", latencies.len());
    println!("  latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", ms(p50), ms(p99), ms(max));
    server.stop().await.context("stopping the server")?;
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(())
}
