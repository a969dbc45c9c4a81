//! Bookable slots of one appointment type.

use axum::extract::State;
use berth_runtime::openapi::ProblemResponse;
use berth_runtime::{Json, Path, Query};
use uuid::Uuid;

use crate::Availability;
use crate::error::AvailabilityError;
use crate::model::{SlotsPage, SlotsQuery};

/// Bookable slots of one appointment type in a window, with the seats left
/// in each; times in the resource's zone unless `tz` names another.
#[utoipa::path(get, operation_id = "listSlots", path = "/v1/resources/{id}/slots", tag = "slots",
    params(("id" = Uuid, Path, description = "Resource id"), SlotsQuery),
    responses(
        (status = 200, description = "The slots, with seats left", body = SlotsPage),
        (status = 404, response = ProblemResponse),
        (status = 422, response = ProblemResponse)
    )
)]
pub(super) async fn list(
    State(av): State<Availability>,
    Path(resource): Path<Uuid>,
    Query(q): Query<SlotsQuery>,
) -> Result<Json<SlotsPage>, AvailabilityError> {
    Ok(Json(av.slots(resource, q).await?))
}
