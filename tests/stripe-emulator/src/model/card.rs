//! Stripe's test payment methods (`pm_card_*`) and what confirming with each does.

use serde_json::{Value, json};

/// A test card, named by the token Stripe documents for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TestCard {
    Visa,
    Mastercard,
    ChargeDeclined,
    InsufficientFunds,
    AuthenticationRequired,
    ThreeDSecure2Required,
}

/// What a confirmation with a card leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Authorised,
    Declined { decline_code: &'static str },
    RequiresAction,
}

impl TestCard {
    pub(crate) fn from_token(token: &str) -> Option<Self> {
        Some(match token {
            "pm_card_visa" => Self::Visa,
            "pm_card_mastercard" => Self::Mastercard,
            "pm_card_chargeDeclined" | "pm_card_visa_chargeDeclined" => Self::ChargeDeclined,
            "pm_card_insufficientFunds" | "pm_card_visa_chargeDeclinedInsufficientFunds" => {
                Self::InsufficientFunds
            }
            "pm_card_authenticationRequired" => Self::AuthenticationRequired,
            "pm_card_threeDSecure2Required" => Self::ThreeDSecure2Required,
            _ => return None,
        })
    }

    pub(crate) fn outcome(self) -> Outcome {
        match self {
            Self::Visa | Self::Mastercard => Outcome::Authorised,
            Self::ChargeDeclined => Outcome::Declined {
                decline_code: "generic_decline",
            },
            Self::InsufficientFunds => Outcome::Declined {
                decline_code: "insufficient_funds",
            },
            Self::AuthenticationRequired | Self::ThreeDSecure2Required => Outcome::RequiresAction,
        }
    }

    fn brand(self) -> &'static str {
        match self {
            Self::Mastercard => "mastercard",
            _ => "visa",
        }
    }

    /// The last four digits of the card number Stripe's docs list for it.
    fn last4(self) -> &'static str {
        match self {
            Self::Visa => "4242",
            Self::Mastercard => "4444",
            Self::ChargeDeclined => "0002",
            Self::InsufficientFunds => "9995",
            Self::AuthenticationRequired => "3184",
            Self::ThreeDSecure2Required => "3220",
        }
    }
}

/// A PaymentMethod made from a test token: Stripe turns `pm_card_visa` into
/// a fresh `pm_...` object on each use, and so does the emulator.
#[derive(Debug, Clone)]
pub(crate) struct PaymentMethod {
    pub id: String,
    pub card: TestCard,
    pub created: i64,
}

impl PaymentMethod {
    pub(crate) fn to_json(&self) -> Value {
        let brand = self.card.brand();
        json!({
            "id": self.id,
            "object": "payment_method",
            "allow_redisplay": "unspecified",
            "billing_details": {
                "address": {"city": null, "country": null, "line1": null, "line2": null, "postal_code": null, "state": null},
                "email": null, "name": null, "phone": null, "tax_id": null
            },
            "card": {
                "brand": brand,
                "checks": {"address_line1_check": null, "address_postal_code_check": null, "cvc_check": "pass"},
                "country": "US",
                "display_brand": brand,
                "exp_month": 12,
                "exp_year": 2034,
                "fingerprint": format!("fp{}", self.card.last4()),
                "funding": "credit",
                "generated_from": null,
                "last4": self.card.last4(),
                "networks": {"available": [brand], "preferred": null},
                "regulated_status": "unregulated",
                "three_d_secure_usage": {"supported": true},
                "wallet": null
            },
            "created": self.created,
            "customer": null,
            "customer_account": null,
            "livemode": false,
            "metadata": {},
            "type": "card"
        })
    }
}
