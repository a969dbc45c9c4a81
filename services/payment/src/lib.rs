//! The `payment` service: Stripe payments: authorise on hold, capture on confirm, refund on failure.
//!
//! At this stage the service serves the shared operational endpoints
//! (`/livez`, `/readyz`, `/metrics`); its API arrives with its own issue.

use axum::Router;

/// Name used in logs, metrics and `berth serve <name>`.
pub const NAME: &str = "payment";

/// The service's public REST routes.
pub fn rest_routes() -> Router {
    Router::new()
}
