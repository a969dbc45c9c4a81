#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::*;

#[test]
fn the_default_schedule_spans_about_three_days_and_grows() {
    let config = WebhookConfig::default();
    let total: Duration = config.retry_schedule.iter().sum();
    let hours = total.as_secs() / 3600;
    assert!((60..=80).contains(&hours), "{hours} h");
    assert!(config.retry_schedule.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(config.retry_schedule[0], Duration::from_secs(5));
    // Jittered within ±10 %, and spent after the last step.
    let first = config.retry_delay(1).unwrap();
    assert!((4500..=5500).contains(&first.as_millis()), "{first:?}");
    let n = i64::try_from(config.retry_schedule.len()).unwrap();
    assert!(config.retry_delay(n).is_some());
    assert!(config.retry_delay(n + 1).is_none());
    assert!(config.retry_delay(0).is_none());
}

#[test]
fn secrets_are_standard_webhooks_secrets_and_each_signs() {
    let a = new_secret();
    let b = new_secret();
    assert_ne!(a, b);
    assert!(a.starts_with("whsec_"));
    let raw = base64::engine::general_purpose::STANDARD
        .decode(a.trim_start_matches("whsec_"))
        .unwrap();
    assert_eq!(raw.len(), 32);
    let one = signature(&[&a], "msg_1", 1_700_000_000, "{}").unwrap();
    let two = signature(&[&a, &b], "msg_1", 1_700_000_000, "{}").unwrap();
    assert!(one.starts_with("v1,"));
    assert_eq!(two.split(' ').count(), 2);
    assert!(two.starts_with(&one));
}

#[test]
fn a_rotated_out_secret_signs_only_during_its_grace() {
    let now = crate::model::now();
    let mut e = Endpoint {
        id: Uuid::nil(),
        owner_id: "o".into(),
        scope: PLATFORM.into(),
        url: "https://example.com/hook".into(),
        description: None,
        event_types: vec![],
        status: ENABLED.into(),
        disabled_reason: None,
        secret: "new".into(),
        previous_secret: Some("old".into()),
        previous_secret_expires_at: Some(now + chrono::TimeDelta::hours(1)),
        created_at: now,
        updated_at: now,
    };
    assert_eq!(e.signing_secrets(now), ["new", "old"]);
    e.previous_secret_expires_at = Some(now - chrono::TimeDelta::seconds(1));
    assert_eq!(e.signing_secrets(now), ["new"]);
}

#[test]
fn payloads_carry_no_customer_data() {
    let now = crate::model::now();
    let booking = BookingSnapshot {
        id: Uuid::now_v7(),
        resource_id: Uuid::now_v7(),
        appointment_type_id: Uuid::now_v7(),
        start: now,
        end: now,
        status: "confirmed".into(),
        price_minor: 1500,
        currency: "EUR".into(),
        customer: Some(crate::model::CustomerFacts {
            name: Some("Ada Lovelace".into()),
            email: Some("ada@example.test".into()),
            phone: None,
            locale: None,
        }),
        version: 2,
    };
    let body = booking_payload(Uuid::now_v7(), "booking.confirmed", now, &booking);
    assert!(!body.contains("Ada") && !body.contains("ada@"), "{body}");
    assert!(!body.contains("customer"), "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["type"], "booking.confirmed");
    assert_eq!(v["data"]["booking"]["price_minor"], 1500);
}
