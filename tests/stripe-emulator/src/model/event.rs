//! The Event object: a snapshot of an object at the moment it changed.

use serde_json::{Value, json};

use super::API_VERSION;

#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub id: String,
    pub seq: u64,
    pub type_: String,
    pub created: i64,
    pub object: Value,
    pub previous_attributes: Option<Value>,
    pub request_id: Option<String>,
    pub idempotency_key: Option<String>,
    /// Endpoints that have not yet answered 2xx for this event.
    pub pending_webhooks: i64,
}

impl Event {
    pub(crate) fn to_json(&self) -> Value {
        let mut data = json!({ "object": self.object });
        if let (Some(prev), Some(obj)) = (&self.previous_attributes, data.as_object_mut()) {
            obj.insert("previous_attributes".into(), prev.clone());
        }
        json!({
            "id": self.id,
            "object": "event",
            "api_version": API_VERSION,
            "created": self.created,
            "data": data,
            "livemode": false,
            "pending_webhooks": self.pending_webhooks,
            "request": {"id": self.request_id, "idempotency_key": self.idempotency_key},
            "type": self.type_
        })
    }
}
