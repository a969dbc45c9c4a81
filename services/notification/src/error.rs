//! The one error type of the crate and its one mapping to problem+json.

use axum::response::{IntoResponse, Response};
use berth_runtime::Problem;

#[derive(Debug, thiserror::Error)]
pub enum NotificationError {
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    /// A well-formed request whose content breaks a rule (422), naming the field.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// A request that cannot be served as asked (400), e.g. a private URL.
    #[error("{0}")]
    BadRequest(String),
    /// Only a dead-lettered webhook can be replayed (409).
    #[error("{0}")]
    NotReplayable(String),
    /// Another replica is writing the same thing; retried.
    #[error("{0}")]
    Conflict(String),
    /// A resource lookup failed; the event is retried.
    #[error("looking up {0}")]
    Lookup(String),
    #[error("rendering a message: {0}")]
    Render(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("configuration: {0}")]
    Config(String),
}

impl From<NotificationError> for Problem {
    fn from(error: NotificationError) -> Self {
        use NotificationError as E;
        match error {
            E::Forbidden(detail) => Problem::forbidden(detail),
            E::NotFound(what) => Problem::not_found(format!("{what} not found")),
            E::Invalid { field, message } => {
                Problem::validation(format!("{field}: {message}")).with_extension("field", field)
            }
            E::BadRequest(detail) => Problem::bad_request(detail),
            E::NotReplayable(detail) => Problem::conflict("not-dead-lettered", detail),
            E::Database(ref db) if berth_runtime::postgres::is_unavailable(db) => {
                tracing::warn!(%error, "database unavailable");
                Problem::unavailable("the notification database is unavailable; retry later")
            }
            E::Lookup(_) => Problem::unavailable("availability is unavailable; retry later"),
            E::Conflict(_)
            | E::Render(_)
            | E::Database(_)
            | E::Migrate(_)
            | E::Redis(_)
            | E::Config(_) => Problem::internal(&error),
        }
    }
}

impl NotificationError {
    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }
}

impl IntoResponse for NotificationError {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}
