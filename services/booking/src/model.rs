//! The booking record, its states, and the events its changes emit.

use berth_ledger::CancellationPolicy;
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The booking state machine:
///
/// ```text
/// held ─────────────┬─ confirm ─→ confirmed ─ cancel ─→ cancelled
/// pending_payment ──┤  (payment: secured, then paid)
///                   ├─ hold lapses ─→ expired ─ paid anyway, time still free ─→ pending_payment
///                   ├─ cancel ─→ cancelled
///                   └─ payment fails ─→ payment_failed   (pending_payment or expired)
/// ```
/// `cancelled` and `payment_failed` release the ledger claim through the saga.
/// A priced booking is confirmed only by the payment service
/// (`berth_settlement::Settlement`), never by the client: first its time is
/// secured (`pending_payment` without a hold expiry: the claim is
/// permanent), then, once the money is captured, it is confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BookingStatus {
    /// Free appointment type: held until the client confirms.
    Held,
    /// Priced appointment type: held until a payment confirms it.
    PendingPayment,
    Confirmed,
    Cancelled,
    /// The hold lapsed before confirmation.
    Expired,
    /// Compensation outcome of a failed payment; the claim is released.
    PaymentFailed,
}

impl BookingStatus {
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
        [
            Self::Held,
            Self::PendingPayment,
            Self::Confirmed,
            Self::Cancelled,
            Self::Expired,
            Self::PaymentFailed,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
    }

    /// A hold lapses at `hold_expires_at`.
    pub fn is_hold(self) -> bool {
        matches!(self, Self::Held | Self::PendingPayment)
    }
}

impl std::fmt::Display for BookingStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Where texts about the booking (confirmation, reminders) go: the
    /// verified phone of the caller's account (an OTP login), E.164.
    /// Giving it is the customer's opt-in to texts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "+441632960961")]
    pub phone: Option<String>,
    /// The customer's language and region for dates in messages (BCP 47,
    /// e.g. `de-DE`); shown in English where it is not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "de-DE")]
    pub locale: Option<String>,
}

/// A booking as stored and as returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BookingRecord {
    pub id: Uuid,
    pub resource_id: Uuid,
    pub appointment_type_id: Uuid,
    pub claim_id: Uuid,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub seats: u32,
    pub status: BookingStatus,
    pub price_minor: i64,
    pub currency: String,
    /// Subject of the principal who created the booking; `None` only on
    /// bookings made before authentication existed.
    #[serde(default)]
    pub customer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<Customer>,
    pub hold_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Bumped by every write; updates are compare-and-set on it.
    pub version: i64,
    /// Staff account managing the resource (from the ledger). Decides staff
    /// visibility; not shown to clients.
    #[serde(skip)]
    pub(crate) resource_owner_id: Option<String>,
    #[serde(skip)]
    pub(crate) saga: Option<Saga>,
    /// Why the booking ended as it did, where the status alone does not say
    /// (e.g. `slot_taken`: paid after the hold lapsed and the time was gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// The refund rule of the appointment type when the time was claimed.
    #[serde(skip)]
    pub(crate) cancellation_policy: Option<CancellationPolicy>,
}

impl BookingRecord {
    /// A hold past its expiry reads as expired even before the sweeper runs.
    pub(crate) fn effective(mut self, now: DateTime<Utc>) -> Self {
        if self.is_lapsed(now) {
            self.status = BookingStatus::Expired;
        }
        self
    }

    pub(crate) fn is_lapsed(&self, now: DateTime<Utc>) -> bool {
        self.status.is_hold() && self.hold_expires_at.is_some_and(|at| at <= now)
    }

    /// A priced booking whose time the ledger holds for good while its
    /// payment is captured.
    pub(crate) fn is_secured(&self) -> bool {
        self.status == BookingStatus::PendingPayment && self.hold_expires_at.is_none()
    }
}

/// A compensation that must eventually succeed, persisted on the booking so a
/// restart resumes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Saga {
    pub step: SagaStep,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SagaStep {
    /// Free the ledger claim (after cancel or a failed payment).
    ReleaseClaim,
}

impl SagaStep {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReleaseClaim => "release_claim",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        (s == "release_claim").then_some(Self::ReleaseClaim)
    }
}

/// Event type names, as written to the outbox and the stream.
pub mod event_type {
    pub const CREATED: &str = "booking.created";
    pub const CONFIRMED: &str = "booking.confirmed";
    pub const CANCELLED: &str = "booking.cancelled";
    pub const RESCHEDULED: &str = "booking.rescheduled";
    pub const EXPIRED: &str = "booking.expired";
    pub const PAYMENT_FAILED: &str = "booking.payment_failed";
    /// A priced booking confirmed because its payment was captured.
    pub const PAID: &str = "booking.paid";
    /// An expired hold whose payment arrived while its time was still free:
    /// claimed again, pending its capture.
    pub const REINSTATED: &str = "booking.reinstated";
    /// The customer's account was deleted and their personal data erased.
    pub const CUSTOMER_ANONYMISED: &str = "booking.customer_anonymised";
}

/// A booking state change, published at least once; consumers deduplicate
/// on `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub booking_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    /// The booking right after the change.
    pub booking: BookingRecord,
}

impl Event {
    pub(crate) fn new(event_type: &str, booking: &BookingRecord) -> Self {
        Self {
            id: Uuid::now_v7(),
            event_type: event_type.to_owned(),
            booking_id: booking.id,
            occurred_at: booking.updated_at,
            booking: booking.clone(),
        }
    }
}

/// Both databases keep microseconds; truncating up front makes what we return
/// equal to what we read back later.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

pub(crate) fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// `t + d`, saturating instead of panicking on absurd configured durations.
pub(crate) fn after(t: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `t - d`, saturating.
pub(crate) fn before(t: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(d)
        .ok()
        .and_then(|d| t.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}
