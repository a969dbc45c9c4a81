//! Account deletion: the user service publishes
//! `XADD <accounts_stream_key> * event_id <uuid> type account.deleted account_id <id>`
//! and booking erases that customer's personal data on their bookings.
//!
//! The consumer reads the stream in the consumer group [`GROUP`], so replicas
//! share the work, and acknowledges an entry only once it is handled (other
//! event types and malformed entries are acknowledged and skipped). Failed
//! entries stay pending and are retried with backoff; entries left pending
//! by a consumer that died are claimed after [`CLAIM_IDLE`]. Redis outages
//! are retried with backoff; the consumer never gives up, and after each
//! reconnect it first re-reads the entries pending on its own name (Redis
//! may have delivered them on the connection that was lost).

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Booking;
use crate::error::BookingError;
use crate::model::now;
use crate::saga::pause;

/// Event type the user service publishes when an account is deleted.
pub const ACCOUNT_DELETED: &str = "account.deleted";
/// Redis consumer group of this service on the event stream.
pub const GROUP: &str = "booking.accounts";
/// `process_event_once` consumer name of the deletion handler.
const CONSUMER: &str = "booking.account-deleted";

const BATCH: usize = 50;
/// How long one XREADGROUP waits for new entries.
const BLOCK: Duration = Duration::from_secs(1);
/// Bound on any other Redis call, so a stuck Redis cannot stall the loop.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// An entry pending this long belongs to a consumer that died; take it over.
const CLAIM_IDLE: Duration = Duration::from_secs(5 * 60);
const CLAIM_EVERY: Duration = Duration::from_secs(60);

impl Booking {
    /// Erases the personal data (name, email) on `customer_id`'s bookings,
    /// in one transaction with one `booking.customer_anonymised` event per
    /// changed booking. Idempotent: a repeat changes nothing and returns 0.
    pub async fn anonymise_customer(&self, customer_id: &str) -> Result<u64, BookingError> {
        if customer_id.is_empty() {
            return Err(BookingError::Invalid(
                "customer_id must not be empty".into(),
            ));
        }
        let erased = self
            .inner
            .store
            .anonymise_customer(customer_id, now())
            .await?;
        if erased > 0 {
            self.wake_relay();
            tracing::info!(erased, "anonymised a deleted customer's bookings");
        }
        Ok(erased)
    }

    /// Handles one `account.deleted` event, at most once per `event_id`.
    /// Returns whether this call handled it (false: already processed).
    ///
    /// The work runs before the event is recorded, not inside
    /// [`Booking::process_event_once`]: its handler runs while the record is
    /// locked, which under SQLite is the database write lock (and, with a
    /// one-connection pool, the only connection), so writing bookings there
    /// would deadlock. A crash between the two repeats `anonymise_customer`,
    /// which is idempotent.
    pub async fn handle_account_deleted(
        &self,
        event_id: Uuid,
        account_id: &str,
    ) -> Result<bool, BookingError> {
        if self.inner.store.was_processed(CONSUMER, event_id).await? {
            return Ok(false);
        }
        self.anonymise_customer(account_id).await?;
        self.process_event_once(CONSUMER, event_id, || async { Ok::<(), Infallible>(()) })
            .await
    }

    /// Consumes `account.deleted` from the Redis stream until `stop`; does
    /// nothing without Redis (`berth dev` calls
    /// [`Booking::handle_account_deleted`] in process instead).
    pub fn spawn_account_consumer(&self, stop: CancellationToken) {
        let Some(client) = self.inner.redis.clone() else {
            return;
        };
        let consumer = AccountConsumer {
            booking: self.clone(),
            client,
            stream: self.inner.config.accounts_stream_key.clone(),
            name: consumer_name(),
            connection: None,
            retry_pending_at: None,
            handler_backoff: BACKOFF_MIN,
            next_claim: Instant::now(),
        };
        tokio::spawn(consumer.run(stop));
    }
}

/// Unique per process, so each replica owns its pending entries.
fn consumer_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    format!("{host}-{}", Uuid::now_v7().simple())
}

/// What to do with one stream entry.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Skip,
    Malformed(&'static str),
    Deleted { event_id: Uuid, account_id: String },
}

fn classify(entry: &StreamId) -> Entry {
    if entry.get::<String>("type").as_deref() != Some(ACCOUNT_DELETED) {
        return Entry::Skip;
    }
    let Some(event_id) = entry
        .get::<String>("event_id")
        .and_then(|id| Uuid::parse_str(&id).ok())
    else {
        return Entry::Malformed("event_id is missing or not a UUID");
    };
    match entry.get::<String>("account_id") {
        Some(account_id) if !account_id.is_empty() => Entry::Deleted {
            event_id,
            account_id,
        },
        _ => Entry::Malformed("account_id is missing"),
    }
}

struct AccountConsumer {
    booking: Booking,
    client: redis::Client,
    stream: String,
    name: String,
    /// Dropped after any Redis error; the next pass reconnects.
    connection: Option<MultiplexedConnection>,
    /// When our failed (still pending) entries are retried next.
    retry_pending_at: Option<Instant>,
    handler_backoff: Duration,
    next_claim: Instant,
}

async fn timed<T>(
    what: &str,
    limit: Duration,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    tokio::time::timeout(limit, call)
        .await
        .map_err(|_| format!("{what}: Redis did not answer in time"))?
        .map_err(|e| format!("{what}: {e}"))
}

impl AccountConsumer {
    async fn run(mut self, stop: CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        while !stop.is_cancelled() {
            match self.pass(&stop).await {
                Ok(()) => backoff = BACKOFF_MIN,
                Err(error) => {
                    tracing::warn!(%error, "account-deletion consumer: Redis failed; will retry");
                    self.connection = None;
                    if !pause(&stop, backoff).await {
                        break;
                    }
                    backoff = backoff.saturating_mul(2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Connects and creates the group (from the stream's start, so deletions
    /// published before this service first ran are not missed).
    async fn connection(&mut self) -> Result<MultiplexedConnection, String> {
        if let Some(connection) = &self.connection {
            return Ok(connection.clone());
        }
        let mut connection = timed(
            "connect",
            REDIS_TIMEOUT,
            self.client.get_multiplexed_async_connection(),
        )
        .await?;
        let created: redis::RedisResult<()> = match tokio::time::timeout(
            REDIS_TIMEOUT,
            connection.xgroup_create_mkstream(&self.stream, GROUP, "0"),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => return Err("XGROUP CREATE: Redis did not answer in time".into()),
        };
        match created {
            Ok(()) => {}
            Err(error) if error.code() == Some("BUSYGROUP") => {}
            Err(error) => return Err(format!("XGROUP CREATE: {error}")),
        }
        self.connection = Some(connection.clone());
        // Entries Redis delivered on the connection we lost (or before a
        // restart) may never have reached us; they are pending on our name
        // and `>` will not return them again, so read those first.
        self.retry_pending_at = Some(Instant::now());
        Ok(connection)
    }

    async fn pass(&mut self, stop: &CancellationToken) -> Result<(), String> {
        let mut connection = self.connection().await?;
        if self.retry_pending_at.is_some_and(|at| Instant::now() >= at) {
            self.retry_pending(&mut connection, stop).await?;
        }
        if Instant::now() >= self.next_claim {
            self.claim_abandoned(&mut connection, stop).await?;
            self.next_claim = Instant::now() + CLAIM_EVERY;
        }
        let options = StreamReadOptions::default()
            .group(GROUP, &self.name)
            .count(BATCH)
            .block(usize::try_from(BLOCK.as_millis()).unwrap_or(1000));
        let keys = [&self.stream];
        let read =
            connection.xread_options::<_, _, Option<StreamReadReply>>(&keys, &[">"], &options);
        let reply = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            reply = timed("XREADGROUP", BLOCK + REDIS_TIMEOUT, read) => reply?,
        };
        let entries = entries(reply);
        self.handle(&mut connection, &entries, stop).await
    }

    /// Re-reads our own pending entries (those whose handling failed).
    async fn retry_pending(
        &mut self,
        connection: &mut MultiplexedConnection,
        stop: &CancellationToken,
    ) -> Result<(), String> {
        self.retry_pending_at = None;
        let options = StreamReadOptions::default()
            .group(GROUP, &self.name)
            .count(BATCH);
        let mut after = "0".to_owned();
        loop {
            let reply = timed(
                "XREADGROUP pending",
                REDIS_TIMEOUT,
                connection.xread_options::<_, _, Option<StreamReadReply>>(
                    &[&self.stream],
                    &[&after],
                    &options,
                ),
            )
            .await?;
            let entries = entries(reply);
            let Some(last) = entries.last() else {
                return Ok(());
            };
            after = last.id.clone();
            self.handle(connection, &entries, stop).await?;
        }
    }

    /// Takes over entries another consumer left pending too long (it died).
    async fn claim_abandoned(
        &mut self,
        connection: &mut MultiplexedConnection,
        stop: &CancellationToken,
    ) -> Result<(), String> {
        let idle = usize::try_from(CLAIM_IDLE.as_millis()).unwrap_or(usize::MAX);
        let mut start = "0-0".to_owned();
        loop {
            let reply: StreamAutoClaimReply = timed(
                "XAUTOCLAIM",
                REDIS_TIMEOUT,
                connection.xautoclaim_options(
                    &self.stream,
                    GROUP,
                    &self.name,
                    idle,
                    &start,
                    StreamAutoClaimOptions::default().count(BATCH),
                ),
            )
            .await?;
            self.handle(connection, &reply.claimed, stop).await?;
            if reply.next_stream_id == "0-0" {
                return Ok(());
            }
            start = reply.next_stream_id;
        }
    }

    /// Handles entries in order and acknowledges the ones that are done. A
    /// failed one stays pending and is retried after a growing delay.
    async fn handle(
        &mut self,
        connection: &mut MultiplexedConnection,
        entries: &[StreamId],
        stop: &CancellationToken,
    ) -> Result<(), String> {
        let mut done = Vec::with_capacity(entries.len());
        let mut failed = false;
        for entry in entries {
            match classify(entry) {
                Entry::Skip => done.push(entry.id.as_str()),
                Entry::Malformed(why) => {
                    tracing::warn!(entry = %entry.id, why, "skipping a malformed account.deleted entry");
                    done.push(entry.id.as_str());
                }
                Entry::Deleted {
                    event_id,
                    account_id,
                } => match self
                    .booking
                    .handle_account_deleted(event_id, &account_id)
                    .await
                {
                    Ok(_) => done.push(entry.id.as_str()),
                    Err(error) => {
                        tracing::warn!(%event_id, %error, "handling account.deleted failed; will retry");
                        failed = true;
                    }
                },
            }
        }
        if !done.is_empty() {
            timed(
                "XACK",
                REDIS_TIMEOUT,
                connection.xack::<_, _, _, ()>(&self.stream, GROUP, &done),
            )
            .await?;
        }
        if failed {
            let delay = self.handler_backoff;
            self.retry_pending_at = Some(Instant::now() + delay);
            self.handler_backoff = delay.saturating_mul(2).min(BACKOFF_MAX);
            // Most failures are the database being down: do not race through
            // new entries meanwhile.
            pause(stop, delay).await;
        } else if self.retry_pending_at.is_none() {
            self.handler_backoff = BACKOFF_MIN;
        }
        Ok(())
    }
}

fn entries(reply: Option<StreamReadReply>) -> Vec<StreamId> {
    reply
        .map(|reply| reply.keys.into_iter().flat_map(|key| key.ids).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn entry(fields: &[(&str, &str)]) -> StreamId {
        StreamId {
            id: "1-0".into(),
            map: fields
                .iter()
                .map(|(k, v)| {
                    (
                        (*k).to_owned(),
                        redis::Value::BulkString(v.as_bytes().to_vec()),
                    )
                })
                .collect::<HashMap<_, _>>(),
        }
    }

    #[test]
    fn only_well_formed_account_deleted_entries_are_handled() {
        let id = Uuid::now_v7();
        assert_eq!(
            classify(&entry(&[
                ("event_id", &id.to_string()),
                ("type", ACCOUNT_DELETED),
                ("account_id", "acct-1"),
            ])),
            Entry::Deleted {
                event_id: id,
                account_id: "acct-1".into()
            }
        );
        assert_eq!(
            classify(&entry(&[("type", "booking.created")])),
            Entry::Skip
        );
        assert_eq!(classify(&entry(&[])), Entry::Skip);
        assert!(matches!(
            classify(&entry(&[("type", ACCOUNT_DELETED), ("account_id", "a")])),
            Entry::Malformed(_)
        ));
        assert!(matches!(
            classify(&entry(&[
                ("type", ACCOUNT_DELETED),
                ("event_id", &id.to_string()),
                ("account_id", "")
            ])),
            Entry::Malformed(_)
        ));
    }
}
