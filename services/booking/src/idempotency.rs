//! `Idempotency-Key` on every POST, with Stripe's semantics:
//!
//! - the key is reserved (`in_flight`) before the handler runs; a concurrent
//!   request with the same key gets 409;
//! - the handler's response (status, body, `Location`) is stored with a
//!   fingerprint of method + path + canonical JSON body; a retry with the same
//!   request replays it, a different request with the same key gets 422;
//! - responses that decided nothing (the request was not understood, or the
//!   server failed) free the key, so the client can fix or retry the request;
//! - a key reserved by a request that died is taken over after
//!   `idempotency_lock_timeout`; keys are forgotten after `idempotency_ttl`.
//!
//! A handler whose write can carry the response (creating a booking) stores
//! it in the same transaction as the write ([`HeldKey`]); the guard then
//! checks that the response it sends is the one stored, and stores it
//! itself otherwise.
//!
//! A stored response records the booking it concerns (the `{id}` of
//! `/v1/bookings/{id}/…`, or the created booking), so erasing that booking's
//! customer can scrub the stored body (see `Store::anonymise_customer`).
//!
//! Keys are scoped per principal: the key is stored with the subject of the
//! authenticated caller, so another caller reusing the same key neither gets
//! the first caller's response replayed nor a 409/422 caused by it. The
//! guard runs inside the bearer-verification layer; a request without a
//! principal is refused (401) before any key is reserved.

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use berth_runtime::auth::{AuthError, Principal};
use chrono::{DateTime, Utc};
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::Booking;
use crate::error::{BookingError, NotReplayable};
use crate::model::BookingRecord;
use crate::model::{before, now};
use crate::store::{KeyAnswer, KeyClaim, KeyTimes, Store, StoredResponse};

pub(crate) const HEADER: &str = "idempotency-key";
const REPLAYED: &str = "idempotent-replayed";
const MAX_KEY_LEN: usize = 255;
const BOOKINGS_PATH: &str = "/v1/bookings/";
/// Response headers worth replaying.
const KEPT_HEADERS: [HeaderName; 2] = [header::CONTENT_TYPE, header::LOCATION];

tokio::task_local! {
    /// The key the request being handled holds (set around the handler).
    static HELD: Arc<HeldKey>;
}

/// The idempotency key of the request being handled, for a handler that
/// stores its response in the same transaction as its write.
pub(crate) struct HeldKey {
    subject: String,
    key: String,
    lock: DateTime<Utc>,
    /// The booking named by the request path, if any.
    booking: Option<Uuid>,
    /// What the handler stored, for the guard to compare with what it sends.
    stored: Mutex<Option<StoredResponse>>,
}

impl HeldKey {
    /// The key of the request this task is handling, if it is guarded.
    pub(crate) fn current() -> Option<Arc<HeldKey>> {
        HELD.try_with(Arc::clone).ok()
    }

    /// What `POST /v1/bookings` answers for `booking` (201, `Location`, the
    /// booking as JSON), as it is stored for replay. If the handler ever
    /// answers differently, the guard notices and stores its real response.
    /// `None` if the booking cannot be encoded (the guard then stores
    /// whatever the handler answers, as for any other request).
    pub(crate) fn created(booking: &BookingRecord) -> Option<StoredResponse> {
        Some(StoredResponse {
            status: StatusCode::CREATED.as_u16(),
            headers: vec![
                (
                    header::CONTENT_TYPE.as_str().to_owned(),
                    "application/json".to_owned(),
                ),
                (
                    header::LOCATION.as_str().to_owned(),
                    format!("/v1/bookings/{}", booking.id),
                ),
            ],
            body: serde_json::to_vec(booking).ok()?,
            booking_id: Some(booking.id),
        })
    }

    /// The key and `response`, for the store to write with the handler's
    /// state change.
    pub(crate) fn answer<'a>(&'a self, response: &'a StoredResponse) -> KeyAnswer<'a> {
        KeyAnswer {
            subject: &self.subject,
            key: &self.key,
            lock: self.lock,
            response,
        }
    }

    /// Records that `response` was stored under the key (call after commit).
    pub(crate) fn stored(&self, response: StoredResponse) {
        *self.stored.lock().unwrap_or_else(|p| p.into_inner()) = Some(response);
    }

    fn take_stored(&self) -> Option<StoredResponse> {
        self.stored.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Middleware wrapping the service's routes; only POSTs are guarded.
pub(crate) async fn guard(
    State(booking): State<Booking>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(subject) = request
        .extensions()
        .get::<Principal>()
        .map(|p| p.subject.clone())
    else {
        return AuthError::Missing.into_response();
    };
    match guarded(booking, subject, request, next).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn guarded(
    booking: Booking,
    subject: String,
    request: Request,
    next: Next,
) -> Result<Response, BookingError> {
    let key = idempotency_key(&request)?;
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, booking.inner.config.max_body_bytes)
        .await
        .map_err(|_| BookingError::TooLarge)?;
    let fingerprint = fingerprint(&parts.method, parts.uri.path(), &body);
    let booking_id = booking_in(parts.uri.path());
    let config = &booking.inner.config;
    let now = now();
    let times = KeyTimes {
        now,
        stale_before: before(now, config.idempotency_lock_timeout),
        expired_before: before(now, config.idempotency_ttl),
    };
    let store = booking.inner.store.clone();
    match store.claim_key(&subject, &key, &fingerprint, times).await? {
        KeyClaim::Started => {}
        KeyClaim::Replay(stored) => return Ok(replay(stored)),
        KeyClaim::Mismatch => return Err(BookingError::IdempotencyKeyReused),
        KeyClaim::InFlight => return Err(BookingError::IdempotencyInFlight),
    }
    let request = Request::from_parts(parts, Body::from(body));
    // Run to completion even if the client goes away, so the outcome is
    // recorded and a retry replays it instead of waiting for the lock timeout.
    let task_store = store.clone();
    let held = Arc::new(HeldKey {
        subject: subject.clone(),
        key: key.clone(),
        lock: now,
        booking: booking_id,
        stored: Mutex::new(None),
    });
    let task = tokio::spawn(HELD.scope(held.clone(), async move {
        let response = next.run(request).await;
        record(&*task_store, &held, response).await
    }));
    match task.await {
        Ok(response) => Ok(response),
        Err(join) => {
            let _ = store.release_key(&subject, &key, now).await;
            Err(BookingError::Internal(format!(
                "request handler failed: {join}"
            )))
        }
    }
}

fn idempotency_key(request: &Request) -> Result<String, BookingError> {
    let value = request
        .headers()
        .get(HEADER)
        .ok_or(BookingError::MissingIdempotencyKey)?;
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN)
        .ok_or_else(|| {
            BookingError::BadRequest(format!(
                "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
            ))
        })?;
    Ok(key.to_owned())
}

/// Stores the handler's response under the key, or frees the key if the
/// response decided nothing. A response the handler already stored with its
/// write is not written again.
async fn record(store: &dyn Store, held: &HeldKey, response: Response) -> Response {
    let (subject, key, lock) = (held.subject.as_str(), held.key.as_str(), held.lock);
    let already = held.take_stored();
    let (parts, body) = response.into_parts();
    let body = match to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(error) => {
            let _ = store.release_key(subject, key, lock).await;
            return BookingError::Internal(format!("reading the response: {error}"))
                .into_response();
        }
    };
    let status = parts.status;
    let replayable = parts.extensions.get::<NotReplayable>().is_none()
        && (status.is_success() || matches!(status, StatusCode::NOT_FOUND | StatusCode::CONFLICT));
    let outcome = if replayable {
        let headers: Vec<(String, String)> = KEPT_HEADERS
            .iter()
            .filter_map(|name| {
                let value = parts.headers.get(name)?.to_str().ok()?;
                Some((name.as_str().to_owned(), value.to_owned()))
            })
            .collect();
        // A created booking is named by its `Location`.
        let booking_id = held.booking.or_else(|| {
            headers
                .iter()
                .find(|(name, _)| name == header::LOCATION.as_str())
                .and_then(|(_, location)| booking_in(location))
        });
        let stored = StoredResponse {
            status: status.as_u16(),
            headers,
            body: body.to_vec(),
            booking_id,
        };
        if already.as_ref() == Some(&stored) {
            Ok(())
        } else {
            store.complete_key(subject, key, lock, &stored).await
        }
    } else if already.is_some() {
        // The handler's write committed with its answer; that stays the
        // key's outcome.
        Ok(())
    } else {
        store.release_key(subject, key, lock).await
    };
    if let Err(error) = outcome {
        // The operation itself is done; only its replay record is missing.
        // The key stays in flight until the lock timeout.
        tracing::error!(%error, "cannot record the idempotent response");
    }
    Response::from_parts(parts, Body::from(body))
}

/// The `{id}` of `/v1/bookings/{id}` and `/v1/bookings/{id}/…`.
fn booking_in(path: &str) -> Option<Uuid> {
    let rest = path.strip_prefix(BOOKINGS_PATH)?;
    let id = rest.split_once('/').map_or(rest, |(id, _)| id);
    Uuid::parse_str(id).ok()
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = (status, stored.body).into_response();
    let headers = response.headers_mut();
    for (name, value) in stored.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            headers.insert(name, value);
        }
    }
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

/// Same request ⇔ same method, path and JSON value (key order and
/// whitespace do not matter); a non-JSON body is compared byte for byte.
pub(crate) fn fingerprint(method: &Method, path: &str, body: &Bytes) -> String {
    let canonical = match serde_json::from_slice::<Value>(body) {
        Ok(value) => canonical_json(&value).into_bytes(),
        Err(_) => body.to_vec(),
    };
    let mut hash = Sha256::new();
    hash.update(method.as_str().as_bytes());
    hash.update(b"\n");
    hash.update(path.as_bytes());
    hash.update(b"\n");
    hash.update(&canonical);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(64);
    for byte in hash.finalize() {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    hex
}

/// JSON with object keys sorted, whatever `serde_json` features are enabled.
fn canonical_json(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let inner: Vec<String> = entries
                .into_iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), canonical_json(v)))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(canonical_json).collect();
            format!("[{}]", inner.join(","))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_ignores_key_order_and_whitespace_but_not_path() {
        let a = Bytes::from_static(br#"{"a":1,"b":{"y":2,"x":[1,2]}}"#);
        let b = Bytes::from_static(b"{ \"b\": {\"x\": [1, 2], \"y\": 2}, \"a\": 1 }");
        let post = Method::POST;
        assert_eq!(fingerprint(&post, "/p", &a), fingerprint(&post, "/p", &b));
        assert_ne!(fingerprint(&post, "/p", &a), fingerprint(&post, "/q", &a));
        let c = Bytes::from_static(br#"{"a":2,"b":{"y":2,"x":[1,2]}}"#);
        assert_ne!(fingerprint(&post, "/p", &a), fingerprint(&post, "/p", &c));
    }

    #[test]
    fn booking_id_is_read_from_booking_paths_only() {
        let id = Uuid::now_v7();
        for path in [
            format!("/v1/bookings/{id}"),
            format!("/v1/bookings/{id}/confirm"),
            format!("/v1/bookings/{id}/reschedule"),
        ] {
            assert_eq!(booking_in(&path), Some(id), "{path}");
        }
        for path in [
            "/v1/bookings".to_owned(),
            "/v1/bookings/".to_owned(),
            "/v1/bookings/not-a-uuid/confirm".to_owned(),
            format!("/v2/bookings/{id}/confirm"),
        ] {
            assert_eq!(booking_in(&path), None, "{path}");
        }
    }
}
