//! P3: slot queries over HTTP at a fixed 1,000 requests/s (open loop, so a
//! slow response cannot slow the arrival rate and hide latency).
//!
//! Starts `berth serve availability` (release build next to this example)
//! on a fresh PostgreSQL database, creates one resource open every day with
//! a 30-minute type and holds on every fourth slot (up to 100; 59 in the
//! 7-day window), then fires `GET …/slots` (7-day window) at 1,000 req/s
//! for 10 s and reports p50/p99/max.
//!
//! Run: `scripts/stack up && eval "$(scripts/stack env)" &&
//!       cargo build --release -p berth --examples &&
//!       cargo run --release -p berth --example p3_slots_load`

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

const RATE_PER_SECOND: u64 = 1_000;
const SECONDS: u64 = 10;

#[tokio::main]
async fn main() {
    let db = support::db::TestDb::create("p3").await;
    let auth = support::Auth::start().await;
    let staff = auth.bearer("staff-1", "staff");
    let (http, grpc) = (support::free_port(), support::free_port());
    let process = support::spawn(
        &["serve", "availability"],
        &[
            auth.env().as_slice(),
            &[
                ("BERTH_DATABASE_URL", db.url.clone()),
                ("BERTH_HTTP_ADDR", format!("127.0.0.1:{http}")),
                ("BERTH_GRPC_ADDR", format!("127.0.0.1:{grpc}")),
            ],
        ]
        .concat(),
    );
    let base = format!("http://127.0.0.1:{http}");
    support::wait_ready(&base).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let day = json!([{"start": "08:00", "end": "12:00"}, {"start": "13:00", "end": "18:00"}]);
    let week = json!({"monday": day, "tuesday": day, "wednesday": day, "thursday": day, "friday": day, "saturday": day, "sunday": day});
    let (rid, tid) = support::create_resource(
        &client,
        &base,
        &staff,
        json!({"name": "p3", "time_zone": "Europe/Berlin"}),
        &week,
        json!({"name": "s", "duration_minutes": 30, "interval_minutes": 15, "currency": "EUR", "min_notice_minutes": 60}),
    )
    .await;
    let url = format!("{base}/v1/resources/{rid}/slots?type={tid}");

    // Holds through the ledger (gRPC) on every fourth slot, at most 100.
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{grpc}"))
        .unwrap()
        .connect_lazy();
    let deps = berth_runtime::resilience::Dependencies::unobserved(
        Default::default(),
        std::sync::Arc::new(berth_runtime::resilience::clock::SystemClock),
    );
    let ledger = berth_availability::GrpcLedger::new(berth_runtime::grpc::grpc_channel(
        channel,
        deps.get("availability"),
    ));
    let slots: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
    let mut claimed = 0;
    for s in slots["slots"]
        .as_array()
        .unwrap()
        .iter()
        .step_by(4)
        .take(100)
    {
        let start = s["start_utc"].as_str().unwrap().parse().unwrap();
        let request = berth_ledger::ClaimRequest {
            resource_id: rid.parse().unwrap(),
            appointment_type_id: tid.parse().unwrap(),
            start,
            seats: 1,
            hold_for: Some(Duration::from_secs(3600)),
            owner: format!("p3-{claimed}"),
        };
        berth_ledger::Ledger::claim(&ledger, request).await.unwrap();
        claimed += 1;
    }

    // Warm-up, then the open loop.
    for _ in 0..200 {
        let _ = client.get(&url).send().await.unwrap().bytes().await;
    }
    let total = RATE_PER_SECOND * SECONDS;
    let interval = Duration::from_micros(1_000_000 / RATE_PER_SECOND);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = started + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let r = client.get(&url).send().await.unwrap();
            let ok = r.status() == 200;
            let _ = r.bytes().await;
            (ok, t0.elapsed())
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut failures = 0;
    for t in tasks {
        let (ok, d) = t.await.unwrap();
        if !ok {
            failures += 1;
        }
        latencies.push(d);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
    };
    println!(
        "P3 slots over HTTP: {total} requests at {RATE_PER_SECOND}/s ({claimed} claims on the resource, 7-day window)"
    );
    println!(
        "  achieved {:.0} req/s, non-200 {failures}",
        total as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );

    drop(process);
    tokio::time::sleep(Duration::from_millis(300)).await;
    db.drop_now().await;
}
