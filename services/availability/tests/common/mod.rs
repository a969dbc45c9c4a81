//! Test support: fresh databases, an in-process HTTP client for the REST
//! routes (authenticated with tokens from one test issuer), and fixtures.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

pub mod scenarios;

use axum::Router;
use axum::body::Body;
use std::sync::LazyLock;

use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use berth_availability::Availability;
use berth_runtime::auth::testing::TestIssuer;
use chrono::{DateTime, Days, NaiveTime, Utc};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use uuid::Uuid;

/// The PostgreSQL admin URL from `scripts/stack env`. Panics (so the test
/// fails, never passes silently) when the stack is not set up.
pub fn pg_admin_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "DATABASE_URL is not set: these tests need the local PostgreSQL. \
             Run `scripts/stack up` and `eval \"$(scripts/stack env)\"` first."
        )
    })
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| {
        panic!(
            "REDIS_URL is not set: these tests need the local Redis. \
             Run `scripts/stack up` and `eval \"$(scripts/stack env)\"` first."
        )
    })
}

/// A database of its own for one test, dropped (best effort) when the
/// guard goes, also when the test fails.
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let admin = pg_admin_url();
        let name = format!("avail_test_{}", Uuid::new_v4().simple());
        let mut conn = connect_admin(&admin).await;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let (base, _) = admin.rsplit_once('/').expect("database URL has a path");
        TestDb {
            url: format!("{base}/{name}"),
            name,
            admin,
        }
    }

    /// A plain connection to the test database, for checks behind the API.
    pub async fn conn(&self) -> sqlx::PgConnection {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&self.url).await.unwrap()
    }
}

async fn connect_admin(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url).await.unwrap_or_else(|e| {
        panic!("cannot reach PostgreSQL at DATABASE_URL ({e}); is `scripts/stack up` running?")
    })
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs outside async context; use a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                use sqlx::Connection;
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

pub async fn pg(redis: bool) -> (Availability, TestDb) {
    let db = TestDb::create().await;
    let redis = redis.then(redis_url);
    let av = Availability::connect(&db.url, redis.as_deref())
        .await
        .unwrap();
    (av, db)
}

pub async fn sqlite() -> Availability {
    Availability::connect("sqlite::memory:", None)
        .await
        .unwrap()
}

/// The issuer every test's routes trust.
pub static ISSUER: LazyLock<TestIssuer> = LazyLock::new(TestIssuer::new);

/// The staff member who owns what [`Api::new`] creates.
pub const OWNER: &str = "staff-a";

pub fn token(subject: &str, roles: &[&str]) -> String {
    ISSUER.token(subject, roles)
}

pub fn staff(subject: &str) -> Option<String> {
    Some(token(subject, &["staff"]))
}

pub fn admin() -> Option<String> {
    Some(token("admin-1", &["admin"]))
}

pub fn customer() -> Option<String> {
    Some(token("customer-1", &["customer"]))
}

/// Calls REST routes in process, sending `token` as a bearer token.
#[derive(Clone)]
pub struct Api {
    pub router: Router,
    pub token: Option<String>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts an RFC 9457 problem with this status.
    #[track_caller]
    pub fn assert_problem(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(
            self.content_type(),
            "application/problem+json",
            "body: {}",
            self.body
        );
        assert_eq!(self.body["status"], status, "body: {}", self.body);
        assert!(self.body["type"].is_string() && self.body["title"].is_string());
        &self.body
    }
}

impl Api {
    /// As the staff member [`OWNER`].
    pub fn new(av: &Availability) -> Api {
        Api {
            router: av.rest_routes(&ISSUER.verifier()),
            token: staff(OWNER),
        }
    }

    /// Through `Runtime::finish_app`, as the binary serves it (body limit,
    /// problem+json fallbacks), as [`OWNER`].
    pub fn finished(av: &Availability, rt: &berth_runtime::Runtime) -> Api {
        Api {
            router: rt.finish_app(av.rest_routes(&ISSUER.verifier())),
            token: staff(OWNER),
        }
    }

    /// The same routes with another token (`None`: anonymous).
    pub fn with_token(&self, token: Option<String>) -> Api {
        Api {
            router: self.router.clone(),
            token,
        }
    }

    pub async fn raw(
        &self,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(ct) = content_type {
            request = request.header(header::CONTENT_TYPE, ct);
        }
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> Reply {
        match body {
            Some(v) => {
                self.raw(
                    method,
                    uri,
                    Some("application/json"),
                    serde_json::to_vec(&v).unwrap(),
                )
                .await
            }
            None => self.raw(method, uri, None, Vec::new()).await,
        }
    }

    pub async fn get(&self, uri: &str) -> Reply {
        self.call(Method::GET, uri, None).await
    }

    pub async fn post(&self, uri: &str, body: Value) -> Reply {
        self.call(Method::POST, uri, Some(body)).await
    }

    pub async fn put(&self, uri: &str, body: Value) -> Reply {
        self.call(Method::PUT, uri, Some(body)).await
    }

    pub async fn patch(&self, uri: &str, body: Value) -> Reply {
        self.call(Method::PATCH, uri, Some(body)).await
    }

    pub async fn delete(&self, uri: &str) -> Reply {
        self.call(Method::DELETE, uri, None).await
    }

    /// Creates a resource and returns its id.
    pub async fn resource(&self, name: &str, zone: &str) -> Uuid {
        let r = self
            .post("/v1/resources", json!({"name": name, "time_zone": zone}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body["id"].as_str().unwrap().parse().unwrap()
    }

    /// Creates an appointment type and returns its id.
    pub async fn appointment_type(&self, resource: Uuid, body: Value) -> Uuid {
        let r = self
            .post(&format!("/v1/resources/{resource}/appointment-types"), body)
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body["id"].as_str().unwrap().parse().unwrap()
    }

    /// Opens the resource every day, all day.
    pub async fn open_all_week(&self, resource: Uuid) {
        let day = json!([{"start": "00:00", "end": "24:00"}]);
        let week = json!({
            "monday": day, "tuesday": day, "wednesday": day, "thursday": day,
            "friday": day, "saturday": day, "sunday": day,
        });
        let r = self
            .put(&format!("/v1/resources/{resource}/schedule"), week)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }

    /// Slot starts (UTC) with their remaining seats.
    pub async fn slots(
        &self,
        resource: Uuid,
        ty: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<(DateTime<Utc>, u64)> {
        let uri = format!(
            "/v1/resources/{resource}/slots?type={ty}&from={}&to={}",
            from.format("%Y-%m-%dT%H:%M:%SZ"),
            to.format("%Y-%m-%dT%H:%M:%SZ")
        );
        let r = self.get(&uri).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["slots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["start_utc"].as_str().unwrap().parse().unwrap(),
                    s["remaining"].as_u64().unwrap(),
                )
            })
            .collect()
    }
}

/// A UTC instant `days` days from today at `hh:mm`.
pub fn day_at(days: u64, hh: u32, mm: u32) -> DateTime<Utc> {
    let date = Utc::now()
        .date_naive()
        .checked_add_days(Days::new(days))
        .unwrap();
    date.and_time(NaiveTime::from_hms_opt(hh, mm, 0).unwrap())
        .and_utc()
}

/// A resource open all week in UTC with a capacity-1 and a capacity-3
/// type (30 minutes, on a 30-minute grid), for ledger tests.
pub struct Fixture {
    pub api: Api,
    pub resource: Uuid,
    pub single: Uuid,
    pub group: Uuid,
}

pub async fn fixture(av: &Availability) -> Fixture {
    let api = Api::new(av);
    let resource = api.resource("Room 1", "UTC").await;
    api.open_all_week(resource).await;
    let ty = |name: &str, capacity: u32| {
        json!({
            "name": name, "duration_minutes": 30, "capacity": capacity,
            "horizon_minutes": 60 * 24 * 30, "price_minor": 2500, "currency": "EUR",
        })
    };
    let single = api.appointment_type(resource, ty("one-on-one", 1)).await;
    let group = api.appointment_type(resource, ty("group", 3)).await;
    Fixture {
        api,
        resource,
        single,
        group,
    }
}

/// Guard that restarts Redis when dropped, also if the test panicked.
pub struct RedisRestart;

impl RedisRestart {
    /// Arm before stopping Redis, so it comes back however the test ends.
    pub fn arm() -> RedisRestart {
        RedisRestart
    }
}

impl Drop for RedisRestart {
    fn drop(&mut self) {
        // No assert: this may run while unwinding from a failed test.
        if !stack("redis-start") {
            eprintln!("scripts/stack redis-start failed; run it by hand");
        }
    }
}

/// Runs `scripts/stack <command>`; true on success.
pub fn stack(command: &str) -> bool {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/stack");
    std::process::Command::new(script)
        .arg(command)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Serves ledger `routes` over gRPC on a free loopback port until `rt`
/// shuts down; the address to call.
pub async fn serve_ledger(
    rt: &std::sync::Arc<berth_runtime::Runtime>,
    routes: tonic::service::Routes,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let rt = rt.clone();
    tokio::spawn(async move {
        rt.serve_grpc(
            listener,
            "availability",
            routes,
            &[berth_availability::LEDGER_SERVICE_NAME],
            &[berth_availability::FILE_DESCRIPTOR_SET],
        )
        .await
    });
    format!("http://{addr}")
}

/// `n` resources open all week, each with a 30-minute appointment type:
/// `(resource, type)` pairs.
pub async fn rooms(api: &Api, n: usize) -> Vec<(Uuid, Uuid)> {
    let mut rooms = Vec::with_capacity(n);
    for i in 0..n {
        let resource = api.resource(&format!("room-{i}"), "UTC").await;
        api.open_all_week(resource).await;
        let ty = api
            .appointment_type(
                resource,
                json!({"name": "s", "duration_minutes": 30, "currency": "EUR"}),
            )
            .await;
        rooms.push((resource, ty));
    }
    rooms
}
