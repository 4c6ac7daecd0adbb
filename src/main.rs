//! `berth` command line: serve, demo, migrate, openapi, admin, config.

use std::path::PathBuf;

use anyhow::Context;
use berth::config::{Config, LogFormat};
use berth_payments::fake::stripe::{FakeStripe, FakeStripeConfig};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "berth", version, about = "Smart-parking platform: API server, ingest, rules and chat")]
struct Cli {
    /// Configuration file (TOML). Default: ./berth.toml if it exists.
    #[arg(long, global = true, env = "BERTH_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API server with the configured database.
    Serve,
    /// Run the server on embedded defaults with demo data (idempotent across restarts).
    Demo {
        /// Listen address; default 127.0.0.1:8080, or a free port if that one is taken.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the OpenAPI document (JSON) to stdout.
    Openapi,
    /// Platform administration.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Print the effective configuration (TOML) with secrets redacted.
    Config,
    /// The plugin author's kit: scaffold, test and try plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// The operator's kit for rules: run a rule set's test cases, explain a price.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// The language model: train it, measure it on a test split, try a message.
    Nlu {
        #[command(subcommand)]
        command: NluCommand,
    },
    /// Benchmarks that print figures for this machine.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
enum NluCommand {
    /// Train on Rasa NLU YAML files or directories (default: the bundled parking data) and write the model.
    Train {
        /// Training files or directories (every *.yml but test.yml).
        #[arg(long)]
        data: Vec<PathBuf>,
        #[arg(long, default_value = "nlu-model.bin")]
        out: PathBuf,
    },
    /// Train on DIR's training split and print intent accuracy, slot F1, sentence accuracy,
    /// per-intent and per-slot tables and parse latency on its test split. DIR holds
    /// train.jsonl/test.jsonl (SNIPS, ATIS) or Rasa YAML with test.yml; default: the bundled data.
    Eval {
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Parse one message with the bundled model and print intent and entities as JSON.
    Parse {
        text: String,
        /// IANA timezone of the user.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// "Now" for relative times (RFC 3339); default: the clock.
        #[arg(long)]
        reference_time: Option<chrono::DateTime<chrono::Utc>>,
    },
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// Run the test cases of the rule set in DIR (ruleset.toml, rules.rhai, tests.toml), or of
    /// every rule set in its subdirectories. Exits 1 when any fails.
    Test { dir: PathBuf },
    /// Explain one context through the rule set in DIR: what fired, line by line, and the price.
    Explain {
        dir: PathBuf,
        /// A test case of tests.toml, by name.
        #[arg(long, conflicts_with = "context")]
        test: Option<String>,
        /// A context file (JSON, or TOML by extension) in the shape of a test case's context.
        #[arg(long)]
        context: Option<PathBuf>,
        /// Only this entry point (default: allow_booking and price).
        #[arg(long)]
        entry: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Operator rules: quotes per second and latency percentiles for the bundled templates on
    /// all cores, and compile time per rule set.
    Rules {
        /// Evaluations per template.
        #[arg(long, default_value_t = 200_000)]
        evaluations: usize,
    },
    /// MQTT ingest end to end: raw broker rate vs uplinks applied per second, publish → SSE
    /// latency at a fixed rate, and many SSE subscribers on one node.
    Ingest(berth::bench::IngestBench),
    /// Chat: Telegram webhook in → reply sent through the fake Bot API, at a fixed rate.
    Chat {
        /// Updates per second (open loop).
        #[arg(long, default_value_t = 50)]
        rate: u32,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Search: latency percentiles at a fixed request rate over many spaces, priced by rules.
    Search {
        /// Sites (each with `spaces_per_site` spaces).
        #[arg(long, default_value_t = 1_000)]
        sites: usize,
        #[arg(long, default_value_t = 100)]
        spaces_per_site: usize,
        /// Searches per second (open loop: sent on schedule whatever the answers take).
        #[arg(long, default_value_t = 200)]
        rate: u32,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Contended bookings: requests per second with most windows overlapping, and a check that
    /// no two live bookings of a space overlap.
    Bookings {
        /// An empty PostgreSQL database (the target figure is for PostgreSQL); SQLite otherwise.
        #[arg(long)]
        database_url: Option<String>,
        #[arg(long, default_value_t = 50)]
        spaces: usize,
        #[arg(long, default_value_t = 10_000)]
        requests: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// Occupancy reads over a long state-change history: the last hour's and a 28-day window's
    /// events of one site, read from the window's first possible event id and, for comparison,
    /// from each space's first event.
    History {
        /// State changes to store, spread evenly over `days` up to now.
        #[arg(long, default_value_t = 2_000_000)]
        events: usize,
        /// Spaces of the site (at most 1000).
        #[arg(long, default_value_t = 500)]
        spaces: usize,
        #[arg(long, default_value_t = 330)]
        days: u32,
        /// An empty PostgreSQL database; a fresh SQLite file otherwise.
        #[arg(long)]
        database_url: Option<String>,
    },
    /// The SSE clients of `bench ingest` (run by it in a child process).
    #[command(hide = true)]
    SseClients {
        #[arg(long)]
        url: String,
        #[arg(long)]
        token: String,
        #[arg(long)]
        clients: usize,
        #[arg(long)]
        events: usize,
        #[arg(long, default_value_t = 1)]
        streams_per_connection: usize,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Write a new plugin crate that builds with `cargo build --release --target wasm32-wasip2`.
    New {
        #[command(subcommand)]
        kind: NewPlugin,
    },
    /// Run a plugin's example files against its component: pass/fail with a diff, decode time,
    /// peak memory. Exits 1 when an example fails.
    Test {
        /// The plugin directory (holding plugin.toml) or its plugin.toml.
        path: PathBuf,
        /// The component to test instead of the manifest's `component`.
        #[arg(long)]
        component: Option<PathBuf>,
    },
    /// Decode one payload and print the reading and the vendor object as JSON.
    Run {
        /// The plugin directory (holding plugin.toml) or its plugin.toml.
        path: PathBuf,
        #[arg(long)]
        component: Option<PathBuf>,
        /// LoRaWAN f-port.
        #[arg(long)]
        port: u8,
        /// Payload as hex.
        #[arg(long)]
        hex: String,
        /// Device model; default: the manifest's first.
        #[arg(long)]
        model: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum NewPlugin {
    /// A sensor decoder.
    Sensor {
        /// Plugin id and device model, e.g. `acme-p1`.
        name: String,
        /// Where to create the crate directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Path of the berth plugin SDK (plugins/sdk); default: the one beside berth's sources.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create a platform-admin API key and print it once.
    CreateKey {
        /// What the key is for.
        #[arg(long, default_value = "platform admin")]
        name: String,
    },
}

fn init_tracing(config: &Config) {
    use tracing_subscriber::EnvFilter;
    // The embedded broker logs every client disconnect as an error; quiet unless asked for.
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| config.log.level.clone());
    let directives = if directives.contains("rumqttd") { directives } else { format!("{directives},rumqttd=off") };
    let filter = EnvFilter::new(directives);
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(errors) => {
            for error in *errors {
                eprintln!("berth: invalid configuration: {error}");
            }
            std::process::exit(2);
        }
    };
    match cli.command {
        Command::Openapi => {
            println!("{}", berth_openapi::spec_json());
            Ok(())
        }
        Command::Config => {
            print!("{}", config.to_redacted_toml());
            Ok(())
        }
        Command::Migrate => {
            init_tracing(&config);
            let mut config = config;
            config.database.auto_migrate = true;
            let store = berth::open_store(&config).await?;
            println!("migrations applied ({})", store.backend_name());
            Ok(())
        }
        Command::Admin { command: AdminCommand::CreateKey { name } } => {
            init_tracing(&config);
            let store = berth::open_store(&config).await?;
            let kernel = berth::kernel(&config, store);
            let (key, token) = kernel.bootstrap_admin_key(&name).await?;
            println!("created platform admin key {} ({})", key.id, key.name);
            println!("token (shown once, store it now): {}", token.0);
            Ok(())
        }
        Command::Serve => {
            init_tracing(&config);
            berth::raise_open_files_limit_logged();
            let store = berth::open_store(&config).await?;
            tracing::info!(database = store.backend_name(), "database ready");
            let server = berth::start(&config, store, berth::shutdown_signal()).await?;
            tracing::info!(addr = %server.addr, "berth API listening");
            let mut banner = format!("berth API on http://{}  (docs: http://{}/docs)\n", server.addr, server.addr);
            if let Some(mqtt) = &server.mqtt {
                let kind = if mqtt.embedded.is_some() { "embedded broker" } else { "external broker" };
                banner += &format!("MQTT ingest from mqtt://{}:{} ({kind})\n", mqtt.broker.host, mqtt.broker.port);
            }
            // One write, and a closed stdout (a supervisor that stopped reading) is no reason to die.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), banner.as_bytes());
            server.wait().await
        }
        Command::Demo { listen } => run_demo(config, listen).await,
        Command::Plugin { command } => run_plugin_command(command),
        Command::Bench { command: BenchCommand::Ingest(options) } => {
            // The server's own log, only when asked for: it would interleave with the figures.
            if std::env::var_os("RUST_LOG").is_some() {
                init_tracing(&config);
            }
            berth::bench::ingest(options).await
        }
        Command::Rules { command: RulesCommand::Test { dir } } => {
            let run = berth::rules_cli::test(&dir)?;
            print!("{}", run.text);
            if run.failed > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Rules { command: RulesCommand::Explain { dir, test, context, entry } } => {
            print!("{}", berth::rules_cli::explain(&dir, test.as_deref(), context.as_deref(), entry.as_deref())?);
            Ok(())
        }
        Command::Nlu { command: NluCommand::Train { data, out } } => {
            print!("{}", berth::nlu_cli::train(&data, &out)?);
            Ok(())
        }
        Command::Nlu { command: NluCommand::Eval { data } } => {
            print!("{}", berth::nlu_cli::eval(data.as_deref())?);
            Ok(())
        }
        Command::Nlu { command: NluCommand::Parse { text, timezone, reference_time } } => {
            print!("{}", berth::nlu_cli::parse(&text, reference_time, &timezone)?);
            Ok(())
        }
        Command::Bench { command: BenchCommand::Rules { evaluations } } => berth::bench::rules(evaluations),
        Command::Bench { command: BenchCommand::Chat { rate, seconds } } => {
            berth::bench_chat::chat(rate, seconds).await
        }
        Command::Bench { command: BenchCommand::Search { sites, spaces_per_site, rate, seconds } } => {
            berth::bench_market::search(sites, spaces_per_site, rate, seconds).await
        }
        Command::Bench { command: BenchCommand::History { events, spaces, days, database_url } } => {
            berth::bench_history::history(events, spaces, days, database_url).await
        }
        Command::Bench { command: BenchCommand::Bookings { database_url, spaces, requests, concurrency } } => {
            berth::bench_market::bookings(database_url, spaces, requests, concurrency).await
        }
        Command::Bench {
            command: BenchCommand::SseClients { url, token, clients, events, streams_per_connection },
        } => berth::bench::sse_clients(url, token, clients, events, streams_per_connection).await,
    }
}

fn run_plugin_command(command: PluginCommand) -> anyhow::Result<()> {
    use berth::plugin_cli;
    match command {
        PluginCommand::New { kind: NewPlugin::Sensor { name, dir, sdk } } => {
            let sdk = sdk.or_else(plugin_cli::default_sdk_path).ok_or_else(|| {
                anyhow::anyhow!("cannot find the berth plugin SDK; pass --sdk PATH (berth's plugins/sdk)")
            })?;
            let created = plugin_cli::new_sensor(&name, &dir, &sdk)?;
            println!("created {}", created.display());
            println!("  build:  cd {} && cargo build --release --target wasm32-wasip2", created.display());
            println!("  test:   berth plugin test {}", created.display());
            Ok(())
        }
        PluginCommand::Test { path, component } => {
            let report = plugin_cli::test(&path, component.as_deref())?;
            print!("{}", report.text);
            if report.failed > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        PluginCommand::Run { path, component, port, hex, model } => {
            let decoded = plugin_cli::run(&path, component.as_deref(), model.as_deref(), port, &hex)?;
            println!("{}", serde_json::to_string_pretty(&decoded)?);
            Ok(())
        }
    }
}

async fn run_demo(mut config: Config, listen: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    init_tracing(&config);
    berth::raise_open_files_limit_logged();
    let explicit_listen = listen.is_some();
    if let Some(listen) = listen {
        config.http.listen = listen;
    }
    // Another broker (or another demo) may hold the MQTT port: take any free one then.
    if config.mqtt.mode == berth::config::MqttMode::Embedded && std::net::TcpListener::bind(config.mqtt.listen).is_err()
    {
        tracing::warn!(listen = %config.mqtt.listen, "MQTT port busy; the embedded broker takes a free port");
        config.mqtt.listen.set_port(0);
    }
    let store = berth::open_store(&config).await?;
    let backend = store.backend_name();
    let kernel = berth::kernel(&config, store.clone());
    let credentials = berth::demo::seed(&kernel, &config.data_dir).await?;
    let operator_admin = kernel.authenticate_api_key(&credentials.operator_admin_key).await?;
    let garage: berth_kernel::ids::SiteId = credentials.off_street_site_id.parse().context("demo garage id")?;
    let fleet = berth::simulator::ensure_fleet(&kernel, &operator_admin, garage, berth::simulator::FLEET_SIZE).await?;
    // Without configured providers, bookings are paid through a local Stripe.
    let demo_stripe = if config.payments.providers.is_empty() {
        let (secret, webhook_secret) = (berth::demo::random_secret("sk_test_"), berth::demo::random_secret("whsec_"));
        let fake = FakeStripe::start(FakeStripeConfig::new(secret.clone(), webhook_secret.clone()))
            .await
            .context("cannot start the demo's local Stripe")?;
        config.payments.providers = vec!["stripe".to_owned()];
        config.payments.stripe = Some(berth::config::StripeConfig {
            secret_key: berth::config::Secret::new(secret),
            webhook_secrets: vec![berth::config::Secret::new(webhook_secret)],
            base_url: fake.base_url(),
            timeout_secs: 10,
            return_url: "http://localhost/docs".to_owned(),
        });
        Some(fake)
    } else {
        None
    };
    let server = match berth::start(&config, store.clone(), berth::shutdown_signal()).await {
        Ok(server) => server,
        Err(error) if !explicit_listen => {
            // The default port is taken (another service, another demo): take any free one.
            tracing::warn!(error = %error, "default port busy; picking a free port");
            config.http.listen.set_port(0);
            berth::start(&config, store, berth::shutdown_signal()).await?
        }
        Err(error) => return Err(error),
    };
    let base = format!("http://{}", server.addr);
    if let Some(fake) = &demo_stripe {
        fake.set_webhook_url(Some(format!("{base}/v1/webhooks/payments/stripe")));
    }
    println!();
    println!("berth demo is running ({} data in {})", backend, config.data_dir.display());
    println!("  API           {base}/v1");
    println!("  Swagger UI    {base}/docs");
    println!(
        "  Web chat      {base}/chat  (register any e-mail, then type e.g. \"book Parque Trindade tomorrow at 9 for 2 hours\")"
    );
    println!("  OpenAPI       {base}/openapi.json");
    println!("  Metrics       {base}/metrics");
    let _simulator = match &server.mqtt {
        Some(mqtt) => {
            let broker = &mqtt.broker;
            println!(
                "  MQTT broker   mqtt://{}:{}{}",
                broker.host,
                broker.port,
                if mqtt.embedded.is_some() { " (embedded)" } else { "" }
            );
            println!("                publish to berth/v1/{}/uplink/{{device}}", berth::demo::DEMO_SLUG);
            println!(
                "  Simulator     {} sensors on the garage's ground floor (Bosch, Nwave, TEKZITEL, Dingtek)",
                fleet.len()
            );
            Some(berth::simulator::Simulator::start(
                broker,
                mqtt.credentials.clone(),
                berth::demo::DEMO_SLUG,
                fleet,
                std::time::Duration::from_secs(2),
            ))
        }
        None => None,
    };
    let plugins = server.state.kernel.plugins().list().await;
    let names: Vec<String> =
        plugins.iter().map(|p| format!("{} {}", p.id, p.version.as_deref().unwrap_or("(failed)"))).collect();
    println!("  Plugins       {}", if names.is_empty() { "none".to_owned() } else { names.join(", ") });
    match &demo_stripe {
        Some(fake) => {
            println!(
                "  Payments      a local Stripe at {} (demo): book with \"payment_method\": \"pm_card_visa\",",
                fake.base_url()
            );
            println!("                or without one and open payments[0].action_url to pay");
        }
        None => println!("  Payments      {}", config.payments.providers.join(", ")),
    }
    println!();
    println!("  operator id           {}", credentials.operator_id);
    println!("  off-street site       {}", credentials.off_street_site_id);
    println!("  on-street zone        {}", credentials.on_street_site_id);
    println!("  platform admin key    {}", credentials.platform_admin_key);
    println!("  operator admin key    {}", credentials.operator_admin_key);
    println!("  operator staff key    {}", credentials.operator_staff_key);
    println!("  integration key       {}", credentials.integration_key);
    println!("  driver login          {} / {}", credentials.driver_email, credentials.driver_password);
    println!();
    println!("  try: curl -H 'Authorization: Bearer {}' {base}/v1/sites", credentials.operator_admin_key);
    println!("  stop with Ctrl-C");
    server.wait().await
}
