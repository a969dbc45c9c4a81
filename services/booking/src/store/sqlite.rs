//! SQLite backend for `berth dev` (one process). UUIDs are stored as
//! hyphenated text and timestamps as fixed-width RFC 3339 text, so ordering
//! and comparisons in SQL match PostgreSQL's.

use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sqlx::query::Query;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};
use uuid::Uuid;

use super::{
    JSON_HEADERS_LIKE, KeyAnswer, KeyClaim, KeyTimes, ListFilter, OutboxEvent, Publisher,
    RawBooking, Result, Store, StoredResponse, customer_columns, decode_error, decode_headers,
    encode_headers, judge_existing_key, policy_columns, saga_columns,
};
use crate::access::Visibility;
use crate::error::BookingError;
use crate::model::{BookingRecord, BookingStatus, Event, event_type};

const TABLE: &str = "bookings";
static SELECT: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {} FROM {TABLE}", super::COLUMNS.join(", ")));
static INSERT: LazyLock<String> = LazyLock::new(|| super::insert_booking_sql(TABLE, '?'));
static UPDATE: LazyLock<String> = LazyLock::new(|| super::update_booking_sql(TABLE, '?'));

pub(crate) struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        let mut options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .busy_timeout(Duration::from_secs(5));
        let mut pool = SqlitePoolOptions::new();
        if memory {
            // An in-memory database lives as long as its one connection.
            pool = pool
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        } else {
            options = options
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal);
            pool = pool.max_connections(max_connections.max(1));
        }
        let pool = pool.connect_with(options).await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }
}

/// Fixed width, so text order is time order.
fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn parse_ts(column: &str, text: &str) -> std::result::Result<DateTime<Utc>, sqlx::Error> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| decode_error(column, e))
}

fn get_ts(row: &SqliteRow, column: &str) -> std::result::Result<DateTime<Utc>, sqlx::Error> {
    parse_ts(column, &row.try_get::<String, _>(column)?)
}

fn get_opt_ts(
    row: &SqliteRow,
    column: &str,
) -> std::result::Result<Option<DateTime<Utc>>, sqlx::Error> {
    row.try_get::<Option<String>, _>(column)?
        .map(|text| parse_ts(column, &text))
        .transpose()
}

fn get_uuid(row: &SqliteRow, column: &str) -> std::result::Result<Uuid, sqlx::Error> {
    Uuid::parse_str(&row.try_get::<String, _>(column)?).map_err(|e| decode_error(column, e))
}

fn bind_booking<'q>(
    query: Query<'q, Sqlite, SqliteArguments<'q>>,
    b: &'q BookingRecord,
) -> Query<'q, Sqlite, SqliteArguments<'q>> {
    let (step, attempts, next_attempt_at, error) = saga_columns(b);
    let customer = customer_columns(b);
    query
        .bind(b.id.to_string())
        .bind(b.resource_id.to_string())
        .bind(b.appointment_type_id.to_string())
        .bind(b.claim_id.to_string())
        .bind(ts(b.start))
        .bind(ts(b.end))
        .bind(i64::from(b.seats))
        .bind(b.status.as_str())
        .bind(b.price_minor)
        .bind(&b.currency)
        .bind(customer.name)
        .bind(customer.email)
        .bind(b.hold_expires_at.map(ts))
        .bind(step)
        .bind(attempts)
        .bind(next_attempt_at.map(ts))
        .bind(error)
        .bind(ts(b.created_at))
        .bind(ts(b.updated_at))
        .bind(b.version)
        .bind(b.customer_id.as_deref())
        .bind(b.resource_owner_id.as_deref())
        .bind(b.status_reason.as_deref())
        .bind(policy_columns(b).0)
        .bind(policy_columns(b).1.map(i64::from))
        .bind(customer.phone)
        .bind(customer.locale)
}

fn booking_from_row(row: &SqliteRow) -> std::result::Result<BookingRecord, sqlx::Error> {
    RawBooking {
        id: get_uuid(row, "id")?,
        resource_id: get_uuid(row, "resource_id")?,
        appointment_type_id: get_uuid(row, "appointment_type_id")?,
        claim_id: get_uuid(row, "claim_id")?,
        start: get_ts(row, "start_at")?,
        end: get_ts(row, "end_at")?,
        seats: row.try_get("seats")?,
        status: row.try_get("status")?,
        price_minor: row.try_get("price_minor")?,
        currency: row.try_get("currency")?,
        customer_name: row.try_get("customer_name")?,
        customer_email: row.try_get("customer_email")?,
        customer_phone: row.try_get("customer_phone")?,
        customer_locale: row.try_get("customer_locale")?,
        hold_expires_at: get_opt_ts(row, "hold_expires_at")?,
        saga_step: row.try_get("saga_step")?,
        saga_attempts: row.try_get("saga_attempts")?,
        next_attempt_at: get_opt_ts(row, "next_attempt_at")?,
        saga_error: row.try_get("saga_error")?,
        created_at: get_ts(row, "created_at")?,
        updated_at: get_ts(row, "updated_at")?,
        version: row.try_get("version")?,
        customer_id: row.try_get("customer_id")?,
        resource_owner_id: row.try_get("resource_owner_id")?,
        status_reason: row.try_get("status_reason")?,
        refund_notice_secs: row.try_get("refund_notice_secs")?,
        late_refund_percent: row.try_get("late_refund_percent")?,
    }
    .into_record()
}

fn bookings_from_rows(rows: &[SqliteRow]) -> Result<Vec<BookingRecord>> {
    Ok(rows
        .iter()
        .map(booking_from_row)
        .collect::<std::result::Result<_, _>>()?)
}

async fn insert_event(tx: &mut Transaction<'_, Sqlite>, event: &Event) -> Result<()> {
    let payload =
        serde_json::to_string(event).map_err(|e| BookingError::Internal(e.to_string()))?;
    sqlx::query(
        "INSERT INTO outbox (id, booking_id, event_type, payload, occurred_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .bind(event.id.to_string())
    .bind(event.booking_id.to_string())
    .bind(&event.event_type)
    .bind(payload)
    .bind(ts(event.occurred_at))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn insert_booking(&self, booking: &BookingRecord, event: &Event) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        bind_booking(sqlx::query(&INSERT), booking)
            .execute(&mut *tx)
            .await?;
        insert_event(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn insert_booking_answered(
        &self,
        booking: &BookingRecord,
        event: &Event,
        answer: KeyAnswer<'_>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        bind_booking(sqlx::query(&INSERT), booking)
            .execute(&mut *tx)
            .await?;
        insert_event(&mut tx, event).await?;
        sqlx::query(
            "UPDATE idempotency_keys SET state = 'done', status = ?2, headers = ?3, body = ?4, \
               booking_id = ?7 \
             WHERE subject = ?6 AND key = ?1 AND state = 'in_flight' AND locked_at = ?5",
        )
        .bind(answer.key)
        .bind(i64::from(answer.response.status))
        .bind(encode_headers(&answer.response.headers))
        .bind(&answer.response.body)
        .bind(ts(answer.lock))
        .bind(answer.subject)
        .bind(answer.response.booking_id.map(|id| id.to_string()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_booking(&self, id: Uuid) -> Result<Option<BookingRecord>> {
        let row = sqlx::query(&format!("{} WHERE id = ?1", *SELECT))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(booking_from_row).transpose()?)
    }

    async fn list_bookings(&self, f: &ListFilter) -> Result<Vec<BookingRecord>> {
        let mut q = QueryBuilder::<Sqlite>::new(format!("{} WHERE 1 = 1", *SELECT));
        match &f.visible {
            Visibility::All => {}
            Visibility::Only { subject, .. } if subject.is_empty() => {
                q.push(" AND 1 = 0");
            }
            Visibility::Only { subject, staff } => {
                q.push(" AND (customer_id = ").push_bind(subject.clone());
                if *staff {
                    q.push(" OR resource_owner_id = ")
                        .push_bind(subject.clone());
                }
                q.push(")");
            }
        }
        if let Some(resource_id) = f.resource_id {
            q.push(" AND resource_id = ")
                .push_bind(resource_id.to_string());
        }
        match f.status {
            Some(BookingStatus::Expired) => {
                q.push(" AND (status = 'expired' OR (status IN ('held', 'pending_payment') AND hold_expires_at <= ")
                    .push_bind(ts(f.now))
                    .push("))");
            }
            Some(status) if status.is_hold() => {
                q.push(" AND status = ")
                    .push_bind(status.as_str())
                    .push(" AND (hold_expires_at IS NULL OR hold_expires_at > ")
                    .push_bind(ts(f.now))
                    .push(")");
            }
            Some(status) => {
                q.push(" AND status = ").push_bind(status.as_str());
            }
            None => {}
        }
        if let Some(from) = f.from {
            q.push(" AND start_at >= ").push_bind(ts(from));
        }
        if let Some(to) = f.to {
            q.push(" AND start_at < ").push_bind(ts(to));
        }
        if let Some((start, id)) = f.after {
            q.push(" AND (start_at > ")
                .push_bind(ts(start))
                .push(" OR (start_at = ")
                .push_bind(ts(start))
                .push(" AND id > ")
                .push_bind(id.to_string())
                .push("))");
        }
        q.push(" ORDER BY start_at, id LIMIT ")
            .push_bind(i64::from(f.limit));
        let rows = q.build().fetch_all(&self.pool).await?;
        bookings_from_rows(&rows)
    }

    async fn update_booking(
        &self,
        next: &BookingRecord,
        expected_version: i64,
        event: Option<&Event>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let updated = bind_booking(sqlx::query(&UPDATE), next)
            .bind(expected_version)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if updated != 1 {
            return Ok(false);
        }
        if let Some(event) = event {
            insert_event(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn claim_due_sagas(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<BookingRecord>> {
        let rows = sqlx::query(&format!(
            "UPDATE {TABLE} SET next_attempt_at = ?2 WHERE id IN (\
                 SELECT id FROM {TABLE} WHERE saga_step IS NOT NULL AND next_attempt_at <= ?1 \
                 ORDER BY next_attempt_at LIMIT ?3) \
             RETURNING {}",
            super::COLUMNS.join(", ")
        ))
        .bind(ts(now))
        .bind(ts(lease_until))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        bookings_from_rows(&rows)
    }

    async fn lapsed_holds(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<BookingRecord>> {
        let rows = sqlx::query(&format!(
            "{} WHERE status IN ('held', 'pending_payment') AND hold_expires_at <= ?1 \
             ORDER BY hold_expires_at LIMIT ?2",
            *SELECT
        ))
        .bind(ts(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        bookings_from_rows(&rows)
    }

    async fn claim_key(
        &self,
        subject: &str,
        key: &str,
        fingerprint: &str,
        t: KeyTimes,
    ) -> Result<KeyClaim> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE subject = ?3 AND key = ?1 AND created_at < ?2",
        )
        .bind(key)
        .bind(ts(t.expired_before))
        .bind(subject)
        .execute(&self.pool)
        .await?;
        for _ in 0..3 {
            let inserted = sqlx::query(
                "INSERT INTO idempotency_keys \
                 (subject, key, fingerprint, state, created_at, locked_at) \
                 VALUES (?4, ?1, ?2, 'in_flight', ?3, ?3) ON CONFLICT (subject, key) DO NOTHING",
            )
            .bind(key)
            .bind(fingerprint)
            .bind(ts(t.now))
            .bind(subject)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if inserted == 1 {
                return Ok(KeyClaim::Started);
            }
            let Some(row) = sqlx::query(
                "SELECT fingerprint, state, status, headers, body, booking_id, locked_at \
                 FROM idempotency_keys WHERE subject = ?2 AND key = ?1",
            )
            .bind(key)
            .bind(subject)
            .fetch_optional(&self.pool)
            .await?
            else {
                continue;
            };
            let status: Option<i64> = row.try_get("status")?;
            let response = status.map(|status| StoredResponse {
                status: u16::try_from(status).unwrap_or(500),
                headers: decode_headers(
                    row.try_get::<Option<String>, _>("headers")
                        .ok()
                        .flatten()
                        .as_deref(),
                ),
                body: row
                    .try_get::<Option<Vec<u8>>, _>("body")
                    .ok()
                    .flatten()
                    .unwrap_or_default(),
                booking_id: row
                    .try_get::<Option<String>, _>("booking_id")
                    .ok()
                    .flatten()
                    .and_then(|id| Uuid::parse_str(&id).ok()),
            });
            let stored: String = row.try_get("fingerprint")?;
            let state: String = row.try_get("state")?;
            if let Some(verdict) = judge_existing_key(fingerprint, &stored, &state, response) {
                return Ok(verdict);
            }
            let locked_at: String = row.try_get("locked_at")?;
            if parse_ts("locked_at", &locked_at)? < t.stale_before {
                let taken = sqlx::query(
                    "UPDATE idempotency_keys SET locked_at = ?2 \
                     WHERE subject = ?4 AND key = ?1 AND state = 'in_flight' AND locked_at = ?3",
                )
                .bind(key)
                .bind(ts(t.now))
                .bind(&locked_at)
                .bind(subject)
                .execute(&self.pool)
                .await?
                .rows_affected();
                if taken == 1 {
                    return Ok(KeyClaim::Started);
                }
            }
            return Ok(KeyClaim::InFlight);
        }
        Ok(KeyClaim::InFlight)
    }

    async fn complete_key(
        &self,
        subject: &str,
        key: &str,
        lock: DateTime<Utc>,
        response: &StoredResponse,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE idempotency_keys SET state = 'done', status = ?2, headers = ?3, body = ?4, \
               booking_id = ?7 \
             WHERE subject = ?6 AND key = ?1 AND locked_at = ?5",
        )
        .bind(key)
        .bind(i64::from(response.status))
        .bind(encode_headers(&response.headers))
        .bind(&response.body)
        .bind(ts(lock))
        .bind(subject)
        .bind(response.booking_id.map(|id| id.to_string()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn release_key(&self, subject: &str, key: &str, lock: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "DELETE FROM idempotency_keys \
             WHERE subject = ?3 AND key = ?1 AND state = 'in_flight' AND locked_at = ?2",
        )
        .bind(key)
        .bind(ts(lock))
        .bind(subject)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn purge_keys(&self, created_before: DateTime<Utc>) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM idempotency_keys WHERE created_at < ?1")
                .bind(ts(created_before))
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    async fn purge_published(&self, occurred_before: DateTime<Utc>) -> Result<u64> {
        let sql = "DELETE FROM outbox WHERE published_at IS NOT NULL AND seq < \
                   COALESCE((SELECT seq FROM outbox WHERE occurred_at >= ?1 \
                   ORDER BY seq LIMIT 1), ?2)";
        let purged = sqlx::query(sql)
            .bind(ts(occurred_before))
            // No newer event: every published row is old enough.
            .bind(i64::MAX)
            .execute(&self.pool)
            .await?;
        Ok(purged.rows_affected())
    }

    async fn relay_batch(
        &self,
        limit: u32,
        now: DateTime<Utc>,
        publisher: &dyn Publisher,
    ) -> Result<usize> {
        // One process relays (`berth dev`): no row locking needed. A crash
        // between publish and mark re-publishes the batch (at-least-once).
        let rows = sqlx::query(
            "SELECT seq, id, event_type, booking_id, payload FROM outbox \
             WHERE published_at IS NULL ORDER BY seq LIMIT ?1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut seqs = Vec::with_capacity(rows.len());
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            seqs.push(row.try_get::<i64, _>("seq")?);
            events.push(OutboxEvent {
                id: get_uuid(row, "id")?,
                event_type: row.try_get("event_type")?,
                booking_id: get_uuid(row, "booking_id")?,
                json: row.try_get("payload")?,
            });
        }
        publisher
            .publish(&events)
            .await
            .map_err(|e| BookingError::Internal(format!("publishing events: {e}")))?;
        let mut q = QueryBuilder::<Sqlite>::new("UPDATE outbox SET published_at = ");
        q.push_bind(ts(now)).push(" WHERE seq IN (");
        let mut list = q.separated(", ");
        for seq in seqs {
            list.push_bind(seq);
        }
        q.push(")");
        q.build().execute(&self.pool).await?;
        Ok(events.len())
    }

    async fn anonymise_customer(&self, customer_id: &str, now: DateTime<Utc>) -> Result<u64> {
        // `BEGIN` is deferred: the UPDATE takes the write lock, so a concurrent
        // run waits and then finds nothing left to erase.
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(&format!(
            "UPDATE {TABLE} SET customer_name = NULL, customer_email = NULL, customer_phone = NULL, customer_locale = NULL, \
             version = version + 1, updated_at = max(updated_at, ?2) \
             WHERE customer_id = ?1 AND (customer_name IS NOT NULL OR customer_email IS NOT NULL OR customer_phone IS NOT NULL) \
             RETURNING {}",
            super::COLUMNS.join(", ")
        ))
        .bind(customer_id)
        .bind(ts(now))
        .fetch_all(&mut *tx)
        .await?;
        let bookings = bookings_from_rows(&rows)?;
        sqlx::query(&format!(
            "UPDATE outbox SET payload = json_remove(payload, '$.booking.customer') \
             WHERE booking_id IN (SELECT id FROM {TABLE} WHERE customer_id = ?1) \
             AND json_type(payload, '$.booking.customer') IS NOT NULL"
        ))
        .bind(customer_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM idempotency_keys WHERE subject = ?1 AND state = 'done'")
            .bind(customer_id)
            .execute(&mut *tx)
            .await?;
        // Other callers' replays are kept (deleting would let a retry run
        // again) but lose the customer. The body is cast to text because
        // SQLite reads a BLOB as binary JSONB; the CASE keeps anything that
        // is not a JSON object as it is.
        sqlx::query(&format!(
            "UPDATE idempotency_keys SET body = CASE \
               WHEN NOT json_valid(CAST(body AS TEXT)) THEN body \
               WHEN json_type(CAST(body AS TEXT)) = 'object' \
                 AND json_type(CAST(body AS TEXT), '$.customer') IS NOT NULL \
               THEN CAST(json_remove(CAST(body AS TEXT), '$.customer') AS BLOB) \
               ELSE body END \
             WHERE state = 'done' AND status BETWEEN 200 AND 299 AND headers LIKE ?2 \
             AND booking_id IN (SELECT id FROM {TABLE} WHERE customer_id = ?1)"
        ))
        .bind(customer_id)
        .bind(JSON_HEADERS_LIKE)
        .execute(&mut *tx)
        .await?;
        for booking in &bookings {
            insert_event(
                &mut tx,
                &Event::new(event_type::CUSTOMER_ANONYMISED, booking),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(u64::try_from(bookings.len()).unwrap_or(u64::MAX))
    }

    async fn was_processed(&self, consumer: &str, event_id: Uuid) -> Result<bool> {
        let found =
            sqlx::query("SELECT 1 FROM processed_events WHERE consumer = ?1 AND event_id = ?2")
                .bind(consumer)
                .bind(event_id.to_string())
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    async fn process_once(
        &self,
        consumer: &str,
        event_id: Uuid,
        now: DateTime<Utc>,
        handler: BoxFuture<'_, std::result::Result<(), String>>,
    ) -> Result<bool> {
        // The insert takes SQLite's write lock, so a concurrent duplicate
        // waits for our outcome instead of running the handler too.
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO processed_events (consumer, event_id, processed_at) \
             VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        )
        .bind(consumer)
        .bind(event_id.to_string())
        .bind(ts(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(false);
        }
        handler.await.map_err(BookingError::Handler)?;
        tx.commit().await?;
        Ok(true)
    }
}
