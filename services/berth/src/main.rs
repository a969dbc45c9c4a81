//! `berth serve <service>` runs one service (what a pod runs);
//! `berth dev` runs the whole platform in one process.

mod components;
mod dev;
mod seed;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use berth_runtime::{Runtime, RuntimeConfig};
use clap::{Parser, Subcommand};

use components::{Component, StartError};

/// mimalloc instead of the system allocator: request handling is mostly
/// short-lived buffers, where glibc's malloc/free took a fifth of a booking
/// process's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        service: Component,
    },
    /// Run every service in one process on an embedded SQLite store.
    Dev {
        /// Address of the single HTTP listener serving all public APIs.
        #[arg(long, env = "BERTH_DEV_ADDR", default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        /// Where the embedded databases live (kept across restarts).
        #[arg(long, env = "BERTH_DEV_DATA")]
        data_dir: Option<PathBuf>,
    },
    /// Apply every service's database migrations to $BERTH_DATABASE_URL and exit.
    Migrate,
    /// Read the time ledger and report overlapping or over-booked claims.
    CheckLedger,
    /// Compare priced bookings, payments and Stripe; report where they disagree.
    CheckMoney,
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
            Command::Dev { addr, data_dir } => dev::run(addr, data_dir).await,
            Command::Migrate => components::migrate().await,
            Command::CheckLedger => components::check_ledger().await,
            Command::CheckMoney => components::check_money().await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error @ StartError::Config(_)) => {
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

async fn serve(component: Component) -> Result<(), StartError> {
    let config = RuntimeConfig::load()?;
    let rt = Runtime::new(component.name(), config)?;
    let started = components::start(component, &rt).await?;
    let listener = Runtime::bind(rt.config.http_addr).await?;
    tracing::info!(service = component.name(), addr = %rt.config.http_addr, "serving");
    let app = rt.finish_app(started.rest);
    let http = run_until_stopped(&rt, listener, app);
    match started.grpc {
        Some(grpc) => {
            let grpc_listener = Runtime::bind(rt.config.grpc_addr).await?;
            tracing::info!(addr = %rt.config.grpc_addr, "serving gRPC");
            let grpc = rt.serve_grpc(
                grpc_listener,
                component.name(),
                grpc.routes,
                &grpc.services,
                &grpc.descriptor_sets,
            );
            let (http, grpc) = tokio::join!(http, grpc);
            http?;
            grpc?;
        }
        None => http.await?,
    }
    Ok(())
}

/// Serves until SIGTERM/Ctrl-C, then drains.
pub(crate) async fn run_until_stopped(
    rt: &Runtime,
    listener: tokio::net::TcpListener,
    app: axum::Router,
) -> Result<(), StartError> {
    let serve = rt.serve_http(listener, app);
    tokio::pin!(serve);
    tokio::select! {
        result = &mut serve => return Ok(result?),
        () = rt.shutdown_on_signal() => {}
    }
    Ok(serve.await?)
}
