//! Typed configuration: defaults → `berth.toml` → `BERTH__SECTION__KEY` environment variables.
//! Unknown keys are errors that name the key and where it came from.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret value: never printed by `Debug`, serialised (for `berth config`) as `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the SQLite database, the generated token secret and demo credentials live.
    pub data_dir: PathBuf,
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub log: LogConfig,
    pub plugins: PluginsConfig,
    pub mqtt: MqttConfig,
    pub redis: RedisConfig,
    pub rules: RulesConfig,
    pub payments: PaymentsConfig,
    pub nlu: NluConfig,
    pub chat: ChatConfig,
    pub telegram: TelegramConfig,
}

/// What the chat channels do on their own.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatConfig {
    /// Remind a driver this many minutes before a confirmed booking starts, in the
    /// conversation they last used (0: no reminders).
    pub reminder_minutes: u32,
    /// How often reminders are looked for.
    pub reminder_interval_secs: u64,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self { reminder_minutes: 30, reminder_interval_secs: 60 }
    }
}

/// The Telegram channel: a bot whose webhook is `POST /v1/webhooks/chat/telegram`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelegramConfig {
    /// The bot's token from @BotFather; unset: no Telegram channel.
    pub token: Option<Secret>,
    /// The `secret_token` given to `setWebhook`; updates without it are refused.
    pub webhook_secret: Option<Secret>,
    /// Another Bot API server (a local `telegram-bot-api`); default Telegram's.
    pub api_url: Option<String>,
    /// The IANA timezone replies give times in (Telegram does not tell a user's); default UTC.
    pub timezone: Option<String>,
    /// `webhook` (Telegram posts to `/v1/webhooks/chat/telegram`) or `polling` (berth asks
    /// with `getUpdates`, for a machine Telegram cannot reach).
    pub mode: TelegramMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TelegramMode {
    #[default]
    Webhook,
    Polling,
}

/// The language model drivers' chat messages go through.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NluConfig {
    /// Rasa NLU YAML files (or directories of them) trained together with the bundled parking data.
    pub extra_data: Vec<PathBuf>,
    /// Below this intent confidence a message is `nlu_fallback`.
    pub fallback_threshold: f32,
    /// When the two best intents are closer than this, a message is `nlu_fallback`.
    pub ambiguity_threshold: f32,
}

impl Default for NluConfig {
    fn default() -> Self {
        let options = berth_nlu::TrainOptions::default();
        Self {
            extra_data: Vec::new(),
            fallback_threshold: options.fallback_threshold,
            ambiguity_threshold: options.ambiguity_threshold,
        }
    }
}

impl NluConfig {
    /// Trains the model: the bundled parking data plus the extra files. CPU-bound (well under a
    /// second for the bundled data). A process that starts several servers on the same settings
    /// and files (tests, `bench`) trains once.
    pub fn train(&self) -> anyhow::Result<std::sync::Arc<berth_nlu::Nlu>> {
        type Trained = std::collections::HashMap<String, std::sync::Arc<berth_nlu::Nlu>>;
        static TRAINED: std::sync::Mutex<Option<Trained>> = std::sync::Mutex::new(None);
        let extra = berth_nlu::data::load_paths(&self.extra_data).context("nlu.extra_data")?;
        let key = format!("{:?}|{}|{}", extra, self.fallback_threshold, self.ambiguity_threshold);
        if let Some(nlu) = TRAINED.lock().unwrap().get_or_insert_default().get(&key) {
            return Ok(nlu.clone());
        }
        let options = berth_nlu::TrainOptions {
            fallback_threshold: self.fallback_threshold,
            ambiguity_threshold: self.ambiguity_threshold,
            ..berth_nlu::TrainOptions::default()
        };
        let nlu = std::sync::Arc::new(
            berth_nlu::parking::train(vec![extra], options).context("training the language model (nlu.extra_data)")?,
        );
        TRAINED.lock().unwrap().get_or_insert_default().insert(key, nlu.clone());
        Ok(nlu)
    }
}

/// Budgets of every operator rule evaluation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesConfig {
    /// Rhai operations per evaluation; a realistic tariff needs a few thousand.
    pub max_operations: u64,
    /// Wall-clock budget per evaluation.
    pub timeout_ms: u64,
    /// How often rule sets that define `adjust(ctx)` are reviewed (0: never; `POST
    /// /v1/rulesets/{id}/adjust` still works).
    pub adjust_interval_secs: u64,
}

impl Default for RulesConfig {
    fn default() -> Self {
        let limits = berth_rules::Limits::default();
        Self {
            max_operations: limits.max_operations,
            timeout_ms: limits.timeout.as_millis() as u64,
            adjust_interval_secs: 24 * 3600,
        }
    }
}

impl RulesConfig {
    pub fn limits(&self) -> berth_rules::Limits {
        berth_rules::Limits {
            max_operations: self.max_operations,
            timeout: std::time::Duration::from_millis(self.timeout_ms),
            ..berth_rules::Limits::default()
        }
    }
}

/// Payment providers and the jobs that move money.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PaymentsConfig {
    /// Providers in order of preference: the first is the primary, the next take over while
    /// it is down. `stripe` is built in; any other name is a payment-provider plugin of that id
    /// (`paypal` is bundled; it reads `[plugins.config.paypal]`). Empty: bookings wait for a
    /// payment that never comes, and holds run out.
    pub providers: Vec<String>,
    /// Consecutive failures that open a provider's circuit breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker keeps calls away from its provider.
    pub breaker_cooldown_secs: u64,
    /// First retry delay of a failed provider call (doubling up to five minutes).
    pub retry_base_ms: u64,
    /// How often the outbox is checked when nothing woke the relay.
    pub relay_interval_ms: u64,
    /// How long a node owns a provider call it started; a call of a node that died is
    /// repeated (same idempotency key) after this.
    pub lease_secs: u64,
    /// How often bookings are checked for arrival, departure, no-show and expired holds.
    pub tick_interval_secs: u64,
    /// How often quiet payments are compared with their provider (0: never).
    pub reconcile_interval_secs: u64,
    /// How long without news makes a payment quiet.
    pub reconcile_quiet_secs: u64,
    /// Authorizations older than this are captured even before departure (card holds lapse
    /// after 7 days).
    pub capture_within_hours: u64,
    /// Plates are erased from bookings that ended this many days ago (0: at the next tick).
    pub plate_retention_days: u64,
    /// Stripe's settings, when `stripe` is among the providers.
    pub stripe: Option<StripeConfig>,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        Self {
            providers: Vec::new(),
            breaker_threshold: 3,
            breaker_cooldown_secs: 30,
            retry_base_ms: 500,
            relay_interval_ms: 1000,
            lease_secs: 60,
            tick_interval_secs: 15,
            reconcile_interval_secs: 300,
            reconcile_quiet_secs: 300,
            capture_within_hours: 144,
            plate_retention_days: 30,
            stripe: None,
        }
    }
}

/// Stripe, through its API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeConfig {
    /// The secret API key (`sk_live_...`); set it with `BERTH__PAYMENTS__STRIPE__SECRET_KEY`.
    pub secret_key: Secret,
    /// Webhook endpoint secrets (`whsec_...`); several during a rotation.
    #[serde(default)]
    pub webhook_secrets: Vec<Secret>,
    #[serde(default = "StripeConfig::default_base_url")]
    pub base_url: String,
    #[serde(default = "StripeConfig::default_timeout_secs")]
    pub timeout_secs: u64,
    /// Where Checkout sends the driver after paying or giving up.
    #[serde(default = "StripeConfig::default_return_url")]
    pub return_url: String,
}

impl StripeConfig {
    fn default_base_url() -> String {
        "https://api.stripe.com/".into()
    }

    fn default_timeout_secs() -> u64 {
        20
    }

    fn default_return_url() -> String {
        "https://example.invalid/booking".into()
    }
}

/// Scale-out: with `url` set, live changes fan out to every node through Redis pub/sub.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:6379` (may hold a password, so a secret). Unset: one node, no fan-out.
    pub url: Option<Secret>,
    /// The channel the nodes of one deployment share.
    pub channel: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self { url: None, channel: "berth:live".to_owned() }
    }
}

/// Where MQTT uplinks come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MqttMode {
    /// Start the built-in broker on `mqtt.listen` and ingest from it.
    Embedded,
    /// Ingest from the broker at `mqtt.url`.
    External,
    /// No MQTT (webhooks only).
    Off,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    pub mode: MqttMode,
    /// The embedded broker's address (port 0: any free port).
    pub listen: SocketAddr,
    /// The external broker: `mqtt://host:port`.
    pub url: Option<String>,
    /// Stable per node: the broker keeps this node's session (and unacknowledged messages) by it.
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Accounts of the embedded broker (user = password). Empty: no authentication, so keep the
    /// broker on loopback.
    pub users: std::collections::BTreeMap<String, Secret>,
    /// Largest message the embedded broker accepts.
    pub max_payload_bytes: usize,
    /// Messages processed at once.
    pub max_in_flight: usize,
    /// Connections to the broker, sharing one subscription so the broker spreads messages over
    /// them (each connection has its own window of unacknowledged messages).
    pub connections: usize,
    /// What to subscribe to. Default: the berth native topics of every operator.
    pub subscriptions: Vec<MqttSubscriptionConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSubscriptionConfig {
    /// A topic filter: `v3/my-app@my-tenant/devices/+/up`, `application/+/device/+/event/up`,
    /// `$share/berth/...` to split the work between nodes.
    pub topic: String,
    /// The operator (id or slug) whose data arrives there. Required unless the topic names the
    /// operator (`berth/v1/{operator}/uplink/{device}`).
    pub operator: Option<String>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            mode: MqttMode::Embedded,
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            url: None,
            client_id: "berth-ingest".to_owned(),
            username: None,
            password: None,
            users: Default::default(),
            max_payload_bytes: 256 * 1024,
            max_in_flight: 16384,
            connections: 4,
            subscriptions: vec![MqttSubscriptionConfig { topic: "berth/v1/+/uplink/+".to_owned(), operator: None }],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsConfig {
    /// Run the plugin host at all.
    pub enabled: bool,
    /// Installed plugins (uploads land here; it is watched). Unset: `<data_dir>/plugins`.
    pub dir: Option<PathBuf>,
    /// Load the plugins shipped with berth.
    pub bundled: bool,
    /// Reload a plugin when its files change.
    pub watch: bool,
    /// Cache compiled plugins on disk. Unset: `<data_dir>/plugin-cache`.
    pub cache_dir: Option<PathBuf>,
    /// Disable the compile cache.
    pub cache: bool,
    /// Pre-reserve instance memory (faster instantiation); falls back when refused.
    pub pooling: bool,
    /// Largest component accepted from a directory or an upload.
    pub max_component_bytes: usize,
    /// Values plugins may read, per plugin id: `[plugins.config.<id>] key = "value"`. A plugin
    /// sees only the keys its manifest declares. Secrets never go here: they come from
    /// `BERTH_PLUGIN_<ID>_<KEY>` environment variables, or from `secrets`.
    pub config: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
    /// Plugin secrets from the configuration (a secrets file, or `BERTH__PLUGINS__SECRETS__<ID>__<KEY>`),
    /// per plugin id; a `BERTH_PLUGIN_<ID>_<KEY>` environment variable wins.
    pub secrets: std::collections::BTreeMap<String, std::collections::BTreeMap<String, Secret>>,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: None,
            bundled: true,
            watch: true,
            cache_dir: None,
            cache: true,
            pooling: true,
            max_component_bytes: 8 * 1024 * 1024,
            config: Default::default(),
            secrets: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address the API listens on.
    pub listen: SocketAddr,
    /// Largest accepted request body (10,000 spaces in JSON are about 2.5 MB).
    pub max_body_bytes: usize,
    /// How long in-flight requests may run after a shutdown signal.
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://user:pass@host:5432/db` or `sqlite://path`. Unset: SQLite at `<data_dir>/berth.db`.
    pub url: Option<Secret>,
    pub max_connections: u32,
    pub connect_timeout_secs: u64,
    /// Apply pending migrations when `serve` or `demo` starts.
    pub auto_migrate: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Bootstrap platform-admin key. Prefer `berth admin create-key` in production.
    pub admin_key: Option<Secret>,
    /// Signs driver tokens (HS256), at least 32 characters. Unset: generated once into
    /// `<data_dir>/token-secret`.
    pub token_secret: Option<Secret>,
    /// Lifetime of driver tokens.
    pub token_ttl_secs: u64,
    /// Accept driver tokens from an external OpenID Connect issuer.
    pub oidc: Option<OidcConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// URL or file path of the issuer's JWK set.
    pub jwks: String,
    /// Expected `iss` claim.
    pub issuer: String,
    /// Expected `aud` claim.
    pub audience: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `berth=debug,info`; `RUST_LOG` overrides it.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            http: HttpConfig::default(),
            database: DatabaseConfig::default(),
            auth: AuthConfig::default(),
            log: LogConfig::default(),
            plugins: PluginsConfig::default(),
            mqtt: MqttConfig::default(),
            redis: RedisConfig::default(),
            rules: RulesConfig::default(),
            payments: PaymentsConfig::default(),
            nlu: NluConfig::default(),
            chat: ChatConfig::default(),
            telegram: TelegramConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 16 * 1024 * 1024,
            shutdown_grace_secs: 30,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: None, max_connections: 16, connect_timeout_secs: 10, auto_migrate: true }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { admin_key: None, token_secret: None, token_ttl_secs: 24 * 3600, oidc: None }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".to_owned(), format: LogFormat::Text }
    }
}

impl Config {
    /// Loads defaults, then `file` (if it exists, or is given explicitly), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, Box<figment::Error>> {
        Self::figment(file).extract().map_err(Box::new)
    }

    pub fn figment(file: Option<&Path>) -> Figment {
        let mut figment = Figment::new();
        match file {
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None => figment = figment.merge(Toml::file("berth.toml")),
        }
        figment.merge(Env::prefixed("BERTH__").split("__"))
    }

    /// The database URL to use: the configured one, or the embedded SQLite file.
    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) => url.expose().to_owned(),
            None => format!("sqlite://{}?mode=rwc", self.data_dir.join("berth.db").display()),
        }
    }

    /// The effective configuration as TOML, with secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).expect("invariant: the config tree serialises to TOML")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let error = Figment::new()
            .merge(Toml::string("[http]\nlisten = \"127.0.0.1:9\"\nlisen = 1\n"))
            .extract::<Config>()
            .unwrap_err();
        assert!(error.to_string().contains("lisen"), "{error}");
    }

    #[test]
    fn secrets_are_redacted() {
        let mut config = Config::default();
        config.auth.admin_key = Some(Secret::new("berth_adm_supersecret"));
        config.redis.url = Some(Secret::new("redis://:supersecret@cache:6379"));
        config.mqtt.password = Some(Secret::new("supersecret"));
        config.mqtt.users.insert("sensor".into(), Secret::new("supersecret"));
        let text = config.to_redacted_toml();
        assert!(!text.contains("supersecret"));
        assert!(!format!("{config:?}").contains("supersecret"));
        assert!(text.contains("<redacted>"));
        assert_eq!(format!("{:?}", config.auth.admin_key), "Some(<redacted>)");
    }
}
