//! Test support: an in-memory ledger double, scratch databases, and a small
//! HTTP client for the router that authenticates with real tokens.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::{Body, Bytes, to_bytes};
use berth_booking::{Booking, BookingConfig};
use berth_ledger::{ClaimReceipt, ClaimRequest, Ledger, LedgerError};
use berth_runtime::auth::testing::TestIssuer;
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use http::{HeaderMap, Method, Request, StatusCode};
use serde_json::Value;
use sqlx::{Connection, PgPool, SqlitePool};
use tokio::sync::Notify;
use tower::ServiceExt;
use uuid::Uuid;

// ---------------------------------------------------------------- ledger

#[derive(Debug, Clone)]
pub struct Claim {
    pub id: Uuid,
    pub resource_id: Uuid,
    pub appointment_type_id: Uuid,
    pub start: DateTime<Utc>,
    pub seats: u32,
    pub owner: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub released: bool,
}

impl Claim {
    fn live(&self, now: DateTime<Utc>) -> bool {
        !self.released && self.expires_at.is_none_or(|at| at > now)
    }
}

/// Honours the `Ledger` contract in memory: capacity per (resource, start),
/// holds that lapse, claim idempotent per owner, release idempotent,
/// reschedule atomic. Failures can be switched on.
pub struct MemLedger {
    claims: Mutex<HashMap<Uuid, Claim>>,
    pub capacity: u32,
    pub slot: TimeDelta,
    prices: Mutex<HashMap<Uuid, i64>>,
    owners: Mutex<HashMap<Uuid, String>>,
    pub fail_release: AtomicBool,
    pub unavailable: AtomicBool,
    pub claim_calls: AtomicUsize,
    gate: Mutex<Option<(Arc<Notify>, Arc<Notify>)>>,
}

impl MemLedger {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            claims: Mutex::new(HashMap::new()),
            capacity: 1,
            slot: TimeDelta::minutes(30),
            prices: Mutex::new(HashMap::new()),
            owners: Mutex::new(HashMap::new()),
            fail_release: AtomicBool::new(false),
            unavailable: AtomicBool::new(false),
            claim_calls: AtomicUsize::new(0),
            gate: Mutex::new(None),
        })
    }

    /// Seats of this appointment type cost `price` minor units each.
    pub fn set_price(&self, appointment_type_id: Uuid, price: i64) {
        self.prices
            .lock()
            .unwrap()
            .insert(appointment_type_id, price);
    }

    /// The staff account managing `resource` (receipts report it).
    pub fn set_owner(&self, resource: Uuid, owner: &str) {
        self.owners
            .lock()
            .unwrap()
            .insert(resource, owner.to_owned());
    }

    /// The next claim signals `entered` and then waits for `proceed`.
    pub fn gate_next_claim(&self) -> (Arc<Notify>, Arc<Notify>) {
        let gate = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        *self.gate.lock().unwrap() = Some(gate.clone());
        gate
    }

    pub fn claim(&self, id: Uuid) -> Claim {
        self.claims.lock().unwrap()[&id].clone()
    }

    pub fn live_claims(&self) -> usize {
        let now = Utc::now();
        self.claims
            .lock()
            .unwrap()
            .values()
            .filter(|c| c.live(now))
            .count()
    }

    fn check_up(&self) -> Result<(), LedgerError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(LedgerError::Unavailable("ledger is down (test)".into()));
        }
        Ok(())
    }

    fn used(
        &self,
        claims: &HashMap<Uuid, Claim>,
        resource: Uuid,
        start: DateTime<Utc>,
        except: Uuid,
    ) -> u32 {
        let now = Utc::now();
        claims
            .values()
            .filter(|c| {
                c.id != except && c.resource_id == resource && c.start == start && c.live(now)
            })
            .map(|c| c.seats)
            .sum()
    }

    fn receipt(&self, c: &Claim) -> ClaimReceipt {
        let price = self
            .prices
            .lock()
            .unwrap()
            .get(&c.appointment_type_id)
            .copied()
            .unwrap_or(0);
        ClaimReceipt {
            claim_id: c.id,
            resource_id: c.resource_id,
            appointment_type_id: c.appointment_type_id,
            start: c.start,
            end: c.start + self.slot,
            seats: c.seats,
            expires_at: c.expires_at,
            price_minor: price * i64::from(c.seats),
            currency: "EUR".into(),
            resource_owner: self
                .owners
                .lock()
                .unwrap()
                .get(&c.resource_id)
                .cloned()
                .unwrap_or_default(),
            cancellation_policy: None,
        }
    }
}

#[async_trait]
impl Ledger for MemLedger {
    async fn claim(&self, request: ClaimRequest) -> Result<ClaimReceipt, LedgerError> {
        self.claim_calls.fetch_add(1, Ordering::SeqCst);
        let gate = self.gate.lock().unwrap().take();
        if let Some((entered, proceed)) = gate {
            entered.notify_one();
            proceed.notified().await;
        }
        self.check_up()?;
        if request.seats == 0 {
            return Err(LedgerError::Invalid("seats must be at least 1".into()));
        }
        let now = Utc::now();
        let mut claims = self.claims.lock().unwrap();
        if let Some(existing) = claims.values().find(|c| {
            c.owner == request.owner
                && c.resource_id == request.resource_id
                && c.start == request.start
                && c.live(now)
        }) {
            return Ok(self.receipt(existing));
        }
        if self.used(&claims, request.resource_id, request.start, Uuid::nil()) + request.seats
            > self.capacity
        {
            return Err(LedgerError::SlotUnavailable(format!(
                "{} is taken",
                request.start
            )));
        }
        let claim = Claim {
            id: Uuid::now_v7(),
            resource_id: request.resource_id,
            appointment_type_id: request.appointment_type_id,
            start: request.start,
            seats: request.seats,
            owner: request.owner,
            expires_at: request
                .hold_for
                .map(|d| now + TimeDelta::from_std(d).unwrap()),
            released: false,
        };
        let receipt = self.receipt(&claim);
        claims.insert(claim.id, claim);
        Ok(receipt)
    }

    async fn confirm(&self, claim_id: Uuid) -> Result<ClaimReceipt, LedgerError> {
        self.check_up()?;
        let now = Utc::now();
        let mut claims = self.claims.lock().unwrap();
        let claim = claims
            .get_mut(&claim_id)
            .filter(|c| !c.released)
            .ok_or_else(|| LedgerError::NotFound(format!("claim {claim_id}")))?;
        if !claim.live(now) {
            return Err(LedgerError::HoldExpired);
        }
        claim.expires_at = None;
        let claim = claim.clone();
        Ok(self.receipt(&claim))
    }

    async fn release(&self, claim_id: Uuid) -> Result<(), LedgerError> {
        self.check_up()?;
        if self.fail_release.load(Ordering::SeqCst) {
            return Err(LedgerError::Unavailable("release fails (test)".into()));
        }
        if let Some(claim) = self.claims.lock().unwrap().get_mut(&claim_id) {
            claim.released = true;
        }
        Ok(())
    }

    async fn reschedule(
        &self,
        claim_id: Uuid,
        new_start: DateTime<Utc>,
    ) -> Result<ClaimReceipt, LedgerError> {
        self.check_up()?;
        let now = Utc::now();
        let mut claims = self.claims.lock().unwrap();
        let claim = claims
            .get(&claim_id)
            .filter(|c| !c.released)
            .cloned()
            .ok_or_else(|| LedgerError::NotFound(format!("claim {claim_id}")))?;
        if !claim.live(now) {
            return Err(LedgerError::HoldExpired);
        }
        if self.used(&claims, claim.resource_id, new_start, claim_id) + claim.seats > self.capacity
        {
            return Err(LedgerError::SlotUnavailable(format!(
                "{new_start} is taken"
            )));
        }
        let moved = Claim {
            start: new_start,
            ..claim
        };
        let receipt = self.receipt(&moved);
        claims.insert(claim_id, moved);
        Ok(receipt)
    }
}

// ---------------------------------------------------------------- databases

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

pub fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the booking tests need the local stack. Run `scripts/stack up` \
             and `eval \"$(scripts/stack env)\"` before `cargo test -p berth-booking`"
        )
    })
}

/// A scratch database; a PostgreSQL one is dropped when this is (best effort).
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Postgres => {
                let admin = required_env("DATABASE_URL");
                let name = format!("booking_test_{}", Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                let (base, query) = admin.split_once('?').unwrap_or((&admin, ""));
                let slash = base.rfind('/').unwrap();
                let query = if query.is_empty() {
                    String::new()
                } else {
                    format!("?{query}")
                };
                Self {
                    url: format!("{}{name}{query}", &base[..=slash]),
                    backend,
                    pg_name: Some(name),
                    _dir: None,
                }
            }
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                Self {
                    url: format!("sqlite://{}/booking.db", dir.path().display()),
                    backend,
                    pg_name: None,
                    _dir: Some(dir),
                }
            }
        }
    }

    fn table(&self, name: &str) -> String {
        match self.backend {
            Backend::Postgres => format!("booking.{name}"),
            Backend::Sqlite => name.to_owned(),
        }
    }

    /// Runs `sql` with `{t}` replaced by the schema prefix (`booking.` or ``).
    pub async fn execute(&self, sql: &str) -> u64 {
        let sql = sql.replace("{t}", &self.table(""));
        match self.backend {
            Backend::Postgres => {
                let pool = PgPool::connect(&self.url).await.unwrap();
                let n = sqlx::query(&sql)
                    .execute(&pool)
                    .await
                    .unwrap()
                    .rows_affected();
                pool.close().await;
                n
            }
            Backend::Sqlite => {
                let pool = SqlitePool::connect(&self.url).await.unwrap();
                let n = sqlx::query(&sql)
                    .execute(&pool)
                    .await
                    .unwrap()
                    .rows_affected();
                pool.close().await;
                n
            }
        }
    }

    /// `SELECT count(*)` with `{t}` replaced by the schema prefix.
    pub async fn count(&self, sql: &str) -> i64 {
        let sql = sql.replace("{t}", &self.table(""));
        match self.backend {
            Backend::Postgres => {
                let pool = PgPool::connect(&self.url).await.unwrap();
                let n: i64 = sqlx::query_scalar(&sql).fetch_one(&pool).await.unwrap();
                pool.close().await;
                n
            }
            Backend::Sqlite => {
                let pool = SqlitePool::connect(&self.url).await.unwrap();
                let n: i64 = sqlx::query_scalar(&sql).fetch_one(&pool).await.unwrap();
                pool.close().await;
                n
            }
        }
    }

    pub async fn rows(&self, table: &str) -> i64 {
        self.count(&format!("SELECT count(*) FROM {{t}}{table}"))
            .await
    }

    /// A single text column of a single row (e.g. a booking's saga step).
    pub async fn text(&self, sql: &str) -> Option<String> {
        let sql = sql.replace("{t}", &self.table(""));
        match self.backend {
            Backend::Postgres => {
                let pool = PgPool::connect(&self.url).await.unwrap();
                let v = sqlx::query_scalar(&sql).fetch_one(&pool).await.unwrap();
                pool.close().await;
                v
            }
            Backend::Sqlite => {
                let pool = SqlitePool::connect(&self.url).await.unwrap();
                let v = sqlx::query_scalar(&sql).fetch_one(&pool).await.unwrap();
                pool.close().await;
                v
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        let Ok(admin) = std::env::var("DATABASE_URL") else {
            return;
        };
        // Drop runs inside the test's runtime; use a thread with its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

// ---------------------------------------------------------------- service

pub fn test_config() -> BookingConfig {
    BookingConfig {
        max_connections: 4,
        relay_interval: Duration::from_millis(50),
        saga_interval: Duration::from_millis(50),
        saga_retry_base: Duration::from_millis(50),
        saga_retry_max: Duration::from_millis(200),
        sweep_interval: None,
        stream_key: format!("berth:test:{}", Uuid::new_v4().simple()),
        accounts_stream_key: format!("berth:test:accounts:{}", Uuid::new_v4().simple()),
        ..BookingConfig::default()
    }
}

/// The subject of `Env::api`, a customer.
pub const ALICE: &str = "alice";

pub struct Env {
    pub db: TestDb,
    pub ledger: Arc<MemLedger>,
    pub booking: Booking,
    pub issuer: Arc<TestIssuer>,
    /// Authenticated as the customer [`ALICE`].
    pub api: Api,
}

impl Env {
    /// The same router, authenticated as `subject` with `roles`.
    pub fn api_as(&self, subject: &str, roles: &[&str]) -> Api {
        self.api.with_token(&self.issuer.token(subject, roles))
    }
}

pub async fn setup(backend: Backend) -> Env {
    setup_with(backend, test_config(), None).await
}

pub async fn setup_with(backend: Backend, config: BookingConfig, redis: Option<&str>) -> Env {
    let db = TestDb::new(backend).await;
    let ledger = MemLedger::new();
    let booking = Booking::connect(&db.url, redis, ledger.clone(), config)
        .await
        .unwrap();
    let issuer = Arc::new(TestIssuer::new());
    let api = Api::new(&booking, &issuer, ALICE, &["customer"]);
    Env {
        db,
        ledger,
        booking,
        issuer,
        api,
    }
}

/// A slot start on a half-hour boundary, `n` slots after a fixed future day.
pub fn slot(n: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 6, 3, 8, 0, 0).unwrap() + TimeDelta::minutes(30 * n)
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn new_key() -> String {
    Uuid::new_v4().to_string()
}

// ---------------------------------------------------------------- http

#[derive(Clone)]
pub struct Api {
    pub router: Router,
    /// Sent as `Authorization: Bearer`; `None` sends no credentials.
    pub token: Option<String>,
}

#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub bytes: Bytes,
    pub json: Value,
}

impl Resp {
    pub fn assert_problem(&self, status: u16) -> &Self {
        assert_eq!(self.status.as_u16(), status, "{:?}", self.json);
        assert_eq!(
            self.headers.get(http::header::CONTENT_TYPE).unwrap(),
            "application/problem+json",
            "{:?}",
            self.json
        );
        assert_eq!(self.json["status"], status);
        self
    }

    pub fn problem_type(&self) -> &str {
        self.json["type"]
            .as_str()
            .unwrap_or_default()
            .rsplit('/')
            .next()
            .unwrap_or_default()
    }

    pub fn id(&self) -> Uuid {
        self.json["id"].as_str().unwrap().parse().unwrap()
    }
}

impl Api {
    pub fn new(booking: &Booking, issuer: &TestIssuer, subject: &str, roles: &[&str]) -> Self {
        Self {
            router: booking.rest_routes(&issuer.verifier()),
            token: Some(issuer.token(subject, roles)),
        }
    }

    pub fn with_token(&self, token: &str) -> Self {
        Self {
            router: self.router.clone(),
            token: Some(token.to_owned()),
        }
    }

    /// The same router without credentials.
    pub fn anonymous(&self) -> Self {
        Self {
            router: self.router.clone(),
            token: None,
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> Resp {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(body.into()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            bytes,
            json,
        }
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> Resp {
        self.send(
            Method::POST,
            path,
            Some(key),
            Some("application/json"),
            body.to_string(),
        )
        .await
    }

    /// A POST without a body (confirm, cancel).
    pub async fn act(&self, id: Uuid, action: &str) -> Resp {
        self.send(
            Method::POST,
            &format!("/v1/bookings/{id}/{action}"),
            Some(&new_key()),
            None,
            Body::empty(),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None, None, Body::empty())
            .await
    }

    pub async fn create(
        &self,
        resource_id: Uuid,
        appointment_type_id: Uuid,
        start: DateTime<Utc>,
    ) -> Resp {
        self.post(
            "/v1/bookings",
            &new_key(),
            serde_json::json!({
                "resource_id": resource_id,
                "appointment_type_id": appointment_type_id,
                "start": rfc3339(start),
            }),
        )
        .await
    }
}

/// Polls `check` until it holds, failing after `secs` seconds.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Runs a scenario `async fn name(Backend)` once per backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::common::Backend::Postgres).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await
            }
        }
    )*};
}
