//! Events in and out.
//!
//! Out: every payment event is written to the outbox with its state change
//! and relayed at least once: to the Redis stream `stream_key` as
//! `XADD <stream> * event_id <uuid> type <type> payment_id <uuid> booking_id <uuid> event <json>`,
//! or, without Redis (`berth dev`), to the in-process channel of
//! [`Payments::subscribe_events`]. Consumers deduplicate on `event_id`.
//!
//! In: `booking.cancelled` from the booking stream (consumer group
//! [`GROUP`]; in process under `berth dev`). A cancelled booking's payment
//! is refunded per the booking's cancellation policy (or its authorisation
//! cancelled, if it was never captured), once per event.

use std::time::Duration;

use berth_ledger::CancellationPolicy;
use berth_runtime::stream::{Entry, GroupConsumer, Handled, StreamAppender};
use berth_settlement::{BookingState, SettlementError};
use redis::streams::StreamId;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Payments;
use crate::error::PaymentError;
use crate::model::{PaymentEvent, now};
use crate::saga::rules::Observation;

/// Redis consumer group of this service on the booking stream.
pub const GROUP: &str = "payment.bookings";
/// `processed_events` name of the cancellation handler.
const CONSUMER: &str = "payment.booking-cancelled";
/// The booking event this service acts on.
pub const BOOKING_CANCELLED: &str = "booking.cancelled";
const CLAIM_IDLE: Duration = Duration::from_secs(60);
const RELAY_BATCH: i64 = 100;
const RELAY_EVERY: Duration = Duration::from_millis(500);

impl Payments {
    /// Handles one booking event, at most once per `event_id` (other types
    /// are ignored). Public for `berth dev`, which forwards booking events
    /// in process.
    pub async fn handle_booking_event(
        &self,
        event_id: Uuid,
        event_type: &str,
        booking_id: Uuid,
    ) -> Result<(), PaymentError> {
        if event_type != BOOKING_CANCELLED {
            return Ok(());
        }
        let store = &self.inner.store;
        if store.was_processed(CONSUMER, event_id).await? {
            return Ok(());
        }
        if let Some(payment) = store.by_booking(booking_id).await? {
            let refund_minor = match self.inner.settlement.booking(booking_id).await {
                Ok(booking) if booking.state == BookingState::Cancelled => {
                    CancellationPolicy::refund_minor(
                        booking.cancellation_policy.as_ref(),
                        payment.amount_minor,
                        booking.start,
                        booking.updated_at,
                    )
                }
                // Not cancelled after all (a stale event): nothing to do.
                Ok(_) => return store.mark_processed(CONSUMER, event_id, now()).await,
                Err(SettlementError::NotFound(_)) => payment.amount_minor,
                Err(error) => return Err(error.into()),
            };
            self.observe(
                payment.id,
                Observation::BookingCancelled { refund_minor },
                "booking cancelled",
            )
            .await?;
        }
        store.mark_processed(CONSUMER, event_id, now()).await
    }
}

fn classify(entry: &StreamId) -> Option<(Uuid, String, Uuid)> {
    let event_type = entry.get::<String>("type")?;
    let event_id = entry.get::<String>("event_id")?.parse().ok()?;
    let booking_id = entry.get::<String>("booking_id")?.parse().ok()?;
    Some((event_id, event_type, booking_id))
}

/// Consumes booking events from Redis until `stop`; nothing without Redis.
pub(crate) fn spawn_booking_consumer(payments: &Payments, stop: CancellationToken) {
    let Some(client) = payments.inner.redis.clone() else {
        return;
    };
    let payments = payments.clone();
    GroupConsumer::new(
        client,
        payments.inner.config.booking_stream_key.clone(),
        GROUP,
        CLAIM_IDLE,
        move |entry: StreamId| {
            let payments = payments.clone();
            async move {
                let Some((event_id, event_type, booking_id)) = classify(&entry) else {
                    return Handled::Done;
                };
                match payments
                    .handle_booking_event(event_id, &event_type, booking_id)
                    .await
                {
                    Ok(()) => Handled::Done,
                    Err(error) => Handled::Retry(format!("{event_type} {event_id}: {error}")),
                }
            }
        },
    )
    .spawn(stop);
}

/// Publishes the outbox until `stop`: right after a commit in this process
/// (woken), and every half second for rows other replicas or a crash left.
pub(crate) fn spawn_relay(payments: Payments, stop: CancellationToken) {
    let stream = payments
        .inner
        .redis
        .clone()
        .map(|client| StreamAppender::new(client, payments.inner.config.stream_key.clone()));
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            let events = payments.inner.events.clone();
            let stream = &stream;
            let sent = payments
                .inner
                .store
                .relay(RELAY_BATCH, now(), |rows| async move {
                    if let Some(stream) = &stream {
                        let entries: Vec<Entry> = rows.iter().map(entry).collect::<Vec<_>>();
                        stream.append(&entries).await?;
                    }
                    if events.receiver_count() > 0 {
                        for (_, _, payload) in &rows {
                            if let Ok(event) = serde_json::from_str::<PaymentEvent>(payload) {
                                // A receiver may have gone since; that is fine.
                                let _ = events.send(event);
                            }
                        }
                    }
                    Ok(())
                })
                .await;
            match sent {
                Ok(n) if n >= usize::try_from(RELAY_BATCH).unwrap_or(usize::MAX) => continue,
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "payment outbox relay failed; will retry"),
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = payments.inner.relay_wake.notified() => {}
                _ = tokio::time::sleep(RELAY_EVERY) => {}
            }
        }
    });
}

fn entry((id, event_type, payload): &(String, String, String)) -> Entry {
    let event = serde_json::from_str::<PaymentEvent>(payload).ok();
    vec![
        ("event_id", id.clone()),
        ("type", event_type.clone()),
        (
            "payment_id",
            event
                .as_ref()
                .map(|e| e.payment_id.to_string())
                .unwrap_or_default(),
        ),
        (
            "booking_id",
            event.map(|e| e.booking_id.to_string()).unwrap_or_default(),
        ),
        ("event", payload.clone()),
    ]
}
