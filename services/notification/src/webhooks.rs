//! Outbound webhooks, signed as Standard Webhooks specifies.
//!
//! - **Endpoints** (`webhook_endpoints`) are registered by admins (they hear
//!   of every booking: scope `platform`) or by staff (only of bookings on
//!   resources they manage: scope `owner`), with the event types they
//!   want. Each has a secret (`whsec_` + base64 of 32 random bytes), shown
//!   only when it is made: on create and on rotate. A rotated-out secret
//!   keeps signing, beside the new one, for `secret_grace`.
//! - **Deliveries** (`webhook_deliveries`): one per event and endpoint,
//!   recorded in the transaction that records the event, so an event seen
//!   twice (or by two replicas) is one delivery. A sender takes due ones
//!   under a lease (`FOR UPDATE SKIP LOCKED`), as the mail sender does.
//! - **Signing**: `webhook-id` (the delivery's id, the same on every
//!   attempt), `webhook-timestamp` (Unix seconds of the attempt) and
//!   `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`,
//!   one per valid secret, space-separated (crate `standardwebhooks`).
//! - **Retries**: any answer but 2xx, a timeout or a connection failure is
//!   retried on `retry_schedule` (Svix's: 5 s, 5 min, 30 min, 2 h, 5 h,
//!   then 10 h, about three days in all) with ±10 % jitter, then the
//!   delivery is dead-lettered; staff replay it. `410 Gone` disables the
//!   endpoint and dead-letters the delivery at once. Redirects are not
//!   followed.
//! - **Egress**: URLs go through the runtime's SSRF guard when registered
//!   and on every send, where the connection is made to the address that
//!   was checked (no DNS rebinding).
//!
//! **Payloads carry no personal data**: no customer name, email, phone or
//! account id, whoever the subscriber is; only ids (event, booking,
//! resource, appointment type), type, times, status, version and price.
//! A subscriber that needs the customer asks the booking API, where access
//! rules apply. The body is `{"type", "timestamp", "data"}` as the
//! Standard Webhooks spec recommends.

pub(crate) mod rest;
pub(crate) mod sender;

use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::Notifications;
use crate::error::NotificationError;
use crate::model::{BookingSnapshot, PaymentEvent, booking_event, payment_event};

/// The event types an endpoint may subscribe to.
pub const EVENT_TYPES: &[&str] = &[
    booking_event::CREATED,
    booking_event::CONFIRMED,
    booking_event::PAID,
    booking_event::RESCHEDULED,
    booking_event::CANCELLED,
    booking_event::EXPIRED,
    booking_event::PAYMENT_FAILED,
    booking_event::REINSTATED,
    payment_event::REFUNDED,
];

/// Outbound webhook settings.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Delay before each retry; its length is the number of retries. The
    /// default is Svix's schedule stretched to about three days.
    pub retry_schedule: Vec<Duration>,
    /// One attempt's limit, connecting included.
    pub timeout: Duration,
    /// How long a rotated-out secret still signs.
    pub secret_grace: Duration,
    /// Endpoints on loopback, private or link-local addresses: only for
    /// `berth dev` and tests with a local receiver, never for a deployment
    /// reachable by users (SSRF).
    pub allow_private_urls: bool,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        let mut retry_schedule = vec![
            Duration::from_secs(5),
            minutes(5),
            minutes(30),
            minutes(120),
            minutes(300),
        ];
        // 5 s … 5 h, then 10 h six times: about 67 hours of retrying.
        retry_schedule.extend([minutes(600); 6]);
        Self {
            retry_schedule,
            timeout: Duration::from_secs(15),
            secret_grace: Duration::from_secs(24 * 3600),
            allow_private_urls: false,
        }
    }
}

impl WebhookConfig {
    pub(crate) fn validate(&self, lease: Duration) -> Result<(), String> {
        if self.timeout.is_zero() || self.timeout >= lease {
            return Err(format!(
                "webhooks.timeout must be greater than 0 and less than the lease ({lease:?}), \
                 or a slow receiver would be sent to twice"
            ));
        }
        if self.retry_schedule.iter().any(Duration::is_zero) {
            return Err("webhooks.retry_schedule delays must be greater than 0".into());
        }
        Ok(())
    }

    /// The delay after the `attempt`th failed attempt of a round (1-based),
    /// with ±10 % jitter; `None`: the schedule is spent.
    pub(crate) fn retry_delay(&self, attempt: i64) -> Option<Duration> {
        let index = usize::try_from(attempt.checked_sub(1)?).ok()?;
        let step = *self.retry_schedule.get(index)?;
        Some(step.mul_f64(0.9 + 0.2 * rand::random::<f64>()))
    }
}

/// `enabled` or `disabled`; `platform` or `owner`.
pub(crate) const ENABLED: &str = "enabled";
pub(crate) const DISABLED: &str = "disabled";
pub(crate) const PLATFORM: &str = "platform";
pub(crate) const OWNER: &str = "owner";

/// A registered endpoint, as stored.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub id: Uuid,
    pub owner_id: String,
    pub scope: String,
    pub url: String,
    pub description: Option<String>,
    pub event_types: Vec<String>,
    pub status: String,
    pub disabled_reason: Option<String>,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Endpoint {
    pub(crate) fn enabled(&self) -> bool {
        self.status == ENABLED
    }

    /// The secrets that sign at `now`: the current one, and the previous
    /// one while its grace lasts.
    pub(crate) fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<&str> {
        let mut secrets = vec![self.secret.as_str()];
        if let (Some(previous), Some(until)) =
            (&self.previous_secret, self.previous_secret_expires_at)
            && until > now
        {
            secrets.push(previous);
        }
        secrets
    }
}

/// One webhook to send, as stored.
#[derive(Debug, Clone)]
pub(crate) struct WebhookDelivery {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub booking_id: Option<Uuid>,
    pub payload: String,
    /// `pending`, `sent` or `dead`.
    pub status: String,
    pub attempts: i64,
    pub retry_from: i64,
    pub due_at: Option<DateTime<Utc>>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

impl WebhookDelivery {
    /// Attempts since it was created or last replayed.
    pub(crate) fn round_attempts(&self) -> i64 {
        self.attempts - self.retry_from
    }
}

/// A webhook to create with its event.
#[derive(Debug, Clone)]
pub(crate) struct NewWebhook {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub event_type: String,
    pub booking_id: Option<Uuid>,
    pub payload: String,
}

/// A new secret: `whsec_` and the base64 of 32 random bytes (from the
/// thread's CSPRNG), the form the Standard Webhooks libraries take.
pub(crate) fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// The `webhook-signature` header: `v1,<sig>` for each secret.
pub(crate) fn signature(
    secrets: &[&str],
    id: &str,
    timestamp: i64,
    body: &str,
) -> Result<String, String> {
    let mut signatures = Vec::with_capacity(secrets.len());
    for secret in secrets {
        let webhook = standardwebhooks::Webhook::new(secret)
            .map_err(|e| format!("stored secret is unusable: {e}"))?;
        signatures.push(
            webhook
                .sign(id, timestamp, body.as_bytes())
                .map_err(|e| format!("signing: {e}"))?,
        );
    }
    Ok(signatures.join(" "))
}

/// A booking as subscribers see it: no customer data.
#[derive(Debug, Serialize)]
struct BookingData<'a> {
    id: Uuid,
    resource_id: Uuid,
    appointment_type_id: Uuid,
    status: &'a str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    version: i64,
    price_minor: i64,
    currency: &'a str,
}

fn envelope(event_type: &str, occurred_at: DateTime<Utc>, data: Value) -> String {
    json!({
        "type": event_type,
        "timestamp": occurred_at,
        "data": data,
    })
    .to_string()
}

/// The body of a booking event's webhook.
pub(crate) fn booking_payload(
    event_id: Uuid,
    event_type: &str,
    occurred_at: DateTime<Utc>,
    booking: &BookingSnapshot,
) -> String {
    let data = BookingData {
        id: booking.id,
        resource_id: booking.resource_id,
        appointment_type_id: booking.appointment_type_id,
        status: &booking.status,
        start: booking.start,
        end: booking.end,
        version: booking.version,
        price_minor: booking.price_minor,
        currency: &booking.currency,
    };
    envelope(
        event_type,
        occurred_at,
        json!({ "event_id": event_id, "booking": data }),
    )
}

/// The body of a payment event's webhook.
pub(crate) fn payment_payload(event: &PaymentEvent) -> String {
    envelope(
        &event.event_type,
        event.occurred_at,
        json!({
            "event_id": event.id,
            "booking_id": event.booking_id,
            "refunded_minor": event.refunded_minor,
            "currency": event.currency,
        }),
    )
}

impl Notifications {
    /// The webhooks an event means: one per enabled endpoint subscribed to
    /// `event_type` that may see the booking (an owner-scoped endpoint only
    /// when its owner manages `resource_id`; none when that is unknown).
    pub(crate) async fn plan_webhooks(
        &self,
        event_type: &str,
        booking_id: Option<Uuid>,
        resource_id: Option<Uuid>,
        payload: impl FnOnce() -> String,
    ) -> Result<Vec<NewWebhook>, NotificationError> {
        if !EVENT_TYPES.contains(&event_type) {
            return Ok(Vec::new());
        }
        let subscribed: Vec<Endpoint> = self
            .inner
            .store
            .enabled_endpoints()
            .await?
            .into_iter()
            .filter(|e| e.event_types.iter().any(|t| t == event_type))
            .collect();
        if subscribed.is_empty() {
            return Ok(Vec::new());
        }
        let owner = match resource_id {
            Some(resource) if subscribed.iter().any(|e| e.scope == OWNER) => self
                .inner
                .directory
                .resource(resource)
                .await
                .map_err(NotificationError::Lookup)?
                .map(|r| r.owner_id)
                .filter(|o| !o.is_empty()),
            _ => None,
        };
        let payload = payload();
        Ok(subscribed
            .into_iter()
            .filter(|e| e.scope == PLATFORM || owner.as_deref() == Some(e.owner_id.as_str()))
            .map(|e| NewWebhook {
                id: Uuid::now_v7(),
                endpoint_id: e.id,
                event_type: event_type.to_owned(),
                booking_id,
                payload: payload.clone(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests;
