//! The REST API: thin handlers over the service methods. Extractors are
//! `berth_runtime`'s, so malformed JSON, a wrong content type, bad path or
//! query parameters and oversized bodies all answer problem+json.

mod calendars;
mod resources;
mod slots;
mod types;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::Availability;

/// The REST routes with their OpenAPI operations: the document is collected
/// from exactly the handlers that are routed.
fn routes() -> OpenApiRouter<Availability> {
    OpenApiRouter::new()
        .routes(routes!(resources::list, resources::create))
        .routes(routes!(
            resources::get,
            resources::update,
            resources::remove
        ))
        .routes(routes!(types::list, types::create))
        .routes(routes!(types::get, types::update, types::remove))
        .routes(routes!(resources::get_schedule, resources::put_schedule))
        .routes(routes!(resources::list_overrides, resources::put_override))
        .routes(routes!(resources::delete_override))
        .routes(routes!(calendars::list, calendars::create))
        .routes(routes!(calendars::get, calendars::remove))
        .routes(routes!(slots::list))
}

pub(crate) fn router(av: Availability) -> Router {
    routes().split_for_parts().0.with_state(av)
}

/// The availability API's OpenAPI document.
pub fn openapi() -> OpenApi {
    berth_runtime::openapi::finish(routes().into_openapi(), "Berth availability API")
}

/// `201 Created` with `Location` and the created representation.
fn created<T: Serialize>(location: String, body: T) -> Response {
    let mut response = (StatusCode::CREATED, axum::Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_document_is_complete() {
        let defects = berth_runtime::openapi::defects(
            &openapi(),
            &[
                "DELETE /v1/appointment-types/{id}",
                "DELETE /v1/calendars/{id}",
                "DELETE /v1/resources/{id}",
                "DELETE /v1/resources/{id}/overrides/{date}",
                "GET /v1/appointment-types/{id}",
                "GET /v1/calendars/{id}",
                "GET /v1/resources",
                "GET /v1/resources/{id}",
                "GET /v1/resources/{id}/appointment-types",
                "GET /v1/resources/{id}/calendars",
                "GET /v1/resources/{id}/overrides",
                "GET /v1/resources/{id}/schedule",
                "GET /v1/resources/{id}/slots",
                "PATCH /v1/appointment-types/{id}",
                "PATCH /v1/resources/{id}",
                "POST /v1/resources",
                "POST /v1/resources/{id}/appointment-types",
                "POST /v1/resources/{id}/calendars",
                "PUT /v1/resources/{id}/overrides",
                "PUT /v1/resources/{id}/schedule",
            ],
        );
        assert!(defects.is_empty(), "{defects:#?}");
    }
}
