//! The platform as Kubernetes runs it: `berth serve availability` and
//! `berth serve booking` as separate processes, booking calling the ledger
//! over gRPC, both on the real PostgreSQL (and Redis) of `scripts/stack`.
//! 64 concurrent HTTP clients race for the same slots; exactly `capacity`
//! win, every other request gets 409 problem+json, and the ledger checker
//! finds no overlap.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const CLIENTS: usize = 64;

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_or_fail(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run `scripts/stack up && eval \"$(scripts/stack env)\"` first")
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh database per test run, dropped at the end.
struct TestDb {
    admin: String,
    name: String,
    url: String,
}

impl TestDb {
    async fn create() -> Self {
        let admin = env_or_fail("DATABASE_URL");
        let name = format!("platform_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = admin.rsplit_once('/').unwrap().0;
        Self {
            url: format!("{base}/{name}"),
            admin,
            name,
        }
    }

    async fn drop_db(&self) {
        if let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(&self.admin).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn)
            .await;
        }
    }
}

fn spawn(args: &[&str], env: &[(&str, String)]) -> Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
    command
        .args(args)
        .env_remove("BERTH_CONFIG")
        .env("BERTH_LOG", "warn")
        .env("BERTH_LOG_FORMAT", "json")
        .stdout(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    Process(command.spawn().unwrap())
}

async fn wait_ready(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{base} never became ready");
}

async fn post(client: &reqwest::Client, url: &str, body: Value) -> Value {
    let response = client.post(url).json(&body).send().await.unwrap();
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

struct Platform {
    _availability: Process,
    _booking: Process,
    availability: String,
    booking: String,
}

async fn start_platform(db: &TestDb, redis_url: &str) -> Platform {
    let (a_http, a_grpc, b_http) = (free_port(), free_port(), free_port());
    let availability = spawn(
        &["serve", "availability"],
        &[
            ("BERTH_DATABASE_URL", db.url.clone()),
            ("BERTH_REDIS_URL", redis_url.to_owned()),
            ("BERTH_HTTP_ADDR", format!("127.0.0.1:{a_http}")),
            ("BERTH_GRPC_ADDR", format!("127.0.0.1:{a_grpc}")),
        ],
    );
    let a_base = format!("http://127.0.0.1:{a_http}");
    wait_ready(&a_base).await;
    let booking = spawn(
        &["serve", "booking"],
        &[
            ("BERTH_DATABASE_URL", db.url.clone()),
            ("BERTH_HTTP_ADDR", format!("127.0.0.1:{b_http}")),
            (
                "BERTH_SERVICE__AVAILABILITY_GRPC",
                format!("http://127.0.0.1:{a_grpc}"),
            ),
        ],
    );
    let b_base = format!("http://127.0.0.1:{b_http}");
    wait_ready(&b_base).await;
    Platform {
        _availability: availability,
        _booking: booking,
        availability: a_base,
        booking: b_base,
    }
}

/// A resource open all day with a free 30-minute type of `capacity` seats;
/// returns (resource, type, the first `n` slot starts).
async fn bookable(platform: &Platform, capacity: u32, n: usize) -> (String, String, Vec<String>) {
    let client = reqwest::Client::new();
    let base = &platform.availability;
    let resource = post(
        &client,
        &format!("{base}/v1/resources"),
        json!({"name": "Room", "time_zone": "Europe/Berlin"}),
    )
    .await;
    let rid = resource["id"].as_str().unwrap().to_owned();
    let day = json!([{"start": "00:00", "end": "24:00"}]);
    let week = json!({"monday": day, "tuesday": day, "wednesday": day, "thursday": day, "friday": day, "saturday": day, "sunday": day});
    let r = client
        .put(format!("{base}/v1/resources/{rid}/schedule"))
        .json(&week)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "schedule: {}", r.status());
    let kind = post(
        &client,
        &format!("{base}/v1/resources/{rid}/appointment-types"),
        json!({"name": "Session", "duration_minutes": 30, "capacity": capacity, "currency": "EUR", "min_notice_minutes": 60}),
    )
    .await;
    let tid = kind["id"].as_str().unwrap().to_owned();
    let slots: Value = client
        .get(format!("{base}/v1/resources/{rid}/slots?type={tid}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let starts: Vec<String> = slots["slots"]
        .as_array()
        .unwrap()
        .iter()
        .take(n)
        .map(|s| s["start_utc"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(starts.len(), n, "not enough slots: {slots}");
    (rid, tid, starts)
}

/// `CLIENTS` clients race for each slot; returns (successes, conflicts) per slot.
async fn race(platform: &Platform, rid: &str, tid: &str, starts: &[String]) -> Vec<(usize, usize)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();
    let mut results = Vec::new();
    for start in starts {
        let attempts = (0..CLIENTS).map(|i| {
            let client = client.clone();
            let url = format!("{}/v1/bookings", platform.booking);
            let body = json!({"resource_id": rid, "appointment_type_id": tid, "start": start});
            async move {
                let r = client
                    .post(url)
                    .header(
                        "Idempotency-Key",
                        format!("{start}-{i}-{}", uuid::Uuid::new_v4()),
                    )
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let content_type = r
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_owned());
                let body: Value = r.json().await.unwrap_or(Value::Null);
                (status, content_type, body)
            }
        });
        let outcomes = futures::future::join_all(attempts).await;
        let mut won = 0;
        let mut lost = 0;
        for (status, content_type, body) in outcomes {
            match status {
                201 => won += 1,
                409 => {
                    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
                    assert_eq!(body["status"], 409, "{body}");
                    lost += 1;
                }
                other => panic!("unexpected {other}: {body}"),
            }
        }
        results.push((won, lost));
    }
    results
}

fn check_ledger(db: &TestDb) {
    let output = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("check-ledger")
        .env("BERTH_DATABASE_URL", &db.url)
        .env("BERTH_LOG", "warn")
        .env_remove("BERTH_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "ledger checker: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("ledger sound"), "{stdout}");
}

async fn run(redis_url: &str) {
    let db = TestDb::create().await;
    {
        let platform = start_platform(&db, redis_url).await;
        for capacity in [1, 3] {
            let (rid, tid, starts) = bookable(&platform, capacity, 3).await;
            for (won, lost) in race(&platform, &rid, &tid, &starts).await {
                assert_eq!(won, capacity as usize, "capacity {capacity}");
                assert_eq!(lost, CLIENTS - capacity as usize);
            }
        }
        check_ledger(&db);
    }
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_http_bookings_never_exceed_capacity() {
    run(&env_or_fail("REDIS_URL")).await;
}

/// Redis down for the whole run (nothing listens on the port): locks fall
/// back, bookings stay correct.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_http_bookings_stay_correct_without_redis() {
    let dead = format!("redis://127.0.0.1:{}", free_port());
    run(&dead).await;
}
