//! Stripe's idempotency semantics, one rule per test.

use berth_stripe_emulator::{FailNext, Faults};

use crate::common::{Api, start};

const CREATE: &str = "amount=2000&currency=eur&capture_method=manual&metadata[booking_id]=b-7";

#[tokio::test]
async fn a_retry_replays_the_first_answer_without_a_second_effect() {
    let emu = start().await;
    let api = Api::new(&emu);
    let first = api
        .post_with("/v1/payment_intents", CREATE, Some("k-1"))
        .await;
    // Same parameters in another order are the same request.
    let again = api
        .post_with(
            "/v1/payment_intents",
            "metadata[booking_id]=b-7&currency=eur&capture_method=manual&amount=2000",
            Some("k-1"),
        )
        .await;
    assert_eq!(first.status, 200);
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.header("original-request"), first.header("request-id"));
    assert_eq!(first.header("idempotent-replayed"), None);
    assert_eq!(
        emu.control().state().await.unwrap().payment_intents.len(),
        1
    );
    let created = api.get("/v1/events?type=payment_intent.created").await;
    assert_eq!(created.json["data"].as_array().unwrap().len(), 1);
    // The event names the request and key that caused it.
    assert_eq!(created.json["data"][0]["request"]["idempotency_key"], "k-1");
    assert_eq!(
        created.json["data"][0]["request"]["id"],
        first.header("request-id").unwrap()
    );
}

#[tokio::test]
async fn the_same_key_with_other_parameters_is_refused() {
    let emu = start().await;
    let api = Api::new(&emu);
    api.post_with("/v1/payment_intents", CREATE, Some("k-2"))
        .await;
    let other = api
        .post_with(
            "/v1/payment_intents",
            "amount=2001&currency=eur",
            Some("k-2"),
        )
        .await;
    assert_eq!(other.status, 400);
    assert_eq!(other.json["error"]["type"], "idempotency_error");
    // Another endpoint under the same key is a mismatch too.
    let elsewhere = api
        .post_with("/v1/refunds", "payment_intent=pi_x", Some("k-2"))
        .await;
    assert_eq!(elsewhere.json["error"]["type"], "idempotency_error");
    // Neither refused request did anything.
    assert_eq!(
        emu.control().state().await.unwrap().payment_intents.len(),
        1
    );
}

#[tokio::test]
async fn a_concurrent_request_with_the_key_in_flight_gets_409() {
    let emu = start().await;
    let api = Api::new(&emu);
    let control = emu.control();
    control
        .set_faults(&Faults {
            api_latency_ms: 1000,
            ..Faults::default()
        })
        .await
        .unwrap();
    let slow = api.post_with("/v1/payment_intents", CREATE, Some("k-3"));
    let racer = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        api.post_with("/v1/payment_intents", CREATE, Some("k-3"))
            .await
    };
    let (first, second) = tokio::join!(slow, racer);
    assert_eq!(first.status, 200);
    assert_eq!(second.status, 409, "{}", second.body);
    assert_eq!(second.json["error"]["type"], "idempotency_error");
    assert_eq!(second.json["error"]["code"], "idempotency_key_in_use");
    control.clear_faults().await.unwrap();
    let replay = api
        .post_with("/v1/payment_intents", CREATE, Some("k-3"))
        .await;
    assert_eq!(replay.body, first.body);
}

#[tokio::test]
async fn a_500_after_the_effect_is_saved_and_replayed() {
    let emu = start().await;
    let api = Api::new(&emu);
    let control = emu.control();
    let authorised = api.authorised(3000, "pm_card_visa").await;
    let capture = format!("/v1/payment_intents/{}/capture", authorised.id());
    control
        .set_faults(&Faults {
            fail_next: vec![FailNext::new("POST", "/v1/payment_intents/").after_effect()],
            ..Faults::default()
        })
        .await
        .unwrap();
    let first = api.post_with(&capture, "", Some("cap-1")).await;
    assert_eq!(first.status, 500);
    assert_eq!(first.json["error"]["type"], "api_error");
    // The capture happened although the caller saw a 500 ...
    let state = control.state().await.unwrap();
    assert_eq!(state.payment_intents[0].status, "succeeded");
    assert_eq!(state.payment_intents[0].amount_received, 3000);
    // ... and the retry with the key replays the 500, as Stripe does.
    let retry = api.post_with(&capture, "", Some("cap-1")).await;
    assert_eq!(retry.status, 500);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(retry.body, first.body);
    // Reading the intent shows the truth.
    let read = api
        .get(&format!("/v1/payment_intents/{}", authorised.id()))
        .await;
    assert_eq!(read.json["status"], "succeeded");
}

#[tokio::test]
async fn failures_before_execution_are_not_saved() {
    let emu = start().await;
    let api = Api::new(&emu);
    let control = emu.control();
    // A 500 before any effect (fail_next, and the seeded error rate).
    control
        .set_faults(&Faults {
            fail_next: vec![FailNext::new("POST", "/v1/payment_intents")],
            ..Faults::default()
        })
        .await
        .unwrap();
    let failed = api
        .post_with("/v1/payment_intents", CREATE, Some("k-5"))
        .await;
    assert_eq!(failed.status, 500);
    assert!(control.state().await.unwrap().payment_intents.is_empty());
    let retried = api
        .post_with("/v1/payment_intents", CREATE, Some("k-5"))
        .await;
    assert_eq!(retried.status, 200);
    assert_eq!(retried.header("idempotent-replayed"), None);

    control
        .set_faults(&Faults {
            api_error_rate: 1.0,
            ..Faults::default()
        })
        .await
        .unwrap();
    let failed = api
        .post_with("/v1/payment_intents", CREATE, Some("k-6"))
        .await;
    assert_eq!(failed.status, 500);
    control.clear_faults().await.unwrap();
    let retried = api
        .post_with("/v1/payment_intents", CREATE, Some("k-6"))
        .await;
    assert_eq!(retried.status, 200);

    // A parameter that fails validation.
    let invalid = api
        .post_with(
            "/v1/payment_intents",
            "amount=abc&currency=eur",
            Some("k-7"),
        )
        .await;
    assert_eq!(invalid.status, 400);
    assert_eq!(invalid.json["error"]["code"], "parameter_invalid_integer");
    let fixed = api
        .post_with("/v1/payment_intents", "amount=10&currency=eur", Some("k-7"))
        .await;
    assert_eq!(fixed.status, 200);
    assert_eq!(control.state().await.unwrap().payment_intents.len(), 3);
}

#[tokio::test]
async fn a_card_decline_is_saved_like_any_executed_answer() {
    let emu = start().await;
    let api = Api::new(&emu);
    let created = api
        .post("/v1/payment_intents", "amount=100&currency=eur")
        .await;
    let confirm = format!("/v1/payment_intents/{}/confirm", created.id());
    let first = api
        .post_with(
            &confirm,
            "payment_method=pm_card_chargeDeclined",
            Some("c-1"),
        )
        .await;
    assert_eq!(first.status, 402);
    let again = api
        .post_with(
            &confirm,
            "payment_method=pm_card_chargeDeclined",
            Some("c-1"),
        )
        .await;
    assert_eq!(
        (again.status, again.header("idempotent-replayed")),
        (402, Some("true"))
    );
    let failed = api
        .get("/v1/events?type=payment_intent.payment_failed")
        .await;
    assert_eq!(failed.json["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_request_whose_caller_gave_up_still_finishes_and_is_replayed() {
    let emu = start().await;
    let control = emu.control();
    control
        .set_faults(&Faults {
            api_latency_ms: 1500,
            ..Faults::default()
        })
        .await
        .unwrap();
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(300))
        .build()
        .unwrap();
    let gave_up = impatient
        .post(format!("{}/v1/payment_intents", emu.base_url))
        .bearer_auth(crate::common::KEY)
        .header("idempotency-key", "k-8")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(CREATE)
        .send()
        .await;
    assert!(gave_up.unwrap_err().is_timeout());
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    control.clear_faults().await.unwrap();
    let retry = Api::new(&emu)
        .post_with("/v1/payment_intents", CREATE, Some("k-8"))
        .await;
    assert_eq!(
        (retry.status, retry.header("idempotent-replayed")),
        (200, Some("true"))
    );
    assert_eq!(control.state().await.unwrap().payment_intents.len(), 1);
}
