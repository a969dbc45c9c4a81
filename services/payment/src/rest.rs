//! REST handlers. `/v1/payments…` needs a bearer token; a payment (and a
//! booking) the caller may not see answers exactly like an unknown one.
//! `/v1/webhooks/stripe` is Stripe's: authenticated by its signature.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use berth_runtime::auth::{Principal, Verifier};
use berth_runtime::openapi::ProblemResponse;
use berth_runtime::{Json, Path, Query};
use berth_settlement::BookingState;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::Payments;
use crate::error::PaymentError;
use crate::model::{Payment, PaymentView, now};
use crate::saga::rules::{Observation, State as SagaState};
use crate::store::Step;

const ADMIN: &str = "admin";
const STAFF: &str = "staff";
const MAX_KEY_LEN: usize = 255;

const ONE_PER_BOOKING: &str = "A booking has one payment: repeating the request returns the same \
    payment, so it is safe to retry (an `Idempotency-Key` is accepted but not needed).";

fn api() -> OpenApiRouter<Payments> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get_one))
        .routes(routes!(sync))
        .routes(routes!(refund))
        .routes(routes!(steps))
}

fn webhooks() -> OpenApiRouter<Payments> {
    OpenApiRouter::new().routes(routes!(stripe_webhook))
}

/// The payment API's OpenAPI document.
pub fn openapi() -> OpenApi {
    let mut api = api().into_openapi();
    api.merge(webhooks().into_openapi());
    berth_runtime::openapi::finish(api, "Berth payment API")
}

pub(crate) fn routes(payments: Payments, verifier: &Verifier) -> Router {
    let authenticated = api().split_for_parts().0.layer(verifier.layer());
    authenticated
        .merge(webhooks().split_for_parts().0)
        .with_state(payments)
}

/// The caller, reduced to what the rules need.
struct Caller {
    subject: String,
    staff: bool,
    admin: bool,
}

impl Caller {
    fn new(principal: &Principal) -> Self {
        Self {
            subject: principal.subject.clone(),
            staff: principal.has_role(STAFF),
            admin: principal.has_role(ADMIN),
        }
    }

    fn sees(&self, p: &Payment) -> bool {
        p.visible_to(&self.subject, self.staff, self.admin)
    }

    /// The client secret pays; only the booking's customer gets it.
    fn view(&self, p: &Payment) -> PaymentView {
        let own = !self.subject.is_empty() && p.customer_id.as_deref() == Some(&self.subject);
        PaymentView::of(p, own)
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    /// A `pending_payment` booking of the caller's.
    booking_id: Uuid,
}

/// Starts paying for a booking: creates its Stripe PaymentIntent (manual
/// capture) and answers the `client_secret` to confirm it with (Stripe.js
/// `confirmCardPayment`). The booking is confirmed by Stripe's webhook once
/// the card is authorised, never by this call.
#[utoipa::path(post, operation_id = "createPayment", path = "/v1/payments", tag = "payments",
    request_body = CreateRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = ONE_PER_BOOKING)),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; pay with `client_secret`", body = PaymentView),
        (status = 200, description = "The booking's existing payment", body = PaymentView),
        (status = 404, response = ProblemResponse),
        (status = 409, response = ProblemResponse),
        (status = 503, response = ProblemResponse)
    )
)]
async fn create(
    principal: Principal,
    State(payments): State<Payments>,
    Json(request): Json<CreateRequest>,
) -> Result<Response, PaymentError> {
    let caller = Caller::new(&principal);
    let booking = payments
        .booking_for(
            request.booking_id,
            &caller.subject,
            caller.staff,
            caller.admin,
        )
        .await?;
    let existing = payments.inner.store.by_booking(booking.id).await?;
    if existing.is_none() {
        match booking.state {
            BookingState::PendingPayment => {}
            BookingState::Expired => return Err(PaymentError::HoldExpired),
            state => {
                return Err(PaymentError::Conflict(format!(
                    "the booking is {state}; only a pending_payment booking can be paid for"
                )));
            }
        }
    }
    let payment = payments.begin(&booking).await?;
    if payment.state == SagaState::Creating {
        return Err(PaymentError::StripeUnavailable(
            payment
                .last_error
                .unwrap_or_else(|| "the payment is being created".into()),
        ));
    }
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(caller.view(&payment))).into_response())
}

#[utoipa::path(get, operation_id = "getPayment", path = "/v1/payments/{id}", tag = "payments",
    params(("id" = Uuid, Path, description = "Payment id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The payment", body = PaymentView),
        (status = 404, response = ProblemResponse)
    )
)]
async fn get_one(
    principal: Principal,
    State(payments): State<Payments>,
    Path(id): Path<Uuid>,
) -> Result<Json<PaymentView>, PaymentError> {
    let caller = Caller::new(&principal);
    let payment = payments.visible(id, &caller).await?;
    Ok(Json(caller.view(&payment)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// The booking whose payment to show.
    booking_id: Uuid,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = PaymentPage)]
struct Page {
    items: Vec<PaymentView>,
}

/// The payment of a booking (none or one).
#[utoipa::path(get, operation_id = "listPayments", path = "/v1/payments", tag = "payments",
    params(ListParams),
    security(("bearer" = [])),
    responses((status = 200, description = "The booking's payment, if any", body = Page))
)]
async fn list(
    principal: Principal,
    State(payments): State<Payments>,
    Query(params): Query<ListParams>,
) -> Result<Json<Page>, PaymentError> {
    let caller = Caller::new(&principal);
    let found = payments.inner.store.by_booking(params.booking_id).await?;
    let items = found
        .filter(|p| caller.sees(p))
        .map(|p| caller.view(&p))
        .into_iter()
        .collect();
    Ok(Json(Page { items }))
}

/// Looks at the payment at Stripe now ("I have paid"), instead of waiting
/// for the webhook. It triggers the same verification the webhook does.
#[utoipa::path(post, operation_id = "syncPayment", path = "/v1/payments/{id}/sync", tag = "payments",
    params(("id" = Uuid, Path, description = "Payment id"), ("Idempotency-Key" = Option<String>, Header, description = "Accepted, not needed: looking again is always safe.")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The payment after looking", body = PaymentView),
        (status = 404, response = ProblemResponse)
    )
)]
async fn sync(
    principal: Principal,
    State(payments): State<Payments>,
    Path(id): Path<Uuid>,
) -> Result<Json<PaymentView>, PaymentError> {
    let caller = Caller::new(&principal);
    let payment = payments.visible(id, &caller).await?;
    let payment = match &payment.intent_id {
        Some(intent) => payments.look_again(intent, id).await?.unwrap_or(payment),
        None => payments.drive(id, None).await?.unwrap_or(payment),
    };
    Ok(Json(caller.view(&payment)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RefundRequest {
    /// Minor units; default: everything still kept.
    #[serde(default)]
    amount_minor: Option<i64>,
}

/// Refunds (more of) a cancelled booking's payment beyond its cancellation
/// policy: staff managing the booking's resource, or an admin.
#[utoipa::path(post, operation_id = "refundPayment", path = "/v1/payments/{id}/refunds", tag = "payments",
    request_body = RefundRequest,
    params(("id" = Uuid, Path, description = "Payment id"), ("Idempotency-Key" = String, Header, description = "Required: one refund per key; the same key with another amount answers 422.")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The payment, refunding or refunded", body = PaymentView),
        (status = 403, response = ProblemResponse),
        (status = 404, response = ProblemResponse),
        (status = 409, response = ProblemResponse)
    )
)]
async fn refund(
    principal: Principal,
    State(payments): State<Payments>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    Json(request): Json<RefundRequest>,
) -> Result<Json<PaymentView>, PaymentError> {
    let caller = Caller::new(&principal);
    let key = idempotency_key(&headers)?.ok_or(PaymentError::MissingIdempotencyKey)?;
    let payment = payments.visible(id, &caller).await?;
    let manages = caller.admin
        || (caller.staff && payment.resource_owner_id.as_deref() == Some(caller.subject.as_str()));
    if !manages {
        return Err(PaymentError::Forbidden(
            "refunds are for the resource's staff or an admin".into(),
        ));
    }
    let kept = payment.captured_minor - payment.refunded_minor;
    if request.amount_minor.is_some_and(|a| a <= 0) {
        return Err(PaymentError::Invalid(
            "amount_minor must be at least 1".into(),
        ));
    }
    let store = &payments.inner.store;
    match store
        .refund_request(id, &key, &caller.subject, request.amount_minor, now())
        .await?
    {
        // The same request again: it was done (or is being done) once.
        Some(first) if first == request.amount_minor => {
            return Ok(Json(caller.view(&payment)));
        }
        Some(_) => return Err(PaymentError::IdempotencyKeyReused),
        None => {}
    }
    let amount = request.amount_minor.unwrap_or(kept);
    let refusal = if payment.state != SagaState::Refunded {
        Some(format!(
            "the payment is {}; only a cancelled booking's payment can be refunded",
            payment.state
        ))
    } else if amount <= 0 || amount > kept {
        Some(format!(
            "amount_minor must be between 1 and {kept}, what is still kept"
        ))
    } else {
        None
    };
    if let Some(refusal) = refusal {
        // Refused: nothing done, the key may be used again.
        store.forget_refund_request(id, &key).await?;
        return Err(PaymentError::Conflict(refusal));
    }
    let next = payments
        .observe(
            id,
            Observation::StaffRefund {
                amount_minor: amount,
            },
            &format!("refund by {}", caller.subject),
        )
        .await?
        .unwrap_or(payment);
    Ok(Json(caller.view(&next)))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = PaymentSteps)]
struct Steps {
    items: Vec<Step>,
}

/// The payment's history: every state it went through and why.
#[utoipa::path(get, operation_id = "getPaymentSteps", path = "/v1/payments/{id}/steps", tag = "payments",
    params(("id" = Uuid, Path, description = "Payment id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Its steps, oldest first", body = Steps),
        (status = 404, response = ProblemResponse)
    )
)]
async fn steps(
    principal: Principal,
    State(payments): State<Payments>,
    Path(id): Path<Uuid>,
) -> Result<Json<Steps>, PaymentError> {
    let caller = Caller::new(&principal);
    payments.visible(id, &caller).await?;
    Ok(Json(Steps {
        items: payments.inner.store.steps(id).await?,
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Received {
    received: bool,
    /// The event was already stored (Stripe sent it again).
    duplicate: bool,
}

/// Stripe's webhook endpoint. The `Stripe-Signature` header is verified
/// over the raw body (any `v1` against any configured secret, within five
/// minutes); the event is stored once by id and only then answered 200. It
/// only wakes the payment: the intent is fetched from Stripe itself.
#[utoipa::path(post, operation_id = "stripeWebhook", path = "/v1/webhooks/stripe", tag = "webhooks",
    request_body(content = String, content_type = "application/json", description = "A Stripe event, as Stripe signed it"),
    params(("Stripe-Signature" = String, Header, description = "t=<unix>,v1=<hex HMAC-SHA256>")),
    responses(
        (status = 200, description = "Stored", body = Received),
        (status = 400, response = ProblemResponse)
    )
)]
async fn stripe_webhook(
    State(payments): State<Payments>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Received>, PaymentError> {
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let new = payments.receive_webhook(signature, &body).await?;
    Ok(Json(Received {
        received: true,
        duplicate: !new,
    }))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, PaymentError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| PaymentError::BadRequest("Idempotency-Key must be visible ASCII".into()))?;
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(PaymentError::BadRequest(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LEN} characters"
        )));
    }
    Ok(Some(key.to_owned()))
}

impl Payments {
    /// The booking, if the caller may see it (else "not found", as for an
    /// unknown booking).
    async fn booking_for(
        &self,
        id: Uuid,
        subject: &str,
        staff: bool,
        admin: bool,
    ) -> Result<berth_settlement::PayableBooking, PaymentError> {
        let booking = self.inner.settlement.booking(id).await?;
        if !booking.visible_to(subject, staff, admin) {
            return Err(PaymentError::booking_not_found(id));
        }
        if booking.price_minor <= 0 {
            return Err(PaymentError::Conflict(
                "the booking is free: there is nothing to pay".into(),
            ));
        }
        Ok(booking)
    }

    async fn visible(&self, id: Uuid, caller: &Caller) -> Result<Payment, PaymentError> {
        match self.inner.store.get(id).await? {
            Some(p) if caller.sees(&p) => Ok(p),
            _ => Err(PaymentError::payment_not_found(id)),
        }
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
                "GET /v1/payments",
                "GET /v1/payments/{id}",
                "GET /v1/payments/{id}/steps",
                "POST /v1/payments",
                "POST /v1/payments/{id}/refunds",
                "POST /v1/payments/{id}/sync",
                "POST /v1/webhooks/stripe",
            ],
        );
        assert!(defects.is_empty(), "{defects:#?}");
    }
}
