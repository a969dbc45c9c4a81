use std::time::Duration;

use chrono::DateTime;
use chrono_tz::Tz;
use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::common::*;

fn options(smtp_port: u16) -> Options {
    Options {
        smtp_port,
        replicas: 1,
        in_process_too: false,
        refuse: None,
        reminder_offsets: None,
        workers: true,
        sms: None,
        mail: true,
    }
}

fn start_of(booking: &Value) -> DateTime<chrono::Utc> {
    booking["start"].as_str().unwrap().parse().unwrap()
}

/// Waits for `n` messages, then a while longer to see no more arrive.
async fn exactly(sink: &SmtpSink, n: usize) -> Vec<Received> {
    sink.wait_for(n).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let messages = sink.messages();
    assert_eq!(messages.len(), n, "expected exactly {n} message(s)");
    messages.iter().map(|m| parse(m)).collect()
}

#[tokio::test]
async fn a_confirmation_is_one_email_with_both_parts_and_an_invite_in_the_resources_zone() {
    let sink = SmtpSink::start();
    let env = Env::start(options(sink.port)).await;
    let booking = env.book(at(1, 9), Some("alice@example.test")).await;
    let id = booking["id"].as_str().unwrap();
    let mail = exactly(&sink, 1).await.remove(0);

    // Shown in the resource's zone, labelled with it, whatever the season.
    let local = start_of(&booking).with_timezone(&ZONE.parse::<Tz>().unwrap());
    let shown = format!(
        "{} ({ZONE}, {})",
        local.format("%A %-d %B %Y, %H:%M"),
        local.format("%Z")
    );
    assert!(
        mail.subject
            .starts_with("Confirmed: Consultation at Studio Mitte"),
        "{}",
        mail.subject
    );
    assert!(
        mail.text.contains(
            &shown
                .replace(" (", "–")
                .split('–')
                .next()
                .unwrap()
                .to_owned()
        ),
        "{}",
        mail.text
    );
    assert!(
        mail.text
            .contains(&format!("({ZONE}, {})", local.format("%Z"))),
        "{}",
        mail.text
    );
    assert!(
        mail.text.contains(&local.format("%H:%M").to_string()),
        "{}",
        mail.text
    );
    assert!(
        mail.html.contains("Studio Mitte")
            && mail.html.contains(&local.format("%H:%M").to_string()),
        "{}",
        mail.html
    );

    let (method, ics) = mail.calendar.expect("a text/calendar part");
    assert_eq!(method, "REQUEST");
    assert_eq!(ics_value(&ics, "METHOD").as_deref(), Some("REQUEST"));
    assert_eq!(
        ics_value(&ics, "UID"),
        Some(format!("booking-{id}@{ID_DOMAIN}"))
    );
    assert_eq!(
        ics_value(&ics, "SEQUENCE"),
        Some(booking["version"].to_string())
    );
    assert_eq!(
        ics_value(&ics, "DTSTART"),
        Some(start_of(&booking).format("%Y%m%dT%H%M%SZ").to_string())
    );
    assert!(
        mail.message_id.ends_with(&format!("@{ID_DOMAIN}")),
        "{}",
        mail.message_id
    );

    // The delivery log shows it sent; customers may not read it.
    let (status, log) = env
        .send(
            "admin-ann",
            &["admin"],
            "GET",
            &format!("/v1/notifications/deliveries?booking_id={id}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{log}");
    assert_eq!(log["items"].as_array().unwrap().len(), 1, "{log}");
    assert_eq!(log["items"][0]["status"], "sent");
    assert_eq!(log["items"][0]["recipient"], "alice@example.test");
    let (status, staff_log) = env
        .send(
            STAFF,
            &["staff"],
            "GET",
            &format!("/v1/notifications/deliveries?booking_id={id}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{staff_log}");
    assert_eq!(staff_log["items"][0]["recipient"], "a***@example.test");
    let (status, _) = env
        .send(
            ALICE,
            &["customer"],
            "GET",
            "/v1/notifications/deliveries",
            None,
        )
        .await;
    assert_eq!(status, 403);

    // `berth serve`'s lookup: availability's public API over HTTP.
    use berth_notification::Fetch;
    let dependencies = berth_runtime::resilience::Dependencies::new(
        &prometheus::Registry::new(),
        Default::default(),
    )
    .unwrap();
    let http = berth_notification::HttpFetch::new(
        &env.base,
        dependencies.get(berth_notification::AVAILABILITY_DEPENDENCY),
    );
    let found = http
        .get(&format!("/v1/resources/{}", env.resource))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8(found).unwrap().contains(ZONE));
    assert!(
        http.get(&format!("/v1/resources/{}", uuid::Uuid::now_v7()))
            .await
            .unwrap()
            .is_none()
    );
    env.finish().await;
}

#[tokio::test]
async fn the_same_event_delivered_twice_is_one_message() {
    let sink = SmtpSink::start();
    let env = Env::start(options(sink.port)).await;
    env.book(at(2, 10), Some("alice@example.test")).await;
    exactly(&sink, 1).await;

    // Redis delivers the confirmation again (the relay appended it twice,
    // or a consumer died before acknowledging it)...
    let client = redis::Client::open(std::env::var("REDIS_URL").unwrap()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let entries: redis::streams::StreamRangeReply =
        redis.xrange_all(&env.booking_stream).await.unwrap();
    let confirmed = entries
        .ids
        .iter()
        .find(|e| e.get::<String>("type").as_deref() == Some("booking.confirmed"))
        .expect("the confirmation on the stream");
    let fields: Vec<(String, String)> = ["event_id", "type", "booking_id", "event"]
        .iter()
        .map(|f| ((*f).to_owned(), confirmed.get::<String>(f).unwrap()))
        .collect();
    let _: String = redis.xadd(&env.booking_stream, "*", &fields).await.unwrap();
    // ...and it is handed over in process as well.
    let json = confirmed.get::<String>("event").unwrap();
    env.replicas[0].handle_booking_event(&json).await.unwrap();

    exactly(&sink, 1).await;
    assert_eq!(
        env.sql_count("SELECT count(*) FROM notification.deliveries")
            .await,
        1
    );
    env.finish().await;
}

#[tokio::test]
async fn two_replicas_send_each_confirmation_once() {
    let sink = SmtpSink::start();
    let env = Env::start(Options {
        smtp_port: sink.port,
        replicas: 2,
        in_process_too: true,
        refuse: None,
        reminder_offsets: None,
        workers: true,
        sms: None,
        mail: true,
    })
    .await;
    let bookings = 6;
    for i in 0..bookings {
        env.book(at(3, 6 + i), Some(&format!("guest{i}@example.test")))
            .await;
    }
    let mails = exactly(&sink, bookings as usize).await;
    let mut ids: Vec<&str> = mails.iter().map(|m| m.message_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), bookings as usize, "a message was sent twice");
    env.finish().await;
}

#[tokio::test]
async fn a_reschedule_raises_the_sequence_and_a_cancellation_cancels_the_same_event() {
    let sink = SmtpSink::start();
    let env = Env::start(options(sink.port)).await;
    let booking = env.book(at(4, 9), Some("alice@example.test")).await;
    let id = booking["id"].as_str().unwrap();
    sink.wait_for(1).await;
    let (status, moved) = env
        .send(
            ALICE,
            &["customer"],
            "POST",
            &format!("/v1/bookings/{id}/reschedule"),
            Some(json!({"start": at(4, 13).to_rfc3339()})),
        )
        .await;
    assert_eq!(status, 200, "{moved}");
    sink.wait_for(2).await;
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
    let mails = exactly(&sink, 3).await;

    let invites: Vec<(String, String)> = mails
        .iter()
        .map(|m| m.calendar.clone().expect("an invite"))
        .collect();
    let uid = format!("booking-{id}@{ID_DOMAIN}");
    let sequence = |ics: &str| ics_value(ics, "SEQUENCE").unwrap().parse::<i64>().unwrap();
    for (_, ics) in &invites {
        assert_eq!(ics_value(ics, "UID").as_deref(), Some(uid.as_str()));
    }
    assert!(
        mails[1].subject.starts_with("Moved:"),
        "{}",
        mails[1].subject
    );
    assert_eq!(invites[1].0, "REQUEST");
    assert!(
        sequence(&invites[1].1) > sequence(&invites[0].1),
        "the update must outrank the invite"
    );
    assert_eq!(
        ics_value(&invites[1].1, "DTSTART"),
        Some(at(4, 13).format("%Y%m%dT%H%M%SZ").to_string())
    );
    assert!(
        mails[2].subject.starts_with("Cancelled:"),
        "{}",
        mails[2].subject
    );
    assert_eq!(invites[2].0, "CANCEL");
    assert_eq!(
        ics_value(&invites[2].1, "METHOD").as_deref(),
        Some("CANCEL")
    );
    assert!(sequence(&invites[2].1) > sequence(&invites[1].1));
    env.finish().await;
}

#[tokio::test]
async fn a_held_booking_cancelled_sends_nothing_and_no_address_means_no_mail() {
    let sink = SmtpSink::start();
    let env = Env::start(options(sink.port)).await;
    let held = env.hold(at(5, 9), Some("alice@example.test")).await;
    let id = held["id"].as_str().unwrap();
    let (status, _) = env
        .send(
            ALICE,
            &["customer"],
            "POST",
            &format!("/v1/bookings/{id}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    env.book(at(5, 11), None).await;
    // Something that does send, to know the events above were handled.
    env.book(at(5, 13), Some("alice@example.test")).await;
    let mails = exactly(&sink, 1).await;
    assert!(
        mails[0].subject.starts_with("Confirmed:"),
        "{}",
        mails[0].subject
    );
    env.finish().await;
}

#[tokio::test]
async fn mail_planned_while_smtp_is_down_is_delivered_once_it_returns() {
    let port = free_port();
    let env = Env::start(options(port)).await;
    let registry = prometheus::Registry::new();
    berth_notification::Notifications::register_metrics(&registry).unwrap();
    env.book(at(6, 9), Some("alice@example.test")).await;
    env.eventually(20, "the send fails and is retried", || async {
        env.sql_count(
            "SELECT count(*) FROM notification.deliveries WHERE status = 'pending' AND attempts >= 2",
        )
        .await
            == 1
    })
    .await;
    let sink = SmtpSink::start_on(port);
    let mails = exactly(&sink, 1).await;
    assert!(mails[0].subject.starts_with("Confirmed:"));
    assert_eq!(
        env.sql_count(
            "SELECT count(*) FROM notification.deliveries WHERE status = 'sent' AND attempts >= 2"
        )
        .await,
        1
    );
    // Counted per channel and outcome (other tests in this process add to them).
    let count = |outcome: &str| {
        registry
            .gather()
            .iter()
            .filter(|f| f.name() == "berth_notification_deliveries_total")
            .flat_map(|f| f.get_metric().to_vec())
            .filter(|m| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == "channel" && l.value() == "email")
                    && m.get_label()
                        .iter()
                        .any(|l| l.name() == "outcome" && l.value() == outcome)
            })
            .map(|m| m.get_counter().value())
            .sum::<f64>()
    };
    assert!(count("retried") >= 2.0 && count("sent") >= 1.0);
    env.finish().await;
}

#[tokio::test]
async fn a_refused_address_is_recorded_failed_and_not_retried() {
    let sink = SmtpSink::start();
    let env = Env::start(Options {
        refuse: Some("gone@example.test"),
        ..options(sink.port)
    })
    .await;
    let booking = env.book(at(7, 9), Some("gone@example.test")).await;
    let id = booking["id"].as_str().unwrap();
    let failed = format!(
        "SELECT count(*) FROM notification.deliveries WHERE booking_id = '{id}' \
         AND status = 'failed' AND attempts = 1 AND due_us IS NULL AND last_error LIKE '550%'"
    );
    env.eventually(20, "the refusal is recorded", || async {
        env.sql_count(&failed).await == 1
    })
    .await;
    // Well past several retry delays: still one attempt.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(env.sql_count(&failed).await, 1);
    assert!(sink.messages().is_empty());
    env.finish().await;
}

#[tokio::test]
async fn a_refund_sends_one_receipt_to_the_bookings_customer() {
    let sink = SmtpSink::start();
    let env = Env::start(options(sink.port)).await;
    let booking = env.book(at(8, 9), Some("alice@example.test")).await;
    sink.wait_for(1).await;
    // As payment's outbox writes it (services/payment/src/model.rs).
    let refund = json!({
        "id": uuid::Uuid::now_v7(),
        "type": "payment.refunded",
        "payment_id": uuid::Uuid::now_v7(),
        "booking_id": booking["id"],
        "amount_minor": 4500,
        "currency": "EUR",
        "refunded_minor": 2250,
        "occurred_at": chrono::Utc::now(),
    })
    .to_string();
    let replica = &env.replicas[0];
    replica.handle_payment_event(&refund).await.unwrap();
    replica.handle_payment_event(&refund).await.unwrap();
    let mails = exactly(&sink, 2).await;
    assert!(
        mails[1].subject.starts_with("Refund for Consultation"),
        "{}",
        mails[1].subject
    );
    assert!(
        mails[1].text.contains("refunded 22.50 EUR"),
        "{}",
        mails[1].text
    );
    assert!(mails[1].calendar.is_none());
    // A refund of a booking never heard of waits for its events.
    let mut unknown: Value = serde_json::from_str(&refund).unwrap();
    unknown["id"] = json!(uuid::Uuid::now_v7());
    unknown["booking_id"] = json!(uuid::Uuid::now_v7());
    assert!(
        replica
            .handle_payment_event(&unknown.to_string())
            .await
            .is_err()
    );
    env.finish().await;
}

#[tokio::test]
async fn a_deleted_account_stops_unsent_mail_and_leaves_no_address_in_the_log() {
    let port = free_port();
    let env = Env::start(options(port)).await;
    let booking = env.book(at(9, 9), Some("alice@example.test")).await;
    let id = booking["id"].as_str().unwrap();
    env.eventually(20, "the confirmation waits for SMTP", || async {
        env.sql_count("SELECT count(*) FROM notification.deliveries WHERE status = 'pending' AND attempts >= 1")
            .await
            == 1
    })
    .await;
    // The account is deleted (booking anonymises it: booking.customer_anonymised).
    assert_eq!(env.booking.anonymise_customer(ALICE).await.unwrap(), 1);
    let erased = format!(
        "SELECT count(*) FROM notification.deliveries WHERE booking_id = '{id}' \
         AND status = 'superseded' AND recipient NOT LIKE '%@%' AND body = ''"
    );
    env.eventually(20, "the unsent mail is stopped and emptied", || async {
        env.sql_count(&erased).await == 1
    })
    .await;
    assert_eq!(
        env.sql_count(
            "SELECT count(*) FROM notification.bookings WHERE customer_email IS NOT NULL"
        )
        .await,
        0
    );
    let sink = SmtpSink::start_on(port);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(sink.messages().is_empty(), "mail went to a deleted account");
    env.finish().await;
}
