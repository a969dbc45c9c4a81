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
use axum::routing::{delete, get};
use serde::Serialize;

use crate::Availability;

pub(crate) fn router(av: Availability) -> Router {
    Router::new()
        .route(
            "/v1/resources",
            get(resources::list).post(resources::create),
        )
        .route(
            "/v1/resources/{id}",
            get(resources::get)
                .patch(resources::update)
                .delete(resources::remove),
        )
        .route(
            "/v1/resources/{id}/appointment-types",
            get(types::list).post(types::create),
        )
        .route(
            "/v1/appointment-types/{id}",
            get(types::get).patch(types::update).delete(types::remove),
        )
        .route(
            "/v1/resources/{id}/schedule",
            get(resources::get_schedule).put(resources::put_schedule),
        )
        .route(
            "/v1/resources/{id}/overrides",
            get(resources::list_overrides).put(resources::put_override),
        )
        .route(
            "/v1/resources/{id}/overrides/{date}",
            delete(resources::delete_override),
        )
        .route(
            "/v1/resources/{id}/calendars",
            get(calendars::list).post(calendars::create),
        )
        .route(
            "/v1/calendars/{id}",
            get(calendars::get).delete(calendars::remove),
        )
        .route("/v1/resources/{id}/slots", get(slots::list))
        .with_state(av)
}

/// `201 Created` with `Location` and the created representation.
fn created<T: Serialize>(location: String, body: T) -> Response {
    let mut response = (StatusCode::CREATED, axum::Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}
