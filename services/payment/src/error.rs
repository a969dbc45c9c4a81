//! The one error type of the crate and its one mapping to problem+json.

use axum::response::{IntoResponse, Response};
use berth_runtime::Problem;
use berth_settlement::SettlementError;
use http::StatusCode;
use uuid::Uuid;

use crate::stripe::StripeCallError;

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Invalid(String),
    /// Also the answer for what the caller may not see.
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    /// The request does not fit the payment's or booking's state.
    #[error("{0}")]
    Conflict(String),
    #[error("the booking's hold lapsed before it was paid for; book again")]
    HoldExpired,
    #[error("this Idempotency-Key was already used for a different request")]
    IdempotencyKeyReused,
    #[error("the `Idempotency-Key` header is required")]
    MissingIdempotencyKey,
    /// The webhook's `Stripe-Signature` does not verify.
    #[error("{0}")]
    Signature(String),
    #[error("Stripe is unavailable: {0}")]
    StripeUnavailable(String),
    #[error(transparent)]
    Settlement(#[from] SettlementError),
    #[error("Stripe: {0}")]
    Stripe(#[from] StripeCallError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("publishing events: {0}")]
    Delivery(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Internal(String),
}

impl PaymentError {
    pub(crate) fn payment_not_found(id: Uuid) -> Self {
        Self::NotFound(format!("payment {id}"))
    }

    pub(crate) fn booking_not_found(id: Uuid) -> Self {
        Self::NotFound(format!("booking {id}"))
    }
}

impl From<PaymentError> for Problem {
    fn from(error: PaymentError) -> Self {
        use PaymentError as E;
        match error {
            E::BadRequest(detail) => Problem::bad_request(detail),
            E::Invalid(detail) => Problem::validation(detail),
            E::NotFound(_) => Problem::not_found(error.to_string()),
            E::Forbidden(detail) => Problem::forbidden(detail),
            E::Conflict(detail) => Problem::conflict("payment-state", detail),
            E::HoldExpired => Problem::new(StatusCode::CONFLICT, "hold-expired", "Hold expired")
                .with_detail(error.to_string()),
            E::IdempotencyKeyReused => Problem::idempotency_key_reused(error.to_string()),
            E::MissingIdempotencyKey => Problem::idempotency_key_missing(error.to_string()),
            E::Signature(detail) => Problem::new(
                StatusCode::BAD_REQUEST,
                "webhook-signature",
                "Webhook signature invalid",
            )
            .with_detail(detail),
            E::StripeUnavailable(detail) => {
                Problem::unavailable(format!("payments are unavailable ({detail}); retry later"))
            }
            E::Settlement(SettlementError::NotFound(id)) => {
                Problem::not_found(format!("booking {id} not found"))
            }
            E::Settlement(SettlementError::Unavailable(detail)) => Problem::unavailable(detail),
            E::Settlement(SettlementError::Conflict(detail)) => {
                Problem::conflict("booking-state", detail)
            }
            E::Database(ref db) if berth_runtime::postgres::is_unavailable(db) => {
                tracing::warn!(%error, "database unavailable");
                Problem::unavailable("the payment database is unavailable; retry later")
            }
            E::Stripe(ref stripe) if stripe.is_transient() => {
                Problem::unavailable("Stripe is unavailable; retry later")
            }
            E::Settlement(SettlementError::Internal(_))
            | E::Stripe(_)
            | E::Database(_)
            | E::Migrate(_)
            | E::Redis(_)
            | E::Delivery(_)
            | E::Config(_)
            | E::Internal(_) => Problem::internal(&error),
        }
    }
}

impl IntoResponse for PaymentError {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}
