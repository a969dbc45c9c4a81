//! Resources, their weekly schedule and date overrides.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use berth_runtime::auth::Principal;
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    owner_id: Option<String>,
    after: Option<Uuid>,
    limit: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DateRange {
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
}

pub(super) async fn create(
    State(av): State<Availability>,
    principal: Principal,
    Json(new): Json<NewResource>,
) -> Result<Response> {
    let resource = av.create_resource(&principal, new).await?;
    Ok(created(format!("/v1/resources/{}", resource.id), resource))
}

pub(super) async fn list(
    State(av): State<Availability>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Page<Resource>>> {
    Ok(Json(
        av.list_resources(q.owner_id.as_deref(), q.after, q.limit.unwrap_or(100))
            .await?,
    ))
}

pub(super) async fn get(
    State(av): State<Availability>,
    Path(id): Path<Uuid>,
) -> Result<Json<Resource>> {
    Ok(Json(av.get_resource(id).await?))
}

pub(super) async fn update(
    State(av): State<Availability>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Json(patch): Json<ResourcePatch>,
) -> Result<Json<Resource>> {
    Ok(Json(av.update_resource(&principal, id, patch).await?))
}

pub(super) async fn remove(
    State(av): State<Availability>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<StatusCode> {
    av.delete_resource(&principal, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn get_schedule(
    State(av): State<Availability>,
    Path(id): Path<Uuid>,
) -> Result<Json<WeeklyHours>> {
    Ok(Json(av.get_schedule(id).await?))
}

pub(super) async fn put_schedule(
    State(av): State<Availability>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Json(body): Json<WeeklyBody>,
) -> Result<Json<WeeklyHours>> {
    Ok(Json(av.put_schedule(&principal, id, body).await?))
}

pub(super) async fn list_overrides(
    State(av): State<Availability>,
    Path(id): Path<Uuid>,
    Query(range): Query<DateRange>,
) -> Result<Json<Vec<DateOverride>>> {
    Ok(Json(av.list_overrides(id, range.from, range.to).await?))
}

pub(super) async fn put_override(
    State(av): State<Availability>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Json(o): Json<DateOverride>,
) -> Result<Json<DateOverride>> {
    Ok(Json(av.put_override(&principal, id, o).await?))
}

pub(super) async fn delete_override(
    State(av): State<Availability>,
    principal: Principal,
    Path((id, date)): Path<(Uuid, NaiveDate)>,
) -> Result<StatusCode> {
    av.delete_override(&principal, id, date).await?;
    Ok(StatusCode::NO_CONTENT)
}
