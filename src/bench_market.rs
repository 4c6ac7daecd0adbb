//! Benchmarks of the driver-facing market: search latency at a fixed request rate over many
//! spaces, and contended bookings per second (with a check that no two live bookings of a space
//! overlap). Both run a real server and talk to it over HTTP on loopback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DurationRound, Utc};
use serde_json::{Value, json};

use crate::bench::{cores, ms, percentiles};
use crate::config::{Config, Secret};

/// A server on a fresh data directory (SQLite) or `database_url`, seeded with the demo operator.
struct Market {
    server: crate::RunningServer,
    base: String,
    client: reqwest::Client,
    admin: String,
    driver: String,
    data_dir: std::path::PathBuf,
}

impl Market {
    async fn start(database_url: Option<String>) -> anyhow::Result<Self> {
        let data_dir = std::env::temp_dir().join(format!("berth-bench-market-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        let mut config = Config { data_dir: data_dir.clone(), ..Config::default() };
        config.http.listen = "127.0.0.1:0".parse()?;
        config.mqtt.mode = crate::config::MqttMode::Off;
        config.plugins.watch = false;
        config.database.max_connections = 32;
        if let Some(url) = database_url {
            config.database.url = Some(Secret::new(url));
        }
        let store = crate::open_store(&config).await?;
        let kernel = crate::kernel(&config, store.clone());
        let credentials = crate::demo::seed(&kernel, &data_dir).await?;
        let server = crate::start(&config, store, std::future::pending()).await?;
        let base = format!("http://{}", server.addr);
        let client = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
        let login = json!({"email": credentials.driver_email, "password": credentials.driver_password});
        let token: Value = client.post(format!("{base}/v1/drivers/login")).json(&login).send().await?.json().await?;
        let driver = token["access_token"].as_str().context("driver login")?.to_owned();
        Ok(Self { server, base, client, admin: credentials.operator_admin_key, driver, data_dir })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or_default()))
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> anyhow::Result<Value> {
        let (status, value) = self.call(reqwest::Method::POST, path, token, Some(body)).await?;
        anyhow::ensure!((200..300).contains(&status), "POST {path}: {status} {value}");
        Ok(value)
    }

    /// An operator-wide tariff (2.00 per started hour), published.
    async fn publish_tariff(&self) -> anyhow::Result<()> {
        let set = self.post("/v1/rulesets", &self.admin, json!({"name": "bench tariff", "currency": "EUR"})).await?;
        let versions = format!("/v1/rulesets/{}/versions", set["id"].as_str().context("rule set id")?);
        let tests = json!([{"name": "an hour", "context": {"start": "2026-03-02T09:00", "end": "2026-03-02T10:00"},
                            "expect": {"total_minor": 200}}]);
        let source = "fn price(ctx) { base(\"Parking\", increments(ctx.duration_minutes, 60) * 200) }";
        self.post(&versions, &self.admin, json!({"source": source, "tests": tests})).await?;
        self.post(&format!("{versions}/1/publish"), &self.admin, json!({})).await?;
        Ok(())
    }

    /// `sites` sites of `spaces_each` spaces, spread over about 20 km around Porto.
    async fn add_sites(&self, sites: usize, spaces_each: usize) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::with_capacity(sites);
        for index in 0..sites {
            let (row, column) = ((index / 40) as f64, (index % 40) as f64);
            let site = json!({
                "kind": "off_street",
                "name": format!("Bench lot {index}"),
                "location": {"lat": 41.05 + row * 0.005, "lon": -8.75 + column * 0.007},
                "timezone": "Europe/Lisbon",
                "currency": "EUR",
                "allowed_vehicle_types": ["car", "motorcycle"],
            });
            let site = self.post("/v1/sites", &self.admin, site).await?;
            let id = site["id"].as_str().context("site id")?.to_owned();
            let spaces: Vec<Value> = (0..spaces_each).map(|n| json!({"code": format!("S{n:05}")})).collect();
            self.post(&format!("/v1/sites/{id}/spaces/bulk"), &self.admin, Value::Array(spaces)).await?;
            ids.push(id);
        }
        Ok(ids)
    }

    async fn stop(self) {
        let _ = self.server.stop().await;
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// `GET /v1/search` at `rate` requests per second for `seconds`, over `sites` × `spaces_each`
/// spaces: each search a 2 km circle at a random point of the area, tomorrow 09:00–11:00,
/// priced by the operator's rules.
pub async fn search(sites: usize, spaces_each: usize, rate: u32, seconds: u64) -> anyhow::Result<()> {
    let market = Arc::new(Market::start(None).await?);
    market.publish_tariff().await?;
    let started = Instant::now();
    market.add_sites(sites, spaces_each).await?;
    println!(
        "berth bench search: {} sites, {} spaces (seeded in {:.1} s), {} requests/s for {seconds} s, {} cores",
        sites + 2,
        sites * spaces_each,
        started.elapsed().as_secs_f64(),
        rate,
        cores()
    );
    let start = (Utc::now() + chrono::Duration::days(1)).duration_trunc(chrono::Duration::days(1))?
        + chrono::Duration::hours(9);
    let window = format!(
        "start={}&end={}",
        start.format("%Y-%m-%dT%H:%M:%SZ"),
        (start + chrono::Duration::hours(2)).format("%Y-%m-%dT%H:%M:%SZ")
    );
    // Warm-up, as a server in service is: every site searched once (the spatial index, each
    // site's snapshot, rules and last-hour occupancy), on a grid of 2 km circles over the area.
    let warm = Instant::now();
    for row in 0..=((sites / 40) as f64 * 0.005 / 0.02).ceil() as usize {
        for column in 0..=(40.0_f64 * 0.007 / 0.025).ceil() as usize {
            let (lat, lon) = (41.05 + row as f64 * 0.02, -8.75 + column as f64 * 0.025);
            let path = format!("/v1/search?lat={lat:.5}&lon={lon:.5}&radius_m=2000&{window}");
            let (status, body) = market.call(reqwest::Method::GET, &path, &market.driver, None).await?;
            anyhow::ensure!(status == 200, "warm-up search: {status} {body}");
        }
    }
    println!("warm-up: every site searched once in {:.1} s", warm.elapsed().as_secs_f64());

    let total = rate as u64 * seconds;
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(total as usize);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let began = Instant::now();
    for _ in 0..total {
        ticks.tick().await;
        // xorshift: points spread over the seeded area.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let lat = 41.05 + (seed % 1000) as f64 / 1000.0 * 0.13;
        let lon = -8.75 + ((seed >> 20) % 1000) as f64 / 1000.0 * 0.28;
        let path = format!("/v1/search?lat={lat:.5}&lon={lon:.5}&radius_m=2000&{window}");
        let market = market.clone();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let answer = market.call(reqwest::Method::GET, &path, &market.driver, None).await;
            let sites = answer.as_ref().ok().and_then(|(_, body)| body["items"].as_array().map(Vec::len)).unwrap_or(0);
            (sent.elapsed(), answer.map(|(status, _)| status).unwrap_or(0), sites)
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    let (mut failures, mut found) = (0usize, 0usize);
    for task in tasks {
        let (latency, status, sites) = task.await?;
        if status != 200 {
            failures += 1;
        }
        found += sites;
        latencies.push(latency);
    }
    let elapsed = began.elapsed();
    let (p50, p99) = percentiles(&mut latencies);
    println!(
        "search: {} requests in {:.1} s ({:.0}/s), {} failed, {:.1} sites per answer",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        failures,
        found as f64 / latencies.len().max(1) as f64
    );
    println!(
        "search latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target p99 < 10 ms)",
        ms(p50),
        ms(p99),
        ms(latencies.last().copied().unwrap_or_default())
    );
    if let Ok(market) = Arc::try_unwrap(market) {
        market.stop().await;
    }
    Ok(())
}

/// `requests` bookings of `spaces` spaces, `concurrency` at a time, every window overlapping
/// many others on its space; then checks that no two live bookings of a space overlap.
pub async fn bookings(
    database_url: Option<String>,
    spaces: usize,
    requests: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let market = Arc::new(Market::start(database_url).await?);
    market.publish_tariff().await?;
    let site = market.add_sites(1, spaces).await?.remove(0);
    let (_, listed) =
        market.call(reqwest::Method::GET, &format!("/v1/sites/{site}/spaces?limit=1000"), &market.admin, None).await?;
    let space_ids: Vec<String> = listed["items"]
        .as_array()
        .context("spaces")?
        .iter()
        .filter_map(|space| space["id"].as_str().map(str::to_owned))
        .collect();
    let backend = if market.server.state.kernel.store().ping().await.is_ok() { "database ok" } else { "database?" };
    let base = (Utc::now() + chrono::Duration::days(1)).duration_trunc(chrono::Duration::hours(1))?;
    println!(
        "berth bench bookings: {} spaces, {requests} requests, {concurrency} at a time ({backend})",
        space_ids.len()
    );
    let started = Instant::now();
    let mut quotes = Vec::with_capacity(requests);
    for index in 0..requests {
        // Windows of 1-3 hours starting in the first 4 hours: each overlaps most others.
        let space = &space_ids[index % space_ids.len()];
        let from = base + chrono::Duration::minutes(((index * 37) % 240) as i64);
        let to = from + chrono::Duration::minutes(60 + ((index * 53) % 120) as i64);
        let body = json!({"space_id": space, "start": from.to_rfc3339(), "end": to.to_rfc3339()});
        quotes.push(
            market.post("/v1/quotes", &market.driver, body).await?["id"].as_str().context("quote id")?.to_owned(),
        );
    }
    println!("quotes prepared in {:.1} s", started.elapsed().as_secs_f64());

    let queue = Arc::new(tokio::sync::Mutex::new(quotes));
    let began = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (market, queue) = (market.clone(), queue.clone());
            tokio::spawn(async move {
                let mut outcomes = (0usize, 0usize, 0usize, Vec::new());
                loop {
                    let Some(quote) = queue.lock().await.pop() else { break };
                    let sent = Instant::now();
                    let answer = market
                        .call(reqwest::Method::POST, "/v1/bookings", &market.driver, Some(json!({"quote_id": quote})))
                        .await;
                    outcomes.3.push(sent.elapsed());
                    match answer {
                        Ok((201, _)) => outcomes.0 += 1,
                        Ok((409, _)) => outcomes.1 += 1,
                        _ => outcomes.2 += 1,
                    }
                }
                outcomes
            })
        })
        .collect();
    let (mut created, mut conflicts, mut failed, mut latencies) = (0, 0, 0, Vec::new());
    for worker in workers {
        let (ok, conflict, failure, samples) = worker.await?;
        created += ok;
        conflicts += conflict;
        failed += failure;
        latencies.extend(samples);
    }
    let elapsed = began.elapsed();
    let (p50, p99) = percentiles(&mut latencies);
    println!(
        "bookings: {} answered in {:.2} s: {:.0} requests/s ({created} booked, {conflicts} refused as overlapping, {failed} failed)",
        created + conflicts + failed,
        elapsed.as_secs_f64(),
        (created + conflicts + failed) as f64 / elapsed.as_secs_f64()
    );
    println!("booking latency: p50 {:.2} ms, p99 {:.2} ms", ms(p50), ms(p99));

    // No two live bookings of a space overlap.
    let mut live: Vec<(String, chrono::DateTime<Utc>, chrono::DateTime<Utc>)> = Vec::new();
    let mut after = String::new();
    loop {
        let path = format!(
            "/v1/bookings?limit=1000{}",
            if after.is_empty() { String::new() } else { format!("&after={after}") }
        );
        let (_, page) = market.call(reqwest::Method::GET, &path, &market.admin, None).await?;
        for booking in page["items"].as_array().context("bookings")? {
            if matches!(booking["status"].as_str(), Some("pending_payment" | "confirmed" | "active")) {
                let time = |field: &str| -> anyhow::Result<chrono::DateTime<Utc>> {
                    Ok(chrono::DateTime::parse_from_rfc3339(booking[field].as_str().context("time")?)?
                        .with_timezone(&Utc))
                };
                live.push((booking["space_id"].as_str().unwrap_or_default().to_owned(), time("start")?, time("end")?));
            }
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => after = cursor.to_owned(),
            None => break,
        }
    }
    live.sort();
    let doubles = live.windows(2).filter(|pair| pair[0].0 == pair[1].0 && pair[1].1 < pair[0].2).count();
    println!("double bookings: {doubles} (of {} live bookings)", live.len());
    anyhow::ensure!(doubles == 0, "{doubles} overlapping live bookings");
    if let Ok(market) = Arc::try_unwrap(market) {
        market.stop().await;
    }
    Ok(())
}
