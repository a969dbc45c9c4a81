//! External calendars (ICS feeds or uploads) of a resource. Reads take the
//! principal optionally: strangers get 404, not 401, so they learn nothing.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use berth_runtime::auth::Principal;
use berth_runtime::openapi::ProblemResponse;
use berth_runtime::{Json, Path};
use uuid::Uuid;

use super::created;
use crate::Availability;
use crate::error::AvailabilityError;
use crate::model::{Calendar, NewCalendar};

type Result<T> = std::result::Result<T, AvailabilityError>;

/// Adds an external calendar: an ICS feed URL (fetched and refreshed) or
/// uploaded ICS text. Its events block slots.
#[utoipa::path(post, operation_id = "createCalendar", path = "/v1/resources/{id}/calendars", tag = "calendars", request_body = NewCalendar,
    params(("id" = Uuid, Path, description = "Resource id")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; `Location` names it", body = Calendar),
        (status = 403, response = ProblemResponse),
        (status = 404, response = ProblemResponse)
    )
)]
pub(super) async fn create(
    State(av): State<Availability>,
    principal: Principal,
    Path(resource): Path<Uuid>,
    Json(new): Json<NewCalendar>,
) -> Result<Response> {
    let cal = av.add_calendar(&principal, resource, new).await?;
    Ok(created(format!("/v1/calendars/{}", cal.id), cal))
}

/// The resource's calendars (its manager and admins only; others get 404).
#[utoipa::path(get, operation_id = "listCalendars", path = "/v1/resources/{id}/calendars", tag = "calendars",
    params(("id" = Uuid, Path, description = "Resource id")),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The calendars", body = Vec<Calendar>),
        (status = 404, response = ProblemResponse)
    )
)]
pub(super) async fn list(
    State(av): State<Availability>,
    principal: Option<Extension<Principal>>,
    Path(resource): Path<Uuid>,
) -> Result<Json<Vec<Calendar>>> {
    Ok(Json(
        av.list_calendars(principal.as_ref().map(|p| &p.0), resource)
            .await?,
    ))
}

#[utoipa::path(get, operation_id = "getCalendar", path = "/v1/calendars/{id}", tag = "calendars",
    params(("id" = Uuid, Path, description = "Calendar id")),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The calendar", body = Calendar),
        (status = 404, response = ProblemResponse)
    )
)]
pub(super) async fn get(
    State(av): State<Availability>,
    principal: Option<Extension<Principal>>,
    Path(id): Path<Uuid>,
) -> Result<Json<Calendar>> {
    Ok(Json(
        av.get_calendar(principal.as_ref().map(|p| &p.0), id)
            .await?,
    ))
}

#[utoipa::path(delete, operation_id = "deleteCalendar", path = "/v1/calendars/{id}", tag = "calendars",
    params(("id" = Uuid, Path, description = "Calendar id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, response = ProblemResponse),
        (status = 404, response = ProblemResponse)
    )
)]
pub(super) async fn remove(
    State(av): State<Availability>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<StatusCode> {
    av.delete_calendar(&principal, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
