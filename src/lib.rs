//! The `berth` binary's library half: configuration, wiring of adapters into the kernel, and
//! the server lifecycle. `main.rs` only parses the command line; tests start servers through
//! [`start`] exactly as `berth serve` does.

pub mod bench;
pub mod bench_chat;
pub mod bench_history;
pub mod bench_market;
pub mod config;
pub mod demo;
pub mod nlu_cli;
pub mod payments;
pub mod plugin_cli;
pub mod rules_cli;
pub mod simulator;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_kernel::Kernel;
use berth_mqtt::{BrokerAddress, EmbeddedBroker, IngestSettings, MqttIngest, Subscription};
use berth_openapi::AppState;
use berth_openapi::tokens::{JwksSource, OidcSettings, TokenService};
use berth_plugin_host::{HostOptions, PluginHost, Registry, RegistryOptions};
use berth_storage::{DatabaseSettings, SqlStore};
use tokio::sync::oneshot;

use crate::config::{Config, MqttMode};

/// Opens the database named by the configuration, applying migrations if configured.
pub async fn open_store(config: &Config) -> anyhow::Result<SqlStore> {
    let url = config.database_url();
    if config.database.url.is_none() {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    }
    let settings = DatabaseSettings {
        url,
        max_connections: config.database.max_connections,
        connect_timeout: Duration::from_secs(config.database.connect_timeout_secs),
    };
    let store = SqlStore::connect(&settings).await?;
    if config.database.auto_migrate {
        store.migrate().await?;
    }
    Ok(store)
}

/// The secret that signs driver tokens: configured, or generated once into the data dir so that
/// tokens survive restarts.
fn token_secret(config: &Config) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = &config.auth.token_secret {
        anyhow::ensure!(secret.expose().len() >= 32, "auth.token_secret must be at least 32 characters");
        return Ok(secret.expose().as_bytes().to_vec());
    }
    let path = config.data_dir.join("token-secret");
    if let Ok(existing) = std::fs::read_to_string(&path)
        && existing.trim().len() >= 32
    {
        return Ok(existing.trim().as_bytes().to_vec());
    }
    std::fs::create_dir_all(&config.data_dir)?;
    let generated = random_token(32);
    write_private_file(&path, &generated)?;
    Ok(generated.into_bytes())
}

/// Below this many open files, a node is warned at startup that it cannot hold many clients.
pub const FEW_OPEN_FILES: u64 = 8192;

/// Raises this process's soft limit on open files to its hard limit, as a server should: each SSE
/// stream, MQTT client and database connection holds a file descriptor, and the usual soft limit
/// (1,024) is far below what one node serves. Returns the limit now in force.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// [`raise_open_files_limit`] for a server that is starting: logs the limit, and warns when it
/// is low or could not be read.
pub fn raise_open_files_limit_logged() {
    match raise_open_files_limit() {
        Ok(limit) if limit < FEW_OPEN_FILES => tracing::warn!(
            limit,
            "few open files allowed, and each client connection takes one: raise the hard limit \
             (systemd: LimitNOFILE=, shell: ulimit -Hn) for a node that serves many clients"
        ),
        Ok(limit) => tracing::info!(limit, "open files allowed"),
        Err(error) => tracing::warn!(%error, "cannot read or raise the open-files limit"),
    }
}

/// Writes a file readable by its owner only.
pub fn write_private_file(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// Starts the plugin host and loads the bundled and installed plugins. Compiling is CPU work, so
/// it runs on the blocking pool.
pub async fn open_plugins(config: &Config) -> anyhow::Result<Option<Registry>> {
    let settings = &config.plugins;
    if !settings.enabled {
        return Ok(None);
    }
    let cache_dir = settings.cache.then(|| settings.cache_dir.clone().unwrap_or(config.data_dir.join("plugin-cache")));
    let options = RegistryOptions {
        bundled: if settings.bundled { berth_plugin_host::BUNDLED } else { &[] },
        plugins_dir: settings.dir.clone().unwrap_or(config.data_dir.join("plugins")),
        watch: settings.watch,
        config: settings.config.clone(),
        max_component_bytes: settings.max_component_bytes,
        secret_env: plugin_secrets(settings),
    };
    let pooling = settings.pooling;
    let registry = tokio::task::spawn_blocking(move || {
        let host = PluginHost::with_options(&HostOptions { pooling, cache_dir })?;
        Registry::open(host, options).map_err(anyhow::Error::msg)
    })
    .await
    .context("the plugin loader panicked")?
    .context("cannot start the plugin host (settings under [plugins])")?;
    Ok(Some(registry))
}

/// Plugin secrets: the configured ones, then the `BERTH_PLUGIN_*` environment over them.
fn plugin_secrets(settings: &crate::config::PluginsConfig) -> std::collections::BTreeMap<String, String> {
    let mut secrets: std::collections::BTreeMap<String, String> = settings
        .secrets
        .iter()
        .flat_map(|(plugin, values)| {
            values.iter().map(move |(key, value)| {
                (berth_plugin_host::registry::secret_variable(plugin, key), value.expose().to_owned())
            })
        })
        .collect();
    secrets.extend(RegistryOptions::secrets_from_process_env());
    secrets
}

/// A kernel on `store` with the configured rules engine (plugins are added by [`build_state`]).
pub fn kernel(config: &Config, store: SqlStore) -> Kernel {
    Kernel::new(Arc::new(store)).with_rules(Arc::new(berth_rules::RhaiRules::new(config.rules.limits())))
}

/// Builds the application state from configuration and an open store.
pub async fn build_state(config: &Config, store: SqlStore) -> anyhow::Result<AppState> {
    let oidc = config.auth.oidc.as_ref().map(|oidc| OidcSettings {
        jwks: JwksSource::parse(&oidc.jwks),
        issuer: oidc.issuer.clone(),
        audience: oidc.audience.clone(),
    });
    let tokens =
        TokenService::new(&token_secret(config)?, Duration::from_secs(config.auth.token_ttl_secs), oidc).await?;
    let mut kernel = kernel(config, store);
    let nlu = config.nlu.clone();
    let language =
        tokio::task::spawn_blocking(move || nlu.train()).await.context("the language model trainer panicked")??;
    kernel = kernel.with_language(language);
    if let Some(token) = &config.telegram.token {
        let channel = berth_telegram::TelegramChannel::new(
            token.expose(),
            config.telegram.api_url.as_deref(),
            config.telegram.webhook_secret.as_ref().map(|secret| secret.expose().to_owned()),
        )
        .map_err(anyhow::Error::msg)
        .context("telegram")?
        .with_timezone(config.telegram.timezone.clone());
        if let Some(timezone) = &config.telegram.timezone {
            berth_kernel::language::parse_timezone(timezone).context("telegram.timezone")?;
        }
        kernel = kernel.with_chat_channel(Arc::new(channel));
    }
    let registry = open_plugins(config).await?;
    kernel = kernel.with_payments(payments::payments(config, registry.as_ref())?);
    if let Some(registry) = registry {
        kernel = kernel.with_plugins(Arc::new(registry));
    }
    Ok(AppState { kernel, tokens, admin_key: config.auth.admin_key.as_ref().map(|key| Arc::from(key.expose())) })
}

/// A server running in the background.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: AppState,
    /// Where MQTT uplinks go in (the embedded broker, or the external one), when MQTT is on.
    pub mqtt: Option<MqttRunning>,
    /// The fan-out to other nodes, when `redis.url` is set.
    pub fanout: Option<berth_redis::RedisFanout>,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// The MQTT side of a running server.
pub struct MqttRunning {
    /// The broker the ingest client reads from.
    pub broker: BrokerAddress,
    /// Set when berth runs the broker itself.
    pub embedded: Option<EmbeddedBroker>,
    /// The account berth's client uses (configured, or its internal one on an embedded broker
    /// with accounts); other clients of this process (the demo's sensors) use it too.
    pub credentials: Option<(String, String)>,
    pub ingest: MqttIngest,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish (up to the grace period), then returns.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let served = self.task.await;
        if let Some(mqtt) = self.mqtt.take() {
            mqtt.ingest.stop().await;
        }
        served??;
        Ok(())
    }

    /// Waits until the server stops by itself (after `shutdown` resolved).
    pub async fn wait(self) -> anyhow::Result<()> {
        let RunningServer { task, shutdown, mqtt, fanout, .. } = self;
        // Keep the sender (and the fan-out) alive so the server is not told to stop early.
        let _keep = (shutdown, fanout);
        let served = task.await;
        if let Some(mqtt) = mqtt {
            mqtt.ingest.stop().await;
        }
        served??;
        Ok(())
    }
}

/// Starts the embedded broker (if configured) and the ingest client.
pub async fn start_mqtt(config: &Config, kernel: Kernel) -> anyhow::Result<Option<MqttRunning>> {
    let settings = &config.mqtt;
    let (broker, embedded, internal_password) = match settings.mode {
        MqttMode::Off => return Ok(None),
        MqttMode::External => {
            let url = settings.url.as_deref().context("mqtt.mode is \"external\" but mqtt.url is not set")?;
            (BrokerAddress::parse(url)?, None, None)
        }
        MqttMode::Embedded => {
            let mut users: std::collections::BTreeMap<String, String> =
                settings.users.iter().map(|(user, pass)| (user.clone(), pass.expose().to_owned())).collect();
            // With accounts on, berth's own client needs one too.
            let own = (!users.is_empty() && settings.username.is_none()).then(|| {
                let password = random_token(24);
                users.insert(INTERNAL_MQTT_USER.to_owned(), password.clone());
                password
            });
            let (listen, max_payload) = (settings.listen, settings.max_payload_bytes);
            let embedded =
                tokio::task::spawn_blocking(move || EmbeddedBroker::start(listen, "mqtt.listen", max_payload, &users))
                    .await
                    .context("the MQTT broker start panicked")??;
            let addr = embedded.addr();
            (BrokerAddress { host: addr.ip().to_string(), port: addr.port() }, Some(embedded), own)
        }
    };
    let subscriptions: Vec<Subscription> = settings
        .subscriptions
        .iter()
        .map(|s| Subscription { filter: s.topic.clone(), operator: s.operator.clone() })
        .collect();
    let credentials = match &settings.username {
        Some(username) => {
            Some((username.clone(), settings.password.as_ref().map(|p| p.expose().to_owned()).unwrap_or_default()))
        }
        None => internal_password.map(|password| (INTERNAL_MQTT_USER.to_owned(), password)),
    };
    let ingest = match embedded.as_ref().and_then(EmbeddedBroker::take_link) {
        // The broker is in this process: its router hands messages over directly.
        Some(link) => MqttIngest::spawn_local(kernel, link, subscriptions, settings.max_in_flight)?,
        None => {
            let mut ingest = IngestSettings::new(broker.clone(), settings.client_id.clone());
            ingest.max_in_flight = settings.max_in_flight;
            ingest.connections = settings.connections;
            if embedded.is_some() {
                // See `IngestSettings::at_least_once`.
                ingest.at_least_once = false;
                ingest.connections = 1;
            }
            ingest.subscriptions = subscriptions;
            ingest.username = credentials.as_ref().map(|(user, _)| user.clone());
            ingest.password = credentials.as_ref().map(|(_, pass)| pass.clone());
            MqttIngest::spawn(kernel, ingest)?
        }
    };
    // Ready means subscribed: a message published once `start` returned is not missed. An
    // external broker that is down does not stop the server; the client keeps trying.
    let patience = if embedded.is_some() { Duration::from_secs(30) } else { Duration::from_secs(5) };
    if !ingest.wait_subscribed(patience).await {
        tracing::warn!(broker = %format!("{}:{}", broker.host, broker.port), "MQTT not subscribed yet; continuing, the client keeps trying");
    }
    Ok(Some(MqttRunning { broker, embedded, credentials, ingest }))
}

/// The account berth's own client uses on the embedded broker when accounts are configured.
const INTERNAL_MQTT_USER: &str = "berth-internal";

/// `n_bytes` random bytes from the OS, as hex.
fn random_token(n_bytes: usize) -> String {
    use rand::RngCore;
    let mut bytes = vec![0u8; n_bytes];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Binds the listener and serves the API until `shutdown` resolves or [`RunningServer::stop`].
pub async fn start(
    config: &Config,
    store: SqlStore,
    shutdown_signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<RunningServer> {
    let state = build_state(config, store.clone()).await?;
    let listener = berth_openapi::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on {} (setting http.listen)", config.http.listen))?;
    let addr = listener.local_addr();
    let fanout = match &config.redis.url {
        Some(url) => {
            let shared = berth_redis::RedisLiveStates::connect(url.expose(), &config.redis.channel).await?;
            state.kernel.share_live_states(std::sync::Arc::new(shared));
            Some(berth_redis::RedisFanout::start(url.expose(), &config.redis.channel, state.kernel.clone()).await?)
        }
        None => None,
    };
    let mqtt = start_mqtt(config, state.kernel.clone()).await?;
    let served_state = state.clone();
    let adjuster = adjust_on_schedule(state.kernel.clone(), config.rules.adjust_interval_secs);
    let money = payments_on_schedule(state.kernel.clone(), config.payments.clone());
    let telegram = telegram_polling(state.kernel.clone(), config.telegram.clone());
    let chat = chat_on_schedule(state.kernel.clone(), config.chat.clone());
    let max_body_bytes = config.http.max_body_bytes;
    let (stop_sender, stop_receiver) = oneshot::channel::<()>();
    let grace = Duration::from_secs(config.http.shutdown_grace_secs);
    let task = tokio::spawn(async move {
        let stop = async move {
            tokio::select! {
                _ = shutdown_signal => {}
                _ = stop_receiver => {}
            }
            tracing::info!("shutting down: finishing in-flight requests");
        };
        // The adjustment scheduler lives exactly as long as the server.
        let result = tokio::select! {
            result = listener.serve(served_state, max_body_bytes, stop, grace) => result,
            never = adjuster => match never {},
            never = money => match never {},
            never = telegram => match never {},
            never = chat => match never {},
        };
        if let Err(error) = store.close().await {
            tracing::warn!(error = %error, "closing the database failed");
        }
        result
    });
    Ok(RunningServer { addr, state, mqtt, fanout, shutdown: Some(stop_sender), task })
}

/// Long-polls Telegram when `telegram.mode = "polling"`, feeding updates through the same path
/// as the webhook; otherwise never resolves.
async fn telegram_polling(kernel: Kernel, settings: crate::config::TelegramConfig) -> std::convert::Infallible {
    let (Some(token), crate::config::TelegramMode::Polling) = (settings.token, settings.mode) else {
        return std::future::pending().await;
    };
    let api_url = settings.api_url;
    let secret = settings.webhook_secret.as_ref().map(|secret| secret.expose().to_owned());
    let deliver = move |body: Vec<u8>| {
        let kernel = kernel.clone();
        let headers: Vec<(String, String)> =
            secret.iter().map(|secret| (berth_telegram::SECRET_HEADER.to_owned(), secret.clone())).collect();
        async move {
            if let Err(error) = kernel.chat_webhook("telegram", &headers, &body).await {
                tracing::warn!(error = %error, "a polled telegram update was refused");
            }
        }
    };
    berth_telegram::poll(api_url.as_deref(), token.expose(), deliver).await
}

/// The chat jobs: at start-up, answer the messages a stopped node stored but never answered;
/// then, every `reminder_interval_secs`, remind drivers of bookings about to start.
async fn chat_on_schedule(kernel: Kernel, settings: crate::config::ChatConfig) -> std::convert::Infallible {
    match kernel.answer_waiting_conversations().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(conversations = n, "answered chat messages left waiting by a previous run"),
        Err(error) => tracing::warn!(error = %error, "answering waiting chat messages failed"),
    }
    if settings.reminder_minutes == 0 {
        return std::future::pending().await;
    }
    let lead = chrono::Duration::minutes(i64::from(settings.reminder_minutes));
    let mut ticks = tokio::time::interval(Duration::from_secs(settings.reminder_interval_secs.max(1)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(error) = kernel.send_booking_reminders(lead, 200).await {
            tracing::warn!(error = %error, "booking reminders could not be sent");
        }
    }
}

/// Runs operators' scheduled rate adjustments every `interval_secs` (0: never). Each node runs
/// them; a rule set with an adjusted version already scheduled is skipped, so nodes do not stack
/// changes.
async fn adjust_on_schedule(kernel: Kernel, interval_secs: u64) -> std::convert::Infallible {
    if interval_secs == 0 {
        return std::future::pending().await;
    }
    let mut ticks = tokio::time::interval(Duration::from_secs(interval_secs));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        if let Err(error) = kernel.run_scheduled_adjustments().await {
            tracing::warn!(error = %error, "scheduled rate adjustments could not run");
        }
    }
}

/// The jobs that move money and bookings along: the outbox relay (woken by every new command,
/// else every `relay_interval_ms`), the booking clock (holds, arrivals, departures, no-shows)
/// and reconciliation with the providers. Every node runs them; commands are leased, and
/// booking changes are checked against the booking's version, so nodes do not step on each
/// other.
async fn payments_on_schedule(kernel: Kernel, config: crate::config::PaymentsConfig) -> std::convert::Infallible {
    let relay = async {
        let interval = Duration::from_millis(config.relay_interval_ms.max(10));
        loop {
            if !kernel.payments().is_empty() {
                loop {
                    match kernel.relay_payments(100).await {
                        Ok(report) if report.done + report.failed + report.retrying >= 100 => continue,
                        Ok(_) => break,
                        Err(error) => {
                            tracing::warn!(error = %error, "payment relay pass failed");
                            break;
                        }
                    }
                }
            }
            kernel.payments().woken(interval).await;
        }
    };
    let clock = async {
        let mut ticks = tokio::time::interval(Duration::from_secs(config.tick_interval_secs.max(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(error) = kernel.tick_bookings(500).await {
                tracing::warn!(error = %error, "booking clock pass failed");
            }
            let days = i64::try_from(config.plate_retention_days.min(36_500)).unwrap_or(36_500);
            let retention = chrono::Duration::days(days);
            if let Err(error) = kernel.forget_old_plates(retention).await {
                tracing::warn!(error = %error, "erasing old plates failed");
            }
        }
    };
    let reconcile = async {
        if config.reconcile_interval_secs == 0 || kernel.payments().is_empty() {
            return std::future::pending().await;
        }
        let mut ticks = tokio::time::interval(Duration::from_secs(config.reconcile_interval_secs));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(error) = kernel.reconcile_payments(200).await {
                tracing::warn!(error = %error, "payment reconciliation failed");
            }
        }
    };
    tokio::join!(relay, clock, reconcile);
    unreachable!("the payment jobs never end")
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("invariant: installing a SIGTERM handler succeeds on unix");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
