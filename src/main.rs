//! `berth` command line: serve, demo, migrate, openapi, admin, config.

use std::path::PathBuf;

use berth::config::{Config, LogFormat};
use berth_kernel::Kernel;
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
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
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
            let kernel = Kernel::new(std::sync::Arc::new(store));
            let (key, token) = kernel.bootstrap_admin_key(&name).await?;
            println!("created platform admin key {} ({})", key.id, key.name);
            println!("token (shown once, store it now): {}", token.0);
            Ok(())
        }
        Command::Serve => {
            init_tracing(&config);
            let store = berth::open_store(&config).await?;
            tracing::info!(database = store.backend_name(), "database ready");
            let server = berth::start(&config, store, berth::shutdown_signal()).await?;
            tracing::info!(addr = %server.addr, "berth API listening");
            println!("berth API on http://{}  (docs: http://{}/docs)", server.addr, server.addr);
            server.wait().await
        }
        Command::Demo { listen } => run_demo(config, listen).await,
    }
}

async fn run_demo(mut config: Config, listen: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    init_tracing(&config);
    let explicit_listen = listen.is_some();
    if let Some(listen) = listen {
        config.http.listen = listen;
    }
    let store = berth::open_store(&config).await?;
    let backend = store.backend_name();
    let kernel = Kernel::new(std::sync::Arc::new(store.clone()));
    let credentials = berth::demo::seed(&kernel, &config.data_dir).await?;
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
    println!();
    println!("berth demo is running ({} data in {})", backend, config.data_dir.display());
    println!("  API           {base}/v1");
    println!("  Swagger UI    {base}/docs");
    println!("  OpenAPI       {base}/openapi.json");
    println!("  Metrics       {base}/metrics");
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
