//! Group commit for the PostgreSQL store: the statements every booking
//! request runs (reserve its idempotency key, write the booking with its
//! outbox row and stored answer, store a non-booking answer) are gathered
//! across concurrent requests into one statement each. Each outcome is the
//! one the single statement would have had: a statement that fails for the
//! batch is run again one item at a time, so one bad row fails alone.

use std::collections::HashSet;
use std::sync::Arc;

use berth_runtime::batch::Batcher;
use berth_runtime::postgres::HeldConnections;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{
    Result, StoredResponse, customer_columns, encode_headers, policy_columns, saga_columns,
};
use crate::error::BookingError;
use crate::model::{BookingRecord, Event};

const MAX_BATCH: usize = 64;
/// Batches of one kind in flight at once (each holds one connection). One
/// is classic group commit: while a statement runs, the next batch gathers,
/// so batches grow with the load (measured best in P1, docs/benchmarks.md).
const IN_FLIGHT: usize = 1;
/// Connections the batches need: three kinds, `IN_FLIGHT` each.
pub(super) const CONNECTIONS: u32 = 3 * IN_FLIGHT as u32;

/// A new idempotency key to reserve.
pub(super) struct NewKey {
    pub subject: String,
    pub key: String,
    pub fingerprint: String,
    pub now: DateTime<Utc>,
}

/// A response to store under a key, if the key is still locked by `lock`.
#[derive(Clone)]
pub(super) struct Answer {
    pub subject: String,
    pub key: String,
    pub lock: DateTime<Utc>,
    pub response: StoredResponse,
}

/// A new booking, its event, and (under an idempotency key) its answer.
pub(super) struct NewBooking {
    pub booking: BookingRecord,
    pub event: Event,
    pub answer: Option<Answer>,
}

type Outcome = Result<()>;

#[derive(Clone)]
pub(super) struct Batches {
    keys: Batcher<NewKey, Result<bool>>,
    bookings: Batcher<NewBooking, Outcome>,
    answers: Batcher<Answer, Outcome>,
}

impl Batches {
    pub fn spawn(pool: &PgPool) -> Self {
        // Every batch runs on a held connection (see `HeldConnections`).
        let db = Arc::new(HeldConnections::new(pool.clone(), CONNECTIONS as usize));
        Self {
            keys: held_batcher("booking_keys", &db, |conn, keys| {
                Box::pin(reserve_keys(conn, keys))
            }),
            bookings: held_batcher("booking_writes", &db, |conn, items| {
                Box::pin(insert_bookings(conn, items))
            }),
            answers: held_batcher("booking_answers", &db, |conn, items| {
                Box::pin(store_answers(conn, items))
            }),
        }
    }

    /// Inserts the key as in flight if it does not exist; `false` if it
    /// does (the caller then looks at it).
    pub async fn reserve_key(&self, key: NewKey) -> Result<bool> {
        flatten(self.keys.submit(key).await)
    }

    pub async fn insert_booking(&self, item: NewBooking) -> Result<()> {
        flatten(self.bookings.submit(item).await)
    }

    pub async fn store_answer(&self, answer: Answer) -> Result<()> {
        flatten(self.answers.submit(answer).await)
    }
}

/// A batch that runs on the connection it is given.
type OnConnection<I, T> = for<'c> fn(&'c mut PgConnection, Vec<I>) -> BoxFuture<'c, Vec<Result<T>>>;

/// A batcher whose batches run on a held connection of `db`. Without one,
/// every item of the batch fails as the database being unavailable (503,
/// retry).
fn held_batcher<I, T>(
    name: &'static str,
    db: &Arc<HeldConnections>,
    batch: OnConnection<I, T>,
) -> Batcher<I, Result<T>>
where
    I: Send + 'static,
    T: Send + 'static,
{
    let db = db.clone();
    Batcher::spawn(name, MAX_BATCH, IN_FLIGHT, move |items: Vec<I>| {
        let db = db.clone();
        async move {
            let mut conn = match db.take().await {
                Ok(conn) => conn,
                Err(error) => {
                    let message = error.to_string();
                    return items
                        .iter()
                        .map(
                            |_| Err(sqlx::Error::Io(std::io::Error::other(message.clone())).into()),
                        )
                        .collect();
                }
            };
            let outcomes = batch(&mut conn, items).await;
            let failed = outcomes
                .iter()
                .find_map(|outcome| outcome.as_ref().err().and_then(BookingError::as_database));
            conn.give_back(failed);
            outcomes
        }
    })
}

fn flatten<T>(
    outcome: std::result::Result<Result<T>, berth_runtime::batch::BatchError>,
) -> Result<T> {
    outcome.unwrap_or_else(|lost| Err(BookingError::Internal(lost.to_string())))
}

/// One `INSERT … ON CONFLICT DO NOTHING` for the batch. A key twice in one
/// batch goes in once; the other copies report "exists" and so see the
/// first one in flight, exactly as if they had come a moment later.
async fn reserve_keys(conn: &mut PgConnection, keys: Vec<NewKey>) -> Vec<Result<bool>> {
    let mut seen = HashSet::new();
    let first: Vec<bool> = keys
        .iter()
        .map(|k| seen.insert((k.subject.as_str(), k.key.as_str())))
        .collect();
    let fresh: Vec<&NewKey> = keys
        .iter()
        .zip(&first)
        .filter(|(_, f)| **f)
        .map(|(k, _)| k)
        .collect();
    let inserted: std::result::Result<Vec<(String, String)>, sqlx::Error> = sqlx::query_as(
        "INSERT INTO booking.idempotency_keys (subject, key, fingerprint, state, created_at, locked_at) \
         SELECT s, k, f, 'in_flight', t, t \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[]) AS x(s, k, f, t) \
         ON CONFLICT (subject, key) DO NOTHING RETURNING subject, key",
    )
    .bind(fresh.iter().map(|k| k.subject.clone()).collect::<Vec<_>>())
    .bind(fresh.iter().map(|k| k.key.clone()).collect::<Vec<_>>())
    .bind(fresh.iter().map(|k| k.fingerprint.clone()).collect::<Vec<_>>())
    .bind(fresh.iter().map(|k| k.now).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await;
    match inserted {
        Ok(rows) => {
            let inserted: HashSet<(String, String)> = rows.into_iter().collect();
            keys.iter()
                .zip(first)
                .map(|(k, first)| {
                    Ok(first && inserted.contains(&(k.subject.clone(), k.key.clone())))
                })
                .collect()
        }
        // E.g. a value the database refuses: each key on its own, so only
        // that one fails.
        Err(_) if keys.len() > 1 => {
            let mut outcomes = Vec::with_capacity(keys.len());
            for key in keys {
                outcomes.push(
                    Box::pin(reserve_keys(&mut *conn, vec![key]))
                        .await
                        .remove(0),
                );
            }
            outcomes
        }
        Err(error) => vec![Err(error.into())],
    }
}

/// The bookings, their outbox rows and their keys' answers in one
/// statement (one transaction).
async fn insert_bookings(conn: &mut PgConnection, items: Vec<NewBooking>) -> Vec<Outcome> {
    match insert_bookings_at_once(&mut *conn, &items).await {
        Ok(()) => items.iter().map(|_| Ok(())).collect(),
        Err(_) if items.len() > 1 => {
            let mut outcomes = Vec::with_capacity(items.len());
            for item in items {
                outcomes.push(
                    Box::pin(insert_bookings(&mut *conn, vec![item]))
                        .await
                        .remove(0),
                );
            }
            outcomes
        }
        Err(error) => vec![Err(error)],
    }
}

async fn insert_bookings_at_once(conn: &mut PgConnection, items: &[NewBooking]) -> Result<()> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "WITH b AS (INSERT INTO booking.bookings ({}) \
               SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], \
                 $5::timestamptz[], $6::timestamptz[], $7::int4[], $8::text[], $9::int8[], \
                 $10::text[], $11::text[], $12::text[], $13::timestamptz[], $14::text[], \
                 $15::int4[], $16::timestamptz[], $17::text[], $18::timestamptz[], \
                 $19::timestamptz[], $20::int8[], $21::text[], $22::text[], $23::text[], \
                 $24::int8[], $25::int2[], $26::text[], $27::text[])), \
             o AS (INSERT INTO booking.outbox (id, booking_id, event_type, payload, occurred_at) \
               SELECT i, b, t, p::jsonb, o FROM unnest($28::uuid[], $29::uuid[], $30::text[], \
                 $31::text[], $32::timestamptz[]) WITH ORDINALITY AS x(i, b, t, p, o, n) \
               ORDER BY n) \
             UPDATE booking.idempotency_keys k SET state = 'done', status = a.status, \
               headers = a.headers, body = a.body, booking_id = a.booking_id \
             FROM unnest($33::text[], $34::text[], $35::timestamptz[], $36::int4[], \
               $37::text[], $38::bytea[], $39::uuid[]) \
               AS a(subject, key, lock, status, headers, body, booking_id) \
             WHERE k.subject = a.subject AND k.key = a.key AND k.state = 'in_flight' \
               AND k.locked_at = a.lock",
            super::COLUMNS.join(", ")
        )
    });
    let b: Vec<&BookingRecord> = items.iter().map(|i| &i.booking).collect();
    let sagas: Vec<_> = b.iter().map(|b| saga_columns(b)).collect();
    let customers: Vec<_> = b.iter().map(|b| customer_columns(b)).collect();
    let policies: Vec<_> = b.iter().map(|b| policy_columns(b)).collect();
    let payloads = items
        .iter()
        .map(|i| serde_json::to_string(&i.event))
        .collect::<std::result::Result<Vec<String>, _>>()
        .map_err(|e| BookingError::Internal(format!("encoding an event: {e}")))?;
    let answers: Vec<&Answer> = items.iter().filter_map(|i| i.answer.as_ref()).collect();
    sqlx::query(&SQL)
        .bind(b.iter().map(|b| b.id).collect::<Vec<Uuid>>())
        .bind(b.iter().map(|b| b.resource_id).collect::<Vec<Uuid>>())
        .bind(
            b.iter()
                .map(|b| b.appointment_type_id)
                .collect::<Vec<Uuid>>(),
        )
        .bind(b.iter().map(|b| b.claim_id).collect::<Vec<Uuid>>())
        .bind(b.iter().map(|b| b.start).collect::<Vec<DateTime<Utc>>>())
        .bind(b.iter().map(|b| b.end).collect::<Vec<DateTime<Utc>>>())
        .bind(
            b.iter()
                .map(|b| i32::try_from(b.seats).unwrap_or(i32::MAX))
                .collect::<Vec<i32>>(),
        )
        .bind(b.iter().map(|b| b.status.as_str()).collect::<Vec<&str>>())
        .bind(b.iter().map(|b| b.price_minor).collect::<Vec<i64>>())
        .bind(b.iter().map(|b| b.currency.as_str()).collect::<Vec<&str>>())
        .bind(
            customers
                .iter()
                .map(|c| c.name.clone())
                .collect::<Vec<Option<String>>>(),
        )
        .bind(
            customers
                .iter()
                .map(|c| c.email.clone())
                .collect::<Vec<Option<String>>>(),
        )
        .bind(
            b.iter()
                .map(|b| b.hold_expires_at)
                .collect::<Vec<Option<DateTime<Utc>>>>(),
        )
        .bind(sagas.iter().map(|s| s.0).collect::<Vec<Option<&str>>>())
        .bind(sagas.iter().map(|s| s.1).collect::<Vec<i32>>())
        .bind(
            sagas
                .iter()
                .map(|s| s.2)
                .collect::<Vec<Option<DateTime<Utc>>>>(),
        )
        .bind(
            sagas
                .iter()
                .map(|s| s.3.clone())
                .collect::<Vec<Option<String>>>(),
        )
        .bind(
            b.iter()
                .map(|b| b.created_at)
                .collect::<Vec<DateTime<Utc>>>(),
        )
        .bind(
            b.iter()
                .map(|b| b.updated_at)
                .collect::<Vec<DateTime<Utc>>>(),
        )
        .bind(b.iter().map(|b| b.version).collect::<Vec<i64>>())
        .bind(
            b.iter()
                .map(|b| b.customer_id.clone())
                .collect::<Vec<Option<String>>>(),
        )
        .bind(
            b.iter()
                .map(|b| b.resource_owner_id.clone())
                .collect::<Vec<Option<String>>>(),
        )
        .bind(
            b.iter()
                .map(|b| b.status_reason.clone())
                .collect::<Vec<Option<String>>>(),
        )
        .bind(policies.iter().map(|p| p.0).collect::<Vec<Option<i64>>>())
        .bind(policies.iter().map(|p| p.1).collect::<Vec<Option<i16>>>())
        .bind(
            customers
                .iter()
                .map(|c| c.phone.clone())
                .collect::<Vec<Option<String>>>(),
        )
        .bind(
            customers
                .iter()
                .map(|c| c.locale.clone())
                .collect::<Vec<Option<String>>>(),
        )
        .bind(items.iter().map(|i| i.event.id).collect::<Vec<Uuid>>())
        .bind(
            items
                .iter()
                .map(|i| i.event.booking_id)
                .collect::<Vec<Uuid>>(),
        )
        .bind(
            items
                .iter()
                .map(|i| i.event.event_type.as_str())
                .collect::<Vec<&str>>(),
        )
        .bind(payloads)
        .bind(
            items
                .iter()
                .map(|i| i.event.occurred_at)
                .collect::<Vec<DateTime<Utc>>>(),
        )
        .bind(
            answers
                .iter()
                .map(|a| a.subject.as_str())
                .collect::<Vec<&str>>(),
        )
        .bind(
            answers
                .iter()
                .map(|a| a.key.as_str())
                .collect::<Vec<&str>>(),
        )
        .bind(
            answers
                .iter()
                .map(|a| a.lock)
                .collect::<Vec<DateTime<Utc>>>(),
        )
        .bind(
            answers
                .iter()
                .map(|a| i32::from(a.response.status))
                .collect::<Vec<i32>>(),
        )
        .bind(
            answers
                .iter()
                .map(|a| encode_headers(&a.response.headers))
                .collect::<Vec<String>>(),
        )
        .bind(
            answers
                .iter()
                .map(|a| a.response.body.clone())
                .collect::<Vec<Vec<u8>>>(),
        )
        .bind(
            answers
                .iter()
                .map(|a| a.response.booking_id)
                .collect::<Vec<Option<Uuid>>>(),
        )
        .execute(conn)
        .await?;
    Ok(())
}

/// Stores answers under keys still locked by their request, in one
/// statement.
async fn store_answers(conn: &mut PgConnection, answers: Vec<Answer>) -> Vec<Outcome> {
    let stored = sqlx::query(
        "UPDATE booking.idempotency_keys k SET state = 'done', status = a.status, \
           headers = a.headers, body = a.body, booking_id = a.booking_id \
         FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::int4[], $5::text[], \
           $6::bytea[], $7::uuid[]) AS a(subject, key, lock, status, headers, body, booking_id) \
         WHERE k.subject = a.subject AND k.key = a.key AND k.locked_at = a.lock",
    )
    .bind(
        answers
            .iter()
            .map(|a| a.subject.as_str())
            .collect::<Vec<&str>>(),
    )
    .bind(
        answers
            .iter()
            .map(|a| a.key.as_str())
            .collect::<Vec<&str>>(),
    )
    .bind(
        answers
            .iter()
            .map(|a| a.lock)
            .collect::<Vec<DateTime<Utc>>>(),
    )
    .bind(
        answers
            .iter()
            .map(|a| i32::from(a.response.status))
            .collect::<Vec<i32>>(),
    )
    .bind(
        answers
            .iter()
            .map(|a| encode_headers(&a.response.headers))
            .collect::<Vec<String>>(),
    )
    .bind(
        answers
            .iter()
            .map(|a| a.response.body.clone())
            .collect::<Vec<Vec<u8>>>(),
    )
    .bind(
        answers
            .iter()
            .map(|a| a.response.booking_id)
            .collect::<Vec<Option<Uuid>>>(),
    )
    .execute(&mut *conn)
    .await;
    match stored {
        Ok(_) => answers.iter().map(|_| Ok(())).collect(),
        Err(_) if answers.len() > 1 => {
            let mut outcomes = Vec::with_capacity(answers.len());
            for answer in answers {
                outcomes.push(
                    Box::pin(store_answers(&mut *conn, vec![answer]))
                        .await
                        .remove(0),
                );
            }
            outcomes
        }
        Err(error) => vec![Err(error.into())],
    }
}
