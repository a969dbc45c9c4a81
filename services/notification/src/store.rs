//! Storage: one set of runtime-checked queries over `sqlx::Any`, on
//! PostgreSQL (schema `notification`) or SQLite (`berth dev`), chosen by
//! URL, as the payment service does.
//!
//! An event is recorded with the deliveries it creates in one transaction;
//! senders take due deliveries under a lease (the row's `due_us` pushed
//! ahead, `attempts` raised: the lease's token), with `FOR UPDATE SKIP
//! LOCKED` on PostgreSQL so replicas take different rows, and write the
//! outcome only while the lease is still theirs.

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};
use uuid::Uuid;

use crate::error::NotificationError;
use crate::model::{BookingSnapshot, CustomerFacts, Delivery, EMAIL, SMS};
use crate::webhooks::NewWebhook;

mod reminders;
mod webhooks;
pub(crate) use reminders::{DueReminder, ReminderEnd, verdict};
pub(crate) use webhooks::{EndpointChange, WebhookFilter, WebhookOutcome};

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

const SCHEMA: &str = "notification";

type Result<T> = std::result::Result<T, NotificationError>;

const DELIVERY_COLUMNS: &str = "id, event_id, booking_id, kind, channel, recipient, \
    booking_version, subject, body, html, invite_method, ics, status, attempts, due_us, \
    last_error, created_us, sent_us";

const BOOKING_COLUMNS: &str = "booking_id, version, status, resource_id, appointment_type_id, \
    start_us, end_us, price_minor, currency, customer_name, customer_email, invite_sequence, \
    customer_phone, customer_locale";

#[derive(Clone)]
pub(crate) struct Store {
    pool: AnyPool,
    postgres: bool,
    /// Seconds before a booking's start its reminders are due (none until
    /// [`Store::with_reminder_offsets`]).
    reminder_offsets: std::sync::Arc<[i64]>,
    /// The channels reminders go by where the customer has an address on
    /// them (each only when its sender is configured).
    reminder_channels: &'static [&'static str],
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

fn delivery(row: &AnyRow) -> std::result::Result<Delivery, sqlx::Error> {
    let booking_id: Option<String> = row.try_get("booking_id")?;
    let attempts: i64 = row.try_get("attempts")?;
    Ok(Delivery {
        id: uuid(row, "id")?,
        event_id: uuid(row, "event_id")?,
        booking_id: booking_id
            .map(|b| b.parse().map_err(|e| decode("booking_id", e)))
            .transpose()?,
        kind: row.try_get("kind")?,
        channel: row.try_get("channel")?,
        recipient: row.try_get("recipient")?,
        booking_version: row.try_get("booking_version")?,
        subject: row.try_get("subject")?,
        body: row.try_get("body")?,
        html: row.try_get("html")?,
        invite_method: row.try_get("invite_method")?,
        ics: row.try_get("ics")?,
        status: row.try_get("status")?,
        attempts: i32::try_from(attempts).map_err(|e| decode("attempts", e))?,
        due_at: row.try_get::<Option<i64>, _>("due_us")?.map(time),
        last_error: row.try_get("last_error")?,
        created_at: time(row.try_get("created_us")?),
        sent_at: row.try_get::<Option<i64>, _>("sent_us")?.map(time),
    })
}

/// What this service knows of a booking.
#[derive(Debug, Clone)]
pub(crate) struct Known {
    pub booking: BookingSnapshot,
}

fn known(row: &AnyRow) -> std::result::Result<Known, sqlx::Error> {
    let name: Option<String> = row.try_get("customer_name")?;
    let email: Option<String> = row.try_get("customer_email")?;
    let phone: Option<String> = row.try_get("customer_phone")?;
    let locale: Option<String> = row.try_get("customer_locale")?;
    Ok(Known {
        booking: BookingSnapshot {
            id: uuid(row, "booking_id")?,
            resource_id: uuid(row, "resource_id")?,
            appointment_type_id: uuid(row, "appointment_type_id")?,
            start: time(row.try_get("start_us")?),
            end: time(row.try_get("end_us")?),
            status: row.try_get("status")?,
            price_minor: row.try_get("price_minor")?,
            currency: row.try_get("currency")?,
            customer: (name.is_some() || email.is_some() || phone.is_some()).then_some(
                CustomerFacts {
                    name,
                    email,
                    phone,
                    locale,
                },
            ),
            version: row.try_get("version")?,
        },
    })
}

/// A message to create with its event.
#[derive(Debug, Clone)]
pub(crate) struct NewDelivery {
    pub id: Uuid,
    pub booking_id: Uuid,
    pub kind: &'static str,
    pub channel: &'static str,
    pub recipient: String,
    pub booking_version: Option<i64>,
    pub subject: String,
    pub body: String,
    pub html: Option<String>,
    pub invite: Option<(String, String)>,
}

/// What recording an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// First time: its deliveries (how many) are stored.
    New(usize),
    /// Handled before (redelivered, or another replica had it).
    Duplicate,
    /// Older than what is known of its booking: recorded, nothing sent.
    Stale,
}

/// How a send ended.
pub(crate) enum Outcome {
    Sent,
    Retry { at: DateTime<Utc>, error: String },
    Failed { error: String },
}

impl Store {
    pub(crate) async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let db = berth_runtime::any_db::open(url, SCHEMA, max_connections)
            .await
            .map_err(|e| match e {
                berth_runtime::any_db::AnyDbError::Url => NotificationError::Config(e.to_string()),
                berth_runtime::any_db::AnyDbError::Database(db) => db.into(),
            })?;
        MIGRATIONS.run(&db.pool).await?;
        Ok(Self {
            pool: db.pool,
            postgres: db.postgres,
            reminder_offsets: std::sync::Arc::new([]),
            reminder_channels: &[EMAIL],
        })
    }

    /// Plans a reminder `offsets` before every confirmed booking's start.
    pub(crate) fn with_reminder_offsets(mut self, offsets: &[std::time::Duration]) -> Self {
        self.reminder_offsets = offsets
            .iter()
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .collect();
        self
    }

    /// The channels reminders go by: email and texts, each where a sender
    /// for it is configured.
    pub(crate) fn with_reminder_channels(mut self, email: bool, texts: bool) -> Self {
        self.reminder_channels = match (email, texts) {
            (true, true) => &[EMAIL, SMS],
            (true, false) => &[EMAIL],
            (false, true) => &[SMS],
            (false, false) => &[],
        };
        self
    }

    pub(crate) async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Whether `consumer` already handled `event_id` (a fast path; the
    /// authority is the insert in [`Store::record`]).
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

    pub(crate) async fn booking(&self, id: Uuid) -> Result<Option<Known>> {
        let row = sqlx::query(&format!(
            "SELECT {BOOKING_COLUMNS} FROM bookings WHERE booking_id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(known).transpose()?)
    }

    /// Records `event_id` for `consumer` with what it creates, in one
    /// transaction. With `booking`, what is known of it moves to that
    /// version first; if a newer one is known, nothing is created
    /// (`Stale`). `deliveries` is asked for the messages once the booking's
    /// row is locked, given the invite sequence the customer holds.
    /// `erase`: the customer's personal data is gone (account deleted):
    /// their messages about the booking are stopped and emptied too.
    #[cfg(test)]
    pub(crate) async fn record<F>(
        &self,
        consumer: &str,
        event_id: Uuid,
        booking: Option<&BookingSnapshot>,
        erase: bool,
        now: DateTime<Utc>,
        deliveries: F,
    ) -> Result<Recorded>
    where
        F: FnOnce(Option<i64>) -> Vec<NewDelivery>,
    {
        self.record_with(consumer, event_id, booking, erase, now, deliveries, &[])
            .await
    }

    /// [`Store::record`], also creating `webhooks` (one per event and
    /// endpoint) in the same transaction.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn record_with<F>(
        &self,
        consumer: &str,
        event_id: Uuid,
        booking: Option<&BookingSnapshot>,
        erase: bool,
        now: DateTime<Utc>,
        deliveries: F,
        webhooks: &[NewWebhook],
    ) -> Result<Recorded>
    where
        F: FnOnce(Option<i64>) -> Vec<NewDelivery>,
    {
        let mut tx = self.pool.begin().await?;
        let first = sqlx::query(
            "INSERT INTO processed_events (consumer, event_id, processed_us) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(consumer)
        .bind(event_id.to_string())
        .bind(micros(now))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !first {
            return Ok(Recorded::Duplicate);
        }
        let mut invite_sequence = None;
        if let Some(booking) = booking {
            match self.advance(&mut tx, booking, now).await? {
                Some(held) => invite_sequence = held,
                None => {
                    tx.commit().await?;
                    return Ok(Recorded::Stale);
                }
            }
        }
        if erase && let Some(booking) = booking {
            erase_customer(&mut tx, booking.id, now).await?;
        }
        if let Some(booking) = booking {
            // Moved, ended or planned with the event that changed the booking.
            self.replan_reminders(&mut tx, booking, now).await?;
        }
        let deliveries = deliveries(invite_sequence);
        for d in &deliveries {
            insert_delivery(&mut tx, event_id, d, now).await?;
            if d.invite.is_some()
                && let Some(version) = d.booking_version
            {
                // The customer's calendar will hold this one: an older
                // invite not yet sent would only be undone by it.
                sqlx::query(
                    "UPDATE deliveries SET status = 'superseded', due_us = NULL, updated_us = $1 \
                     WHERE booking_id = $2 AND channel = $3 AND recipient = $4 \
                     AND status = 'pending' AND ics IS NOT NULL AND booking_version < $5",
                )
                .bind(micros(now))
                .bind(d.booking_id.to_string())
                .bind(d.channel)
                .bind(&d.recipient)
                .bind(version)
                .execute(&mut *tx)
                .await?;
            }
            // `invite_sequence` is the version the customer was last told
            // of, by invite or by text: a customer with only a phone hears
            // of a reschedule or a cancellation too.
            if (d.invite.is_some() || d.channel == SMS)
                && let Some(version) = d.booking_version
            {
                sqlx::query("UPDATE bookings SET invite_sequence = $1 WHERE booking_id = $2")
                    .bind(version)
                    .bind(d.booking_id.to_string())
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let hooks = webhooks::insert_webhooks(&mut tx, event_id, webhooks, now).await?;
        tx.commit().await?;
        Ok(Recorded::New(deliveries.len() + hooks))
    }

    /// Moves what is known of the booking to `booking`'s version, under the
    /// row's lock. `None`: a newer version is known (the event is late);
    /// otherwise the invite sequence the customer holds.
    async fn advance(
        &self,
        tx: &mut Transaction<'_, Any>,
        booking: &BookingSnapshot,
        now: DateTime<Utc>,
    ) -> Result<Option<Option<i64>>> {
        let lock = if self.postgres { " FOR UPDATE" } else { "" };
        let held = sqlx::query(&format!(
            "SELECT version, invite_sequence FROM bookings WHERE booking_id = $1{lock}"
        ))
        .bind(booking.id.to_string())
        .fetch_optional(&mut **tx)
        .await?;
        let customer = booking.customer.clone().unwrap_or_default();
        let invite_sequence = match held {
            Some(row) => {
                let version: i64 = row.try_get("version")?;
                if version >= booking.version {
                    return Ok(None);
                }
                sqlx::query(
                    "UPDATE bookings SET version = $2, status = $3, start_us = $4, end_us = $5, \
                     price_minor = $6, currency = $7, customer_name = $8, customer_email = $9, \
                     updated_us = $10, customer_phone = $11, customer_locale = $12 \
                     WHERE booking_id = $1",
                )
                .bind(booking.id.to_string())
                .bind(booking.version)
                .bind(&booking.status)
                .bind(micros(booking.start))
                .bind(micros(booking.end))
                .bind(booking.price_minor)
                .bind(&booking.currency)
                .bind(customer.name)
                .bind(customer.email)
                .bind(micros(now))
                .bind(booking.phone())
                .bind(customer.locale.clone())
                .execute(&mut **tx)
                .await?;
                row.try_get::<Option<i64>, _>("invite_sequence")?
            }
            None => {
                // Two replicas may insert the first row at once: the loser
                // waits for the winner's commit, then finds its row.
                let inserted = sqlx::query(&format!(
                    "INSERT INTO bookings ({BOOKING_COLUMNS}, updated_us) VALUES ($1, $2, $3, $4, \
                     $5, $6, $7, $8, $9, $10, $11, NULL, $12, $13, $14) \
                     ON CONFLICT (booking_id) DO NOTHING"
                ))
                .bind(booking.id.to_string())
                .bind(booking.version)
                .bind(&booking.status)
                .bind(booking.resource_id.to_string())
                .bind(booking.appointment_type_id.to_string())
                .bind(micros(booking.start))
                .bind(micros(booking.end))
                .bind(booking.price_minor)
                .bind(&booking.currency)
                .bind(customer.name)
                .bind(customer.email)
                .bind(booking.phone())
                .bind(customer.locale.clone())
                .bind(micros(now))
                .execute(&mut **tx)
                .await?
                .rows_affected();
                if inserted == 0 {
                    return Err(NotificationError::Conflict(
                        "another replica recorded this booking first".into(),
                    ));
                }
                None
            }
        };
        Ok(Some(invite_sequence))
    }

    /// Leases up to `limit` due rows of `table` (deliveries, webhook
    /// deliveries, reminders: each has `due_us`, `attempts`, `updated_us`
    /// and a partial index on `due_us`) until `lease_until`, oldest due
    /// first; `attempts` is the lease's token. Replicas skip each other's
    /// locked rows on PostgreSQL; SQLite has one writer.
    pub(crate) async fn lease_due(
        &self,
        table: &str,
        columns: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<AnyRow>> {
        let lock = if self.postgres {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        Ok(sqlx::query(&format!(
            "UPDATE {table} SET due_us = $1, attempts = attempts + 1, updated_us = $2 \
             WHERE id IN (SELECT id FROM {table} WHERE due_us IS NOT NULL AND due_us <= $2 \
             ORDER BY due_us LIMIT $3{lock}) RETURNING {columns}"
        ))
        .bind(micros(lease_until))
        .bind(micros(now))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Takes up to `limit` due deliveries for this sender until `lease_until`.
    pub(crate) async fn take_due(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Delivery>> {
        let rows = self
            .lease_due("deliveries", DELIVERY_COLUMNS, now, lease_until, limit)
            .await?;
        Ok(rows
            .iter()
            .map(delivery)
            .collect::<std::result::Result<_, _>>()?)
    }

    /// Writes how a taken delivery's send ended, if the lease (`attempts`)
    /// is still this sender's. `false`: it lapsed and another took it.
    pub(crate) async fn finish(
        &self,
        taken: &Delivery,
        outcome: &Outcome,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let (status, due, sent, error) = match outcome {
            Outcome::Sent => ("sent", None, Some(micros(now)), None),
            Outcome::Retry { at, error } => ("pending", Some(micros(*at)), None, Some(error)),
            Outcome::Failed { error } => ("failed", None, None, Some(error)),
        };
        let done = sqlx::query(
            "UPDATE deliveries SET status = $1, due_us = $2, sent_us = $3, last_error = $4, \
             updated_us = $5 WHERE id = $6 AND attempts = $7 AND status = 'pending'",
        )
        .bind(status)
        .bind(due)
        .bind(sent)
        .bind(error.map(String::as_str))
        .bind(micros(now))
        .bind(taken.id.to_string())
        .bind(i64::from(taken.attempts))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deliveries newest first (ids are UUIDv7: time-ordered), optionally
    /// of one booking, before the id `before` (the previous page's last).
    pub(crate) async fn list(
        &self,
        booking_id: Option<Uuid>,
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Delivery>> {
        // Every id sorts below "~": no cursor reads from the newest.
        let before = before.map_or_else(|| "~".to_owned(), |b| b.to_string());
        let rows =
            match booking_id {
                Some(booking) => sqlx::query(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE booking_id = $1 AND id < $2 \
                     ORDER BY id DESC LIMIT $3"
                ))
                .bind(booking.to_string())
                .bind(before)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
                None => {
                    sqlx::query(&format!(
                        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id < $1 \
                     ORDER BY id DESC LIMIT $2"
                    ))
                    .bind(before)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
                }
            };
        Ok(rows
            .iter()
            .map(delivery)
            .collect::<std::result::Result<_, _>>()?)
    }
}

/// Stops the booking's unsent messages and removes the customer's data
/// from every message about it (the log keeps kind, status and times).
async fn erase_customer(
    tx: &mut Transaction<'_, Any>,
    booking_id: Uuid,
    now: DateTime<Utc>,
) -> Result<()> {
    for sql in [
        "UPDATE deliveries SET status = 'superseded', due_us = NULL, updated_us = $1 \
         WHERE booking_id = $2 AND status = 'pending'",
        "UPDATE deliveries SET recipient = 'erased:' || id, subject = '(erased)', body = '', \
         html = NULL, invite_method = NULL, ics = NULL, last_error = NULL, updated_us = $1 \
         WHERE booking_id = $2",
    ] {
        sqlx::query(sql)
            .bind(micros(now))
            .bind(booking_id.to_string())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

async fn insert_delivery(
    tx: &mut Transaction<'_, Any>,
    event_id: Uuid,
    d: &NewDelivery,
    now: DateTime<Utc>,
) -> Result<()> {
    let (method, ics) = match &d.invite {
        Some((method, ics)) => (Some(method.as_str()), Some(ics.as_str())),
        None => (None, None),
    };
    sqlx::query(&format!(
        "INSERT INTO deliveries ({DELIVERY_COLUMNS}, updated_us) VALUES ($1, $2, $3, $4, $5, $6, \
         $7, $8, $9, $10, $11, $12, 'pending', 0, $13, NULL, $13, NULL, $13) \
         ON CONFLICT (event_id, channel, recipient) DO NOTHING"
    ))
    .bind(d.id.to_string())
    .bind(event_id.to_string())
    .bind(d.booking_id.to_string())
    .bind(d.kind)
    .bind(d.channel)
    .bind(&d.recipient)
    .bind(d.booking_version)
    .bind(&d.subject)
    .bind(&d.body)
    .bind(d.html.as_deref())
    .bind(method)
    .bind(ics)
    .bind(micros(now))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests;
