//! Bookable slots of one appointment type.

use axum::extract::State;
use berth_runtime::{Json, Path, Query};
use uuid::Uuid;

use crate::Availability;
use crate::error::AvailabilityError;
use crate::model::{SlotsPage, SlotsQuery};

pub(super) async fn list(
    State(av): State<Availability>,
    Path(resource): Path<Uuid>,
    Query(q): Query<SlotsQuery>,
) -> Result<Json<SlotsPage>, AvailabilityError> {
    Ok(Json(av.slots(resource, q).await?))
}
