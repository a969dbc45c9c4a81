//! REST: the delivery log, for staff (of a booking on a resource they
//! manage) and admins; webhook endpoints and deliveries (`webhooks::rest`).

use axum::Router;
use axum::extract::State;
use berth_runtime::auth::{Principal, Verifier};
use berth_runtime::openapi::ProblemResponse;
use berth_runtime::{Json, Query};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::Notifications;
use crate::error::NotificationError;
use crate::model::{Delivery, masked};

const ADMIN: &str = "admin";
const STAFF: &str = "staff";
const MAX_PAGE: i64 = 200;

fn api() -> OpenApiRouter<Notifications> {
    OpenApiRouter::new()
        .routes(routes!(deliveries))
        .merge(crate::webhooks::rest::api())
}

/// The notification API's OpenAPI document.
pub fn openapi() -> OpenApi {
    berth_runtime::openapi::finish(api().into_openapi(), "Berth notification API")
}

pub(crate) fn routes(notifications: Notifications, verifier: &Verifier) -> Router {
    api()
        .split_for_parts()
        .0
        .layer(verifier.layer())
        .with_state(notifications)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Only this booking's messages (required for staff).
    booking_id: Option<Uuid>,
    /// `next_before` of the previous page.
    before: Option<Uuid>,
    /// Page size (default 50, at most 200).
    limit: Option<i64>,
}

/// One message and what became of it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct DeliveryView {
    id: Uuid,
    event_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    booking_id: Option<Uuid>,
    /// `confirmation`, `reschedule`, `cancellation`, `refund`, `payment_failed`.
    kind: String,
    /// `email` (`sms` and `webhook` to come).
    channel: String,
    /// Masked (`a***@example.com`) except for admins.
    recipient: String,
    subject: String,
    /// The booking's version the message describes (the invite's `SEQUENCE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    booking_version: Option<i64>,
    /// `pending`, `sent`, `failed` or `superseded` (replaced by a newer
    /// message about the booking before it was sent).
    status: String,
    attempts: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_attempt_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    /// The invite's iTIP method, when the message carries one.
    #[serde(skip_serializing_if = "Option::is_none")]
    invite_method: Option<String>,
    created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sent_at: Option<DateTime<Utc>>,
}

impl DeliveryView {
    fn of(d: Delivery, admin: bool) -> Self {
        Self {
            id: d.id,
            event_id: d.event_id,
            booking_id: d.booking_id,
            kind: d.kind,
            channel: d.channel,
            recipient: if admin {
                d.recipient
            } else {
                masked(&d.recipient)
            },
            subject: d.subject,
            booking_version: d.booking_version,
            status: d.status,
            attempts: d.attempts,
            next_attempt_at: d.due_at,
            last_error: d.last_error,
            invite_method: d.invite_method,
            created_at: d.created_at,
            sent_at: d.sent_at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = DeliveryPage)]
struct Page {
    items: Vec<DeliveryView>,
    /// Pass as `before` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before: Option<Uuid>,
}

/// The delivery log, newest first: every message planned from an event,
/// its recipient, status and attempts. Admins see all; staff see the
/// messages of one booking on a resource they manage (`booking_id`).
#[utoipa::path(get, operation_id = "listDeliveries", path = "/v1/notifications/deliveries", tag = "notifications",
    params(ListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of deliveries", body = Page),
        (status = 403, response = ProblemResponse),
        (status = 503, response = ProblemResponse)
    )
)]
async fn deliveries(
    principal: Principal,
    State(notifications): State<Notifications>,
    Query(params): Query<ListParams>,
) -> Result<Json<Page>, NotificationError> {
    let admin = principal.has_role(ADMIN);
    if !admin {
        let Some(booking_id) = params.booking_id.filter(|_| principal.has_role(STAFF)) else {
            return Err(NotificationError::Forbidden(
                "the delivery log is for admins, and for staff per booking (booking_id)".into(),
            ));
        };
        if !notifications
            .manages(&principal.subject, booking_id)
            .await?
        {
            // Hidden like a booking without messages.
            return Ok(Json(Page {
                items: Vec::new(),
                next_before: None,
            }));
        }
    }
    let limit = params.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    let found = notifications
        .inner
        .store
        .list(params.booking_id, params.before, limit)
        .await?;
    let next_before = (found.len() as i64 == limit)
        .then(|| found.last().map(|d| d.id))
        .flatten();
    Ok(Json(Page {
        items: found
            .into_iter()
            .map(|d| DeliveryView::of(d, admin))
            .collect(),
        next_before,
    }))
}

impl Notifications {
    /// Whether `subject` manages the resource of `booking_id`.
    async fn manages(&self, subject: &str, booking_id: Uuid) -> Result<bool, NotificationError> {
        let Some(known) = self.inner.store.booking(booking_id).await? else {
            return Ok(false);
        };
        let resource = self
            .inner
            .directory
            .resource(known.booking.resource_id)
            .await
            .map_err(NotificationError::Lookup)?;
        Ok(resource.is_some_and(|r| !subject.is_empty() && r.owner_id == subject))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_document_is_complete() {
        let defects = berth_runtime::openapi::defects(
            &openapi(),
            &[
                "GET /v1/notifications/deliveries",
                "POST /v1/webhook-endpoints",
                "GET /v1/webhook-endpoints",
                "GET /v1/webhook-endpoints/{id}",
                "PATCH /v1/webhook-endpoints/{id}",
                "DELETE /v1/webhook-endpoints/{id}",
                "POST /v1/webhook-endpoints/{id}/rotate-secret",
                "GET /v1/webhook-deliveries",
                "POST /v1/webhook-deliveries/{id}/replay",
            ],
        );
        assert!(defects.is_empty(), "{defects:#?}");
    }
}
