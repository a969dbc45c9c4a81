//! Reminders against PostgreSQL and the SMTP sink. There is no clock seam:
//! each test sets an offset that makes its reminder due a few seconds
//! after the booking is made (offsets are whole seconds, so the due time
//! is `start - floor(offset)`).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use serde_json::json;

use crate::common::*;

fn options(smtp_port: u16, offsets: Vec<Duration>) -> Options {
    Options {
        smtp_port,
        replicas: 1,
        in_process_too: false,
        refuse: None,
        reminder_offsets: Some(offsets),
        workers: true,
        sms: None,
        mail: true,
    }
}

/// Waits for `n` messages, then a while longer to see no more arrive.
async fn exactly(sink: &SmtpSink, n: usize) -> Vec<Received> {
    sink.wait_for(n).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let messages = sink.messages();
    assert_eq!(messages.len(), n, "expected exactly {n} message(s)");
    messages.iter().map(|m| parse(m)).collect()
}

/// `start` as a reminder shows it: local time and the zone's label.
fn shown(start: DateTime<Utc>) -> (String, String) {
    let local = start.with_timezone(&ZONE.parse::<Tz>().unwrap());
    (
        local.format("%A %-d %B %Y, %H:%M").to_string(),
        format!("({ZONE}, {})", local.format("%Z")),
    )
}

#[tokio::test]
async fn a_confirmed_booking_gets_one_reminder_at_its_due_time() {
    let sink = SmtpSink::start();
    let start = at(10, 9);
    let (offset, due) = due_in(start, Duration::from_secs(8));
    // A second offset already past when the booking is made: not planned.
    let past = Duration::from_secs(30 * 24 * 3600);
    let env = Env::start(options(sink.port, vec![offset, past])).await;
    let booking = env.book(start, Some("alice@example.test")).await;
    let id = booking["id"].as_str().unwrap();
    sink.wait_for(1).await;
    assert!(Utc::now() < due, "the test's setup took too long");
    assert_eq!(
        env.sql_count(&format!(
            "SELECT count(*) FROM notification.reminders WHERE booking_id = '{id}' \
             AND status = 'pending'"
        ))
        .await,
        1
    );
    sink.wait_for(2).await;
    let arrived = Utc::now();
    assert!(arrived >= due, "sent before it was due: {arrived} < {due}");
    assert!(
        arrived - due < TimeDelta::seconds(5),
        "late: {arrived} vs {due}"
    );
    let mails = exactly(&sink, 2).await;
    let reminder = &mails[1];
    assert!(
        reminder
            .subject
            .starts_with("Reminder: Consultation at Studio Mitte"),
        "{}",
        reminder.subject
    );
    let (when, zone) = shown(start);
    assert!(
        reminder.text.contains(&when) && reminder.text.contains(&zone),
        "{}",
        reminder.text
    );
    assert!(reminder.html.contains(&when), "{}", reminder.html);
    assert!(reminder.calendar.is_none());
    assert_eq!(
        env.sql_count(&format!(
            "SELECT count(*) FROM notification.reminders r JOIN notification.deliveries d \
             ON d.id = r.delivery_id WHERE r.booking_id = '{id}' AND r.status = 'sent' \
             AND d.kind = 'reminder' AND d.status = 'sent' AND d.sent_us >= r.planned_due_us"
        ))
        .await,
        1
    );
    env.finish().await;
}

#[tokio::test]
async fn a_reschedule_moves_the_reminders_and_the_old_one_is_never_sent() {
    let sink = SmtpSink::start();
    let first = at(11, 9);
    let moved_to = first + TimeDelta::hours(1);
    // `early` would fire for the first time soon; `late` only for the new
    // one (for the first time it is already past, so it is not planned).
    let (early, _) = due_in(first, Duration::from_secs(7));
    let (late, late_due) = due_in(moved_to, Duration::from_secs(11));
    let env = Env::start(options(sink.port, vec![early, late])).await;
    let booking = env.book(first, Some("alice@example.test")).await;
    let id = booking["id"].as_str().unwrap();
    sink.wait_for(1).await;
    let (status, moved) = env
        .send(
            ALICE,
            &["customer"],
            "POST",
            &format!("/v1/bookings/{id}/reschedule"),
            Some(json!({"start": moved_to.to_rfc3339()})),
        )
        .await;
    assert_eq!(status, 200, "{moved}");
    let version = moved["version"].as_i64().unwrap();
    let pending_at_new_version = format!(
        "SELECT count(*) FROM notification.reminders WHERE booking_id = '{id}' \
         AND status = 'pending' AND booking_version = {version}"
    );
    env.eventually(10, "both reminders replanned", || async {
        env.sql_count(&pending_at_new_version).await == 2
    })
    .await;
    assert!(
        Utc::now() < late_due - TimeDelta::seconds(3),
        "the test's setup took too long"
    );
    sink.wait_for(3).await;
    assert!(Utc::now() >= late_due);
    let mails = exactly(&sink, 3).await;
    assert!(
        mails[1].subject.starts_with("Moved:"),
        "{}",
        mails[1].subject
    );
    assert!(
        mails[2].subject.starts_with("Reminder:"),
        "{}",
        mails[2].subject
    );
    let (when, _) = shown(moved_to);
    assert!(mails[2].text.contains(&when), "{}", mails[2].text);
    // The early one moved with the booking: due an hour later now.
    let early_s = i64::try_from(early.as_secs()).unwrap();
    let moved_due = (moved_to - TimeDelta::seconds(early_s)).timestamp_micros();
    assert_eq!(
        env.sql_count(&format!(
            "SELECT count(*) FROM notification.reminders WHERE booking_id = '{id}' \
             AND offset_s = {early_s} AND status = 'pending' AND due_us = {moved_due}"
        ))
        .await,
        1
    );
    env.finish().await;
}

#[tokio::test]
async fn a_cancelled_booking_gets_no_reminder() {
    let sink = SmtpSink::start();
    let start = at(12, 9);
    let (offset, due) = due_in(start, Duration::from_secs(7));
    let env = Env::start(options(sink.port, vec![offset])).await;
    let booking = env.book(start, Some("alice@example.test")).await;
    let id = booking["id"].as_str().unwrap();
    sink.wait_for(1).await;
    let (status, cancelled) = env
        .send(
            ALICE,
            &["customer"],
            "POST",
            &format!("/v1/bookings/{id}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{cancelled}");
    sink.wait_for(2).await;
    assert!(Utc::now() < due, "the test's setup took too long");
    // Well past the due time.
    tokio::time::sleep((due - Utc::now()).to_std().unwrap_or_default()).await;
    let mails = exactly(&sink, 2).await;
    assert!(
        mails[1].subject.starts_with("Cancelled:"),
        "{}",
        mails[1].subject
    );
    assert_eq!(
        env.sql_count(&format!(
            "SELECT count(*) FROM notification.reminders WHERE booking_id = '{id}' \
             AND status = 'superseded' AND due_us IS NULL"
        ))
        .await,
        1
    );
    env.finish().await;
}

#[tokio::test]
async fn two_replicas_send_a_reminder_once() {
    let sink = SmtpSink::start();
    let starts: Vec<_> = (0..4).map(|i| at(13, 6 + i)).collect();
    // One offset for the first booking; the others' reminders with it
    // come due an hour apart, so each is given its own.
    let offsets: Vec<Duration> = starts
        .iter()
        .map(|s| due_in(*s, Duration::from_secs(8)).0)
        .collect();
    let env = Env::start(Options {
        replicas: 2,
        in_process_too: true,
        ..options(sink.port, offsets)
    })
    .await;
    for (i, start) in starts.iter().enumerate() {
        env.book(*start, Some(&format!("guest{i}@example.test")))
            .await;
    }
    // Each booking: its confirmation and the reminder of its own offset
    // (the others' are already past for it, or hours away).
    let mails = exactly(&sink, 8).await;
    let reminders: Vec<&Received> = mails
        .iter()
        .filter(|m| m.subject.starts_with("Reminder:"))
        .collect();
    assert_eq!(
        reminders.len(),
        4,
        "a reminder was sent twice or not at all"
    );
    assert_eq!(
        env.sql_count("SELECT count(*) FROM notification.deliveries WHERE kind = 'reminder'")
            .await,
        4
    );
    env.finish().await;
}

#[tokio::test]
async fn a_reminder_due_while_the_service_was_down_after_the_start_is_skipped_and_recorded() {
    let sink = SmtpSink::start();
    let start = at(14, 9);
    let env = Env::start(Options {
        // Events are handed over in process; nothing is sent yet.
        in_process_too: true,
        workers: false,
        sms: None,
        mail: true,
        ..options(sink.port, vec![Duration::from_secs(3600)])
    })
    .await;
    let registry = prometheus::Registry::new();
    berth_notification::Notifications::register_metrics(&registry).unwrap();
    let booking = env.book(start, Some("alice@example.test")).await;
    let id = booking["id"].as_str().unwrap();
    let pending = format!(
        "SELECT count(*) FROM notification.reminders WHERE booking_id = '{id}' AND status = 'pending'"
    );
    env.eventually(10, "the reminder is planned", || async {
        env.sql_count(&pending).await == 1
    })
    .await;
    // The service is down until after the appointment has started: what
    // the clock would show then, shifted into the rows instead.
    let now = Utc::now().timestamp_micros();
    let hour = 3_600_000_000_i64;
    env.sql_count(&format!(
        "WITH b AS (UPDATE notification.bookings SET start_us = {now} - {hour}, \
         end_us = {now} - {hour} / 2 WHERE booking_id = '{id}' RETURNING 1), \
         r AS (UPDATE notification.reminders SET start_us = {now} - {hour}, \
         due_us = {now} - 2 * {hour}, planned_due_us = {now} - 2 * {hour} \
         WHERE booking_id = '{id}' RETURNING 1) \
         SELECT (SELECT count(*) FROM b) + (SELECT count(*) FROM r)"
    ))
    .await;
    // It comes back.
    env.replicas[0].spawn_workers(env.stop.clone());
    let skipped = format!(
        "SELECT count(*) FROM notification.reminders WHERE booking_id = '{id}' \
         AND status = 'skipped_late' AND due_us IS NULL AND delivery_id IS NULL"
    );
    env.eventually(10, "the reminder is skipped", || async {
        env.sql_count(&skipped).await == 1
    })
    .await;
    // Only the confirmation goes out.
    let mails = exactly(&sink, 1).await;
    assert!(
        mails[0].subject.starts_with("Confirmed:"),
        "{}",
        mails[0].subject
    );
    let skipped_count: f64 = registry
        .gather()
        .iter()
        .filter(|f| f.name() == "berth_notification_reminders_total")
        .flat_map(|f| f.get_metric().to_vec())
        .filter(|m| m.get_label().iter().any(|l| l.value() == "skipped_late"))
        .map(|m| m.get_counter().value())
        .sum();
    assert!(skipped_count >= 1.0);
    env.finish().await;
}
