//! Appointment types of a resource.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use berth_runtime::auth::Principal;
use berth_runtime::{Json, Path};
use uuid::Uuid;

use super::created;
use crate::Availability;
use crate::error::AvailabilityError;
use crate::model::{AppointmentType, AppointmentTypePatch, NewAppointmentType};

type Result<T> = std::result::Result<T, AvailabilityError>;

pub(super) async fn create(
    State(av): State<Availability>,
    principal: Principal,
    Path(resource): Path<Uuid>,
    Json(new): Json<NewAppointmentType>,
) -> Result<Response> {
    let ty = av.create_type(&principal, resource, new).await?;
    Ok(created(format!("/v1/appointment-types/{}", ty.id), ty))
}

pub(super) async fn list(
    State(av): State<Availability>,
    Path(resource): Path<Uuid>,
) -> Result<Json<Vec<AppointmentType>>> {
    Ok(Json(av.list_types(resource).await?))
}

pub(super) async fn get(
    State(av): State<Availability>,
    Path(id): Path<Uuid>,
) -> Result<Json<AppointmentType>> {
    Ok(Json(av.get_type(id).await?))
}

pub(super) async fn update(
    State(av): State<Availability>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Json(patch): Json<AppointmentTypePatch>,
) -> Result<Json<AppointmentType>> {
    Ok(Json(av.update_type(&principal, id, patch).await?))
}

pub(super) async fn remove(
    State(av): State<Availability>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<StatusCode> {
    av.delete_type(&principal, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
