//! External calendars (ICS feeds or uploads) of a resource.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use berth_runtime::{Json, Path};
use uuid::Uuid;

use super::created;
use crate::Availability;
use crate::error::AvailabilityError;
use crate::model::{Calendar, NewCalendar};

type Result<T> = std::result::Result<T, AvailabilityError>;

pub(super) async fn create(
    State(av): State<Availability>,
    Path(resource): Path<Uuid>,
    Json(new): Json<NewCalendar>,
) -> Result<Response> {
    let cal = av.add_calendar(resource, new).await?;
    Ok(created(format!("/v1/calendars/{}", cal.id), cal))
}

pub(super) async fn list(
    State(av): State<Availability>,
    Path(resource): Path<Uuid>,
) -> Result<Json<Vec<Calendar>>> {
    Ok(Json(av.list_calendars(resource).await?))
}

pub(super) async fn get(
    State(av): State<Availability>,
    Path(id): Path<Uuid>,
) -> Result<Json<Calendar>> {
    Ok(Json(av.get_calendar(id).await?))
}

pub(super) async fn remove(
    State(av): State<Availability>,
    Path(id): Path<Uuid>,
) -> Result<StatusCode> {
    av.delete_calendar(id).await?;
    Ok(StatusCode::NO_CONTENT)
}
