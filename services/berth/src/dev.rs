//! `berth dev`: every service in one process, on embedded SQLite files and
//! in-process locks and events, behind one HTTP listener. Booking calls
//! availability through the same `Ledger` trait as in Kubernetes, here
//! implemented by the availability service itself.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use berth_booking::Booking;
use berth_ledger::Ledger;
use berth_runtime::{Runtime, RuntimeConfig};
use berth_user::{UserConfig, Users};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::components::{StartError, start_availability, start_booking, start_users};
use crate::seed;

fn default_data_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(".local/share/berth/dev")
}

/// Each service gets its own file, as each has its own schema in production.
fn sqlite_url(dir: &std::path::Path, service: &str) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        dir.join(format!("{service}.db")).display()
    )
}

pub async fn run(addr: SocketAddr, data_dir: Option<PathBuf>) -> Result<(), StartError> {
    let mut config = RuntimeConfig::load()?;
    config.http_addr = addr;
    let rt = Runtime::new("berth-dev", config)?;
    let dir = data_dir.unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&dir).map_err(|e| StartError::Setting {
        setting: "--data-dir",
        problem: format!("{} cannot be created: {e}", dir.display()),
    })?;

    let users = start_users(&rt, &sqlite_url(&dir, "user"), None, UserConfig::default()).await?;
    users
        .ensure_demo_user(seed::DEMO_EMAIL, seed::DEMO_PASSWORD)
        .await
        .map_err(|e| StartError::service("user", e))?;
    // The user service is in this process: verify with its keys directly.
    let verifier = users.verifier();

    // A laptop's own calendar server is a fine feed here.
    let availability =
        start_availability(&rt, &sqlite_url(&dir, "availability"), None, true).await?;
    let ledger: Arc<dyn Ledger> = Arc::new(availability.clone());
    let booking = start_booking(&rt, &sqlite_url(&dir, "booking"), ledger).await?;
    forward_account_deletions(&users, &booking, rt.stop_token());

    let app = Router::new()
        .merge(availability.rest_routes(&verifier))
        .merge(booking.rest_routes(&verifier))
        .merge(users.rest_routes())
        .merge(berth_payment::rest_routes())
        .merge(berth_notification::rest_routes());
    let app = rt.finish_app(crate::components::with_openapi(
        app,
        crate::components::openapi(),
    ));
    let demo = seed::ensure_demo(&app).await?;

    let listener = Runtime::bind(addr).await?;
    tracing::info!(%addr, data = %dir.display(), "berth dev: all services in one process");
    print_banner(addr, &dir, &demo);
    crate::run_until_stopped(&rt, listener, app).await
}

/// There is no Redis stream here: account deletions reach booking through
/// the user service's in-process channel instead.
fn forward_account_deletions(users: &Users, booking: &Booking, stop: CancellationToken) {
    let mut events = users.subscribe_account_events();
    let booking = booking.clone();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                event = events.recv() => event,
            };
            match event {
                Ok(event) if event.event_type == berth_user::ACCOUNT_DELETED => {
                    if let Err(error) = booking
                        .handle_account_deleted(event.id, &event.account_id)
                        .await
                    {
                        tracing::warn!(%error, account = %event.account_id, "bookings not anonymised");
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "account events missed; their bookings keep personal data"
                    );
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
}

fn print_banner(addr: SocketAddr, dir: &std::path::Path, demo: &seed::Demo) {
    let base = format!("http://{addr}");
    println!("\nberth dev is up on {base}  (data: {})", dir.display());
    println!("  health  {base}/readyz   metrics  {base}/metrics");
    println!(
        "  demo resource {} / appointment type {}",
        demo.resource_id, demo.appointment_type_id
    );
    println!("  log in as the demo user (keeps the access token in $TOKEN):");
    println!(
        "    TOKEN=$(curl -s -X POST {base}/v1/auth/login -H 'Content-Type: application/json' \\\n      -d '{{\"email\":\"{}\",\"password\":\"{}\"}}' | sed -E 's/.*\"access_token\":\"([^\"]+)\".*/\\1/')",
        seed::DEMO_EMAIL,
        seed::DEMO_PASSWORD
    );
    match &demo.next_slot {
        Some(start) => {
            println!("  book the next free slot ({start}):");
            println!(
                "    curl -s -X POST {base}/v1/bookings -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' \\\n      -H \"Idempotency-Key: $(date +%s%N)\" -d '{{\"resource_id\":\"{}\",\"appointment_type_id\":\"{}\",\"start\":\"{start}\"}}'",
                demo.resource_id, demo.appointment_type_id
            );
        }
        None => println!("  (no free demo slot in the next days)"),
    }
    println!();
}
