//! `berth-stripe-emulator`: the emulator as its own process, for
//! integration tests. Prints `listening on http://127.0.0.1:PORT` when ready.

use std::io::Write;
use std::net::SocketAddr;

use berth_stripe_emulator::{Config, Emulator, Endpoint};
use clap::Parser;

#[derive(Parser)]
#[command(about = "A stateful Stripe API emulator (test double)")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    #[arg(long, default_value = "sk_test_berth")]
    api_key: String,
    #[arg(long, default_value = "pk_test_berth")]
    publishable_key: String,
    /// Endpoint that receives every event (repeat for several).
    #[arg(long)]
    webhook_url: Vec<String>,
    /// Signing secret, `whsec_...`, of every endpoint (repeat to rotate).
    #[arg(long)]
    webhook_secret: Vec<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let endpoints = args
        .webhook_url
        .into_iter()
        .map(|url| Endpoint {
            url,
            secrets: args.webhook_secret.clone(),
        })
        .collect();
    let config = Config {
        addr: args.addr,
        api_key: args.api_key,
        publishable_key: args.publishable_key,
        endpoints,
        seed: args.seed,
        ..Config::default()
    };
    let running = match Emulator::start(config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening on {}", running.base_url);
    let _ = out.flush();
    wait_for_signal().await;
    running.stop().await;
    std::process::ExitCode::SUCCESS
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
