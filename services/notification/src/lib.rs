//! The `notification` service: Email, SMS and webhook delivery of booking events.
//!
//! At this stage the service serves the shared operational endpoints
//! (`/livez`, `/readyz`, `/metrics`); its API arrives with its own issue.

use axum::Router;

/// Name used in logs, metrics and `berth serve <name>`.
pub const NAME: &str = "notification";

/// The service's public REST routes.
pub fn rest_routes() -> Router {
    Router::new()
}
