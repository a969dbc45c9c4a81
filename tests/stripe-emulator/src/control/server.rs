//! Control endpoints: faults, expiry, 3-D Secure outcomes, webhook
//! redelivery/flush/endpoints, the delivery log and the state snapshot.

use std::sync::Arc;

use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::types::{ActionBody, ActionOutcome, EndpointsBody, Queued};
use crate::Endpoint;
use crate::api::errors::ApiError;
use crate::api::intents::{self, load, unexpected};
use crate::faults::Faults;
use crate::model::Status;
use crate::state::{Origin, Shared};
use crate::webhooks;

type Shared_ = AxState<Arc<Shared>>;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/_emulator/faults",
            get(faults).post(set_faults).delete(clear_faults),
        )
        .route("/_emulator/payment_intents/{id}/expire", post(expire))
        .route("/_emulator/payment_intents/{id}/action", post(action))
        .route("/_emulator/events/{id}/redeliver", post(redeliver))
        .route("/_emulator/webhooks", get(endpoints).post(set_endpoints))
        .route("/_emulator/webhooks/flush", post(flush))
        .route("/_emulator/deliveries", get(deliveries))
        .route("/_emulator/state", get(state))
}

fn error(e: &ApiError) -> Response {
    (e.status(), Json(e.body())).into_response()
}

async fn faults(AxState(shared): Shared_) -> Json<Faults> {
    Json(shared.lock().faults.clone())
}

async fn set_faults(AxState(shared): Shared_, Json(faults): Json<Faults>) -> Json<Faults> {
    shared.lock().faults = faults.clone();
    // `hold` may have been lifted: let the worker look again.
    shared.wake.notify_one();
    Json(faults)
}

async fn clear_faults(AxState(shared): Shared_) -> StatusCode {
    shared.lock().faults = Faults::default();
    shared.wake.notify_one();
    StatusCode::NO_CONTENT
}

/// An uncaptured authorisation lapses: canceled, reason `automatic`.
async fn expire(AxState(shared): Shared_, Path(id): Path<String>) -> Response {
    let mut st = shared.lock();
    let result = load(&st, &id).and_then(|intent| {
        if intent.status == Status::RequiresCapture {
            Ok(())
        } else {
            Err(unexpected(
                intent,
                format!(
                    "Only a PaymentIntent with status requires_capture can expire; this one has status {}.",
                    intent.status.as_str()
                ),
            ))
        }
    });
    let response = match result {
        Ok(()) => Json(intents::cancel_now(
            &mut st,
            &Origin::default(),
            &id,
            Some("automatic".into()),
        ))
        .into_response(),
        Err(e) => error(&e),
    };
    drop(st);
    shared.wake.notify_one();
    response
}

/// The customer completes (or fails) the 3-D Secure challenge.
async fn action(
    AxState(shared): Shared_,
    Path(id): Path<String>,
    Json(body): Json<ActionBody>,
) -> Response {
    let mut st = shared.lock();
    let result = load(&st, &id).and_then(|intent| match (intent.status, &intent.payment_method) {
        (Status::RequiresAction, Some(pm)) => Ok(pm.clone()),
        _ => Err(unexpected(
            intent,
            format!(
                "Only a PaymentIntent with status requires_action takes an action outcome; this one has status {}.",
                intent.status.as_str()
            ),
        )),
    });
    let origin = Origin::default();
    let response = match result {
        Err(e) => error(&e),
        Ok(pm) => match body.outcome {
            ActionOutcome::Succeed => {
                Json(intents::succeed(&mut st, &origin, &id, &pm)).into_response()
            }
            ActionOutcome::Fail => {
                let e = intents::fail(
                    &mut st,
                    &origin,
                    &id,
                    &pm,
                    "payment_intent_authentication_failure",
                    None,
                    "The provided PaymentMethod has failed authentication. You can provide payment_method_data or a new PaymentMethod to attempt to fulfill this PaymentIntent again.",
                );
                match e {
                    ApiError::Card { payment_intent, .. } => Json(payment_intent).into_response(),
                    other => error(&other),
                }
            }
        },
    };
    drop(st);
    shared.wake.notify_one();
    response
}

async fn redeliver(AxState(shared): Shared_, Path(id): Path<String>) -> Response {
    let queued = webhooks::redeliver(&mut shared.lock(), &id);
    shared.wake.notify_one();
    match queued {
        Some(queued) => Json(Queued { queued }).into_response(),
        None => error(&ApiError::missing("event", &id, None)),
    }
}

async fn flush(AxState(shared): Shared_) -> Json<Queued> {
    let queued = webhooks::flush(&mut shared.lock());
    shared.wake.notify_one();
    Json(Queued { queued })
}

async fn endpoints(AxState(shared): Shared_) -> Json<serde_json::Value> {
    let st = shared.lock();
    let list: Vec<Endpoint> = st
        .endpoints
        .iter()
        .map(|e| Endpoint {
            url: e.url.clone(),
            secrets: e.secrets.clone(),
        })
        .collect();
    Json(json!({ "endpoints": list }))
}

/// Replaces the endpoints; events from now on go to these.
async fn set_endpoints(AxState(shared): Shared_, Json(body): Json<EndpointsBody>) -> StatusCode {
    shared.lock().set_endpoints(body.endpoints);
    StatusCode::NO_CONTENT
}

async fn deliveries(AxState(shared): Shared_) -> Json<Vec<super::types::DeliveryRecord>> {
    Json(shared.lock().deliveries.clone())
}

async fn state(AxState(shared): Shared_) -> Json<super::types::StateSnapshot> {
    Json(shared.lock().snapshot())
}
