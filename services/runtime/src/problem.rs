//! RFC 9457 problem details: the one error body of every REST handler, and
//! the one place that maps errors to HTTP statuses and gRPC codes.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const PROBLEM_JSON: &str = "application/problem+json";
const TYPE_BASE: &str = "https://berth.dev/problems/";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error, utoipa::ToSchema)]
#[error("{status} {title}: {}", detail.as_deref().unwrap_or(""))]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Extension members (e.g. `errors` with per-field messages).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extensions: Map<String, Value>,
}

impl Problem {
    /// `slug` names the problem type; `title` is a short, stable summary.
    pub fn new(status: StatusCode, slug: &str, title: &str) -> Self {
        Self {
            type_uri: format!("{TYPE_BASE}{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: None,
            instance: None,
            extensions: Map::new(),
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_extension(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request").with_detail(detail)
    }

    pub fn validation(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "Invalid request",
        )
        .with_detail(detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found").with_detail(detail)
    }

    pub fn conflict(slug: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, slug, "Conflict").with_detail(detail)
    }

    /// Authenticated, but not allowed.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden").with_detail(detail)
    }

    /// A mutating request without the `Idempotency-Key` it needs.
    pub fn idempotency_key_missing(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "idempotency-key-missing",
            "Idempotency-Key required",
        )
        .with_detail(detail)
    }

    /// The same `Idempotency-Key` with a different request (Stripe's 422).
    pub fn idempotency_key_reused(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "Idempotency-Key reused",
        )
        .with_detail(detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized").with_detail(detail)
    }

    pub fn too_many_requests(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
        )
        .with_detail(detail)
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
        )
        .with_detail(detail)
    }

    /// A server fault. The cause is logged, never sent to the client.
    pub fn internal(cause: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
        )
    }

    /// gRPC status for this problem (used by every gRPC handler).
    pub fn to_grpc_status(&self) -> tonic::Status {
        let code = match self.status {
            400 | 422 => tonic::Code::InvalidArgument,
            401 => tonic::Code::Unauthenticated,
            403 => tonic::Code::PermissionDenied,
            404 => tonic::Code::NotFound,
            409 => tonic::Code::Aborted,
            412 => tonic::Code::FailedPrecondition,
            429 => tonic::Code::ResourceExhausted,
            499 => tonic::Code::Cancelled,
            501 => tonic::Code::Unimplemented,
            503 => tonic::Code::Unavailable,
            504 => tonic::Code::DeadlineExceeded,
            _ => tonic::Code::Internal,
        };
        let body = serde_json::to_vec(self).unwrap_or_default();
        tonic::Status::with_details(
            code,
            self.detail.clone().unwrap_or_else(|| self.title.clone()),
            body.into(),
        )
    }

    /// The problem a gRPC status carries (or the closest HTTP equivalent), so
    /// a REST handler calling another service over gRPC answers the same way
    /// as when that service runs in-process.
    pub fn from_grpc_status(status: &tonic::Status) -> Self {
        if let Ok(problem) = serde_json::from_slice::<Problem>(status.details()) {
            return problem;
        }
        let (code, slug, title) = match status.code() {
            tonic::Code::InvalidArgument => (StatusCode::BAD_REQUEST, "bad-request", "Bad request"),
            tonic::Code::NotFound => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            tonic::Code::Aborted | tonic::Code::AlreadyExists => {
                (StatusCode::CONFLICT, "conflict", "Conflict")
            }
            tonic::Code::Unauthenticated => {
                (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized")
            }
            tonic::Code::PermissionDenied => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            tonic::Code::ResourceExhausted => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
            ),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            _ => (StatusCode::BAD_GATEWAY, "upstream", "Upstream error"),
        };
        Self::new(code, slug, title).with_detail(status.message().to_owned())
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

impl From<JsonRejection> for Problem {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            )
            .with_detail("expected `Content-Type: application/json`"),
            JsonRejection::JsonSyntaxError(e) => {
                Problem::new(StatusCode::BAD_REQUEST, "malformed-json", "Malformed JSON")
                    .with_detail(e.body_text())
            }
            JsonRejection::JsonDataError(e) => Problem::validation(e.body_text()),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload-too-large",
                    "Payload too large",
                )
                .with_detail("the request body exceeds the size limit")
            }
            other => Problem::new(other.status(), "bad-request", "Bad request")
                .with_detail(other.body_text()),
        }
    }
}

impl From<PathRejection> for Problem {
    fn from(rejection: PathRejection) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-path",
            "Invalid path parameter",
        )
        .with_detail(rejection.body_text())
    }
}

impl From<QueryRejection> for Problem {
    fn from(rejection: QueryRejection) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-query",
            "Invalid query parameter",
        )
        .with_detail(rejection.body_text())
    }
}

/// `axum::Json` whose rejections are problem+json.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
        Ok(Self(value))
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Path` whose rejections are problem+json.
#[derive(Debug, Clone)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(value) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// `axum::extract::Query` whose rejections are problem+json.
#[derive(Debug, Clone)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

pub async fn not_found_fallback() -> Problem {
    Problem::not_found("no such route")
}

pub async fn method_not_allowed_fallback() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_round_trip_keeps_the_problem() {
        let p = Problem::conflict("slot-taken", "slot is taken").with_extension("resource", "r1");
        let status = p.to_grpc_status();
        assert_eq!(status.code(), tonic::Code::Aborted);
        assert_eq!(Problem::from_grpc_status(&status), p);
    }

    #[test]
    fn plain_grpc_status_maps_to_http() {
        let p = Problem::from_grpc_status(&tonic::Status::not_found("gone"));
        assert_eq!(p.status, 404);
        assert_eq!(p.detail.as_deref(), Some("gone"));
        assert_eq!(
            Problem::from_grpc_status(&tonic::Status::unavailable("x")).status,
            503
        );
    }

    #[test]
    fn serialises_as_rfc9457() {
        let v =
            serde_json::to_value(Problem::bad_request("bad zone").with_extension("field", "tz"))
                .unwrap();
        assert_eq!(v["type"], "https://berth.dev/problems/bad-request");
        assert_eq!(v["status"], 400);
        assert_eq!(v["title"], "Bad request");
        assert_eq!(v["detail"], "bad zone");
        assert_eq!(v["field"], "tz");
    }
}
