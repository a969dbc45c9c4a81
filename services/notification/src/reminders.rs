//! Reminders: one email per configured offset before each confirmed
//! booking's start (`NotificationConfig::reminder_offsets`; the same for
//! every appointment type), and one text where the booking carries the
//! customer's phone and a text provider is configured (each channel its
//! own reminder row, checked against its own address).
//!
//! - Planned durably (`reminders` table) in the transaction that records
//!   the event confirming the booking, for that booking version; every
//!   later event about the booking replans them in its own transaction: a
//!   reschedule moves them (new version, due time recomputed), anything
//!   that leaves the booking unconfirmed or without an address ends them
//!   (`superseded`). An offset already past when planned is not planned.
//! - This worker takes due reminders under a lease (`FOR UPDATE SKIP
//!   LOCKED` on PostgreSQL; the scan reads a partial index of pending
//!   rows in due order, so it costs what is due, not what is stored),
//!   sleeps until the next one is due (one probe of that index; at most
//!   `worker_interval`, for rows other replicas plan meanwhile) and,
//!   under the booking row's lock, checks the booking once more: another
//!   version, not confirmed or no address → `stale`, never sent; started
//!   already (the service was down) → `skipped_late`; otherwise the
//!   rendered reminder becomes a `deliveries` row of kind `reminder`
//!   (event id = the reminder's plan id, so it is handed over once), and
//!   the ordinary sender mails it with its retries, backoff and log.
//! - A reminder is ended only by the holder of its lease; one whose sender
//!   died is taken again when the lease lapses.

use tokio_util::sync::CancellationToken;

use crate::Notifications;
use crate::intake::{email, text};
use crate::metrics;
use crate::model::{Kind, SMS, after, now};
use crate::store::{DueReminder, ReminderEnd, verdict};

pub(crate) fn spawn(notifications: Notifications, stop: CancellationToken) {
    if notifications.inner.config.reminder_offsets.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let config = notifications.inner.config.clone();
        while !stop.is_cancelled() {
            let full = match notifications.send_due_reminders().await {
                Ok(taken) => taken >= usize::try_from(config.batch).unwrap_or(usize::MAX),
                Err(error) => {
                    tracing::warn!(%error, "reminders: cannot take due reminders; will retry");
                    false
                }
            };
            if full {
                continue;
            }
            // Until the next one is due (so it goes on time), but at least
            // every interval (reminders planned meanwhile by other replicas).
            let pause = match notifications.inner.store.next_reminder_due().await {
                Ok(Some(next)) => (next - now()).to_std().unwrap_or_default(),
                Ok(None) | Err(_) => config.worker_interval,
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(pause.min(config.worker_interval)) => {}
            }
        }
    });
}

impl Notifications {
    /// One pass: ends every reminder due now. Returns how many were taken.
    pub(crate) async fn send_due_reminders(&self) -> Result<usize, crate::NotificationError> {
        let config = &self.inner.config;
        let start = now();
        let taken = self
            .inner
            .store
            .take_due_reminders(start, after(start, config.lease), config.batch)
            .await?;
        let count = taken.len();
        let ends = taken.into_iter().map(|reminder| self.end_one(reminder));
        let handed = futures::future::join_all(ends)
            .await
            .into_iter()
            .any(|end| end == ReminderEnd::Sent);
        if handed {
            self.inner.sender_wake.notify_one();
        }
        Ok(count)
    }

    async fn end_one(&self, reminder: DueReminder) -> ReminderEnd {
        match self.try_end(&reminder).await {
            Ok(end) => {
                self.log_end(&reminder, end);
                end
            }
            Err(error) => {
                tracing::warn!(reminder = %reminder.id, %error, "a due reminder was not handled; will retry");
                let config = &self.inner.config;
                let at = after(now(), config.retry_base);
                if let Err(error) = self
                    .inner
                    .store
                    .release_reminder(&reminder, at, now())
                    .await
                {
                    // Its lease lapses instead.
                    tracing::warn!(reminder = %reminder.id, %error, "a due reminder was not released");
                }
                ReminderEnd::Lost
            }
        }
    }

    async fn try_end(
        &self,
        reminder: &DueReminder,
    ) -> Result<ReminderEnd, crate::NotificationError> {
        let store = &self.inner.store;
        let known = store.booking(reminder.booking_id).await?;
        let at = now();
        let channel = reminder.channel.as_str();
        let current = known.as_ref().map(|k| {
            let b = &k.booking;
            let reachable = b.address(channel).is_some();
            (b.version, b.status.as_str(), b.start, reachable)
        });
        let mail = match (verdict(current, reminder.booking_version, at), &known) {
            (ReminderEnd::Sent, Some(known)) => {
                let booking = &known.booking;
                let mut rendered = self
                    .render(Kind::Reminder, booking, None, &booking.currency, at)
                    .await?;
                let to = booking.address(channel).unwrap_or_default();
                let version = Some(booking.version);
                match (channel, rendered.sms.take()) {
                    (SMS, Some(body)) => Some(text(booking.id, Kind::Reminder, to, version, body)),
                    _ => Some(email(booking.id, Kind::Reminder, to, version, rendered)),
                }
            }
            _ => None,
        };
        let ended = now();
        let end = store.end_reminder(reminder, mail, ended).await?;
        if end == ReminderEnd::Sent {
            let late = (ended - reminder.planned_due).to_std().unwrap_or_default();
            metrics::reminder_lateness().observe(late.as_secs_f64());
        }
        Ok(end)
    }

    fn log_end(&self, reminder: &DueReminder, end: ReminderEnd) {
        if end != ReminderEnd::Lost {
            metrics::reminders()
                .with_label_values(&[end.as_str()])
                .inc();
        }
        let (id, booking, offset_s) = (reminder.id, reminder.booking_id, reminder.offset_s);
        match end {
            ReminderEnd::Sent => {
                tracing::info!(reminder = %id, %booking, offset_s, "reminder handed to the sender")
            }
            ReminderEnd::Stale => {
                tracing::info!(reminder = %id, %booking, offset_s, "reminder dropped: its booking changed since it was planned")
            }
            ReminderEnd::SkippedLate => {
                tracing::warn!(reminder = %id, %booking, offset_s, start = %reminder.start, "reminder skipped: the appointment had started")
            }
            ReminderEnd::Lost => {
                tracing::info!(reminder = %id, %booking, "reminder's lease lapsed; another sender has it")
            }
        }
    }
}
