//! The rules against a simulated Stripe and booking service: random
//! interleavings of customer actions, duplicated and stale triggers,
//! lapsing holds, competing bookings, expiring authorisations, failing
//! steps and cancellations, each followed by a quiet period in which the
//! saga finishes. Whatever happened, money and booking must agree at the end.

use proptest::prelude::*;

use super::*;

const PRICE: i64 = 4500;
/// The simulated policy refunds half after the deadline.
const LATE_REFUND: i64 = PRICE / 2;
/// The driver's capture retries before it gives up.
const CAPTURE_TRIES: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Booking {
    Pending,
    Secured,
    Confirmed,
    Cancelled,
    Expired,
    Failed,
}

#[derive(Debug, Clone)]
struct Intent {
    status: IntentStatus,
    received: i64,
    refunded: i64,
    payment_error: bool,
    cancellation_reason: Option<String>,
}

#[derive(Debug, Clone, Copy)]
enum Action {
    /// The customer pays with a card that works, or one that is declined.
    Authorise {
        declined: bool,
    },
    /// A webhook (or the client's sync, or a late duplicate) asks to look.
    Trigger,
    CustomerCancels,
    HoldLapses,
    SomeoneTakesTheSlot,
    AuthorisationExpires,
    /// The next step fails transiently (Stripe 500, booking unreachable).
    NextStepFails,
    /// The next step takes effect but its answer is lost (a timeout).
    NextAnswerLost,
    /// Runs the current step's effect (Stripe, booking); what it found is
    /// recorded by the next `RunStep`, unless something else happens first.
    RunStep,
    /// The process dies after a step's effect, before recording it.
    Crash,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        any::<bool>().prop_map(|declined| Action::Authorise { declined }),
        Just(Action::Trigger),
        Just(Action::CustomerCancels),
        Just(Action::HoldLapses),
        Just(Action::SomeoneTakesTheSlot),
        Just(Action::AuthorisationExpires),
        Just(Action::NextStepFails),
        Just(Action::NextAnswerLost),
        Just(Action::RunStep),
        Just(Action::RunStep),
        Just(Action::RunStep),
        Just(Action::Crash),
    ]
}

struct World {
    facts: Facts,
    refund_due: i64,
    /// One idempotency key per refund decided; Stripe replays a used key.
    refund_seq: u32,
    refunds_by_key: std::collections::HashMap<u32, i64>,
    booking: Booking,
    slot_free: bool,
    intent: Option<Intent>,
    fail_next_step: bool,
    lose_next_answer: bool,
    /// A step's outcome not yet recorded (its runner holds the lease).
    pending: Option<Observation>,
    capture_failures: u32,
    /// The booking's time was secured before any money was captured.
    secured_before_capture: bool,
    cancelled_late: bool,
    log: Vec<String>,
}

impl World {
    fn new() -> Self {
        Self {
            facts: Facts {
                state: State::Creating,
                failure: None,
                booking_id: "b1".into(),
                amount_minor: PRICE,
                currency: "EUR".into(),
                captured_minor: 0,
                refunded_minor: 0,
                cancellation_refund_minor: None,
            },
            refund_due: 0,
            refund_seq: 0,
            refunds_by_key: std::collections::HashMap::new(),
            booking: Booking::Pending,
            slot_free: true,
            intent: None,
            fail_next_step: false,
            lose_next_answer: false,
            pending: None,
            capture_failures: 0,
            secured_before_capture: true,
            cancelled_late: false,
            log: Vec::new(),
        }
    }

    fn view(&self) -> Option<IntentView> {
        self.intent.as_ref().map(|i| IntentView {
            status: i.status,
            amount: PRICE,
            amount_received: i.received,
            currency: "eur".into(),
            booking_id: Some("b1".into()),
            payment_error: i.payment_error,
            cancellation_reason: i.cancellation_reason.clone(),
        })
    }

    /// An observation from outside a step: written over the row, so a step
    /// running meanwhile loses its compare-and-set and runs again.
    fn observe_outside(&mut self, observation: Observation) {
        self.pending = None;
        self.observe(observation);
    }

    /// A step's outcome, to be recorded by the next `RunStep`.
    fn found(&mut self, observation: Observation) {
        self.pending = Some(observation);
    }

    /// What the driver does with a transition: record it.
    fn observe(&mut self, observation: Observation) {
        if let Observation::BookingCancelled { refund_minor } = observation {
            self.facts.cancellation_refund_minor = Some(refund_minor);
        }
        if let Observation::Refunded { amount_minor } = observation {
            self.facts.refunded_minor += amount_minor;
        }
        if let Observation::Intent(view) = &observation {
            self.facts.captured_minor = view.amount_received;
        }
        if let Some(t) = next(&self.facts, &observation) {
            self.log.push(format!(
                "{:?} --{observation:?}--> {:?}",
                self.facts.state, t.state
            ));
            assert!(
                t.drift.is_none(),
                "unexpected drift: {:?}\n{:#?}",
                t.drift,
                self.log
            );
            if t.state == State::Refunding && self.facts.state != State::Refunding {
                self.refund_due = t.refund_due_minor;
                self.refund_seq += 1;
            }
            self.facts.state = t.state;
            self.facts.failure = t.failure;
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Authorise { declined } => {
                if let Some(i) = &mut self.intent
                    && i.status == IntentStatus::RequiresPaymentMethod
                {
                    if declined {
                        i.payment_error = true;
                    } else {
                        i.status = IntentStatus::RequiresCapture;
                        i.payment_error = false;
                    }
                }
            }
            // A webhook wakes only a payment that is waiting or ended.
            Action::Trigger => {
                let wakeable = matches!(
                    self.facts.state,
                    State::AwaitingPayment | State::Paid | State::Failed | State::Refunded
                );
                if wakeable && let Some(view) = self.view() {
                    self.observe_outside(Observation::Intent(view));
                }
            }
            Action::CustomerCancels => {
                if matches!(
                    self.booking,
                    Booking::Pending | Booking::Secured | Booking::Confirmed
                ) {
                    let late = self.booking == Booking::Confirmed;
                    self.booking = Booking::Cancelled;
                    self.cancelled_late = late;
                    let refund_minor = if late { LATE_REFUND } else { PRICE };
                    self.observe_outside(Observation::BookingCancelled { refund_minor });
                }
            }
            Action::HoldLapses => {
                if self.booking == Booking::Pending {
                    self.booking = Booking::Expired;
                }
            }
            Action::SomeoneTakesTheSlot => {
                if self.booking == Booking::Expired {
                    self.slot_free = false;
                }
            }
            Action::AuthorisationExpires => {
                if let Some(i) = &mut self.intent
                    && i.status == IntentStatus::RequiresCapture
                {
                    i.status = IntentStatus::Canceled;
                    i.cancellation_reason = Some("automatic".into());
                }
            }
            Action::NextStepFails => self.fail_next_step = true,
            Action::NextAnswerLost => self.lose_next_answer = true,
            Action::RunStep => self.run_step(),
            Action::Crash => self.pending = None,
        }
    }

    /// One run of the current state's step, as the driver runs it.
    fn run_step(&mut self) {
        if let Some(observation) = self.pending.take() {
            self.observe(observation);
            return;
        }
        if !self.facts.state.has_step() {
            return;
        }
        if std::mem::take(&mut self.fail_next_step) {
            self.step_failed();
            return;
        }
        self.effect();
        if std::mem::take(&mut self.lose_next_answer) {
            self.pending = None;
            self.step_failed();
        }
    }

    /// The driver's view of a failed step: retry, or give up a capture.
    fn step_failed(&mut self) {
        if self.facts.state == State::Capturing {
            self.capture_failures += 1;
            if self.capture_failures >= CAPTURE_TRIES {
                self.found(Observation::CaptureGaveUp);
            }
        }
    }

    /// What the current step does to Stripe and the booking.
    fn effect(&mut self) {
        match self.facts.state {
            // The same idempotency key: a second run gets the same intent.
            State::Creating if self.intent.is_some() => {
                let view = self.view().unwrap();
                self.found(Observation::Intent(view));
            }
            State::Creating => {
                self.intent = Some(Intent {
                    status: IntentStatus::RequiresPaymentMethod,
                    received: 0,
                    refunded: 0,
                    payment_error: false,
                    cancellation_reason: None,
                });
                let view = self.view().unwrap();
                self.found(Observation::Intent(view));
            }
            State::Securing => {
                let observation = match self.booking {
                    Booking::Pending | Booking::Secured => {
                        self.booking = Booking::Secured;
                        Observation::Secured
                    }
                    Booking::Expired if self.slot_free => {
                        self.booking = Booking::Secured;
                        Observation::Secured
                    }
                    Booking::Expired => Observation::SlotTaken,
                    Booking::Confirmed => Observation::Secured,
                    Booking::Cancelled | Booking::Failed => Observation::BookingEnded,
                };
                self.found(observation);
            }
            State::Capturing => {
                let i = self.intent.as_mut().unwrap();
                if i.status == IntentStatus::RequiresCapture {
                    if self.booking != Booking::Secured && self.booking != Booking::Cancelled {
                        self.secured_before_capture = false;
                    }
                    i.status = IntentStatus::Succeeded;
                    i.received = PRICE;
                }
                let view = self.view().unwrap();
                self.found(Observation::Intent(view));
            }
            State::Confirming => {
                let observation = match self.booking {
                    Booking::Secured | Booking::Confirmed => {
                        self.booking = Booking::Confirmed;
                        Observation::BookingConfirmed
                    }
                    Booking::Pending => panic!("confirming an unsecured booking\n{:#?}", self.log),
                    _ => Observation::BookingEnded,
                };
                self.found(observation);
            }
            State::Voiding => {
                let Some(i) = self.intent.as_mut() else {
                    // Never created: the driver reports it as cancelled.
                    self.found(Observation::Intent(IntentView {
                        status: IntentStatus::Canceled,
                        amount: PRICE,
                        amount_received: 0,
                        currency: "eur".into(),
                        booking_id: Some("b1".into()),
                        payment_error: false,
                        cancellation_reason: Some("never_created".into()),
                    }));
                    return;
                };
                if !matches!(i.status, IntentStatus::Succeeded | IntentStatus::Canceled) {
                    i.status = IntentStatus::Canceled;
                    i.cancellation_reason = Some("requested_by_customer".into());
                }
                let view = self.view().unwrap();
                self.found(Observation::Intent(view));
            }
            State::Refunding => {
                let i = self.intent.as_mut().unwrap();
                let amount = match self.refunds_by_key.get(&self.refund_seq) {
                    Some(replayed) => *replayed,
                    None => {
                        let amount = self.refund_due.min(i.received - i.refunded);
                        assert!(amount > 0, "a refund of nothing\n{:#?}", self.log);
                        i.refunded += amount;
                        self.refunds_by_key.insert(self.refund_seq, amount);
                        amount
                    }
                };
                self.found(Observation::Refunded {
                    amount_minor: amount,
                });
            }
            State::FailingBooking => {
                match self.booking {
                    Booking::Pending | Booking::Secured | Booking::Expired => {
                        self.booking = Booking::Failed;
                    }
                    Booking::Confirmed => panic!("failing a confirmed booking\n{:#?}", self.log),
                    Booking::Cancelled | Booking::Failed => {}
                }
                self.found(Observation::BookingFailed);
            }
            State::AwaitingPayment | State::Paid | State::Failed | State::Refunded => {}
        }
    }

    /// Nothing external happens any more; the saga finishes (the reconciler
    /// looks at a waiting payment and, once its booking lapsed, gives up).
    fn settle(&mut self) {
        for _ in 0..100 {
            match self.facts.state {
                _ if self.pending.is_some() => self.run_step(),
                s if s.has_step() => self.run_step(),
                State::AwaitingPayment => {
                    if let Some(view) = self.view() {
                        self.observe(Observation::Intent(view));
                    }
                    if self.facts.state == State::AwaitingPayment {
                        if self.booking == Booking::Pending {
                            self.booking = Booking::Expired;
                        }
                        self.observe(Observation::Abandoned);
                    }
                }
                _ => {
                    // A late trigger about an ended saga changes nothing
                    // that is right.
                    if let Some(view) = self.view() {
                        self.observe(Observation::Intent(view));
                    }
                    if self.facts.state.is_terminal() {
                        return;
                    }
                }
            }
        }
        panic!("the saga did not finish\n{:#?}", self.log);
    }

    fn check(&self) {
        let log = || format!("{:#?}", self.log);
        let i = self.intent.clone().unwrap_or(Intent {
            status: IntentStatus::Canceled,
            received: 0,
            refunded: 0,
            payment_error: false,
            cancellation_reason: None,
        });
        let kept = i.received - i.refunded;
        assert!(
            self.secured_before_capture,
            "captured before securing\n{}",
            log()
        );
        assert_ne!(
            i.status,
            IntentStatus::RequiresCapture,
            "an authorisation is left open\n{}",
            log()
        );
        assert_eq!(
            self.facts.kept_minor(),
            kept,
            "the saga's books differ from Stripe's"
        );
        match self.facts.state {
            State::Paid => {
                assert_eq!(self.booking, Booking::Confirmed, "{}", log());
                assert_eq!(kept, PRICE, "{}", log());
            }
            State::Refunded => {
                assert_eq!(self.booking, Booking::Cancelled, "{}", log());
                let expected = if self.cancelled_late {
                    PRICE - LATE_REFUND
                } else {
                    0
                };
                assert_eq!(kept, expected, "{}", log());
            }
            State::Failed => {
                assert_eq!(kept, 0, "a failed payment kept money\n{}", log());
                assert!(
                    matches!(
                        self.booking,
                        Booking::Failed | Booking::Cancelled | Booking::Expired
                    ),
                    "the booking of a failed payment is {:?}\n{}",
                    self.booking,
                    log()
                );
            }
            state => panic!("ended in {state:?}\n{}", log()),
        }
        if self.booking == Booking::Confirmed {
            assert_eq!(self.facts.state, State::Paid, "{}", log());
        }
        assert!(i.refunded <= i.received, "refunded more than captured");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]
    #[test]
    fn money_and_booking_agree_whatever_happens(actions in prop::collection::vec(action(), 0..40)) {
        let mut world = World::new();
        for action in actions {
            world.act(action);
        }
        world.settle();
        world.check();
    }
}

/// Runs a step and records what it found.
const STEP: [Action; 2] = [Action::RunStep, Action::RunStep];

#[test]
fn the_happy_path_reaches_paid() {
    let mut world = World::new();
    let actions = [
        &STEP[..],
        &[Action::Authorise { declined: false }, Action::Trigger],
        &STEP,
        &STEP,
        &STEP,
    ];
    for action in actions.concat() {
        world.act(action);
    }
    assert_eq!(world.facts.state, State::Paid, "{:#?}", world.log);
    world.check();
}

#[test]
fn a_paid_booking_cancelled_late_keeps_what_the_policy_keeps() {
    let mut world = World::new();
    let actions = [
        &STEP[..],
        &[Action::Authorise { declined: false }, Action::Trigger],
        &STEP,
        &STEP,
        &STEP,
        &[Action::CustomerCancels],
        &STEP,
    ];
    for action in actions.concat() {
        world.act(action);
    }
    assert_eq!(world.facts.state, State::Refunded, "{:#?}", world.log);
    assert_eq!(world.facts.kept_minor(), PRICE - LATE_REFUND);
    world.check();
}

#[test]
fn a_cancellation_while_confirming_is_not_lost() {
    let mut world = World::new();
    let actions = [
        &STEP[..],
        &[Action::Authorise { declined: false }, Action::Trigger],
        &STEP,
        &STEP,
        // The booking is confirmed; before the saga records it, the
        // customer cancels (late: the policy keeps half).
        &[Action::RunStep],
    ];
    for action in actions.concat() {
        world.act(action);
    }
    assert_eq!(world.booking, Booking::Confirmed);
    world.act(Action::CustomerCancels);
    world.settle();
    // The saga never recorded the confirmation: to it the booking was
    // cancelled while being paid, so everything goes back.
    assert_eq!(world.facts.state, State::Failed, "{:#?}", world.log);
    assert_eq!(world.facts.failure, Some(FailureReason::BookingCancelled));
    assert_eq!(world.facts.kept_minor(), 0);
    world.check();
}

#[test]
fn a_capture_whose_answer_was_lost_is_refunded_when_the_saga_gives_up() {
    let mut world = World::new();
    let mut actions = vec![Action::RunStep, Action::RunStep];
    actions.extend([Action::Authorise { declined: false }, Action::Trigger]);
    actions.extend(STEP);
    actions.extend([Action::NextAnswerLost, Action::RunStep]);
    for _ in 1..CAPTURE_TRIES {
        actions.extend([Action::NextStepFails, Action::RunStep]);
    }
    for action in actions {
        world.act(action);
    }
    world.settle();
    assert_eq!(world.facts.state, State::Failed, "{:#?}", world.log);
    assert!(
        world
            .log
            .iter()
            .any(|l| l.contains("Voiding") && l.contains("Refunding")),
        "{:#?}",
        world.log
    );
    world.check();
}

#[test]
fn a_tampered_intent_is_refused() {
    let facts = World::new().facts;
    let waiting = Facts {
        state: State::AwaitingPayment,
        ..facts
    };
    let tampered = IntentView {
        status: IntentStatus::RequiresCapture,
        amount: 1,
        amount_received: 0,
        currency: "eur".into(),
        booking_id: Some("b1".into()),
        payment_error: false,
        cancellation_reason: None,
    };
    let t = next(&waiting, &Observation::Intent(tampered.clone())).unwrap();
    assert_eq!(t.state, State::Voiding);
    assert_eq!(t.failure, Some(FailureReason::VerificationFailed));
    let other_booking = IntentView {
        amount: PRICE,
        booking_id: Some("b2".into()),
        ..tampered
    };
    let t = next(&waiting, &Observation::Intent(other_booking)).unwrap();
    assert_eq!(t.failure, Some(FailureReason::VerificationFailed));
}

#[test]
fn state_names_round_trip() {
    for state in State::ALL {
        assert_eq!(State::parse(state.as_str()), Some(state));
    }
}

#[test]
fn events_wake_only_waiting_states() {
    for event in [
        "payment_intent.created",
        "payment_intent.amount_capturable_updated",
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "payment_intent.canceled",
        "charge.refunded",
    ] {
        assert!(
            woken_by(event).iter().all(|s| !s.has_step()),
            "{event} must not wake a state whose step may be running"
        );
    }
    assert!(woken_by("payment_intent.created").is_empty());
    // An authorisation or a refund made outside Berth must reach every
    // waiting state, or drift would go unseen.
    for event in [
        "payment_intent.amount_capturable_updated",
        "charge.refunded",
    ] {
        let woken = woken_by(event);
        for state in State::ALL.into_iter().filter(|s| !s.has_step()) {
            assert!(woken.contains(&state), "{event} must wake {state}");
        }
    }
    assert!(!woken_by("payment_intent.succeeded").contains(&State::Paid));
    assert!(woken_by("payment_intent.succeeded").contains(&State::AwaitingPayment));
}
