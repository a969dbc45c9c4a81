//! PostgreSQL backend (schema `booking`). Workers claim rows with
//! `FOR UPDATE SKIP LOCKED`, so several replicas can run them side by side.

use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use berth_runtime::postgres::HeldConnections;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgRow};
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{Connection, PgConnection, PgPool, Postgres, QueryBuilder, Row, Transaction};
use uuid::Uuid;

use super::pg_batch::{self, Answer, Batches, NewBooking, NewKey};
use super::{
    JSON_HEADERS_LIKE, KeyAnswer, KeyClaim, KeyTimes, ListFilter, OutboxEvent, Publisher,
    RawBooking, Result, Store, StoredResponse, customer_columns, decode_headers,
    judge_existing_key, policy_columns, saga_columns,
};
use crate::access::Visibility;
use crate::error::BookingError;
use crate::model::{BookingRecord, BookingStatus, Event, event_type};

const TABLE: &str = "booking.bookings";
static SELECT: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {} FROM {TABLE}", super::COLUMNS.join(", ")));
static UPDATE: LazyLock<String> = LazyLock::new(|| super::update_booking_sql(TABLE, '$'));
/// Connections for the group-commit batches (see `pg_batch`).
const BATCH_CONNECTIONS: u32 = pg_batch::CONNECTIONS;

pub(crate) struct PgStore {
    pool: PgPool,
    batches: Batches,
    /// The relay's connection, kept between passes (see `HeldConnections`).
    relay: HeldConnections,
}

impl PgStore {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        // `search_path` puts sqlx's `_sqlx_migrations` in our schema, so other
        // services migrating the same database never see our versions.
        let options = PgConnectOptions::from_str(url)?.options([("search_path", "booking")]);
        let pool = berth_runtime::postgres::pool_options(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        create_schema(&pool).await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        // The group-commit statements run on connections of their own, set
        // up for them: one generic plan per statement (with a custom plan
        // per batch size PostgreSQL planned them again on almost every
        // execution), and no sequential scans (each touches a few rows by
        // key; a plan made while a table was small must not scan it whole
        // once it has grown).
        let batch_options = PgConnectOptions::from_str(url)?.options([
            ("search_path", "booking"),
            ("plan_cache_mode", "force_generic_plan"),
            ("enable_seqscan", "off"),
        ]);
        let batch_pool = berth_runtime::postgres::pool_options(BATCH_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(batch_options)
            .await?;
        let batches = Batches::spawn(&batch_pool);
        let relay = HeldConnections::new(pool.clone(), 1);
        Ok(Self {
            pool,
            batches,
            relay,
        })
    }
}

async fn create_schema(pool: &PgPool) -> Result<()> {
    // Replicas starting together can race on the catalog; the loser retries.
    let mut last = None;
    for _ in 0..3 {
        match sqlx::query("CREATE SCHEMA IF NOT EXISTS booking")
            .execute(pool)
            .await
        {
            Ok(_) => return Ok(()),
            Err(error) => last = Some(error),
        }
    }
    Err(last.map_or_else(|| BookingError::Internal("schema".into()), Into::into))
}

fn bind_booking<'q>(
    query: Query<'q, Postgres, PgArguments>,
    b: &'q BookingRecord,
) -> Query<'q, Postgres, PgArguments> {
    let (step, attempts, next_attempt_at, error) = saga_columns(b);
    let customer = customer_columns(b);
    query
        .bind(b.id)
        .bind(b.resource_id)
        .bind(b.appointment_type_id)
        .bind(b.claim_id)
        .bind(b.start)
        .bind(b.end)
        .bind(i32::try_from(b.seats).unwrap_or(i32::MAX))
        .bind(b.status.as_str())
        .bind(b.price_minor)
        .bind(&b.currency)
        .bind(customer.name)
        .bind(customer.email)
        .bind(b.hold_expires_at)
        .bind(step)
        .bind(attempts)
        .bind(next_attempt_at)
        .bind(error)
        .bind(b.created_at)
        .bind(b.updated_at)
        .bind(b.version)
        .bind(b.customer_id.as_deref())
        .bind(b.resource_owner_id.as_deref())
        .bind(b.status_reason.as_deref())
        .bind(policy_columns(b).0)
        .bind(policy_columns(b).1)
        .bind(customer.phone)
        .bind(customer.locale)
}

fn booking_from_row(row: &PgRow) -> std::result::Result<BookingRecord, sqlx::Error> {
    RawBooking {
        id: row.try_get("id")?,
        resource_id: row.try_get("resource_id")?,
        appointment_type_id: row.try_get("appointment_type_id")?,
        claim_id: row.try_get("claim_id")?,
        start: row.try_get("start_at")?,
        end: row.try_get("end_at")?,
        seats: i64::from(row.try_get::<i32, _>("seats")?),
        status: row.try_get("status")?,
        price_minor: row.try_get("price_minor")?,
        currency: row.try_get("currency")?,
        customer_name: row.try_get("customer_name")?,
        customer_email: row.try_get("customer_email")?,
        customer_phone: row.try_get("customer_phone")?,
        customer_locale: row.try_get("customer_locale")?,
        hold_expires_at: row.try_get("hold_expires_at")?,
        saga_step: row.try_get("saga_step")?,
        saga_attempts: i64::from(row.try_get::<i32, _>("saga_attempts")?),
        next_attempt_at: row.try_get("next_attempt_at")?,
        saga_error: row.try_get("saga_error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        version: row.try_get("version")?,
        customer_id: row.try_get("customer_id")?,
        resource_owner_id: row.try_get("resource_owner_id")?,
        status_reason: row.try_get("status_reason")?,
        refund_notice_secs: row.try_get("refund_notice_secs")?,
        late_refund_percent: row
            .try_get::<Option<i16>, _>("late_refund_percent")?
            .map(i64::from),
    }
    .into_record()
}

fn bookings_from_rows(rows: &[PgRow]) -> Result<Vec<BookingRecord>> {
    Ok(rows
        .iter()
        .map(booking_from_row)
        .collect::<std::result::Result<_, _>>()?)
}

async fn insert_event(tx: &mut Transaction<'_, Postgres>, event: &Event) -> Result<()> {
    sqlx::query(
        "INSERT INTO booking.outbox (id, booking_id, event_type, payload, occurred_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(event.id)
    .bind(event.booking_id)
    .bind(&event.event_type)
    .bind(Json(event))
    .bind(event.occurred_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn insert_booking(&self, booking: &BookingRecord, event: &Event) -> Result<()> {
        // One statement is one transaction: the booking and its event commit
        // together or not at all (batched with concurrent bookings).
        self.batches
            .insert_booking(NewBooking {
                booking: booking.clone(),
                event: event.clone(),
                answer: None,
            })
            .await
    }

    async fn insert_booking_answered(
        &self,
        booking: &BookingRecord,
        event: &Event,
        answer: KeyAnswer<'_>,
    ) -> Result<()> {
        self.batches
            .insert_booking(NewBooking {
                booking: booking.clone(),
                event: event.clone(),
                answer: Some(Answer {
                    subject: answer.subject.to_owned(),
                    key: answer.key.to_owned(),
                    lock: answer.lock,
                    response: answer.response.clone(),
                }),
            })
            .await
    }

    async fn get_booking(&self, id: Uuid) -> Result<Option<BookingRecord>> {
        let row = sqlx::query(&format!("{} WHERE id = $1", *SELECT))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(booking_from_row).transpose()?)
    }

    async fn list_bookings(&self, f: &ListFilter) -> Result<Vec<BookingRecord>> {
        let mut q = QueryBuilder::<Postgres>::new(format!("{} WHERE TRUE", *SELECT));
        match &f.visible {
            Visibility::All => {}
            Visibility::Only { subject, .. } if subject.is_empty() => {
                q.push(" AND FALSE");
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
            q.push(" AND resource_id = ").push_bind(resource_id);
        }
        match f.status {
            Some(BookingStatus::Expired) => {
                q.push(" AND (status = 'expired' OR (status IN ('held', 'pending_payment') AND hold_expires_at <= ")
                    .push_bind(f.now)
                    .push("))");
            }
            Some(status) if status.is_hold() => {
                q.push(" AND status = ")
                    .push_bind(status.as_str())
                    .push(" AND (hold_expires_at IS NULL OR hold_expires_at > ")
                    .push_bind(f.now)
                    .push(")");
            }
            Some(status) => {
                q.push(" AND status = ").push_bind(status.as_str());
            }
            None => {}
        }
        if let Some(from) = f.from {
            q.push(" AND start_at >= ").push_bind(from);
        }
        if let Some(to) = f.to {
            q.push(" AND start_at < ").push_bind(to);
        }
        if let Some((start, id)) = f.after {
            q.push(" AND (start_at > ")
                .push_bind(start)
                .push(" OR (start_at = ")
                .push_bind(start)
                .push(" AND id > ")
                .push_bind(id)
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
            "UPDATE {TABLE} SET next_attempt_at = $2 WHERE id IN (\
                 SELECT id FROM {TABLE} WHERE saga_step IS NOT NULL AND next_attempt_at <= $1 \
                 ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING {}",
            super::COLUMNS.join(", ")
        ))
        .bind(now)
        .bind(lease_until)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        bookings_from_rows(&rows)
    }

    async fn lapsed_holds(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<BookingRecord>> {
        let rows = sqlx::query(&format!(
            "{} WHERE status IN ('held', 'pending_payment') AND hold_expires_at <= $1 \
             ORDER BY hold_expires_at LIMIT $2",
            *SELECT
        ))
        .bind(now)
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
        // The common case, a new key, is one batched insert.
        let fresh = NewKey {
            subject: subject.to_owned(),
            key: key.to_owned(),
            fingerprint: fingerprint.to_owned(),
            now: t.now,
        };
        if self.batches.reserve_key(fresh).await? {
            return Ok(KeyClaim::Started);
        }
        // Retried only if the row vanished between our insert and select.
        for _ in 0..3 {
            // A key older than the TTL is forgotten: it is replaced as if it
            // had been deleted first (a concurrent upsert waits for our row
            // and then finds it fresh, so only one of us starts).
            let inserted = sqlx::query(
                "INSERT INTO booking.idempotency_keys AS k \
                 (subject, key, fingerprint, state, created_at, locked_at) \
                 VALUES ($4, $1, $2, 'in_flight', $3, $3) ON CONFLICT (subject, key) DO UPDATE \
                 SET fingerprint = EXCLUDED.fingerprint, state = 'in_flight', status = NULL, \
                   headers = NULL, body = NULL, booking_id = NULL, \
                   created_at = EXCLUDED.created_at, \
                   locked_at = EXCLUDED.locked_at \
                 WHERE k.created_at < $5",
            )
            .bind(key)
            .bind(fingerprint)
            .bind(t.now)
            .bind(subject)
            .bind(t.expired_before)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if inserted == 1 {
                return Ok(KeyClaim::Started);
            }
            let Some(row) = sqlx::query(
                "SELECT fingerprint, state, status, headers, body, booking_id, locked_at \
                 FROM booking.idempotency_keys WHERE subject = $2 AND key = $1",
            )
            .bind(key)
            .bind(subject)
            .fetch_optional(&self.pool)
            .await?
            else {
                continue;
            };
            let status: Option<i32> = row.try_get("status")?;
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
                booking_id: row.try_get("booking_id").ok().flatten(),
            });
            let stored: String = row.try_get("fingerprint")?;
            let state: String = row.try_get("state")?;
            if let Some(verdict) = judge_existing_key(fingerprint, &stored, &state, response) {
                return Ok(verdict);
            }
            let locked_at: DateTime<Utc> = row.try_get("locked_at")?;
            if locked_at < t.stale_before {
                let taken = sqlx::query(
                    "UPDATE booking.idempotency_keys SET locked_at = $2 \
                     WHERE subject = $4 AND key = $1 AND state = 'in_flight' AND locked_at = $3",
                )
                .bind(key)
                .bind(t.now)
                .bind(locked_at)
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
        self.batches
            .store_answer(Answer {
                subject: subject.to_owned(),
                key: key.to_owned(),
                lock,
                response: response.clone(),
            })
            .await
    }

    async fn release_key(&self, subject: &str, key: &str, lock: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "DELETE FROM booking.idempotency_keys \
             WHERE subject = $3 AND key = $1 AND state = 'in_flight' AND locked_at = $2",
        )
        .bind(key)
        .bind(lock)
        .bind(subject)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn purge_keys(&self, created_before: DateTime<Utc>) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM booking.idempotency_keys WHERE created_at < $1")
                .bind(created_before)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    async fn purge_published(&self, occurred_before: DateTime<Utc>) -> Result<u64> {
        let sql = "DELETE FROM booking.outbox WHERE published_at IS NOT NULL AND seq < \
                   COALESCE((SELECT seq FROM booking.outbox WHERE occurred_at >= $1 \
                   ORDER BY seq LIMIT 1), $2)";
        let purged = sqlx::query(sql)
            .bind(occurred_before)
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
        let mut conn = self.relay.take().await?;
        let outcome = relay_pass(&mut conn, limit, now, publisher).await;
        conn.give_back(outcome.as_ref().err().and_then(BookingError::as_database));
        outcome
    }

    async fn anonymise_customer(&self, customer_id: &str, now: DateTime<Utc>) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        // Row locks make a concurrent run wait, then re-check the WHERE and
        // find nothing left: one event per booking even then.
        let rows = sqlx::query(&format!(
            "UPDATE {TABLE} SET customer_name = NULL, customer_email = NULL, customer_phone = NULL, customer_locale = NULL, \
             version = version + 1, updated_at = GREATEST(updated_at, $2) \
             WHERE customer_id = $1 AND (customer_name IS NOT NULL OR customer_email IS NOT NULL OR customer_phone IS NOT NULL) \
             RETURNING {}",
            super::COLUMNS.join(", ")
        ))
        .bind(customer_id)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let bookings = bookings_from_rows(&rows)?;
        sqlx::query(&format!(
            "UPDATE booking.outbox SET payload = payload #- '{{booking,customer}}' \
             WHERE booking_id IN (SELECT id FROM {TABLE} WHERE customer_id = $1) \
             AND payload->'booking' ? 'customer'"
        ))
        .bind(customer_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM booking.idempotency_keys WHERE subject = $1 AND state = 'done'")
            .bind(customer_id)
            .execute(&mut *tx)
            .await?;
        // Other callers' replays are kept (deleting would let a retry run
        // again) but lose the customer. Only 2xx JSON bodies are cast: here
        // they are always booking JSON. The CASE leaves non-objects alone.
        sqlx::query(&format!(
            "UPDATE booking.idempotency_keys SET body = CASE \
               WHEN jsonb_typeof(convert_from(body, 'UTF8')::jsonb) = 'object' \
                 AND convert_from(body, 'UTF8')::jsonb ? 'customer' \
               THEN convert_to((convert_from(body, 'UTF8')::jsonb - 'customer')::text, 'UTF8') \
               ELSE body END \
             WHERE state = 'done' AND status BETWEEN 200 AND 299 AND headers LIKE $2 \
             AND booking_id IN (SELECT id FROM {TABLE} WHERE customer_id = $1)"
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
        let found = sqlx::query(
            "SELECT 1 FROM booking.processed_events WHERE consumer = $1 AND event_id = $2",
        )
        .bind(consumer)
        .bind(event_id)
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
        // The row lock taken by the insert makes a concurrent duplicate wait
        // for our outcome instead of running the handler too.
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO booking.processed_events (consumer, event_id, processed_at) \
             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(consumer)
        .bind(event_id)
        .bind(now)
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

/// One relay pass on `conn`: the rows stay locked while we publish; if this
/// relay dies, the transaction rolls back and another relay publishes them
/// again. They are marked published in the same statement that picks them,
/// but that is only committed after publishing succeeded (a failure rolls
/// it back).
async fn relay_pass(
    conn: &mut PgConnection,
    limit: u32,
    now: DateTime<Utc>,
    publisher: &dyn Publisher,
) -> Result<usize> {
    let mut tx = conn.begin().await?;
    let rows = sqlx::query(
        "UPDATE booking.outbox SET published_at = $2 WHERE seq IN (\
             SELECT seq FROM booking.outbox WHERE published_at IS NULL \
             ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED) \
         RETURNING seq, id, event_type, booking_id, payload::text AS json",
    )
    .bind(i64::from(limit))
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        // Nothing changed; ending the transaction is all that is left.
        tx.commit().await?;
        return Ok(0);
    }
    let mut batch = Vec::with_capacity(rows.len());
    for row in &rows {
        batch.push((
            row.try_get::<i64, _>("seq")?,
            OutboxEvent {
                id: row.try_get("id")?,
                event_type: row.try_get("event_type")?,
                booking_id: row.try_get("booking_id")?,
                json: row.try_get("json")?,
            },
        ));
    }
    // RETURNING has no order; events go out in outbox order.
    batch.sort_unstable_by_key(|(seq, _)| *seq);
    let events: Vec<OutboxEvent> = batch.into_iter().map(|(_, event)| event).collect();
    publisher
        .publish(&events)
        .await
        .map_err(|e| BookingError::Internal(format!("publishing events: {e}")))?;
    tx.commit().await?;
    Ok(events.len())
}
