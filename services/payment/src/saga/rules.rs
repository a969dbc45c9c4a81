//! The payment saga's rules, without I/O: given what the saga knows and
//! what it just observed (an intent as Stripe shows it, the booking
//! service's answer, a cancellation), where it goes next. The driver
//! (`saga::driver`) runs each state's step and feeds its outcome back here.
//!
//! ```text
//! creating ─→ awaiting_payment ─ authorised ─→ securing ─→ capturing ─→ confirming ─→ paid
//!                 │  declined / abandoned         │ slot taken    │ cannot     │ booking    │ cancelled
//!                 │  booking cancelled            │ booking ended │ capture    │ ended      ▼
//!                 ▼                               ▼               ▼            ▼         refunding ─→ refunded
//!               voiding ──────────────────────────┴───────────────┘         refunding
//!                 │ (captured after all: refunding)                            │
//!                 ▼                                                            ▼
//!           failing_booking ─→ failed  ◀───────────────────────────────────────┘
//! ```
//!
//! The money invariants these rules keep (checked by the property test
//! below against a simulated Stripe and booking service):
//! - money is captured only after the booking's time is secured;
//! - a booking is confirmed only after its money is captured;
//! - every saga that does not end `paid` or `refunded` gives every cent back
//!   (cancels the authorisation or refunds the capture) and ends its booking;
//! - refunds happen only after a cancellation or as a failure's
//!   compensation, and never exceed what was captured.

use berth_settlement::FailureReason;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Creating the PaymentIntent (retried with the same idempotency key).
    Creating,
    /// The intent exists; waiting for the customer to authorise it.
    AwaitingPayment,
    /// Authorised and verified: making the booking's time permanent.
    Securing,
    /// The time is secured: capturing the authorisation.
    Capturing,
    /// Captured: confirming the booking.
    Confirming,
    /// Ended: captured and the booking confirmed.
    Paid,
    /// Compensation: cancelling the authorisation.
    Voiding,
    /// Compensation or cancellation: refunding `refund_due`.
    Refunding,
    /// Compensation: ending the booking `payment_failed`.
    FailingBooking,
    /// Ended: nothing kept, the booking not confirmed.
    Failed,
    /// Ended: the booking was cancelled after it was paid and refunded per
    /// its policy (possibly nothing, possibly a part).
    Refunded,
}

impl State {
    pub const ALL: [Self; 11] = [
        Self::Creating,
        Self::AwaitingPayment,
        Self::Securing,
        Self::Capturing,
        Self::Confirming,
        Self::Paid,
        Self::Voiding,
        Self::Refunding,
        Self::FailingBooking,
        Self::Failed,
        Self::Refunded,
    ];

    /// States without a step of their own: they wait for Stripe, the
    /// customer or a late event.
    pub const WAITING: [Self; 4] = [
        Self::AwaitingPayment,
        Self::Paid,
        Self::Failed,
        Self::Refunded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::AwaitingPayment => "awaiting_payment",
            Self::Securing => "securing",
            Self::Capturing => "capturing",
            Self::Confirming => "confirming",
            Self::Paid => "paid",
            Self::Voiding => "voiding",
            Self::Refunding => "refunding",
            Self::FailingBooking => "failing_booking",
            Self::Failed => "failed",
            Self::Refunded => "refunded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// The saga has nothing left to do (a late event may still reopen it).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Paid | Self::Failed | Self::Refunded)
    }

    /// States whose step runs on its own (as opposed to waiting for Stripe
    /// or the customer).
    pub fn has_step(self) -> bool {
        !Self::WAITING.contains(&self)
    }
}

/// The waiting states a Stripe event about a payment's intent wakes (to
/// fetch the intent again). Only states that wait for Stripe are woken:
/// one mid-step fetches the intent itself when its step needs it.
pub fn woken_by(event_type: &str) -> &'static [State] {
    use State::{AwaitingPayment, Failed, Refunded};
    match event_type {
        // Creation tells nothing the create step's own answer did not.
        "payment_intent.created" => &[],
        // A paid saga captured the intent itself: this is the echo.
        "payment_intent.succeeded" => &[AwaitingPayment, Failed, Refunded],
        _ => &State::WAITING,
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A PaymentIntent's status, as Stripe names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntentStatus {
    RequiresPaymentMethod,
    RequiresConfirmation,
    RequiresAction,
    Processing,
    RequiresCapture,
    Succeeded,
    Canceled,
}

/// What the saga reads of an intent (fetched from Stripe; a webhook's copy
/// is never trusted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentView {
    pub status: IntentStatus,
    pub amount: i64,
    pub amount_received: i64,
    /// Lower-case ISO code, as Stripe writes it.
    pub currency: String,
    /// `metadata[booking_id]`.
    pub booking_id: Option<String>,
    /// The last confirmation attempt failed (a decline).
    pub payment_error: bool,
    /// Stripe's `cancellation_reason` (`automatic`: the authorisation expired).
    pub cancellation_reason: Option<String>,
}

/// What the saga knows about its own payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub state: State,
    pub failure: Option<FailureReason>,
    pub booking_id: String,
    pub amount_minor: i64,
    /// Upper-case ISO code, as the booking carries it.
    pub currency: String,
    pub captured_minor: i64,
    pub refunded_minor: i64,
    /// The booking was cancelled; what its policy refunds. Kept on the
    /// payment, so a cancellation that arrives while a step runs is not
    /// lost: the saga honours it when it reaches `paid`.
    pub cancellation_refund_minor: Option<i64>,
}

impl Facts {
    /// Captured and not given back.
    pub fn kept_minor(&self) -> i64 {
        self.captured_minor - self.refunded_minor
    }

    /// The intent is the one this payment asked for.
    pub fn matches(&self, intent: &IntentView) -> bool {
        intent.amount == self.amount_minor
            && intent.currency.eq_ignore_ascii_case(&self.currency)
            && intent.booking_id.as_deref() == Some(self.booking_id.as_str())
    }
}

/// An observation the rules react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The intent as Stripe shows it now (after a create, fetch, capture or
    /// cancel).
    Intent(IntentView),
    /// Stripe refused to create the intent (a 4xx that retrying cannot fix).
    CreateRejected,
    /// The booking's time is held for good.
    Secured,
    /// The hold lapsed and the time is gone.
    SlotTaken,
    /// The booking ended (cancelled, failed) before it was confirmed.
    BookingEnded,
    /// The capture kept failing past its retries.
    CaptureGaveUp,
    /// The booking is confirmed.
    BookingConfirmed,
    /// `refund_due` was refunded.
    Refunded { amount_minor: i64 },
    /// The booking now shows `payment_failed` (or had ended anyway).
    BookingFailed,
    /// The customer cancelled the booking; `refund_minor` is what its
    /// cancellation policy gives back of what was paid.
    BookingCancelled { refund_minor: i64 },
    /// Staff refund `amount_minor` of a cancelled booking's payment.
    StaffRefund { amount_minor: i64 },
    /// Never authorised, and its booking lapsed long ago.
    Abandoned,
}

/// What a payment event tells the world (outbox → stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Announce {
    /// `payment.authorised`
    Authorised,
    /// `payment.failed`
    Failed,
    /// `payment.refunded`
    Refunded,
}

impl Announce {
    pub fn event_type(self) -> &'static str {
        match self {
            Self::Authorised => "payment.authorised",
            Self::Failed => "payment.failed",
            Self::Refunded => "payment.refunded",
        }
    }
}

/// Where the saga goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub state: State,
    pub failure: Option<FailureReason>,
    /// What the next `refunding` step refunds.
    pub refund_due_minor: i64,
    pub announce: Option<Announce>,
    /// Something is wrong that no rule repairs (Stripe and Berth disagree):
    /// recorded and reported, the state kept.
    pub drift: Option<String>,
}

impl Transition {
    fn to(state: State, facts: &Facts) -> Self {
        Self {
            state,
            failure: facts.failure,
            refund_due_minor: 0,
            announce: None,
            drift: None,
        }
    }

    fn failing(facts: &Facts, state: State, reason: FailureReason) -> Self {
        Self {
            failure: Some(facts.failure.unwrap_or(reason)),
            ..Self::to(state, facts)
        }
    }

    fn refunding(facts: &Facts, amount: i64, failure: Option<FailureReason>) -> Self {
        Self {
            refund_due_minor: amount,
            failure: failure.or(facts.failure),
            ..Self::to(State::Refunding, facts)
        }
    }

    fn announcing(mut self, announce: Announce) -> Self {
        self.announce = Some(announce);
        self
    }

    fn drift(facts: &Facts, what: String) -> Self {
        Self {
            drift: Some(what),
            ..Self::to(facts.state, facts)
        }
    }
}

/// Where the saga goes on `observation`; `None`: nowhere (wait, or the
/// observation changes nothing, e.g. a duplicate or a stale event).
pub fn next(facts: &Facts, observation: &Observation) -> Option<Transition> {
    use Observation as O;
    use State as S;
    match (facts.state, observation) {
        (_, O::Intent(intent)) => on_intent(facts, intent),

        (S::Creating, O::CreateRejected) => Some(Transition::failing(
            facts,
            S::FailingBooking,
            FailureReason::Rejected,
        )),

        (S::Securing, O::Secured) => Some(Transition::to(S::Capturing, facts)),
        (S::Securing, O::SlotTaken) => Some(Transition::failing(
            facts,
            S::Voiding,
            FailureReason::SlotTaken,
        )),
        (S::Securing, O::BookingEnded) => Some(Transition::failing(
            facts,
            S::Voiding,
            FailureReason::BookingCancelled,
        )),

        (S::Capturing, O::CaptureGaveUp) => Some(Transition::failing(
            facts,
            S::Voiding,
            FailureReason::CaptureFailed,
        )),

        (S::Confirming, O::BookingConfirmed) => Some(match facts.cancellation_refund_minor {
            None => Transition::to(S::Paid, facts),
            Some(refund) => cancelled_after_payment(facts, refund),
        }),
        // Cancelled while its money was being captured: all of it goes back.
        (S::Confirming, O::BookingEnded) => Some(Transition::refunding(
            facts,
            facts.kept_minor(),
            Some(FailureReason::BookingCancelled),
        )),

        (S::Refunding, O::Refunded { .. }) => {
            Some(Transition::to(after_compensation(facts), facts).announcing(Announce::Refunded))
        }

        (S::FailingBooking, O::BookingFailed) => {
            Some(Transition::to(S::Failed, facts).announcing(Announce::Failed))
        }

        (S::Creating | S::AwaitingPayment, O::BookingCancelled { .. }) => Some(
            Transition::failing(facts, S::Voiding, FailureReason::BookingCancelled),
        ),
        (S::Paid, O::BookingCancelled { refund_minor }) => {
            Some(cancelled_after_payment(facts, *refund_minor))
        }
        (S::Refunded | S::Failed, O::StaffRefund { amount_minor })
            if *amount_minor > 0 && *amount_minor <= facts.kept_minor() =>
        {
            Some(Transition::refunding(facts, *amount_minor, None))
        }

        (S::AwaitingPayment, O::Abandoned) => Some(Transition::failing(
            facts,
            S::Voiding,
            FailureReason::Abandoned,
        )),

        _ => None,
    }
}

/// A paid booking was cancelled: refund what its policy gives back.
fn cancelled_after_payment(facts: &Facts, refund_minor: i64) -> Transition {
    let amount = refund_minor.clamp(0, facts.kept_minor());
    if amount == 0 {
        Transition::to(State::Refunded, facts)
    } else {
        Transition::refunding(facts, amount, None)
    }
}

/// After money went back (or an authorisation was cancelled): tell the
/// booking, unless it ended by itself.
fn after_compensation(facts: &Facts) -> State {
    match facts.failure {
        None => State::Refunded,
        Some(FailureReason::BookingCancelled | FailureReason::Abandoned) => State::Failed,
        Some(_) => State::FailingBooking,
    }
}

fn on_intent(facts: &Facts, intent: &IntentView) -> Option<Transition> {
    use IntentStatus as I;
    use State as S;
    let kept_at_stripe = intent.amount_received;
    if !facts.matches(intent) {
        return match facts.state {
            S::Creating | S::AwaitingPayment | S::Securing => Some(Transition::failing(
                facts,
                S::Voiding,
                FailureReason::VerificationFailed,
            )),
            _ => Some(Transition::drift(
                facts,
                format!(
                    "the intent shows {} {} for booking {:?}; the payment is {} {} for {}",
                    intent.amount,
                    intent.currency,
                    intent.booking_id,
                    facts.amount_minor,
                    facts.currency,
                    facts.booking_id
                ),
            )),
        };
    }
    match (facts.state, intent.status) {
        // Created: from here on as if it had been waiting.
        (S::Creating, _) => {
            let waiting = Facts {
                state: S::AwaitingPayment,
                ..facts.clone()
            };
            on_intent(&waiting, intent).or_else(|| Some(Transition::to(S::AwaitingPayment, facts)))
        }
        (S::AwaitingPayment, I::RequiresCapture | I::Succeeded) => {
            Some(Transition::to(S::Securing, facts).announcing(Announce::Authorised))
        }
        (S::AwaitingPayment, I::Canceled) => Some(Transition::failing(
            facts,
            S::FailingBooking,
            canceled_reason(intent),
        )),
        (S::AwaitingPayment, I::RequiresPaymentMethod) if intent.payment_error => Some(
            Transition::failing(facts, S::Voiding, FailureReason::Declined),
        ),
        (S::AwaitingPayment, _) => None,

        // An authorisation cancelled (or expired) under a running step.
        (S::Securing | S::Capturing, I::Canceled) => Some(Transition::failing(
            facts,
            S::FailingBooking,
            canceled_reason(intent),
        )),
        (S::Capturing, I::Succeeded) => Some(Transition::to(S::Confirming, facts)),

        (S::Voiding, I::Canceled) => Some(Transition::to(
            match facts.failure {
                Some(FailureReason::BookingCancelled | FailureReason::Abandoned) => S::Failed,
                _ => S::FailingBooking,
            },
            facts,
        )),
        // Captured after all (a capture raced the void): give it back.
        (S::Voiding, I::Succeeded) => Some(Transition::refunding(
            facts,
            kept_at_stripe - facts.refunded_minor,
            None,
        )),

        // A late event about an ended saga: repair what disagrees.
        (S::Failed, I::RequiresCapture) => Some(Transition::to(S::Voiding, facts)),
        (S::Failed, I::Succeeded) if kept_at_stripe > facts.refunded_minor => Some(
            Transition::refunding(facts, kept_at_stripe - facts.refunded_minor, None),
        ),
        (S::Paid | S::Refunded, I::Succeeded) => None,
        (S::Paid | S::Refunded, status) => Some(Transition::drift(
            facts,
            format!("the booking is paid but Stripe shows the intent {status:?}"),
        )),
        _ => None,
    }
}

fn canceled_reason(intent: &IntentView) -> FailureReason {
    if intent.cancellation_reason.as_deref() == Some("automatic") {
        FailureReason::AuthorisationExpired
    } else {
        FailureReason::Canceled
    }
}

#[cfg(test)]
mod tests;
