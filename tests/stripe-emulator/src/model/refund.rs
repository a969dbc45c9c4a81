//! The Refund object.

use std::collections::BTreeMap;

use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub(crate) struct Refund {
    pub id: String,
    pub seq: u64,
    pub amount: i64,
    pub balance_transaction: String,
    pub charge: Option<String>,
    pub created: i64,
    pub currency: String,
    pub metadata: BTreeMap<String, String>,
    pub payment_intent: String,
    pub payment_method: Option<String>,
    pub reason: Option<String>,
}

impl Refund {
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "refund",
            "amount": self.amount,
            "balance_transaction": self.balance_transaction,
            "charge": self.charge,
            "created": self.created,
            "currency": self.currency,
            "customer": null,
            "customer_account": null,
            "description": null,
            "destination_details": {
                "card": {"reference_status": "pending", "reference_type": "acquirer_reference_number", "type": "refund"},
                "type": "card"
            },
            "metadata": self.metadata,
            "payment_intent": self.payment_intent,
            "payment_method": self.payment_method,
            "reason": self.reason,
            "receipt_number": null,
            "source_transfer_reversal": null,
            "status": "succeeded",
            "transfer_reversal": null
        })
    }
}
