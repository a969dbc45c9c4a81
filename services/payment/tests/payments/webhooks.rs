//! The webhook inbox: signatures, duplicates, order, lateness.

use berth_stripe_emulator::{Faults, signature_header};

use crate::common::{ALICE, Env, Options, PRICE, SECRET};

async fn post_webhook(env: &Env, body: &str, signature: &str) -> (u16, serde_json::Value) {
    let response = env
        .http
        .post(format!("{}/v1/webhooks/stripe", env.bases[0]))
        .header("stripe-signature", signature)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: serde_json::Value = response.json().await.unwrap();
    if status >= 400 {
        assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    }
    (status, body)
}

#[tokio::test]
async fn bad_and_stale_signatures_are_refused_and_nothing_is_stored() {
    let env = Env::start(Options::default()).await;
    let body = r#"{"id":"evt_forged","object":"event","type":"payment_intent.amount_capturable_updated","data":{"object":{"id":"pi_x","object":"payment_intent"}}}"#;
    let now = chrono::Utc::now().timestamp();
    let wrong_secret = signature_header(body, &["whsec_other".to_owned()], now);
    let (status, problem) = post_webhook(&env, body, &wrong_secret).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(
        problem["type"].as_str().unwrap().rsplit('/').next(),
        Some("webhook-signature")
    );
    // Authentic, but three days old: a replay.
    let stale = signature_header(body, &[SECRET.to_owned()], now - 3 * 86_400);
    assert_eq!(post_webhook(&env, body, &stale).await.0, 400);
    let tampered = signature_header(body, &[SECRET.to_owned()], now);
    assert_eq!(
        post_webhook(&env, &body.replace("pi_x", "pi_y"), &tampered)
            .await
            .0,
        400
    );
    assert_eq!(post_webhook(&env, body, "garbage").await.0, 400);
    assert_eq!(
        env.sql_count("SELECT count(*) FROM payment.stripe_events")
            .await,
        0
    );
    // A good one is stored once, and its duplicate is answered without a second row.
    let good = signature_header(body, &[SECRET.to_owned()], now);
    let (status, first) = post_webhook(&env, body, &good).await;
    assert_eq!((status, first["duplicate"].as_bool()), (200, Some(false)));
    let (status, again) = post_webhook(&env, body, &good).await;
    assert_eq!((status, again["duplicate"].as_bool()), (200, Some(true)));
    assert_eq!(
        env.sql_count("SELECT count(*) FROM payment.stripe_events")
            .await,
        1
    );
    env.finish().await;
}

#[tokio::test]
async fn duplicated_reordered_and_late_webhooks_confirm_once() {
    let env = Env::start(Options::default()).await;
    env.control
        .set_faults(&Faults {
            duplicate: true,
            reorder: true,
            hold: true,
            ..Faults::default()
        })
        .await
        .unwrap();
    let alice = env.customer(ALICE);
    let (booking, payment) = alice.book_and_start_paying(&Env::slot(4, 10)).await;
    let id = booking["id"].as_str().unwrap();
    env.pay(&payment, "pm_card_visa").await;
    // No webhook yet (held): the booking waits, the client's sync may look.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(alice.booking(id).await["status"], "pending_payment");
    let payment_id = payment["id"].as_str().unwrap();
    let (status, synced) = alice
        .send(
            "POST",
            &format!("/v1/payments/{payment_id}/sync"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 200, "{synced}");
    alice.wait_for_booking(id, "confirmed").await;
    // Now every event arrives, newest first, each twice — long after.
    env.control.flush().await.unwrap();
    let intent = payment["payment_intent"].as_str().unwrap();
    let state = env.control.state().await.unwrap();
    let events = state
        .payment_intents
        .iter()
        .filter(|i| i.id == intent)
        .count();
    assert_eq!(events, 1);
    env.eventually(10, "every delivery is answered", || async {
        let deliveries = env.control.deliveries().await.unwrap();
        !deliveries.is_empty() && deliveries.iter().all(|d| d.status == Some(200))
    })
    .await;
    // And one a day later, redelivered: still nothing changes.
    let any = env.control.deliveries().await.unwrap()[0].event_id.clone();
    env.control.redeliver(&any).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(env.intent(intent).await.amount_received, PRICE);
    assert_eq!(
        env.sql_count(&format!(
            "SELECT count(*) FROM booking.outbox WHERE booking_id = '{id}' AND event_type = 'booking.paid'"
        ))
        .await,
        1,
        "confirmed once"
    );
    assert_eq!(
        env.sql_count("SELECT count(*) FROM payment.stripe_events WHERE processed_us IS NULL")
            .await,
        0
    );
    assert!(env.money_findings().await.is_empty());
    env.finish().await;
}

#[tokio::test]
async fn an_event_stored_but_never_applied_is_applied_by_the_reconciler() {
    let env = Env::start(Options::default()).await;
    let alice = env.customer(ALICE);
    let (booking, payment) = alice.book_and_start_paying(&Env::slot(4, 12)).await;
    env.control
        .set_faults(&Faults {
            hold: true,
            ..Faults::default()
        })
        .await
        .unwrap();
    env.pay(&payment, "pm_card_visa").await;
    // As if the process died right after answering 200: the event is in
    // the inbox, unapplied, and no step is due.
    env.control.flush().await.unwrap();
    let id = booking["id"].as_str().unwrap();
    alice.wait_for_booking(id, "confirmed").await;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&env.db.url)
        .await
        .unwrap();
    sqlx::query("UPDATE payment.stripe_events SET processed_us = NULL, received_us = 0")
        .execute(&mut conn)
        .await
        .unwrap();
    let findings = env.payments[0].reconcile(false).await.unwrap();
    assert!(findings.applied_events >= 1, "{findings:?}");
    assert_eq!(
        env.sql_count("SELECT count(*) FROM payment.stripe_events WHERE processed_us IS NULL")
            .await,
        0
    );
    env.finish().await;
}
