//! Storage: one set of runtime-checked queries over `sqlx::Any`, on
//! PostgreSQL (schema `payment`) or SQLite (`berth dev`), chosen by URL, as
//! the user service does. Every change of a payment is a compare-and-set on
//! its version, written with its step-history row and its outbox event in
//! one transaction.

use berth_settlement::FailureReason;
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};
use uuid::Uuid;

use crate::error::PaymentError;
use crate::model::{Payment, PaymentEvent};
use crate::saga::rules::State;

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

const SCHEMA: &str = "payment";

type Result<T> = std::result::Result<T, PaymentError>;

const COLUMNS: &str = "id, booking_id, customer_id, resource_owner_id, amount_minor, currency, \
    intent_id, client_secret, create_attempt, state, failure, captured_minor, refunded_minor, \
    refund_due_minor, refund_seq, cancellation_refund_minor, step_due_us, attempts, last_error, \
    drift, created_us, updated_us, version";

/// What a lease sets besides `step_due_us`: a new version (so a runner
/// that held the row before cannot write over it) and the time.
const LEASE_SET: &str = "version = version + 1, \
    updated_us = CASE WHEN updated_us < $2 THEN $2 ELSE updated_us END";

#[derive(Clone)]
pub(crate) struct Store {
    pool: AnyPool,
    postgres: bool,
}

pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn time(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn decode(column: &str, what: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: what.to_string().into(),
    }
}

fn uuid(row: &AnyRow, column: &str) -> std::result::Result<Uuid, sqlx::Error> {
    let raw: String = row.try_get(column)?;
    raw.parse().map_err(|e| decode(column, e))
}

fn payment(row: &AnyRow) -> std::result::Result<Payment, sqlx::Error> {
    let state: String = row.try_get("state")?;
    let failure: Option<String> = row.try_get("failure")?;
    let int = |column: &str| -> std::result::Result<i32, sqlx::Error> {
        let value: i64 = row.try_get(column)?;
        i32::try_from(value).map_err(|e| decode(column, e))
    };
    Ok(Payment {
        id: uuid(row, "id")?,
        booking_id: uuid(row, "booking_id")?,
        customer_id: row.try_get("customer_id")?,
        resource_owner_id: row.try_get("resource_owner_id")?,
        amount_minor: row.try_get("amount_minor")?,
        currency: row.try_get("currency")?,
        intent_id: row.try_get("intent_id")?,
        client_secret: row.try_get("client_secret")?,
        create_attempt: int("create_attempt")?,
        state: State::parse(&state).ok_or_else(|| decode("state", &state))?,
        failure: failure
            .map(|f| FailureReason::parse(&f).ok_or_else(|| decode("failure", f.as_str())))
            .transpose()?,
        captured_minor: row.try_get("captured_minor")?,
        refunded_minor: row.try_get("refunded_minor")?,
        refund_due_minor: row.try_get("refund_due_minor")?,
        refund_seq: int("refund_seq")?,
        cancellation_refund_minor: row.try_get("cancellation_refund_minor")?,
        step_due: row.try_get::<Option<i64>, _>("step_due_us")?.map(time),
        attempts: int("attempts")?,
        last_error: row.try_get("last_error")?,
        drift: row.try_get("drift")?,
        created_at: time(row.try_get("created_us")?),
        updated_at: time(row.try_get("updated_us")?),
        version: row.try_get("version")?,
    })
}

/// A Stripe event as the inbox keeps it.
#[derive(Debug, Clone)]
pub(crate) struct StripeEvent {
    pub id: String,
    pub event_type: String,
    pub object_id: Option<String>,
}

/// One payment's step history entry.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Step {
    pub at: DateTime<Utc>,
    pub from: String,
    pub to: String,
    pub note: String,
}

impl Store {
    pub(crate) async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let db = berth_runtime::any_db::open(url, SCHEMA, max_connections)
            .await
            .map_err(|e| match e {
                berth_runtime::any_db::AnyDbError::Url => PaymentError::Config(e.to_string()),
                berth_runtime::any_db::AnyDbError::Database(db) => db.into(),
            })?;
        MIGRATIONS.run(&db.pool).await?;
        Ok(Self {
            pool: db.pool,
            postgres: db.postgres,
        })
    }

    pub(crate) async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Inserts a new payment; `false` if its booking already has one.
    pub(crate) async fn insert(&self, p: &Payment) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "INSERT INTO payments ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23) \
             ON CONFLICT (booking_id) DO NOTHING"
        );
        let inserted = bind(sqlx::query(&sql), p)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if inserted {
            step(&mut tx, p, "new", "payment created").await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    pub(crate) async fn get(&self, id: Uuid) -> Result<Option<Payment>> {
        self.one("id", &id.to_string()).await
    }

    pub(crate) async fn by_booking(&self, booking_id: Uuid) -> Result<Option<Payment>> {
        self.one("booking_id", &booking_id.to_string()).await
    }

    pub(crate) async fn by_intent(&self, intent_id: &str) -> Result<Option<Payment>> {
        self.one("intent_id", intent_id).await
    }

    async fn one(&self, column: &str, value: &str) -> Result<Option<Payment>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM payments WHERE {column} = $1"
        ))
        .bind(value)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(payment).transpose()?)
    }

    /// Writes `next` over the version `next.version - 1`, with a history
    /// row (`from` → `next.state`, `note`) and `event`, in one transaction.
    /// `false`: someone else wrote first.
    pub(crate) async fn update(
        &self,
        next: &Payment,
        from: State,
        note: &str,
        event: Option<&PaymentEvent>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let sets: Vec<String> = COLUMNS
            .split(", ")
            .enumerate()
            .skip(1)
            .map(|(i, column)| format!("{column} = ${}", i + 1))
            .collect();
        let sql = format!(
            "UPDATE payments SET {} WHERE id = $1 AND version = $24",
            sets.join(", ")
        );
        let written = bind(sqlx::query(&sql), next)
            .bind(next.version - 1)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if !written {
            return Ok(false);
        }
        if from != next.state || event.is_some() {
            step(&mut tx, next, from.as_str(), note).await?;
        }
        if let Some(event) = event {
            let payload = serde_json::to_string(event)
                .map_err(|e| PaymentError::Internal(format!("encoding an event: {e}")))?;
            sqlx::query(
                "INSERT INTO outbox (id, payment_id, booking_id, event_type, payload, created_us) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(event.id.to_string())
            .bind(event.payment_id.to_string())
            .bind(event.booking_id.to_string())
            .bind(&event.event_type)
            .bind(payload)
            .bind(micros(event.occurred_at))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Payments whose step is due, oldest first.
    pub(crate) async fn due(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<Uuid>> {
        let rows = sqlx::query(
            "SELECT id FROM payments WHERE step_due_us IS NOT NULL AND step_due_us <= $1 \
             ORDER BY step_due_us LIMIT $2",
        )
        .bind(micros(now))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| uuid(r, "id").map_err(PaymentError::from))
            .collect()
    }

    /// Leases the payment if its step is due: `step_due` moves to
    /// `lease_until`, so no other runner takes it until then. `None`: not
    /// due, or another runner holds it.
    pub(crate) async fn lease(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<Payment>> {
        let row = sqlx::query(&format!(
            "UPDATE payments SET step_due_us = $1, {LEASE_SET} \
             WHERE id = $3 AND step_due_us IS NOT NULL AND step_due_us <= $2 RETURNING {COLUMNS}"
        ))
        .bind(micros(lease_until))
        .bind(micros(now))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(payment).transpose()?)
    }

    /// Leases the payment of `intent_id` if it waits in one of `states` (a
    /// Stripe event arrived: it looks at its intent again), taking the row
    /// from any runner looking at it now. Returns the leased payment.
    pub(crate) async fn wake(
        &self,
        intent_id: &str,
        states: &[State],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<Payment>> {
        wake(&self.pool, intent_id, states, now, lease_until).await
    }

    /// Stores a Stripe event once and, in the same transaction, wakes the
    /// payment of its intent (see `wake`), so the event counts as applied
    /// as soon as it is stored. `None`: the event was stored before.
    pub(crate) async fn receive_stripe_event(
        &self,
        event: &StripeEvent,
        payload: &str,
        states: &[State],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<Option<Payment>>> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO stripe_events (id, event_type, object_id, payload, received_us, \
             processed_us) VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&event.id)
        .bind(&event.event_type)
        .bind(event.object_id.as_deref())
        .bind(payload)
        .bind(micros(now))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !inserted {
            return Ok(None);
        }
        let woken = match &event.object_id {
            Some(intent_id) => wake(&mut *tx, intent_id, states, now, lease_until).await?,
            None => None,
        };
        tx.commit().await?;
        Ok(Some(woken))
    }

    pub(crate) async fn stripe_event_processed(&self, id: &str, now: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE stripe_events SET processed_us = $1 WHERE id = $2")
            .bind(micros(now))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stored events not yet applied (the process died after answering).
    pub(crate) async fn unprocessed_stripe_events(
        &self,
        received_before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<StripeEvent>> {
        let rows = sqlx::query(
            "SELECT id, event_type, object_id FROM stripe_events \
             WHERE processed_us IS NULL AND received_us < $1 ORDER BY received_us LIMIT $2",
        )
        .bind(micros(received_before))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StripeEvent {
                    id: r.try_get("id")?,
                    event_type: r.try_get("event_type")?,
                    object_id: r.try_get("object_id")?,
                })
            })
            .collect()
    }

    /// Payments still awaited that were created before `before`.
    pub(crate) async fn awaiting_created_before(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Payment>> {
        self.select(
            "state = 'awaiting_payment' AND created_us < $1 ORDER BY created_us LIMIT $2",
            before,
            limit,
        )
        .await
    }

    /// Payments in a state with a step (not waiting, not ended) that keep
    /// failing it or have not moved since `before`.
    pub(crate) async fn moving_since_before(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Payment>> {
        self.select(
            "state NOT IN ('awaiting_payment', 'paid', 'failed', 'refunded') \
             AND (attempts >= 5 OR updated_us < $1) ORDER BY updated_us LIMIT $2",
            before,
            limit,
        )
        .await
    }

    async fn select(
        &self,
        filter: &str,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Payment>> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM payments WHERE {filter}"))
            .bind(micros(before))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(payment)
            .collect::<std::result::Result<_, _>>()?)
    }

    /// Every payment, in pages by id (the money checker).
    pub(crate) async fn page(&self, after: Option<Uuid>, limit: i64) -> Result<Vec<Payment>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM payments WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after.map(|a| a.to_string()).unwrap_or_default())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(payment)
            .collect::<std::result::Result<_, _>>()?)
    }

    pub(crate) async fn steps(&self, payment_id: Uuid) -> Result<Vec<Step>> {
        let rows = sqlx::query(
            "SELECT at_us, from_state, to_state, note FROM payment_steps \
             WHERE payment_id = $1 ORDER BY version",
        )
        .bind(payment_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Step {
                    at: time(r.try_get("at_us")?),
                    from: r.try_get("from_state")?,
                    to: r.try_get("to_state")?,
                    note: r.try_get("note")?,
                })
            })
            .collect()
    }

    /// Records a staff refund request; `Ok(None)` if the key is new, what
    /// was first asked for under it otherwise (`Some(None)`: everything).
    pub(crate) async fn refund_request(
        &self,
        payment_id: Uuid,
        key: &str,
        requested_by: &str,
        amount_minor: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<Option<Option<i64>>> {
        let done = sqlx::query(
            "INSERT INTO refund_requests (payment_id, idempotency_key, requested_by, amount_minor, \
             created_us) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(payment_id.to_string())
        .bind(key)
        .bind(requested_by)
        .bind(amount_minor)
        .bind(micros(now))
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(None);
        }
        let first: Option<i64> = sqlx::query_scalar(
            "SELECT amount_minor FROM refund_requests WHERE payment_id = $1 AND idempotency_key = $2",
        )
        .bind(payment_id.to_string())
        .bind(key)
        .fetch_one(&self.pool)
        .await?;
        Ok(Some(first))
    }

    pub(crate) async fn forget_refund_request(&self, payment_id: Uuid, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM refund_requests WHERE payment_id = $1 AND idempotency_key = $2")
            .bind(payment_id.to_string())
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Whether `consumer` already handled `event_id`.
    pub(crate) async fn was_processed(&self, consumer: &str, event_id: Uuid) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT processed_us FROM processed_events WHERE consumer = $1 AND event_id = $2",
        )
        .bind(consumer)
        .bind(event_id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    pub(crate) async fn mark_processed(
        &self,
        consumer: &str,
        event_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO processed_events (consumer, event_id, processed_us) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(consumer)
        .bind(event_id.to_string())
        .bind(micros(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Publishes up to `limit` unpublished events in order and marks them
    /// only after `publish` succeeded. Returns how many.
    pub(crate) async fn relay<F, Fut>(
        &self,
        limit: i64,
        now: DateTime<Utc>,
        publish: F,
    ) -> Result<usize>
    where
        F: FnOnce(Vec<(String, String, String)>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<(), String>>,
    {
        // Rows stay locked while publishing (PostgreSQL), so replicas do not
        // send them twice; SQLite has one process.
        let lock = if self.postgres {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(&format!(
            "SELECT id, event_type, payload FROM outbox WHERE published_us IS NULL \
             ORDER BY created_us, id LIMIT $1{lock}"
        ))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let events: Vec<(String, String, String)> = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    r.try_get("event_type")?,
                    r.try_get("payload")?,
                ))
            })
            .collect::<std::result::Result<_, sqlx::Error>>()?;
        if events.is_empty() {
            return Ok(0);
        }
        let ids: Vec<String> = events.iter().map(|e| e.0.clone()).collect();
        publish(events).await.map_err(PaymentError::Delivery)?;
        let placeholders: Vec<String> = (2..ids.len() + 2).map(|i| format!("${i}")).collect();
        let sql = format!(
            "UPDATE outbox SET published_us = $1 WHERE id IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(micros(now));
        for id in &ids {
            query = query.bind(id);
        }
        query.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(ids.len())
    }

    /// Deletes published events and handled Stripe events older than `before`.
    pub(crate) async fn purge(&self, before: DateTime<Utc>) -> Result<u64> {
        let mut purged = 0;
        for sql in [
            "DELETE FROM outbox WHERE published_us IS NOT NULL AND published_us < $1",
            "DELETE FROM stripe_events WHERE processed_us IS NOT NULL AND processed_us < $1",
            "DELETE FROM processed_events WHERE processed_us < $1",
        ] {
            purged += sqlx::query(sql)
                .bind(micros(before))
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(purged)
    }
}

async fn wake<'e, E: sqlx::Executor<'e, Database = Any>>(
    executor: E,
    intent_id: &str,
    states: &[State],
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<Option<Payment>> {
    if states.is_empty() {
        return Ok(None);
    }
    // The names are the states' own constants, never input.
    let states: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
    let row = sqlx::query(&format!(
        "UPDATE payments SET step_due_us = $1, {LEASE_SET} \
         WHERE intent_id = $3 AND state IN ({}) RETURNING {COLUMNS}",
        states.join(", ")
    ))
    .bind(micros(lease_until))
    .bind(micros(now))
    .bind(intent_id)
    .fetch_optional(executor)
    .await?;
    Ok(row.as_ref().map(payment).transpose()?)
}

fn bind<'q>(
    query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    p: &'q Payment,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    query
        .bind(p.id.to_string())
        .bind(p.booking_id.to_string())
        .bind(p.customer_id.as_deref())
        .bind(p.resource_owner_id.as_deref())
        .bind(p.amount_minor)
        .bind(p.currency.as_str())
        .bind(p.intent_id.as_deref())
        .bind(p.client_secret.as_deref())
        .bind(i64::from(p.create_attempt))
        .bind(p.state.as_str())
        .bind(p.failure.map(|f| f.as_str()))
        .bind(p.captured_minor)
        .bind(p.refunded_minor)
        .bind(p.refund_due_minor)
        .bind(i64::from(p.refund_seq))
        .bind(p.cancellation_refund_minor)
        .bind(p.step_due.map(micros))
        .bind(i64::from(p.attempts))
        .bind(p.last_error.as_deref())
        .bind(p.drift.as_deref())
        .bind(micros(p.created_at))
        .bind(micros(p.updated_at))
        .bind(p.version)
}

async fn step(tx: &mut Transaction<'_, Any>, p: &Payment, from: &str, note: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO payment_steps (payment_id, version, at_us, from_state, to_state, note) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(p.id.to_string())
    .bind(p.version)
    .bind(micros(p.updated_at))
    .bind(from)
    .bind(p.state.as_str())
    .bind(note)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
