//! The money checker behind `berth check-money`: reads every priced
//! booking, every payment and what Stripe shows for them, and reports where
//! money and bookings disagree. Meant to run once things are quiet (sagas
//! finished); a saga still in flight is reported as such, not as a pass.

use std::collections::HashMap;

use berth_settlement::{BookingState, PayableBooking};
use uuid::Uuid;

use crate::Payments;
use crate::error::PaymentError;
use crate::model::Payment;
use crate::saga::rules::IntentStatus;

/// One disagreement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A confirmed priced booking without exactly its price captured (and
    /// nothing refunded) in one intent.
    ConfirmedUnpaid { booking: Uuid, detail: String },
    /// Money kept, or an authorisation open, for a booking that is not
    /// confirmed (and was not cancelled with a partial refund).
    MoneyWithoutBooking { booking: Uuid, detail: String },
    /// More than one intent holds money for one booking.
    PaidTwice { booking: Uuid, intents: Vec<String> },
    /// A refund of a booking that was neither cancelled nor failed.
    RefundWithoutCancellation { booking: Uuid, refunded_minor: i64 },
    /// Berth and Stripe disagree on what was kept.
    BooksDiffer { booking: Uuid, detail: String },
    /// The saga has not finished.
    InFlight { booking: Uuid, state: String },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ConfirmedUnpaid { booking, detail } => {
                write!(f, "booking {booking} is confirmed but not paid: {detail}")
            }
            Self::MoneyWithoutBooking { booking, detail } => {
                write!(
                    f,
                    "booking {booking} is not confirmed but money is held: {detail}"
                )
            }
            Self::PaidTwice { booking, intents } => {
                write!(
                    f,
                    "booking {booking} is paid by several intents: {}",
                    intents.join(", ")
                )
            }
            Self::RefundWithoutCancellation {
                booking,
                refunded_minor,
            } => write!(
                f,
                "booking {booking} was refunded {refunded_minor} without a cancellation"
            ),
            Self::BooksDiffer { booking, detail } => {
                write!(f, "booking {booking}: Berth and Stripe disagree: {detail}")
            }
            Self::InFlight { booking, state } => {
                write!(f, "booking {booking}: its payment is still {state}")
            }
        }
    }
}

/// What Stripe shows of one intent.
struct Charge {
    id: String,
    status: IntentStatus,
    received: i64,
    refunded: i64,
}

impl Charge {
    fn kept(&self) -> i64 {
        self.received - self.refunded
    }

    fn holds_money(&self) -> bool {
        self.kept() > 0 || self.status == IntentStatus::RequiresCapture
    }
}

impl Payments {
    /// Checks `bookings` (every priced booking) against the payments and
    /// Stripe; an empty list means money and bookings agree.
    pub async fn check_money(
        &self,
        bookings: &[PayableBooking],
    ) -> Result<Vec<Finding>, PaymentError> {
        let store = &self.inner.store;
        let mut payments: HashMap<Uuid, Payment> = HashMap::new();
        let mut after = None;
        loop {
            let page = store.page(after, 500).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            payments.extend(page.into_iter().map(|p| (p.booking_id, p)));
        }
        let by_booking = self.stripe_charges(&payments).await?;
        let mut findings = Vec::new();
        for booking in bookings.iter().filter(|b| b.price_minor > 0) {
            let payment = payments.get(&booking.id);
            let charges = by_booking
                .get(&booking.id)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            check_one(booking, payment, charges, &mut findings);
        }
        Ok(findings)
    }

    /// Stripe's intents of Berth's bookings, found both through the
    /// payments and by listing intents with a Berth booking id (an intent
    /// Berth lost track of counts too).
    async fn stripe_charges(
        &self,
        payments: &HashMap<Uuid, Payment>,
    ) -> Result<HashMap<Uuid, Vec<Charge>>, PaymentError> {
        let stripe = &self.inner.stripe;
        let mut found: HashMap<String, (Uuid, Charge)> = HashMap::new();
        let earliest = payments.values().map(|p| p.created_at).min();
        if let Some(earliest) = earliest {
            let since = (earliest - chrono::TimeDelta::days(1)).timestamp();
            let mut after: Option<String> = None;
            loop {
                let (page, more) = stripe.intents_since(since, after.as_deref()).await?;
                for intent in &page {
                    let Some(booking) =
                        intent.view.booking_id.as_ref().and_then(|b| b.parse().ok())
                    else {
                        continue;
                    };
                    let refunded = if intent.view.amount_received > 0 {
                        stripe.refunded_total(&intent.id).await?
                    } else {
                        0
                    };
                    found.insert(
                        intent.id.clone(),
                        (
                            booking,
                            Charge {
                                id: intent.id.clone(),
                                status: intent.view.status,
                                received: intent.view.amount_received,
                                refunded,
                            },
                        ),
                    );
                }
                match (more, page.last()) {
                    (true, Some(last)) => after = Some(last.id.clone()),
                    _ => break,
                }
            }
        }
        let mut by_booking: HashMap<Uuid, Vec<Charge>> = HashMap::new();
        for (booking, charge) in found.into_values() {
            by_booking.entry(booking).or_default().push(charge);
        }
        Ok(by_booking)
    }
}

fn check_one(
    booking: &PayableBooking,
    payment: Option<&Payment>,
    charges: &[Charge],
    findings: &mut Vec<Finding>,
) {
    let id = booking.id;
    if let Some(p) = payment
        && !p.state.is_terminal()
    {
        findings.push(Finding::InFlight {
            booking: id,
            state: p.state.as_str().to_owned(),
        });
        return;
    }
    let holding: Vec<&Charge> = charges.iter().filter(|c| c.holds_money()).collect();
    if holding.len() > 1 {
        findings.push(Finding::PaidTwice {
            booking: id,
            intents: holding.iter().map(|c| c.id.clone()).collect(),
        });
    }
    let kept: i64 = charges.iter().map(Charge::kept).sum();
    let refunded: i64 = charges.iter().map(|c| c.refunded).sum();
    let open = charges
        .iter()
        .any(|c| c.status == IntentStatus::RequiresCapture);
    match booking.state {
        BookingState::Confirmed => {
            let paid = payment.is_some_and(|p| p.intent_id.is_some())
                && kept == booking.price_minor
                && refunded == 0
                && holding.len() == 1;
            if !paid {
                findings.push(Finding::ConfirmedUnpaid {
                    booking: id,
                    detail: format!(
                        "price {} {}, Stripe keeps {kept} (refunded {refunded}, {} intent(s) holding money), payment {}",
                        booking.price_minor,
                        booking.currency,
                        holding.len(),
                        payment.map_or("none", |p| p.state.as_str())
                    ),
                });
            }
            if refunded > 0 {
                findings.push(Finding::RefundWithoutCancellation {
                    booking: id,
                    refunded_minor: refunded,
                });
            }
        }
        BookingState::Cancelled => {
            let berth_kept = payment.map_or(0, |p| p.captured_minor - p.refunded_minor);
            if kept != berth_kept || open {
                findings.push(Finding::BooksDiffer {
                    booking: id,
                    detail: format!(
                        "cancelled: Berth keeps {berth_kept}, Stripe keeps {kept}{}",
                        if open {
                            " and an authorisation is open"
                        } else {
                            ""
                        }
                    ),
                });
            }
        }
        BookingState::Held
        | BookingState::PendingPayment
        | BookingState::Expired
        | BookingState::PaymentFailed => {
            if kept > 0 || open {
                findings.push(Finding::MoneyWithoutBooking {
                    booking: id,
                    detail: format!(
                        "the booking is {}; Stripe keeps {kept}{}",
                        booking.state,
                        if open {
                            " and an authorisation is open"
                        } else {
                            ""
                        }
                    ),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::rules::State;

    fn booking(state: BookingState) -> PayableBooking {
        PayableBooking {
            id: Uuid::now_v7(),
            state,
            time_secured: false,
            price_minor: 4500,
            currency: "EUR".into(),
            customer_id: None,
            resource_owner_id: None,
            start: chrono::Utc::now(),
            hold_expires_at: None,
            cancellation_policy: None,
            updated_at: chrono::Utc::now(),
        }
    }

    fn charge(status: IntentStatus, received: i64, refunded: i64) -> Charge {
        Charge {
            id: format!("pi_{received}_{refunded}"),
            status,
            received,
            refunded,
        }
    }

    fn payment(state: State, captured: i64, refunded: i64) -> Payment {
        Payment {
            state,
            captured_minor: captured,
            refunded_minor: refunded,
            ..crate::model::tests::payment()
        }
    }

    fn findings(b: &PayableBooking, p: Option<&Payment>, charges: &[Charge]) -> Vec<Finding> {
        let mut found = Vec::new();
        check_one(b, p, charges, &mut found);
        found
    }

    #[test]
    fn agreeing_books_have_no_findings() {
        let paid = payment(State::Paid, 4500, 0);
        assert!(
            findings(
                &booking(BookingState::Confirmed),
                Some(&paid),
                &[charge(IntentStatus::Succeeded, 4500, 0)]
            )
            .is_empty()
        );
        let failed = payment(State::Failed, 0, 0);
        assert!(
            findings(
                &booking(BookingState::PaymentFailed),
                Some(&failed),
                &[charge(IntentStatus::Canceled, 0, 0)]
            )
            .is_empty()
        );
        let half = payment(State::Refunded, 4500, 2250);
        assert!(
            findings(
                &booking(BookingState::Cancelled),
                Some(&half),
                &[charge(IntentStatus::Succeeded, 4500, 2250)]
            )
            .is_empty()
        );
        assert!(findings(&booking(BookingState::Expired), None, &[]).is_empty());
    }

    #[test]
    fn each_kind_of_disagreement_is_found() {
        let paid = payment(State::Paid, 4500, 0);
        // Confirmed, nothing captured (Cal.com #15294's inverse).
        let f = findings(
            &booking(BookingState::Confirmed),
            Some(&paid),
            &[charge(IntentStatus::RequiresCapture, 0, 0)],
        );
        assert!(matches!(f[0], Finding::ConfirmedUnpaid { .. }), "{f:?}");
        // Confirmed without any payment.
        assert!(matches!(
            findings(&booking(BookingState::Confirmed), None, &[])[0],
            Finding::ConfirmedUnpaid { .. }
        ));
        // Charged but the booking failed (Cal.com #14040).
        let failed = payment(State::Failed, 0, 0);
        let f = findings(
            &booking(BookingState::PaymentFailed),
            Some(&failed),
            &[charge(IntentStatus::Succeeded, 4500, 0)],
        );
        assert!(matches!(f[0], Finding::MoneyWithoutBooking { .. }), "{f:?}");
        // An authorisation left open on an expired booking.
        let f = findings(
            &booking(BookingState::Expired),
            Some(&failed),
            &[charge(IntentStatus::RequiresCapture, 0, 0)],
        );
        assert!(matches!(f[0], Finding::MoneyWithoutBooking { .. }), "{f:?}");
        // Paid twice.
        let f = findings(
            &booking(BookingState::Confirmed),
            Some(&paid),
            &[
                charge(IntentStatus::Succeeded, 4500, 0),
                charge(IntentStatus::Succeeded, 4501, 0),
            ],
        );
        assert!(
            f.iter().any(|f| matches!(f, Finding::PaidTwice { .. })),
            "{f:?}"
        );
        // A refund of a confirmed booking.
        let f = findings(
            &booking(BookingState::Confirmed),
            Some(&paid),
            &[charge(IntentStatus::Succeeded, 4500, 100)],
        );
        assert!(
            f.iter()
                .any(|f| matches!(f, Finding::RefundWithoutCancellation { .. })),
            "{f:?}"
        );
        // Cancelled, but Stripe kept more than Berth thinks.
        let refunded = payment(State::Refunded, 4500, 4500);
        let f = findings(
            &booking(BookingState::Cancelled),
            Some(&refunded),
            &[charge(IntentStatus::Succeeded, 4500, 0)],
        );
        assert!(matches!(f[0], Finding::BooksDiffer { .. }), "{f:?}");
        // Still in flight is not a pass.
        let moving = payment(State::Capturing, 0, 0);
        let f = findings(&booking(BookingState::PendingPayment), Some(&moving), &[]);
        assert!(matches!(f[0], Finding::InFlight { .. }), "{f:?}");
    }
}
