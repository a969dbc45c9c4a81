//! The payment process killed (SIGKILL) in each state of its saga, as a
//! pod dies when its node is lost: `berth serve availability`, `booking`
//! and `payment` and the Stripe-API emulator as separate processes on the
//! stack's PostgreSQL and Redis. For each target state a flow runs while
//! `payment.payments.state` is polled every 2 ms; the moment it shows the
//! target the payment process is killed, then started again with the same
//! settings and ports. Once every saga has ended, `berth check-money` must
//! find money sound, each booking must have ended right (confirmed,
//! payment_failed, cancelled) and Stripe must hold one intent per booking
//! with the right money received and refunded.
//!
//! A step whose process dies keeps its lease (`step_lease`, 30 s), so a
//! saga killed mid-step resumes only then. The flows therefore run one
//! after the other without waiting for the previous saga to end, and are
//! all checked at the end: the test takes about one lease, not six.
//! Windows are widened so the kill lands inside the step: every Stripe call
//! takes `STRIPE_LATENCY_MS` (the emulator's `api_latency_ms`), and the
//! booking steps (securing, confirming) find the booking's row locked by
//! the test until the kill, as a slow database would hold them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../examples/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use berth_stripe_emulator::Faults;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use support::db::TestDb;
use support::paid::{PRICE, PUBLISHABLE_KEY, PaidPlatform, Resource, slot};
use tokio::sync::oneshot;

const STRIPE_LATENCY_MS: u64 = 100;
const POLL: Duration = Duration::from_millis(2);
/// Tries per target whose window was missed (each a new booking).
const TRIES: usize = 3;
const CUSTOMER: &str = "customer-crash";

/// (id, state, step_due_us, attempts, last_error) of `payment.payments`.
type PaymentRow = (String, String, Option<i64>, i32, Option<String>);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    AwaitingPayment,
    Securing,
    Capturing,
    Confirming,
    Voiding,
    Refunding,
}

const TARGETS: [Target; 6] = [
    Target::AwaitingPayment,
    Target::Securing,
    Target::Capturing,
    Target::Confirming,
    Target::Voiding,
    Target::Refunding,
];

impl Target {
    fn state(self) -> &'static str {
        match self {
            Self::AwaitingPayment => "awaiting_payment",
            Self::Securing => "securing",
            Self::Capturing => "capturing",
            Self::Confirming => "confirming",
            Self::Voiding => "voiding",
            Self::Refunding => "refunding",
        }
    }

    /// The states the saga may show on its way to the target; any other
    /// means the target was passed unseen.
    fn before(self) -> &'static [&'static str] {
        match self {
            Self::AwaitingPayment => &["creating"],
            Self::Securing | Self::Voiding => &["creating", "awaiting_payment"],
            Self::Capturing => &["creating", "awaiting_payment", "securing"],
            Self::Confirming => &["creating", "awaiting_payment", "securing", "capturing"],
            Self::Refunding => &["paid"],
        }
    }

    /// Where the booking's row is locked (before the flow's action, or
    /// when the saga shows this state), so its booking call waits.
    fn lock(self) -> Option<Lock> {
        match self {
            Self::Securing => Some(Lock::First),
            Self::Confirming => Some(Lock::When("capturing")),
            _ => None,
        }
    }

    /// (booking status, payment state, Stripe intent status, received, refunded).
    fn end(self) -> (&'static str, &'static str, &'static str, i64, i64) {
        match self {
            Self::Voiding => ("payment_failed", "failed", "canceled", 0, 0),
            Self::Refunding => ("cancelled", "refunded", "succeeded", PRICE, PRICE),
            _ => ("confirmed", "paid", "succeeded", PRICE, 0),
        }
    }
}

#[derive(Clone, Copy)]
enum Lock {
    First,
    When(&'static str),
}

/// The booking's row held `FOR UPDATE` by a transaction of the test's.
struct RowLock {
    release: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

impl RowLock {
    async fn take(db_url: &str, booking: &str) -> Self {
        let mut conn = PgConnection::connect(db_url).await.unwrap();
        let booking = booking.to_owned();
        let (locked_tx, locked) = oneshot::channel();
        let (release, released) = oneshot::channel::<()>();
        let done = tokio::spawn(async move {
            let mut tx = conn.begin().await.unwrap();
            sqlx::query("SELECT 1 FROM booking.bookings WHERE id = $1::uuid FOR UPDATE")
                .bind(&booking)
                .execute(&mut *tx)
                .await
                .unwrap();
            locked_tx.send(()).unwrap();
            let _ = released.await;
            tx.rollback().await.unwrap();
        });
        locked.await.unwrap();
        Self { release, done }
    }

    async fn release(self) {
        let _ = self.release.send(());
        self.done.await.unwrap();
    }
}

/// One booking's run against one target.
struct Flow {
    target: Target,
    booking: String,
    /// The state the payment process was killed in, or the one that
    /// showed the target was passed.
    seen: String,
    /// When it was killed (Unix µs); `None`: the target was passed unseen.
    killed_us: Option<i64>,
}

impl Flow {
    fn caught(&self) -> bool {
        self.killed_us.is_some()
    }
}

struct Harness {
    platform: PaidPlatform,
    db_url: String,
    db: PgConnection,
    http: reqwest::Client,
    bearer: String,
    resource: Resource,
    next_slot: i64,
}

impl Harness {
    async fn state(&mut self, booking: &str) -> Option<String> {
        self.leased_state(booking).await.map(|(state, _)| state)
    }

    /// The saga's state, and whether a runner holds its lease (its step
    /// is running: `step_due` pushed ahead of now).
    async fn leased_state(&mut self, booking: &str) -> Option<(String, bool)> {
        sqlx::query_as(
            "SELECT state, coalesce(step_due_us > \
                 (extract(epoch FROM clock_timestamp()) * 1000000)::bigint, false) \
             FROM payment.payments WHERE booking_id = $1",
        )
        .bind(booking)
        .fetch_optional(&mut self.db)
        .await
        .unwrap()
    }

    async fn book(&mut self) -> String {
        self.next_slot += 1;
        let body = json!({"resource_id": self.resource.id,
            "appointment_type_id": self.resource.paid, "start": slot(3, self.next_slot)});
        let url = format!("{}/v1/bookings", self.platform.booking_url);
        let (status, booking) = post(&self.http, &url, &self.bearer, body).await.unwrap();
        assert_eq!(status, 201, "{booking}");
        assert_eq!(booking["status"], "pending_payment", "{booking}");
        booking["id"].as_str().unwrap().to_owned()
    }

    /// Runs `target`'s flow on a new booking; kills the payment process
    /// when the saga shows the target, and starts it again.
    async fn run(&mut self, target: Target) -> Flow {
        let booking = self.book().await;
        let mut payment = None;
        if target != Target::AwaitingPayment {
            payment = Some(start_paying(&self.http, &self.platform, &self.bearer, &booking).await);
        }
        if target == Target::Refunding {
            let payment = payment.as_ref().unwrap();
            pay(
                &self.http,
                &self.platform.emulator_url,
                payment,
                "pm_card_visa",
            )
            .await;
            self.wait_for(&booking, "paid").await;
        }
        let mut lock = match target.lock() {
            Some(Lock::First) => Some(RowLock::take(&self.db_url, &booking).await),
            _ => None,
        };
        let action = self.action(target, &booking, payment.clone());
        let deadline = Instant::now() + Duration::from_secs(20);
        let (seen, killed_us) = loop {
            let (state, leased) = self.leased_state(&booking).await.unwrap_or_default();
            // In a step's state, only once its step runs: killed between
            // two steps, a saga just goes on when the process is back.
            if state == target.state() && (leased || target == Target::AwaitingPayment) {
                self.platform.kill_payment();
                break (state, Some(chrono::Utc::now().timestamp_micros()));
            }
            if !state.is_empty()
                && state != target.state()
                && !target.before().contains(&state.as_str())
            {
                break (state, None);
            }
            if let (None, Some(Lock::When(at))) = (&lock, target.lock())
                && state == at
            {
                lock = Some(RowLock::take(&self.db_url, &booking).await);
            }
            assert!(
                Instant::now() < deadline,
                "{target:?}: the saga never got past {state:?}\n{}",
                self.history(&booking).await
            );
            tokio::time::sleep(POLL).await;
        };
        if let Some(lock) = lock {
            lock.release().await;
        }
        // Killed under it, the call may have failed: the saga does not care.
        action.await.unwrap();
        if killed_us.is_some() {
            self.platform.start_payment().await;
            if target == Target::AwaitingPayment {
                // The customer asks again for what the lost answer carried.
                let payment =
                    start_paying(&self.http, &self.platform, &self.bearer, &booking).await;
                pay(
                    &self.http,
                    &self.platform.emulator_url,
                    &payment,
                    "pm_card_visa",
                )
                .await;
            }
        }
        Flow {
            target,
            booking,
            seen,
            killed_us,
        }
    }

    /// What moves the saga to `target` (runs beside the polling).
    fn action(
        &self,
        target: Target,
        booking: &str,
        payment: Option<Value>,
    ) -> tokio::task::JoinHandle<Option<(u16, Value)>> {
        let http = self.http.clone();
        let bearer = self.bearer.clone();
        let (booking_url, payment_url, emulator_url) = (
            self.platform.booking_url.clone(),
            self.platform.payment_url.clone(),
            self.platform.emulator_url.clone(),
        );
        let booking = booking.to_owned();
        tokio::spawn(async move {
            match (target, payment) {
                (Target::AwaitingPayment, _) => {
                    let body = json!({"booking_id": booking});
                    post(&http, &format!("{payment_url}/v1/payments"), &bearer, body).await
                }
                (Target::Refunding, _) => {
                    let url = format!("{booking_url}/v1/bookings/{booking}/cancel");
                    post(&http, &url, &bearer, json!({})).await
                }
                (Target::Voiding, Some(p)) => {
                    Some(pay(&http, &emulator_url, &p, "pm_card_chargeDeclined").await)
                }
                (_, Some(p)) => Some(pay(&http, &emulator_url, &p, "pm_card_visa").await),
                (_, None) => unreachable!("a payment is started first"),
            }
        })
    }

    async fn wait_for(&mut self, booking: &str, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.state(booking).await.as_deref() != Some(state) {
            assert!(
                Instant::now() < deadline,
                "never {state}:\n{}",
                self.history(booking).await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Seconds from the kill to the saga's next state change.
    async fn resumed_after(&mut self, flow: &Flow) -> f64 {
        let killed = flow.killed_us.unwrap_or_default();
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT min(s.at_us) FROM payment.payment_steps s \
             JOIN payment.payments p ON p.id = s.payment_id \
             WHERE p.booking_id = $1 AND s.at_us > $2",
        )
        .bind(&flow.booking)
        .bind(killed)
        .fetch_one(&mut self.db)
        .await
        .unwrap();
        next.map_or(f64::NAN, |at| (at - killed) as f64 / 1e6)
    }

    /// The payment row and its saga's steps, for failure messages.
    async fn history(&mut self, booking: &str) -> String {
        let row: Option<PaymentRow> = sqlx::query_as(
            "SELECT id, state, step_due_us, attempts, last_error FROM payment.payments \
             WHERE booking_id = $1",
        )
        .bind(booking)
        .fetch_optional(&mut self.db)
        .await
        .unwrap();
        let steps: Vec<(i64, i64, String, String, String)> = sqlx::query_as(
            "SELECT s.version, s.at_us, s.from_state, s.to_state, s.note \
             FROM payment.payment_steps s JOIN payment.payments p ON p.id = s.payment_id \
             WHERE p.booking_id = $1 ORDER BY s.version",
        )
        .bind(booking)
        .fetch_all(&mut self.db)
        .await
        .unwrap();
        let mut out = format!(
            "booking {booking}, payment (id, state, step_due_us, attempts, last_error): {row:?}\n"
        );
        for step in steps {
            out.push_str(&format!("  {step:?}\n"));
        }
        let log = std::fs::read_to_string(self.platform.payment_log()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        out.push_str(&format!(
            "payment log ({}), last lines:\n",
            self.platform.payment_log().display()
        ));
        for line in tail.iter().rev() {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

/// `POST url` with `body` as `bearer`; `None` when the connection failed
/// (the process was killed under it).
async fn post(
    http: &reqwest::Client,
    url: &str,
    bearer: &str,
    body: Value,
) -> Option<(u16, Value)> {
    let response = http
        .post(url)
        .header("authorization", bearer)
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .json(&body)
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.unwrap_or(Value::Null)))
}

/// `POST /v1/payments`: the payment, with its client secret.
async fn start_paying(
    http: &reqwest::Client,
    platform: &PaidPlatform,
    bearer: &str,
    booking: &str,
) -> Value {
    let url = format!("{}/v1/payments", platform.payment_url);
    let (status, payment) = post(http, &url, bearer, json!({"booking_id": booking}))
        .await
        .expect("the payment service answers");
    assert!(status == 201 || status == 200, "{status}: {payment}");
    assert!(payment["client_secret"].is_string(), "{payment}");
    payment
}

/// The customer confirms the intent at Stripe, as Stripe.js would.
async fn pay(http: &reqwest::Client, emulator: &str, payment: &Value, card: &str) -> (u16, Value) {
    let intent = payment["payment_intent"].as_str().unwrap();
    let secret = payment["client_secret"].as_str().unwrap();
    let response = http
        .post(format!("{emulator}/v1/payment_intents/{intent}/confirm"))
        .basic_auth(PUBLISHABLE_KEY, Some(""))
        .form(&[("client_secret", secret), ("payment_method", card)])
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_payment_process_resumes_every_saga_and_money_stays_sound() {
    let started = Instant::now();
    let redis = std::env::var("REDIS_URL").expect(
        "REDIS_URL is not set: run `scripts/stack up && eval \"$(scripts/stack env)\"` first",
    );
    let db = TestDb::create("payment_crash").await;
    let logs = std::env::temp_dir().join(&db.name);
    let platform = PaidPlatform::start(&db.url, &redis, None, &logs, "info").await;
    let http = reqwest::Client::new();
    let resource = platform.resource(&http, "Studio", 14 * 24 * 60).await;
    let bearer = platform.auth.bearer(CUSTOMER, "customer");
    platform
        .control()
        .set_faults(&Faults {
            api_latency_ms: STRIPE_LATENCY_MS,
            ..Faults::default()
        })
        .await
        .unwrap();
    let mut h = Harness {
        db: PgConnection::connect(&db.url).await.unwrap(),
        db_url: db.url.clone(),
        platform,
        http,
        bearer,
        resource,
        next_slot: 0,
    };

    let set_up = started.elapsed();
    let mut flows = Vec::new();
    for target in TARGETS {
        for _ in 0..TRIES {
            let flow = h.run(target).await;
            let caught = flow.caught();
            flows.push(flow);
            if caught {
                break;
            }
        }
    }
    let last_kill = Instant::now();
    let flows_done = started.elapsed();

    // Every saga ends: those killed mid-step once their lease ran out.
    for flow in &flows {
        let (_, state, ..) = flow.target.end();
        let deadline = last_kill + Duration::from_secs(45);
        while h.state(&flow.booking).await.as_deref() != Some(state) {
            assert!(
                Instant::now() < deadline,
                "{:?} (killed in {}): the saga never ended {state}\n{}",
                flow.target,
                flow.seen,
                h.history(&flow.booking).await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let check = h.platform.check_money();
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && out.contains("money sound"),
        "berth check-money: {out}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let stripe = h.platform.control().state().await.unwrap();
    for flow in &flows {
        let (status, _, intent_status, received, refunded) = flow.target.end();
        let stored: String =
            sqlx::query_scalar("SELECT status FROM booking.bookings WHERE id = $1::uuid")
                .bind(&flow.booking)
                .fetch_one(&mut h.db)
                .await
                .unwrap();
        let what = format!("{:?} (killed in {})", flow.target, flow.seen);
        assert_eq!(stored, status, "{what}\n{}", h.history(&flow.booking).await);
        let intents: Vec<_> = stripe
            .payment_intents
            .iter()
            .filter(|i| i.metadata.get("booking_id") == Some(&flow.booking))
            .collect();
        assert_eq!(
            intents.len(),
            1,
            "{what}: one intent per booking: {intents:?}"
        );
        let intent = intents[0];
        assert_eq!(
            (
                intent.status.as_str(),
                intent.amount_received,
                intent.amount_refunded
            ),
            (intent_status, received, refunded),
            "{what}: {intent:?}"
        );
        let refunds: Vec<_> = stripe
            .refunds
            .iter()
            .filter(|r| r.payment_intent == intent.id)
            .collect();
        assert_eq!(
            refunds.iter().map(|r| r.amount).sum::<i64>(),
            refunded,
            "{what}: {refunds:?}"
        );
        assert!(refunds.len() <= 1, "{what}: refunded twice: {refunds:?}");
    }

    let mut report = Vec::new();
    for target in TARGETS {
        let tries: Vec<&Flow> = flows.iter().filter(|f| f.target == target).collect();
        report.push(match tries.iter().position(|f| f.caught()) {
            Some(i) => {
                let resumed = h.resumed_after(tries[i]).await;
                format!(
                    "{} caught (try {}, saga moved again {resumed:.1}s after the kill)",
                    target.state(),
                    i + 1
                )
            }
            None => format!(
                "{} missed ({TRIES} tries, passed unseen to {})",
                target.state(),
                tries.last().map_or("?", |f| f.seen.as_str())
            ),
        });
    }
    println!(
        "payment process killed in: {}\n{} bookings; set up {:.1}s, flows until {:.1}s, \
         all ended and checked at {:.1}s",
        report.join("; "),
        flows.len(),
        set_up.as_secs_f64(),
        flows_done.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let caught = |t: Target| flows.iter().any(|f| f.target == t && f.caught());
    assert!(caught(Target::AwaitingPayment), "{report:?}");
    assert!(caught(Target::Capturing), "{report:?}");
    let hit = TARGETS.iter().filter(|t| caught(**t)).count();
    assert!(
        hit >= TARGETS.len() - 1,
        "too few states caught: {report:?}"
    );

    drop(h);
    let _ = std::fs::remove_dir_all(&logs);
    db.drop_now().await;
}
