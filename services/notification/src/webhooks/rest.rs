//! REST: webhook endpoints (CRUD, secret rotation) and their deliveries
//! (list, dead letters, replay). Admins manage every endpoint; staff
//! manage their own, which hear only of bookings on resources they manage;
//! anyone else is refused (403). Another's endpoint is a 404 to staff.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_runtime::auth::Principal;
use berth_runtime::egress::{self, Refused};
use berth_runtime::openapi::ProblemResponse;
use berth_runtime::{Json, Path, Query};
use chrono::{DateTime, Utc};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::Notifications;
use crate::error::NotificationError;
use crate::model::{after, now};
use crate::store::{EndpointChange, WebhookFilter};
use crate::webhooks::{
    DISABLED, ENABLED, EVENT_TYPES, Endpoint, OWNER, PLATFORM, WebhookDelivery, new_secret,
};

type Result<T> = std::result::Result<T, NotificationError>;

const ADMIN: &str = "admin";
const STAFF: &str = "staff";
const MAX_PAGE: i64 = 200;
const MAX_URL: usize = 2048;
const MAX_DESCRIPTION: usize = 500;
const DISABLED_BY_STAFF: &str = "disabled through the API";

pub(crate) fn api() -> OpenApiRouter<Notifications> {
    OpenApiRouter::new()
        .routes(routes!(create_endpoint, list_endpoints))
        .routes(routes!(get_endpoint, update_endpoint, delete_endpoint))
        .routes(routes!(rotate_secret))
        .routes(routes!(list_deliveries))
        .routes(routes!(replay_delivery))
}

/// Who is asking: an admin (everything) or staff (their own).
struct Caller {
    subject: String,
    admin: bool,
}

impl Caller {
    fn of(p: &Principal) -> Result<Self> {
        let admin = p.has_role(ADMIN);
        if !admin && !p.has_role(STAFF) {
            return Err(NotificationError::Forbidden(
                "webhook endpoints are for staff and admins".into(),
            ));
        }
        if p.subject.is_empty() {
            return Err(NotificationError::Forbidden(
                "the token names no subject".into(),
            ));
        }
        Ok(Self {
            subject: p.subject.clone(),
            admin,
        })
    }

    fn sees(&self, e: &Endpoint) -> bool {
        self.admin || e.owner_id == self.subject
    }
}

/// A new endpoint.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewEndpoint {
    /// `https://…` (or `http://…`); it must resolve to public addresses only.
    url: String,
    /// Event types to receive (at least one): `booking.created`,
    /// `booking.confirmed`, `booking.paid`, `booking.rescheduled`,
    /// `booking.cancelled`, `booking.expired`, `booking.payment_failed`,
    /// `booking.reinstated`, `payment.refunded`.
    event_types: Vec<String>,
    #[serde(default)]
    description: Option<String>,
    /// Default `true`.
    #[serde(default)]
    enabled: Option<bool>,
}

/// Changes to an endpoint; absent fields stay as they are.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct EndpointPatch {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    event_types: Option<Vec<String>>,
    /// `""` removes it.
    #[serde(default)]
    description: Option<String>,
    /// `true` also re-enables an endpoint disabled by a `410 Gone`.
    #[serde(default)]
    enabled: Option<bool>,
}

/// A webhook endpoint. Its secret is shown only in the answers to create
/// and rotate-secret: keep it then.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct EndpointView {
    id: Uuid,
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    event_types: Vec<String>,
    enabled: bool,
    /// Why it is disabled (e.g. the receiver answered `410 Gone`).
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled_reason: Option<String>,
    /// `platform` (made by an admin: every booking) or `owner` (made by
    /// staff: bookings on resources its owner manages).
    scope: String,
    owner_id: String,
    /// The signing secret (`whsec_…`): only on create and rotate-secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    /// Until then the previous secret signs too (after a rotation).
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_secret_expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl EndpointView {
    fn of(e: Endpoint, show_secret: bool) -> Self {
        let now = now();
        Self {
            id: e.id,
            url: e.url,
            description: e.description,
            event_types: e.event_types,
            enabled: e.status == ENABLED,
            disabled_reason: e.disabled_reason,
            scope: e.scope,
            owner_id: e.owner_id,
            secret: show_secret.then_some(e.secret),
            previous_secret_expires_at: e.previous_secret_expires_at.filter(|t| *t > now),
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookEndpointList)]
struct EndpointList {
    items: Vec<EndpointView>,
}

/// One event's webhook to one endpoint and what became of it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct WebhookDeliveryView {
    /// Also the `webhook-id` header, the same on every attempt.
    id: Uuid,
    endpoint_id: Uuid,
    event_id: Uuid,
    event_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    booking_id: Option<Uuid>,
    /// `pending`, `sent` or `dead` (dead-lettered: replay it).
    status: String,
    /// Attempts since it was created or last replayed.
    attempts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_attempt_at: Option<DateTime<Utc>>,
    /// The receiver's last HTTP status, if it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_status: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    /// The body sent: `{"type", "timestamp", "data"}`, no personal data.
    #[schema(value_type = Object)]
    payload: Value,
    created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sent_at: Option<DateTime<Utc>>,
}

impl WebhookDeliveryView {
    fn of(d: WebhookDelivery) -> Self {
        Self {
            id: d.id,
            endpoint_id: d.endpoint_id,
            event_id: d.event_id,
            event_type: d.event_type.clone(),
            booking_id: d.booking_id,
            status: d.status.clone(),
            attempts: d.round_attempts(),
            next_attempt_at: d.due_at,
            last_status: d.last_status,
            last_error: d.last_error.clone(),
            payload: serde_json::from_str(&d.payload).unwrap_or(Value::Null),
            created_at: d.created_at,
            sent_at: d.sent_at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookDeliveryPage)]
struct DeliveryPage {
    items: Vec<WebhookDeliveryView>,
    /// Pass as `before` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before: Option<Uuid>,
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
enum DeliveryStatus {
    Pending,
    Sent,
    Dead,
}

impl DeliveryStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Dead => "dead",
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeliveryParams {
    /// Only this endpoint's.
    endpoint_id: Option<Uuid>,
    /// Only in this state; `dead` lists the dead letters.
    #[param(inline)]
    status: Option<DeliveryStatus>,
    /// `next_before` of the previous page.
    before: Option<Uuid>,
    /// Page size (default 50, at most 200).
    limit: Option<i64>,
}

fn created(location: String, body: impl Serialize) -> Response {
    let mut response = (StatusCode::CREATED, axum::Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

impl Notifications {
    /// A checked URL: http(s), not too long, and (unless private URLs are
    /// allowed) resolving only to public addresses now.
    async fn webhook_url(&self, raw: &str) -> Result<String> {
        let raw = raw.trim();
        if raw.len() > MAX_URL {
            return Err(NotificationError::invalid(
                "url",
                format!("must be at most {MAX_URL} bytes"),
            ));
        }
        let url = Url::parse(raw)
            .map_err(|e| NotificationError::invalid("url", format!("not a URL: {e}")))?;
        let allow_private = self.inner.config.webhooks.allow_private_urls;
        egress::check_destination(&url, allow_private)
            .await
            .map_err(|refused| match refused {
                Refused::Private => NotificationError::BadRequest(format!("webhook {refused}")),
                Refused::Scheme(_) => NotificationError::invalid("url", refused.to_string()),
            })?;
        Ok(url.to_string())
    }

    /// The caller's endpoint `id`; another's is as unknown.
    async fn endpoint_for(&self, caller: &Caller, id: Uuid) -> Result<Endpoint> {
        match self.inner.store.endpoint(id).await? {
            Some(e) if caller.sees(&e) => Ok(e),
            _ => Err(NotificationError::NotFound(format!(
                "webhook endpoint {id}"
            ))),
        }
    }
}

fn event_types(types: Vec<String>) -> Result<Vec<String>> {
    if types.is_empty() {
        return Err(NotificationError::invalid(
            "event_types",
            "give at least one event type",
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(types.len());
    for t in types {
        if !EVENT_TYPES.contains(&t.as_str()) {
            return Err(NotificationError::invalid(
                "event_types",
                format!("{t:?} is not one of {}", EVENT_TYPES.join(", ")),
            ));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

fn description(d: Option<String>) -> Result<Option<String>> {
    let d = d.map(|d| d.trim().to_owned()).filter(|d| !d.is_empty());
    if d.as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION)
    {
        return Err(NotificationError::invalid(
            "description",
            format!("must be at most {MAX_DESCRIPTION} characters"),
        ));
    }
    Ok(d)
}

/// Registers an endpoint and answers with its secret, shown only now.
#[utoipa::path(post, operation_id = "createWebhookEndpoint", path = "/v1/webhook-endpoints", tag = "webhooks",
    request_body = NewEndpoint,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created, with its secret (shown only now); `Location` names it", body = EndpointView),
        (status = 400, response = ProblemResponse),
        (status = 403, response = ProblemResponse),
        (status = 422, response = ProblemResponse)
    )
)]
async fn create_endpoint(
    principal: Principal,
    State(n): State<Notifications>,
    Json(new): Json<NewEndpoint>,
) -> Result<Response> {
    let caller = Caller::of(&principal)?;
    let event_types = event_types(new.event_types)?;
    let description = description(new.description)?;
    let url = n.webhook_url(&new.url).await?;
    let now = now();
    let enabled = new.enabled.unwrap_or(true);
    let endpoint = Endpoint {
        id: Uuid::now_v7(),
        owner_id: caller.subject.clone(),
        scope: if caller.admin { PLATFORM } else { OWNER }.to_owned(),
        url,
        description,
        event_types,
        status: if enabled { ENABLED } else { DISABLED }.to_owned(),
        disabled_reason: (!enabled).then(|| DISABLED_BY_STAFF.to_owned()),
        secret: new_secret(),
        previous_secret: None,
        previous_secret_expires_at: None,
        created_at: now,
        updated_at: now,
    };
    n.inner.store.insert_endpoint(&endpoint).await?;
    tracing::info!(endpoint = %endpoint.id, owner = %endpoint.owner_id, "webhook endpoint registered");
    Ok(created(
        format!("/v1/webhook-endpoints/{}", endpoint.id),
        EndpointView::of(endpoint, true),
    ))
}

/// Endpoints, oldest first: all for admins, their own for staff.
#[utoipa::path(get, operation_id = "listWebhookEndpoints", path = "/v1/webhook-endpoints", tag = "webhooks",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The endpoints (without secrets)", body = EndpointList),
        (status = 403, response = ProblemResponse)
    )
)]
async fn list_endpoints(
    principal: Principal,
    State(n): State<Notifications>,
) -> Result<Json<EndpointList>> {
    let caller = Caller::of(&principal)?;
    let owner = (!caller.admin).then_some(caller.subject.as_str());
    let items = n.inner.store.endpoints(owner).await?;
    Ok(Json(EndpointList {
        items: items
            .into_iter()
            .map(|e| EndpointView::of(e, false))
            .collect(),
    }))
}

#[utoipa::path(get, operation_id = "getWebhookEndpoint", path = "/v1/webhook-endpoints/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Endpoint id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The endpoint (without its secret)", body = EndpointView),
        (status = 403, response = ProblemResponse),
        (status = 404, response = ProblemResponse)
    )
)]
async fn get_endpoint(
    principal: Principal,
    State(n): State<Notifications>,
    Path(id): Path<Uuid>,
) -> Result<Json<EndpointView>> {
    let caller = Caller::of(&principal)?;
    Ok(Json(EndpointView::of(
        n.endpoint_for(&caller, id).await?,
        false,
    )))
}

/// Changes the URL, event types, description or enabled flag.
#[utoipa::path(patch, operation_id = "updateWebhookEndpoint", path = "/v1/webhook-endpoints/{id}", tag = "webhooks",
    request_body = EndpointPatch,
    params(("id" = Uuid, Path, description = "Endpoint id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The endpoint", body = EndpointView),
        (status = 400, response = ProblemResponse),
        (status = 403, response = ProblemResponse),
        (status = 404, response = ProblemResponse),
        (status = 422, response = ProblemResponse)
    )
)]
async fn update_endpoint(
    principal: Principal,
    State(n): State<Notifications>,
    Path(id): Path<Uuid>,
    Json(patch): Json<EndpointPatch>,
) -> Result<Json<EndpointView>> {
    let caller = Caller::of(&principal)?;
    n.endpoint_for(&caller, id).await?;
    let change = EndpointChange {
        event_types: patch.event_types.map(event_types).transpose()?,
        description: patch
            .description
            .map(|d| description(Some(d)))
            .transpose()?,
        url: match patch.url {
            Some(url) => Some(n.webhook_url(&url).await?),
            None => None,
        },
        disabled: patch
            .enabled
            .map(|enabled| (!enabled).then(|| DISABLED_BY_STAFF.to_owned())),
    };
    if !n.inner.store.change_endpoint(id, &change, now()).await? {
        return Err(NotificationError::NotFound(format!(
            "webhook endpoint {id}"
        )));
    }
    Ok(Json(EndpointView::of(
        n.endpoint_for(&caller, id).await?,
        false,
    )))
}

/// Removes the endpoint and its deliveries (pending ones are not sent).
#[utoipa::path(delete, operation_id = "deleteWebhookEndpoint", path = "/v1/webhook-endpoints/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Endpoint id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, response = ProblemResponse),
        (status = 404, response = ProblemResponse)
    )
)]
async fn delete_endpoint(
    principal: Principal,
    State(n): State<Notifications>,
    Path(id): Path<Uuid>,
) -> Result<StatusCode> {
    let caller = Caller::of(&principal)?;
    n.endpoint_for(&caller, id).await?;
    if !n.inner.store.delete_endpoint(id).await? {
        return Err(NotificationError::NotFound(format!(
            "webhook endpoint {id}"
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Makes a new secret and answers with it (shown only now). Until
/// `previous_secret_expires_at` (24 h by default) webhooks carry a
/// signature by each, so receivers can switch without losing one.
#[utoipa::path(post, operation_id = "rotateWebhookSecret", path = "/v1/webhook-endpoints/{id}/rotate-secret", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Endpoint id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The endpoint with its new secret (shown only now)", body = EndpointView),
        (status = 403, response = ProblemResponse),
        (status = 404, response = ProblemResponse)
    )
)]
async fn rotate_secret(
    principal: Principal,
    State(n): State<Notifications>,
    Path(id): Path<Uuid>,
) -> Result<Json<EndpointView>> {
    let caller = Caller::of(&principal)?;
    n.endpoint_for(&caller, id).await?;
    let now = now();
    let secret = new_secret();
    let grace_until = after(now, n.inner.config.webhooks.secret_grace);
    if !n
        .inner
        .store
        .rotate_secret(id, &secret, grace_until, now)
        .await?
    {
        return Err(NotificationError::NotFound(format!(
            "webhook endpoint {id}"
        )));
    }
    let endpoint = n.endpoint_for(&caller, id).await?;
    tracing::info!(endpoint = %id, "webhook secret rotated");
    Ok(Json(EndpointView::of(endpoint, true)))
}

/// Webhook deliveries, newest first: of every endpoint for admins, of
/// their own endpoints for staff. `status=dead` is the dead-letter list.
#[utoipa::path(get, operation_id = "listWebhookDeliveries", path = "/v1/webhook-deliveries", tag = "webhooks",
    params(DeliveryParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of webhook deliveries", body = DeliveryPage),
        (status = 400, response = ProblemResponse),
        (status = 403, response = ProblemResponse)
    )
)]
async fn list_deliveries(
    principal: Principal,
    State(n): State<Notifications>,
    Query(params): Query<DeliveryParams>,
) -> Result<Json<DeliveryPage>> {
    let caller = Caller::of(&principal)?;
    let limit = params.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    let filter = WebhookFilter {
        owner_id: (!caller.admin).then(|| caller.subject.clone()),
        endpoint_id: params.endpoint_id,
        status: params.status.map(|s| s.as_str().to_owned()),
        before: params.before,
    };
    let found = n.inner.store.webhook_deliveries(&filter, limit).await?;
    let next_before = (found.len() as i64 == limit)
        .then(|| found.last().map(|d| d.id))
        .flatten();
    Ok(Json(DeliveryPage {
        items: found.into_iter().map(WebhookDeliveryView::of).collect(),
        next_before,
    }))
}

/// Sends a dead-lettered delivery again, now, with a fresh retry schedule
/// (same `webhook-id`, so a receiver that had it can tell). Re-enable a
/// disabled endpoint first, or the replay is dead-lettered again.
#[utoipa::path(post, operation_id = "replayWebhookDelivery", path = "/v1/webhook-deliveries/{id}/replay", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Delivery id")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Queued to send now", body = WebhookDeliveryView),
        (status = 403, response = ProblemResponse),
        (status = 404, response = ProblemResponse),
        (status = 409, response = ProblemResponse)
    )
)]
async fn replay_delivery(
    principal: Principal,
    State(n): State<Notifications>,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    let caller = Caller::of(&principal)?;
    let not_found = || NotificationError::NotFound(format!("webhook delivery {id}"));
    let delivery = n
        .inner
        .store
        .webhook_delivery(id)
        .await?
        .ok_or_else(not_found)?;
    n.endpoint_for(&caller, delivery.endpoint_id)
        .await
        .map_err(|_| not_found())?;
    let Some(replayed) = n.inner.store.replay_webhook(id, now()).await? else {
        return Err(NotificationError::NotReplayable(format!(
            "webhook delivery {id} is not dead-lettered"
        )));
    };
    n.wake_sender();
    tracing::info!(delivery = %id, "webhook delivery replayed");
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(WebhookDeliveryView::of(replayed)),
    )
        .into_response())
}
