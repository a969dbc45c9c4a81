//! async-stripe's own request builders and client, pointed at the
//! emulator over plain http (its connector is `https_or_http`).

use std::collections::HashMap;

use stripe::{Client, ClientBuilder, StripeError};
use stripe_client_core::{IdempotencyKey, RequestStrategy, StripeRequest};
use stripe_core::event::ListEvent;
use stripe_core::payment_intent::{
    CancelPaymentIntent, CancelPaymentIntentCancellationReason, CapturePaymentIntent,
    ConfirmPaymentIntent, CreatePaymentIntent, ListPaymentIntent, RetrievePaymentIntent,
    SearchPaymentIntent,
};
use stripe_core::refund::{CreateRefund, ListRefund};
use stripe_shared::{
    ApiErrorsCode, PaymentIntentAllowedPaymentMethodTypes, PaymentIntentCaptureMethod,
    PaymentIntentStatus,
};

use crate::common::{KEY, start};

fn client(base_url: &str) -> Client {
    // async-stripe appends `v1/...` to the base, so it must end in '/'.
    ClientBuilder::new(KEY)
        .url(format!("{base_url}/"))
        .build()
        .unwrap()
}

#[tokio::test]
async fn async_stripe_client_drives_the_whole_flow() {
    let emu = start().await;
    let stripe = client(&emu.base_url);

    let metadata = HashMap::from([("booking_id".to_owned(), "b-42".to_owned())]);
    let pi = CreatePaymentIntent::new(4200, stripe_types::Currency::EUR)
        .capture_method(PaymentIntentCaptureMethod::Manual)
        .metadata(metadata)
        .allowed_payment_method_types(vec![PaymentIntentAllowedPaymentMethodTypes::Card])
        .send(&stripe)
        .await
        .unwrap();
    assert_eq!(pi.status, PaymentIntentStatus::RequiresPaymentMethod);

    let pi = ConfirmPaymentIntent::new(pi.id.clone())
        .payment_method("pm_card_visa")
        .send(&stripe)
        .await
        .unwrap();
    assert_eq!(pi.status, PaymentIntentStatus::RequiresCapture);

    let pi = CapturePaymentIntent::new(pi.id.clone())
        .amount_to_capture(4000)
        .customize()
        .request_strategy(RequestStrategy::Idempotent(
            IdempotencyKey::new("capture-b-42").unwrap(),
        ))
        .send(&stripe)
        .await
        .unwrap();
    assert_eq!(
        (pi.status.clone(), pi.amount_received),
        (PaymentIntentStatus::Succeeded, 4000)
    );

    let refund = CreateRefund::new()
        .payment_intent(pi.id.as_str())
        .amount(1000)
        .send(&stripe)
        .await
        .unwrap();
    assert_eq!(refund.amount, 1000);
    let refunds = ListRefund::new()
        .payment_intent(pi.id.as_str())
        .send(&stripe)
        .await
        .unwrap();
    assert_eq!(refunds.data.len(), 1);

    let again = RetrievePaymentIntent::new(pi.id.clone())
        .send(&stripe)
        .await
        .unwrap();
    assert_eq!(again.amount_received, 4000);
    let listed = ListPaymentIntent::new()
        .limit(10)
        .send(&stripe)
        .await
        .unwrap();
    assert_eq!(listed.data.len(), 1);
    let found = SearchPaymentIntent::new("metadata['booking_id']:'b-42' AND status:'succeeded'")
        .send(&stripe)
        .await
        .unwrap();
    assert_eq!(found.data.len(), 1);

    let other = CreatePaymentIntent::new(100, stripe_types::Currency::EUR)
        .send(&stripe)
        .await
        .unwrap();
    let canceled = CancelPaymentIntent::new(other.id.clone())
        .cancellation_reason(CancelPaymentIntentCancellationReason::Abandoned)
        .send(&stripe)
        .await
        .unwrap();
    assert_eq!(canceled.status, PaymentIntentStatus::Canceled);

    let events = ListEvent::new()
        .type_("payment_intent.*")
        .send(&stripe)
        .await
        .unwrap();
    assert_eq!(events.data.len(), 5);

    // Errors arrive as async-stripe's typed Stripe error with the status.
    let err = CapturePaymentIntent::new(other.id.clone())
        .send(&stripe)
        .await
        .unwrap_err();
    match err {
        StripeError::Stripe(e, 400) => {
            assert_eq!(e.code, Some(ApiErrorsCode::PaymentIntentUnexpectedState));
        }
        other => panic!("unexpected {other:?}"),
    }
}
