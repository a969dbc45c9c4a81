//! `berth-operator run` reconciles BookingPlatforms and ServiceSpecs;
//! `berth-operator crd` prints (or writes) the CustomResourceDefinitions.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use berth_operator::crd;
use berth_operator::run::{self, LeaderElection, Settings};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "berth-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers.
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as YAML.
    Crd {
        /// Instead of printing, write `crds/*.yaml` and the chart's CRD
        /// templates under this repository root.
        #[arg(long, value_name = "REPO_ROOT")]
        write: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "BERTH_OPERATOR_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Address of /metrics, /livez and /readyz.
    #[arg(long, env = "BERTH_OPERATOR_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Reconciles running at once per controller.
    #[arg(long, env = "BERTH_OPERATOR_CONCURRENCY", default_value_t = 4)]
    concurrency: u16,
    /// Safety-net resync interval in seconds.
    #[arg(long, env = "BERTH_OPERATOR_RESYNC_SECONDS", default_value_t = 600)]
    resync_seconds: u64,
    /// Disable leader election (only for a single replica).
    #[arg(long, env = "BERTH_OPERATOR_NO_LEADER_ELECTION")]
    no_leader_election: bool,
    /// Namespace of the leader Lease (default: POD_NAMESPACE, else "default").
    #[arg(long, env = "BERTH_OPERATOR_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(
        long,
        env = "BERTH_OPERATOR_LEASE_NAME",
        default_value = "berth-operator"
    )]
    lease_name: String,
    /// Log format: json or text.
    #[arg(long, env = "BERTH_OPERATOR_LOG_FORMAT", default_value = "json")]
    log_format: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd { write: None } => {
            print!("{}", crd::crds_yaml()?);
            Ok(())
        }
        Command::Crd { write: Some(root) } => write_crds(&root),
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(run_operator(args)),
    }
}

fn write_crds(root: &std::path::Path) -> anyhow::Result<()> {
    let crds = root.join("crds");
    let chart = root.join("charts/berth-operator/templates/crds");
    std::fs::create_dir_all(&crds)?;
    std::fs::create_dir_all(&chart)?;
    for (file, yaml) in crd::crd_files()? {
        std::fs::write(crds.join(&file), &yaml)?;
        std::fs::write(chart.join(&file), crd::chart_crd_template(&yaml))?;
        println!("wrote crds/{file} and charts/berth-operator/templates/crds/{file}");
    }
    Ok(())
}

async fn run_operator(args: RunArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    if args.log_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let config = run::load_config().await?;
    let pod = std::env::var("POD_NAME").ok();
    let identity = pod.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "berth-operator".into()),
            std::process::id()
        )
    });
    let leader_election = (!args.no_leader_election).then(|| LeaderElection {
        namespace: args
            .lease_namespace
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".into()),
        lease_name: args.lease_name.clone(),
        identity: identity.clone(),
        duration: 15,
        grace: 5,
    });
    let settings = Settings {
        namespace: args.watch_namespace,
        http_addr: Some(args.http_addr),
        concurrency: args.concurrency,
        resync: Duration::from_secs(args.resync_seconds),
        leader_election,
        instance: identity,
    };
    run::run(config, settings, shutdown_signal()).await
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutdown requested");
}
