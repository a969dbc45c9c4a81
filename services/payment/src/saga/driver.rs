//! Runs the saga. A payment whose step is due is leased (its `step_due`
//! pushed ahead by a compare-and-set), its step runs, and where the rules
//! lead is written by another compare-and-set, with the step's history row
//! and any event, in one transaction. A runner that dies mid-step loses its
//! lease and another replica runs the step again; every step is safe to
//! repeat:
//! - creating: Stripe idempotency key `berth-<payment>-create-<n>`; `n` moves
//!   on only after Stripe's intents were searched for this payment;
//! - capturing, voiding: Stripe's own state refuses a second capture or
//!   cancel (the key changes per attempt, so a saved server error cannot
//!   block the step forever);
//! - refunding: key `berth-<payment>-refund-<n>`, one `n` per refund decided,
//!   and a lost answer is looked up by the refund's metadata;
//! - securing, confirming, failing the booking: idempotent booking calls.

use std::time::{Duration, Instant};

use berth_settlement::{FailureReason, Paid, PayableBooking, Secured, SettlementError};
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Payments;
use crate::error::PaymentError;
use crate::metrics;
use crate::model::{Payment, PaymentEvent, after, before, now};
use crate::saga::rules::{self, Announce, IntentStatus, IntentView, Observation, State};
use crate::stripe::{Intent, NewIntent, StripeCallError};

type Result<T> = std::result::Result<T, PaymentError>;

/// Steps one `drive` call runs at most (a saga has fewer states than this).
const STEPS_PER_DRIVE: usize = 16;
const WORKER_BATCH: i64 = 50;

/// How a chain of steps under one lease ended.
enum Chain {
    /// The payment waits, ended or retries later: the row as written.
    Done(Box<Payment>),
    /// Another writer (a wake, an observation) changed the row first.
    Lost,
}

/// What running a step found out.
enum Step {
    /// Something the rules decide on; `intent` carries a newly learned
    /// intent (its id and client secret are kept on the payment).
    Observed {
        observation: Observation,
        intent: Option<Box<Intent>>,
    },
    /// Nothing new (a payment still awaited).
    Nothing,
    /// Failed in a way worth trying again after a backoff.
    Retry(String),
    /// The create call's idempotency key is spent (a saved server error) and
    /// no intent was made with it: try again with the next key.
    NextCreateKey(String),
    /// Likewise for the refund's key.
    NextRefundKey(String),
}

fn observed(observation: Observation) -> Step {
    Step::Observed {
        observation,
        intent: None,
    }
}

fn seen(intent: Intent) -> Step {
    Step::Observed {
        observation: Observation::Intent(intent.view.clone()),
        intent: Some(Box::new(intent)),
    }
}

impl Payments {
    /// Starts the payment of `booking` (a `pending_payment` booking with a
    /// price) and runs its first step, creating the intent. A booking that
    /// already has a payment gets that one.
    pub(crate) async fn begin(&self, booking: &PayableBooking) -> Result<Payment> {
        let store = &self.inner.store;
        if let Some(existing) = store.by_booking(booking.id).await? {
            return self.current(existing).await;
        }
        let now = now();
        let payment = Payment {
            id: Uuid::now_v7(),
            booking_id: booking.id,
            customer_id: booking.customer_id.clone(),
            resource_owner_id: booking.resource_owner_id.clone(),
            amount_minor: booking.price_minor,
            currency: booking.currency.to_ascii_uppercase(),
            intent_id: None,
            client_secret: None,
            create_attempt: 0,
            state: State::Creating,
            failure: None,
            captured_minor: 0,
            refunded_minor: 0,
            refund_due_minor: 0,
            refund_seq: 0,
            cancellation_refund_minor: None,
            // Leased to this request, which runs the first step itself (the
            // worker takes over only if this process dies).
            step_due: Some(after(now, self.inner.config.step_lease)),
            attempts: 0,
            last_error: None,
            drift: None,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        if !store.insert(&payment).await? {
            // A concurrent request for the same booking won.
            let winner = store
                .by_booking(booking.id)
                .await?
                .ok_or_else(|| PaymentError::booking_not_found(booking.id))?;
            return self.current(winner).await;
        }
        let id = payment.id;
        self.run_from(payment, None)
            .await?
            .ok_or_else(|| PaymentError::Internal(format!("payment {id} vanished")))
    }

    /// The payment as it stands, after running its step if one is due.
    async fn current(&self, p: Payment) -> Result<Payment> {
        if p.step_due.is_none_or(|due| due > now()) {
            return Ok(p);
        }
        Ok(self.drive(p.id, None).await?.unwrap_or(p))
    }

    /// Runs the payment's due steps one after the other until it waits (for
    /// Stripe, the customer, a retry) or another runner holds it. `woken`:
    /// when the webhook that started this arrived (for the latency metric).
    pub(crate) async fn drive(&self, id: Uuid, woken: Option<Instant>) -> Result<Option<Payment>> {
        let store = &self.inner.store;
        for _ in 0..STEPS_PER_DRIVE {
            let now = now();
            let lease_until = after(now, self.inner.config.step_lease);
            let Some(leased) = store.lease(id, now, lease_until).await? else {
                break;
            };
            if let Chain::Done(p) = self.run_chain(leased, woken).await? {
                return Ok(Some(*p));
            }
        }
        store.get(id).await
    }

    /// Makes a waiting payment (of `intent_id`, id `id`) fetch its intent
    /// again now and drives it; `None` if it was not waiting.
    pub(crate) async fn look_again(&self, intent_id: &str, id: Uuid) -> Result<Option<Payment>> {
        let now = now();
        let lease_until = after(now, self.inner.config.step_lease);
        let waiting = &State::WAITING;
        match self
            .inner
            .store
            .wake(intent_id, waiting, now, lease_until)
            .await?
        {
            Some(leased) => self.run_from(leased, None).await,
            None => {
                self.drive(id, None).await?;
                Ok(None)
            }
        }
    }

    /// Runs the steps of a payment this runner has just leased; drives it
    /// again if another writer took it meanwhile.
    pub(crate) async fn run_from(
        &self,
        leased: Payment,
        woken: Option<Instant>,
    ) -> Result<Option<Payment>> {
        let id = leased.id;
        match self.run_chain(leased, woken).await? {
            Chain::Done(p) => Ok(Some(*p)),
            Chain::Lost => self.drive(id, woken).await,
        }
    }

    /// Runs the step of a payment this runner holds the lease of and writes
    /// where it leads; while the next step is due at once, that same write
    /// keeps the lease and the next step runs here (one write per step).
    async fn run_chain(&self, mut leased: Payment, woken: Option<Instant>) -> Result<Chain> {
        for _ in 0..STEPS_PER_DRIVE {
            let step = self.run_step(&leased).await;
            let (mut next, note, event) = self.settle(&leased, step);
            let now = now();
            let chained = next.step_due.is_some_and(|due| due <= now);
            if chained {
                next.step_due = Some(after(now, self.inner.config.step_lease));
            }
            if !self
                .inner
                .store
                .update(&next, leased.state, &note, event.as_ref())
                .await?
            {
                return Ok(Chain::Lost);
            }
            if event.is_some() {
                self.wake_relay();
            }
            if next.state != leased.state {
                metrics::transitions()
                    .with_label_values(&[next.state.as_str()])
                    .inc();
                if let Some(woken) = woken
                    && next.state.is_terminal()
                {
                    metrics::webhook_to_state()
                        .with_label_values(&[next.state.as_str()])
                        .observe(woken.elapsed().as_secs_f64());
                }
                tracing::info!(payment_id = %next.id, from = %leased.state, to = %next.state, %note, "payment saga moved");
            }
            if !chained {
                return Ok(Chain::Done(Box::new(next)));
            }
            leased = next;
        }
        // Still due after more steps than a saga has states (a key spent
        // again and again): the lease lapses and the worker goes on later.
        Ok(Chain::Done(Box::new(leased)))
    }

    /// Feeds an observation from outside a step (a cancellation, a staff
    /// refund, an abandoned payment), persists it, and drives on.
    pub(crate) async fn observe(
        &self,
        id: Uuid,
        observation: Observation,
        note: &str,
    ) -> Result<Option<Payment>> {
        let store = &self.inner.store;
        for _ in 0..STEPS_PER_DRIVE {
            let Some(p) = store.get(id).await? else {
                return Ok(None);
            };
            let now = now();
            let mut next = p.clone();
            next.version += 1;
            next.updated_at = now.max(p.updated_at);
            let transition = self.apply(&mut next, &observation, now);
            if transition.is_none() && next == bumped(&p, &next) {
                // Changes nothing: nothing to write.
                return self.drive(id, None).await;
            }
            if transition.is_none() {
                // Only a fact changed; a step that may be running keeps its lease.
                next.step_due = p.step_due;
            }
            let event = transition
                .as_ref()
                .and_then(|t| t.announce)
                .map(|a| self.event(&next, a, now));
            if store.update(&next, p.state, note, event.as_ref()).await? {
                if event.is_some() {
                    self.wake_relay();
                }
                return self.drive(id, None).await;
            }
        }
        Err(PaymentError::Conflict(format!(
            "payment {id} kept changing; try again"
        )))
    }

    /// Where the step's outcome leads: the next row, the history note and
    /// the event to write with it.
    fn settle(&self, leased: &Payment, step: Step) -> (Payment, String, Option<PaymentEvent>) {
        let config = &self.inner.config;
        let now = now();
        let mut next = leased.clone();
        next.version += 1;
        next.updated_at = now.max(leased.updated_at);
        let (note, transition) = match step {
            Step::Observed {
                observation,
                intent,
            } => {
                if let Some(intent) = intent {
                    let Intent {
                        id, client_secret, ..
                    } = *intent;
                    next.intent_id = Some(id);
                    if client_secret.is_some() {
                        next.client_secret = client_secret;
                    }
                }
                let note = describe(&observation);
                (note, self.apply(&mut next, &observation, now))
            }
            Step::Nothing => {
                next.step_due = due(next.state, now, config.recheck_after);
                ("nothing new".to_owned(), None)
            }
            Step::Retry(error) => {
                next.attempts = next.attempts.saturating_add(1);
                next.step_due = Some(after(
                    now,
                    backoff(config.retry_base, config.retry_max, next.attempts),
                ));
                next.last_error = Some(error.clone());
                (format!("will retry: {error}"), None)
            }
            Step::NextCreateKey(error) => {
                next.create_attempt = next.create_attempt.saturating_add(1);
                next.step_due = Some(now);
                (
                    format!("create key spent ({error}); no intent made with it"),
                    None,
                )
            }
            Step::NextRefundKey(error) => {
                next.refund_seq = next.refund_seq.saturating_add(1);
                next.step_due = Some(now);
                (
                    format!("refund key spent ({error}); no refund made with it"),
                    None,
                )
            }
        };
        let event = transition
            .and_then(|t| t.announce)
            .map(|a| self.event(&next, a, now));
        (next, note, event)
    }

    /// Applies `observation` to `p` (its facts, then the rules' transition)
    /// and sets when its next step is due.
    fn apply(
        &self,
        p: &mut Payment,
        observation: &Observation,
        now: DateTime<Utc>,
    ) -> Option<rules::Transition> {
        match observation {
            Observation::Intent(view) if p.facts().matches(view) => {
                p.captured_minor = view.amount_received.clamp(0, p.amount_minor);
            }
            Observation::Refunded { amount_minor } => {
                p.refunded_minor = (p.refunded_minor + amount_minor).min(p.captured_minor);
            }
            Observation::BookingCancelled { refund_minor } => {
                p.cancellation_refund_minor = Some(*refund_minor);
            }
            _ => {}
        }
        let transition = rules::next(&p.facts(), observation);
        if let Some(t) = &transition {
            if let Some(drift) = &t.drift {
                tracing::error!(payment_id = %p.id, %drift, "payment disagrees with Stripe");
                p.drift = Some(drift.clone());
            }
            if t.state != p.state {
                p.attempts = 0;
                p.last_error = None;
                if t.state == State::Refunding {
                    p.refund_seq = p.refund_seq.saturating_add(1);
                    p.refund_due_minor = t
                        .refund_due_minor
                        .clamp(0, p.captured_minor - p.refunded_minor);
                } else {
                    p.refund_due_minor = 0;
                }
            }
            p.state = t.state;
            p.failure = t.failure;
        }
        p.step_due = due(p.state, now, self.inner.config.recheck_after);
        transition
    }

    fn event(&self, p: &Payment, announce: Announce, now: DateTime<Utc>) -> PaymentEvent {
        PaymentEvent {
            id: Uuid::now_v7(),
            event_type: announce.event_type().to_owned(),
            payment_id: p.id,
            booking_id: p.booking_id,
            amount_minor: p.amount_minor,
            currency: p.currency.clone(),
            refunded_minor: match announce {
                Announce::Refunded => p.refunded_minor,
                _ => 0,
            },
            failure: p.failure.map(|f| f.as_str().to_owned()),
            occurred_at: now,
        }
    }

    async fn run_step(&self, p: &Payment) -> Step {
        match p.state {
            State::Creating => self.create(p).await,
            State::AwaitingPayment | State::Paid | State::Failed | State::Refunded => {
                self.look(p).await
            }
            State::Securing => self.secure(p).await,
            State::Capturing => self.capture(p).await,
            State::Confirming => self.confirm(p).await,
            State::Voiding => self.void(p).await,
            State::Refunding => self.refund(p).await,
            State::FailingBooking => self.fail_booking(p).await,
        }
    }

    async fn create(&self, p: &Payment) -> Step {
        let stripe = &self.inner.stripe;
        if let Some(id) = &p.intent_id {
            return self.fetch(id).await;
        }
        let payment_id = p.id.to_string();
        let booking_id = p.booking_id.to_string();
        let new = NewIntent {
            payment_id: &payment_id,
            booking_id: &booking_id,
            amount_minor: p.amount_minor,
            currency: &p.currency,
            description: format!("Berth booking {booking_id}"),
        };
        match stripe.create_intent(&new, &p.create_key()).await {
            Ok(intent) => seen(intent),
            Err(error) if error.is_saved_server_error() => match self.find_intent(p).await {
                Ok(Some(intent)) => seen(intent),
                Ok(None) => Step::NextCreateKey(error.to_string()),
                Err(lookup) => Step::Retry(format!("{error}; looking for the intent: {lookup}")),
            },
            Err(error) if error.is_transient() => Step::Retry(error.to_string()),
            Err(error) => {
                tracing::error!(payment_id = %p.id, %error, "Stripe refused to create the payment");
                observed(Observation::CreateRejected)
            }
        }
    }

    /// The intent Stripe made for this payment, if any (a create call whose
    /// answer was lost).
    async fn find_intent(
        &self,
        p: &Payment,
    ) -> std::result::Result<Option<Intent>, StripeCallError> {
        let since = before(p.created_at, Duration::from_secs(300)).timestamp();
        let mut after_id: Option<String> = None;
        let ours = p.id.to_string();
        loop {
            let (page, more) = self
                .inner
                .stripe
                .intents_since(since, after_id.as_deref())
                .await?;
            if let Some(found) = page
                .iter()
                .find(|i| i.payment_id.as_deref() == Some(ours.as_str()))
            {
                return Ok(Some(found.clone()));
            }
            match (more, page.last()) {
                (true, Some(last)) => after_id = Some(last.id.clone()),
                _ => return Ok(None),
            }
        }
    }

    async fn fetch(&self, intent_id: &str) -> Step {
        match self.inner.stripe.intent(intent_id).await {
            Ok(intent) => seen(intent),
            Err(error) => Step::Retry(format!("fetching the intent: {error}")),
        }
    }

    async fn look(&self, p: &Payment) -> Step {
        match &p.intent_id {
            Some(id) => self.fetch(id).await,
            None => Step::Nothing,
        }
    }

    async fn secure(&self, p: &Payment) -> Step {
        match self.inner.settlement.secure(p.booking_id).await {
            Ok(Secured::Held(_)) => observed(Observation::Secured),
            Ok(Secured::SlotTaken(_)) => observed(Observation::SlotTaken),
            Ok(Secured::Ended(_)) => observed(Observation::BookingEnded),
            Err(SettlementError::NotFound(_) | SettlementError::Conflict(_)) => {
                observed(Observation::BookingEnded)
            }
            Err(error) => Step::Retry(format!("securing the booking: {error}")),
        }
    }

    async fn capture(&self, p: &Payment) -> Step {
        let Some(id) = &p.intent_id else {
            return observed(Observation::CaptureGaveUp);
        };
        let key = format!("{}-{}", p.capture_key(), p.attempts);
        match self.inner.stripe.capture(id, &key).await {
            Ok(intent) => seen(intent),
            Err(error) if error.is_transient() && !error.is_saved_server_error() => {
                if p.attempts.saturating_add(1) >= attempts(self.inner.config.capture_attempts) {
                    observed(Observation::CaptureGaveUp)
                } else {
                    Step::Retry(format!("capturing: {error}"))
                }
            }
            // Refused or indeterminate: what the intent shows decides.
            Err(error) => match self.inner.stripe.intent(id).await {
                Ok(intent) if intent.view.status == IntentStatus::RequiresCapture => {
                    if p.attempts.saturating_add(1) >= attempts(self.inner.config.capture_attempts)
                    {
                        observed(Observation::CaptureGaveUp)
                    } else {
                        Step::Retry(format!("capturing: {error}"))
                    }
                }
                Ok(intent) => seen(intent),
                Err(lookup) => Step::Retry(format!("capturing: {error}; fetching: {lookup}")),
            },
        }
    }

    async fn confirm(&self, p: &Payment) -> Step {
        match self.inner.settlement.mark_paid(p.booking_id).await {
            Ok(Paid::Confirmed(_)) => observed(Observation::BookingConfirmed),
            Ok(Paid::Ended(_)) | Err(SettlementError::NotFound(_)) => {
                observed(Observation::BookingEnded)
            }
            Err(error) => Step::Retry(format!("confirming the booking: {error}")),
        }
    }

    async fn void(&self, p: &Payment) -> Step {
        let stripe = &self.inner.stripe;
        let intent_id = match &p.intent_id {
            Some(id) => id.clone(),
            // Never created, unless a create call's answer was lost.
            None => match self.find_intent(p).await {
                Ok(Some(intent)) => intent.id,
                Ok(None) => return observed(Observation::Intent(never_created(p))),
                Err(error) => return Step::Retry(format!("looking for the intent: {error}")),
            },
        };
        let key = format!("{}-{}", p.cancel_key(), p.attempts);
        match stripe.cancel(&intent_id, &key).await {
            Ok(intent) => seen(intent),
            Err(error) if error.is_transient() && !error.is_saved_server_error() => {
                Step::Retry(format!("cancelling: {error}"))
            }
            Err(error) => match stripe.intent(&intent_id).await {
                Ok(intent)
                    if !matches!(
                        intent.view.status,
                        IntentStatus::Canceled | IntentStatus::Succeeded
                    ) =>
                {
                    Step::Retry(format!("cancelling: {error}"))
                }
                Ok(intent) => seen(intent),
                Err(lookup) => Step::Retry(format!("cancelling: {error}; fetching: {lookup}")),
            },
        }
    }

    async fn refund(&self, p: &Payment) -> Step {
        let stripe = &self.inner.stripe;
        let (Some(intent_id), due) = (&p.intent_id, p.refund_due_minor) else {
            return observed(Observation::Refunded { amount_minor: 0 });
        };
        if due <= 0 {
            return observed(Observation::Refunded { amount_minor: 0 });
        }
        let key = p.refund_key();
        match stripe.refund(intent_id, due, &key).await {
            Ok(amount) => observed(Observation::Refunded {
                amount_minor: amount,
            }),
            Err(error) if error.is_transient() && !error.is_saved_server_error() => {
                Step::Retry(format!("refunding: {error}"))
            }
            // Refused or indeterminate: did a refund with this key happen?
            Err(error) => match stripe.find_refund(intent_id, &key).await {
                Ok(Some(amount)) => observed(Observation::Refunded {
                    amount_minor: amount,
                }),
                Ok(None) if error.is_saved_server_error() => Step::NextRefundKey(error.to_string()),
                Ok(None) => Step::Retry(format!("refunding: {error}")),
                Err(lookup) => Step::Retry(format!("refunding: {error}; looking it up: {lookup}")),
            },
        }
    }

    async fn fail_booking(&self, p: &Payment) -> Step {
        let reason = p.failure.unwrap_or(FailureReason::Rejected);
        match self
            .inner
            .settlement
            .fail_payment(p.booking_id, reason)
            .await
        {
            Ok(_) | Err(SettlementError::NotFound(_)) => observed(Observation::BookingFailed),
            Err(error) => Step::Retry(format!("ending the booking: {error}")),
        }
    }
}

/// What an intent that was never created looks like to the rules: nothing
/// authorised, nothing captured.
fn never_created(p: &Payment) -> IntentView {
    IntentView {
        status: IntentStatus::Canceled,
        amount: p.amount_minor,
        amount_received: 0,
        currency: p.currency.to_ascii_lowercase(),
        booking_id: Some(p.booking_id.to_string()),
        payment_error: false,
        cancellation_reason: Some("never_created".into()),
    }
}

/// A copy of `p` with `next`'s bookkeeping (version, time), to tell whether
/// an observation changed anything else.
fn bumped(p: &Payment, next: &Payment) -> Payment {
    Payment {
        version: next.version,
        updated_at: next.updated_at,
        step_due: next.step_due,
        ..p.clone()
    }
}

/// When a payment in `state` runs its step next.
fn due(state: State, now: DateTime<Utc>, recheck: Duration) -> Option<DateTime<Utc>> {
    match state {
        State::AwaitingPayment => Some(after(now, recheck)),
        s if s.is_terminal() => None,
        _ => Some(now),
    }
}

fn attempts(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn backoff(base: Duration, max: Duration, attempts: i32) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(20);
    base.saturating_mul(1 << exponent).min(max)
}

fn describe(observation: &Observation) -> String {
    match observation {
        Observation::Intent(view) => format!(
            "intent {:?}, {} of {} {} received",
            view.status, view.amount_received, view.amount, view.currency
        ),
        other => format!("{other:?}"),
    }
}

/// Runs due steps until `stop`: first a pass at start, so a restart resumes
/// what a previous process left unfinished, then every `worker_interval`.
pub(crate) fn spawn_worker(payments: Payments, stop: CancellationToken) {
    let every = payments.inner.config.worker_interval;
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            match payments.inner.store.due(now(), WORKER_BATCH).await {
                Ok(due) => {
                    let full = due.len() >= usize::try_from(WORKER_BATCH).unwrap_or(usize::MAX);
                    for id in due {
                        if let Err(error) = payments.drive(id, None).await {
                            tracing::warn!(payment_id = %id, %error, "payment saga step failed");
                        }
                    }
                    if full {
                        continue;
                    }
                }
                Err(error) => tracing::warn!(%error, "payment worker pass failed"),
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
    });
}
