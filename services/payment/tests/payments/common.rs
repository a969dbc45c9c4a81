//! The platform's payment path, composed in process on real PostgreSQL (and
//! Redis when `REDIS_URL` is set): the availability service (the real
//! ledger), booking, payment, and the Stripe-API emulator (the test double
//! of Stripe, which cannot run here; kept honest by its own contract tests
//! against stripe-mock and async-stripe's types). Stripe's webhooks reach
//! the payment service over HTTP on a loopback listener, as in production.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use berth_availability::Availability;
use berth_booking::{Booking, BookingConfig};
use berth_payment::{PaymentConfig, Payments};
use berth_runtime::auth::testing::TestIssuer;
use berth_runtime::resilience::Dependencies;
use berth_stripe_emulator::{Control, Emulator, Endpoint, IntentState, Running};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[path = "../../../../tests/support/db.rs"]
mod db;
pub use db::TestDb;

pub const SECRET: &str = "whsec_test_payments";
pub const STAFF: &str = "staff-sam";
pub const ALICE: &str = "customer-alice";
pub const BOB: &str = "customer-bob";
pub const PRICE: i64 = 4500;

pub struct Options {
    pub hold_for: Duration,
    pub replicas: usize,
    pub abandon_after: Duration,
    /// The per-attempt deadline of Stripe calls (`[dependencies.stripe]`).
    pub stripe_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            hold_for: Duration::from_secs(600),
            replicas: 1,
            abandon_after: Duration::from_secs(3600),
            stripe_timeout: Duration::from_secs(2),
        }
    }
}

pub struct Env {
    pub db: TestDb,
    pub emulator: Running,
    pub control: Control,
    pub availability: Availability,
    pub booking: Booking,
    /// One per replica; all share the database.
    pub payments: Vec<Payments>,
    /// Where each replica serves the public API (and its webhook endpoint).
    pub bases: Vec<String>,
    pub issuer: TestIssuer,
    pub http: reqwest::Client,
    pub stop: CancellationToken,
    pub resource: Uuid,
    pub paid_type: Uuid,
    pub free_type: Uuid,
}

impl Env {
    pub async fn start(options: Options) -> Self {
        let db = TestDb::create("payment").await;
        let stop = CancellationToken::new();
        let redis = db::redis_url();
        let suffix = Uuid::now_v7().simple().to_string();
        let availability = Availability::connect(&db.url, None).await.unwrap();
        let booking_config = BookingConfig {
            hold_for: options.hold_for,
            stream_key: format!("test:events:{suffix}"),
            sweep_interval: Some(Duration::from_millis(500)),
            relay_interval: Duration::from_millis(100),
            saga_interval: Duration::from_millis(200),
            ..BookingConfig::default()
        };
        let booking = Booking::connect(
            &db.url,
            redis.as_deref(),
            Arc::new(availability.clone()),
            booking_config,
        )
        .await
        .unwrap();
        booking.spawn_workers(stop.clone());

        let mut listeners = Vec::new();
        for _ in 0..options.replicas {
            listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let bases: Vec<String> = listeners
            .iter()
            .map(|l| format!("http://{}", l.local_addr().unwrap()))
            .collect();
        let emulator = Emulator::start(berth_stripe_emulator::Config {
            endpoints: bases
                .iter()
                .map(|b| Endpoint {
                    url: format!("{b}/v1/webhooks/stripe"),
                    secrets: vec![SECRET.to_owned()],
                })
                .collect(),
            webhook_retry: berth_stripe_emulator::WebhookRetry {
                max_attempts: 8,
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(1),
            },
            ..berth_stripe_emulator::Config::default()
        })
        .await
        .unwrap();
        let issuer = TestIssuer::new();
        let verifier = issuer.verifier();
        let mut payments = Vec::new();
        for listener in listeners {
            let mut config = PaymentConfig::new("sk_test_berth", vec![SECRET.to_owned()]);
            config.stripe_api_base = emulator.base_url.clone();
            config.stream_key = format!("test:payments:{suffix}");
            config.booking_stream_key = format!("test:events:{suffix}");
            config.retry_base = Duration::from_millis(50);
            config.retry_max = Duration::from_millis(400);
            config.capture_attempts = 4;
            config.worker_interval = Duration::from_millis(100);
            config.recheck_after = Duration::from_secs(2);
            config.reconcile_interval = Duration::from_secs(3600);
            config.abandon_after = options.abandon_after;
            let stripe = berth_runtime::resilience::DependencySettings {
                timeout: options.stripe_timeout,
                ..Default::default()
            };
            let dependencies = Dependencies::new(
                &prometheus::Registry::new(),
                [(berth_payment::STRIPE_DEPENDENCY.to_owned(), stripe)].into(),
            )
            .unwrap();
            let replica = Payments::connect(
                &db.url,
                redis.as_deref(),
                Arc::new(booking.clone()),
                dependencies.get(berth_payment::STRIPE_DEPENDENCY),
                config,
            )
            .await
            .unwrap();
            replica.spawn_workers(stop.clone());
            if redis.is_none() {
                forward_booking_events(&booking, &replica, stop.clone());
            }
            let app = Router::new()
                .merge(availability.clone().rest_routes(&verifier))
                .merge(booking.rest_routes(&verifier))
                .merge(replica.rest_routes(&verifier));
            let stop_serving = stop.clone();
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop_serving.cancelled().await })
                    .await
                    .ok();
            });
            payments.push(replica);
        }
        let control = emulator.control();
        let mut env = Self {
            db,
            emulator,
            control,
            availability,
            booking,
            payments,
            bases,
            issuer,
            http: reqwest::Client::new(),
            stop,
            resource: Uuid::nil(),
            paid_type: Uuid::nil(),
            free_type: Uuid::nil(),
        };
        env.seed().await;
        env
    }

    pub fn token(&self, subject: &str, roles: &[&str]) -> String {
        self.issuer.token(subject, roles)
    }

    pub fn customer(&self, subject: &str) -> Client<'_> {
        Client {
            env: self,
            token: self.token(subject, &["customer"]),
            base: self.bases[0].clone(),
        }
    }

    pub fn staff(&self) -> Client<'_> {
        Client {
            env: self,
            token: self.token(STAFF, &["staff"]),
            base: self.bases[0].clone(),
        }
    }

    async fn seed(&mut self) {
        let staff = self.staff();
        let resource = staff
            .send(
                "POST",
                "/v1/resources",
                Some(json!({"name": "Studio", "time_zone": "UTC"})),
                None,
            )
            .await;
        assert_eq!(resource.0, 201, "{}", resource.1);
        let resource_id = resource.1["id"].as_str().unwrap().to_owned();
        let day = json!([{ "start": "00:00", "end": "23:59" }]);
        let week: serde_json::Map<String, Value> = [
            "monday",
            "tuesday",
            "wednesday",
            "thursday",
            "friday",
            "saturday",
            "sunday",
        ]
        .iter()
        .map(|d| ((*d).to_owned(), day.clone()))
        .collect();
        let schedule = staff
            .send(
                "PUT",
                &format!("/v1/resources/{resource_id}/schedule"),
                Some(Value::Object(week)),
                None,
            )
            .await;
        assert!(schedule.0 < 300, "{}", schedule.1);
        let paid = staff
            .send(
                "POST",
                &format!("/v1/resources/{resource_id}/appointment-types"),
                Some(json!({
                    "name": "Paid", "duration_minutes": 30, "price_minor": PRICE, "currency": "EUR",
                    "cancellation_policy": {"full_refund_notice_hours": 24, "late_refund_percent": 50}
                })),
                None,
            )
            .await;
        assert_eq!(paid.0, 201, "{}", paid.1);
        let free = staff
            .send(
                "POST",
                &format!("/v1/resources/{resource_id}/appointment-types"),
                Some(json!({"name": "Free", "duration_minutes": 30, "currency": "EUR"})),
                None,
            )
            .await;
        assert_eq!(free.0, 201, "{}", free.1);
        self.resource = resource_id.parse().unwrap();
        self.paid_type = paid.1["id"].as_str().unwrap().parse().unwrap();
        self.free_type = free.1["id"].as_str().unwrap().parse().unwrap();
    }

    /// A slot start `days` days and `half_hours` half hours from tomorrow's midnight.
    pub fn slot(days: i64, half_hours: i64) -> String {
        let tomorrow = (chrono::Utc::now() + chrono::TimeDelta::days(1 + days))
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc();
        (tomorrow + chrono::TimeDelta::minutes(30 * half_hours)).to_rfc3339()
    }

    /// An intent as the emulator shows it.
    pub async fn intent(&self, id: &str) -> IntentState {
        self.control
            .state()
            .await
            .unwrap()
            .payment_intents
            .into_iter()
            .find(|i| i.id == id)
            .unwrap_or_else(|| panic!("no intent {id}"))
    }

    /// The customer pays as Stripe.js would: confirm with the publishable
    /// key and the client secret, with a test card.
    pub async fn pay(&self, payment: &Value, card: &str) -> (u16, Value) {
        let intent = payment["payment_intent"].as_str().expect("an intent");
        let secret = payment["client_secret"].as_str().expect("a client secret");
        let response = self
            .http
            .post(format!(
                "{}/v1/payment_intents/{intent}/confirm",
                self.emulator.base_url
            ))
            .basic_auth("pk_test_berth", Some(""))
            .form(&[("client_secret", secret), ("payment_method", card)])
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Waits until `check` holds (polling), or fails with `what`.
    pub async fn eventually<F, Fut>(&self, seconds: u64, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
        while !check().await {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn sql_count(&self, sql: &str) -> i64 {
        let mut conn = PgConnection::connect(&self.db.url).await.unwrap();
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap();
        conn.close().await.ok();
        n
    }

    /// `berth check-money`'s findings for every priced booking, once no
    /// saga is in the middle of a step (as the checker is meant to run).
    pub async fn money_findings(&self) -> Vec<String> {
        self.eventually(20, "every payment saga comes to rest", || async {
            self.sql_count(
                "SELECT count(*) FROM payment.payments \
                 WHERE state NOT IN ('awaiting_payment', 'paid', 'failed', 'refunded')",
            )
            .await
                == 0
        })
        .await;
        let bookings = self.booking.priced_bookings().await.unwrap();
        self.payments[0]
            .check_money(&bookings)
            .await
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// Waits until the booking's stored status (not only what reads show)
    /// is `status`.
    pub async fn stored_status(&self, booking: &str, status: &str) {
        let sql = format!(
            "SELECT count(*) FROM booking.bookings WHERE id = '{booking}' AND status = '{status}'"
        );
        self.eventually(
            20,
            &format!("booking {booking} is stored {status}"),
            || async { self.sql_count(&sql).await == 1 },
        )
        .await;
    }

    pub async fn finish(self) {
        self.stop.cancel();
        self.emulator.stop().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.db.drop_now().await;
    }
}

/// Without Redis, booking events reach payments in process (as under
/// `berth dev`); with it, through the stream and the consumer group.
fn forward_booking_events(booking: &Booking, payments: &Payments, stop: CancellationToken) {
    let mut events = booking.subscribe_events();
    let payments = payments.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                event = events.recv() => match event {
                    Ok(e) => { let _ = payments.handle_booking_event(e.id, &e.event_type, e.booking_id).await; }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                },
            }
        }
    });
}

/// A caller of the public API with a bearer token.
pub struct Client<'a> {
    pub env: &'a Env,
    pub token: String,
    pub base: String,
}

impl Client<'_> {
    pub fn on(mut self, replica: usize) -> Self {
        self.base = self.env.bases[replica].clone();
        self
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self
            .env
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        if method == "POST" {
            let key = key.map_or_else(|| Uuid::now_v7().to_string(), str::to_owned);
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn book(&self, kind: Uuid, start: &str) -> (u16, Value) {
        let body =
            json!({"resource_id": self.env.resource, "appointment_type_id": kind, "start": start});
        self.send("POST", "/v1/bookings", Some(body), None).await
    }

    pub async fn start_payment(&self, booking: &str) -> (u16, Value) {
        self.send(
            "POST",
            "/v1/payments",
            Some(json!({"booking_id": booking})),
            None,
        )
        .await
    }

    pub async fn booking(&self, id: &str) -> Value {
        let (status, body) = self
            .send("GET", &format!("/v1/bookings/{id}"), None, None)
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn payment(&self, id: &str) -> Value {
        let (status, body) = self
            .send("GET", &format!("/v1/payments/{id}"), None, None)
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Books `kind` at `start` and starts paying: (booking, payment).
    pub async fn book_and_start_paying(&self, start: &str) -> (Value, Value) {
        let (status, booking) = self.book(self.env.paid_type, start).await;
        assert_eq!(status, 201, "{booking}");
        assert_eq!(booking["status"], "pending_payment");
        let (status, payment) = self.start_payment(booking["id"].as_str().unwrap()).await;
        assert_eq!(status, 201, "{payment}");
        (booking, payment)
    }

    pub async fn wait_for_booking(&self, id: &str, status: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let booking = self.booking(id).await;
            if booking["status"] == status {
                return booking;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "booking {id} never became {status}: {booking}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_for_payment(&self, id: &str, state: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let payment = self.payment(id).await;
            if payment["state"] == state {
                return payment;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "payment {id} never became {state}: {payment}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
