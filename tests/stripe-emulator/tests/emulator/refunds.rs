//! Refunds never exceed what was received, and only succeeded intents refund.

use crate::common::{Api, start};

#[tokio::test]
async fn refunds_stop_at_the_amount_received() {
    let emu = start().await;
    let api = Api::new(&emu);
    let pi = api.captured(1000).await;

    let part = api
        .post(
            "/v1/refunds",
            &format!("payment_intent={pi}&amount=400&metadata[reason]=late"),
        )
        .await;
    assert_eq!(part.status, 200, "{}", part.body);
    assert_eq!(part.json["status"], "succeeded");
    assert_eq!(part.json["metadata"]["reason"], "late");

    let too_much = api
        .post("/v1/refunds", &format!("payment_intent={pi}&amount=601"))
        .await;
    assert_eq!(too_much.status, 400);
    assert_eq!(too_much.json["error"]["code"], "amount_too_large");
    assert_eq!(too_much.json["error"]["param"], "amount");

    // No amount: whatever is left.
    let rest = api
        .post("/v1/refunds", &format!("payment_intent={pi}"))
        .await;
    assert_eq!(rest.json["amount"], 600);

    let nothing_left = api
        .post("/v1/refunds", &format!("payment_intent={pi}&amount=1"))
        .await;
    assert_eq!(nothing_left.status, 400);
    assert_eq!(
        nothing_left.json["error"]["code"],
        "charge_already_refunded"
    );

    let listed = api.get(&format!("/v1/refunds?payment_intent={pi}")).await;
    assert_eq!(listed.json["data"].as_array().unwrap().len(), 2);
    let state = emu.control().state().await.unwrap();
    assert_eq!(state.payment_intents[0].amount_refunded, 1000);
    assert_eq!(state.refunds.iter().map(|r| r.amount).sum::<i64>(), 1000);
}

#[tokio::test]
async fn a_partial_capture_refunds_only_what_was_captured() {
    let emu = start().await;
    let api = Api::new(&emu);
    let authorised = api.authorised(1000, "pm_card_visa").await;
    api.post(
        &format!("/v1/payment_intents/{}/capture", authorised.id()),
        "amount_to_capture=700",
    )
    .await;
    let over = api
        .post(
            "/v1/refunds",
            &format!("payment_intent={}&amount=701", authorised.id()),
        )
        .await;
    assert_eq!(over.json["error"]["code"], "amount_too_large");
    // Refunding by the charge id works too.
    let charge = authorised.json["latest_charge"].as_str().unwrap();
    let by_charge = api.post("/v1/refunds", &format!("charge={charge}")).await;
    assert_eq!(by_charge.json["amount"], 700);
}

#[tokio::test]
async fn only_succeeded_intents_refund() {
    let emu = start().await;
    let api = Api::new(&emu);
    let authorised = api.authorised(1000, "pm_card_visa").await;
    let uncaptured = api
        .post(
            "/v1/refunds",
            &format!("payment_intent={}", authorised.id()),
        )
        .await;
    assert_eq!(uncaptured.status, 400);
    assert_eq!(
        uncaptured.json["error"]["code"],
        "payment_intent_unexpected_state"
    );
    let unknown = api.post("/v1/refunds", "payment_intent=pi_missing").await;
    assert_eq!(
        (unknown.status, &unknown.json["error"]["code"]),
        (400, &"resource_missing".into())
    );
    let neither = api.post("/v1/refunds", "amount=5").await;
    assert_eq!(neither.json["error"]["code"], "parameter_missing");
    assert!(emu.control().state().await.unwrap().refunds.is_empty());
}
