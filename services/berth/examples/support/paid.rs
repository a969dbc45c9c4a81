//! The paid-booking platform as Kubernetes runs it: `berth serve
//! availability`, `booking` (serving the settlement gRPC payment calls)
//! and `payment`, and the Stripe-API emulator, each its own process, on one
//! PostgreSQL database and a Redis database of their own. The payment
//! process can be killed and started again with the same settings and
//! ports.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use berth_stripe_emulator::Control;
use serde_json::json;

use super::redis_db::RedisDb;
use super::{Auth, Process, berth_binary, free_port, spawn_logged, wait_ready};

pub const STRIPE_KEY: &str = "sk_test_berth";
/// What Stripe.js confirms an intent with, beside its client secret.
pub const PUBLISHABLE_KEY: &str = "pk_test_berth";
pub const WEBHOOK_SECRET: &str = "whsec_berth_processes";
/// The priced appointment type's price (EUR cents).
pub const PRICE: i64 = 4500;
pub const STAFF: &str = "staff-1";

/// `berth-stripe-emulator`, next to the `berth` binary.
pub fn emulator_binary() -> PathBuf {
    berth_binary().with_file_name("berth-stripe-emulator")
}

pub struct PaidPlatform {
    pub auth: Auth,
    pub availability: Process,
    pub booking: Process,
    /// `None` while killed.
    pub payment: Option<Process>,
    pub emulator: Emulator,
    pub availability_url: String,
    pub booking_url: String,
    pub payment_url: String,
    /// The Stripe API's base and the control API's.
    pub emulator_url: String,
    payment_env: Vec<(&'static str, String)>,
    payment_log: PathBuf,
    /// Last, so it is released after the processes stopped.
    _redis: RedisDb,
}

/// The Stripe-API emulator: a process of its own (the benchmark, to
/// measure its CPU apart) or a server inside the test process.
pub enum Emulator {
    Process(Process),
    InProcess(berth_stripe_emulator::Running),
}

impl Emulator {
    pub fn pid(&self) -> Option<u32> {
        match self {
            Self::Process(p) => Some(p.0.id()),
            Self::InProcess(_) => None,
        }
    }
}

/// A resource open all day (UTC) with a priced and a free 30-minute type.
pub struct Resource {
    pub id: String,
    pub paid: String,
    pub free: String,
}

impl PaidPlatform {
    /// Starts every process on `database_url`, each logging at `log`
    /// (`BERTH_LOG`) to `<logs>/<service>.log`; the emulator is the
    /// binary `emulator_bin`, or runs in this process without one.
    pub async fn start(
        database_url: &str,
        redis_url: &str,
        emulator_bin: Option<&Path>,
        logs: &Path,
        log: &str,
    ) -> Self {
        std::fs::create_dir_all(logs).unwrap();
        let redis = RedisDb::claim(redis_url, 3600);
        let auth = Auth::start().await;
        let common = [
            auth.env().as_slice(),
            &[
                ("BERTH_DATABASE_URL", database_url.to_owned()),
                ("BERTH_REDIS_URL", redis.url.clone()),
                ("BERTH_LOG", log.to_owned()),
            ],
        ]
        .concat();
        let with = |extra: &[(&'static str, String)]| [common.as_slice(), extra].concat();
        let (a_http, a_grpc) = (free_port(), free_port());
        let availability = spawn_logged(
            &["serve", "availability"],
            &with(&[
                ("BERTH_HTTP_ADDR", format!("127.0.0.1:{a_http}")),
                ("BERTH_GRPC_ADDR", format!("127.0.0.1:{a_grpc}")),
            ]),
            &logs.join("availability.log"),
        );
        let availability_url = format!("http://127.0.0.1:{a_http}");
        wait_ready(&availability_url).await;
        let (b_http, b_grpc) = (free_port(), free_port());
        let booking = spawn_logged(
            &["serve", "booking"],
            &with(&[
                ("BERTH_HTTP_ADDR", format!("127.0.0.1:{b_http}")),
                ("BERTH_GRPC_ADDR", format!("127.0.0.1:{b_grpc}")),
                (
                    "BERTH_SERVICE__AVAILABILITY_GRPC",
                    format!("http://127.0.0.1:{a_grpc}"),
                ),
            ]),
            &logs.join("booking.log"),
        );
        let booking_url = format!("http://127.0.0.1:{b_http}");
        wait_ready(&booking_url).await;
        let payment_url = format!("http://127.0.0.1:{}", free_port());
        let webhook_url = format!("{payment_url}/v1/webhooks/stripe");
        let (emulator, emulator_url) = match emulator_bin {
            Some(binary) => {
                let (process, url) = spawn_emulator(binary, &webhook_url);
                (Emulator::Process(process), url)
            }
            None => {
                let running = emulator_in_process(&webhook_url).await;
                let url = running.base_url.clone();
                (Emulator::InProcess(running), url)
            }
        };
        let payment_env = with(&[
            (
                "BERTH_HTTP_ADDR",
                payment_url.trim_start_matches("http://").to_owned(),
            ),
            (
                "BERTH_SERVICE__BOOKING_GRPC",
                format!("http://127.0.0.1:{b_grpc}"),
            ),
            ("BERTH_SERVICE__STRIPE__API_KEY", STRIPE_KEY.to_owned()),
            (
                "BERTH_SERVICE__STRIPE__WEBHOOK_SECRET",
                WEBHOOK_SECRET.to_owned(),
            ),
            ("BERTH_SERVICE__STRIPE__API_BASE", emulator_url.clone()),
        ]);
        let mut platform = Self {
            auth,
            availability,
            booking,
            payment: None,
            emulator,
            availability_url,
            booking_url,
            payment_url,
            emulator_url,
            payment_env,
            payment_log: logs.join("payment.log"),
            _redis: redis,
        };
        platform.start_payment().await;
        platform
    }

    /// Starts the payment process (again: same settings, same port).
    pub async fn start_payment(&mut self) {
        assert!(self.payment.is_none(), "the payment process is running");
        self.payment = Some(spawn_logged(
            &["serve", "payment"],
            &self.payment_env,
            &self.payment_log,
        ));
        wait_ready(&self.payment_url).await;
    }

    /// SIGKILL, as a pod ends when its node is lost or memory runs out:
    /// no shutdown, no drain, whatever step is running.
    pub fn kill_payment(&mut self) {
        if let Some(mut payment) = self.payment.take() {
            payment.0.kill().unwrap();
            payment.0.wait().unwrap();
        }
    }

    pub fn payment_pid(&self) -> Option<u32> {
        self.payment.as_ref().map(|p| p.0.id())
    }

    pub fn payment_log(&self) -> &Path {
        &self.payment_log
    }

    pub fn control(&self) -> Control {
        Control::new(&self.emulator_url)
    }

    /// `berth check-money` with the payment service's settings.
    pub fn check_money(&self) -> Output {
        let mut command = Command::new(berth_binary());
        command.arg("check-money").env_remove("BERTH_CONFIG");
        for (key, value) in &self.payment_env {
            command.env(key, value);
        }
        command.env("BERTH_LOG", "warn").output().unwrap()
    }

    /// A resource with both types, bookable `horizon_minutes` ahead.
    pub async fn resource(
        &self,
        client: &reqwest::Client,
        name: &str,
        horizon_minutes: usize,
    ) -> Resource {
        let staff = self.auth.bearer(STAFF, "staff");
        let day = json!([{"start": "00:00", "end": "24:00"}]);
        let week = json!({"monday": day, "tuesday": day, "wednesday": day, "thursday": day,
            "friday": day, "saturday": day, "sunday": day});
        let (id, paid) = super::create_resource(
            client,
            &self.availability_url,
            &staff,
            json!({"name": name, "time_zone": "UTC"}),
            &week,
            json!({"name": "paid", "duration_minutes": 30, "price_minor": PRICE, "currency": "EUR",
                "min_notice_minutes": 60, "horizon_minutes": horizon_minutes,
                "cancellation_policy": {"full_refund_notice_hours": 24, "late_refund_percent": 50}}),
        )
        .await;
        let url = format!(
            "{}/v1/resources/{id}/appointment-types",
            self.availability_url
        );
        let free = super::post_json(
            client,
            &staff,
            &url,
            json!({"name": "free", "duration_minutes": 30, "currency": "EUR",
                "min_notice_minutes": 60, "horizon_minutes": horizon_minutes}),
        )
        .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        Resource { id, paid, free }
    }
}

/// The start of the `half_hour`th slot (from 00:00 UTC) `days` days from today.
pub fn slot(days: i64, half_hour: i64) -> String {
    let midnight = (chrono::Utc::now() + chrono::TimeDelta::days(days))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    (midnight + chrono::TimeDelta::minutes(30 * half_hour)).to_rfc3339()
}

async fn emulator_in_process(webhook_url: &str) -> berth_stripe_emulator::Running {
    let config = berth_stripe_emulator::Config {
        api_key: STRIPE_KEY.to_owned(),
        publishable_key: PUBLISHABLE_KEY.to_owned(),
        endpoints: vec![berth_stripe_emulator::Endpoint {
            url: webhook_url.to_owned(),
            secrets: vec![WEBHOOK_SECRET.to_owned()],
        }],
        ..berth_stripe_emulator::Config::default()
    };
    berth_stripe_emulator::Emulator::start(config)
        .await
        .unwrap()
}

/// The emulator (`binary`) on a free port, delivering webhooks to `webhook_url`;
/// answers it and its base URL (the line it prints when listening).
fn spawn_emulator(binary: &Path, webhook_url: &str) -> (Process, String) {
    let mut child = Command::new(binary)
        .args(["--addr", "127.0.0.1:0", "--api-key", STRIPE_KEY])
        .args(["--publishable-key", PUBLISHABLE_KEY])
        .args([
            "--webhook-url",
            webhook_url,
            "--webhook-secret",
            WEBHOOK_SECRET,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect(
            "berth-stripe-emulator binary: build it with \
             `cargo build [--release] -p berth-stripe-emulator`",
        );
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("the emulator did not start: {line:?}"))
        .to_owned();
    // Nothing more is expected, but a full pipe must never block it.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    (Process(child), url)
}
