//! Outbox relay and idempotent consumption.
//!
//! Every state change commits an outbox row together with the booking. The
//! relay publishes unpublished rows in order and only then marks them
//! published, so a crash in between publishes them again: delivery is
//! at-least-once, and consumers deduplicate on the event id with
//! [`Booking::process_event_once`].
//!
//! With Redis, each event is one stream entry
//! `XADD <stream_key> * event_id <uuid> type <type> booking_id <uuid> event <json>`
//! where `event` is the [`Event`] as JSON, forwarded as the outbox stores it
//! (key order and spacing are PostgreSQL's). Without Redis (`berth dev`)
//! events go to the in-process channel of [`Booking::subscribe_events`]
//! (which also mirrors what this process sent to Redis); they are decoded
//! only when that channel has a receiver.

use std::future::Future;

use async_trait::async_trait;
use berth_runtime::stream::{Entry, StreamAppender};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Booking;
use crate::error::BookingError;
use crate::model::{Event, now};
use crate::store::{OutboxEvent, Publisher};

pub(crate) struct ChannelPublisher {
    pub events: broadcast::Sender<Event>,
}

#[async_trait]
impl Publisher for ChannelPublisher {
    async fn publish(&self, events: &[OutboxEvent]) -> Result<(), String> {
        // Nobody listening in this process: nothing to decode or send.
        if self.events.receiver_count() == 0 {
            return Ok(());
        }
        for event in events {
            // A receiver may have gone since; that is fine.
            let _ = self.events.send(event.decode()?);
        }
        Ok(())
    }
}

pub(crate) struct RedisPublisher {
    stream: StreamAppender,
    mirror: ChannelPublisher,
}

impl RedisPublisher {
    pub(crate) fn new(
        client: redis::Client,
        stream_key: String,
        mirror: broadcast::Sender<Event>,
    ) -> Self {
        Self {
            stream: StreamAppender::new(client, stream_key),
            mirror: ChannelPublisher { events: mirror },
        }
    }

    async fn xadd(&self, events: &[OutboxEvent]) -> Result<(), String> {
        let entries: Vec<Entry> = events
            .iter()
            .map(|event| {
                vec![
                    ("event_id", event.id.to_string()),
                    ("type", event.event_type.clone()),
                    ("booking_id", event.booking_id.to_string()),
                    ("event", event.json.clone()),
                ]
            })
            .collect();
        self.stream.append(&entries).await
    }
}

#[async_trait]
impl Publisher for RedisPublisher {
    async fn publish(&self, events: &[OutboxEvent]) -> Result<(), String> {
        self.xadd(events).await?;
        // The stream has them; an event the mirror cannot decode must not
        // fail the pass (the relay would append the batch again).
        if let Err(error) = self.mirror.publish(events).await {
            tracing::warn!(%error, "mirroring published events in-process failed");
        }
        Ok(())
    }
}

impl Booking {
    pub(crate) fn publisher(&self) -> Box<dyn Publisher> {
        let events = self.inner.events.clone();
        match &self.inner.redis {
            Some(client) => Box::new(RedisPublisher::new(
                client.clone(),
                self.inner.config.stream_key.clone(),
                events,
            )),
            None => Box::new(ChannelPublisher { events }),
        }
    }

    /// Idempotent consumer: runs `handler` unless `consumer` already
    /// processed `event_id`, recording the id in the same transaction as the
    /// check, so a redelivered event is handled once. Returns whether the
    /// handler ran; if it fails, nothing is recorded and a redelivery retries.
    ///
    /// The record is held locked while `handler` runs; under SQLite that is
    /// the database write lock, so the handler must not write to this
    /// booking database itself.
    pub async fn process_event_once<F, Fut, E>(
        &self,
        consumer: &str,
        event_id: Uuid,
        handler: F,
    ) -> Result<bool, BookingError>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<(), E>> + Send,
        E: std::fmt::Display,
    {
        let run = Box::pin(async move { handler().await.map_err(|e| e.to_string()) });
        self.inner
            .store
            .process_once(consumer, event_id, now(), run)
            .await
    }
}

/// Publishes the outbox until `stop`: right after a commit in this process
/// (woken), and every `relay_interval` for rows written by other replicas or
/// left behind by a crash.
pub(crate) fn spawn_relay(booking: Booking, stop: CancellationToken) {
    let publisher = booking.publisher();
    tokio::spawn(async move {
        let config = &booking.inner.config;
        let batch = config.relay_batch;
        while !stop.is_cancelled() {
            match booking
                .inner
                .store
                .relay_batch(batch, now(), &*publisher)
                .await
            {
                Ok(sent) if sent >= batch as usize => continue,
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "outbox relay pass failed; will retry"),
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = booking.inner.relay_wake.notified() => {}
                _ = tokio::time::sleep(config.relay_interval) => {}
            }
        }
    });
}

#[cfg(test)]
mod tests;
