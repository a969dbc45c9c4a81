//! The webhook inbox. A Stripe event is verified, stored once by its id and
//! only then answered 2xx (so Stripe retries anything not durably
//! recorded). Applying it only wakes the payment of its intent (leases it,
//! in the same transaction as the insert); the steps run after the answer
//! and fetch the intent from Stripe. A runner that dies after the answer
//! leaves the lease to lapse and the worker to go on; an event stored
//! unapplied (by an older version) is applied by the reconciler. Duplicates, any order and events days late are all the
//! same to the saga: it acts on what Stripe shows now.

use std::time::Instant;

use crate::Payments;
use crate::error::PaymentError;
use crate::model::{after, now};
use crate::saga::rules;
use crate::store::StripeEvent;
use crate::webhook::{self, EventHead};

impl Payments {
    /// Verifies and stores a webhook delivery; `true` if the event is new.
    pub(crate) async fn receive_webhook(
        &self,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<bool, PaymentError> {
        let received = Instant::now();
        let config = &self.inner.config;
        let now = now();
        webhook::verify(
            signature,
            body,
            &config.webhook_secrets,
            now.timestamp(),
            i64::try_from(config.webhook_tolerance.as_secs()).unwrap_or(i64::MAX),
        )
        .map_err(|e| PaymentError::Signature(e.to_string()))?;
        let text = std::str::from_utf8(body)
            .map_err(|_| PaymentError::BadRequest("the event is not UTF-8 JSON".into()))?;
        let head: EventHead = serde_json::from_str(text)
            .map_err(|e| PaymentError::BadRequest(format!("not a Stripe event: {e}")))?;
        let event = StripeEvent {
            object_id: head.intent_id().map(str::to_owned),
            id: head.id,
            event_type: head.event_type,
        };
        let lease_until = after(now, config.step_lease);
        let Some(woken) = self
            .inner
            .store
            .receive_stripe_event(
                &event,
                text,
                rules::woken_by(&event.event_type),
                now,
                lease_until,
            )
            .await?
        else {
            return Ok(false);
        };
        if let Some(leased) = woken {
            let payments = self.clone();
            tokio::spawn(async move {
                if let Err(error) = payments.run_from(leased, Some(received)).await {
                    tracing::warn!(event_id = %event.id, %error, "a step after a Stripe event failed; the worker retries it when its lease lapses");
                }
            });
        }
        Ok(true)
    }

    /// Wakes the payment of the event's intent and drives it, then marks the
    /// event applied. Events about intents that are not ours change nothing.
    pub(crate) async fn apply_stripe_event(
        &self,
        event: &StripeEvent,
        received: Option<Instant>,
    ) -> Result<(), PaymentError> {
        let store = &self.inner.store;
        if let Some(intent_id) = &event.object_id {
            let now = now();
            let lease_until = after(now, self.inner.config.step_lease);
            let states = rules::woken_by(&event.event_type);
            if let Some(leased) = store.wake(intent_id, states, now, lease_until).await? {
                self.run_from(leased, received).await?;
            }
        }
        store.stripe_event_processed(&event.id, now()).await
    }
}
