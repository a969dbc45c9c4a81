//! The one error type of the crate and its one mapping to problem+json.

use axum::response::{IntoResponse, Response};
use berth_ledger::LedgerError;
use berth_runtime::Problem;
use http::StatusCode;
use uuid::Uuid;

use crate::model::BookingStatus;

#[derive(Debug, thiserror::Error)]
pub enum BookingError {
    /// The request cannot be understood (bad query, cursor, header).
    #[error("{0}")]
    BadRequest(String),
    /// The request is well-formed but its values are not acceptable.
    #[error("{0}")]
    Invalid(String),
    #[error("request body too large")]
    TooLarge,
    /// Also the answer for a booking the caller may not see, so its
    /// existence is not revealed.
    #[error("booking {0} not found")]
    NotFound(Uuid),
    /// Authenticated, but the principal's roles do not allow this.
    #[error("{0}")]
    Forbidden(String),
    #[error("the booking is {status}; it cannot be {action}")]
    WrongState {
        status: BookingStatus,
        action: &'static str,
    },
    #[error(
        "the booking is confirmed by its payment, not by the client: pay with the \
         `client_secret` of POST /v1/payments; POST /v1/payments/{{id}}/sync checks a payment now"
    )]
    PaymentRequired,
    #[error(
        "the new slot has another price; a paid booking keeps its price (cancel and book again)"
    )]
    PriceChanged,
    /// Lost an optimistic-concurrency race; retrying is safe.
    #[error("the booking changed concurrently; retry")]
    Concurrent,
    #[error("the `Idempotency-Key` header is required on every POST")]
    MissingIdempotencyKey,
    #[error("this Idempotency-Key was already used for a different request")]
    IdempotencyKeyReused,
    #[error("a request with this Idempotency-Key is still in progress")]
    IdempotencyInFlight,
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// An idempotent consumer's handler failed; the event is not marked.
    #[error("event handler failed: {0}")]
    Handler(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Internal(String),
}

impl BookingError {
    /// Whether an idempotent request that ended with this error may be stored
    /// and replayed: only decisions are; failures to understand the request
    /// (nothing was done) and transient faults let the client retry the key.
    pub(crate) fn is_decision(&self) -> bool {
        matches!(
            self,
            Self::NotFound(_)
                | Self::WrongState { .. }
                | Self::PaymentRequired
                | Self::PriceChanged
                | Self::Ledger(
                    LedgerError::SlotUnavailable(_)
                        | LedgerError::HoldExpired
                        | LedgerError::NotFound(_)
                )
        )
    }

    /// The database error inside, if this is one (it decides whether a held
    /// connection may be reused).
    pub(crate) fn as_database(&self) -> Option<&sqlx::Error> {
        match self {
            Self::Database(error) => Some(error),
            _ => None,
        }
    }
}

impl From<BookingError> for Problem {
    fn from(error: BookingError) -> Self {
        use BookingError as E;
        match error {
            E::BadRequest(detail) => Problem::bad_request(detail),
            E::Invalid(detail) => Problem::validation(detail),
            E::TooLarge => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
            )
            .with_detail("the request body exceeds the size limit"),
            E::NotFound(_) => Problem::not_found(error.to_string()),
            E::Forbidden(detail) => Problem::forbidden(detail),
            E::WrongState { status, .. } => Problem::conflict("booking-state", error.to_string())
                .with_extension("booking_status", status.as_str()),
            E::PaymentRequired => {
                Problem::new(StatusCode::CONFLICT, "payment-required", "Payment required")
                    .with_detail(error.to_string())
            }
            E::PriceChanged => Problem::conflict("price-changed", error.to_string()),
            E::Concurrent => Problem::conflict("concurrent-update", error.to_string()),
            E::MissingIdempotencyKey => Problem::idempotency_key_missing(error.to_string()),
            E::IdempotencyKeyReused => Problem::idempotency_key_reused(error.to_string()),
            E::IdempotencyInFlight => Problem::new(
                StatusCode::CONFLICT,
                "idempotency-in-flight",
                "Request in progress",
            )
            .with_detail(error.to_string()),
            E::Ledger(ledger) => Problem::from(ledger),
            E::Database(ref db) if berth_runtime::postgres::is_unavailable(db) => {
                tracing::warn!(%error, "database unavailable");
                Problem::unavailable("the booking database is unavailable; retry later")
            }
            E::Database(_)
            | E::Migrate(_)
            | E::Redis(_)
            | E::Handler(_)
            | E::Config(_)
            | E::Internal(_) => Problem::internal(&error),
        }
    }
}

/// Marks a response the idempotency layer must not store.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NotReplayable;

impl IntoResponse for BookingError {
    fn into_response(self) -> Response {
        let decision = self.is_decision();
        let mut response = Problem::from(self).into_response();
        if !decision {
            response.extensions_mut().insert(NotReplayable);
        }
        response
    }
}
