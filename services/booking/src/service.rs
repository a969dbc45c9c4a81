//! Booking operations: each calls the ledger first and then writes the
//! booking and its event in one transaction, so the booking never claims
//! time the ledger does not hold. Operations on behalf of a client take its
//! [`Caller`] and treat a booking it may not see as unknown, before anything
//! is read from or written to the ledger.

use berth_ledger::{ClaimRequest, LedgerError};
use berth_settlement::FailureReason;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::access::Caller;
use crate::error::BookingError;
use crate::idempotency::HeldKey;
use crate::model::{
    BookingRecord, BookingStatus, Customer, Event, Saga, SagaStep, after, event_type, micros, now,
};
use crate::store::ListFilter;
use crate::{Booking, saga};

/// A validated `POST /v1/bookings`.
pub(crate) struct NewBooking {
    /// Subject of the creating principal.
    pub customer_id: String,
    pub resource_id: Uuid,
    pub appointment_type_id: Uuid,
    pub start: DateTime<Utc>,
    pub seats: u32,
    pub customer: Option<Customer>,
}

type Result<T> = std::result::Result<T, BookingError>;

impl Booking {
    pub(crate) async fn create(&self, new: NewBooking) -> Result<BookingRecord> {
        let id = Uuid::now_v7();
        let hold_for = self.inner.config.hold_for;
        let receipt = self
            .inner
            .ledger
            .claim(ClaimRequest {
                resource_id: new.resource_id,
                appointment_type_id: new.appointment_type_id,
                start: new.start,
                seats: new.seats,
                hold_for: Some(hold_for),
                owner: id.to_string(),
            })
            .await?;
        let now = now();
        let fallback_expiry = after(now, hold_for);
        let record = BookingRecord {
            id,
            resource_id: receipt.resource_id,
            appointment_type_id: receipt.appointment_type_id,
            claim_id: receipt.claim_id,
            start: micros(receipt.start),
            end: micros(receipt.end),
            seats: receipt.seats,
            status: if receipt.price_minor > 0 && self.inner.config.payments_enabled {
                BookingStatus::PendingPayment
            } else {
                BookingStatus::Held
            },
            price_minor: receipt.price_minor,
            currency: receipt.currency,
            customer_id: Some(new.customer_id),
            customer: new.customer,
            hold_expires_at: Some(receipt.expires_at.map_or(fallback_expiry, micros)),
            created_at: now,
            updated_at: now,
            version: 1,
            resource_owner_id: owner(receipt.resource_owner),
            saga: None,
            status_reason: None,
            cancellation_policy: receipt.cancellation_policy,
        };
        let event = Event::new(event_type::CREATED, &record);
        // Under an Idempotency-Key the response is stored with the booking,
        // in the same transaction.
        let held = HeldKey::current();
        let answer = held.as_ref().and_then(|_| HeldKey::created(&record));
        let store = &self.inner.store;
        let inserted = match (&held, &answer) {
            (Some(held), Some(answer)) => {
                store
                    .insert_booking_answered(&record, &event, held.answer(answer))
                    .await
            }
            _ => store.insert_booking(&record, &event).await,
        };
        if let Err(error) = inserted {
            // Nothing refers to the claim: give it back now rather than let
            // it block the slot until the hold lapses.
            saga::release_now(&*self.inner.ledger, record.claim_id).await;
            return Err(error);
        }
        if let (Some(held), Some(answer)) = (held, answer) {
            held.stored(answer);
        }
        self.wake_relay();
        Ok(record)
    }

    pub(crate) async fn get(&self, id: Uuid, caller: &Caller) -> Result<BookingRecord> {
        Ok(self.load_visible(id, caller).await?.effective(now()))
    }

    pub(crate) async fn list(&self, filter: &ListFilter) -> Result<Vec<BookingRecord>> {
        let rows = self.inner.store.list_bookings(filter).await?;
        Ok(rows.into_iter().map(|b| b.effective(filter.now)).collect())
    }

    pub(crate) async fn confirm(&self, id: Uuid, caller: &Caller) -> Result<BookingRecord> {
        let current = self.load_visible(id, caller).await?;
        if current.is_lapsed(now()) {
            self.expire(current).await?;
            return Err(LedgerError::HoldExpired.into());
        }
        match current.status {
            BookingStatus::Confirmed => return Ok(current),
            BookingStatus::Held => {}
            BookingStatus::PendingPayment => return Err(BookingError::PaymentRequired),
            status => {
                return Err(BookingError::WrongState {
                    status,
                    action: "confirmed",
                });
            }
        }
        match self.inner.ledger.confirm(current.claim_id).await {
            Ok(_) => {}
            Err(LedgerError::HoldExpired | LedgerError::NotFound(_)) => {
                self.expire(current).await?;
                return Err(LedgerError::HoldExpired.into());
            }
            Err(error) => return Err(error.into()),
        }
        let mut next = current.clone();
        next.status = BookingStatus::Confirmed;
        next.hold_expires_at = None;
        let saved = self.save(&current, next, Some(event_type::CONFIRMED)).await;
        self.settle(saved, id, BookingStatus::Confirmed).await
    }

    pub(crate) async fn cancel(&self, id: Uuid, caller: &Caller) -> Result<BookingRecord> {
        let current = self.load_visible(id, caller).await?;
        if current.is_lapsed(now()) {
            self.expire(current).await?;
            return Err(BookingError::WrongState {
                status: BookingStatus::Expired,
                action: "cancelled",
            });
        }
        match current.status {
            BookingStatus::Cancelled => return Ok(current),
            BookingStatus::Held | BookingStatus::PendingPayment | BookingStatus::Confirmed => {}
            status => {
                return Err(BookingError::WrongState {
                    status,
                    action: "cancelled",
                });
            }
        }
        self.end_with_release(
            current,
            BookingStatus::Cancelled,
            event_type::CANCELLED,
            None,
        )
        .await
    }

    pub(crate) async fn reschedule(
        &self,
        id: Uuid,
        start: DateTime<Utc>,
        caller: &Caller,
    ) -> Result<BookingRecord> {
        let current = self.load_visible(id, caller).await?;
        if current.is_lapsed(now()) {
            self.expire(current).await?;
            return Err(LedgerError::HoldExpired.into());
        }
        if !matches!(
            current.status,
            BookingStatus::Held | BookingStatus::PendingPayment | BookingStatus::Confirmed
        ) {
            return Err(BookingError::WrongState {
                status: current.status,
                action: "rescheduled",
            });
        }
        if micros(start) == current.start {
            return Ok(current);
        }
        // A conflict fails here and leaves both the ledger and the booking
        // at the old time.
        let receipt = self
            .inner
            .ledger
            .reschedule(current.claim_id, start)
            .await?;
        // A paid (or being paid) booking keeps the price its payment is
        // for: moving it to a slot of another price would part the money
        // from the booking.
        if current.price_minor > 0
            && (receipt.price_minor != current.price_minor || receipt.currency != current.currency)
        {
            self.undo_reschedule(id, receipt.claim_id, current.start)
                .await;
            return Err(BookingError::PriceChanged);
        }
        let mut next = current.clone();
        next.claim_id = receipt.claim_id;
        next.start = micros(receipt.start);
        next.end = micros(receipt.end);
        next.price_minor = receipt.price_minor;
        next.currency = receipt.currency;
        // The refund terms stay those the customer booked under.
        // A ledger that does not report the owner keeps the one we know.
        next.resource_owner_id =
            owner(receipt.resource_owner).or(current.resource_owner_id.clone());
        if current.status.is_hold() {
            next.hold_expires_at = receipt.expires_at.map(micros).or(current.hold_expires_at);
        }
        match self
            .save(&current, next, Some(event_type::RESCHEDULED))
            .await
        {
            Ok(saved) => Ok(saved),
            Err(error) => {
                // The ledger moved but the booking did not: move the ledger
                // back so the two agree again.
                self.undo_reschedule(id, receipt.claim_id, current.start)
                    .await;
                Err(error)
            }
        }
    }

    async fn undo_reschedule(&self, id: Uuid, claim_id: Uuid, start: DateTime<Utc>) {
        if let Err(back) = self.inner.ledger.reschedule(claim_id, start).await {
            tracing::error!(booking_id = %id, %back, "cannot undo a ledger reschedule; booking and ledger disagree on its time");
        }
    }

    /// Marks a lapsed hold expired and frees its claim (a no-op in the
    /// ledger if the hold already lapsed there, but it also frees a claim the
    /// ledger confirmed while our write failed).
    pub(crate) async fn expire(&self, current: BookingRecord) -> Result<()> {
        match self
            .end_with_release(current, BookingStatus::Expired, event_type::EXPIRED, None)
            .await
        {
            Ok(_) | Err(BookingError::Concurrent) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Moves to a final status and records the claim release as a pending
    /// saga step in the same transaction, then tries it once right away.
    pub(crate) async fn end_with_release(
        &self,
        current: BookingRecord,
        status: BookingStatus,
        event: &str,
        reason: Option<FailureReason>,
    ) -> Result<BookingRecord> {
        let mut next = current.clone();
        next.status = status;
        next.status_reason = reason.map(|r| r.as_str().to_owned());
        next.saga = Some(Saga {
            step: SagaStep::ReleaseClaim,
            attempts: 0,
            next_attempt_at: saga::lease_until(now()),
            last_error: None,
        });
        let saved = self.save(&current, next, Some(event)).await;
        let saved = self.settle(saved, current.id, status).await?;
        Ok(self.compensate(saved).await)
    }

    /// Like [`Self::load`], but a booking `caller` may not see is "not found",
    /// with the same error (and so the same response) as an unknown id.
    pub(crate) async fn load_visible(&self, id: Uuid, caller: &Caller) -> Result<BookingRecord> {
        match self.load(id).await {
            Ok(booking) if caller.can_see(&booking) => Ok(booking),
            Ok(_) => Err(BookingError::NotFound(id)),
            Err(error) => Err(error),
        }
    }

    pub(crate) async fn load(&self, id: Uuid) -> Result<BookingRecord> {
        self.inner
            .store
            .get_booking(id)
            .await?
            .ok_or(BookingError::NotFound(id))
    }

    /// Writes `next` over `current` (compare-and-set on the version) with an
    /// optional event in the same transaction.
    pub(crate) async fn save(
        &self,
        current: &BookingRecord,
        mut next: BookingRecord,
        event: Option<&str>,
    ) -> Result<BookingRecord> {
        next.version = current.version + 1;
        next.updated_at = now().max(current.updated_at);
        let event = event.map(|kind| Event::new(kind, &next));
        let written = self
            .inner
            .store
            .update_booking(&next, current.version, event.as_ref())
            .await?;
        if !written {
            return Err(BookingError::Concurrent);
        }
        if event.is_some() {
            self.wake_relay();
        }
        Ok(next)
    }

    /// A lost race is fine if the winner reached the state we wanted.
    async fn settle(
        &self,
        saved: Result<BookingRecord>,
        id: Uuid,
        wanted: BookingStatus,
    ) -> Result<BookingRecord> {
        match saved {
            Err(BookingError::Concurrent) => {
                let now_stored = self.load(id).await?;
                if now_stored.status == wanted {
                    Ok(now_stored)
                } else {
                    Err(BookingError::Concurrent)
                }
            }
            other => other,
        }
    }
}

/// The ledger reports an unknown owner as "" (older peers leave it out).
fn owner(resource_owner: String) -> Option<String> {
    (!resource_owner.is_empty()).then_some(resource_owner)
}
