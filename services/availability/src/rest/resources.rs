//! Resources, their weekly schedule and date overrides.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use berth_runtime::auth::Principal;
use berth_runtime::openapi::ProblemResponse;
use berth_runtime::{Json, Path, Query};
use berth_slots::{DateOverride, WeeklyHours};
use chrono::NaiveDate;
use serde::Deserialize;
use uuid::Uuid;

use super::created;
use crate::Availability;
use crate::error::AvailabilityError;
use crate::model::{NewResource, Page, Resource, ResourcePatch, WeeklyBody};

type Result<T> = std::result::Result<T, AvailabilityError>;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Only resources this account manages.
    owner_id: Option<String>,
    /// `next_after` of the previous page.
    after: Option<Uuid>,
    /// Page size (default 100).
    limit: Option<i64>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct DateRange {
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
}

/// Creates a resource (a person, room or piece of equipment).
#[utoipa::path(post, operation_id = "createResource", path = "/v1/resources", tag = "resources", request_body = NewResource,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; `Location` names it", body = Resource),
        (status = 403, response = ProblemResponse)
    )
)]
pub(super) async fn create(
    State(av): State<Availability>,
    principal: Principal,
    Json(new): Json<NewResource>,
) -> Result<Response> {
    let resource = av.create_resource(&principal, new).await?;
    Ok(created(format!("/v1/resources/{}", resource.id), resource))
}

/// Lists resources, oldest first, a page at a time.
#[utoipa::path(get, operation_id = "listResources", path = "/v1/resources", tag = "resources", params(ListQuery),
    responses(
        (status = 200, description = "A page of resources", body = Page<Resource>)
    )
)]
pub(super) async fn list(
    State(av): State<Availability>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Page<Resource>>> {
    Ok(Json(
        av.list_resources(q.owner_id.as_deref(), q.after, q.limit.unwrap_or(100))
            .await?,
    ))
}

#[utoipa::path(get, operation_id = "getResource", path = "/v1/resources/{id}", tag = "resources",
    params(("id" = Uuid, Path, description = "Resource id")),
    responses(
        (status = 200, description = "The resource", body = Resource),
        (status = 404, response = ProblemResponse)
    )
)]
pub(super) async fn get(
    State(av): State<Availability>,
    Path(id): Path<Uuid>,
) -> Result<Json<Resource>> {
    Ok(Json(av.get_resource(id).await?))
}

/// Renames a resource or changes its zone (or, for admins, its owner).
#[utoipa::path(patch, operation_id = "updateResource", path = "/v1/resources/{id}", tag = "resources", request_body = ResourcePatch,
    params(("id" = Uuid, Path, description = "Resource id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The resource", body = Resource),
        (status = 403, response = ProblemResponse),
        (status = 404, response = ProblemResponse)
    )
)]
pub(super) async fn update(
    State(av): State<Availability>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Json(patch): Json<ResourcePatch>,
) -> Result<Json<Resource>> {
    Ok(Json(av.update_resource(&principal, id, patch).await?))
}

/// Deletes a resource; refused while holds or bookings on it are live.
#[utoipa::path(delete, operation_id = "deleteResource", path = "/v1/resources/{id}", tag = "resources",
    params(("id" = Uuid, Path, description = "Resource id")),
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
    av.delete_resource(&principal, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The weekly working hours, in the resource's local time.
#[utoipa::path(get, operation_id = "getSchedule", path = "/v1/resources/{id}/schedule", tag = "schedules",
    params(("id" = Uuid, Path, description = "Resource id")),
    responses(
        (status = 200, description = "The weekly hours", body = WeeklyHours),
        (status = 404, response = ProblemResponse)
    )
)]
pub(super) async fn get_schedule(
    State(av): State<Availability>,
    Path(id): Path<Uuid>,
) -> Result<Json<WeeklyHours>> {
    Ok(Json(av.get_schedule(id).await?))
}

/// Replaces the weekly working hours: day name → local intervals.
#[utoipa::path(put, operation_id = "putSchedule", path = "/v1/resources/{id}/schedule", tag = "schedules", request_body = WeeklyBody,
    params(("id" = Uuid, Path, description = "Resource id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The weekly hours", body = WeeklyHours),
        (status = 403, response = ProblemResponse),
        (status = 404, response = ProblemResponse)
    )
)]
pub(super) async fn put_schedule(
    State(av): State<Availability>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Json(body): Json<WeeklyBody>,
) -> Result<Json<WeeklyHours>> {
    Ok(Json(av.put_schedule(&principal, id, body).await?))
}

/// Date overrides (closed days, extra hours), optionally within dates.
#[utoipa::path(get, operation_id = "listOverrides", path = "/v1/resources/{id}/overrides", tag = "schedules",
    params(("id" = Uuid, Path, description = "Resource id"), DateRange),
    responses(
        (status = 200, description = "The overrides", body = Vec<DateOverride>),
        (status = 404, response = ProblemResponse)
    )
)]
pub(super) async fn list_overrides(
    State(av): State<Availability>,
    Path(id): Path<Uuid>,
    Query(range): Query<DateRange>,
) -> Result<Json<Vec<DateOverride>>> {
    Ok(Json(av.list_overrides(id, range.from, range.to).await?))
}

/// Sets the override of one local date (replacing any earlier one).
#[utoipa::path(put, operation_id = "putOverride", path = "/v1/resources/{id}/overrides", tag = "schedules", request_body = DateOverride,
    params(("id" = Uuid, Path, description = "Resource id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The override as stored", body = DateOverride),
        (status = 403, response = ProblemResponse),
        (status = 404, response = ProblemResponse)
    )
)]
pub(super) async fn put_override(
    State(av): State<Availability>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Json(o): Json<DateOverride>,
) -> Result<Json<DateOverride>> {
    Ok(Json(av.put_override(&principal, id, o).await?))
}

/// Removes the override of one local date.
#[utoipa::path(delete, operation_id = "deleteOverride", path = "/v1/resources/{id}/overrides/{date}", tag = "schedules",
    params(
        ("id" = Uuid, Path, description = "Resource id"),
        ("date" = NaiveDate, Path, description = "Local date, YYYY-MM-DD")
    ),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, response = ProblemResponse),
        (status = 404, response = ProblemResponse)
    )
)]
pub(super) async fn delete_override(
    State(av): State<Availability>,
    principal: Principal,
    Path((id, date)): Path<(Uuid, NaiveDate)>,
) -> Result<StatusCode> {
    av.delete_override(&principal, id, date).await?;
    Ok(StatusCode::NO_CONTENT)
}
