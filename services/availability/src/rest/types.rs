//! Appointment types of a resource.

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
use crate::model::{AppointmentType, AppointmentTypePatch, NewAppointmentType};

type Result<T> = std::result::Result<T, AvailabilityError>;

/// Adds an appointment type (duration, interval, buffers, notice, horizon,
/// seats, price, cancellation policy) to a resource.
#[utoipa::path(post, operation_id = "createAppointmentType", path = "/v1/resources/{id}/appointment-types", tag = "appointment types",
    request_body = NewAppointmentType,
    params(("id" = Uuid, Path, description = "Resource id")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; `Location` names it", body = AppointmentType),
        (status = 403, response = ProblemResponse),
        (status = 404, response = ProblemResponse)
    )
)]
pub(super) async fn create(
    State(av): State<Availability>,
    principal: Principal,
    Path(resource): Path<Uuid>,
    Json(new): Json<NewAppointmentType>,
) -> Result<Response> {
    let ty = av.create_type(&principal, resource, new).await?;
    Ok(created(format!("/v1/appointment-types/{}", ty.id), ty))
}

#[utoipa::path(get, operation_id = "listAppointmentTypes", path = "/v1/resources/{id}/appointment-types", tag = "appointment types",
    params(("id" = Uuid, Path, description = "Resource id")),
    responses(
        (status = 200, description = "The appointment types", body = Vec<AppointmentType>),
        (status = 404, response = ProblemResponse)
    )
)]
pub(super) async fn list(
    State(av): State<Availability>,
    Path(resource): Path<Uuid>,
) -> Result<Json<Vec<AppointmentType>>> {
    Ok(Json(av.list_types(resource).await?))
}

#[utoipa::path(get, operation_id = "getAppointmentType", path = "/v1/appointment-types/{id}", tag = "appointment types",
    params(("id" = Uuid, Path, description = "Appointment type id")),
    responses(
        (status = 200, description = "The appointment type", body = AppointmentType),
        (status = 404, response = ProblemResponse)
    )
)]
pub(super) async fn get(
    State(av): State<Availability>,
    Path(id): Path<Uuid>,
) -> Result<Json<AppointmentType>> {
    Ok(Json(av.get_type(id).await?))
}

/// Changes the fields given; `"cancellation_policy": null` removes the
/// policy. Claims made earlier keep the length, buffers, price and policy
/// they were made with.
#[utoipa::path(patch, operation_id = "updateAppointmentType", path = "/v1/appointment-types/{id}", tag = "appointment types",
    request_body = AppointmentTypePatch,
    params(("id" = Uuid, Path, description = "Appointment type id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The appointment type", body = AppointmentType),
        (status = 403, response = ProblemResponse),
        (status = 404, response = ProblemResponse)
    )
)]
pub(super) async fn update(
    State(av): State<Availability>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Json(patch): Json<AppointmentTypePatch>,
) -> Result<Json<AppointmentType>> {
    Ok(Json(av.update_type(&principal, id, patch).await?))
}

#[utoipa::path(delete, operation_id = "deleteAppointmentType", path = "/v1/appointment-types/{id}", tag = "appointment types",
    params(("id" = Uuid, Path, description = "Appointment type id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, response = ProblemResponse),
        (status = 404, response = ProblemResponse),
        (status = 409, response = ProblemResponse)
    )
)]
pub(super) async fn remove(
    State(av): State<Availability>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<StatusCode> {
    av.delete_type(&principal, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
