//! The reconciler: what the webhook path alone could leave undone.
//! Every `reconcile_interval` it
//! - applies Stripe events that were stored but never applied (the process
//!   died after answering the webhook);
//! - gives up on payments never authorised long after their hold lapsed
//!   (their intent is cancelled, so a late authorisation cannot charge an
//!   unbooked customer), and notices cancelled bookings whose event was
//!   missed;
//! - counts and logs sagas that are not moving (stuck in a step, e.g. the
//!   booking service or Stripe down for long);
//! - every tenth pass, lists Stripe's recent intents and compares them with
//!   Berth's payments: an intent Berth does not end as Stripe shows it is
//!   woken (the rules repair it: an authorisation left open is cancelled, a
//!   capture of a failed payment refunded), and one Berth has no payment
//!   for is reported.

use std::time::Duration;

use berth_settlement::{BookingState, SettlementError};
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::Payments;
use crate::error::PaymentError;
use crate::metrics;
use crate::model::{Payment, before, now};
use crate::saga::rules::{IntentStatus, Observation, State};

const BATCH: i64 = 100;
/// Stored events younger than this are still being applied by their receiver.
const APPLY_GRACE: Duration = Duration::from_secs(10);
/// Stripe keeps an uncaptured authorisation seven days; look a day further.
const DRIFT_WINDOW: Duration = Duration::from_secs(8 * 24 * 60 * 60);
const DRIFT_EVERY: u64 = 10;

/// What one pass found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Findings {
    pub applied_events: usize,
    pub abandoned: usize,
    pub stuck: usize,
    pub woken_for_drift: usize,
    /// Intents carrying a Berth payment id that Berth has no payment for.
    pub unknown_intents: Vec<String>,
}

impl Payments {
    /// One reconciler pass; `drift`: also compare with Stripe's intents.
    pub async fn reconcile(&self, drift: bool) -> Result<Findings, PaymentError> {
        let mut findings = Findings::default();
        let now = now();
        let store = &self.inner.store;
        for event in store
            .unprocessed_stripe_events(before(now, APPLY_GRACE), BATCH)
            .await?
        {
            self.apply_stripe_event(&event, None).await?;
            findings.applied_events += 1;
        }
        findings.abandoned = self.give_up_on_abandoned(now).await?;
        findings.stuck = self.count_stuck(now).await?;
        if drift {
            self.compare_with_stripe(now, &mut findings).await?;
        }
        let gauge = metrics::reconciler_findings();
        gauge
            .with_label_values(&["stuck"])
            .set(count(findings.stuck));
        if drift {
            gauge.with_label_values(&["drift"]).set(count(
                findings.woken_for_drift + findings.unknown_intents.len(),
            ));
        }
        Ok(findings)
    }

    async fn give_up_on_abandoned(&self, now: DateTime<Utc>) -> Result<usize, PaymentError> {
        let config = &self.inner.config;
        let mut abandoned = 0;
        let waiting = self
            .inner
            .store
            .awaiting_created_before(before(now, config.abandon_after), BATCH)
            .await?;
        for payment in waiting {
            let observation = match self.inner.settlement.booking(payment.booking_id).await {
                Ok(b) if b.state == BookingState::Cancelled => {
                    Some(Observation::BookingCancelled {
                        refund_minor: payment.amount_minor,
                    })
                }
                Ok(b)
                    if b.state == BookingState::PendingPayment
                        && b.hold_expires_at
                            .is_none_or(|at| at > before(now, config.abandon_after)) =>
                {
                    None
                }
                Ok(b) if b.state == BookingState::Confirmed => None,
                Ok(_) | Err(SettlementError::NotFound(_)) => Some(Observation::Abandoned),
                Err(error) => {
                    tracing::warn!(payment_id = %payment.id, %error, "cannot look at an awaited payment's booking");
                    None
                }
            };
            if let Some(observation) = observation {
                self.observe(payment.id, observation, "reconciler: never paid")
                    .await?;
                abandoned += 1;
            }
        }
        Ok(abandoned)
    }

    async fn count_stuck(&self, now: DateTime<Utc>) -> Result<usize, PaymentError> {
        let stuck = self
            .inner
            .store
            .moving_since_before(before(now, self.inner.config.stuck_after), BATCH)
            .await?;
        for payment in &stuck {
            tracing::warn!(
                payment_id = %payment.id,
                booking_id = %payment.booking_id,
                state = %payment.state,
                attempts = payment.attempts,
                last_error = payment.last_error.as_deref().unwrap_or(""),
                "payment saga is not moving"
            );
        }
        Ok(stuck.len())
    }

    async fn compare_with_stripe(
        &self,
        now: DateTime<Utc>,
        findings: &mut Findings,
    ) -> Result<(), PaymentError> {
        let since = before(now, DRIFT_WINDOW).timestamp();
        let store = &self.inner.store;
        let mut after: Option<String> = None;
        loop {
            let (page, more) = self
                .inner
                .stripe
                .intents_since(since, after.as_deref())
                .await?;
            for intent in &page {
                let Some(ours) = &intent.payment_id else {
                    continue;
                };
                let Some(payment) = store.by_intent(&intent.id).await? else {
                    let owner = match ours.parse::<uuid::Uuid>() {
                        Ok(id) => store.get(id).await?,
                        Err(_) => None,
                    };
                    // An intent whose creation answer is still on its way
                    // (the create step adopts it) is not a stranger.
                    let being_created = owner.is_some_and(|p| p.intent_id.is_none());
                    if !being_created && intent.view.status != IntentStatus::Canceled {
                        tracing::error!(intent = %intent.id, payment_id = %ours, "an intent Berth has no payment for");
                        findings.unknown_intents.push(intent.id.clone());
                    }
                    continue;
                };
                let stripe = (intent.view.status, intent.view.amount_received);
                if disagrees(&payment, stripe)
                    && self.look_again(&intent.id, payment.id).await?.is_some()
                {
                    findings.woken_for_drift += 1;
                }
            }
            match (more, page.last()) {
                (true, Some(last)) => after = Some(last.id.clone()),
                _ => return Ok(()),
            }
        }
    }
}

/// Whether an ended payment and Stripe's intent (status, amount received)
/// tell different stories.
fn disagrees(p: &Payment, (status, received): (IntentStatus, i64)) -> bool {
    match p.state {
        State::Paid => status != IntentStatus::Succeeded || received != p.captured_minor,
        State::Failed => status == IntentStatus::RequiresCapture || received > p.refunded_minor,
        State::Refunded => status != IntentStatus::Succeeded,
        _ => false,
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Runs passes until `stop`.
pub(crate) fn spawn(payments: Payments, stop: CancellationToken) {
    let every = payments.inner.config.reconcile_interval;
    tokio::spawn(async move {
        let mut pass: u64 = 0;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
            match payments.reconcile(pass.is_multiple_of(DRIFT_EVERY)).await {
                Ok(findings) if findings != Findings::default() => {
                    tracing::info!(?findings, "payment reconciler pass");
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "payment reconciler pass failed"),
            }
            if let Err(error) = payments
                .inner
                .store
                .purge(before(now(), payments.inner.config.retention))
                .await
            {
                tracing::warn!(%error, "purging old payment events failed");
            }
            pass += 1;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_payments_are_compared_with_what_stripe_shows() {
        let payment = |state, captured, refunded| Payment {
            state,
            captured_minor: captured,
            refunded_minor: refunded,
            ..crate::model::tests::payment()
        };
        let paid = payment(State::Paid, 4500, 0);
        assert!(!disagrees(&paid, (IntentStatus::Succeeded, 4500)));
        assert!(disagrees(&paid, (IntentStatus::Canceled, 0)));
        let failed = payment(State::Failed, 0, 0);
        assert!(!disagrees(&failed, (IntentStatus::Canceled, 0)));
        assert!(disagrees(&failed, (IntentStatus::RequiresCapture, 0)));
        assert!(disagrees(&failed, (IntentStatus::Succeeded, 4500)));
        // Captured, then all refunded: Stripe still shows it received.
        let refunded_back = payment(State::Failed, 4500, 4500);
        assert!(!disagrees(&refunded_back, (IntentStatus::Succeeded, 4500)));
        let moving = payment(State::Capturing, 0, 0);
        assert!(!disagrees(&moving, (IntentStatus::RequiresCapture, 0)));
    }
}
