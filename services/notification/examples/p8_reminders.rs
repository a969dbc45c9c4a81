//! P8: the reminder due scan with many reminders stored and a burst coming
//! due. For each stored count (`P8_STORED`, default `10000,1000000`) a
//! fresh database on `DATABASE_URL` gets that many pending reminders, of
//! which `P8_DUE` (default 10,000) come due evenly over `P8_WINDOW_S`
//! (default 60) seconds and the rest over the next 30 days; the real
//! reminder worker (one replica, default settings) then runs until every
//! due one is handed over and its email sent (to memory).
//!
//! Reported per run: lateness (due → handed over, and due → email sent)
//! p50/p99/max from the rows themselves, and the due scan's cost per call
//! from `pg_stat_statements` (calls, mean time, buffers touched), for the
//! lease statement and the next-due probe.
//!
//! ```text
//! scripts/stack up && eval "$(scripts/stack env)"
//! cargo run --release -p berth-notification --example p8_reminders
//! ```
//!
//! Resource names come from a fixed in-process directory
//! (`support/directory.rs`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark program"
)]

#[path = "support/directory.rs"]
mod directory;

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_notification::messaging::{MailSender, MemoryMailer};
use berth_notification::{NotificationConfig, Notifications, Senders};
use directory::Directory;
use sqlx::{Connection, PgConnection, PgPool, Row};
use tokio_util::sync::CancellationToken;

const OFFSET_S: i64 = 3600;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

#[tokio::main]
async fn main() {
    let admin =
        std::env::var("DATABASE_URL").expect("DATABASE_URL (eval \"$(scripts/stack env)\")");
    let due: i64 = env_or("P8_DUE", "10000").parse().unwrap();
    let window_s: i64 = env_or("P8_WINDOW_S", "60").parse().unwrap();
    for stored in env_or("P8_STORED", "10000,1000000").split(',') {
        let stored: i64 = stored.trim().parse().unwrap();
        run(&admin, stored.max(due), due, window_s).await;
    }
}

async fn run(admin: &str, stored: i64, due: i64, window_s: i64) {
    let name = format!("p8_{}", uuid::Uuid::now_v7().simple());
    let mut conn = PgConnection::connect(admin).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let mut url = url::Url::parse(admin).unwrap();
    url.set_path(&format!("/{name}"));
    let url = url.to_string();

    let mail = MemoryMailer::default();
    let mailer: Arc<dyn MailSender> = Arc::new(mail.clone());
    let config = NotificationConfig {
        reminder_offsets: vec![Duration::from_secs(OFFSET_S.unsigned_abs())],
        ..NotificationConfig::default()
    };
    let notifications = Notifications::connect(
        &url,
        None,
        Senders {
            mail: Some(mailer),
            sms: None,
        },
        Arc::new(Directory),
        config,
    )
    .await
    .unwrap();

    let pool = PgPool::connect(&url).await.unwrap();
    let seeding = Instant::now();
    seed_far(&pool, stored - due, window_s).await;
    // The burst starts a few seconds after seeding, when the worker runs.
    let first_due = now_us() + 5_000_000;
    seed_due(&pool, due, first_due, window_s).await;
    let seeded = seeding.elapsed();
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("SELECT pg_stat_statements_reset()")
        .execute(&pool)
        .await
        .unwrap();

    let stop = CancellationToken::new();
    notifications.spawn_workers(stop.clone());
    let deadline = Instant::now() + Duration::from_secs(u64::try_from(window_s).unwrap() + 120);
    loop {
        let sent: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM notification.deliveries WHERE kind = 'reminder' AND status = 'sent'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if sent >= due || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.cancel();

    let handed = percentiles(
        &pool,
        "SELECT (updated_us - planned_due_us) FROM notification.reminders WHERE status = 'sent'",
    )
    .await;
    let mailed = percentiles(
        &pool,
        "SELECT (d.sent_us - r.planned_due_us) FROM notification.reminders r \
         JOIN notification.deliveries d ON d.event_id = r.id WHERE d.status = 'sent'",
    )
    .await;
    println!(
        "stored {stored}, due {due} over {window_s} s (seeded in {:.1} s), {} emails in memory",
        seeded.as_secs_f64(),
        mail.messages().len()
    );
    println!("  due → handed over: {handed}");
    println!("  due → email sent:  {mailed}");
    for (what, pattern) in [
        ("lease (due scan)", "UPDATE reminders SET due_us%"),
        ("next-due probe", "SELECT due_us FROM reminders%"),
    ] {
        let row = sqlx::query(
            "SELECT sum(calls)::bigint AS calls, \
             (sum(total_exec_time) / greatest(sum(calls), 1))::float8 AS mean_ms, \
             (sum(shared_blks_hit + shared_blks_read)::float8 / greatest(sum(calls), 1)) AS blocks \
             FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid \
             WHERE d.datname = current_database() AND s.query LIKE $1",
        )
        .bind(pattern)
        .fetch_one(&pool)
        .await
        .unwrap();
        let calls: Option<i64> = row.get("calls");
        let mean: Option<f64> = row.get("mean_ms");
        let blocks: Option<f64> = row.get("blocks");
        println!(
            "  {what}: {} calls, {:.3} ms and {:.1} buffers per call",
            calls.unwrap_or(0),
            mean.unwrap_or(0.0),
            blocks.unwrap_or(0.0)
        );
    }
    pool.close().await;
    drop(notifications);
    tokio::time::sleep(Duration::from_millis(500)).await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .unwrap();
}

/// `far` reminders spread over 30 days from an hour after the burst
/// (set-based inserts: 1,000,000 rows take seconds).
async fn seed_far(pool: &PgPool, far: i64, window_s: i64) {
    let now = now_us();
    let after_burst = now + (window_s + 60) * 1_000_000 + 3_600_000_000;
    let chunk = 200_000;
    let mut done = 0;
    while done < far {
        let n = chunk.min(far - done);
        sqlx::query(
            "INSERT INTO notification.reminders (id, booking_id, offset_s, channel, \
             booking_version, start_us, status, attempts, due_us, planned_due_us, delivery_id, \
             created_us, updated_us) \
             SELECT gen_random_uuid()::text, gen_random_uuid()::text, $1, 'email', 1, \
               d + $1 * 1000000, 'pending', 0, d, d, NULL, $2, $2 \
             FROM (SELECT $3 + (random() * 30 * 86400 * 1000000)::bigint AS d \
                   FROM generate_series(1, $4)) AS t",
        )
        .bind(OFFSET_S)
        .bind(now)
        .bind(after_burst)
        .bind(n)
        .execute(pool)
        .await
        .unwrap();
        done += n;
    }
}

/// `due` reminders with their confirmed bookings, due evenly from
/// `first_due` over the window; then fresh planner statistics.
async fn seed_due(pool: &PgPool, due: i64, first_due: i64, window_s: i64) {
    let now = now_us();
    let step = window_s * 1_000_000 / due.max(1);
    sqlx::query(
        "WITH b AS ( \
           INSERT INTO notification.bookings (booking_id, version, status, resource_id, \
             appointment_type_id, start_us, end_us, price_minor, currency, customer_name, \
             customer_email, invite_sequence, updated_us, customer_phone) \
           SELECT gen_random_uuid()::text, 1, 'confirmed', gen_random_uuid()::text, \
             gen_random_uuid()::text, $1 + i * $2 + $3 * 1000000, \
             $1 + i * $2 + ($3 + 1800) * 1000000, 0, 'EUR', 'Ada', \
             'ada' || i || '@example.test', 1, $4, NULL \
           FROM generate_series(0, $5 - 1) AS i \
           RETURNING booking_id, start_us) \
         INSERT INTO notification.reminders (id, booking_id, offset_s, channel, booking_version, \
           start_us, status, attempts, due_us, planned_due_us, delivery_id, created_us, \
           updated_us) \
         SELECT gen_random_uuid()::text, booking_id, $3, 'email', 1, start_us, 'pending', 0, \
           start_us - $3 * 1000000, start_us - $3 * 1000000, NULL, $4, $4 FROM b",
    )
    .bind(first_due)
    .bind(step)
    .bind(OFFSET_S)
    .bind(now)
    .bind(due)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE notification.reminders")
        .execute(pool)
        .await
        .unwrap();
}

/// p50 / p99 / max of a column of microsecond differences.
async fn percentiles(pool: &PgPool, values_sql: &str) -> String {
    let row = sqlx::query(&format!(
        "SELECT count(*) AS n, \
           percentile_cont(0.5) WITHIN GROUP (ORDER BY v)::float8 AS p50, \
           percentile_cont(0.99) WITHIN GROUP (ORDER BY v)::float8 AS p99, \
           max(v)::float8 AS max FROM ({values_sql}) AS t(v)"
    ))
    .fetch_one(pool)
    .await
    .unwrap();
    let ms = |c: &str| row.get::<Option<f64>, _>(c).unwrap_or(0.0) / 1000.0;
    format!(
        "n = {}, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        row.get::<i64, _>("n"),
        ms("p50"),
        ms("p99"),
        ms("max")
    )
}
