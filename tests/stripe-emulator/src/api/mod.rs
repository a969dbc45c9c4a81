//! The Stripe API surface: routing, then one pipeline for every call
//! (auth → parameters → idempotency → faults → operation → saved answer).

pub(crate) mod auth;
pub(crate) mod errors;
mod events;
pub(crate) mod form;
mod idempotency;
pub(crate) mod intents;
mod list;
mod refunds;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;

use self::auth::KeyKind;
use self::errors::ApiError;
use self::form::Params;
use self::idempotency::Reservation;
use crate::faults::Injected;
use crate::model::API_VERSION;
use crate::state::{Fingerprint, Origin, Shared, State};

/// One Stripe operation: runs under the state lock, all or nothing.
pub(crate) type Op = fn(&mut State, &Ctx, &Params) -> Result<Value, ApiError>;

/// What an operation knows about its request.
pub(crate) struct Ctx {
    pub origin: Origin,
    pub key: KeyKind,
    pub path: String,
}

impl Ctx {
    /// The object id in `/v1/<collection>/<id>/...`.
    pub(crate) fn id(&self) -> &str {
        self.path.split('/').nth(3).unwrap_or_default()
    }
}

/// Whether a publishable key may make the call (Stripe.js's confirm and
/// retrieve, with the client secret).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keys {
    SecretOnly,
    ClientToo,
}

macro_rules! op {
    ($op:path) => {
        op!($op, Keys::SecretOnly)
    };
    ($op:path, $keys:expr) => {
        move |AxState(shared): AxState<Arc<Shared>>,
              method: Method,
              uri: Uri,
              headers: HeaderMap,
              body: Bytes| async move { call(shared, method, uri, headers, body, $op, $keys).await }
    };
}

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/v1/payment_intents",
            post(op!(intents::create)).get(op!(intents::list)),
        )
        .route("/v1/payment_intents/search", get(op!(intents::search)))
        .route(
            "/v1/payment_intents/{id}",
            get(op!(intents::retrieve, Keys::ClientToo)).post(op!(intents::update)),
        )
        .route(
            "/v1/payment_intents/{id}/confirm",
            post(op!(intents::confirm, Keys::ClientToo)),
        )
        .route(
            "/v1/payment_intents/{id}/capture",
            post(op!(intents::capture)),
        )
        .route(
            "/v1/payment_intents/{id}/cancel",
            post(op!(intents::cancel)),
        )
        .route(
            "/v1/refunds",
            post(op!(refunds::create)).get(op!(refunds::list)),
        )
        .route("/v1/refunds/{id}", get(op!(refunds::retrieve)))
        .route("/v1/events", get(op!(events::list)))
        .route("/v1/events/{id}", get(op!(events::retrieve)))
}

/// Unknown URLs answer as Stripe does.
pub(crate) async fn unknown(method: Method, uri: Uri) -> Response {
    let e = ApiError::UnknownUrl {
        method: method.to_string(),
        path: uri.path().to_owned(),
    };
    reply(e.status().as_u16(), &e.body(), &Headers::default())
}

#[derive(Default)]
struct Headers {
    request_id: String,
    idempotency_key: Option<String>,
    replayed_from: Option<String>,
}

async fn call(
    shared: Arc<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    op: Op,
    keys: Keys,
) -> Response {
    let path = uri.path().to_owned();
    let request_id = shared.lock().new_id("req");
    let idempotency_key = (method == Method::POST)
        .then(|| headers.get("idempotency-key").and_then(|v| v.to_str().ok()))
        .flatten()
        .map(str::to_owned);
    let mut out = Headers {
        request_id: request_id.clone(),
        idempotency_key,
        replayed_from: None,
    };
    let fail = |e: ApiError, out: &Headers| reply(e.status().as_u16(), &e.body(), out);

    let (key, api_key) = match auth::authenticate(&shared, &headers) {
        Ok(k) => k,
        Err(e) => return fail(e, &out),
    };
    if key == KeyKind::Publishable && keys == Keys::SecretOnly {
        return fail(ApiError::SecretKeyRequired, &out);
    }
    let raw = if method == Method::GET {
        uri.query().unwrap_or_default().as_bytes()
    } else {
        &body
    };
    let params = match Params::parse(raw) {
        Ok(p) => p,
        Err(e) => return fail(e, &out),
    };

    // Hold the key before anything happens, so a concurrent retry sees it in flight.
    let scope = out.idempotency_key.clone().map(|k| (api_key, k));
    if let Some(scope) = &scope {
        let fingerprint = Fingerprint {
            method: method.to_string(),
            path: path.clone(),
            params: params.clone(),
        };
        match idempotency::reserve(&mut shared.lock(), scope, fingerprint) {
            Ok(Reservation::Fresh) => {}
            Ok(Reservation::Replay {
                status,
                body,
                request_id,
            }) => {
                out.replayed_from = Some(request_id);
                return reply(status, &body, &out);
            }
            Err(e) => return fail(e, &out),
        }
    }

    // Like Stripe, a started request runs to the end even if the caller
    // hangs up, so its key never stays in flight for good.
    let run = Run {
        shared,
        method: method.to_string(),
        path,
        params,
        op,
        key,
        scope,
        request_id,
        idempotency_key: out.idempotency_key.clone(),
    };
    match tokio::spawn(run.execute()).await {
        Ok((status, body)) => reply(status, &body, &out),
        Err(_) => fail(ApiError::Injected(500), &out),
    }
}

/// The part of a call after its idempotency key is held.
struct Run {
    shared: Arc<Shared>,
    method: String,
    path: String,
    params: Params,
    op: Op,
    key: KeyKind,
    scope: Option<idempotency::Scope>,
    request_id: String,
    idempotency_key: Option<String>,
}

impl Run {
    async fn execute(self) -> (u16, Value) {
        let latency = self.shared.lock().faults.api_latency_ms;
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        let mut state = self.shared.lock();
        let injected = if state.draw_error() {
            Injected::Before(500)
        } else {
            state.faults.take_fail_next(&self.method, &self.path)
        };
        if let Injected::Before(status) = injected {
            if let Some(scope) = &self.scope {
                idempotency::release(&mut state, scope);
            }
            let e = ApiError::Injected(status);
            return (e.status().as_u16(), e.body());
        }
        let ctx = Ctx {
            origin: Origin {
                request_id: Some(self.request_id.clone()),
                idempotency_key: self.idempotency_key.clone(),
            },
            key: self.key,
            path: self.path.clone(),
        };
        let (status, body, saved) = match (self.op)(&mut state, &ctx, &self.params) {
            Ok(v) => (200, v, true),
            Err(e) => (e.status().as_u16(), e.body(), e.saved()),
        };
        // After the effect: the failure is what the key remembers.
        let (status, body, saved) = match injected {
            Injected::After(s) => (s, ApiError::Injected(s).body(), true),
            _ => (status, body, saved),
        };
        if let Some(scope) = &self.scope {
            if saved {
                idempotency::save(
                    &mut state,
                    scope,
                    status,
                    body.clone(),
                    self.request_id.clone(),
                );
            } else {
                idempotency::release(&mut state, scope);
            }
        }
        drop(state);
        self.shared.wake.notify_one();
        (status, body)
    }
}

fn reply(status: u16, body: &Value, h: &Headers) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut res = (status, axum::Json(body)).into_response();
    let headers = res.headers_mut();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    set("stripe-version", API_VERSION);
    if !h.request_id.is_empty() {
        set("request-id", &h.request_id);
    }
    if let Some(k) = &h.idempotency_key {
        set("idempotency-key", k);
    }
    if let Some(original) = &h.replayed_from {
        set("idempotent-replayed", "true");
        set("original-request", original);
    }
    res
}
