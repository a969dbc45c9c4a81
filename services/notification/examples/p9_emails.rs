//! P9: confirmations in, emails delivered into a real SMTP server (the
//! tests' `aiosmtpd` sink, writing a Maildir), per second, against what
//! the same sink takes from a plain SMTP client in the same run.
//!
//! 1. The service: `P9_MESSAGES` (default 2,000) `booking.confirmed`
//!    events are handed to the notification service in process (as
//!    `berth dev` does; 8 at a time), on a fresh PostgreSQL database; it
//!    renders each confirmation (text, HTML, invite), records it and its
//!    delivery, and its sender mails them. Timed from the first event to
//!    the last message in the Maildir. Peak RSS of this process
//!    (`VmHWM`, service and load generator together) is read right after.
//! 2. The ceiling: the same number of messages of about the same size
//!    sent straight through lettre's pooled SMTP client, 20 at a time
//!    (the sender's batch), into a fresh sink.
//!
//! ```text
//! scripts/stack up && eval "$(scripts/stack env)"
//! cargo run --release -p berth-notification --example p9_emails
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark program"
)]

#[path = "support/directory.rs"]
mod directory;

#[path = "../../../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_notification::messaging::{MailSender, SmtpConfig, SmtpMailer, SmtpSecurity};
use berth_notification::{NotificationConfig, Notifications, Senders};
use directory::Directory;
use futures::StreamExt;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use support::smtp::SmtpSink;
use tokio_util::sync::CancellationToken;

fn delivered(sink: &SmtpSink) -> usize {
    ["new", "cur"]
        .iter()
        .filter_map(|d| std::fs::read_dir(sink.maildir.join(d)).ok())
        .map(Iterator::count)
        .sum()
}

async fn wait_delivered(sink: &SmtpSink, n: usize, limit: Duration) -> Instant {
    let deadline = Instant::now() + limit;
    while delivered(sink) < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} delivered",
            delivered(sink)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Instant::now()
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn event(i: usize) -> String {
    let start = chrono::Utc::now()
        + chrono::TimeDelta::days(2)
        + chrono::TimeDelta::minutes(i64::try_from(i).unwrap());
    serde_json::json!({
        "id": uuid::Uuid::now_v7(),
        "type": "booking.confirmed",
        "occurred_at": chrono::Utc::now(),
        "booking": {
            "id": uuid::Uuid::now_v7(),
            "resource_id": uuid::Uuid::nil(),
            "appointment_type_id": uuid::Uuid::nil(),
            "start": start,
            "end": start + chrono::TimeDelta::minutes(30),
            "status": "confirmed",
            "price_minor": 0,
            "currency": "EUR",
            "customer": {"name": "Ada Lovelace", "email": format!("ada{i}@example.test")},
            "version": 2
        }
    })
    .to_string()
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("P9_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);

    // 1. The service.
    let sink = SmtpSink::start();
    let db = support::db::TestDb::create("p9").await;
    let mailer: Arc<dyn MailSender> = Arc::new(
        SmtpMailer::new(&SmtpConfig {
            host: "127.0.0.1".into(),
            port: sink.port,
            security: SmtpSecurity::None,
            username: None,
            password: None,
            from: "Berth <no-reply@berth.test>".into(),
        })
        .unwrap(),
    );
    let notifications = Notifications::connect(
        &db.url,
        None,
        Senders {
            mail: Some(mailer),
            sms: None,
        },
        Arc::new(Directory),
        NotificationConfig {
            reminder_offsets: Vec::new(),
            ..NotificationConfig::default()
        },
    )
    .await
    .unwrap();
    let stop = CancellationToken::new();
    notifications.spawn_workers(stop.clone());
    let events: Vec<String> = (0..n).map(event).collect();
    let started = Instant::now();
    futures::stream::iter(events)
        .for_each_concurrent(8, |json| {
            let notifications = notifications.clone();
            async move { notifications.handle_booking_event(&json).await.unwrap() }
        })
        .await;
    let recorded = started.elapsed();
    let done = wait_delivered(&sink, n, Duration::from_secs(600)).await;
    let service = done - started;
    let rss = peak_rss_mib();
    stop.cancel();
    let sample = sink.messages().into_iter().next().unwrap_or_default();
    drop(sink);

    // 2. The ceiling: the same sink, a plain client, messages of the size
    //    the service sent.
    let sink = SmtpSink::start();
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(sink.port)
        .build();
    let body = "x".repeat(sample.len().saturating_sub(300));
    let started = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(20, |i| {
            let transport = transport.clone();
            let body = body.clone();
            async move {
                let message = Message::builder()
                    .from("Berth <no-reply@berth.test>".parse().unwrap())
                    .to(format!("ada{i}@example.test").parse().unwrap())
                    .subject("Confirmed")
                    .body(body)
                    .unwrap();
                transport.send(message).await.unwrap();
            }
        })
        .await;
    let done = wait_delivered(&sink, n, Duration::from_secs(600)).await;
    let ceiling = done - started;

    let rate = |d: Duration| f64::from(u32::try_from(n).unwrap()) / d.as_secs_f64();
    println!(
        "service: {n} confirmations → {n} emails in {:.2} s = {:.0}/s (events recorded in {:.2} s); \
         message size {} bytes",
        service.as_secs_f64(),
        rate(service),
        recorded.as_secs_f64(),
        sample.len()
    );
    println!(
        "ceiling: plain client {n} emails in {:.2} s = {:.0}/s",
        ceiling.as_secs_f64(),
        rate(ceiling)
    );
    println!(
        "ratio {:.2} (target ≥ 0.5); peak RSS of the process {:.1} MiB (target < 100)",
        rate(service) / rate(ceiling),
        rss
    );
    db.drop_now().await;
}
