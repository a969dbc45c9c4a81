//! The money paths: paid, declined, abandoned, late, cancelled.

use std::time::Duration;

use serde_json::json;

use crate::common::{ALICE, BOB, Env, Options, PRICE};

#[tokio::test]
async fn a_paid_booking_is_confirmed_by_the_webhook_and_captured() {
    let env = Env::start(Options::default()).await;
    let alice = env.customer(ALICE);
    let (booking, payment) = alice.book_and_start_paying(&Env::slot(3, 10)).await;
    let id = booking["id"].as_str().unwrap();
    assert_eq!(payment["state"], "awaiting_payment");
    assert_eq!(payment["amount_minor"], PRICE);
    let intent = env
        .intent(payment["payment_intent"].as_str().unwrap())
        .await;
    assert_eq!(intent.capture_method, "manual");
    assert_eq!(intent.amount, PRICE);
    assert_eq!(intent.metadata["booking_id"], id);

    // The client cannot confirm a priced booking itself.
    let (status, problem) = alice
        .send("POST", &format!("/v1/bookings/{id}/confirm"), None, None)
        .await;
    assert_eq!(status, 409, "{problem}");

    let (status, _) = env.pay(&payment, "pm_card_visa").await;
    assert_eq!(status, 200);
    let confirmed = alice.wait_for_booking(id, "confirmed").await;
    assert!(confirmed["hold_expires_at"].is_null());
    let intent = env.intent(&intent.id).await;
    assert_eq!(
        (intent.status.as_str(), intent.amount_received),
        ("succeeded", PRICE)
    );
    let paid = alice.payment(payment["id"].as_str().unwrap()).await;
    assert_eq!(paid["state"], "paid");
    assert!(paid.get("client_secret").is_none(), "no secret once paid");
    assert_eq!(
        env.sql_count(&format!(
            "SELECT count(*) FROM booking.outbox WHERE booking_id = '{id}' AND event_type = 'booking.paid'"
        ))
        .await,
        1
    );
    assert_eq!(
        env.sql_count(
            "SELECT count(*) FROM payment.outbox WHERE event_type = 'payment.authorised'"
        )
        .await,
        1
    );
    assert!(env.money_findings().await.is_empty());
    env.finish().await;
}

#[tokio::test]
async fn a_declined_card_fails_the_payment_and_frees_the_slot() {
    let env = Env::start(Options::default()).await;
    let alice = env.customer(ALICE);
    let start = Env::slot(3, 12);
    let (booking, payment) = alice.book_and_start_paying(&start).await;
    let id = booking["id"].as_str().unwrap();
    let (status, _) = env.pay(&payment, "pm_card_chargeDeclined").await;
    assert_eq!(status, 402);
    let failed = alice.wait_for_booking(id, "payment_failed").await;
    assert_eq!(failed["status_reason"], "declined");
    let intent = env
        .intent(payment["payment_intent"].as_str().unwrap())
        .await;
    assert_eq!(
        intent.status, "canceled",
        "no later authorisation can charge"
    );
    // The time is free again.
    let bob = env.customer(BOB);
    env.eventually(10, "the claim is released", || async {
        bob.book(env.free_type, &start).await.0 == 201
    })
    .await;
    assert!(env.money_findings().await.is_empty());
    env.finish().await;
}

#[tokio::test]
async fn a_payment_needing_action_that_is_abandoned_is_cancelled() {
    let env = Env::start(Options {
        hold_for: Duration::from_secs(1),
        abandon_after: Duration::from_millis(1),
        ..Options::default()
    })
    .await;
    let alice = env.customer(ALICE);
    let (booking, payment) = alice.book_and_start_paying(&Env::slot(3, 14)).await;
    let id = booking["id"].as_str().unwrap();
    let (status, body) = env.pay(&payment, "pm_card_authenticationRequired").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "requires_action");
    alice.wait_for_booking(id, "expired").await;
    // The reconciler gives up on it: the intent is cancelled, so a 3-D
    // Secure completed later cannot charge an unbooked customer.
    env.payments[0].reconcile(false).await.unwrap();
    let payment_id = payment["id"].as_str().unwrap();
    let ended = alice.wait_for_payment(payment_id, "failed").await;
    assert_eq!(ended["failure"], "abandoned");
    let intent = env
        .intent(payment["payment_intent"].as_str().unwrap())
        .await;
    assert_eq!(intent.status, "canceled");
    assert!(
        env.control
            .action(&intent.id, berth_stripe_emulator::ActionOutcome::Succeed)
            .await
            .is_err()
    );
    assert!(env.money_findings().await.is_empty());
    env.finish().await;
}

#[tokio::test]
async fn a_payment_after_the_hold_lapsed_takes_the_slot_again_if_it_is_free() {
    let env = Env::start(Options {
        hold_for: Duration::from_secs(1),
        ..Options::default()
    })
    .await;
    let alice = env.customer(ALICE);
    let (booking, payment) = alice.book_and_start_paying(&Env::slot(3, 16)).await;
    let id = booking["id"].as_str().unwrap();
    // Expired and told so (booking.expired), not only lapsed.
    env.stored_status(id, "expired").await;
    let (status, _) = env.pay(&payment, "pm_card_visa").await;
    assert_eq!(status, 200);
    let confirmed = alice.wait_for_booking(id, "confirmed").await;
    assert_eq!(confirmed["price_minor"], PRICE);
    assert_eq!(
        env.sql_count(&format!(
            "SELECT count(*) FROM booking.outbox WHERE booking_id = '{id}' AND event_type = 'booking.reinstated'"
        ))
        .await,
        1
    );
    assert!(env.money_findings().await.is_empty());
    env.finish().await;
}

#[tokio::test]
async fn a_payment_after_the_hold_lapsed_and_the_slot_was_taken_is_cancelled() {
    let env = Env::start(Options {
        hold_for: Duration::from_secs(1),
        ..Options::default()
    })
    .await;
    let alice = env.customer(ALICE);
    let start = Env::slot(3, 18);
    let (booking, payment) = alice.book_and_start_paying(&start).await;
    let id = booking["id"].as_str().unwrap();
    alice.wait_for_booking(id, "expired").await;
    // Bob books (and keeps) the time meanwhile (Cal.com #11278).
    let bob = env.customer(BOB);
    let (status, bobs) = bob.book(env.free_type, &start).await;
    assert_eq!(status, 201, "{bobs}");
    let (status, _) = env.pay(&payment, "pm_card_visa").await;
    assert_eq!(status, 200);
    let failed = alice.wait_for_booking(id, "payment_failed").await;
    assert_eq!(failed["status_reason"], "slot_taken");
    let intent = env
        .intent(payment["payment_intent"].as_str().unwrap())
        .await;
    assert_eq!(
        (intent.status.as_str(), intent.amount_received),
        ("canceled", 0)
    );
    assert_eq!(
        bob.booking(bobs["id"].as_str().unwrap()).await["status"],
        "held"
    );
    assert!(env.money_findings().await.is_empty());
    env.finish().await;
}

#[tokio::test]
async fn a_cancelled_paid_booking_is_refunded_by_its_policy() {
    let env = Env::start(Options::default()).await;
    let alice = env.customer(ALICE);
    // More than 24 h ahead: a full refund.
    let (early, early_payment) = alice.book_and_start_paying(&Env::slot(3, 20)).await;
    // Less than 24 h ahead: half back. Days end at 23:59 here, so a
    // 23:30 start (its slot would end at midnight) moves to 00:00.
    let mut soon = (chrono::Utc::now() + chrono::TimeDelta::hours(3))
        .duration_round(chrono::TimeDelta::minutes(30))
        .unwrap();
    if soon.format("%H:%M").to_string() == "23:30" {
        soon += chrono::TimeDelta::minutes(30);
    }
    let soon = soon.to_rfc3339();
    let (late, late_payment) = alice.book_and_start_paying(&soon).await;
    for (booking, payment) in [(&early, &early_payment), (&late, &late_payment)] {
        env.pay(payment, "pm_card_visa").await;
        let id = booking["id"].as_str().unwrap();
        alice.wait_for_booking(id, "confirmed").await;
        let (status, body) = alice
            .send("POST", &format!("/v1/bookings/{id}/cancel"), None, None)
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let early_done = alice
        .wait_for_payment(early_payment["id"].as_str().unwrap(), "refunded")
        .await;
    assert_eq!(early_done["refunded_minor"], PRICE);
    let late_id = late_payment["id"].as_str().unwrap();
    let late_done = alice.wait_for_payment(late_id, "refunded").await;
    assert_eq!(late_done["refunded_minor"], PRICE / 2);
    let intent = env
        .intent(late_payment["payment_intent"].as_str().unwrap())
        .await;
    assert_eq!(intent.amount_refunded, PRICE / 2);

    // Staff may refund the rest beyond the policy; the customer may not.
    let (status, _) = alice
        .send(
            "POST",
            &format!("/v1/payments/{late_id}/refunds"),
            Some(json!({})),
            Some("r1"),
        )
        .await;
    assert_eq!(status, 403);
    let staff = env.staff();
    let (status, body) = staff
        .send(
            "POST",
            &format!("/v1/payments/{late_id}/refunds"),
            Some(json!({})),
            Some("r1"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    env.eventually(10, "the staff refund lands", || async {
        env.intent(intent.id.as_str()).await.amount_refunded == PRICE
    })
    .await;
    // The same key again refunds nothing more; another amount under it is refused.
    let (status, _) = staff
        .send(
            "POST",
            &format!("/v1/payments/{late_id}/refunds"),
            Some(json!({})),
            Some("r1"),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = staff
        .send(
            "POST",
            &format!("/v1/payments/{late_id}/refunds"),
            Some(json!({"amount_minor": 1})),
            Some("r1"),
        )
        .await;
    assert_eq!(status, 422);
    // Nothing is left to refund.
    let (status, _) = staff
        .send(
            "POST",
            &format!("/v1/payments/{late_id}/refunds"),
            Some(json!({})),
            Some("r2"),
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(env.intent(&intent.id).await.amount_refunded, PRICE);
    assert!(env.money_findings().await.is_empty());
    env.finish().await;
}

#[tokio::test]
async fn the_money_checker_finds_a_confirmed_booking_without_its_capture() {
    let env = Env::start(Options::default()).await;
    let alice = env.customer(ALICE);
    let (booking, payment) = alice.book_and_start_paying(&Env::slot(3, 22)).await;
    env.pay(&payment, "pm_card_visa").await;
    let id = booking["id"].as_str().unwrap();
    alice.wait_for_booking(id, "confirmed").await;
    assert!(env.money_findings().await.is_empty());
    // Someone refunds it behind Berth's back, at Stripe.
    let response = env
        .http
        .post(format!("{}/v1/refunds", env.emulator.base_url))
        .bearer_auth("sk_test_berth")
        .form(&[(
            "payment_intent",
            payment["payment_intent"].as_str().unwrap(),
        )])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let findings = env.money_findings().await;
    assert!(
        findings
            .iter()
            .any(|f| f.contains("confirmed but not paid")),
        "{findings:?}"
    );
    env.finish().await;
}

use chrono::DurationRound;
