//! Stripe's idempotency: a key (per API key) saves the first answer once
//! the endpoint began executing; a retry with the same endpoint and
//! parameters replays it, anything else under the key is refused.

use serde_json::Value;
use tokio::time::Instant;

use super::errors::ApiError;
use crate::state::{Fingerprint, IDEMPOTENCY_TTL, Saved, State};

/// (API key, Idempotency-Key).
pub(crate) type Scope = (String, String);

pub(crate) enum Reservation {
    /// Nothing saved: this request runs, holding the key.
    Fresh,
    Replay {
        status: u16,
        body: Value,
        request_id: String,
    },
}

pub(crate) fn reserve(
    state: &mut State,
    scope: &Scope,
    fingerprint: Fingerprint,
) -> Result<Reservation, ApiError> {
    let now = Instant::now();
    state.idempotency.retain(|_, saved| match saved {
        Saved::Done { at, .. } => now.duration_since(*at) < IDEMPOTENCY_TTL,
        Saved::InFlight { .. } => true,
    });
    match state.idempotency.get(scope) {
        Some(Saved::InFlight { .. }) => Err(ApiError::IdempotencyInFlight(scope.1.clone())),
        Some(Saved::Done {
            fingerprint: first,
            status,
            body,
            request_id,
            ..
        }) => {
            if *first == fingerprint {
                Ok(Reservation::Replay {
                    status: *status,
                    body: body.clone(),
                    request_id: request_id.clone(),
                })
            } else {
                Err(ApiError::IdempotencyMismatch(scope.1.clone()))
            }
        }
        None => {
            state
                .idempotency
                .insert(scope.clone(), Saved::InFlight { fingerprint });
            Ok(Reservation::Fresh)
        }
    }
}

/// The request ended without a result worth saving: the key is free again.
pub(crate) fn release(state: &mut State, scope: &Scope) {
    state.idempotency.remove(scope);
}

pub(crate) fn save(state: &mut State, scope: &Scope, status: u16, body: Value, request_id: String) {
    let Some(Saved::InFlight { fingerprint }) = state.idempotency.remove(scope) else {
        return;
    };
    state.idempotency.insert(
        scope.clone(),
        Saved::Done {
            fingerprint,
            status,
            body,
            request_id,
            at: Instant::now(),
        },
    );
}
