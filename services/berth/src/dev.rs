//! `berth dev`: every service in one process, on embedded SQLite files and
//! in-process locks and events, behind one HTTP listener. Booking calls
//! availability through the same `Ledger` trait as in Kubernetes, here
//! implemented by the availability service itself.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use berth_ledger::Ledger;
use berth_runtime::{Runtime, RuntimeConfig};
use berth_user::UserConfig;

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

    let availability = start_availability(&rt, &sqlite_url(&dir, "availability"), None).await?;
    let ledger: Arc<dyn Ledger> = Arc::new(availability.clone());
    let booking = start_booking(&rt, &sqlite_url(&dir, "booking"), ledger).await?;

    let users = start_users(&rt, &sqlite_url(&dir, "user"), None, UserConfig::default()).await?;
    users
        .ensure_demo_user(seed::DEMO_EMAIL, seed::DEMO_PASSWORD)
        .await
        .map_err(|e| StartError::service("user", e))?;

    let app = Router::new()
        .merge(availability.rest_routes())
        .merge(booking.rest_routes())
        .merge(users.rest_routes())
        .merge(berth_payment::rest_routes())
        .merge(berth_notification::rest_routes());
    let app = rt.finish_app(app);
    let demo = seed::ensure_demo(&app).await?;

    let listener = Runtime::bind(addr).await?;
    tracing::info!(%addr, data = %dir.display(), "berth dev: all services in one process");
    print_banner(addr, &dir, &demo);
    crate::run_until_stopped(&rt, listener, app).await
}

fn print_banner(addr: SocketAddr, dir: &std::path::Path, demo: &seed::Demo) {
    let base = format!("http://{addr}");
    println!("\nberth dev is up on {base}  (data: {})", dir.display());
    println!("  health  {base}/readyz   metrics  {base}/metrics");
    println!(
        "  demo resource {} / appointment type {}",
        demo.resource_id, demo.appointment_type_id
    );
    println!("  log in as the demo user:");
    println!(
        "    curl -s -X POST {base}/v1/auth/login -H 'Content-Type: application/json' \\\n      -d '{{\"email\":\"{}\",\"password\":\"{}\"}}'",
        seed::DEMO_EMAIL,
        seed::DEMO_PASSWORD
    );
    match &demo.next_slot {
        Some(start) => {
            println!("  book the next free slot ({start}):");
            println!(
                "    curl -s -X POST {base}/v1/bookings -H 'Content-Type: application/json' -H \"Idempotency-Key: $(date +%s%N)\" \\\n      -d '{{\"resource_id\":\"{}\",\"appointment_type_id\":\"{}\",\"start\":\"{start}\"}}'",
                demo.resource_id, demo.appointment_type_id
            );
        }
        None => println!("  (no free demo slot in the next days)"),
    }
    println!();
}
