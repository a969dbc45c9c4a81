//! A booking's payment: one row per booking, which is also the saga's
//! persisted state (its step history is kept beside it).

use berth_settlement::FailureReason;
use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::saga::rules::{Facts, State};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub id: Uuid,
    pub booking_id: Uuid,
    /// Who may see it: the booking's customer and its resource's staff.
    pub customer_id: Option<String>,
    pub resource_owner_id: Option<String>,
    pub amount_minor: i64,
    /// Upper-case ISO 4217, as the booking carries it.
    pub currency: String,
    pub intent_id: Option<String>,
    pub client_secret: Option<String>,
    /// Part of the create call's idempotency key; raised only when a saved
    /// server error makes the old key useless and no intent was made with it.
    pub create_attempt: i32,
    pub state: State,
    pub failure: Option<FailureReason>,
    pub captured_minor: i64,
    pub refunded_minor: i64,
    pub refund_due_minor: i64,
    /// Part of each refund's idempotency key: one per refund decided.
    pub refund_seq: i32,
    pub cancellation_refund_minor: Option<i64>,
    /// When the state's step runs next; `None`: waiting for Stripe or the
    /// customer. While a step runs it holds a lease: this is pushed ahead.
    pub step_due: Option<DateTime<Utc>>,
    /// Failed tries of the current step (for backoff and giving up).
    pub attempts: i32,
    pub last_error: Option<String>,
    /// Stripe and Berth disagree in a way no rule repairs (reported).
    pub drift: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Bumped by every write; writes are compare-and-set on it.
    pub version: i64,
}

impl Payment {
    pub fn facts(&self) -> Facts {
        Facts {
            state: self.state,
            failure: self.failure,
            booking_id: self.booking_id.to_string(),
            amount_minor: self.amount_minor,
            currency: self.currency.clone(),
            captured_minor: self.captured_minor,
            refunded_minor: self.refunded_minor,
            cancellation_refund_minor: self.cancellation_refund_minor,
        }
    }

    pub fn create_key(&self) -> String {
        format!("berth-{}-create-{}", self.id, self.create_attempt)
    }

    pub fn capture_key(&self) -> String {
        format!("berth-{}-capture", self.id)
    }

    pub fn cancel_key(&self) -> String {
        format!("berth-{}-cancel", self.id)
    }

    pub fn refund_key(&self) -> String {
        format!("berth-{}-refund-{}", self.id, self.refund_seq)
    }

    /// The same visibility rule as the booking's.
    pub fn visible_to(&self, subject: &str, staff: bool, admin: bool) -> bool {
        if admin {
            return true;
        }
        let is = |id: &Option<String>| !subject.is_empty() && id.as_deref() == Some(subject);
        is(&self.customer_id) || (staff && is(&self.resource_owner_id))
    }
}

/// A payment as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PaymentView {
    pub id: Uuid,
    pub booking_id: Uuid,
    /// The saga's state: `creating`, `awaiting_payment`, `securing`,
    /// `capturing`, `confirming`, `paid`, `voiding`, `refunding`,
    /// `failing_booking`, `failed` or `refunded`.
    pub state: String,
    pub amount_minor: i64,
    pub currency: String,
    /// What Stripe.js needs to collect the card (`confirmCardPayment`); only
    /// shown to the booking's customer, and only while payment is awaited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// Stripe's PaymentIntent id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_intent: Option<String>,
    pub captured_minor: i64,
    pub refunded_minor: i64,
    /// Why it ended unpaid (`declined`, `slot_taken`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl PaymentView {
    pub fn of(p: &Payment, show_secret: bool) -> Self {
        let awaiting = matches!(p.state, State::Creating | State::AwaitingPayment);
        Self {
            id: p.id,
            booking_id: p.booking_id,
            state: p.state.as_str().to_owned(),
            amount_minor: p.amount_minor,
            currency: p.currency.clone(),
            client_secret: p.client_secret.clone().filter(|_| show_secret && awaiting),
            payment_intent: p.intent_id.clone(),
            captured_minor: p.captured_minor,
            refunded_minor: p.refunded_minor,
            failure: p.failure.map(|f| f.as_str().to_owned()),
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// A payment event on its way to the stream (`payment.authorised`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PaymentEvent {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub payment_id: Uuid,
    pub booking_id: Uuid,
    pub amount_minor: i64,
    pub currency: String,
    /// For `payment.refunded`: everything refunded so far; otherwise 0.
    pub refunded_minor: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

/// Microseconds, as stored (both backends keep whole microseconds).
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

pub fn after(t: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

pub fn before(t: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(d)
        .ok()
        .and_then(|d| t.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A payment awaiting its customer, for tests to vary.
    pub(crate) fn payment() -> Payment {
        let now = now();
        Payment {
            id: Uuid::now_v7(),
            booking_id: Uuid::now_v7(),
            customer_id: Some("ada".into()),
            resource_owner_id: Some("sam".into()),
            amount_minor: 4500,
            currency: "EUR".into(),
            intent_id: Some("pi_1".into()),
            client_secret: Some("pi_1_secret_x".into()),
            create_attempt: 0,
            state: State::AwaitingPayment,
            failure: None,
            captured_minor: 0,
            refunded_minor: 0,
            refund_due_minor: 0,
            refund_seq: 0,
            cancellation_refund_minor: None,
            step_due: None,
            attempts: 0,
            last_error: None,
            drift: None,
            created_at: now,
            updated_at: now,
            version: 1,
        }
    }

    #[test]
    fn the_client_secret_is_shown_only_while_payment_is_awaited() {
        let awaiting = payment();
        assert!(PaymentView::of(&awaiting, true).client_secret.is_some());
        assert!(PaymentView::of(&awaiting, false).client_secret.is_none());
        let paid = Payment {
            state: State::Paid,
            ..payment()
        };
        assert!(PaymentView::of(&paid, true).client_secret.is_none());
    }

    #[test]
    fn visibility_is_the_bookings() {
        let p = payment();
        assert!(p.visible_to("ada", false, false));
        assert!(p.visible_to("sam", true, false));
        assert!(!p.visible_to("sam", false, false));
        assert!(p.visible_to("x", false, true));
        assert!(!p.visible_to("", true, false));
    }
}
