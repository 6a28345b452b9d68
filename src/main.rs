//! The `whatstat` command line.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use whatstat::api::{self, ApiLimits, MetricsAccess};
use whatstat::config::{DEFAULT_LISTEN, LogFormat, StoreArgs};
use whatstat::engine::Services;
use whatstat::engine::keys::{Authentication, NewCredential, Scope};
use whatstat::store::credentials::CredentialKind;
use whatstat::{demo, store};

#[derive(Parser)]
#[command(
    name = "whatstat",
    version,
    about = "Analytics for WhatsApp Business messaging, answered from rollups"
)]
struct Cli {
    /// Log filter, e.g. `info`, `whatstat=debug`. Also RUST_LOG.
    #[arg(long, env = "WHATSTAT_LOG", default_value = "info", global = true)]
    log: String,

    /// How log lines are written to stderr: `text` (readable lines) or `json` (one JSON
    /// object a line, for log collectors). [default: text]
    #[arg(long, env = "WHATSTAT_LOG_FORMAT", value_enum, global = true)]
    log_format: Option<LogFormat>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the HTTP server.
    Serve(ServeArgs),
    /// Manage organizations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Manage an organization's API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Fill a store (or a running server) with 30 days of realistic demo traffic.
    Demo(DemoArgs),
    /// Import history from an NDJSON file of events (backfill allowed); resumable. While it
    /// runs, compaction prunes none of the organization's states.
    Import(ImportArgs),
    /// Expire hourly and daily figures and entity states past their retention, now.
    Compact {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Args)]
struct ImportArgs {
    /// NDJSON file, one event per line (the schema of POST /api/events).
    file: std::path::PathBuf,

    /// The key of the organization the events belong to.
    #[arg(long, env = "WHATSTAT_API_KEY", hide_env_values = true)]
    api_key: String,

    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,

    /// Address to listen on. [default: 127.0.0.1:8080]
    #[arg(long, env = "WHATSTAT_LISTEN")]
    listen: Option<String>,

    /// Key for the admin API (`Authorization: Bearer <key>`); without it, the admin API is off.
    #[arg(long, env = "WHATSTAT_MASTER_KEY", hide_env_values = true)]
    master_key: Option<String>,

    /// Largest request body accepted, in bytes. [default: 16777216]
    #[arg(long, env = "WHATSTAT_MAX_BODY_BYTES")]
    max_body_bytes: Option<usize>,

    /// Requests per second allowed per key or share link (bursts of twice that); 0 is unlimited. [default: 0]
    #[arg(long, env = "WHATSTAT_RATE_LIMIT")]
    rate_limit: Option<u32>,

    /// On an empty store, create a demo organization with 30 days of traffic and print its key.
    #[arg(long)]
    demo: bool,

    /// Seconds between background compaction runs; 0 turns them off. [default: 300]
    #[arg(long, env = "WHATSTAT_COMPACT_INTERVAL_SECS")]
    compact_interval_secs: Option<u64>,

    /// Serve GET /metrics (Prometheus) to anyone who can reach the server; otherwise it
    /// needs the master key, as the admin API does.
    #[arg(long, env = "WHATSTAT_METRICS_OPEN", num_args = 0..=1, default_missing_value = "true")]
    metrics_open: Option<bool>,
}

#[derive(Subcommand)]
enum OrgCommand {
    /// Create an organization and print its API key (shown only this once).
    Create {
        /// The organization's display name.
        name: String,
        /// IANA time zone its figures are bucketed in, e.g. Asia/Kolkata.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create a key and print it (shown only this once).
    Create {
        /// The organization's id (`org_...`, as `org create` printed it).
        #[arg(long)]
        org: String,
        /// What the key is for, e.g. "Chatbot vendor".
        #[arg(long)]
        name: String,
        /// What it may do: `ingest` (post events), `read` (figures), `admin` (everything).
        #[arg(long)]
        scope: String,
        /// Limit it to these accounts (comma-separated); read and ingest keys only.
        #[arg(long, value_delimiter = ',')]
        accounts: Option<Vec<String>>,
        /// When it stops working, an RFC 3339 instant such as 2027-01-01T00:00:00Z.
        #[arg(long)]
        expires_at: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the organization's keys (never their secrets).
    List {
        #[arg(long)]
        org: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a key at once.
    Revoke {
        #[arg(long)]
        org: String,
        /// The key's id (`key_...`).
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Args)]
struct DemoArgs {
    #[command(flatten)]
    store: StoreArgs,

    #[command(flatten)]
    demo: demo::DemoOptions,

    /// Send the events to this running server (e.g. http://127.0.0.1:8080) instead of
    /// writing to the store directly; needs --api-key.
    #[arg(long)]
    server: Option<String>,

    /// The organization key to send with --server.
    #[arg(long, env = "WHATSTAT_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

impl Command {
    /// The store settings of the command (every command has them).
    fn store(&self) -> &StoreArgs {
        match self {
            Command::Serve(a) => &a.store,
            Command::Org(OrgCommand::Create { store, .. })
            | Command::Key(
                KeyCommand::Create { store, .. }
                | KeyCommand::List { store, .. }
                | KeyCommand::Revoke { store, .. },
            )
            | Command::Compact { store } => store,
            Command::Demo(a) => &a.store,
            Command::Import(a) => &a.store,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log));
    // The flag or variable, else the config file's `log_format` (a file that cannot be
    // read is reported by the command itself, once logging is up).
    let format = cli
        .log_format
        .or_else(|| cli.command.store().file().ok()?.log_format)
        .unwrap_or_default();
    // Logs go to stderr: stdout is for what commands print (keys, reports).
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_target(false).init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type AnyError = Box<dyn std::error::Error + Send + Sync>;

/// Opens the store a URL names (the one place the backend is chosen) and builds the
/// engine's services over it.
async fn open_services(args: &StoreArgs) -> Result<(Services, String), AnyError> {
    let file = args.file()?;
    let url = args.database_url(&file);
    let store = store::open_with(&url, args.store_options(&file)?).await?;
    Ok((Services::new(store, args.engine_config(&file)?), url))
}

async fn run(command: Command) -> Result<(), AnyError> {
    match command {
        Command::Serve(args) => serve(args).await,
        Command::Org(OrgCommand::Create {
            name,
            timezone,
            store,
        }) => {
            let (services, _) = open_services(&store).await?;
            let (org, key) = services.tenants.create_org(&name, &timezone).await?;
            println!(
                "organization: {} ({})\ntime zone:    {}\napi key:      {key}",
                org.name, org.id, org.timezone
            );
            println!("The key is shown only now; it is stored hashed.");
            Ok(())
        }
        Command::Key(command) => key_command(command).await,
        Command::Import(args) => {
            let (services, _) = open_services(&args.store).await?;
            let org = match services.tenants.authenticate(&args.api_key).await? {
                Authentication::Valid(c) if c.scope.covers(Scope::Ingest) => c.org,
                Authentication::Valid(_) => {
                    return Err(
                        "--api-key may not post events (it needs scope ingest or admin)".into(),
                    );
                }
                Authentication::Expired => return Err("--api-key has expired".into()),
                Authentication::Unknown => {
                    return Err("--api-key is not a key of any organization".into());
                }
            };
            let report = whatstat::import::import(&services.ingest, &org, &args.file).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Compact { store } => {
            let (services, _) = open_services(&store).await?;
            let report = services.compaction.compact().await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Demo(args) => {
            if let Some(server) = args.server {
                let key = args
                    .api_key
                    .ok_or("--server needs --api-key (or WHATSTAT_API_KEY)")?;
                let n = demo::send_to_server(&server, &key, &args.demo).await?;
                println!("sent {n} demo events to {server}");
            } else {
                let (services, url) = open_services(&args.store).await?;
                let (org, key) = services
                    .tenants
                    .create_org("Demo Store", &args.demo.timezone)
                    .await?;
                let n = demo::fill(&services, &org, &args.demo).await?;
                println!(
                    "wrote {n} demo events to {url}\norganization: {} ({})\napi key:      {key}",
                    org.name, org.id
                );
            }
            Ok(())
        }
    }
}

/// The store's services and the organization of an id, for the key commands.
async fn services_and_org(
    store: &StoreArgs,
    org: &str,
) -> Result<(Services, whatstat::engine::Org), AnyError> {
    let (services, _) = open_services(store).await?;
    let org = services
        .tenants
        .by_id(org)
        .await?
        .ok_or_else(|| format!("no organization `{org}` in this store"))?;
    Ok((services, org))
}

async fn key_command(command: KeyCommand) -> Result<(), AnyError> {
    match command {
        KeyCommand::Create {
            org,
            name,
            scope,
            accounts,
            expires_at,
            store,
        } => {
            let (services, org) = services_and_org(&store, &org).await?;
            let created = services
                .tenants
                .create_key(
                    &org,
                    NewCredential {
                        name,
                        scope: Some(scope),
                        accounts,
                        expires_at,
                    },
                )
                .await?;
            println!(
                "key id:  {}
scope:   {}
api key: {}",
                created.view.id,
                created.view.scope.as_str(),
                created.key
            );
            println!("The key is shown only now; it is stored hashed.");
        }
        KeyCommand::List { org, store } => {
            let (services, org) = services_and_org(&store, &org).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&services.tenants.list_keys(&org).await?)?
            );
        }
        KeyCommand::Revoke { org, id, store } => {
            let (services, org) = services_and_org(&store, &org).await?;
            services
                .tenants
                .revoke(&org, CredentialKind::Key, &id)
                .await?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

/// On PostgreSQL, instances sharing the database hear of each other's commits, so a live
/// stream on any instance reports them.
async fn relay_updates(services: &Services, url: &str) -> Result<(), AnyError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let (announce, incoming) = store::postgres::notify::connect(url).await?;
        let mut id = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut id);
        services
            .updates
            .attach_relay(hex::encode(id), announce, incoming);
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> Result<(), AnyError> {
    let file = args.store.file()?;
    // Before the store opens, so that its first commits are measured too.
    whatstat::telemetry::recorder()?;
    let metrics = if args.metrics_open.or(file.metrics_open).unwrap_or(false) {
        MetricsAccess::Open
    } else {
        MetricsAccess::MasterKey
    };
    let mut store_args = args.store.clone();
    // The demo shows costs: the example card prices them unless a card is given.
    store_args.example_rate_card = args.demo;
    let (services, url) = open_services(&store_args).await?;
    relay_updates(&services, &url).await?;
    let listen = args
        .listen
        .or(file.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.into());
    let limits = ApiLimits {
        max_body_bytes: args
            .max_body_bytes
            .or(file.max_body_bytes)
            .unwrap_or(16 * 1024 * 1024),
        rate_per_second: args.rate_limit.or(file.rate_limit).unwrap_or(0),
    };
    let master_key = args.master_key.or(file.master_key.clone());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, database = %url, "whatstat listening");
    if args.demo {
        demo::prepare_served_demo(&services, &url, &format!("http://{addr}")).await?;
    }
    let interval = args
        .compact_interval_secs
        .or(file.compact_interval_secs)
        .unwrap_or(300);
    if interval > 0 {
        let compaction = services.compaction.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(interval));
            loop {
                tick.tick().await;
                if let Err(e) = compaction.compact().await {
                    tracing::error!(error = %e, "background compaction failed");
                }
            }
        });
    }
    let updates = services.updates.clone();
    // The webhook tee's delivery worker: stopped after the server, so that a POST
    // answered during shutdown is still attempted before the process ends.
    let (stop_forwarding, stopped) = tokio::sync::watch::channel(false);
    let forwarding = tokio::spawn(services.forwarding.clone().run_worker(stopped));
    let app = api::router_with(services, master_key, &limits, metrics);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
            // Live streams never end by themselves: end them so connections can close.
            updates.close();
        })
        .await?;
    let _ = stop_forwarding.send(true);
    // An attempt in flight ends within its timeout; a pending delivery resumes at the
    // next start.
    if tokio::time::timeout(std::time::Duration::from_secs(30), forwarding)
        .await
        .is_err()
    {
        tracing::warn!(
            "webhook forwarding did not stop in 30 s; pending deliveries resume at the next start"
        );
    }
    Ok(())
}
