//! Reminders: planned with the event that confirms (or changes) their
//! booking, in its transaction; taken when due under a lease; ended only
//! after the booking's current row has been checked under its lock.
//!
//! Locks are always taken booking row first, reminder row second (both
//! when an event replans and when a due reminder ends), so the two never
//! wait on each other in a cycle.

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use uuid::Uuid;

use super::{NewDelivery, Result, Store, insert_delivery, micros, time, uuid};
use crate::model::{BookingSnapshot, CONFIRMED, CustomerFacts};

const REMINDER_COLUMNS: &str =
    "id, booking_id, offset_s, channel, booking_version, start_us, attempts, planned_due_us";

/// A reminder taken by this sender (its lease's token is `attempts`).
#[derive(Debug, Clone)]
pub(crate) struct DueReminder {
    pub id: Uuid,
    pub booking_id: Uuid,
    pub offset_s: i64,
    /// `email` or `sms`.
    pub channel: String,
    pub booking_version: i64,
    pub start: DateTime<Utc>,
    pub attempts: i64,
    /// When it was meant to go (lateness is measured from it).
    pub planned_due: DateTime<Utc>,
}

fn due_reminder(row: &AnyRow) -> std::result::Result<DueReminder, sqlx::Error> {
    Ok(DueReminder {
        id: uuid(row, "id")?,
        booking_id: uuid(row, "booking_id")?,
        offset_s: row.try_get("offset_s")?,
        channel: row.try_get("channel")?,
        booking_version: row.try_get("booking_version")?,
        start: time(row.try_get("start_us")?),
        attempts: row.try_get("attempts")?,
        planned_due: time(row.try_get("planned_due_us")?),
    })
}

/// How a taken reminder ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReminderEnd {
    /// Handed to `deliveries` (the mail is sent from there).
    Sent,
    /// The booking changed (version), is no longer confirmed, or has no
    /// address on the reminder's channel: never sent.
    Stale,
    /// The appointment had started: skipped, recorded.
    SkippedLate,
    /// The lease lapsed and another sender has it: nothing written.
    Lost,
}

impl ReminderEnd {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Stale => "stale",
            Self::SkippedLate => "skipped_late",
            Self::Lost => "lost",
        }
    }
}

/// What the booking's current row says about a reminder planned for
/// `version` (the rule both the sender's pre-check and the final check
/// under the lock apply); `has_address`: the booking has an address on
/// the reminder's channel.
pub(crate) fn verdict(
    current: Option<(i64, &str, DateTime<Utc>, bool)>,
    version: i64,
    now: DateTime<Utc>,
) -> ReminderEnd {
    match current {
        Some((v, status, start, has_address))
            if v == version && status == CONFIRMED && has_address =>
        {
            if start <= now {
                ReminderEnd::SkippedLate
            } else {
                ReminderEnd::Sent
            }
        }
        _ => ReminderEnd::Stale,
    }
}

impl Store {
    /// Ends the booking's reminders planned for older versions, and plans
    /// one per offset and channel the booking has an address on, if it is
    /// confirmed (an offset already past is not planned). Called under the booking
    /// row's lock, in the transaction recording the event.
    pub(super) async fn replan_reminders(
        &self,
        tx: &mut Transaction<'_, Any>,
        booking: &BookingSnapshot,
        now: DateTime<Utc>,
    ) -> Result<usize> {
        let id = booking.id.to_string();
        for sql in [
            "UPDATE reminders SET status = 'superseded', due_us = NULL, updated_us = $1 \
             WHERE booking_id = $2 AND status = 'pending' AND booking_version < $3",
            // One already handed over but not yet mailed: stopped too.
            "UPDATE deliveries SET status = 'superseded', due_us = NULL, updated_us = $1 \
             WHERE booking_id = $2 AND kind = 'reminder' AND status = 'pending' \
             AND booking_version < $3",
        ] {
            sqlx::query(sql)
                .bind(micros(now))
                .bind(&id)
                .bind(booking.version)
                .execute(&mut **tx)
                .await?;
        }
        if booking.status != CONFIRMED {
            return Ok(0);
        }
        // Collected first: an iterator of closures held across the awaits
        // below would keep this future from being `Send`.
        let plans: Vec<(i64, &'static str)> = self
            .reminder_channels
            .iter()
            .filter(|channel| booking.address(channel).is_some())
            .flat_map(|&channel| self.reminder_offsets.iter().map(move |&o| (o, channel)))
            .collect();
        let mut planned = 0;
        for (offset_s, channel) in plans {
            let due = booking.start - chrono::TimeDelta::seconds(offset_s);
            if due <= now {
                continue;
            }
            // A new id per plan: it is the delivery's `event_id`, so each
            // plan can be handed over once, and an old lease cannot end it.
            planned += sqlx::query(
                "INSERT INTO reminders (id, booking_id, offset_s, channel, booking_version, \
                 start_us, status, attempts, due_us, planned_due_us, delivery_id, created_us, \
                 updated_us) VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7, NULL, $8, $8) \
                 ON CONFLICT (booking_id, offset_s, channel) DO UPDATE SET id = excluded.id, \
                 booking_version = excluded.booking_version, start_us = excluded.start_us, \
                 status = 'pending', attempts = 0, due_us = excluded.due_us, \
                 planned_due_us = excluded.planned_due_us, delivery_id = NULL, \
                 updated_us = excluded.updated_us \
                 WHERE reminders.booking_version < excluded.booking_version",
            )
            .bind(Uuid::now_v7().to_string())
            .bind(&id)
            .bind(offset_s)
            .bind(channel)
            .bind(booking.version)
            .bind(micros(booking.start))
            .bind(micros(due))
            .bind(micros(now))
            .execute(&mut **tx)
            .await?
            .rows_affected();
        }
        Ok(usize::try_from(planned).unwrap_or(usize::MAX))
    }

    /// When the next pending reminder (or lease) is due: the first entry of
    /// the partial index `reminders_due`, one index probe.
    pub(crate) async fn next_reminder_due(&self) -> Result<Option<DateTime<Utc>>> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT due_us FROM reminders WHERE due_us IS NOT NULL ORDER BY due_us LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(next.map(time))
    }

    /// Takes up to `limit` due reminders until `lease_until` (the scan
    /// reads the partial index `reminders_due`: only what is due).
    pub(crate) async fn take_due_reminders(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<DueReminder>> {
        let rows = self
            .lease_due("reminders", REMINDER_COLUMNS, now, lease_until, limit)
            .await?;
        Ok(rows
            .iter()
            .map(due_reminder)
            .collect::<std::result::Result<_, _>>()?)
    }

    /// Ends a taken reminder: under the booking row's lock, checks it is
    /// still current ([`verdict`]), then either hands `mail` to
    /// `deliveries` or records why not, all only while the lease is ours.
    /// `mail` is `None` when the sender already found it not sendable; if
    /// the final check says send but there is no mail, it stays pending.
    pub(crate) async fn end_reminder(
        &self,
        taken: &DueReminder,
        mail: Option<NewDelivery>,
        now: DateTime<Utc>,
    ) -> Result<ReminderEnd> {
        let mut tx = self.pool.begin().await?;
        let lock = if self.postgres { " FOR UPDATE" } else { "" };
        let row = sqlx::query(&format!(
            "SELECT version, status, start_us, customer_email, customer_phone FROM bookings \
             WHERE booking_id = $1{lock}"
        ))
        .bind(taken.booking_id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let current = match &row {
            Some(row) => {
                let customer = CustomerFacts {
                    name: None,
                    email: row.try_get("customer_email")?,
                    phone: row.try_get("customer_phone")?,
                    locale: None,
                };
                let reachable = customer.address(&taken.channel).is_some();
                Some((
                    row.try_get::<i64, _>("version")?,
                    row.try_get::<String, _>("status")?,
                    time(row.try_get("start_us")?),
                    reachable,
                ))
            }
            None => None,
        };
        let end = verdict(
            current
                .as_ref()
                .map(|(v, s, start, e)| (*v, s.as_str(), *start, *e)),
            taken.booking_version,
            now,
        );
        let (status, delivery) = match (end, &mail) {
            (ReminderEnd::Sent, Some(mail)) => ("sent", Some(mail)),
            (ReminderEnd::Sent, None) => return Ok(ReminderEnd::Lost),
            (ReminderEnd::Stale, _) => ("stale", None),
            (ReminderEnd::SkippedLate, _) => ("skipped_late", None),
            (ReminderEnd::Lost, _) => return Ok(ReminderEnd::Lost),
        };
        let mine = sqlx::query(
            "UPDATE reminders SET status = $1, due_us = NULL, delivery_id = $2, updated_us = $3 \
             WHERE id = $4 AND attempts = $5 AND status = 'pending'",
        )
        .bind(status)
        .bind(delivery.map(|d| d.id.to_string()))
        .bind(micros(now))
        .bind(taken.id.to_string())
        .bind(taken.attempts)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !mine {
            return Ok(ReminderEnd::Lost);
        }
        if let Some(mail) = delivery {
            insert_delivery(&mut tx, taken.id, mail, now).await?;
        }
        tx.commit().await?;
        Ok(end)
    }

    /// Puts a taken reminder back to be tried at `at` (rendering failed).
    pub(crate) async fn release_reminder(
        &self,
        taken: &DueReminder,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE reminders SET due_us = $1, updated_us = $2 \
             WHERE id = $3 AND attempts = $4 AND status = 'pending'",
        )
        .bind(micros(at))
        .bind(micros(now))
        .bind(taken.id.to_string())
        .bind(taken.attempts)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every reminder of a booking as (offset, version, status, due), for
    /// tests and the log.
    #[cfg(test)]
    pub(crate) async fn reminders_of(
        &self,
        booking_id: Uuid,
    ) -> Result<Vec<(i64, i64, String, Option<i64>)>> {
        let rows = sqlx::query(
            "SELECT offset_s, booking_version, status, due_us FROM reminders \
             WHERE booking_id = $1 ORDER BY offset_s DESC",
        )
        .bind(booking_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("offset_s")?,
                    r.try_get("booking_version")?,
                    r.try_get("status")?,
                    r.try_get("due_us")?,
                ))
            })
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }
}
