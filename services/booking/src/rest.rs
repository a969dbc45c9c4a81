//! REST handlers. Input is validated before anything is written; every
//! error is problem+json. Every route needs a [`Principal`] (401 without
//! one); what it may see is decided in `access`.

use axum::Router;
use axum::extract::State;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use berth_runtime::auth::{Principal, Verifier};
use berth_runtime::openapi::ProblemResponse;
use berth_runtime::{Json, Path, Query};
use chrono::{DateTime, SecondsFormat, Utc};
use http::{StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::access::Caller;
use crate::error::BookingError;
use crate::model::{BookingRecord, BookingStatus, Customer, micros, now};
use crate::service::NewBooking;
use crate::store::ListFilter;
use crate::{Booking, idempotency};

/// How every mutating call treats its `Idempotency-Key` header (OpenAPI).
const IDEMPOTENCY_KEY: &str = "Required. The same key with the same body replays the first \
    answer; with another body 422; while the first is in flight 409. Kept 24 hours.";

const MAX_SEATS: u32 = 1000;
const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 100;
const MAX_NAME_CHARS: usize = 200;
const MAX_EMAIL_LEN: usize = 254;

/// The REST routes with their OpenAPI operations: the document is collected
/// from exactly the handlers that are routed.
fn api() -> OpenApiRouter<Booking> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get_one))
        .routes(routes!(confirm))
        .routes(routes!(cancel))
        .routes(routes!(reschedule))
}

/// The booking API's OpenAPI document.
pub fn openapi() -> OpenApi {
    berth_runtime::openapi::finish(api().into_openapi(), "Berth booking API")
}

pub(crate) fn routes(booking: Booking, verifier: &Verifier) -> Router {
    api()
        .split_for_parts()
        .0
        .layer(from_fn_with_state(booking.clone(), idempotency::guard))
        // Outermost, so the idempotency guard sees the principal and scopes
        // keys by it.
        .layer(verifier.layer())
        .with_state(booking)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    resource_id: Uuid,
    appointment_type_id: Uuid,
    /// A slot start as listed by the slots endpoint.
    start: DateTime<Utc>,
    /// Seats to take (default 1).
    #[serde(default = "one_seat")]
    #[schema(minimum = 1, maximum = 1000, default = 1)]
    seats: u32,
    #[serde(default)]
    customer: Option<Customer>,
}

fn one_seat() -> u32 {
    1
}

impl CreateRequest {
    fn validate(self, caller: &Principal) -> Result<NewBooking, BookingError> {
        if !(1..=MAX_SEATS).contains(&self.seats) {
            return Err(BookingError::Invalid(format!(
                "seats must be between 1 and {MAX_SEATS}"
            )));
        }
        Ok(NewBooking {
            customer_id: caller.subject.clone(),
            resource_id: self.resource_id,
            appointment_type_id: self.appointment_type_id,
            start: micros(self.start),
            seats: self.seats,
            customer: self
                .customer
                .map(|c| validate_customer(c, caller.phone_number.as_deref()))
                .transpose()?
                .flatten(),
        })
    }
}

/// `verified_phone`: the caller's phone as their access token proves it;
/// texts go only there, so nobody can have texts sent to someone else.
fn validate_customer(
    customer: Customer,
    verified_phone: Option<&str>,
) -> Result<Option<Customer>, BookingError> {
    let name = customer.name.map(|n| n.trim().to_owned());
    if let Some(name) = &name {
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
            return Err(BookingError::Invalid(format!(
                "customer.name must be 1 to {MAX_NAME_CHARS} characters"
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(BookingError::Invalid(
                "customer.name must not contain control characters".into(),
            ));
        }
    }
    let email = customer.email.map(|e| e.trim().to_owned());
    if let Some(email) = &email
        && !plausible_email(email)
    {
        return Err(BookingError::Invalid(
            "customer.email is not an email address".into(),
        ));
    }
    let phone = match customer.phone {
        None => None,
        Some(given) => {
            let phone = berth_runtime::phone::e164(&given).ok_or_else(|| {
                BookingError::Invalid(
                    "customer.phone must be in E.164 form, e.g. +441632960961".into(),
                )
            })?;
            if verified_phone != Some(phone.as_str()) {
                return Err(BookingError::Invalid(
                    "customer.phone must be the verified phone of your account: \
                     sign in with it (POST /v1/auth/phone/start) to get texts"
                        .into(),
                ));
            }
            Some(phone)
        }
    };
    let locale = customer.locale.map(|l| normalize_locale(&l)).transpose()?;
    Ok(
        (name.is_some() || email.is_some() || phone.is_some() || locale.is_some()).then_some(
            Customer {
                name,
                email,
                phone,
                locale,
            },
        ),
    )
}

/// `de-de` or `de_DE` → `de-DE`; a language alone (`fr`) stays as it is.
fn normalize_locale(given: &str) -> Result<String, BookingError> {
    let refused = || {
        BookingError::Invalid(format!(
            "customer.locale {given:?} must be a language and an optional region, e.g. de-DE or fr"
        ))
    };
    let mut parts = given.trim().split(['-', '_']);
    let language = parts
        .next()
        .filter(|l| (2..=3).contains(&l.len()) && l.chars().all(|c| c.is_ascii_alphabetic()));
    let region = parts.next();
    let (Some(language), None) = (language, parts.next()) else {
        return Err(refused());
    };
    let language = language.to_ascii_lowercase();
    match region {
        None => Ok(language),
        Some(r) if r.len() == 2 && r.chars().all(|c| c.is_ascii_alphabetic()) => {
            Ok(format!("{language}-{}", r.to_ascii_uppercase()))
        }
        Some(_) => Err(refused()),
    }
}

/// Deliberately loose: one `@`, something before it, a dotted domain after.
fn plausible_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    email.len() <= MAX_EMAIL_LEN
        && !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Holds a slot: the booking starts as a hold (10 minutes unless paid for
/// sooner) and must be confirmed. Another holder of the slot answers 409.
#[utoipa::path(post, operation_id = "createBooking", path = "/v1/bookings", tag = "bookings", request_body = CreateRequest,
    params(("Idempotency-Key" = String, Header, description = IDEMPOTENCY_KEY)),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Held; `Location` names it", body = BookingRecord),
        (status = 403, response = ProblemResponse),
        (status = 404, response = ProblemResponse),
        (status = 409, response = ProblemResponse),
        (status = 422, response = ProblemResponse)
    )
)]
async fn create(
    principal: Principal,
    State(booking): State<Booking>,
    Json(request): Json<CreateRequest>,
) -> Result<Response, BookingError> {
    let caller = Caller::new(&principal);
    if !caller.may_create() {
        return Err(BookingError::Forbidden(
            "booking requires the customer, staff or admin role".into(),
        ));
    }
    let record = booking.create(request.validate(&principal)?).await?;
    let location = format!("/v1/bookings/{}", record.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(record),
    )
        .into_response())
}

#[utoipa::path(get, operation_id = "getBooking", path = "/v1/bookings/{id}", tag = "bookings",
    params(("id" = Uuid, Path, description = "Booking id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The booking", body = BookingRecord),
        (status = 404, response = ProblemResponse)
    )
)]
async fn get_one(
    principal: Principal,
    State(booking): State<Booking>,
    Path(id): Path<Uuid>,
) -> Result<Json<BookingRecord>, BookingError> {
    Ok(Json(booking.get(id, &Caller::new(&principal)).await?))
}

/// Confirms a held booking (after payment when the type has a price).
#[utoipa::path(post, operation_id = "confirmBooking", path = "/v1/bookings/{id}/confirm", tag = "bookings",
    params(("id" = Uuid, Path, description = "Booking id"), ("Idempotency-Key" = String, Header, description = IDEMPOTENCY_KEY)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The booking", body = BookingRecord),
        (status = 404, response = ProblemResponse),
        (status = 409, response = ProblemResponse),
        (status = 422, response = ProblemResponse)
    )
)]
async fn confirm(
    principal: Principal,
    State(booking): State<Booking>,
    Path(id): Path<Uuid>,
) -> Result<Json<BookingRecord>, BookingError> {
    Ok(Json(booking.confirm(id, &Caller::new(&principal)).await?))
}

/// Cancels a booking and releases its seats.
#[utoipa::path(post, operation_id = "cancelBooking", path = "/v1/bookings/{id}/cancel", tag = "bookings",
    params(("id" = Uuid, Path, description = "Booking id"), ("Idempotency-Key" = String, Header, description = IDEMPOTENCY_KEY)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The booking", body = BookingRecord),
        (status = 404, response = ProblemResponse),
        (status = 409, response = ProblemResponse),
        (status = 422, response = ProblemResponse)
    )
)]
async fn cancel(
    principal: Principal,
    State(booking): State<Booking>,
    Path(id): Path<Uuid>,
) -> Result<Json<BookingRecord>, BookingError> {
    Ok(Json(booking.cancel(id, &Caller::new(&principal)).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RescheduleRequest {
    /// The new slot start.
    start: DateTime<Utc>,
}

/// Moves a booking to another slot atomically: the new time is claimed
/// before the old one is released (never both, never neither).
#[utoipa::path(post, operation_id = "rescheduleBooking", path = "/v1/bookings/{id}/reschedule", tag = "bookings",
    request_body = RescheduleRequest,
    params(("id" = Uuid, Path, description = "Booking id"), ("Idempotency-Key" = String, Header, description = IDEMPOTENCY_KEY)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The booking", body = BookingRecord),
        (status = 404, response = ProblemResponse),
        (status = 409, response = ProblemResponse)
    )
)]
async fn reschedule(
    principal: Principal,
    State(booking): State<Booking>,
    Path(id): Path<Uuid>,
    Json(request): Json<RescheduleRequest>,
) -> Result<Json<BookingRecord>, BookingError> {
    let caller = Caller::new(&principal);
    Ok(Json(booking.reschedule(id, request.start, &caller).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListParams {
    resource_id: Option<Uuid>,
    status: Option<BookingStatus>,
    /// Bookings starting at or after this.
    from: Option<DateTime<Utc>>,
    /// Bookings starting before this.
    to: Option<DateTime<Utc>>,
    /// Page size, 1 to 100 (default 20).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = BookingPage)]
struct Page {
    items: Vec<BookingRecord>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// The caller's bookings (staff: on resources they manage; admins: all),
/// by start time, a page at a time.
#[utoipa::path(get, operation_id = "listBookings", path = "/v1/bookings", tag = "bookings",
    params(ListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of bookings", body = Page)
    )
)]
async fn list(
    principal: Principal,
    State(booking): State<Booking>,
    Query(params): Query<ListParams>,
) -> Result<Json<Page>, BookingError> {
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(BookingError::BadRequest(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    if let (Some(from), Some(to)) = (params.from, params.to)
        && from >= to
    {
        return Err(BookingError::BadRequest("from must be before to".into()));
    }
    let after = params.cursor.as_deref().map(decode_cursor).transpose()?;
    let filter = ListFilter {
        resource_id: params.resource_id,
        status: params.status,
        from: params.from,
        to: params.to,
        after,
        // One extra row tells whether there is a next page.
        limit: limit + 1,
        now: now(),
        visible: Caller::new(&principal).visibility(),
    };
    let mut items = booking.list(&filter).await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|last| encode_cursor(last.start, last.id))
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}

/// Opaque to clients: the (start, id) of the last row of the page.
fn encode_cursor(start: DateTime<Utc>, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!(
        "{}|{id}",
        start.to_rfc3339_opts(SecondsFormat::Micros, true)
    ))
}

fn decode_cursor(cursor: &str) -> Result<(DateTime<Utc>, Uuid), BookingError> {
    let bad = || BookingError::BadRequest("cursor is not one this API returned".into());
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (start, id) = text.split_once('|').ok_or_else(bad)?;
    let start = DateTime::parse_from_rfc3339(start).map_err(|_| bad())?;
    let id = Uuid::parse_str(id).map_err(|_| bad())?;
    Ok((start.with_timezone(&Utc), id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_document_is_complete() {
        let defects = berth_runtime::openapi::defects(
            &openapi(),
            &[
                "GET /v1/bookings",
                "GET /v1/bookings/{id}",
                "POST /v1/bookings",
                "POST /v1/bookings/{id}/cancel",
                "POST /v1/bookings/{id}/confirm",
                "POST /v1/bookings/{id}/reschedule",
            ],
        );
        assert!(defects.is_empty(), "{defects:#?}");
    }

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let start = micros(Utc::now());
        let id = Uuid::now_v7();
        let cursor = encode_cursor(start, id);
        assert_eq!(decode_cursor(&cursor).unwrap(), (start, id));
        for bad in [
            "",
            "!!!",
            "bm90IGEgY3Vyc29y",
            &URL_SAFE_NO_PAD.encode("x|y"),
        ] {
            assert!(matches!(
                decode_cursor(bad),
                Err(BookingError::BadRequest(_))
            ));
        }
    }

    #[test]
    fn emails_are_checked_loosely() {
        assert!(plausible_email("ada@example.org"));
        for bad in [
            "",
            "ada",
            "@example.org",
            "ada@",
            "ada@example",
            "a b@x.org",
            "a@b@c.org",
        ] {
            assert!(!plausible_email(bad), "{bad}");
        }
    }
}
