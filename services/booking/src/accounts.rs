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
use std::time::Duration;

use berth_runtime::stream::{GroupConsumer, Handled};
use redis::streams::StreamId;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Booking;
use crate::error::BookingError;
use crate::model::now;

/// Event type the user service publishes when an account is deleted.
pub const ACCOUNT_DELETED: &str = "account.deleted";
/// Redis consumer group of this service on the event stream.
pub const GROUP: &str = "booking.accounts";
/// `process_event_once` consumer name of the deletion handler.
const CONSUMER: &str = "booking.account-deleted";

/// An entry pending this long belongs to a consumer that died; take it over.
const CLAIM_IDLE: Duration = Duration::from_secs(5 * 60);

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
        let booking = self.clone();
        GroupConsumer::new(
            client,
            self.inner.config.accounts_stream_key.clone(),
            GROUP,
            CLAIM_IDLE,
            move |entry: StreamId| {
                let booking = booking.clone();
                async move { booking.handle_account_entry(&entry).await }
            },
        )
        .spawn(stop);
    }

    async fn handle_account_entry(&self, entry: &StreamId) -> Handled {
        match classify(entry) {
            Entry::Skip => Handled::Done,
            Entry::Malformed(why) => {
                tracing::warn!(entry = %entry.id, why, "skipping a malformed account.deleted entry");
                Handled::Done
            }
            Entry::Deleted {
                event_id,
                account_id,
            } => match self.handle_account_deleted(event_id, &account_id).await {
                Ok(_) => Handled::Done,
                Err(error) => Handled::Retry(format!("account.deleted {event_id}: {error}")),
            },
        }
    }
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
