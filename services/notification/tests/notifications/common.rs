use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use berth_availability::Availability;
use berth_booking::{Booking, BookingConfig};
use berth_messaging::{MailSender, SmtpConfig, SmtpMailer, SmtpSecurity};
use berth_notification::{NotificationConfig, Notifications, RouterFetch, WebhookConfig};
use berth_runtime::auth::testing::TestIssuer;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[path = "../../../../tests/support/mod.rs"]
mod support;
use support::db::{TestDb, redis_url};
pub use support::sms::{SentSms, SmsSink};
pub use support::smtp::SmtpSink;
pub use support::webhooks::WebhookReceiver;

pub const STAFF: &str = "staff-sam";
pub const ALICE: &str = "customer-alice";
pub const ZONE: &str = "Europe/Berlin";
pub const ID_DOMAIN: &str = "berth.test";

pub struct Env {
    pub db: TestDb,
    pub booking: Booking,
    pub replicas: Vec<Notifications>,
    pub base: String,
    pub issuer: TestIssuer,
    pub http: reqwest::Client,
    pub stop: CancellationToken,
    pub booking_stream: String,
    pub resource: Uuid,
    pub free_type: Uuid,
}

pub struct Options {
    pub smtp_port: u16,
    pub replicas: usize,
    /// Also hand every booking event to every replica in process, on top
    /// of the stream: the same event reaching two replicas at once.
    pub in_process_too: bool,
    /// An address the mail server refuses for good (as a 550 would).
    pub refuse: Option<&'static str>,
    /// Reminder offsets (`None`: the defaults, 24 h and 1 h).
    pub reminder_offsets: Option<Vec<Duration>>,
    /// Whether the replicas' workers (senders, stream consumers) start;
    /// off, a replica only handles what it is handed in process.
    pub workers: bool,
    /// The Twilio-shaped provider texts go to (`None`: no text provider).
    pub sms: Option<SmsSink>,
    /// Whether SMTP is configured (off: the service sends no email).
    pub mail: bool,
}

/// The SMTP sender, refusing one address permanently.
struct Refusing {
    inner: Arc<dyn MailSender>,
    address: &'static str,
}

#[async_trait::async_trait]
impl MailSender for Refusing {
    async fn send(&self, mail: berth_messaging::Mail) -> Result<(), berth_messaging::SendError> {
        if mail.to == self.address {
            return Err(berth_messaging::SendError::Permanent(
                "550 no such mailbox".into(),
            ));
        }
        self.inner.send(mail).await
    }
}

/// Webhooks for tests: a receiver on loopback is allowed (the guard is
/// tested with it on), retries within a second, a short timeout.
pub fn test_webhooks() -> WebhookConfig {
    WebhookConfig {
        retry_schedule: vec![Duration::from_millis(200), Duration::from_millis(400)],
        timeout: Duration::from_secs(2),
        allow_private_urls: true,
        ..WebhookConfig::default()
    }
}

impl Env {
    pub async fn start(options: Options) -> Self {
        Self::start_with(options, test_webhooks()).await
    }

    pub async fn start_with(options: Options, webhooks: WebhookConfig) -> Self {
        let db = TestDb::create("notification").await;
        let stop = CancellationToken::new();
        let redis = redis_url().expect("REDIS_URL: run `eval \"$(scripts/stack env)\"`");
        let suffix = Uuid::now_v7().simple().to_string();
        let booking_stream = format!("test:events:{suffix}");
        let availability = Availability::connect(&db.url, None).await.unwrap();
        let booking = Booking::connect(
            &db.url,
            Some(&redis),
            Arc::new(availability.clone()),
            BookingConfig {
                stream_key: booking_stream.clone(),
                relay_interval: Duration::from_millis(100),
                payments_enabled: false,
                ..BookingConfig::default()
            },
        )
        .await
        .unwrap();
        booking.spawn_workers(stop.clone());
        let issuer = TestIssuer::new();
        let verifier = issuer.verifier();
        let mailer: Arc<dyn MailSender> = Arc::new(
            SmtpMailer::new(&SmtpConfig {
                host: "127.0.0.1".into(),
                port: options.smtp_port,
                security: SmtpSecurity::None,
                username: None,
                password: None,
                from: "Berth <no-reply@berth.test>".into(),
            })
            .unwrap(),
        );
        let mailer: Arc<dyn MailSender> = match options.refuse {
            Some(address) => Arc::new(Refusing {
                inner: mailer,
                address,
            }),
            None => mailer,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let dependencies = berth_runtime::resilience::Dependencies::new(
            &prometheus::Registry::new(),
            Default::default(),
        )
        .unwrap();
        let mut replicas = Vec::new();
        for replica in 0..options.replicas {
            let config = NotificationConfig {
                booking_stream_key: booking_stream.clone(),
                payment_stream_key: format!("test:payments:{suffix}"),
                retry_base: Duration::from_millis(100),
                retry_max: Duration::from_millis(400),
                worker_interval: Duration::from_millis(100),
                lease: Duration::from_secs(5),
                id_domain: ID_DOMAIN.into(),
                organizer: "no-reply@berth.test".into(),
                webhooks: webhooks.clone(),
                reminder_offsets: options
                    .reminder_offsets
                    .clone()
                    .unwrap_or_else(|| NotificationConfig::default().reminder_offsets),
                ..NotificationConfig::default()
            };
            // The first replica looks resources up in process (as `berth
            // dev`), the others over HTTP (as `berth serve`).
            let fetch: Arc<dyn berth_notification::Fetch> = if replica == 0 {
                Arc::new(RouterFetch::new(
                    availability.clone().rest_routes(&verifier),
                ))
            } else {
                Arc::new(berth_notification::HttpFetch::new(
                    &base,
                    dependencies.get(berth_notification::AVAILABILITY_DEPENDENCY),
                ))
            };
            let senders = berth_notification::Senders {
                mail: options.mail.then(|| mailer.clone()),
                sms: options.sms.as_ref().map(|sink| {
                    let texter: Arc<dyn berth_messaging::SmsSender> = Arc::new(
                        berth_messaging::TwilioSms::new(berth_messaging::TwilioConfig {
                            base_url: sink.base_url.clone(),
                            account_sid: "AC-test".into(),
                            auth_token: "sms-secret".into(),
                            from: "+15005550006".into(),
                        }),
                    );
                    texter
                }),
            };
            let replica = Notifications::connect(&db.url, Some(&redis), senders, fetch, config)
                .await
                .unwrap();
            if options.workers {
                replica.spawn_workers(stop.clone());
            }
            if options.in_process_too {
                forward(&booking, &replica, stop.clone());
            }
            replicas.push(replica);
        }
        let app = Router::new()
            .merge(availability.clone().rest_routes(&verifier))
            .merge(booking.rest_routes(&verifier))
            .merge(replicas[0].rest_routes(&verifier));
        let stop_serving = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop_serving.cancelled().await })
                .await
                .ok();
        });
        let mut env = Self {
            db,
            booking,
            replicas,
            base,
            issuer,
            http: reqwest::Client::new(),
            stop,
            booking_stream,
            resource: Uuid::nil(),
            free_type: Uuid::nil(),
        };
        env.seed().await;
        env
    }

    pub async fn send(
        &self,
        who: &str,
        roles: &[&str],
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .bearer_auth(self.issuer.token(who, roles))
            .header("Idempotency-Key", Uuid::new_v4().to_string());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn seed(&mut self) {
        let (status, resource) = self
            .send(
                STAFF,
                &["staff"],
                "POST",
                "/v1/resources",
                Some(json!({"name": "Studio Mitte", "time_zone": ZONE})),
            )
            .await;
        assert_eq!(status, 201, "{resource}");
        let id = resource["id"].as_str().unwrap().to_owned();
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
        let (status, body) = self
            .send(
                STAFF,
                &["staff"],
                "PUT",
                &format!("/v1/resources/{id}/schedule"),
                Some(Value::Object(week)),
            )
            .await;
        assert!(status < 300, "{body}");
        let (status, free) = self
            .send(
                STAFF,
                &["staff"],
                "POST",
                &format!("/v1/resources/{id}/appointment-types"),
                Some(json!({"name": "Consultation", "duration_minutes": 30, "currency": "EUR"})),
            )
            .await;
        assert_eq!(status, 201, "{free}");
        self.resource = id.parse().unwrap();
        self.free_type = free["id"].as_str().unwrap().parse().unwrap();
    }

    /// A held booking for Alice at `start`, with her email if given.
    pub async fn hold(&self, start: chrono::DateTime<chrono::Utc>, email: Option<&str>) -> Value {
        let customer = match email {
            Some(email) => json!({"name": "Alice", "email": email}),
            None => json!({"name": "Alice"}),
        };
        self.hold_as(start, customer, &self.issuer.token(ALICE, &["customer"]))
            .await
    }

    /// A held booking for Alice at `start` with `customer`, as `token`.
    pub async fn hold_as(
        &self,
        start: chrono::DateTime<chrono::Utc>,
        customer: Value,
        token: &str,
    ) -> Value {
        let response = self
            .http
            .post(format!("{}/v1/bookings", self.base))
            .bearer_auth(token)
            .header("Idempotency-Key", Uuid::new_v4().to_string())
            .json(&json!({
                "resource_id": self.resource,
                "appointment_type_id": self.free_type,
                "start": start.to_rfc3339(),
                "customer": customer
            }))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let booking: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 201, "{booking}");
        booking
    }

    /// A confirmed booking: held, then confirmed.
    pub async fn book(&self, start: chrono::DateTime<chrono::Utc>, email: Option<&str>) -> Value {
        let held = self.hold(start, email).await;
        self.act(held["id"].as_str().unwrap(), "confirm").await
    }

    /// `POST /v1/bookings/{id}/{action}` as Alice; must answer 200.
    pub async fn act(&self, id: &str, action: &str) -> Value {
        let (status, booking) = self
            .send(
                ALICE,
                &["customer"],
                "POST",
                &format!("/v1/bookings/{id}/{action}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{action}: {booking}");
        booking
    }

    pub async fn sql_count(&self, sql: &str) -> i64 {
        let mut conn = PgConnection::connect(&self.db.url).await.unwrap();
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap();
        conn.close().await.ok();
        n
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

    pub async fn finish(self) {
        self.stop.cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.db.drop_now().await;
    }
}

/// Hands booking events to `replica` in process, as `berth dev` does.
fn forward(booking: &Booking, replica: &Notifications, stop: CancellationToken) {
    let mut events = booking.subscribe_events();
    let replica = replica.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                event = events.recv() => match event {
                    Ok(event) => {
                        let json = serde_json::to_string(&event).unwrap();
                        let _ = replica.handle_booking_event(&json).await;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                },
            }
        }
    });
}

/// A received message, parsed.
pub struct Received {
    pub subject: String,
    pub message_id: String,
    pub text: String,
    pub html: String,
    /// The `text/calendar` alternative: its `method` parameter and text.
    pub calendar: Option<(String, String)>,
}

pub fn parse(raw: &str) -> Received {
    use mail_parser::MimeHeaders;
    let message = mail_parser::MessageParser::default()
        .parse(raw.as_bytes())
        .expect("a MIME message");
    let calendar = message.parts.iter().find_map(|part| {
        let ct = part.content_type()?;
        (ct.ctype() == "text" && ct.subtype() == Some("calendar")).then(|| {
            (
                ct.attribute("method").unwrap_or_default().to_owned(),
                part.text_contents().unwrap_or_default().to_owned(),
            )
        })
    });
    Received {
        subject: message.subject().unwrap_or_default().to_owned(),
        message_id: message.message_id().unwrap_or_default().to_owned(),
        text: message
            .body_text(0)
            .map(|t| t.into_owned())
            .unwrap_or_default(),
        html: message
            .body_html(0)
            .map(|t| t.into_owned())
            .unwrap_or_default(),
        calendar,
    }
}

/// An iCalendar property's value (first occurrence, unfolded).
pub fn ics_value(ics: &str, name: &str) -> Option<String> {
    let unfolded = ics.replace("\r\n ", "").replace("\n ", "");
    unfolded.lines().find_map(|line| {
        line.strip_prefix(&format!("{name}:"))
            .map(|v| v.trim().to_owned())
    })
}

/// Tomorrow plus `days`, at `hour`:00 UTC.
pub fn at(days: i64, hour: u32) -> chrono::DateTime<chrono::Utc> {
    (chrono::Utc::now() + chrono::TimeDelta::days(1 + days))
        .date_naive()
        .and_hms_opt(hour, 0, 0)
        .unwrap()
        .and_utc()
}

pub fn free_port() -> u16 {
    support::free_port()
}

/// The reminder offset that makes a reminder for `start` due `due_in` from
/// now, and that due time (offsets are whole seconds).
pub fn due_in(
    start: chrono::DateTime<chrono::Utc>,
    due_in: Duration,
) -> (Duration, chrono::DateTime<chrono::Utc>) {
    let offset = (start - chrono::Utc::now()).to_std().unwrap() - due_in;
    let offset = Duration::from_secs(offset.as_secs());
    (offset, start - chrono::TimeDelta::from_std(offset).unwrap())
}
