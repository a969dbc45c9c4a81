//! P1: booking throughput over HTTP, end to end, against the real stack.
//!
//! Starts `berth serve availability` and `berth serve booking` (release
//! build next to this example) on a fresh PostgreSQL database, creates 100
//! resources with 10 slots each, then 64 concurrent clients submit
//! `POST /v1/bookings` for every slot twice in shuffled order (so half the
//! requests lose a race and must get 409). Reports bookings/s, latency
//! percentiles and the ledger checker's overlap count, then runs `pgbench`
//! with the bare ledger insert under the same exclusion constraint as the
//! physical limit, and prints the ratio.
//!
//! Run: `scripts/stack up && eval "$(scripts/stack env)" &&
//!       cargo build --release -p berth --examples &&
//!       cargo run --release -p berth --example p1_booking_load`

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use serde_json::{Value, json};
use support::Procs;

const CLIENTS: usize = 64;
const RESOURCES: usize = 100;
const SLOTS_PER_RESOURCE: usize = 10;
const ATTEMPTS_PER_SLOT: usize = 2;
const PGBENCH_SECONDS: u32 = 15;

/// `CLIENTS` concurrent clients take jobs `0..jobs` in turn, each sending
/// the request `request(client, job)` builds; every response's status and
/// latency, in no particular order.
async fn drain<F>(jobs: usize, request: F) -> Vec<(u16, Duration)>
where
    F: Fn(usize, usize) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let (next, request) = (Arc::new(AtomicUsize::new(0)), Arc::new(request));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (next, request) = (next.clone(), request.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                loop {
                    let job = next.fetch_add(1, Ordering::Relaxed);
                    if job >= jobs {
                        break seen;
                    }
                    let t0 = Instant::now();
                    let r = request(c, job).send().await.unwrap();
                    let status = r.status().as_u16();
                    let _ = r.bytes().await;
                    seen.push((status, t0.elapsed()));
                }
            })
        })
        .collect();
    let mut results = Vec::new();
    for w in workers {
        results.extend(w.await.unwrap());
    }
    results
}

/// What the machine's cheapest request costs: the same client and the same
/// booking process answering `GET /livez` (no auth, no database, no gRPC).
/// No booking can go faster than this, so it bounds the ratio from above.
async fn hop_floor(client: &reqwest::Client, base: &str) -> f64 {
    const REQUESTS: usize = 20_000;
    let (client, url) = (client.clone(), format!("{base}/livez"));
    let started = Instant::now();
    let results = drain(REQUESTS, move |_, _| client.get(&url)).await;
    let rate = REQUESTS as f64 / started.elapsed().as_secs_f64();
    assert!(results.iter().all(|(status, _)| *status == 200));
    rate
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() {
    let redis =
        std::env::var("REDIS_URL").expect("REDIS_URL: run scripts/stack up and eval its env");
    let db = support::db::TestDb::create("p1").await;
    let db_url = db.url.clone();
    let name = db.name.clone();
    let auth = support::Auth::start().await;

    let (a_http, a_grpc, b_http) = (
        support::free_port(),
        support::free_port(),
        support::free_port(),
    );
    let availability_process = support::spawn(
        &["serve", "availability"],
        &[
            auth.env().as_slice(),
            &[
                ("BERTH_DATABASE_URL", db_url.clone()),
                ("BERTH_REDIS_URL", redis.clone()),
                ("BERTH_HTTP_ADDR", format!("127.0.0.1:{a_http}")),
                ("BERTH_GRPC_ADDR", format!("127.0.0.1:{a_grpc}")),
            ],
        ]
        .concat(),
    );
    let a = format!("http://127.0.0.1:{a_http}");
    support::wait_ready(&a).await;
    let booking_process = support::spawn(
        &["serve", "booking"],
        &[
            auth.env().as_slice(),
            &[
                ("BERTH_DATABASE_URL", db_url.clone()),
                ("BERTH_REDIS_URL", redis.clone()),
                ("BERTH_HTTP_ADDR", format!("127.0.0.1:{b_http}")),
                (
                    "BERTH_SERVICE__AVAILABILITY_GRPC",
                    format!("http://127.0.0.1:{a_grpc}"),
                ),
            ],
        ]
        .concat(),
    );
    let b = format!("http://127.0.0.1:{b_http}");
    support::wait_ready(&b).await;

    // Setup: 100 resources × 10 slots (more with P1_SLOTS_PER_RESOURCE, for
    // profiling a longer run; the recorded figures use the default).
    let slots_per_resource: usize = std::env::var("P1_SLOTS_PER_RESOURCE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SLOTS_PER_RESOURCE);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();
    let day = json!([{"start": "00:00", "end": "24:00"}]);
    let week = json!({"monday": day, "tuesday": day, "wednesday": day, "thursday": day, "friday": day, "saturday": day, "sunday": day});
    let staff = auth.bearer("staff-1", "staff");
    let mut work = Vec::new();
    for i in 0..RESOURCES {
        let r: Value = client
            .post(format!("{a}/v1/resources"))
            .header("authorization", &staff)
            .json(&json!({"name": format!("room-{i}"), "time_zone": "UTC"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rid = r["id"].as_str().unwrap().to_owned();
        client
            .put(format!("{a}/v1/resources/{rid}/schedule"))
            .header("authorization", &staff)
            .json(&week)
            .send()
            .await
            .unwrap();
        let t: Value = client
            .post(format!("{a}/v1/resources/{rid}/appointment-types"))
            .header("authorization", &staff)
            .json(&json!({"name": "s", "duration_minutes": 30, "currency": "EUR", "min_notice_minutes": 60}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let tid = t["id"].as_str().unwrap().to_owned();
        let slots: Value = client
            .get(format!("{a}/v1/resources/{rid}/slots?type={tid}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for s in slots["slots"]
            .as_array()
            .unwrap()
            .iter()
            .take(slots_per_resource)
        {
            for _ in 0..ATTEMPTS_PER_SLOT {
                work.push(json!({"resource_id": rid, "appointment_type_id": tid, "start": s["start_utc"]}));
            }
        }
    }
    assert_eq!(
        work.len(),
        RESOURCES * slots_per_resource * ATTEMPTS_PER_SLOT
    );
    work.shuffle(&mut rand::rng());

    // Load: 64 clients drain the shared work list.
    let customers: Vec<String> = (0..CLIENTS)
        .map(|c| auth.bearer(&format!("customer-{c}"), "customer"))
        .collect();
    let (load_client, url, jobs) = (client.clone(), format!("{b}/v1/bookings"), work.len());
    let cpu = support::CpuMeter::start(vec![
        ("postgres", Procs::Named("postgres")),
        ("redis-server", Procs::Named("redis-server")),
        ("booking", Procs::Pid(booking_process.0.id())),
        ("availability", Procs::Pid(availability_process.0.id())),
        ("load generator", Procs::Pid(std::process::id())),
    ]);
    let started = Instant::now();
    let results = drain(jobs, move |c, job| {
        load_client
            .post(&url)
            .header("authorization", &customers[c])
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(&work[job])
    })
    .await;
    let elapsed = started.elapsed();
    let cpu = cpu.stop();
    let booked = results.iter().filter(|(s, _)| *s == 201).count();
    let conflicts = results.iter().filter(|(s, _)| *s == 409).count();
    let errors = results.len() - booked - conflicts;
    let mut latencies: Vec<Duration> = results.iter().map(|(_, d)| *d).collect();
    latencies.sort();
    let bookings_per_s = booked as f64 / elapsed.as_secs_f64();
    let requests_per_s = results.len() as f64 / elapsed.as_secs_f64();

    let floor = hop_floor(&client, &b).await;

    let check = Command::new(support::berth_binary())
        .arg("check-ledger")
        .env("BERTH_DATABASE_URL", &db_url)
        .env("BERTH_LOG", "warn")
        .env_remove("BERTH_CONFIG")
        .output()
        .unwrap();
    let check_out = String::from_utf8_lossy(&check.stdout);
    let overlaps = check_out
        .lines()
        .filter(|l| !l.starts_with("ledger sound"))
        .count();

    println!(
        "P1 booking over HTTP: {CLIENTS} clients, {RESOURCES} resources x {slots_per_resource} slots, {ATTEMPTS_PER_SLOT} attempts per slot"
    );
    println!(
        "  requests {} in {:.2}s = {requests_per_s:.0} req/s",
        results.len(),
        elapsed.as_secs_f64()
    );
    println!(
        "  booked {booked} (expected {}), conflicts 409 {conflicts}, other {errors}",
        RESOURCES * slots_per_resource
    );
    println!("  bookings/s {bookings_per_s:.0}");
    println!(
        "  latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    println!("  ledger checker: double bookings {overlaps}");
    let cpu_total: f64 = cpu.iter().map(|(_, s)| s).sum();
    let per_booking = |s: f64| s * 1e3 / booked.max(1) as f64;
    let parts: Vec<String> = cpu
        .iter()
        .map(|(label, s)| format!("{label} {:.2}", per_booking(*s)))
        .collect();
    println!(
        "  CPU per booking (ms, incl. its 409 twin): {}; total {:.2} ({:.2} of {} cores busy)",
        parts.join(", "),
        per_booking(cpu_total),
        cpu_total / elapsed.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("  hop floor: GET /livez on the booking process, {CLIENTS} clients: {floor:.0} req/s");

    // The physical limit: the bare ledger insert under an exclusion
    // constraint, same server, same client count.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db_url)
        .await
        .unwrap();
    sqlx::query("CREATE EXTENSION IF NOT EXISTS btree_gist")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "CREATE TABLE pgbench_ledger (resource int NOT NULL, period tstzrange NOT NULL, \
         EXCLUDE USING gist (resource WITH =, period WITH &&))",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let script = std::env::temp_dir().join(format!("{name}.sql"));
    std::fs::write(
        &script,
        "\\set r random(1, 100)\n\\set s random(0, 1000000)\n\
         INSERT INTO pgbench_ledger VALUES (:r, tstzrange(timestamptz '2030-01-01' + :s * interval '30 minutes', \
         timestamptz '2030-01-01' + (:s + 1) * interval '30 minutes')) ON CONFLICT DO NOTHING;\n",
    )
    .unwrap();
    let pgbench = Command::new("pgbench")
        .args([
            "-n",
            "-c",
            &CLIENTS.to_string(),
            "-j",
            "2",
            "-T",
            &PGBENCH_SECONDS.to_string(),
            "-f",
        ])
        .arg(&script)
        .arg(&db_url)
        .output()
        .expect("pgbench (Debian package postgresql-client)");
    let out = String::from_utf8_lossy(&pgbench.stdout);
    let tps = out
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| {
            panic!(
                "pgbench output: {out}{}",
                String::from_utf8_lossy(&pgbench.stderr)
            )
        });
    println!("  pgbench ledger insert ({CLIENTS} clients, {PGBENCH_SECONDS}s): {tps:.0} tps");
    println!(
        "  CPU budget per booking at ratio 0.60 on these cores: {:.3} ms",
        std::thread::available_parallelism().map_or(0, |n| n.get()) as f64 * 1e3 / (0.6 * tps)
    );
    println!("ratio: {:.2}", bookings_per_s / tps);

    drop(conn);
    let _ = std::fs::remove_file(&script);
    drop(booking_process);
    drop(availability_process);
    tokio::time::sleep(Duration::from_millis(300)).await;
    db.drop_now().await;
}
