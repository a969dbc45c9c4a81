//! Stripe failing: 500s before and after the effect, latency, a breaker.

use berth_stripe_emulator::{FailNext, Faults};

use crate::common::{ALICE, Env, Options, PRICE};

#[tokio::test]
async fn stripe_down_while_creating_answers_503_and_a_retry_succeeds() {
    let env = Env::start(Options::default()).await;
    let alice = env.customer(ALICE);
    let (status, booking) = alice.book(env.paid_type, &Env::slot(5, 10)).await;
    assert_eq!(status, 201);
    let id = booking["id"].as_str().unwrap();
    env.control
        .set_faults(&Faults {
            fail_next: vec![FailNext::new("POST", "/v1/payment_intents").times(50)],
            ..Faults::default()
        })
        .await
        .unwrap();
    let (status, problem) = alice.start_payment(id).await;
    assert_eq!(status, 503, "{problem}");
    env.control.clear_faults().await.unwrap();
    // The payment kept retrying; asking again finds it made.
    env.eventually(10, "the intent is created", || async {
        alice.start_payment(id).await.0 == 200
    })
    .await;
    assert_eq!(env.control.state().await.unwrap().payment_intents.len(), 1);
    env.finish().await;
}

#[tokio::test]
async fn a_create_that_failed_after_its_effect_does_not_make_a_second_intent() {
    let env = Env::start(Options::default()).await;
    let alice = env.customer(ALICE);
    let (_, booking) = alice.book(env.paid_type, &Env::slot(5, 12)).await;
    let id = booking["id"].as_str().unwrap();
    // The intent is made, then Stripe answers 500 and saves that answer
    // under the key: a retry of the key only replays the 500.
    env.control
        .set_faults(&Faults {
            fail_next: vec![FailNext::new("POST", "/v1/payment_intents").after_effect()],
            ..Faults::default()
        })
        .await
        .unwrap();
    let (status, payment) = alice.start_payment(id).await;
    assert!(status == 201 || status == 503, "{payment}");
    env.eventually(10, "the payment adopts the intent Stripe made", || async {
        let (status, body) = alice.start_payment(id).await;
        status == 200 && body["state"] == "awaiting_payment"
    })
    .await;
    let intents = env.control.state().await.unwrap().payment_intents;
    assert_eq!(intents.len(), 1, "one intent, not two: {intents:?}");
    env.finish().await;
}

#[tokio::test]
async fn capture_failures_are_retried_until_paid() {
    let env = Env::start(Options::default()).await;
    let alice = env.customer(ALICE);
    let (booking, payment) = alice.book_and_start_paying(&Env::slot(5, 14)).await;
    let intent = payment["payment_intent"].as_str().unwrap();
    env.control
        .set_faults(&Faults {
            fail_next: vec![
                FailNext::new("POST", &format!("/v1/payment_intents/{intent}/capture")).times(2),
                FailNext::new("POST", &format!("/v1/payment_intents/{intent}/capture"))
                    .after_effect(),
            ],
            ..Faults::default()
        })
        .await
        .unwrap();
    env.pay(&payment, "pm_card_visa").await;
    alice
        .wait_for_booking(booking["id"].as_str().unwrap(), "confirmed")
        .await;
    assert_eq!(env.intent(intent).await.amount_received, PRICE);
    assert!(env.money_findings().await.is_empty());
    env.finish().await;
}

#[tokio::test]
async fn a_capture_that_keeps_failing_releases_the_slot_and_cancels_the_authorisation() {
    let env = Env::start(Options::default()).await;
    let alice = env.customer(ALICE);
    let (booking, payment) = alice.book_and_start_paying(&Env::slot(5, 16)).await;
    let intent = payment["payment_intent"].as_str().unwrap();
    env.control
        .set_faults(&Faults {
            fail_next: vec![
                FailNext::new("POST", &format!("/v1/payment_intents/{intent}/capture")).times(1000),
            ],
            ..Faults::default()
        })
        .await
        .unwrap();
    env.pay(&payment, "pm_card_visa").await;
    let failed = alice
        .wait_for_booking(booking["id"].as_str().unwrap(), "payment_failed")
        .await;
    assert_eq!(failed["status_reason"], "capture_failed");
    let state = env.intent(intent).await;
    assert_eq!(
        (state.status.as_str(), state.amount_received),
        ("canceled", 0)
    );
    assert!(env.money_findings().await.is_empty());
    env.finish().await;
}

#[tokio::test]
async fn an_authorisation_that_expires_before_capture_fails_the_booking() {
    let env = Env::start(Options::default()).await;
    let alice = env.customer(ALICE);
    let (booking, payment) = alice.book_and_start_paying(&Env::slot(5, 18)).await;
    let intent = payment["payment_intent"].as_str().unwrap();
    // Captures fail (Stripe down) while the authorisation runs out.
    env.control
        .set_faults(&Faults {
            fail_next: vec![
                FailNext::new("POST", &format!("/v1/payment_intents/{intent}/capture")).times(2),
            ],
            ..Faults::default()
        })
        .await
        .unwrap();
    env.pay(&payment, "pm_card_visa").await;
    env.control.expire(intent).await.ok();
    let id = booking["id"].as_str().unwrap();
    env.eventually(20, "the booking ends one way or the other", || async {
        let status = alice.booking(id).await["status"].clone();
        status == "confirmed" || status == "payment_failed"
    })
    .await;
    // Either the capture won the race (paid) or the expiry did (failed,
    // nothing charged); never a confirmed booking without the money.
    let findings = env.money_findings().await;
    assert!(findings.is_empty(), "{findings:?}");
    env.finish().await;
}

#[tokio::test]
async fn stripe_timing_out_leaves_no_second_intent_and_no_unpaid_confirmation() {
    let env = Env::start(Options {
        stripe_timeout: std::time::Duration::from_millis(300),
        ..Options::default()
    })
    .await;
    let alice = env.customer(ALICE);
    let (_, booking) = alice.book(env.paid_type, &Env::slot(5, 20)).await;
    let id = booking["id"].as_str().unwrap();
    // Every call takes longer than the deadline: it may take effect at
    // Stripe while the saga sees only a timeout.
    env.control
        .set_faults(&Faults {
            api_latency_ms: 800,
            ..Faults::default()
        })
        .await
        .unwrap();
    let (status, problem) = alice.start_payment(id).await;
    assert_eq!(status, 503, "{problem}");
    env.control.clear_faults().await.unwrap();
    env.eventually(15, "the payment is made with the same key", || async {
        alice.start_payment(id).await.0 == 200
    })
    .await;
    let (_, payment) = alice.start_payment(id).await;
    assert_eq!(
        env.control.state().await.unwrap().payment_intents.len(),
        1,
        "one intent"
    );
    // Slow again while the saga secures and captures.
    env.control
        .set_faults(&Faults {
            api_latency_ms: 800,
            ..Faults::default()
        })
        .await
        .unwrap();
    env.pay(&payment, "pm_card_visa").await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    env.control.clear_faults().await.unwrap();
    alice.wait_for_booking(id, "confirmed").await;
    let intent = env
        .intent(payment["payment_intent"].as_str().unwrap())
        .await;
    assert_eq!(intent.amount_received, PRICE);
    assert!(env.money_findings().await.is_empty());
    env.finish().await;
}
