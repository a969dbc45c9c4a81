//! Every answer parses as async-stripe's own types (miniserde, strict:
//! each required field must be present), with known enum values.

use stripe_shared::{
    ApiErrorsCode, ApiErrorsType, Event, PaymentIntent, PaymentIntentCaptureMethod,
    PaymentIntentStatus, Refund,
};
use stripe_types::{List, SearchList};

use crate::common::{Api, start};

#[tokio::test]
async fn intents_refunds_lists_events_and_errors_parse_as_async_stripe_types() {
    let emu = start().await;
    let api = Api::new(&emu);

    let created = api
        .post(
            "/v1/payment_intents",
            "amount=2500&currency=eur&capture_method=manual&metadata[booking_id]=b-1&description=Haircut&payment_method_types[]=card",
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let pi: PaymentIntent = created.parse();
    assert_eq!(pi.status, PaymentIntentStatus::RequiresPaymentMethod);
    assert_eq!(pi.capture_method, PaymentIntentCaptureMethod::Manual);
    assert_eq!(pi.metadata["booking_id"], "b-1");
    let secret = pi.client_secret.clone().unwrap();
    assert!(
        secret.starts_with(&format!("{}_secret_", pi.id)),
        "{secret}"
    );

    let confirmed = api
        .post(
            &format!("/v1/payment_intents/{}/confirm", pi.id),
            "payment_method=pm_card_visa",
        )
        .await;
    let pi: PaymentIntent = confirmed.parse();
    assert_eq!(pi.status, PaymentIntentStatus::RequiresCapture);
    assert_eq!(pi.amount_capturable, 2500);

    let captured: PaymentIntent = api
        .post(&format!("/v1/payment_intents/{}/capture", pi.id), "")
        .await
        .parse();
    assert_eq!(captured.status, PaymentIntentStatus::Succeeded);
    assert_eq!(captured.amount_received, 2500);

    let retrieved: PaymentIntent = api
        .get(&format!("/v1/payment_intents/{}", pi.id))
        .await
        .parse();
    assert_eq!(retrieved.id, pi.id);

    let refund: Refund = api
        .post(
            "/v1/refunds",
            &format!(
                "payment_intent={}&amount=500&reason=requested_by_customer",
                pi.id
            ),
        )
        .await
        .parse();
    assert_eq!(refund.amount, 500);
    let _: Refund = api.get(&format!("/v1/refunds/{}", refund.id)).await.parse();
    let refunds: List<Refund> = api
        .get(&format!("/v1/refunds?payment_intent={}", pi.id))
        .await
        .parse();
    assert_eq!(refunds.data.len(), 1);

    let list: List<PaymentIntent> = api.get("/v1/payment_intents?limit=5").await.parse();
    assert_eq!(list.data.len(), 1);
    assert_eq!(list.url, "/v1/payment_intents");
    let found: SearchList<PaymentIntent> = api
        .get("/v1/payment_intents/search?query=metadata%5B%27booking_id%27%5D%3A%27b-1%27")
        .await
        .parse();
    assert_eq!(found.data.len(), 1);

    let events: List<Event> = api.get("/v1/events").await.parse();
    let types: Vec<&str> = events.data.iter().map(|e| e.type_.as_str()).collect();
    assert_eq!(
        types,
        [
            "refund.created",
            "payment_intent.succeeded",
            "payment_intent.amount_capturable_updated",
            "payment_intent.created"
        ]
    );
    for e in &events.data {
        assert_eq!(
            e.api_version.as_deref(),
            Some(berth_stripe_emulator::API_VERSION)
        );
        assert!(
            !format!("{:?}", e.type_).contains("Unknown"),
            "{:?}",
            e.type_
        );
        let one: Event = api.get(&format!("/v1/events/{}", e.id)).await.parse();
        assert_eq!(one.id, e.id);
    }
    // Event payloads are the objects' own shapes.
    let object = &api
        .get(&format!("/v1/events/{}", events.data[1].id))
        .await
        .json["data"]["object"];
    let _: PaymentIntent = miniserde::json::from_str(&object.to_string()).unwrap();

    let declined = api.authorised(900, "pm_card_chargeDeclined").await;
    assert_eq!(declined.status, 402);
    let e = declined.error();
    assert_eq!(e.type_, ApiErrorsType::CardError);
    assert_eq!(e.code, Some(ApiErrorsCode::CardDeclined));
    assert_eq!(e.decline_code.as_deref(), Some("generic_decline"));
    let in_error = e.payment_intent.unwrap();
    assert_eq!(in_error.status, PaymentIntentStatus::RequiresPaymentMethod);
    assert!(in_error.last_payment_error.is_some());
    assert!(e.payment_method.is_some());

    let missing = api.get("/v1/payment_intents/pi_nope").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.error().code, Some(ApiErrorsCode::ResourceMissing));

    let wrong_state = api
        .post(&format!("/v1/payment_intents/{}/capture", pi.id), "")
        .await;
    assert_eq!(wrong_state.status, 400);
    assert_eq!(
        wrong_state.error().code,
        Some(ApiErrorsCode::PaymentIntentUnexpectedState)
    );

    let unknown_param = api
        .post("/v1/payment_intents", "amount=1&currency=eur&colour=red")
        .await;
    assert_eq!(unknown_param.status, 400);
    let e = unknown_param.error();
    assert_eq!(
        (e.code, e.param.as_deref()),
        (Some(ApiErrorsCode::ParameterUnknown), Some("colour"))
    );

    let bad_key = Api::with_key(&emu, "sk_test_other")
        .get("/v1/payment_intents")
        .await;
    assert_eq!(bad_key.status, 401);
    assert_eq!(bad_key.error().type_, ApiErrorsType::InvalidRequestError);
}

#[tokio::test]
async fn basic_auth_with_the_key_as_user_is_accepted() {
    let emu = start().await;
    let res = reqwest::Client::new()
        .get(format!("{}/v1/payment_intents", emu.base_url))
        .basic_auth(crate::common::KEY, Some(""))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}
