//! Why a token was refused, and how that is answered (401/503 problem+json).

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};

use crate::problem::Problem;

/// Why a token was refused. The message never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token algorithm is not allowed")]
    Algorithm,
    #[error("token has no key id")]
    NoKeyId,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("token is invalid: {0}")]
    Invalid(String),
    #[error("token has expired")]
    Expired,
    #[error("token is not yet valid")]
    NotYetValid,
    #[error("signing keys are unavailable")]
    KeysUnavailable,
}

impl AuthError {
    fn problem(&self) -> Problem {
        match self {
            AuthError::KeysUnavailable => Problem::unavailable(self.to_string()),
            _ => Problem::unauthorized(self.to_string()),
        }
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let challenge = match self {
            AuthError::Missing => "Bearer realm=\"berth\"".to_owned(),
            AuthError::KeysUnavailable => return problem.into_response(),
            _ => format!(
                "Bearer realm=\"berth\", error=\"invalid_token\", error_description=\"{self}\""
            ),
        };
        let mut response = problem.into_response();
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}
