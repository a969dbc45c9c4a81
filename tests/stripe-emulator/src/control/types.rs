//! What the control API sends and answers, shared by server and client.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Endpoint;

/// `GET /_emulator/state`: the Stripe side, as a money checker reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateSnapshot {
    /// Oldest first.
    pub payment_intents: Vec<IntentState>,
    /// Oldest first.
    pub refunds: Vec<RefundState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntentState {
    pub id: String,
    pub status: String,
    pub amount: i64,
    pub amount_capturable: i64,
    pub amount_received: i64,
    pub amount_refunded: i64,
    pub currency: String,
    pub capture_method: String,
    pub cancellation_reason: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub created: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefundState {
    pub id: String,
    pub payment_intent: String,
    pub amount: i64,
    pub currency: String,
    pub reason: Option<String>,
    pub status: String,
    pub created: i64,
}

/// One webhook delivery attempt (`GET /_emulator/deliveries`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub event_id: String,
    pub event_type: String,
    pub endpoint_url: String,
    /// 1 for the first try of this event at this endpoint, counting retries.
    pub attempt: u32,
    /// The endpoint's HTTP status; absent when the request itself failed.
    pub status: Option<u16>,
    pub error: Option<String>,
    /// The `Stripe-Signature` header sent.
    pub signature: String,
    /// RFC 3339, milliseconds.
    pub at: String,
    pub redelivery: bool,
}

impl DeliveryRecord {
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// `POST /_emulator/payment_intents/{id}/action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionOutcome {
    Succeed,
    Fail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ActionBody {
    pub outcome: ActionOutcome,
}

/// `POST /_emulator/webhooks`: the endpoints from now on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EndpointsBody {
    pub endpoints: Vec<Endpoint>,
}

/// `POST /_emulator/webhooks/flush` and `.../redeliver`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Queued {
    pub queued: usize,
}
