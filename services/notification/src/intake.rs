//! Events in, deliveries out: which message an event means, for whom, and
//! recording it once.
//!
//! - `booking.confirmed` / `booking.paid` → confirmation with the invite
//!   (`METHOD:REQUEST`); a paid booking emits only `booking.paid`, and the
//!   confirmation shows what was paid (the receipt).
//! - `booking.rescheduled` → the updated invite, `booking.cancelled` →
//!   `METHOD:CANCEL`: only to a customer holding an invite.
//! - `booking.payment_failed` → "not booked".
//! - `payment.refunded` → refund receipt.
//! - `booking.customer_anonymised` → the customer's unsent messages about
//!   the booking are stopped, and their data is removed from its log.
//! - Other types (`booking.created`, `.expired`, `.reinstated`,
//!   `payment.authorised`, `payment.failed`) only update what is known.
//!
//! Email goes only where the booking carries an address and SMTP is set
//! up; confirmation,
//! reschedule and cancellation also go as a text where it carries the
//! customer's (verified) phone and a text provider is configured. Every event type
//! in [`webhooks::EVENT_TYPES`] also becomes one webhook per subscribed
//! endpoint that may see the booking, in the same transaction. A late
//! event (a lower booking version than one already seen) sends nothing.

use uuid::Uuid;

use crate::Notifications;
use crate::error::NotificationError;
use crate::model::{
    BookingEvent, EMAIL, Kind, PaymentEvent, SMS, booking_event, masked, now, payment_event,
};
use crate::render::{Facts, Identity, Rendered, render};
use crate::store::{NewDelivery, Recorded};
use crate::webhooks;

/// `processed_events` names (also the Redis consumer groups).
pub const BOOKINGS: &str = "notification.bookings";
pub const PAYMENTS: &str = "notification.payments";

impl Notifications {
    /// Handles one booking event (its JSON, as the outbox writes it), once
    /// per event id. Public for `berth dev`, which forwards events in process.
    pub async fn handle_booking_event(&self, json: &str) -> Result<(), NotificationError> {
        let event: BookingEvent = match serde_json::from_str(json) {
            Ok(event) => event,
            Err(error) => {
                // Retrying cannot make it readable: skip it, loudly.
                tracing::error!(%error, "a booking event does not decode; skipped");
                return Ok(());
            }
        };
        let store = &self.inner.store;
        if store.was_processed(BOOKINGS, event.id).await? {
            return Ok(());
        }
        let booking = &event.booking;
        let kind = match event.event_type.as_str() {
            booking_event::CONFIRMED | booking_event::PAID => Some(Kind::Confirmation),
            booking_event::RESCHEDULED => Some(Kind::Reschedule),
            booking_event::CANCELLED => Some(Kind::Cancellation),
            booking_event::PAYMENT_FAILED => Some(Kind::PaymentFailed),
            _ => None,
        };
        let (booking_id, version) = (booking.id, Some(booking.version));
        let email_to = self.emails(booking);
        let text_to = booking.phone().filter(|_| self.texts(kind));
        let reachable = email_to.is_some() || text_to.is_some();
        let message = match kind {
            Some(kind) if reachable => {
                let amount = (kind == Kind::Confirmation).then_some(booking.price_minor);
                let rendered = self
                    .render(kind, booking, amount, &booking.currency, event.occurred_at)
                    .await?;
                Some((kind, rendered))
            }
            _ => None,
        };
        let erase = event.event_type == booking_event::CUSTOMER_ANONYMISED;
        let hooks = self
            .plan_webhooks(
                &event.event_type,
                Some(booking.id),
                Some(booking.resource_id),
                || {
                    webhooks::booking_payload(
                        event.id,
                        &event.event_type,
                        event.occurred_at,
                        booking,
                    )
                },
            )
            .await?;
        let recorded = store
            .record_with(
                BOOKINGS,
                event.id,
                Some(booking),
                erase,
                now(),
                |invite_held| {
                    let Some((kind, rendered)) = message else {
                        return Vec::new();
                    };
                    // An update or a cancellation only means something to a
                    // customer told of the booking (an invite or a text).
                    if matches!(kind, Kind::Reschedule | Kind::Cancellation)
                        && invite_held.is_none()
                    {
                        return Vec::new();
                    }
                    let to = Recipients {
                        email: email_to,
                        phone: text_to,
                    };
                    to.messages(booking_id, kind, version, rendered)
                },
                &hooks,
            )
            .await?;
        self.log_recorded(&event.event_type, event.id, booking.id, recorded);
        Ok(())
    }

    /// Handles one payment event (its JSON), once per event id. `Err` for a
    /// refund whose booking is not known yet: its events are on the way.
    pub async fn handle_payment_event(&self, json: &str) -> Result<(), NotificationError> {
        let event: PaymentEvent = match serde_json::from_str(json) {
            Ok(event) => event,
            Err(error) => {
                tracing::error!(%error, "a payment event does not decode; skipped");
                return Ok(());
            }
        };
        let store = &self.inner.store;
        if event.event_type != payment_event::REFUNDED
            || store.was_processed(PAYMENTS, event.id).await?
        {
            return Ok(());
        }
        let Some(known) = store.booking(event.booking_id).await? else {
            let waited = now() - event.occurred_at;
            if waited.to_std().unwrap_or_default() < self.inner.config.payment_wait {
                return Err(NotificationError::Lookup(format!(
                    "booking {} of payment event {}: not known yet",
                    event.booking_id, event.id
                )));
            }
            tracing::warn!(event = %event.id, booking = %event.booking_id, "a refund's booking never became known; no receipt");
            // Platform endpoints still hear of it; owners' cannot be told.
            let hooks = self
                .plan_webhooks(&event.event_type, Some(event.booking_id), None, || {
                    webhooks::payment_payload(&event)
                })
                .await?;
            let recorded = store
                .record_with(
                    PAYMENTS,
                    event.id,
                    None,
                    false,
                    now(),
                    |_| Vec::new(),
                    &hooks,
                )
                .await?;
            self.log_recorded(&event.event_type, event.id, event.booking_id, recorded);
            return Ok(());
        };
        let booking = &known.booking;
        let message = match self.emails(booking) {
            Some(to) => Some((
                to,
                self.render(
                    Kind::Refund,
                    booking,
                    Some(event.refunded_minor),
                    &event.currency,
                    event.occurred_at,
                )
                .await?,
            )),
            None => None,
        };
        let hooks = self
            .plan_webhooks(
                &event.event_type,
                Some(booking.id),
                Some(booking.resource_id),
                || webhooks::payment_payload(&event),
            )
            .await?;
        let recorded = store
            .record_with(
                PAYMENTS,
                event.id,
                None,
                false,
                now(),
                |_| {
                    message
                        .map(|(to, rendered)| {
                            vec![email(booking.id, Kind::Refund, to, None, rendered)]
                        })
                        .unwrap_or_default()
                },
                &hooks,
            )
            .await?;
        self.log_recorded(&event.event_type, event.id, booking.id, recorded);
        Ok(())
    }

    pub(crate) async fn render(
        &self,
        kind: Kind,
        booking: &crate::model::BookingSnapshot,
        amount_minor: Option<i64>,
        currency: &str,
        stamp: chrono::DateTime<chrono::Utc>,
    ) -> Result<Rendered, NotificationError> {
        let directory = &self.inner.directory;
        let resource = directory
            .resource(booking.resource_id)
            .await
            .map_err(NotificationError::Lookup)?;
        let appointment_type = directory
            .appointment_type(booking.appointment_type_id)
            .await
            .map_err(NotificationError::Lookup)?;
        let config = &self.inner.config;
        render(
            &self.inner.templates,
            kind,
            &Facts {
                booking,
                resource: resource.as_ref(),
                appointment_type: appointment_type.as_deref(),
                amount_minor,
                currency,
                stamp,
            },
            &Identity {
                id_domain: &config.id_domain,
                organizer: &config.organizer,
            },
        )
        .map_err(NotificationError::Render)
    }

    /// Where email about `booking` goes: its address, if SMTP is set up.
    fn emails(&self, booking: &crate::model::BookingSnapshot) -> Option<String> {
        self.inner
            .mailer
            .as_ref()
            .and(booking.email())
            .map(str::to_owned)
    }

    /// Whether `kind` goes out as a text too (a text provider is set up).
    fn texts(&self, kind: Option<Kind>) -> bool {
        self.inner.sms.is_some() && kind.is_some_and(Kind::is_texted)
    }

    fn log_recorded(&self, event_type: &str, event: Uuid, booking: Uuid, recorded: Recorded) {
        match recorded {
            Recorded::New(0) => {}
            Recorded::New(n) => {
                tracing::info!(event_type, %event, %booking, messages = n, "messages planned");
                self.wake_sender();
            }
            Recorded::Duplicate => tracing::debug!(%event, "event already handled"),
            Recorded::Stale => {
                tracing::info!(event_type, %event, %booking, "late event: its booking changed since; nothing sent");
            }
        }
    }
}

/// Who hears of a booking message, on which channel.
struct Recipients {
    email: Option<String>,
    phone: Option<String>,
}

impl Recipients {
    fn messages(
        self,
        booking_id: Uuid,
        kind: Kind,
        version: Option<i64>,
        mut rendered: Rendered,
    ) -> Vec<NewDelivery> {
        let mut planned = Vec::new();
        if let (Some(to), Some(sms)) = (self.phone, rendered.sms.take()) {
            planned.push(text(booking_id, kind, to, version, sms));
        }
        if let Some(to) = self.email {
            planned.push(email(booking_id, kind, to, version, rendered));
        }
        planned
    }
}

/// A text (`sms`): the rendered text message only.
pub(crate) fn text(
    booking_id: Uuid,
    kind: Kind,
    to: String,
    version: Option<i64>,
    body: String,
) -> NewDelivery {
    tracing::debug!(to = %masked(&to), kind = kind.as_str(), "text planned");
    NewDelivery {
        id: Uuid::now_v7(),
        booking_id,
        kind: kind.as_str(),
        channel: SMS,
        recipient: to,
        booking_version: version,
        subject: String::new(),
        body,
        html: None,
        invite: None,
    }
}

pub(crate) fn email(
    booking_id: Uuid,
    kind: Kind,
    to: String,
    version: Option<i64>,
    r: Rendered,
) -> NewDelivery {
    tracing::debug!(to = %masked(&to), kind = kind.as_str(), "email planned");
    NewDelivery {
        id: Uuid::now_v7(),
        booking_id,
        kind: kind.as_str(),
        channel: EMAIL,
        recipient: to,
        booking_version: version,
        subject: r.subject,
        body: r.text,
        html: Some(r.html),
        invite: r.invite,
    }
}
