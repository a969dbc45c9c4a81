//! The crate's one error type and its one mapping to problem+json.

use berth_ledger::LedgerError;
use berth_runtime::Problem;

#[derive(Debug, thiserror::Error)]
pub enum AvailabilityError {
    #[error("{0} not found")]
    NotFound(String),
    /// A well-formed request whose content breaks a rule (422), naming the field.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// A request that cannot be understood as asked (400), e.g. a bad window.
    #[error("{0}")]
    BadRequest(String),
    /// The caller may not do this to this resource (403).
    #[error("{0}")]
    Forbidden(String),
    /// The request conflicts with the ledger's state (409).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Bad connection settings given to [`crate::Availability::connect`].
    #[error("configuration: {0}")]
    Config(String),
    /// Stored data that should have been validated on the way in is not.
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

impl AvailabilityError {
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.to_owned(),
            message: message.into(),
        }
    }

    pub(crate) fn not_found(what: &str, id: impl std::fmt::Display) -> Self {
        Self::NotFound(format!("{what} {id}"))
    }
}

/// "Could not reach the database" rather than "the database refused this
/// statement".
pub(crate) use berth_runtime::postgres::is_unavailable as is_connection_error;

fn is_foreign_key_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "23503" || code == "787")
}

impl From<AvailabilityError> for Problem {
    fn from(error: AvailabilityError) -> Self {
        match error {
            AvailabilityError::NotFound(what) => Problem::not_found(format!("{what} not found")),
            AvailabilityError::Invalid { field, message } => {
                Problem::validation(format!("{field}: {message}")).with_extension("field", field)
            }
            AvailabilityError::BadRequest(detail) => Problem::bad_request(detail),
            AvailabilityError::Forbidden(detail) => Problem::forbidden(detail),
            AvailabilityError::Conflict(detail) => Problem::conflict("conflict", detail),
            AvailabilityError::Ledger(error) => Problem::from(error),
            // A row referenced a parent deleted concurrently (PostgreSQL, SQLite codes).
            AvailabilityError::Database(error) if is_foreign_key_violation(&error) => {
                Problem::not_found("the resource was deleted meanwhile")
            }
            AvailabilityError::Database(error) if is_connection_error(&error) => {
                tracing::warn!(%error, "database unreachable");
                Problem::unavailable("the database is unreachable; try again")
            }
            other => Problem::internal(&other),
        }
    }
}

impl axum::response::IntoResponse for AvailabilityError {
    fn into_response(self) -> axum::response::Response {
        Problem::from(self).into_response()
    }
}
