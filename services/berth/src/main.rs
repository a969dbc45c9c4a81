//! `berth serve <service>` runs one service (what a pod runs);
//! `berth dev` runs the whole platform in one process.

use std::net::SocketAddr;
use std::process::ExitCode;

use axum::Router;
use berth_runtime::{Runtime, RuntimeConfig, RuntimeError};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "berth", version, about = "Berth appointment-booking platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one service, configured by BERTH_* variables and $BERTH_CONFIG.
    Serve {
        #[arg(value_enum)]
        service: Service,
    },
    /// Run every service in one process on an embedded default store.
    Dev {
        /// Address of the single HTTP listener serving all public APIs.
        #[arg(long, env = "BERTH_DEV_ADDR", default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Service {
    User,
    Availability,
    Booking,
    Payment,
    Notification,
}

impl Service {
    const ALL: [Service; 5] = [
        Service::User,
        Service::Availability,
        Service::Booking,
        Service::Payment,
        Service::Notification,
    ];

    fn name(self) -> &'static str {
        match self {
            Service::User => berth_user::NAME,
            Service::Availability => berth_availability::NAME,
            Service::Booking => berth_booking::NAME,
            Service::Payment => berth_payment::NAME,
            Service::Notification => berth_notification::NAME,
        }
    }

    fn rest_routes(self) -> Router {
        match self {
            Service::User => berth_user::rest_routes(),
            Service::Availability => berth_availability::rest_routes(),
            Service::Booking => berth_booking::rest_routes(),
            Service::Payment => berth_payment::rest_routes(),
            Service::Notification => berth_notification::rest_routes(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("berth: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { service } => serve(service).await,
            Command::Dev { addr } => dev(addr).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error @ RuntimeError::Config(_)) => {
            eprintln!("berth: {error}");
            ExitCode::from(2)
        }
        Err(error) => {
            tracing::error!(%error, "berth stopped with an error");
            eprintln!("berth: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(service: Service) -> Result<(), RuntimeError> {
    let config = RuntimeConfig::load()?;
    let rt = Runtime::new(service.name(), config)?;
    let app = rt.finish_app(service.rest_routes());
    let listener = Runtime::bind(rt.config.http_addr).await?;
    tracing::info!(service = service.name(), addr = %rt.config.http_addr, "serving");
    run_until_stopped(&rt, listener, app).await
}

async fn dev(addr: SocketAddr) -> Result<(), RuntimeError> {
    let mut config = RuntimeConfig::load()?;
    config.http_addr = addr;
    let rt = Runtime::new("berth-dev", config)?;
    let app = Service::ALL
        .into_iter()
        .fold(Router::new(), |app, s| app.merge(s.rest_routes()));
    let app = rt.finish_app(app);
    let listener = Runtime::bind(addr).await?;
    tracing::info!(%addr, "berth dev: all services in one process");
    println!(
        "berth dev is up on http://{addr} (health: http://{addr}/readyz, metrics: http://{addr}/metrics)"
    );
    run_until_stopped(&rt, listener, app).await
}

async fn run_until_stopped(
    rt: &Runtime,
    listener: tokio::net::TcpListener,
    app: Router,
) -> Result<(), RuntimeError> {
    let serve = rt.serve_http(listener, app);
    tokio::pin!(serve);
    tokio::select! {
        result = &mut serve => return result,
        () = rt.shutdown_on_signal() => {}
    }
    serve.await
}
