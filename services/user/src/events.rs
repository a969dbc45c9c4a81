//! Account events for other services, through a transactional outbox.
//!
//! Deleting an account commits an `account_events` row in the same
//! transaction. The relay ([`Users::spawn_event_relay`]) publishes
//! unpublished rows in order and marks them published only afterwards, so a
//! crash or a Redis outage in between publishes them again: delivery is
//! at-least-once and consumers deduplicate on `event_id`.
//!
//! With Redis each event is one entry
//! `XADD <event_stream_key> * event_id <uuid v7> type account.deleted account_id <id>`;
//! without Redis (`berth dev`) events go to the in-process channel of
//! [`Users::subscribe_account_events`], which also mirrors what was sent to Redis.

use std::time::{Duration, Instant};

use berth_runtime::stream::{Entry, StreamAppender};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::now;
use crate::{UserError, Users};

/// `type` of the event recorded when an account is deleted.
pub const ACCOUNT_DELETED: &str = "account.deleted";

const BATCH: i64 = 100;
/// Published rows are kept this long (debugging), then purged.
const RETENTION_SECS: i64 = 7 * 24 * 3600;
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// One row of the account outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountEvent {
    /// UUID v7; consumers deduplicate on it.
    pub id: Uuid,
    pub event_type: String,
    pub account_id: String,
}

pub(crate) enum Publisher {
    Channel(broadcast::Sender<AccountEvent>),
    Redis(RedisPublisher),
}

pub(crate) struct RedisPublisher {
    stream: StreamAppender,
    mirror: broadcast::Sender<AccountEvent>,
}

impl Publisher {
    pub(crate) async fn publish(&self, events: &[AccountEvent]) -> Result<(), String> {
        let mirror = match self {
            Self::Channel(mirror) => mirror,
            Self::Redis(redis) => {
                redis.xadd(events).await?;
                &redis.mirror
            }
        };
        for event in events {
            // No receiver is fine: nobody listens in this process.
            let _ = mirror.send(event.clone());
        }
        Ok(())
    }
}

impl RedisPublisher {
    async fn xadd(&self, events: &[AccountEvent]) -> Result<(), String> {
        let entries: Vec<Entry> = events
            .iter()
            .map(|event| {
                vec![
                    ("event_id", event.id.to_string()),
                    ("type", event.event_type.clone()),
                    ("account_id", event.account_id.clone()),
                ]
            })
            .collect();
        self.stream.append(&entries).await
    }
}

impl Users {
    /// Events relayed by this process (every event under `berth dev`).
    pub fn subscribe_account_events(&self) -> broadcast::Receiver<AccountEvent> {
        self.inner.events.subscribe()
    }

    /// Publishes the account outbox until `stop`: right after a deletion in
    /// this process, and every `event_poll_interval` for rows of other
    /// replicas or left by a crash or an outage. Redis errors are logged and
    /// retried, never fatal.
    pub fn spawn_event_relay(&self, stop: CancellationToken) {
        let publisher = self.publisher(self.inner.events_redis.clone());
        spawn_relay(self.clone(), publisher, stop);
    }

    pub(crate) fn publisher(&self, redis: Option<redis::Client>) -> Publisher {
        let mirror = self.inner.events.clone();
        match redis {
            Some(client) => Publisher::Redis(RedisPublisher {
                stream: StreamAppender::new(client, self.config().event_stream_key.clone()),
                mirror,
            }),
            None => Publisher::Channel(mirror),
        }
    }

    /// Deletes the account with its `account.deleted` event (one
    /// transaction) and wakes the relay. False when there was no account.
    pub(crate) async fn delete_account(&self, id: &str) -> Result<bool, UserError> {
        let event = self.inner.store.delete_account(id).await?;
        if event.is_some() {
            // Stores a permit when the relay is busy, so it looks again.
            self.inner.relay_wake.notify_one();
        }
        Ok(event.is_some())
    }
}

pub(crate) fn spawn_relay(
    users: Users,
    publisher: Publisher,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let store = &users.inner.store;
        let mut purged_at: Option<Instant> = None;
        while !stop.is_cancelled() {
            if purged_at.is_none_or(|at| at.elapsed() >= PURGE_EVERY) {
                purged_at = Some(Instant::now());
                if let Err(error) = store.purge_events(now() - RETENTION_SECS).await {
                    tracing::warn!(%error, "purging published account events failed");
                }
            }
            match store.relay_events(BATCH, &publisher).await {
                Ok(sent) if sent >= BATCH as usize => continue,
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "account event relay failed; will retry"),
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = users.inner.relay_wake.notified() => {}
                _ = tokio::time::sleep(users.config().event_poll_interval) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests;
