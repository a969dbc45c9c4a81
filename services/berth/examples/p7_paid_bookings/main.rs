//! P7: paid bookings end to end over HTTP, against the Stripe-API emulator.
//!
//! Starts `berth serve availability`, `booking` and `payment` and
//! `berth-stripe-emulator` (release builds next to this example) as
//! separate processes on a fresh PostgreSQL database and a Redis database
//! of their own, and creates 100 resources with a priced and a free type.
//! 64 clients then pay for `P7_BOOKINGS` bookings: each holds a slot
//! (`POST /v1/bookings` on the priced type, `pending_payment`), starts
//! paying (`POST /v1/payments`), and confirms the intent at the emulator
//! with a test card, as Stripe.js would; the emulator's signed webhook
//! wakes the payment saga, which secures the time, captures and confirms
//! the booking. The clients do not wait for that: the round ends when the
//! database shows every payment `paid`.
//!
//! Reports paid bookings/s from the first hold to the last `paid`, the
//! server-side time from the authorisation webhook's receipt
//! (`stripe_events.received_us` of `payment_intent.amount_capturable_updated`)
//! to the `paid` step (`payment_steps.at_us`), `berth check-money`'s
//! findings, each process's peak RSS (`VmHWM`) and where the CPU went. A
//! round of free bookings (hold + confirm, the same 64 clients and
//! processes) runs before and after the paid one; `ratio:` is paid/s over
//! free/s. Targets: ratio ≥ 0.5, webhook → paid p99 < 50 ms, payment
//! service RSS < 100 MiB.
//!
//! Settings (environment): `P7_BOOKINGS` (default 2000, at most 4800),
//! `P7_FREE_BOOKINGS` (per free round, default `P7_BOOKINGS`),
//! `P7_WARMUP` (paid and free bookings before the timed rounds, default 256),
//! `P7_PACED_BOOKINGS` (default 1000) and `P7_PACED_RATE` (per second,
//! default half the saturated paid rate just measured): a last paid round
//! whose bookings start at that steady rate, so its webhook → paid times
//! are the saga's own rather than queueing behind 64 clients' new work.
//!
//! Run: `scripts/stack up && eval "$(scripts/stack env)" &&
//!       cargo build --release -p berth -p berth-stripe-emulator --bins --examples &&
//!       $CARGO_TARGET_DIR/release/examples/p7_paid_bookings`

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rounds;
mod server;
#[path = "../support/mod.rs"]
mod support;
mod timings;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rounds::{Seen, Targets};
use serde_json::json;
use support::Procs;
use support::load::percentile;
use support::paid::{PaidPlatform, Resource, slot};
use timings::Timings;

const CLIENTS: usize = 64;
const RESOURCES: usize = 100;
/// 30-minute slots in a day: a round's bookings per resource at most.
const SLOTS_PER_DAY: usize = 48;
const SUCCEEDED: &str = "payment_intent.succeeded";

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `n` booking bodies on day `day`, spread over the resources first.
fn jobs(resources: &[Resource], n: usize, day: i64, paid: bool) -> Vec<Bytes> {
    assert!(n <= RESOURCES * SLOTS_PER_DAY, "at most 4800 per round");
    (0..n)
        .map(|j| {
            let r = &resources[j % RESOURCES];
            let kind = if paid { &r.paid } else { &r.free };
            let start = slot(day, (j / RESOURCES) as i64);
            let body = json!({"resource_id": r.id, "appointment_type_id": kind, "start": start});
            Bytes::from(body.to_string())
        })
        .collect()
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// "kind p50/p99 ms" for each request kind.
fn client_latencies(seen: &mut Seen) -> String {
    let mut parts = Vec::new();
    for (kind, all) in &mut seen.latencies {
        all.sort();
        parts.push(format!(
            "{kind} {:.1}/{:.1}",
            ms(percentile(all, 0.5)),
            ms(percentile(all, 0.99))
        ));
    }
    parts.join(", ")
}

fn cpu_meter(platform: &PaidPlatform) -> support::CpuMeter {
    support::CpuMeter::start(vec![
        ("postgres", Procs::Named("postgres")),
        ("redis-server", Procs::Named("redis-server")),
        ("availability", Procs::Pid(platform.availability.0.id())),
        ("booking", Procs::Pid(platform.booking.0.id())),
        ("payment", Procs::Pid(platform.payment_pid().unwrap())),
        (
            "stripe emulator",
            Procs::Pid(
                platform
                    .emulator
                    .pid()
                    .expect("the benchmark runs the emulator as a process"),
            ),
        ),
        ("load generator", Procs::Pid(std::process::id())),
    ])
}

/// "label ms, …; total ms (cores busy)" per booking.
fn cpu_line(used: &[(&'static str, f64)], bookings: usize, seconds: f64) -> String {
    let total: f64 = used.iter().map(|(_, s)| s).sum();
    let per = |s: f64| s * 1e3 / bookings.max(1) as f64;
    let parts: Vec<String> = used
        .iter()
        .map(|(label, s)| format!("{label} {:.3}", per(*s)))
        .collect();
    format!(
        "{}; total {:.3} ({:.2} cores busy)",
        parts.join(", "),
        per(total),
        total / seconds
    )
}

#[tokio::main]
async fn main() {
    let paid_n = setting("P7_BOOKINGS", 2000).max(1);
    let free_n = setting("P7_FREE_BOOKINGS", paid_n).max(1);
    let warmup = setting("P7_WARMUP", 256);
    let redis =
        std::env::var("REDIS_URL").expect("REDIS_URL: run scripts/stack up and eval its env");
    let db = support::db::TestDb::create("p7").await;
    let logs = std::env::temp_dir().join(&db.name);
    let platform = PaidPlatform::start(
        &db.url,
        &redis,
        Some(&support::paid::emulator_binary()),
        &logs,
        "warn",
    )
    .await;

    // Setup (not timed). Each round books a day of its own.
    let client = reqwest::Client::new();
    let mut resources = Vec::new();
    for i in 0..RESOURCES {
        let name = format!("room-{i}");
        resources.push(platform.resource(&client, &name, 20 * 24 * 60).await);
    }
    let host = |url: &str| url.trim_start_matches("http://").to_owned();
    let targets = Targets {
        booking: host(&platform.booking_url),
        payment: host(&platform.payment_url),
        emulator: host(&platform.emulator_url),
        customers: Arc::new(
            (0..CLIENTS)
                .map(|c| platform.auth.bearer(&format!("customer-{c}"), "customer"))
                .collect(),
        ),
    };
    let mut database = server::Database::connect(&db.url).await;
    let mut errors = Vec::new();

    if warmup > 0 {
        let seen = rounds::run(
            &targets,
            CLIENTS,
            jobs(&resources, warmup, 2, true),
            true,
            None,
        )
        .await;
        errors.extend(seen.errors);
        database
            .wait_paid(warmup as i64, Duration::from_secs(60))
            .await;
        database
            .wait_events(SUCCEEDED, warmup as i64, Duration::from_secs(60))
            .await;
        let seen = rounds::run(
            &targets,
            CLIENTS,
            jobs(&resources, warmup, 5, false),
            false,
            None,
        )
        .await;
        errors.extend(seen.errors);
    }

    let free_jobs = |day| jobs(&resources, free_n, day, false);
    let meter = cpu_meter(&platform);
    let mut free = rounds::run(&targets, CLIENTS, free_jobs(8), false, None).await;
    let mut free_cpu = meter.stop();
    errors.append(&mut free.errors);

    let meter = cpu_meter(&platform);
    let machine = support::MachineTicks::read();
    let first_hold_us = chrono::Utc::now().timestamp_micros();
    let mut paid = rounds::run(
        &targets,
        CLIENTS,
        jobs(&resources, paid_n, 11, true),
        true,
        None,
    )
    .await;
    let expected = (warmup + paid_n) as i64;
    let paid_count = database.wait_paid(expected, Duration::from_secs(120)).await;
    let last_paid_us = database.last_paid_us(first_hold_us).await;
    // The webhooks still queued at the emulator (payment_intent.succeeded
    // of paid sagas) are the paid round's work too.
    database
        .wait_events(SUCCEEDED, expected, Duration::from_secs(120))
        .await;
    let drained = chrono::Utc::now().timestamp_micros();
    let paid_cpu = meter.stop();
    let mut paid_machine = support::MachineTicks::default();
    paid_machine.add_since(machine);
    errors.append(&mut paid.errors);

    let meter = cpu_meter(&platform);
    let mut free_again = rounds::run(&targets, CLIENTS, free_jobs(14), false, None).await;
    for ((_, total), (_, more)) in free_cpu.iter_mut().zip(meter.stop()) {
        *total += more;
    }
    errors.append(&mut free_again.errors);

    let timings = Timings::of(&database.timeline(first_hold_us).await, &paid.confirmed);

    let paid_rate = paid_n as f64 / ((last_paid_us - first_hold_us) as f64 / 1e6);
    let paced_n = setting("P7_PACED_BOOKINGS", 1000);
    let paced_rate = std::env::var("P7_PACED_RATE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(paid_rate / 2.0)
        .max(1.0);
    let paced_from_us = chrono::Utc::now().timestamp_micros();
    let mut paced = rounds::run(
        &targets,
        CLIENTS,
        jobs(&resources, paced_n, 17, true),
        true,
        Some(paced_rate),
    )
    .await;
    database
        .wait_paid(expected + paced_n as i64, Duration::from_secs(120))
        .await;
    errors.append(&mut paced.errors);
    let paced_timings = Timings::of(&database.timeline(paced_from_us).await, &paced.confirmed);
    let unpaid = database.unpaid().await;
    let events = database.events().await;
    let check = platform.check_money();
    let check_out = String::from_utf8_lossy(&check.stdout).into_owned();
    let rss: Vec<(&str, Option<u64>)> = vec![
        (
            "availability",
            support::peak_rss_kib(platform.availability.0.id()),
        ),
        ("booking", support::peak_rss_kib(platform.booking.0.id())),
        (
            "payment",
            platform.payment_pid().and_then(support::peak_rss_kib),
        ),
        (
            "stripe emulator",
            support::peak_rss_kib(
                platform
                    .emulator
                    .pid()
                    .expect("the benchmark runs the emulator as a process"),
            ),
        ),
        ("load generator", support::peak_rss_kib(std::process::id())),
    ];

    let paid_seconds = (last_paid_us - first_hold_us) as f64 / 1e6;
    let free_seconds = (free.elapsed + free_again.elapsed).as_secs_f64();
    let free_rate = 2.0 * free_n as f64 / free_seconds;
    println!(
        "P7 paid bookings over HTTP: {CLIENTS} clients, {paid_n} paid bookings (hold, POST \
         /v1/payments, confirm at the emulator; webhook, secure, capture, confirm), {RESOURCES} \
         resources, after {warmup} paid + {warmup} free warm-up"
    );
    println!(
        "  paid: {paid_count} of {expected} paid (warm-up included); {paid_n} in {paid_seconds:.2}s \
         from the first hold to the last paid = {paid_rate:.0} paid bookings/s \
         (clients done after {:.2}s)",
        paid.elapsed.as_secs_f64()
    );
    println!(
        "  client latency p50/p99 ms: {}",
        client_latencies(&mut paid)
    );
    timings.print();
    let events: Vec<String> = events.iter().map(|(t, n)| format!("{t} {n}")).collect();
    println!("  webhooks received (all rounds): {}", events.join(", "));
    println!(
        "  free: 2 rounds of {free_n} (hold + confirm) in {free_seconds:.2}s = {free_rate:.0} \
         bookings/s (rounds: {:.0}, {:.0}); client latency p50/p99 ms: {}",
        free_n as f64 / free.elapsed.as_secs_f64(),
        free_n as f64 / free_again.elapsed.as_secs_f64(),
        client_latencies(&mut free)
    );
    println!(
        "  paced: {paced_n} paid bookings started at {paced_rate:.0}/s (half the saturated rate \
         unless P7_PACED_RATE); client latency p50/p99 ms: {}",
        client_latencies(&mut paced)
    );
    paced_timings.print();
    let drained_seconds = (drained - first_hold_us) as f64 / 1e6;
    println!(
        "  CPU per paid booking (ms, until the emulator's webhooks drained after {drained_seconds:.2}s): {}",
        cpu_line(&paid_cpu, paid_n, drained_seconds)
    );
    let total: f64 = paid_cpu.iter().map(|(_, s)| s).sum();
    let emulator: f64 = paid_cpu
        .iter()
        .filter(|(l, _)| *l == "stripe emulator")
        .map(|(_, s)| s)
        .sum();
    println!(
        "  stripe emulator's share of the paid round's CPU: {:.0} %",
        100.0 * emulator / total.max(1e-9)
    );
    println!(
        "  CPU per free booking (ms): {}",
        cpu_line(&free_cpu, 2 * free_n, free_seconds)
    );
    let rss: Vec<String> = rss
        .iter()
        .map(|(l, kib)| match kib {
            Some(kib) => format!("{l} {:.1} MiB", *kib as f64 / 1024.0),
            None => format!("{l} ?"),
        })
        .collect();
    println!("  peak RSS (VmHWM): {}", rss.join(", "));
    println!(
        "  machine during the paid round: {}",
        paid_machine.describe()
    );
    let findings: Vec<&str> = check_out
        .lines()
        .filter(|l| !l.starts_with("money sound"))
        .collect();
    println!(
        "  money checker: {} finding(s); {}",
        if check.status.success() {
            0
        } else {
            findings.len().max(1)
        },
        check_out.lines().last().unwrap_or("no output")
    );
    for line in findings.iter().take(20) {
        println!("    {line}");
    }
    println!("  errors: {}", errors.len());
    for error in errors.iter().take(20) {
        println!("    {error}");
    }
    for line in unpaid.iter().take(60) {
        println!("  not paid: {line}");
    }
    println!(
        "ratio: {:.2} ({paid_rate:.0} / {free_rate:.0})",
        paid_rate / free_rate
    );

    let unsound = !check.status.success() || !errors.is_empty() || paid_count < expected;
    drop(platform);
    tokio::time::sleep(Duration::from_millis(300)).await;
    if unsound {
        // Keep the evidence: the database and every process's log.
        println!(
            "something is wrong; kept for inspection: database {}, logs {}",
            db.name,
            logs.display()
        );
        std::mem::forget(db);
        std::process::exit(1);
    }
    let _ = std::fs::remove_dir_all(&logs);
    db.drop_now().await;
}
