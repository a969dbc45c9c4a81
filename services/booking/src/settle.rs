//! What the payment saga asks of a priced booking ([`Settlement`]): secure
//! its time, confirm it once paid, or end it `payment_failed`. Each is
//! idempotent and retried on a lost compare-and-set, so the saga can repeat
//! any call after a crash.
//!
//! Securing a hold that lapsed gives the old claim back first and then
//! claims the time again for good: the release is the pending compensation
//! that expiring recorded, done here so the saga worker cannot release the
//! new claim later (it would release the old claim id, which is already
//! free).

use async_trait::async_trait;
use berth_ledger::{ClaimRequest, LedgerError};
use berth_settlement::{
    BookingState, FailureReason, Paid, PayableBooking, Secured, Settlement, SettlementError,
};
use uuid::Uuid;

use crate::Booking;
use crate::access::Visibility;
use crate::error::BookingError;
use crate::model::{BookingRecord, BookingStatus, event_type, now};
use crate::store::ListFilter;

/// Lost compare-and-set races tolerated per call before giving up (the
/// saga retries later).
const RACES: usize = 5;

type Result<T> = std::result::Result<T, BookingError>;

impl Booking {
    /// See [`Settlement::secure`].
    pub async fn secure_payment(&self, id: Uuid) -> Result<Secured> {
        for _ in 0..RACES {
            let current = self.load_priced(id).await?;
            match current.status {
                BookingStatus::Confirmed => return Ok(Secured::Held(payable(&current))),
                BookingStatus::Cancelled | BookingStatus::PaymentFailed => {
                    return Ok(Secured::Ended(payable(&current)));
                }
                BookingStatus::Held => return Err(not_priced(id)),
                BookingStatus::PendingPayment if current.is_secured() => {
                    return Ok(Secured::Held(payable(&current)));
                }
                BookingStatus::PendingPayment if !current.is_lapsed(now()) => {
                    match self.inner.ledger.confirm(current.claim_id).await {
                        Ok(_) => {
                            let mut next = current.clone();
                            next.hold_expires_at = None;
                            match self.save(&current, next, None).await {
                                Ok(saved) => return Ok(Secured::Held(payable(&saved))),
                                Err(BookingError::Concurrent) => continue,
                                Err(error) => return Err(error),
                            }
                        }
                        // The ledger saw the hold lapse first: claim again.
                        Err(LedgerError::HoldExpired | LedgerError::NotFound(_)) => {}
                        Err(error) => return Err(error.into()),
                    }
                }
                BookingStatus::PendingPayment | BookingStatus::Expired => {}
            }
            match self.reclaim(&current).await? {
                Some(outcome) => return Ok(outcome),
                None => continue,
            }
        }
        Err(BookingError::Concurrent)
    }

    /// Claims a lapsed booking's time again, for good. `None`: the booking
    /// changed meanwhile (the new claim is given back); look again.
    async fn reclaim(&self, current: &BookingRecord) -> Result<Option<Secured>> {
        let ledger = &self.inner.ledger;
        ledger.release(current.claim_id).await?;
        let claimed = ledger
            .claim(ClaimRequest {
                resource_id: current.resource_id,
                appointment_type_id: current.appointment_type_id,
                start: current.start,
                seats: current.seats,
                hold_for: None,
                owner: current.id.to_string(),
            })
            .await;
        let receipt = match claimed {
            Ok(receipt) => receipt,
            Err(LedgerError::SlotUnavailable(_)) => {
                return Ok(Some(Secured::SlotTaken(payable(current))));
            }
            Err(error) => return Err(error.into()),
        };
        let mut next = current.clone();
        next.status = BookingStatus::PendingPayment;
        next.claim_id = receipt.claim_id;
        next.hold_expires_at = None;
        // The old claim is free (released above): nothing left to compensate.
        next.saga = None;
        let event = (current.status == BookingStatus::Expired).then_some(event_type::REINSTATED);
        match self.save(current, next, event).await {
            Ok(saved) => Ok(Some(Secured::Held(payable(&saved)))),
            Err(BookingError::Concurrent) => {
                crate::saga::release_now(&**ledger, receipt.claim_id).await;
                Ok(None)
            }
            Err(error) => {
                crate::saga::release_now(&**ledger, receipt.claim_id).await;
                Err(error)
            }
        }
    }

    /// See [`Settlement::mark_paid`].
    pub async fn mark_paid(&self, id: Uuid) -> Result<Paid> {
        for _ in 0..RACES {
            let current = self.load_priced(id).await?;
            match current.status {
                BookingStatus::Confirmed => return Ok(Paid::Confirmed(payable(&current))),
                BookingStatus::PendingPayment if current.is_secured() => {
                    let mut next = current.clone();
                    next.status = BookingStatus::Confirmed;
                    next.status_reason = None;
                    match self.save(&current, next, Some(event_type::PAID)).await {
                        Ok(saved) => return Ok(Paid::Confirmed(payable(&saved))),
                        Err(BookingError::Concurrent) => continue,
                        Err(error) => return Err(error),
                    }
                }
                BookingStatus::PendingPayment => {
                    return Err(BookingError::Invalid(format!(
                        "booking {id}: its time is not secured; secure it before marking it paid"
                    )));
                }
                BookingStatus::Held => return Err(not_priced(id)),
                BookingStatus::Cancelled
                | BookingStatus::Expired
                | BookingStatus::PaymentFailed => {
                    return Ok(Paid::Ended(payable(&current)));
                }
            }
        }
        Err(BookingError::Concurrent)
    }

    /// See [`Settlement::fail_payment`].
    pub async fn fail_payment(&self, id: Uuid, reason: FailureReason) -> Result<BookingRecord> {
        for _ in 0..RACES {
            let current = self.load_priced(id).await?;
            let failed = match current.status {
                BookingStatus::PaymentFailed | BookingStatus::Cancelled => return Ok(current),
                BookingStatus::PendingPayment => {
                    self.end_with_release(
                        current,
                        BookingStatus::PaymentFailed,
                        event_type::PAYMENT_FAILED,
                        Some(reason),
                    )
                    .await
                }
                // Expiring already scheduled the release of its claim.
                BookingStatus::Expired => {
                    let mut next = current.clone();
                    next.status = BookingStatus::PaymentFailed;
                    next.status_reason = Some(reason.as_str().to_owned());
                    self.save(&current, next, Some(event_type::PAYMENT_FAILED))
                        .await
                }
                status @ (BookingStatus::Confirmed | BookingStatus::Held) => {
                    return Err(BookingError::WrongState {
                        status,
                        action: "marked payment_failed",
                    });
                }
            };
            match failed {
                Err(BookingError::Concurrent) => continue,
                other => return other,
            }
        }
        Err(BookingError::Concurrent)
    }

    async fn load_priced(&self, id: Uuid) -> Result<BookingRecord> {
        let booking = self.load(id).await?;
        if booking.price_minor <= 0 {
            return Err(not_priced(id));
        }
        Ok(booking)
    }

    /// A booking as the payment service sees it.
    pub async fn payable(&self, id: Uuid) -> Result<PayableBooking> {
        Ok(payable(&self.load(id).await?.effective(now())))
    }

    /// Every priced booking, as the payment service sees it (for the money
    /// checker; reads the whole table a page at a time).
    pub async fn priced_bookings(&self) -> Result<Vec<PayableBooking>> {
        let mut priced = Vec::new();
        let mut after = None;
        loop {
            let filter = ListFilter {
                resource_id: None,
                status: None,
                from: None,
                to: None,
                after,
                limit: 500,
                now: now(),
                visible: Visibility::All,
            };
            let page = self.list(&filter).await?;
            let Some(last) = page.last() else {
                return Ok(priced);
            };
            after = Some((last.start, last.id));
            priced.extend(page.iter().filter(|b| b.price_minor > 0).map(payable));
        }
    }
}

fn not_priced(id: Uuid) -> BookingError {
    BookingError::Invalid(format!("booking {id} is free: there is nothing to pay"))
}

pub(crate) fn payable(b: &BookingRecord) -> PayableBooking {
    PayableBooking {
        id: b.id,
        state: state(b.status),
        time_secured: b.is_secured(),
        price_minor: b.price_minor,
        currency: b.currency.clone(),
        customer_id: b.customer_id.clone(),
        resource_owner_id: b.resource_owner_id.clone(),
        start: b.start,
        hold_expires_at: b.hold_expires_at,
        cancellation_policy: b.cancellation_policy,
        updated_at: b.updated_at,
    }
}

fn state(status: BookingStatus) -> BookingState {
    match status {
        BookingStatus::Held => BookingState::Held,
        BookingStatus::PendingPayment => BookingState::PendingPayment,
        BookingStatus::Confirmed => BookingState::Confirmed,
        BookingStatus::Cancelled => BookingState::Cancelled,
        BookingStatus::Expired => BookingState::Expired,
        BookingStatus::PaymentFailed => BookingState::PaymentFailed,
    }
}

/// The one mapping of booking errors onto the contract's.
pub(crate) fn settlement_error(error: BookingError) -> SettlementError {
    match error {
        BookingError::NotFound(id) => SettlementError::NotFound(id),
        e @ (BookingError::WrongState { .. } | BookingError::Invalid(_)) => {
            SettlementError::Conflict(e.to_string())
        }
        BookingError::Concurrent => SettlementError::Unavailable(error.to_string()),
        BookingError::Ledger(LedgerError::Unavailable(detail)) => {
            SettlementError::Unavailable(detail)
        }
        BookingError::Database(ref db) if berth_runtime::postgres::is_unavailable(db) => {
            SettlementError::Unavailable(error.to_string())
        }
        other => SettlementError::Internal(other.to_string()),
    }
}

#[async_trait]
impl Settlement for Booking {
    async fn booking(&self, id: Uuid) -> std::result::Result<PayableBooking, SettlementError> {
        self.payable(id).await.map_err(settlement_error)
    }

    async fn secure(&self, id: Uuid) -> std::result::Result<Secured, SettlementError> {
        self.secure_payment(id).await.map_err(settlement_error)
    }

    async fn mark_paid(&self, id: Uuid) -> std::result::Result<Paid, SettlementError> {
        Booking::mark_paid(self, id).await.map_err(settlement_error)
    }

    async fn fail_payment(
        &self,
        id: Uuid,
        reason: FailureReason,
    ) -> std::result::Result<PayableBooking, SettlementError> {
        Booking::fail_payment(self, id, reason)
            .await
            .map(|b| payable(&b))
            .map_err(settlement_error)
    }
}
