//! Texts (SMS) through the Twilio-shaped provider sink: only to the
//! customer's verified phone, once per message even with two replicas,
//! reminders included; none without a provider.

use std::time::Duration;

use chrono::Utc;
use chrono_tz::Tz;
use serde_json::json;

use crate::common::*;

const PHONE: &str = "+4915112345678";

fn options(smtp_port: u16, sms: Option<SmsSink>, offsets: Vec<Duration>) -> Options {
    Options {
        smtp_port,
        replicas: 2,
        in_process_too: true,
        refuse: None,
        reminder_offsets: Some(offsets),
        workers: true,
        sms,
        mail: true,
    }
}

async fn texts_after_a_while(sms: &SmsSink, n: usize) -> Vec<SentSms> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sms.sent().len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waiting for {n} texts"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sent = sms.sent();
    assert_eq!(sent.len(), n, "exactly {n} texts: {sent:#?}");
    sent
}

#[tokio::test]
async fn confirmation_reminder_and_cancellation_go_by_text_once_each() {
    let smtp = SmtpSink::start();
    let sms = SmsSink::start().await;
    let start = at(3, 9);
    let (offset, due) = due_in(start, Duration::from_secs(6));
    let env = Env::start(options(smtp.port, Some(sms.clone()), vec![offset])).await;
    let token = env.issuer.token_with_phone(ALICE, &["customer"], PHONE);
    let held = env
        .hold_as(
            start,
            json!({"name": "Alice", "email": "alice@example.test", "phone": PHONE}),
            &token,
        )
        .await;
    let id = held["id"].as_str().unwrap().to_owned();
    env.act(&id, "confirm").await;

    let sent = texts_after_a_while(&sms, 1).await;
    let local = start.with_timezone(&ZONE.parse::<Tz>().unwrap());
    let when = format!(
        "{} ({ZONE}, {})",
        local.format("%a %-d %b, %H:%M"),
        local.format("%Z")
    );
    assert_eq!(sent[0].to, PHONE);
    assert_eq!(sent[0].from, "+15005550006");
    assert!(sent[0].body.starts_with("Confirmed:"), "{}", sent[0].body);
    assert!(
        sent[0].body.contains(&when),
        "{} lacks {when}",
        sent[0].body
    );
    assert!(sent[0].body.contains("Studio Mitte"), "{}", sent[0].body);
    smtp.wait_for(1).await;

    // The reminder goes by both channels at its due time, once.
    let sent = texts_after_a_while(&sms, 2).await;
    assert!(Utc::now() >= due, "sent before it was due");
    assert!(sent[1].body.starts_with("Reminder:"), "{}", sent[1].body);
    smtp.wait_for(2).await;
    let reminders = format!(
        "SELECT count(*) FROM notification.reminders WHERE booking_id = '{id}' \
         AND status = 'sent'"
    );
    assert_eq!(env.sql_count(&reminders).await, 2, "one per channel");

    env.act(&id, "cancel").await;
    let sent = texts_after_a_while(&sms, 3).await;
    assert!(sent[2].body.starts_with("Cancelled:"), "{}", sent[2].body);
    let log = format!(
        "SELECT count(*) FROM notification.deliveries WHERE booking_id = '{id}' \
         AND channel = 'sms' AND status = 'sent'"
    );
    assert_eq!(
        env.sql_count(&log).await,
        3,
        "the delivery log has each text"
    );
    env.finish().await;
}

#[tokio::test]
async fn without_a_provider_or_a_phone_nothing_is_texted() {
    let smtp = SmtpSink::start();
    let start = at(3, 11);
    let (offset, _) = due_in(start, Duration::from_secs(3600));
    let env = Env::start(options(smtp.port, None, vec![offset])).await;
    let token = env.issuer.token_with_phone(ALICE, &["customer"], PHONE);
    let held = env
        .hold_as(
            start,
            json!({"email": "alice@example.test", "phone": PHONE}),
            &token,
        )
        .await;
    let id = held["id"].as_str().unwrap().to_owned();
    env.act(&id, "confirm").await;
    smtp.wait_for(1).await;
    let texts = format!(
        "SELECT count(*) FROM notification.deliveries WHERE booking_id = '{id}' \
         AND channel = 'sms'"
    );
    assert_eq!(env.sql_count(&texts).await, 0);
    let planned = format!("SELECT count(*) FROM notification.reminders WHERE booking_id = '{id}'");
    assert_eq!(env.sql_count(&planned).await, 1, "the email reminder only");
    env.finish().await;
}

/// A customer who gave only a phone is told of the cancellation too (the
/// "was told of it" mark is set by texts, not only by invites).
#[tokio::test]
async fn a_customer_with_only_a_phone_hears_of_the_cancellation() {
    let smtp = SmtpSink::start();
    let sms = SmsSink::start().await;
    let env = Env::start(options(smtp.port, Some(sms.clone()), Vec::new())).await;
    let token = env.issuer.token_with_phone(ALICE, &["customer"], PHONE);
    let held = env
        .hold_as(at(3, 13), json!({"phone": PHONE}), &token)
        .await;
    let id = held["id"].as_str().unwrap().to_owned();
    env.act(&id, "confirm").await;
    texts_after_a_while(&sms, 1).await;
    env.act(&id, "cancel").await;
    let sent = texts_after_a_while(&sms, 2).await;
    assert!(sent[1].body.starts_with("Cancelled:"), "{}", sent[1].body);
    assert!(smtp.messages().is_empty(), "no address, no email");
    env.finish().await;
}

/// The provider down (503): the text is retried and sent once it is back;
/// a number it refuses (400): recorded failed, not retried.
#[tokio::test]
async fn a_provider_outage_delays_a_text_and_a_refused_number_ends_it() {
    let smtp = SmtpSink::start();
    let sms = SmsSink::start().await;
    let env = Env::start(options(smtp.port, Some(sms.clone()), Vec::new())).await;
    let token = env.issuer.token_with_phone(ALICE, &["customer"], PHONE);
    let texts = |id: &str, status: &str| {
        format!(
            "SELECT count(*) FROM notification.deliveries WHERE booking_id = '{id}' \
             AND channel = 'sms' AND status = '{status}' AND attempts >= 2"
        )
    };

    sms.fail_with(Some(503));
    let held = env
        .hold_as(at(3, 15), json!({"phone": PHONE}), &token)
        .await;
    let down = held["id"].as_str().unwrap().to_owned();
    env.act(&down, "confirm").await;
    let retried = texts(&down, "pending");
    env.eventually(20, "the text is being retried", || async {
        env.sql_count(&retried).await == 1
    })
    .await;
    assert!(sms.sent().is_empty());
    sms.fail_with(None);
    let sent = texts_after_a_while(&sms, 1).await;
    assert!(sent[0].body.starts_with("Confirmed:"), "{}", sent[0].body);

    sms.fail_with(Some(400));
    let held = env
        .hold_as(at(3, 16), json!({"phone": PHONE}), &token)
        .await;
    let refused = held["id"].as_str().unwrap().to_owned();
    env.act(&refused, "confirm").await;
    let failed = format!(
        "SELECT count(*) FROM notification.deliveries WHERE booking_id = '{refused}' \
         AND channel = 'sms' AND status = 'failed' AND attempts = 1"
    );
    env.eventually(20, "the refused text is recorded failed", || async {
        env.sql_count(&failed).await == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(env.sql_count(&failed).await, 1, "not retried");
    env.finish().await;
}
