//! P1: booking throughput over HTTP, end to end, against the real stack.
//!
//! Starts `berth serve availability` and `berth serve booking` (release
//! build next to this example) on a fresh PostgreSQL database and creates
//! 100 resources. Then, in each of several rounds, 64 concurrent clients
//! book 1,000 slots (10 per resource) with `POST /v1/bookings` (each its own
//! `Idempotency-Key`, shuffled order). Each round's slots lie on days of
//! their own, three days apart, so every round meets the same ledger a
//! single run would (no other round's claims within reach) and nothing has
//! to be undone between rounds. The ledger checker then counts overlaps in
//! everything booked. Reports bookings/s over the rounds (and per round),
//! latency percentiles, where the CPU went, and the ratio to the physical
//! limit: `pgbench` with the ledger's insert (one block per transaction
//! into a table created `LIKE` the ledger's `blocks`, exclusion constraint
//! included), on the quiet server after the rounds. The bare
//! `(int, tstzrange)` insert used as the limit before 2026-12-01 runs in
//! alternating bursts with it, for comparison.
//!
//! Placements: every process on every core ("shared"), and PostgreSQL on
//! its own half of the cores with the services, Redis, the load generator
//! and `pgbench`'s client on the other ("split", `support::placement`).
//! Timed rounds and `pgbench` bursts alternate between the two. The split
//! gives the database the same cores whether the booking path or `pgbench`
//! drives it, as a deployment keeps services off the database's nodes;
//! `ratio:` is that placement's, and the shared-cores ratio is printed
//! above it.
//!
//! Settings (environment): `P1_ROUNDS` (default 5, timed),
//! `P1_WARMUP_ROUNDS` (default 1; booked and checked like the others, but
//! neither timed nor metered),
//! `P1_ATTEMPTS_PER_SLOT` (default 1; 2 makes every slot contested, so half
//! the requests must get 409), `P1_SLOTS_PER_RESOURCE` (default 10),
//! `P1_REPLICAS` (default 1; replicas of each service, every booking
//! replica routing claims by resource over all availability replicas,
//! clients spread over the booking replicas),
//! `P1_PLACEMENT` (`both`, the default; `shared` or `split` for one),
//! `P1_NO_PGBENCH` (skip the physical limit, e.g. while profiling).
//!
//! Run: `scripts/stack up && eval "$(scripts/stack env)" &&
//!       cargo build --release -p berth --bins --examples &&
//!       $CARGO_TARGET_DIR/release/examples/p1_booking_load`

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod limit;
#[path = "../support/mod.rs"]
mod support;
mod tally;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use limit::{BARE, LEDGER, PhysicalLimit};
use rand::seq::SliceRandom;
use serde_json::json;
use support::Procs;
use support::load::{Clients, get, post};
use support::placement::Placement;
use tally::Tally;

const CLIENTS: usize = 64;
const RESOURCES: usize = 100;
/// Each `pgbench` script runs this many times for `PGBENCH_SECONDS`.
const PGBENCH_BURSTS: usize = 3;
const PGBENCH_SECONDS: u32 = 5;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the machine's cheapest request costs: the same clients and the
/// same booking process answering `GET /livez` (no auth, no database, no
/// gRPC). No booking can go faster than this.
async fn hop_floor(clients: &mut Clients) -> f64 {
    const REQUESTS: usize = 20_000;
    let started = Instant::now();
    let answers = clients.drain(REQUESTS, |_, _| get("/livez")).await;
    let rate = REQUESTS as f64 / started.elapsed().as_secs_f64();
    assert!(answers.iter().all(|a| a.status == 200));
    rate
}

async fn metrics(client: &reqwest::Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Hits and misses of one in-memory cache, from `/metrics` text.
fn cache_lookups(text: &str, cache: &str) -> (f64, f64) {
    let count = |result: &str| {
        let prefix = format!("berth_cache_lookups_total{{cache=\"{cache}\",result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    (count("hit"), count("miss"))
}

/// Mean items per batch and mean time per batch of each group-commit
/// batcher, from `/metrics` text.
fn batch_sizes(text: &str) -> Vec<String> {
    let value = |line: &str| line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
    let mut sums = std::collections::BTreeMap::new();
    for line in text.lines() {
        for (metric, slot) in [
            ("berth_batch_size_sum", 0),
            ("berth_batch_size_count", 1),
            ("berth_batch_duration_seconds_sum", 2),
        ] {
            if let Some(rest) = line.strip_prefix(&format!("{metric}{{batch=\""))
                && let (Some(name), Some(v)) = (rest.split('"').next(), value(line))
            {
                sums.entry(name.to_owned()).or_insert([0.0; 3])[slot] = v;
            }
        }
    }
    sums.into_iter()
        .map(|(name, [items, count, seconds])| {
            let count = count.max(1.0);
            format!(
                "{name} {:.1} items in {:.1} ms ({count} batches)",
                items / count,
                seconds * 1e3 / count
            )
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let rounds = setting("P1_ROUNDS", 5).max(1);
    let warmup = setting("P1_WARMUP_ROUNDS", 1);
    let attempts = setting("P1_ATTEMPTS_PER_SLOT", 1).max(1);
    let slots_per_resource = setting("P1_SLOTS_PER_RESOURCE", 10);
    let replicas = setting("P1_REPLICAS", 1).max(1);
    let wanted = std::env::var("P1_PLACEMENT").unwrap_or_else(|_| "both".to_owned());
    assert!(
        ["both", "shared", "split"].contains(&wanted.as_str()),
        "P1_PLACEMENT must be both, shared or split, not {wanted:?}"
    );
    let redis =
        std::env::var("REDIS_URL").expect("REDIS_URL: run scripts/stack up and eval its env");
    let db = support::db::TestDb::create("p1").await;
    let db_url = db.url.clone();
    let name = db.name.clone();
    let auth = support::Auth::start().await;

    // Replicas: every booking replica knows every availability replica's
    // gRPC address (as a headless Service resolves to every pod) and sends
    // each resource's claims to one of them; clients are spread over the
    // booking replicas.
    let mut availability_processes = Vec::new();
    let mut booking_processes = Vec::new();
    let (mut availability_urls, mut grpc_urls, mut booking_urls) =
        (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..replicas {
        let (a_http, a_grpc) = (support::free_port(), support::free_port());
        availability_processes.push(support::spawn(
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
        ));
        let a = format!("http://127.0.0.1:{a_http}");
        support::wait_ready(&a).await;
        availability_urls.push(a);
        grpc_urls.push(format!("http://127.0.0.1:{a_grpc}"));
    }
    for _ in 0..replicas {
        let (b_http, b_grpc) = (support::free_port(), support::free_port());
        booking_processes.push(support::spawn(
            &["serve", "booking"],
            &[
                auth.env().as_slice(),
                &[
                    ("BERTH_DATABASE_URL", db_url.clone()),
                    ("BERTH_REDIS_URL", redis.clone()),
                    ("BERTH_HTTP_ADDR", format!("127.0.0.1:{b_http}")),
                    ("BERTH_GRPC_ADDR", format!("127.0.0.1:{b_grpc}")),
                    ("BERTH_SERVICE__AVAILABILITY_GRPC", grpc_urls.join(",")),
                ],
            ]
            .concat(),
        ));
        let b = format!("http://127.0.0.1:{b_http}");
        support::wait_ready(&b).await;
        booking_urls.push(b);
    }
    let a = availability_urls[0].clone();

    // Setup (not timed): 100 resources × 10 slots per round.
    let client = reqwest::Client::new();
    let day = json!([{"start": "00:00", "end": "24:00"}]);
    let week = json!({"monday": day, "tuesday": day, "wednesday": day, "thursday": day, "friday": day, "saturday": day, "sunday": day});
    let staff = auth.bearer("staff-1", "staff");
    let pinning = match wanted.as_str() {
        "shared" => Err("P1_PLACEMENT=shared".to_owned()),
        _ => {
            let services: Vec<u32> = booking_processes
                .iter()
                .chain(&availability_processes)
                .map(|p| p.0.id())
                .collect();
            support::placement::Pinning::detect(&services).map(Arc::new)
        }
    };
    if let Ok(pinning) = &pinning {
        pinning.restore_on_interrupt();
    }
    let placements: Vec<Placement> = match (wanted.as_str(), &pinning) {
        ("split", Ok(_)) => vec![Placement::Split],
        ("both", Ok(_)) => vec![Placement::Shared, Placement::Split],
        _ => vec![Placement::Shared],
    };
    let timed_rounds = rounds * placements.len();
    // Every round's day must lie within the appointment type's horizon.
    let horizon_minutes = (3 * (warmup + timed_rounds) + 4) * 24 * 60;
    let mut slots: Vec<Vec<Bytes>> = vec![Vec::new(); warmup + timed_rounds];
    for i in 0..RESOURCES {
        let (rid, tid) = support::create_resource(
            &client,
            &a,
            &staff,
            json!({"name": format!("room-{i}"), "time_zone": "UTC"}),
            &week,
            json!({"name": "s", "duration_minutes": 30, "currency": "EUR",
                "min_notice_minutes": 60, "horizon_minutes": horizon_minutes}),
        )
        .await;
        for (round, batch) in slots.iter_mut().enumerate() {
            // Whole days apart from other rounds, and from now (notice).
            let day = (chrono::Utc::now() + chrono::TimeDelta::days(2 + 3 * round as i64))
                .format("%Y-%m-%dT00:00:00Z")
                .to_string();
            let url = format!("{a}/v1/resources/{rid}/slots?type={tid}&from={day}");
            let offered = support::get_json(&client, &url).await;
            for s in offered["slots"]
                .as_array()
                .unwrap()
                .iter()
                .take(slots_per_resource)
            {
                let body = json!({"resource_id": rid, "appointment_type_id": tid, "start": s["start_utc"]});
                batch.push(Bytes::from(serde_json::to_vec(&body).unwrap()));
            }
        }
    }
    let slot_count = RESOURCES * slots_per_resource;
    assert!(slots.iter().all(|round| round.len() == slot_count));

    let customers: Arc<Vec<String>> = Arc::new(
        (0..CLIENTS)
            .map(|c| auth.bearer(&format!("customer-{c}"), "customer"))
            .collect(),
    );
    let booking_addrs: Vec<&str> = booking_urls
        .iter()
        .map(|u| u.trim_start_matches("http://"))
        .collect();
    let mut clients = Clients::spread(&booking_addrs, CLIENTS);
    clients.connect().await;
    let meter = || {
        // Replicas share a label; their CPU is summed below.
        let mut lines = vec![
            ("postgres", Procs::Named("postgres")),
            ("redis-server", Procs::Named("redis-server")),
        ];
        lines.extend(
            booking_processes
                .iter()
                .map(|p| ("booking", Procs::Pid(p.0.id()))),
        );
        lines.extend(
            availability_processes
                .iter()
                .map(|p| ("availability", Procs::Pid(p.0.id()))),
        );
        lines.push(("load generator", Procs::Pid(std::process::id())));
        support::CpuMeter::start(lines)
    };

    let mut tallies: Vec<Tally> = placements.iter().map(|_| Tally::default()).collect();
    for (round, round_slots) in slots.iter().enumerate() {
        // Timed rounds alternate placements, so each meets the same drift.
        let slot = round.saturating_sub(warmup) % placements.len();
        let placement = if round < warmup {
            Placement::Shared
        } else {
            placements[slot]
        };
        if let Ok(pinning) = &pinning {
            pinning.apply(placement);
        }
        let mut work: Vec<Bytes> = round_slots
            .iter()
            .flat_map(|s| std::iter::repeat_n(s.clone(), attempts))
            .collect();
        work.shuffle(&mut rand::rng());
        let work = Arc::new(work);
        let (jobs, tokens) = (work.len(), customers.clone());
        let round_cpu = meter();
        let machine_before = support::MachineTicks::read();
        let started = Instant::now();
        let answers = clients
            .drain(jobs, move |c, job| {
                let key = uuid::Uuid::new_v4().to_string();
                post(
                    "/v1/bookings",
                    &[
                        ("authorization", tokens[c].as_str()),
                        ("idempotency-key", key.as_str()),
                    ],
                    work[job].clone(),
                )
            })
            .await;
        let elapsed = started.elapsed();
        let cpu_used = round_cpu.stop();
        let won = answers.iter().filter(|a| a.status == 201).count();
        assert_eq!(won, slot_count, "round {round}: every slot booked once");
        if round < warmup {
            // Start-up costs (first statements on each connection, empty
            // caches, TCP windows) are not the throughput being measured.
            continue;
        }
        tallies[slot].add(&answers, elapsed, cpu_used, machine_before);
    }
    if let Ok(pinning) = &pinning {
        pinning.apply(Placement::Shared);
    }

    let floor = hop_floor(&mut clients).await;
    let mut batches = Vec::new();
    for url in &booking_urls {
        batches.extend(batch_sizes(&metrics(&client, url).await));
    }
    let (mut hits, mut misses) = (0.0, 0.0);
    for url in &availability_urls {
        let text = metrics(&client, url).await;
        batches.extend(batch_sizes(&text));
        let (h, m) = cache_lookups(&text, "known_ledgers");
        (hits, misses) = (hits + h, misses + m);
    }

    let check = Command::new(support::berth_binary())
        .arg("check-ledger")
        .env("BERTH_DATABASE_URL", &db_url)
        .env("BERTH_LOG", "warn")
        .env_remove("BERTH_CONFIG")
        .output()
        .unwrap();
    let check_out = String::from_utf8_lossy(&check.stdout);
    // Logs go to stderr; stdout is one line per problem, or the all-clear.
    let problems: Vec<&str> = check_out
        .lines()
        .filter(|l| !l.starts_with("ledger sound"))
        .collect();
    assert!(
        check.status.success() || !problems.is_empty(),
        "ledger checker failed: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let overlaps = if check.status.success() {
        0
    } else {
        problems.len()
    };

    println!(
        "P1 booking over HTTP: {CLIENTS} clients, {RESOURCES} resources x {slots_per_resource} slots, \
         {attempts} attempt(s) per slot, {rounds} rounds per placement after {warmup} warm-up, \
         {replicas} replica(s) of each service"
    );
    if let Err(why) = &pinning {
        println!("  split placement not measured: {why}");
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    for (placement, tally) in placements.iter().zip(&mut tallies) {
        println!("  [{}]", placement.describe(pinning.as_deref().ok()));
        let database_cores = match (placement, &pinning) {
            (Placement::Split, Ok(p)) => p.database_cores,
            _ => cores,
        };
        tally.print(slot_count * rounds, cores, database_cores);
    }
    println!("  ledger checker: double bookings {overlaps}");
    for problem in &problems {
        println!("    {problem}");
    }
    println!("  hop floor: GET /livez on the booking process, {CLIENTS} clients: {floor:.0} req/s");
    println!(
        "  group commit, mean items per batch (warm-up included): {}",
        batches.join(", ")
    );
    println!(
        "  claims decided on a known ledger (warm-up included): {hits} of {} ({:.0} %)",
        hits + misses,
        100.0 * hits / (hits + misses).max(1.0)
    );

    if std::env::var_os("P1_NO_PGBENCH").is_some() {
        // For profiling the booking path alone; the database stays for a look.
        println!("  database kept: {name}");
        std::mem::forget(db);
        return;
    }
    // Rounds run back to back (work a round leaves behind, such as the
    // outbox relay or vacuuming, lands in the next one); the limit is
    // measured after them on a quiet server, in short bursts that
    // alternate placements and scripts so all meet the same machine.
    let mut limit = PhysicalLimit::prepare(&db_url, &name, placements.len()).await;
    for _ in 0..PGBENCH_BURSTS {
        for (slot, placement) in placements.iter().enumerate() {
            if let Ok(pinning) = &pinning {
                pinning.apply(*placement);
            }
            limit.burst(slot);
        }
    }
    if let Ok(pinning) = &pinning {
        pinning.apply(Placement::Shared);
    }
    let mut ratios = Vec::new();
    for (slot, placement) in placements.iter().enumerate() {
        let (tps, bare_tps) = (limit.mean(slot, LEDGER), limit.mean(slot, BARE));
        let bursts: Vec<String> = limit.runs[slot].tps[LEDGER]
            .iter()
            .map(|t| format!("{t:.0}"))
            .collect();
        let bookings_per_s = tallies[slot].bookings_per_s();
        println!(
            "  pgbench [{}]: ledger insert (the blocks table's DDL, {CLIENTS} clients, \
             {PGBENCH_BURSTS} x {PGBENCH_SECONDS}s) {tps:.0} tps (bursts: {}); \
             bare insert (int resource, range only; the limit before 2026-12-01) {bare_tps:.0} tps, \
             ratio to bare {:.2}; machine: {}",
            placement.describe(pinning.as_deref().ok()),
            bursts.join(", "),
            bookings_per_s / bare_tps,
            limit.runs[slot].machine.describe()
        );
        if *placement == Placement::Shared {
            println!(
                "  CPU budget per booking at ratio 0.60 with every process on every core: {:.3} ms",
                cores as f64 * 1e3 / (0.6 * tps)
            );
        }
        ratios.push((*placement, bookings_per_s / tps));
    }
    // The headline is the ratio at equal database capacity when it could
    // be measured; the shared-cores ratio is printed beside it either way.
    for (placement, ratio) in &ratios {
        if *placement == Placement::Shared {
            println!("ratio with every process on every core: {ratio:.2}");
        }
    }
    let headline = ratios
        .iter()
        .find(|(p, _)| *p == Placement::Split)
        .or(ratios.first())
        .map_or(0.0, |(_, r)| *r);
    println!("ratio: {headline:.2}");

    drop(booking_processes);
    drop(availability_processes);
    tokio::time::sleep(Duration::from_millis(300)).await;
    if overlaps > 0 {
        // A double booking fails the benchmark; keep the evidence.
        println!("double bookings found; database kept for inspection: {name}");
        std::mem::forget(db);
        std::process::exit(1);
    }
    db.drop_now().await;
}
