//! The payment ↔ booking contract. The payment saga owns the money and
//! drives a priced booking through [`Settlement`]; the booking service owns
//! the booking and its time in the ledger. Two implementations with the same
//! semantics: the booking service itself (in-process, `berth dev`) and its
//! gRPC client (in Kubernetes).
//!
//! Every call is idempotent, so the saga may repeat any step after a crash
//! or a lost answer: securing twice holds the time once, marking paid twice
//! confirms once, failing twice ends the booking once.

use async_trait::async_trait;
use berth_ledger::CancellationPolicy;
use berth_runtime::Problem;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A booking's state as the payment saga sees it (the booking service's
/// statuses, by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BookingState {
    Held,
    PendingPayment,
    Confirmed,
    Cancelled,
    Expired,
    PaymentFailed,
}

impl BookingState {
    pub const ALL: [Self; 6] = [
        Self::Held,
        Self::PendingPayment,
        Self::Confirmed,
        Self::Cancelled,
        Self::Expired,
        Self::PaymentFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::PendingPayment => "pending_payment",
            Self::Confirmed => "confirmed",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
            Self::PaymentFailed => "payment_failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// The booking ended without a confirmation; it can no longer be paid for
    /// (an expired hold can, if its time is still free: see
    /// [`Settlement::secure`]).
    pub fn is_final_unpaid(self) -> bool {
        matches!(self, Self::Cancelled | Self::PaymentFailed)
    }
}

impl std::fmt::Display for BookingState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the payment service needs to know about a booking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayableBooking {
    pub id: Uuid,
    pub state: BookingState,
    /// A `pending_payment` booking whose time the ledger holds for good (an
    /// authorisation was verified); it no longer lapses.
    pub time_secured: bool,
    pub price_minor: i64,
    pub currency: String,
    pub customer_id: Option<String>,
    pub resource_owner_id: Option<String>,
    pub start: DateTime<Utc>,
    pub hold_expires_at: Option<DateTime<Utc>>,
    pub cancellation_policy: Option<CancellationPolicy>,
    /// When the booking last changed (for a cancellation: when it was cancelled).
    pub updated_at: DateTime<Utc>,
}

impl PayableBooking {
    /// The same visibility rule as the booking API's: admins see all,
    /// customers their own bookings, staff the bookings on resources they
    /// manage. Anything else must answer exactly like an unknown booking.
    pub fn visible_to(&self, subject: &str, staff: bool, admin: bool) -> bool {
        if admin {
            return true;
        }
        let is = |id: &Option<String>| !subject.is_empty() && id.as_deref() == Some(subject);
        is(&self.customer_id) || (staff && is(&self.resource_owner_id))
    }
}

/// Why a payment ended without a confirmed booking; recorded on the booking
/// as its `status_reason`, so the customer is told what happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// The card was declined.
    Declined,
    /// The payment was cancelled at Stripe (by the customer or the merchant).
    Canceled,
    /// The authorisation lapsed before it was captured.
    AuthorisationExpired,
    /// The hold lapsed and someone else booked the time before the payment
    /// arrived; the authorisation was cancelled (or the capture refunded).
    SlotTaken,
    /// The capture kept failing; the authorisation was cancelled.
    CaptureFailed,
    /// Stripe's payment did not match the booking (amount, currency or
    /// booking id); it was refused.
    VerificationFailed,
    /// Never paid; the hold lapsed long ago.
    Abandoned,
    /// Stripe refused to create the payment.
    Rejected,
    /// The booking was cancelled before its payment completed (the booking
    /// keeps `cancelled`; this is the payment's record of why it ended).
    BookingCancelled,
}

impl FailureReason {
    pub const ALL: [Self; 9] = [
        Self::Declined,
        Self::Canceled,
        Self::AuthorisationExpired,
        Self::SlotTaken,
        Self::CaptureFailed,
        Self::VerificationFailed,
        Self::Abandoned,
        Self::Rejected,
        Self::BookingCancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Declined => "declined",
            Self::Canceled => "canceled",
            Self::AuthorisationExpired => "authorisation_expired",
            Self::SlotTaken => "slot_taken",
            Self::CaptureFailed => "capture_failed",
            Self::VerificationFailed => "verification_failed",
            Self::Abandoned => "abandoned",
            Self::Rejected => "rejected",
            Self::BookingCancelled => "booking_cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Outcome of [`Settlement::secure`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secured {
    /// The time is held for good (or already was; also for a booking that is
    /// already confirmed).
    Held(PayableBooking),
    /// The hold had lapsed and the time now belongs to someone else.
    SlotTaken(PayableBooking),
    /// The booking ended (cancelled, payment failed): it must not be paid.
    Ended(PayableBooking),
}

/// Outcome of [`Settlement::mark_paid`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Paid {
    /// The booking is confirmed (now or before).
    Confirmed(PayableBooking),
    /// The booking ended before it could be confirmed (cancelled while the
    /// payment was captured): the money must go back.
    Ended(PayableBooking),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettlementError {
    #[error("booking {0} not found")]
    NotFound(Uuid),
    /// The booking is in a state the call does not apply to (e.g. failing a
    /// confirmed booking, paying for a free one).
    #[error("{0}")]
    Conflict(String),
    /// The booking service or its ledger could not be reached; retry.
    #[error("booking unavailable: {0}")]
    Unavailable(String),
    #[error("booking failure: {0}")]
    Internal(String),
}

impl SettlementError {
    /// Worth retrying later (the saga backs off and tries again).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Internal(_))
    }
}

#[async_trait]
pub trait Settlement: Send + Sync + 'static {
    async fn booking(&self, id: Uuid) -> Result<PayableBooking, SettlementError>;

    /// Makes a `pending_payment` booking's time permanent because its
    /// authorisation was verified. A hold that lapsed (also one already
    /// marked expired) is claimed again if the time is still free.
    async fn secure(&self, id: Uuid) -> Result<Secured, SettlementError>;

    /// Confirms a secured booking because its payment was captured; emits
    /// `booking.paid`.
    async fn mark_paid(&self, id: Uuid) -> Result<Paid, SettlementError>;

    /// Ends an unconfirmed booking `payment_failed` with `reason` and gives
    /// its time back. A booking that already ended keeps its status.
    /// Failing a confirmed booking is a [`SettlementError::Conflict`].
    async fn fail_payment(
        &self,
        id: Uuid,
        reason: FailureReason,
    ) -> Result<PayableBooking, SettlementError>;
}

impl From<SettlementError> for Problem {
    fn from(error: SettlementError) -> Self {
        match error {
            SettlementError::NotFound(id) => Problem::not_found(format!("booking {id} not found")),
            SettlementError::Conflict(detail) => Problem::conflict("booking-state", detail),
            SettlementError::Unavailable(detail) => Problem::unavailable(detail),
            SettlementError::Internal(detail) => Problem::internal(&std::io::Error::other(detail)),
        }
    }
}

impl From<Problem> for SettlementError {
    /// The inverse of the mapping above, for the gRPC client.
    fn from(problem: Problem) -> Self {
        let detail = problem
            .detail
            .clone()
            .unwrap_or_else(|| problem.title.clone());
        match problem.status {
            404 => detail
                .strip_prefix("booking ")
                .and_then(|rest| rest.strip_suffix(" not found"))
                .and_then(|id| id.parse().ok())
                .map_or(Self::Internal(detail.clone()), Self::NotFound),
            409 => Self::Conflict(detail),
            503 | 504 => Self::Unavailable(detail),
            _ => Self::Internal(detail),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for state in BookingState::ALL {
            assert_eq!(BookingState::parse(state.as_str()), Some(state));
        }
        for reason in FailureReason::ALL {
            assert_eq!(FailureReason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(BookingState::parse("paid"), None);
    }

    #[test]
    fn errors_survive_the_problem_round_trip() {
        for error in [
            SettlementError::NotFound(Uuid::now_v7()),
            SettlementError::Conflict("the booking is confirmed".into()),
            SettlementError::Unavailable("ledger down".into()),
        ] {
            let problem = Problem::from(error.clone());
            let via_grpc = Problem::from_grpc_status(&problem.to_grpc_status());
            assert_eq!(SettlementError::from(via_grpc), error);
        }
    }

    #[test]
    fn visibility_matches_the_booking_rule() {
        let booking = PayableBooking {
            id: Uuid::now_v7(),
            state: BookingState::PendingPayment,
            time_secured: false,
            price_minor: 100,
            currency: "EUR".into(),
            customer_id: Some("ada".into()),
            resource_owner_id: Some("sam".into()),
            start: Utc::now(),
            hold_expires_at: None,
            cancellation_policy: None,
            updated_at: Utc::now(),
        };
        assert!(booking.visible_to("ada", false, false));
        assert!(booking.visible_to("sam", true, false));
        assert!(!booking.visible_to("sam", false, false), "not staff");
        assert!(!booking.visible_to("eve", true, false));
        assert!(booking.visible_to("eve", false, true), "admin");
        assert!(!booking.visible_to("", true, false));
    }
}
