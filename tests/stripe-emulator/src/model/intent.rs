//! The PaymentIntent: its fields, status machine vocabulary and JSON shape.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// Stripe's PaymentIntent statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    RequiresPaymentMethod,
    RequiresConfirmation,
    RequiresAction,
    RequiresCapture,
    Canceled,
    Succeeded,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::RequiresPaymentMethod => "requires_payment_method",
            Self::RequiresConfirmation => "requires_confirmation",
            Self::RequiresAction => "requires_action",
            Self::RequiresCapture => "requires_capture",
            Self::Canceled => "canceled",
            Self::Succeeded => "succeeded",
        }
    }

    /// The statuses Stripe lets `cancel` act on.
    pub(crate) fn cancelable(self) -> bool {
        !matches!(self, Self::Canceled | Self::Succeeded)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Intent {
    pub id: String,
    pub seq: u64,
    pub amount: i64,
    pub amount_capturable: i64,
    pub amount_received: i64,
    /// Sum of this intent's refunds; Stripe keeps it on the charge.
    pub amount_refunded: i64,
    pub currency: String,
    pub capture_method: String,
    pub confirmation_method: String,
    pub client_secret: String,
    pub created: i64,
    pub canceled_at: Option<i64>,
    pub cancellation_reason: Option<String>,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub payment_method: Option<String>,
    pub payment_method_types: Vec<String>,
    /// API 2026-09-30's `allowed_payment_method_types`, when given.
    pub allowed_payment_method_types: Option<Vec<String>>,
    /// `allow_redirects` when automatic payment methods are on.
    pub automatic_payment_methods: Option<String>,
    pub status: Status,
    pub last_payment_error: Option<Value>,
    pub next_action: Option<Value>,
    pub latest_charge: Option<String>,
    pub receipt_email: Option<String>,
    pub statement_descriptor: Option<String>,
    pub statement_descriptor_suffix: Option<String>,
    pub setup_future_usage: Option<String>,
}

impl Intent {
    pub(crate) fn is_manual(&self) -> bool {
        self.capture_method == "manual"
    }

    pub(crate) fn to_json(&self) -> Value {
        let card_options = json!({
            "installments": null,
            "mandate_options": null,
            "network": null,
            "request_three_d_secure": "automatic"
        });
        json!({
            "id": self.id,
            "object": "payment_intent",
            "allowed_payment_method_types": self.allowed_payment_method_types,
            "amount": self.amount,
            "amount_capturable": self.amount_capturable,
            "amount_details": {"tip": {}},
            "amount_received": self.amount_received,
            "application": null,
            "application_fee_amount": null,
            "automatic_payment_methods": self.automatic_payment_methods.as_ref().map(|allow| json!({
                "allow_redirects": allow,
                "enabled": true
            })),
            "canceled_at": self.canceled_at,
            "cancellation_reason": self.cancellation_reason,
            "capture_method": self.capture_method,
            "client_secret": self.client_secret,
            "confirmation_method": self.confirmation_method,
            "created": self.created,
            "currency": self.currency,
            "customer": null,
            "customer_account": null,
            "description": self.description,
            "excluded_payment_method_types": null,
            "last_payment_error": self.last_payment_error,
            "latest_charge": self.latest_charge,
            "livemode": false,
            "managed_payments": null,
            "metadata": self.metadata,
            "next_action": self.next_action,
            "on_behalf_of": null,
            "payment_method": self.payment_method,
            "payment_method_configuration_details": null,
            "payment_method_options": {"card": card_options},
            "payment_method_types": self.payment_method_types,
            "processing": null,
            "receipt_email": self.receipt_email,
            "review": null,
            "setup_future_usage": self.setup_future_usage,
            "shipping": null,
            "source": null,
            "statement_descriptor": self.statement_descriptor,
            "statement_descriptor_suffix": self.statement_descriptor_suffix,
            "status": self.status.as_str(),
            "transfer_data": null,
            "transfer_group": null
        })
    }
}
