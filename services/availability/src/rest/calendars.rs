//! External calendars (ICS feeds or uploads) of a resource. Reads take the
//! principal optionally: strangers get 404, not 401, so they learn nothing.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use berth_runtime::auth::Principal;
use berth_runtime::{Json, Path};
use uuid::Uuid;

use super::created;
use crate::Availability;
use crate::error::AvailabilityError;
use crate::model::{Calendar, NewCalendar};

type Result<T> = std::result::Result<T, AvailabilityError>;

pub(super) async fn create(
    State(av): State<Availability>,
    principal: Principal,
    Path(resource): Path<Uuid>,
    Json(new): Json<NewCalendar>,
) -> Result<Response> {
    let cal = av.add_calendar(&principal, resource, new).await?;
    Ok(created(format!("/v1/calendars/{}", cal.id), cal))
}

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

pub(super) async fn remove(
    State(av): State<Availability>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<StatusCode> {
    av.delete_calendar(&principal, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
