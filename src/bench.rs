//! `berth bench ingest`: the ingest pipeline measured end to end on this machine, printed as
//! figures (not a test). In one run, on the embedded broker:
//!
//! 1. the raw broker: the same messages published and received by a plain QoS 1 subscriber;
//! 2. ingest: the same messages through berth (topic → envelope → plugin → live state →
//!    database), uplinks applied per second, and the ratio to (1), which does not depend on the
//!    machine;
//! 3. publish → SSE latency p50/p99 at a fixed rate, every uplink a change of state;
//! 4. many SSE subscribers on one node (the clients run in a child process): server RSS, and
//!    delivery latency p50/p99 from the change to each client.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use anyhow::Context;
use berth_kernel::Kernel;
use berth_kernel::ids::SpaceId;
use berth_mqtt::{BrokerAddress, CountingSubscriber, Publisher};
use futures_util::StreamExt;

use crate::config::{Config, MqttMode, Secret};
use crate::simulator::{SimulatedSensor, uplink_message};

/// `berth bench ingest`'s options, which are its command-line arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestBench {
    /// Uplinks for the throughput runs.
    #[arg(long, default_value_t = 50_000)]
    pub messages: usize,
    /// Simulated sensors, each on a space of its own.
    #[arg(long, default_value_t = 2_000)]
    pub devices: usize,
    /// Uplinks per second for the latency run.
    #[arg(long, default_value_t = 5_000)]
    pub rate: u32,
    /// Seconds of the latency run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Concurrent SSE subscribers (0 skips that run).
    #[arg(long, default_value_t = 10_000)]
    pub subscribers: usize,
    /// SSE streams per connection: 1 is HTTP/1.1, a connection each; more share HTTP/2
    /// connections (at most 1,000 each), as behind a proxy that multiplexes its clients.
    #[arg(long, default_value_t = 1)]
    pub streams_per_connection: usize,
    /// Database instead of a fresh SQLite file (an empty PostgreSQL database, say).
    #[arg(long)]
    pub database_url: Option<String>,
    /// Percent of the throughput runs' uplinks that change their space (the others are
    /// heartbeats): 100, the default, is the worst case (a history row per uplink); a car
    /// park's share depends on its turnover and its sensors' heartbeat interval.
    #[arg(long = "changes", value_name = "PERCENT", default_value_t = 100, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub changes_percent: u8,
    /// Rounds of the two throughput runs, alternated (raw, ingest, raw, ingest…), each with
    /// messages of its own; with more than one, the report ends with the medians, steadier
    /// than any one round on a busy machine.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: u32,
}

pub async fn ingest(options: IngestBench) -> anyhow::Result<()> {
    let data_dir = std::env::temp_dir().join(format!("berth-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let result = run(&options, &data_dir).await;
    let _ = std::fs::remove_dir_all(&data_dir);
    result
}

async fn run(options: &IngestBench, data_dir: &std::path::Path) -> anyhow::Result<()> {
    let mut config = Config { data_dir: data_dir.to_path_buf(), ..Config::default() };
    config.http.listen = "127.0.0.1:0".parse()?;
    config.mqtt.mode = MqttMode::Embedded;
    config.mqtt.listen = "127.0.0.1:0".parse()?;
    config.plugins.watch = false;
    // Enough messages in flight to fill large commits.
    config.mqtt.max_in_flight = 32768;
    if let Some(url) = &options.database_url {
        config.database.url = Some(Secret::new(url.clone()));
    }
    let store = crate::open_store(&config).await?;
    let backend = store.backend_name();
    // The server's own kernel setup: the demo seed publishes rules.
    let kernel = crate::kernel(&config, store.clone());
    let credentials = crate::demo::seed(&kernel, data_dir).await?;
    let operator_admin = kernel.authenticate_api_key(&credentials.operator_admin_key).await?;
    let garage = credentials.off_street_site_id.parse().context("demo garage id")?;
    add_spaces(&kernel, &operator_admin, garage, options.devices.max(1)).await?;
    let fleet = crate::simulator::ensure_fleet(&kernel, &operator_admin, garage, options.devices.max(1)).await?;
    let server = crate::start(&config, store, std::future::pending()).await?;
    let mqtt = server.mqtt.as_ref().context("MQTT is off")?;
    let broker = mqtt.broker.clone();
    let stats = mqtt.ingest.stats().clone();
    let base = format!("http://{}", server.addr);
    println!("berth bench ingest: {backend}, embedded broker, {} sensors, {} cores", fleet.len(), cores());

    // The messages: by default every sensor flips its state each time, so each uplink is a
    // change (a history row); with `changes_percent` below 100, the others are heartbeats.
    let mut traffic = Traffic::new(fleet);
    let publisher = Publisher::connect(&broker, "bench-sensors", None);
    let mut rounds = Vec::new();
    for round in 1..=options.rounds {
        if options.rounds > 1 {
            println!("round {round} of {}:", options.rounds);
        }
        let messages: Vec<(String, Vec<u8>)> =
            (0..options.messages).map(|_| traffic.next_of(options.changes_percent).1).collect();
        let raw = raw_run(&broker, &messages, options.devices.max(1)).await?;
        let ingest = ingest_run(&publisher, &stats, &messages).await?;
        println!(
            "ingest (broker → plugin → state → {backend}): {:>9.0} uplinks/s  ({:.1}% of the raw broker; {} of {} applied, {}% changes)",
            ingest.rate,
            100.0 * ingest.rate / raw.rate,
            ingest.applied,
            messages.len(),
            options.changes_percent
        );
        // Both runs use the same publisher and broker in this process, so the difference is
        // what berth adds per uplink.
        println!(
            "  CPU per uplink: {:.1} µs in all ({:.1} µs more than a raw message)",
            ingest.cpu,
            ingest.cpu - raw.cpu
        );
        rounds.push((raw.rate, ingest.rate));
    }
    if rounds.len() > 1 {
        let median = |mut values: Vec<f64>| {
            values.sort_by(f64::total_cmp);
            let middle = values.len() / 2;
            if values.len().is_multiple_of(2) { (values[middle - 1] + values[middle]) / 2.0 } else { values[middle] }
        };
        let ratios: Vec<f64> = rounds.iter().map(|(raw, ingest)| 100.0 * ingest / raw).collect();
        println!(
            "medians of {} rounds: raw broker {:.0} messages/s, ingest {:.0} uplinks/s, {:.1}% of the raw broker (rounds: {})",
            rounds.len(),
            median(rounds.iter().map(|(raw, _)| *raw).collect()),
            median(rounds.iter().map(|(_, ingest)| *ingest).collect()),
            median(ratios.clone()),
            ratios.iter().map(|ratio| format!("{ratio:.1}%")).collect::<Vec<_>>().join(", ")
        );
    }

    // 3. Publish → SSE client latency at a fixed rate.
    let path = format!("/v1/sites/{garage}/availability/stream");
    let (changes, mut seen) = tokio::sync::mpsc::unbounded_channel::<(SpaceId, Instant)>();
    let stream = sse_reader(&base, &path, &credentials.operator_staff_key, changes).await?;
    let mut sent: HashMap<SpaceId, VecDeque<Instant>> = HashMap::new();
    let mut latencies = Vec::new();
    // Each latency with the second of the run its uplink was published in.
    let mut by_second: Vec<Vec<Duration>> = Vec::new();
    let started = Instant::now();
    let per_tick = (options.rate / 100).max(1);
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    let until = Instant::now() + Duration::from_secs(options.seconds);
    let mut published = 0u64;
    while Instant::now() < until {
        ticker.tick().await;
        for _ in 0..per_tick {
            let (space, (topic, body)) = traffic.next();
            sent.entry(space).or_default().push_back(Instant::now());
            publisher.publish(&topic, body).await?;
            published += 1;
        }
        while let Ok((space, at)) = seen.try_recv() {
            if let Some(start) = sent.get_mut(&space).and_then(VecDeque::pop_front) {
                record(&mut latencies, &mut by_second, started, start, at);
            }
        }
    }
    let drain_until = Instant::now() + Duration::from_secs(5);
    while (latencies.len() as u64) < published && Instant::now() < drain_until {
        match tokio::time::timeout(Duration::from_millis(200), seen.recv()).await {
            Ok(Some((space, at))) => {
                if let Some(start) = sent.get_mut(&space).and_then(VecDeque::pop_front) {
                    record(&mut latencies, &mut by_second, started, start, at);
                }
            }
            _ => continue,
        }
    }
    stream.abort();
    let (p50, p99) = percentiles(&mut latencies);
    println!(
        "publish → SSE client at {} uplinks/s for {} s: p50 {:.1} ms, p99 {:.1} ms ({} of {} changes seen)",
        options.rate,
        options.seconds,
        ms(p50),
        ms(p99),
        latencies.len(),
        published
    );
    // After the throughput runs' bursts the first seconds pay for their backlog; this line shows
    // how long that lasts.
    let seconds: Vec<String> =
        by_second.iter_mut().map(|samples| format!("{:.0}", ms(percentiles(samples).1))).collect();
    println!("  p99 by second of publishing (ms): {}", seconds.join(" "));

    // 4. Many subscribers on this node, watching the on-street zone (60 bays, 20 with sensors);
    // the clients live in a child process.
    if options.subscribers > 0 {
        let zone = credentials.on_street_site_id.parse().context("demo zone id")?;
        let mut zone_traffic = Traffic::new(crate::simulator::ensure_fleet(&kernel, &operator_admin, zone, 20).await?);
        let path = format!("/v1/sites/{zone}/availability/stream");
        subscribers(options, &base, &path, &credentials.operator_staff_key, &publisher, &mut zone_traffic).await?;
    }
    publisher.disconnect().await;
    server.stop().await?;
    Ok(())
}

/// One throughput run's figures.
struct Run {
    /// Messages (raw) or uplinks (ingest) per second.
    rate: f64,
    /// The process's CPU time per message, in µs.
    cpu: f64,
    /// Uplinks applied (ingest).
    applied: u64,
}

/// The raw broker, same messages, same QoS, to a subscriber that only counts them.
async fn raw_run(broker: &BrokerAddress, messages: &[(String, Vec<u8>)], topics: usize) -> anyhow::Result<Run> {
    let raw = CountingSubscriber::start(broker, "bench-raw-subscriber", "bench/raw/#").await?;
    let publisher = Publisher::connect(broker, "bench-raw-publisher", None);
    let (started, cpu_before) = (Instant::now(), cpu_seconds());
    for (index, (_, body)) in messages.iter().enumerate() {
        publisher.publish(&format!("bench/raw/{}", index % topics), body.clone()).await?;
    }
    wait_for(|| raw.received() >= messages.len() as u64, Duration::from_secs(300)).await?;
    let rate = messages.len() as f64 / started.elapsed().as_secs_f64();
    let cpu = micros_each(cpu_seconds() - cpu_before, messages.len());
    drop(raw);
    publisher.disconnect().await;
    println!("raw broker (QoS 1 publish → subscriber):  {rate:>9.0} messages/s  ({cpu:.1} µs of CPU each)");
    Ok(Run { rate, cpu, applied: 0 })
}

/// Ingest: the same messages on berth's topics, until berth has processed every one.
async fn ingest_run(
    publisher: &Publisher,
    stats: &berth_mqtt::IngestStats,
    messages: &[(String, Vec<u8>)],
) -> anyhow::Result<Run> {
    use std::sync::atomic::Ordering::Relaxed;
    let processed = || {
        stats.applied.load(Relaxed)
            + stats.rejected.load(Relaxed)
            + stats.ignored.load(Relaxed)
            + stats.failed.load(Relaxed)
    };
    let (before, applied_before) = (processed(), stats.applied.load(Relaxed));
    let (started, cpu_before) = (Instant::now(), cpu_seconds());
    for (topic, body) in messages {
        publisher.publish(topic, body.clone()).await?;
    }
    wait_for(|| processed() >= before + messages.len() as u64, Duration::from_secs(600)).await?;
    Ok(Run {
        rate: messages.len() as f64 / started.elapsed().as_secs_f64(),
        cpu: micros_each(cpu_seconds() - cpu_before, messages.len()),
        applied: stats.applied.load(Relaxed) - applied_before,
    })
}

/// Adds spaces to the site until it has `n`.
pub(crate) async fn add_spaces(
    kernel: &Kernel,
    admin: &berth_kernel::auth::Principal,
    site: berth_kernel::ids::SiteId,
    n: usize,
) -> anyhow::Result<()> {
    let filter = berth_kernel::ports::SpaceFilter { site_id: Some(site), ..Default::default() };
    let have = kernel.list_spaces(admin, filter, berth_kernel::page::PageRequest::first(1000)).await?;
    let missing = n.saturating_sub(have.items.len());
    let inputs: Vec<berth_kernel::space::SpaceInput> = (0..missing)
        .map(|index| berth_kernel::space::SpaceInput {
            code: format!("BENCH-{index:06}"),
            lat: None,
            lon: None,
            category: None,
            vehicle_type: None,
            ev_charger: false,
            accessible: false,
        })
        .collect();
    for chunk in inputs.chunks(1000) {
        kernel.create_spaces(admin, site, chunk.to_vec()).await?;
    }
    Ok(())
}

/// Each sensor's uplinks in turn: changes (a flip of its state) or heartbeats.
struct Traffic {
    fleet: Vec<SimulatedSensor>,
    next: usize,
    counters: Vec<u32>,
    occupied: Vec<bool>,
}

impl Traffic {
    fn new(fleet: Vec<SimulatedSensor>) -> Self {
        let n = fleet.len();
        Self { fleet, next: 0, counters: vec![0; n], occupied: vec![false; n] }
    }

    /// The next sensor's uplink, a change.
    fn next(&mut self) -> (SpaceId, (String, Vec<u8>)) {
        self.next_of(100)
    }

    /// The next sensor's uplink: `percent` of each sensor's uplinks are changes, evenly spread
    /// (its n-th is one when `n × percent / 100` steps up), the others heartbeats.
    fn next_of(&mut self, percent: u8) -> (SpaceId, (String, Vec<u8>)) {
        let index = self.next % self.fleet.len();
        self.next += 1;
        self.counters[index] += 1;
        let n = u64::from(self.counters[index]);
        let change = n * u64::from(percent) / 100 != (n - 1) * u64::from(percent) / 100;
        if change {
            self.occupied[index] = !self.occupied[index];
        }
        let sensor = &self.fleet[index];
        let message =
            uplink_message(crate::demo::DEMO_SLUG, sensor, self.counters[index], self.occupied[index], !change);
        (sensor.space_id, message)
    }
}

async fn subscribers(
    options: &IngestBench,
    base: &str,
    path: &str,
    token: &str,
    publisher: &Publisher,
    traffic: &mut Traffic,
) -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, BufReader};
    const EVENTS: usize = 20;
    // This process holds the server's end of each stream and the child, which inherits the
    // limit, the client's end.
    let connections = options.subscribers.div_ceil(options.streams_per_connection.max(1));
    make_room_for_files(connections as u64 + 1024)?;
    let (rss_before, cpu_before) = (rss_kib(), cpu_seconds());
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["bench", "sse-clients", "--url"])
        .arg(format!("{base}{path}"))
        .args(["--token", token, "--clients"])
        .arg(options.subscribers.to_string())
        .args(["--events", &EVENTS.to_string()])
        .args(["--streams-per-connection", &options.streams_per_connection.to_string()])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the SSE client process")?;
    let mut lines = BufReader::new(child.stdout.take().context("child stdout")?).lines();
    let started = Instant::now();
    let ready = lines.next_line().await?.unwrap_or_default();
    anyhow::ensure!(ready.starts_with("ready"), "SSE clients did not connect: {ready}");
    let connect_secs = started.elapsed().as_secs_f64();
    let (rss_after, connect_cpu) = (rss_kib(), cpu_seconds() - cpu_before);
    for _ in 0..EVENTS {
        let (_, (topic, body)) = traffic.next();
        publisher.publish(&topic, body).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = tokio::time::timeout(Duration::from_secs(120), lines.next_line()).await??.unwrap_or_default();
    let _ = child.wait().await;
    let over = match options.streams_per_connection {
        0 | 1 => "HTTP/1.1, a connection each".to_owned(),
        n => format!("HTTP/2, {n} streams on each of {connections} connections"),
    };
    println!(
        "{} SSE subscribers on one node ({over}): connected in {:.1} s (server CPU {:.0} µs per subscriber); server RSS {} MiB → {} MiB ({:.1} KiB per subscriber); delivery {report}",
        options.subscribers,
        connect_secs,
        micros_each(connect_cpu, options.subscribers),
        rss_before / 1024,
        rss_after / 1024,
        rss_after.saturating_sub(rss_before) as f64 / options.subscribers as f64
    );
    Ok(())
}

/// `berth bench sse-clients`: `clients` SSE streams, `streams_per_connection` to an HTTP/2
/// connection (1: HTTP/1.1, a connection each); prints `ready` once every snapshot arrived,
/// then, after `events` changes reached every client, the delivery latency (client clock minus
/// the change's `at`).
pub async fn sse_clients(
    url: String,
    token: String,
    clients: usize,
    events: usize,
    streams_per_connection: usize,
) -> anyhow::Result<()> {
    crate::raise_open_files_limit()?;
    let per_connection = streams_per_connection.max(1);
    anyhow::ensure!(
        per_connection <= berth_openapi::server::MAX_STREAMS_PER_CONNECTION as usize,
        "at most {} streams per connection",
        berth_openapi::server::MAX_STREAMS_PER_CONNECTION
    );
    // One source address has about 28,000 ephemeral ports towards the server's one port: spread
    // the connections over loopback addresses (all of 127.0.0.0/8 is this machine).
    let address = |connection: usize| -> anyhow::Result<std::net::IpAddr> {
        let index = u8::try_from(connection / CLIENTS_PER_ADDRESS).context("too many connections")?;
        Ok(std::net::Ipv4Addr::new(127, 0, 0, 1 + index).into())
    };
    // HTTP/1.1: a pool per source address that keeps nothing, so each stream opens its own
    // connection. HTTP/2: a client per connection, which multiplexes its streams onto it.
    let http = if per_connection == 1 {
        (0..clients.div_ceil(CLIENTS_PER_ADDRESS).max(1))
            .map(|index| {
                Ok(reqwest::Client::builder()
                    .pool_max_idle_per_host(0)
                    .local_address(address(index * CLIENTS_PER_ADDRESS)?)
                    .build()?)
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    } else {
        (0..clients.div_ceil(per_connection))
            .map(|connection| {
                Ok(reqwest::Client::builder().http2_prior_knowledge().local_address(address(connection)?).build()?)
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let clients_per_http = if per_connection == 1 { CLIENTS_PER_ADDRESS } else { per_connection };
    // Each client's snapshot, or why it has none.
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<Result<(), String>>();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<f64>>();
    // Why connection attempts were retried, with how many.
    let retries = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<String, usize>::new()));
    for index in 0..clients {
        let client = http[index / clients_per_http].clone();
        let (url, token, ready_tx, done_tx, retries) =
            (url.clone(), token.clone(), ready_tx.clone(), done_tx.clone(), retries.clone());
        tokio::spawn(async move {
            // A client whose connection failed, or that the server turned away for now (503),
            // tries again, as a live client should (here after 1 to 2 s, at most 5 times).
            let mut attempt = 0;
            let response = loop {
                let failure = match client.get(&url).bearer_auth(&token).send().await {
                    Ok(response) if response.status().is_success() => break response,
                    Ok(response) if response.status() != reqwest::StatusCode::SERVICE_UNAVAILABLE => {
                        return drop(ready_tx.send(Err(format!("HTTP {}", response.status()))));
                    }
                    // The problem's detail says which of the server's resources ran short.
                    Ok(response) => {
                        let problem = response.json::<serde_json::Value>().await.unwrap_or_default();
                        match problem["detail"].as_str() {
                            Some(detail) => format!("HTTP 503 ({detail})"),
                            None => "HTTP 503".to_owned(),
                        }
                    }
                    Err(error) => error_chain(&error),
                };
                if attempt == 5 {
                    return drop(ready_tx.send(Err(failure)));
                }
                attempt += 1;
                *retries.lock().unwrap().entry(failure).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(1000 + (index % 1000) as u64)).await;
            };
            let mut body = response.bytes_stream();
            let mut parser = SseEvents::default();
            let mut latencies = Vec::with_capacity(events);
            let mut snapshot = false;
            while let Some(Ok(chunk)) = body.next().await {
                for data in parser.feed(&chunk) {
                    if data.kind == "snapshot" {
                        snapshot = true;
                        let _ = ready_tx.send(Ok(()));
                    } else if let Some(space) = data.space {
                        let delay = chrono::Utc::now() - space.at;
                        latencies.push(delay.num_microseconds().unwrap_or(0) as f64 / 1000.0);
                        if latencies.len() == events {
                            let _ = done_tx.send(latencies);
                            return;
                        }
                    }
                }
            }
            if !snapshot {
                let _ = ready_tx.send(Err("the stream ended before its snapshot".to_owned()));
            }
        });
        // Ramp up, so the listen backlog never overflows.
        if index % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    drop((ready_tx, done_tx));
    let (mut n_ready, mut failures) = (0, std::collections::BTreeMap::<String, usize>::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while n_ready + failures.values().sum::<usize>() < clients {
        match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
            Ok(Some(Ok(()))) => n_ready += 1,
            Ok(Some(Err(reason))) => *failures.entry(reason).or_default() += 1,
            _ => break,
        }
    }
    println!("ready {n_ready}");
    let by_reason = |counts: &std::collections::BTreeMap<String, usize>| {
        counts.iter().map(|(reason, count)| format!("{count} × {reason}")).collect::<Vec<_>>().join(", ")
    };
    let retried = retries.lock().unwrap().clone();
    let mut failed = match retried.values().sum::<usize>() {
        0 => String::new(),
        n => format!("; {n} connection attempts retried: {}", by_reason(&retried)),
    };
    if !failures.is_empty() {
        failed += &format!("; not connected: {}", by_reason(&failures));
    }
    let mut all = Vec::new();
    let mut n_done = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while n_done < n_ready {
        match tokio::time::timeout_at(deadline, done_rx.recv()).await {
            Ok(Some(latencies)) => {
                all.extend(latencies);
                n_done += 1;
            }
            _ => break,
        }
    }
    all.sort_by(f64::total_cmp);
    let pick = |q: f64| all.get(((all.len() as f64 - 1.0) * q) as usize).copied().unwrap_or(f64::NAN);
    println!(
        "p50 {:.1} ms, p99 {:.1} ms over {} deliveries ({n_done} of {clients} clients got all {events} changes{failed})",
        pick(0.5),
        pick(0.99),
        all.len()
    );
    Ok(())
}

/// An error and its causes, on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text += &format!(": {cause}");
        source = cause.source();
    }
    text
}

/// SSE clients per loopback source address (under its ~28,000 ephemeral ports).
const CLIENTS_PER_ADDRESS: usize = 20_000;

/// Makes room for `needed` open files in this process: the soft limit up to the hard one, and the
/// hard one too where the process may (root, or `CAP_SYS_RESOURCE`).
fn make_room_for_files(needed: u64) -> anyhow::Result<()> {
    let limit = crate::raise_open_files_limit()?;
    if limit >= needed || rlimit::setrlimit(rlimit::Resource::NOFILE, needed, needed).is_ok() {
        return Ok(());
    }
    anyhow::bail!(
        "the bench needs {needed} open files and may have {limit}: raise the hard limit (ulimit -Hn {needed})"
    )
}

/// Reads an SSE stream in the background and reports each space change with when it arrived.
async fn sse_reader(
    base: &str,
    path: &str,
    token: &str,
    changes: tokio::sync::mpsc::UnboundedSender<(SpaceId, Instant)>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let response = reqwest::Client::new().get(format!("{base}{path}")).bearer_auth(token).send().await?;
    anyhow::ensure!(response.status().is_success(), "SSE stream: {}", response.status());
    let mut body = response.bytes_stream();
    Ok(tokio::spawn(async move {
        let mut parser = SseEvents::default();
        while let Some(Ok(chunk)) = body.next().await {
            let arrived = Instant::now();
            for data in parser.feed(&chunk) {
                if let Some(space) = data.space {
                    let _ = changes.send((SpaceId::from_uuid(space.id), arrived));
                }
            }
        }
    }))
}

/// Reassembles Server-Sent Events from a response's chunks and reads, of each event's `data`,
/// only what the bench needs: the clients share the server's cores, so they should cost little.
#[derive(Default)]
struct SseEvents {
    buffer: Vec<u8>,
}

/// What the bench reads of a stream event's `data`.
#[derive(serde::Deserialize)]
struct StreamData {
    kind: String,
    space: Option<SpaceData>,
}

#[derive(serde::Deserialize)]
struct SpaceData {
    id: uuid::Uuid,
    at: chrono::DateTime<chrono::Utc>,
}

impl SseEvents {
    fn feed(&mut self, chunk: &[u8]) -> Vec<StreamData> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(end) = self.buffer[start..].windows(2).position(|pair| pair == b"\n\n") {
            let block = &self.buffer[start..start + end];
            if let Some(data) = block.split(|&byte| byte == b'\n').find_map(|line| line.strip_prefix(b"data:"))
                && let Ok(data) = serde_json::from_slice(data)
            {
                events.push(data);
            }
            start += end + 2;
        }
        self.buffer.drain(..start);
        events
    }
}

async fn wait_for(done: impl Fn() -> bool, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        anyhow::ensure!(Instant::now() < deadline, "timed out after {limit:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// Keeps a latency, in all and under the second of the run `start` fell in.
fn record(all: &mut Vec<Duration>, by_second: &mut Vec<Vec<Duration>>, run: Instant, start: Instant, at: Instant) {
    let second = (start - run).as_secs() as usize;
    if by_second.len() <= second {
        by_second.resize_with(second + 1, Vec::new);
    }
    by_second[second].push(at - start);
    all.push(at - start);
}

pub(crate) fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let pick = |q: f64| samples.get(((samples.len() as f64 - 1.0) * q) as usize).copied().unwrap_or_default();
    (pick(0.5), pick(0.99))
}

pub(crate) fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// CPU seconds spent on `count` things (messages, subscribers), per thing in microseconds.
fn micros_each(seconds: f64, count: usize) -> f64 {
    seconds * 1e6 / count.max(1) as f64
}

/// CPU time this process has used (user and system), in seconds.
fn cpu_seconds() -> f64 {
    process_cpu_seconds("self")
}

/// CPU seconds (user and system, all threads) a process has used so far: `process` is a pid or
/// `self`; 0 when it cannot be read.
pub fn process_cpu_seconds(process: &str) -> f64 {
    // /proc/PID/stat: fields 14 and 15 (after the parenthesised name) count clock ticks.
    let stat = std::fs::read_to_string(format!("/proc/{process}/stat")).unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: u64 = fields.get(11..13).map_or(0, |times| times.iter().filter_map(|t| t.parse::<u64>().ok()).sum());
    // Linux reports them in USER_HZ, which is 100 on every architecture berth builds for.
    ticks as f64 / 100.0
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| status.lines().find(|line| line.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|line| line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()))
        .unwrap_or(0)
}

/// `berth bench rules`: for each bundled template, compile time, then quotes (allow_booking +
/// price + checks, as `POST /v1/quotes` evaluates them) on every core at once: quotes/s and
/// latency percentiles.
pub fn rules(evaluations: usize) -> anyhow::Result<()> {
    use berth_kernel::rules::{EntryPoint, evaluate_checked_each};
    use berth_rules::project::RuleProject;

    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/examples");
    let engine = berth_rules::RhaiRules::new(berth_rules::Limits::default());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!("rules bench: {evaluations} quotes per template on {threads} threads");
    println!("{:<28} {:>10} {:>12} {:>9} {:>9} {:>9}", "template", "compile", "quotes/s", "p50", "p99", "max");
    for project in RuleProject::discover(&examples)? {
        let compile_started = Instant::now();
        const COMPILES: u32 = 20;
        for _ in 0..COMPILES {
            project.compile(&engine)?;
        }
        let compile = compile_started.elapsed() / COMPILES;
        let script = project.compile(&engine)?;
        let fixture = project
            .tests
            .iter()
            .find(|test| test.entry.is_none() && test.expect.total_minor.is_some())
            .ok_or_else(|| anyhow::anyhow!("{}: no price test case to time", project.dir.display()))?;
        let settings = &project.settings;
        let ctx = project.setting().context(&fixture.context)?;
        let per_thread = evaluations.div_ceil(threads);
        let started = Instant::now();
        let mut latencies: Vec<u64> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let (script, ctx) = (script.clone(), ctx.clone());
                    scope.spawn(move || {
                        let mut latencies = Vec::with_capacity(per_thread);
                        for _ in 0..per_thread {
                            let quote_started = Instant::now();
                            let entries = [EntryPoint::AllowBooking, EntryPoint::Price];
                            let checked = evaluate_checked_each(script.as_ref(), &entries, &ctx, &settings.guardrails);
                            assert!(checked.iter().all(Result::is_ok), "the timed test case evaluates");
                            latencies.push(quote_started.elapsed().as_nanos() as u64);
                        }
                        latencies
                    })
                })
                .collect();
            handles.into_iter().flat_map(|handle| handle.join().expect("bench thread")).collect()
        });
        let elapsed = started.elapsed();
        latencies.sort_unstable();
        let percentile = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
        println!(
            "{:<28} {:>8.0}µs {:>12.0} {:>7.1}µs {:>7.1}µs {:>7.1}µs",
            settings.name,
            compile.as_secs_f64() * 1e6,
            latencies.len() as f64 / elapsed.as_secs_f64(),
            percentile(0.50),
            percentile(0.99),
            *latencies.last().unwrap_or(&0) as f64 / 1000.0,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_reassembled_across_chunks() {
        let mut parser = SseEvents::default();
        let snapshot = "id: a.1\nevent: snapshot\ndata: {\"kind\":\"snapshot\",\"id\":\"a.1\",\"snapshot\":{}}\n\n";
        let change = "id: a.2\nevent: space\ndata: {\"kind\":\"space\",\"space\":{\"id\":\"0190a5b6-0000-7000-8000-000000000001\",\"status\":\"free\",\"at\":\"2026-11-28T08:00:00.5Z\"}}\n\n";
        let stream = format!("{snapshot}: keep-alive\n\n{change}");
        let (first, rest) = stream.as_bytes().split_at(snapshot.len() + 7);
        let events: Vec<StreamData> = [first, rest].iter().flat_map(|chunk| parser.feed(chunk)).collect();
        assert_eq!(events.len(), 2);
        assert_eq!((events[0].kind.as_str(), events[0].space.is_none()), ("snapshot", true));
        let space = events[1].space.as_ref().unwrap();
        assert_eq!(space.id.to_string(), "0190a5b6-0000-7000-8000-000000000001");
        assert_eq!(space.at.to_rfc3339(), "2026-11-28T08:00:00.500+00:00");
        assert!(parser.buffer.is_empty());
    }

    #[test]
    fn traffic_changes_the_share_asked_for() {
        let fleet = (0..3)
            .map(|index| crate::simulator::SimulatedSensor {
                external_id: format!("000000000000000{index}"),
                vendor: "tekzitel",
                model: "tekzipark",
                space_id: berth_kernel::ids::SpaceId::new(),
            })
            .collect();
        let mut traffic = Traffic::new(fleet);
        for (percent, changes) in [(100, 40), (25, 10), (10, 4), (1, 0)] {
            let before = traffic.occupied.clone();
            let mut flips = vec![0; 3];
            for _ in 0..3 * 40 {
                let index = traffic.next % 3;
                let was = traffic.occupied[index];
                traffic.next_of(percent);
                flips[index] += usize::from(traffic.occupied[index] != was);
            }
            assert_eq!(flips, [changes; 3], "{percent}%");
            assert_eq!(traffic.occupied, if changes % 2 == 0 { before } else { before.iter().map(|o| !o).collect() });
        }
    }
}
