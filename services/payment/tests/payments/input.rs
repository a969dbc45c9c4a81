//! Bad input changes nothing: unknown, hidden, free, tampered.

use serde_json::json;

use crate::common::{ALICE, BOB, Env, Options, PRICE};

#[tokio::test]
async fn unknown_hidden_and_free_bookings_cannot_be_paid() {
    let env = Env::start(Options::default()).await;
    let alice = env.customer(ALICE);
    let bob = env.customer(BOB);
    let unknown = uuid::Uuid::now_v7().to_string();
    let (status, problem) = alice.start_payment(&unknown).await;
    assert_eq!(status, 404, "{problem}");
    let (_, booking) = alice.book(env.paid_type, &Env::slot(6, 10)).await;
    let id = booking["id"].as_str().unwrap();
    // Someone else's booking: exactly as unknown.
    let (status, hidden) = bob.start_payment(id).await;
    assert_eq!(status, 404);
    assert_eq!(hidden["title"], problem["title"]);
    let (_, free) = alice.book(env.free_type, &Env::slot(6, 12)).await;
    assert_eq!(
        alice.start_payment(free["id"].as_str().unwrap()).await.0,
        409
    );
    for body in [
        json!({}),
        json!({"booking_id": "nope"}),
        json!({"booking_id": id, "amount": 1}),
    ] {
        let (status, problem) = alice.send("POST", "/v1/payments", Some(body), None).await;
        assert!(status == 400 || status == 422, "{status} {problem}");
    }
    assert_eq!(
        env.sql_count("SELECT count(*) FROM payment.payments").await,
        0
    );
    // Someone else's payment is hidden too.
    let (_, payment) = alice.start_payment(id).await;
    let payment_id = payment["id"].as_str().unwrap();
    let (status, _) = bob
        .send("GET", &format!("/v1/payments/{payment_id}"), None, None)
        .await;
    assert_eq!(status, 404);
    let (status, list) = bob
        .send("GET", &format!("/v1/payments?booking_id={id}"), None, None)
        .await;
    assert_eq!((status, list["items"].as_array().unwrap().len()), (200, 0));
    let (status, _) = bob
        .send(
            "POST",
            &format!("/v1/payments/{payment_id}/sync"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 404);
    env.finish().await;
}

#[tokio::test]
async fn an_intent_with_tampered_metadata_confirms_nothing() {
    let env = Env::start(Options::default()).await;
    let alice = env.customer(ALICE);
    let (booking, _payment) = alice.book_and_start_paying(&Env::slot(6, 14)).await;
    let id = booking["id"].as_str().unwrap();
    // An attacker with a Stripe account of their own cannot reach ours, but
    // someone who can create intents in ours makes a cheap one "for" the
    // booking and pays it: its webhook is signed and genuine.
    let forged: serde_json::Value = env
        .http
        .post(format!("{}/v1/payment_intents", env.emulator.base_url))
        .bearer_auth("sk_test_berth")
        .form(&[
            ("amount", "1"),
            ("currency", "eur"),
            ("capture_method", "manual"),
            ("metadata[booking_id]", id),
            ("payment_method", "pm_card_visa"),
            ("confirm", "true"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(forged["status"], "requires_capture");
    env.eventually(10, "its webhooks are delivered", || async {
        env.control
            .deliveries()
            .await
            .unwrap()
            .iter()
            .any(|d| d.event_type == "payment_intent.amount_capturable_updated")
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(alice.booking(id).await["status"], "pending_payment");
    let forged_state = env.intent(forged["id"].as_str().unwrap()).await;
    assert_eq!(forged_state.amount_received, 0, "never captured");
    // The reconciler reports it: an intent Berth has no payment for.
    let findings = env.payments[0].reconcile(true).await.unwrap();
    assert!(
        findings.unknown_intents.is_empty(),
        "it carries no payment id: {findings:?}"
    );
    assert_eq!(PRICE, 4500);
    env.finish().await;
}
