//! The platform as Kubernetes runs it: `berth serve availability` and
//! `berth serve booking` as separate processes, booking calling the ledger
//! over gRPC, both on the real PostgreSQL (and Redis) of `scripts/stack`.
//! 64 concurrent HTTP clients race for the same slots; exactly `capacity`
//! win, every other request gets 409 problem+json, and the ledger checker
//! finds no overlap.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../examples/support/mod.rs"]
mod support;

use std::process::Command;

use serde_json::{Value, json};
use support::db::TestDb;
use support::{Auth, Process, free_port, spawn, wait_ready};

const CLIENTS: usize = 64;
const STAFF: &str = "staff-1";

fn env_or_fail(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run `scripts/stack up && eval \"$(scripts/stack env)\"` first")
    })
}

struct Platform {
    _availability: Process,
    _booking: Process,
    auth: Auth,
    availability: String,
    booking: String,
}

async fn start_platform(db: &TestDb, redis_url: &str) -> Platform {
    let auth = Auth::start().await;
    let (a_http, a_grpc) = (free_port(), free_port());
    let (b_http, b_grpc) = (free_port(), free_port());
    let availability = spawn(
        &["serve", "availability"],
        &[
            auth.env().as_slice(),
            &[
                ("BERTH_DATABASE_URL", db.url.clone()),
                ("BERTH_REDIS_URL", redis_url.to_owned()),
                ("BERTH_HTTP_ADDR", format!("127.0.0.1:{a_http}")),
                ("BERTH_GRPC_ADDR", format!("127.0.0.1:{a_grpc}")),
            ],
        ]
        .concat(),
    );
    let a_base = format!("http://127.0.0.1:{a_http}");
    wait_ready(&a_base).await;
    let booking = spawn(
        &["serve", "booking"],
        &[
            auth.env().as_slice(),
            &[
                ("BERTH_DATABASE_URL", db.url.clone()),
                ("BERTH_HTTP_ADDR", format!("127.0.0.1:{b_http}")),
                ("BERTH_GRPC_ADDR", format!("127.0.0.1:{b_grpc}")),
                (
                    "BERTH_SERVICE__AVAILABILITY_GRPC",
                    format!("http://127.0.0.1:{a_grpc}"),
                ),
            ],
        ]
        .concat(),
    );
    let b_base = format!("http://127.0.0.1:{b_http}");
    wait_ready(&b_base).await;
    Platform {
        _availability: availability,
        _booking: booking,
        auth,
        availability: a_base,
        booking: b_base,
    }
}

/// A resource open all day with a free 30-minute type of `capacity` seats;
/// returns (resource, type, the first `n` slot starts).
async fn bookable(platform: &Platform, capacity: u32, n: usize) -> (String, String, Vec<String>) {
    let client = reqwest::Client::new();
    let base = &platform.availability;
    let staff = platform.auth.bearer(STAFF, "staff");
    let day = json!([{"start": "00:00", "end": "24:00"}]);
    let week = json!({"monday": day, "tuesday": day, "wednesday": day, "thursday": day, "friday": day, "saturday": day, "sunday": day});
    let (rid, tid) = support::create_resource(
        &client,
        base,
        &staff,
        json!({"name": "Room", "time_zone": "Europe/Berlin"}),
        &week,
        json!({"name": "Session", "duration_minutes": 30, "capacity": capacity, "currency": "EUR", "min_notice_minutes": 60}),
    )
    .await;
    let slots = support::get_json(
        &client,
        &format!("{base}/v1/resources/{rid}/slots?type={tid}"),
    )
    .await;
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
            let auth = platform.auth.bearer(&format!("customer-{i}"), "customer");
            async move {
                let r = client
                    .post(url)
                    .header("authorization", auth)
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

/// Across processes, a customer's booking is invisible to other customers
/// (404, as if it did not exist) and visible to the resource's staff.
async fn bookings_stay_private(platform: &Platform, rid: &str, tid: &str, start: &str) {
    let client = reqwest::Client::new();
    let base = &platform.booking;
    let alice = platform.auth.bearer("alice", "customer");
    let mallory = platform.auth.bearer("mallory", "customer");
    let anonymous = client
        .post(format!("{base}/v1/bookings"))
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(&json!({"resource_id": rid, "appointment_type_id": tid, "start": start}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let booking = client
        .post(format!("{base}/v1/bookings"))
        .header("authorization", &alice)
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(&json!({"resource_id": rid, "appointment_type_id": tid, "start": start}))
        .send()
        .await
        .unwrap();
    assert_eq!(booking.status(), 201);
    let id = booking.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let status_for = |auth: String| {
        let client = client.clone();
        let url = format!("{base}/v1/bookings/{id}");
        async move {
            let r = client.get(url).header("authorization", auth).send().await;
            r.unwrap().status().as_u16()
        }
    };
    assert_eq!(status_for(alice.clone()).await, 200);
    assert_eq!(status_for(platform.auth.bearer(STAFF, "staff")).await, 200);
    assert_eq!(status_for(mallory.clone()).await, 404);
    let cancel = client
        .post(format!("{base}/v1/bookings/{id}/cancel"))
        .header("authorization", &mallory)
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 404);
    let after: Value = client
        .get(format!("{base}/v1/bookings/{id}"))
        .header("authorization", &alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(after["status"], "cancelled", "{after}");
}

async fn run(redis_url: &str) {
    let db = TestDb::create("platform_test").await;
    {
        let platform = start_platform(&db, redis_url).await;
        for capacity in [1, 3] {
            let (rid, tid, mut starts) = bookable(&platform, capacity, 4).await;
            let spare = starts.pop().unwrap();
            for (won, lost) in race(&platform, &rid, &tid, &starts).await {
                assert_eq!(won, capacity as usize, "capacity {capacity}");
                assert_eq!(lost, CLIENTS - capacity as usize);
            }
            if capacity == 1 {
                bookings_stay_private(&platform, &rid, &tid, &spare).await;
            }
        }
        check_ledger(&db);
    }
    db.drop_now().await;
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
