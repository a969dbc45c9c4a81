//! Persistence behind one trait, with a PostgreSQL backend (production) and a
//! SQLite backend (`berth dev`). Every booking write and its outbox row share
//! one transaction, which is what makes "events are never lost" hold.

mod pg_batch;
mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use uuid::Uuid;

use crate::access::Visibility;
use crate::error::BookingError;
use crate::model::{BookingRecord, BookingStatus, Event};

pub(crate) type Result<T> = std::result::Result<T, BookingError>;

/// Opens the database named by `url` (`postgres://…` or `sqlite:…`) and runs
/// the migrations.
pub(crate) async fn connect(url: &str, max_connections: u32) -> Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            postgres::PgStore::connect(url, max_connections).await?,
        ))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(
            sqlite::SqliteStore::connect(url, max_connections).await?,
        ))
    } else {
        Err(BookingError::Internal(
            "database URL must start with postgres:// or sqlite:".into(),
        ))
    }
}

/// One page request of `GET /v1/bookings`.
#[derive(Debug, Clone)]
pub(crate) struct ListFilter {
    pub resource_id: Option<Uuid>,
    pub status: Option<BookingStatus>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Keyset position: rows strictly after this (start, id).
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: u32,
    /// Holds lapsed at `now` count as expired.
    pub now: DateTime<Utc>,
    /// Only bookings the caller may see; filtered in SQL so pages stay full.
    pub visible: Visibility,
}

/// A response kept for replay under its idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The booking the response concerns, so erasing its customer can scrub
    /// the body of every caller's replay.
    pub booking_id: Option<Uuid>,
}

/// Outcome of reserving an idempotency key.
#[derive(Debug)]
pub(crate) enum KeyClaim {
    /// The key is ours (locked at `KeyTimes::now`, which is our lock token):
    /// run the request.
    Started,
    /// Another request with this key is running.
    InFlight,
    /// The key was used with a different request.
    Mismatch,
    /// The request already ran: replay its response.
    Replay(StoredResponse),
}

/// The response to store under an idempotency key locked by `lock`, written
/// together with the state change that produced it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyAnswer<'a> {
    pub subject: &'a str,
    pub key: &'a str,
    pub lock: DateTime<Utc>,
    pub response: &'a StoredResponse,
}

/// Times for [`Store::claim_key`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyTimes {
    pub now: DateTime<Utc>,
    /// An in-flight key locked before this was abandoned (crash) and is taken over.
    pub stale_before: DateTime<Utc>,
    /// A key created before this is forgotten.
    pub expired_before: DateTime<Utc>,
}

/// Where the relay sends events (Redis stream or in-process channel).
#[async_trait]
pub(crate) trait Publisher: Send + Sync {
    async fn publish(&self, events: &[OutboxEvent]) -> std::result::Result<(), String>;
}

/// An outbox row on its way out: the event's identity from the row's
/// columns, and the event as the JSON the outbox holds, sent on as it is
/// rather than decoded and encoded again.
#[derive(Debug, Clone)]
pub(crate) struct OutboxEvent {
    pub id: Uuid,
    pub event_type: String,
    pub booking_id: Uuid,
    pub json: String,
}

impl OutboxEvent {
    pub fn decode(&self) -> std::result::Result<Event, String> {
        serde_json::from_str(&self.json).map_err(|e| format!("outbox event {}: {e}", self.id))
    }
}

#[async_trait]
pub(crate) trait Store: Send + Sync + 'static {
    async fn ping(&self) -> Result<()>;

    /// Inserts a new booking and its event in one transaction.
    async fn insert_booking(&self, booking: &BookingRecord, event: &Event) -> Result<()>;

    /// [`Store::insert_booking`], and in the same transaction stores the
    /// request's response under its idempotency key as
    /// [`Store::complete_key`] does (so a crash can no longer leave a created
    /// booking behind a key that is still in flight).
    async fn insert_booking_answered(
        &self,
        booking: &BookingRecord,
        event: &Event,
        answer: KeyAnswer<'_>,
    ) -> Result<()>;

    async fn get_booking(&self, id: Uuid) -> Result<Option<BookingRecord>>;

    /// Up to `filter.limit` bookings ordered by (start, id).
    async fn list_bookings(&self, filter: &ListFilter) -> Result<Vec<BookingRecord>>;

    /// Writes `next` (whose version is `expected_version + 1`) and its event
    /// in one transaction, if the row still has `expected_version`. Returns
    /// false when another writer got there first.
    async fn update_booking(
        &self,
        next: &BookingRecord,
        expected_version: i64,
        event: Option<&Event>,
    ) -> Result<bool>;

    /// Claims up to `limit` due compensations by pushing their next attempt
    /// to `lease_until`, so concurrent workers never run the same one.
    async fn claim_due_sagas(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<BookingRecord>>;

    /// Holds whose expiry passed but are still stored as held.
    async fn lapsed_holds(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<BookingRecord>>;

    /// Keys are per principal: `key` of `subject` is unrelated to the same
    /// key of another subject.
    async fn claim_key(
        &self,
        subject: &str,
        key: &str,
        fingerprint: &str,
        times: KeyTimes,
    ) -> Result<KeyClaim>;

    /// Stores the response, if the key is still locked by `lock` (a request
    /// whose key was taken over as stale must not overwrite the new owner).
    /// A key this request already completed (`insert_booking_answered`) is
    /// still locked by `lock`, and gets the response written over.
    async fn complete_key(
        &self,
        subject: &str,
        key: &str,
        lock: DateTime<Utc>,
        response: &StoredResponse,
    ) -> Result<()>;

    /// Frees an in-flight key locked by `lock` so the client can retry it.
    async fn release_key(&self, subject: &str, key: &str, lock: DateTime<Utc>) -> Result<()>;

    async fn purge_keys(&self, created_before: DateTime<Utc>) -> Result<u64>;

    /// Deletes published outbox rows whose event occurred before
    /// `occurred_before`; unpublished rows stay whatever their age. The scan
    /// walks rows in outbox order and stops at the first newer event, so it
    /// costs what it deletes, not the size of the table.
    async fn purge_published(&self, occurred_before: DateTime<Utc>) -> Result<u64>;

    /// Publishes up to `limit` unpublished outbox rows in order and marks them
    /// published; nothing is marked unless publishing succeeded.
    async fn relay_batch(
        &self,
        limit: u32,
        now: DateTime<Utc>,
        publisher: &dyn Publisher,
    ) -> Result<usize>;

    /// In one transaction: erases name and email on `customer_id`'s bookings
    /// that still have any (bumping their version, so a concurrent
    /// compare-and-set cannot write them back), writes one
    /// `booking.customer_anonymised` event each, strips the customer from
    /// their earlier outbox payloads, drops the customer's stored idempotent
    /// responses (they may hold the same data), and strips the customer from
    /// other callers' stored 2xx responses about these bookings (kept, so a
    /// retry still replays instead of running again). Returns how many
    /// bookings changed; a repeat finds nothing to do and returns 0.
    async fn anonymise_customer(&self, customer_id: &str, now: DateTime<Utc>) -> Result<u64>;

    /// Whether `consumer` already recorded `event_id` (see `process_once`).
    async fn was_processed(&self, consumer: &str, event_id: Uuid) -> Result<bool>;

    /// Runs `handler` unless `consumer` already processed `event_id`, and
    /// records it in the same transaction. Returns whether it ran.
    async fn process_once(
        &self,
        consumer: &str,
        event_id: Uuid,
        now: DateTime<Utc>,
        handler: BoxFuture<'_, std::result::Result<(), String>>,
    ) -> Result<bool>;
}

/// Result of [`KeyClaim`] lookups shared by both backends.
pub(crate) fn judge_existing_key(
    fingerprint: &str,
    stored_fingerprint: &str,
    state: &str,
    response: Option<StoredResponse>,
) -> Option<KeyClaim> {
    if stored_fingerprint != fingerprint {
        return Some(KeyClaim::Mismatch);
    }
    match (state, response) {
        ("done", Some(response)) => Some(KeyClaim::Replay(response)),
        _ => None,
    }
}

pub(crate) fn encode_headers(headers: &[(String, String)]) -> String {
    serde_json::to_string(headers).unwrap_or_else(|_| "[]".to_owned())
}

/// `LIKE` pattern for stored headers (as [`encode_headers`] writes them) of
/// a JSON response: only such bodies are parsed when scrubbing a customer.
pub(crate) const JSON_HEADERS_LIKE: &str = r#"%["content-type","application/json"]%"#;

pub(crate) fn decode_headers(text: Option<&str>) -> Vec<(String, String)> {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default()
}

pub(crate) fn decode_error(column: &str, message: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: message.to_string().into(),
    }
}

/// Booking columns, in the bind order both backends use.
pub(crate) const COLUMNS: [&str; 27] = [
    "id",
    "resource_id",
    "appointment_type_id",
    "claim_id",
    "start_at",
    "end_at",
    "seats",
    "status",
    "price_minor",
    "currency",
    "customer_name",
    "customer_email",
    "hold_expires_at",
    "saga_step",
    "saga_attempts",
    "next_attempt_at",
    "saga_error",
    "created_at",
    "updated_at",
    "version",
    "customer_id",
    "resource_owner_id",
    "status_reason",
    "refund_notice_secs",
    "late_refund_percent",
    "customer_phone",
    "customer_locale",
];

/// `sigil` is `$` for PostgreSQL and `?` for SQLite (`?1`, `?2`, …).
pub(crate) fn insert_booking_sql(table: &str, sigil: char) -> String {
    let params: Vec<String> = (1..=COLUMNS.len()).map(|i| format!("{sigil}{i}")).collect();
    format!(
        "INSERT INTO {table} ({}) VALUES ({})",
        COLUMNS.join(", "),
        params.join(", ")
    )
}

/// Compare-and-set on `version`: parameter 1 is the id, 2.. the columns in
/// order, and the last the expected version.
pub(crate) fn update_booking_sql(table: &str, sigil: char) -> String {
    let sets: Vec<String> = COLUMNS
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, column)| format!("{column} = {sigil}{}", i + 1))
        .collect();
    format!(
        "UPDATE {table} SET {} WHERE id = {sigil}1 AND version = {sigil}{}",
        sets.join(", "),
        COLUMNS.len() + 1
    )
}

/// A booking row decoded into plain values; both backends produce it.
pub(crate) struct RawBooking {
    pub id: Uuid,
    pub resource_id: Uuid,
    pub appointment_type_id: Uuid,
    pub claim_id: Uuid,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub seats: i64,
    pub status: String,
    pub price_minor: i64,
    pub currency: String,
    pub customer_name: Option<String>,
    pub customer_email: Option<String>,
    pub hold_expires_at: Option<DateTime<Utc>>,
    pub saga_step: Option<String>,
    pub saga_attempts: i64,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub saga_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
    pub customer_id: Option<String>,
    pub resource_owner_id: Option<String>,
    pub status_reason: Option<String>,
    pub refund_notice_secs: Option<i64>,
    pub late_refund_percent: Option<i64>,
    pub customer_phone: Option<String>,
    pub customer_locale: Option<String>,
}

impl RawBooking {
    pub fn into_record(self) -> std::result::Result<BookingRecord, sqlx::Error> {
        use crate::model::{Customer, Saga, SagaStep};
        use berth_ledger::CancellationPolicy;
        let status = BookingStatus::parse(&self.status)
            .ok_or_else(|| decode_error("status", format!("unknown status {:?}", self.status)))?;
        let saga = match self.saga_step {
            None => None,
            Some(step) => Some(Saga {
                step: SagaStep::parse(&step)
                    .ok_or_else(|| decode_error("saga_step", format!("unknown step {step:?}")))?,
                attempts: i32::try_from(self.saga_attempts).unwrap_or(i32::MAX),
                next_attempt_at: self.next_attempt_at.unwrap_or(DateTime::UNIX_EPOCH),
                last_error: self.saga_error,
            }),
        };
        let cancellation_policy = match (self.refund_notice_secs, self.late_refund_percent) {
            (Some(secs), Some(percent)) => Some(CancellationPolicy {
                full_refund_notice: std::time::Duration::from_secs(
                    u64::try_from(secs).map_err(|e| decode_error("refund_notice_secs", e))?,
                ),
                late_refund_percent: u8::try_from(percent)
                    .ok()
                    .filter(|p| *p <= 100)
                    .ok_or_else(|| decode_error("late_refund_percent", "not 0 to 100"))?,
            }),
            _ => None,
        };
        let customer = (self.customer_name.is_some()
            || self.customer_email.is_some()
            || self.customer_phone.is_some()
            || self.customer_locale.is_some())
        .then_some(Customer {
            name: self.customer_name,
            email: self.customer_email,
            phone: self.customer_phone,
            locale: self.customer_locale,
        });
        Ok(BookingRecord {
            id: self.id,
            resource_id: self.resource_id,
            appointment_type_id: self.appointment_type_id,
            claim_id: self.claim_id,
            start: self.start,
            end: self.end,
            seats: u32::try_from(self.seats).map_err(|e| decode_error("seats", e))?,
            status,
            price_minor: self.price_minor,
            currency: self.currency,
            customer_id: self.customer_id,
            customer,
            hold_expires_at: self.hold_expires_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
            version: self.version,
            resource_owner_id: self.resource_owner_id,
            saga,
            status_reason: self.status_reason,
            cancellation_policy,
        })
    }
}

/// The saga columns of a booking: (step, attempts, next_attempt_at, error).
pub(crate) fn saga_columns(
    booking: &BookingRecord,
) -> (
    Option<&'static str>,
    i32,
    Option<DateTime<Utc>>,
    Option<String>,
) {
    match &booking.saga {
        None => (None, 0, None, None),
        Some(saga) => (
            Some(saga.step.as_str()),
            saga.attempts,
            Some(saga.next_attempt_at),
            saga.last_error.clone(),
        ),
    }
}

/// The cancellation-policy columns: (notice in seconds, late refund percent).
pub(crate) fn policy_columns(booking: &BookingRecord) -> (Option<i64>, Option<i16>) {
    match &booking.cancellation_policy {
        None => (None, None),
        Some(p) => (
            Some(i64::try_from(p.full_refund_notice.as_secs()).unwrap_or(i64::MAX)),
            Some(i16::from(p.late_refund_percent)),
        ),
    }
}

/// The customer columns, in `COLUMNS` order.
pub(crate) struct CustomerColumns {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub locale: Option<String>,
}

pub(crate) fn customer_columns(booking: &BookingRecord) -> CustomerColumns {
    let c = booking.customer.clone().unwrap_or_default();
    CustomerColumns {
        name: c.name,
        email: c.email,
        phone: c.phone,
        locale: c.locale,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_headers_pattern_matches_encoded_headers() {
        let headers = [
            ("content-type".to_owned(), "application/json".to_owned()),
            ("location".to_owned(), "/v1/bookings/x".to_owned()),
        ];
        let needle = JSON_HEADERS_LIKE.trim_matches('%');
        assert!(encode_headers(&headers).contains(needle));
        let problem = [(
            "content-type".to_owned(),
            "application/problem+json".to_owned(),
        )];
        assert!(!encode_headers(&problem).contains(needle));
    }
}
