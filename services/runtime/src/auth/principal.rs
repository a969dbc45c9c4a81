//! The authenticated caller and the claims it is derived from.

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;
use serde::{Deserialize, Serialize};

use super::AuthError;
use crate::problem::Problem;

/// Who made the request, as proven by a verified access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub subject: String,
    pub roles: Vec<String>,
    /// The account's phone (E.164), present only once the user service has
    /// verified it (an OTP login): safe to text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
}

impl Principal {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// `Ok` when the principal has `role`, else 403 problem+json.
    pub fn require_role(&self, role: &str) -> Result<(), Problem> {
        if self.has_role(role) {
            Ok(())
        } else {
            Err(forbidden(role))
        }
    }
}

pub(super) fn forbidden(role: &str) -> Problem {
    Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden")
        .with_detail(format!("requires the `{role}` role"))
}

/// Claims of a Berth access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    #[serde(default)]
    pub jti: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// OpenID Connect's claim name; issued only for a verified phone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| AuthError::Missing.into_response())
    }
}
