//! The booking saga's compensations. A booking that must give its time back
//! (cancelled, expired, payment failed) carries a persisted `release_claim`
//! step; it is tried right away and then by the worker, with backoff, until
//! the ledger accepts it, so a claim is never left held after a crash or a
//! ledger outage.

use std::time::Duration;

use berth_ledger::Ledger;
use chrono::{DateTime, TimeDelta, Utc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Booking;
use crate::error::BookingError;
use crate::model::{BookingRecord, Saga, SagaStep, after, before, now};

/// While a compensation runs, its next attempt is pushed this far ahead so no
/// other worker runs it too; if the runner dies, it is retried after this.
const LEASE: TimeDelta = TimeDelta::seconds(60);
const BATCH: u32 = 50;

pub(crate) fn lease_until(now: DateTime<Utc>) -> DateTime<Utc> {
    now + LEASE
}

/// Best-effort release of a claim nothing refers to (a booking insert
/// failed). If all tries fail, the hold still lapses by itself.
pub(crate) async fn release_now(ledger: &dyn Ledger, claim_id: Uuid) {
    for attempt in 1..=3u64 {
        match ledger.release(claim_id).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%claim_id, attempt, %error, "releasing an orphaned claim failed");
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
        }
    }
}

fn backoff(base: Duration, max: Duration, attempts: i32) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(20);
    base.saturating_mul(1 << exponent).min(max)
}

impl Booking {
    /// Runs the booking's pending step once. On failure the next attempt is
    /// scheduled with exponential backoff; returns the booking as stored.
    pub(crate) async fn compensate(&self, booking: BookingRecord) -> BookingRecord {
        let Some(saga) = booking.saga.clone() else {
            return booking;
        };
        let outcome = match saga.step {
            SagaStep::ReleaseClaim => self.inner.ledger.release(booking.claim_id).await,
        };
        let mut next = booking.clone();
        match outcome {
            Ok(()) => next.saga = None,
            Err(error) => {
                let attempts = saga.attempts.saturating_add(1);
                let config = &self.inner.config;
                let delay = backoff(config.saga_retry_base, config.saga_retry_max, attempts);
                tracing::warn!(booking_id = %booking.id, step = saga.step.as_str(), attempts, %error, "compensation failed; will retry");
                next.saga = Some(Saga {
                    attempts,
                    next_attempt_at: after(now(), delay),
                    last_error: Some(error.to_string()),
                    ..saga
                });
            }
        }
        match self.save(&booking, next, None).await {
            Ok(saved) => saved,
            Err(error) => {
                // The lease expires and the step runs again (release is idempotent).
                tracing::warn!(booking_id = %booking.id, %error, "cannot record compensation outcome");
                booking
            }
        }
    }

    /// Runs every due compensation once; returns how many ran.
    pub(crate) async fn run_due_compensations(&self) -> Result<usize, BookingError> {
        let now = now();
        let due = self
            .inner
            .store
            .claim_due_sagas(now, lease_until(now), BATCH)
            .await?;
        let count = due.len();
        for booking in due {
            self.compensate(booking).await;
        }
        Ok(count)
    }

    /// Persists lapsed holds as expired (releasing their claims), forgets
    /// idempotency keys past their TTL and published events past their
    /// retention.
    pub(crate) async fn sweep(&self) -> Result<(), BookingError> {
        let now = now();
        for booking in self.inner.store.lapsed_holds(now, BATCH).await? {
            let id = booking.id;
            if let Err(error) = self.expire(booking).await {
                tracing::warn!(booking_id = %id, %error, "cannot expire a lapsed hold");
            }
        }
        let cutoff = before(now, self.inner.config.idempotency_ttl);
        let purged = self.inner.store.purge_keys(cutoff).await?;
        if purged > 0 {
            tracing::debug!(purged, "purged old idempotency keys");
        }
        let cutoff = before(now, self.inner.config.outbox_retention);
        let purged = self.inner.store.purge_published(cutoff).await?;
        if purged > 0 {
            tracing::debug!(purged, "purged published events past their retention");
        }
        Ok(())
    }
}

/// Sleeps `every` unless stopped first; returns false once stopped.
pub(crate) async fn pause(stop: &CancellationToken, every: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(every) => true,
    }
}

/// Retries due compensations; starts with a pass, so a restart resumes the
/// work a previous process left unfinished.
pub(crate) fn spawn_worker(booking: Booking, stop: CancellationToken) {
    let every = booking.inner.config.saga_interval;
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            match booking.run_due_compensations().await {
                Ok(ran) if ran >= BATCH as usize => continue,
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "saga worker pass failed"),
            }
            if !pause(&stop, every).await {
                break;
            }
        }
    });
}

pub(crate) fn spawn_sweeper(booking: Booking, every: Duration, stop: CancellationToken) {
    tokio::spawn(async move {
        loop {
            if let Err(error) = booking.sweep().await {
                tracing::warn!(%error, "sweeper pass failed");
            }
            if !pause(&stop, every).await {
                break;
            }
        }
    });
}
