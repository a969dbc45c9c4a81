//! The `availability` service: Resources, schedules, calendars and the time ledger; computes bookable slots.
//!
//! At this stage the service serves the shared operational endpoints
//! (`/livez`, `/readyz`, `/metrics`); its API arrives with its own issue.

use axum::Router;

/// Name used in logs, metrics and `berth serve <name>`.
pub const NAME: &str = "availability";

/// The service's public REST routes.
pub fn rest_routes() -> Router {
    Router::new()
}
