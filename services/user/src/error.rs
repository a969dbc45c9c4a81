//! The crate error and how errors become problem+json responses.

use axum::response::{IntoResponse, Response};
use berth_runtime::Problem;
use http::{HeaderValue, header};

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("signing key: {0}")]
    Key(String),
    #[error("password hashing: {0}")]
    Hash(String),
    #[error("already exists")]
    Conflict,
    #[error("not found")]
    NotFound,
    #[error("delivery failed: {0}")]
    Delivery(String),
    #[error("{0}")]
    Problem(Problem),
}

impl From<Problem> for UserError {
    fn from(p: Problem) -> Self {
        Self::Problem(p)
    }
}

impl IntoResponse for UserError {
    fn into_response(self) -> Response {
        match self {
            UserError::Problem(p) => p.into_response(),
            UserError::Conflict => Problem::conflict("exists", "already exists").into_response(),
            UserError::NotFound => Problem::not_found("not found").into_response(),
            UserError::Delivery(_) => {
                tracing::warn!(error = %self, "message delivery failed");
                Problem::unavailable("the message could not be delivered").into_response()
            }
            other => Problem::internal(&other).into_response(),
        }
    }
}

/// problem+json plus `Retry-After` for 429s.
fn problem_response(problem: Problem) -> Response {
    let retry = problem
        .extensions
        .get("retry_after")
        .and_then(serde_json::Value::as_u64);
    let mut response = problem.into_response();
    if let Some(retry) = retry
        && let Ok(value) = HeaderValue::from_str(&retry.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

pub(crate) struct ApiError(UserError);

impl From<UserError> for ApiError {
    fn from(e: UserError) -> Self {
        Self(e)
    }
}

impl From<Problem> for ApiError {
    fn from(p: Problem) -> Self {
        Self(UserError::Problem(p))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self.0 {
            UserError::Problem(p) => problem_response(p),
            other => other.into_response(),
        }
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;
