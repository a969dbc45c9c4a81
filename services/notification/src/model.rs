//! What this service reads from other services' events (only the fields it
//! uses: the producers may add more) and what it keeps.

use chrono::{DateTime, SubsecRound, Utc};
use serde::Deserialize;
use uuid::Uuid;

/// Booking event types (`services/booking/src/model.rs`, `event_type`).
pub mod booking_event {
    pub const CREATED: &str = "booking.created";
    pub const EXPIRED: &str = "booking.expired";
    pub const REINSTATED: &str = "booking.reinstated";
    pub const CONFIRMED: &str = "booking.confirmed";
    pub const PAID: &str = "booking.paid";
    pub const RESCHEDULED: &str = "booking.rescheduled";
    pub const CANCELLED: &str = "booking.cancelled";
    pub const PAYMENT_FAILED: &str = "booking.payment_failed";
    /// The customer's account was deleted: their data is erased.
    pub const CUSTOMER_ANONYMISED: &str = "booking.customer_anonymised";
}

/// Payment event types (`services/payment/src/saga/driver.rs`).
pub mod payment_event {
    pub const REFUNDED: &str = "payment.refunded";
}

/// A booking event as booking's outbox writes it (the stream's `event`
/// field, or the in-process channel's event encoded the same way).
#[derive(Debug, Clone, Deserialize)]
pub struct BookingEvent {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub booking: BookingSnapshot,
}

/// The booking right after the change.
#[derive(Debug, Clone, Deserialize)]
pub struct BookingSnapshot {
    pub id: Uuid,
    pub resource_id: Uuid,
    pub appointment_type_id: Uuid,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub status: String,
    #[serde(default)]
    pub price_minor: i64,
    #[serde(default)]
    pub currency: String,
    #[serde(default)]
    pub customer: Option<CustomerFacts>,
    /// Raised by every change of the booking: the invite's `SEQUENCE`, and
    /// how a late event is told from a current one.
    pub version: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct CustomerFacts {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// The customer's verified phone (booking accepts only that one).
    #[serde(default)]
    pub phone: Option<String>,
    /// For dates in messages, e.g. `de-DE`.
    #[serde(default)]
    pub locale: Option<String>,
}

impl CustomerFacts {
    /// Where email goes: only an address that looks like one.
    pub fn email(&self) -> Option<&str> {
        self.email
            .as_deref()
            .map(str::trim)
            .filter(|e| e.contains('@'))
    }

    /// Where texts go: only an E.164 number.
    pub fn phone(&self) -> Option<String> {
        self.phone.as_deref().and_then(berth_runtime::phone::e164)
    }

    /// The address on `channel` (`EMAIL` or `SMS`), if any.
    pub fn address(&self, channel: &str) -> Option<String> {
        match channel {
            EMAIL => self.email().map(str::to_owned),
            SMS => self.phone(),
            _ => None,
        }
    }
}

impl BookingSnapshot {
    pub fn email(&self) -> Option<&str> {
        self.customer.as_ref().and_then(CustomerFacts::email)
    }

    pub fn phone(&self) -> Option<String> {
        self.customer.as_ref().and_then(CustomerFacts::phone)
    }

    pub fn address(&self, channel: &str) -> Option<String> {
        self.customer.as_ref().and_then(|c| c.address(channel))
    }
}

/// A payment event as payment's outbox writes it.
#[derive(Debug, Clone, Deserialize)]
pub struct PaymentEvent {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub booking_id: Uuid,
    pub currency: String,
    #[serde(default)]
    pub refunded_minor: i64,
    pub occurred_at: DateTime<Utc>,
}

/// What a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Confirmation,
    Reschedule,
    Cancellation,
    Refund,
    PaymentFailed,
    /// Before the start (planned per offset; `reminders`).
    Reminder,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confirmation => "confirmation",
            Self::Reschedule => "reschedule",
            Self::Cancellation => "cancellation",
            Self::Refund => "refund",
            Self::PaymentFailed => "payment_failed",
            Self::Reminder => "reminder",
        }
    }

    /// Messages also sent as a text where the customer gave a phone: the
    /// ones about the appointment's time, not receipts.
    pub fn is_texted(self) -> bool {
        matches!(
            self,
            Self::Confirmation | Self::Reschedule | Self::Cancellation | Self::Reminder
        )
    }

    /// Messages carrying the booking's calendar event.
    pub fn has_invite(self) -> bool {
        matches!(
            self,
            Self::Confirmation | Self::Reschedule | Self::Cancellation
        )
    }
}

/// One message to send, as stored: the durable intent.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: Uuid,
    pub event_id: Uuid,
    pub booking_id: Option<Uuid>,
    pub kind: String,
    pub channel: String,
    pub recipient: String,
    pub booking_version: Option<i64>,
    pub subject: String,
    pub body: String,
    pub html: Option<String>,
    pub invite_method: Option<String>,
    pub ics: Option<String>,
    /// `pending`, `sent`, `failed` (given up or refused for good), or
    /// `superseded` (a newer message about the booking replaced it unsent).
    pub status: String,
    pub attempts: i32,
    pub due_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

pub const EMAIL: &str = "email";
pub const SMS: &str = "sms";

/// The booking status reminders are for (`services/booking/src/model.rs`).
pub const CONFIRMED: &str = "confirmed";

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

/// `ada@example.com` → `a***@example.com`, a phone as
/// [`berth_runtime::phone::masked`]: enough to tell recipients apart in
/// logs, not enough to learn the address.
pub fn masked(address: &str) -> String {
    if address.starts_with('+') {
        return berth_runtime::phone::masked(address);
    }
    match address.split_once('@') {
        Some((user, domain)) => {
            let first: String = user.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}
