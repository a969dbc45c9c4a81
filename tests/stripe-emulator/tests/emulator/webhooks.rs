//! Signed webhook deliveries, verified by async-stripe-webhook, and the
//! delivery faults.

use std::time::Duration;

use berth_stripe_emulator::{Config, Faults};
use stripe_webhook::{EventObject, Webhook, WebhookError};

use crate::common::{Api, OLD_SECRET, Receiver, SECRET, start, start_with};

async fn with_receiver(secrets: &[&str]) -> (berth_stripe_emulator::Running, Receiver) {
    let receiver = Receiver::start().await;
    let emu = start_with(Config {
        endpoints: vec![receiver.endpoint(secrets)],
        ..Config::default()
    })
    .await;
    (emu, receiver)
}

#[tokio::test]
async fn signatures_verify_with_async_stripe_including_rotated_secrets() {
    let (emu, receiver) = with_receiver(&[SECRET, OLD_SECRET]).await;
    let api = Api::new(&emu);
    let created = api
        .post(
            "/v1/payment_intents",
            "amount=100&currency=eur&metadata[booking_id]=b-9",
        )
        .await;
    let got = receiver.wait_for(1).await;
    let r = &got[0];
    assert_eq!(r.signature.matches("v1=").count(), 2, "{}", r.signature);
    for secret in [SECRET, OLD_SECRET] {
        let event = Webhook::construct_event(&r.body, &r.signature, secret).unwrap();
        match event.data.object {
            EventObject::PaymentIntentCreated(pi) => {
                assert_eq!(pi.id.as_str(), created.id());
                assert_eq!(pi.metadata["booking_id"], "b-9");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(matches!(
        Webhook::construct_event(&r.body, &r.signature, "whsec_someone_else"),
        Err(WebhookError::BadSignature)
    ));
}

#[tokio::test]
async fn bad_signatures_and_stale_timestamps_fail_verification() {
    let (emu, receiver) = with_receiver(&[SECRET]).await;
    let api = Api::new(&emu);
    let control = emu.control();
    control
        .set_faults(&Faults {
            bad_signature: true,
            ..Faults::default()
        })
        .await
        .unwrap();
    api.post("/v1/payment_intents", "amount=100&currency=eur")
        .await;
    let got = receiver.wait_for(1).await;
    assert!(matches!(
        Webhook::construct_event(&got[0].body, &got[0].signature, SECRET),
        Err(WebhookError::BadSignature)
    ));

    control
        .set_faults(&Faults {
            stale_timestamp_secs: 600,
            ..Faults::default()
        })
        .await
        .unwrap();
    api.post("/v1/payment_intents", "amount=200&currency=eur")
        .await;
    let got = receiver.wait_for(2).await;
    assert!(matches!(
        Webhook::construct_event(&got[1].body, &got[1].signature, SECRET),
        Err(WebhookError::BadTimestamp(_))
    ));
}

#[tokio::test]
async fn failed_deliveries_retry_with_backoff_and_pending_webhooks_follows() {
    let (emu, receiver) = with_receiver(&[SECRET]).await;
    let api = Api::new(&emu);
    receiver.answers.lock().unwrap().extend([500, 503]);
    api.post("/v1/payment_intents", "amount=100&currency=eur")
        .await;
    let got = receiver.wait_for(1).await;
    // The first attempt's payload says one endpoint is still pending.
    assert_eq!(got[0].json()["pending_webhooks"], 1);
    let deliveries = emu
        .control()
        .wait_for_deliveries(3, Duration::from_secs(5))
        .await
        .unwrap();
    let statuses: Vec<Option<u16>> = deliveries.iter().map(|d| d.status).collect();
    assert_eq!(statuses, [Some(500), Some(503), Some(200)]);
    assert_eq!(
        deliveries.iter().map(|d| d.attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let at = |i: usize| chrono::DateTime::parse_from_rfc3339(&deliveries[i].at).unwrap();
    // Backoff doubles: 100 ms, then 200 ms (the test's schedule).
    assert!(at(1) - at(0) >= chrono::TimeDelta::milliseconds(90));
    assert!(at(2) - at(1) >= chrono::TimeDelta::milliseconds(190));
    let event = api
        .get(&format!("/v1/events/{}", deliveries[0].event_id))
        .await;
    assert_eq!(event.json["pending_webhooks"], 0);
}

#[tokio::test]
async fn deliveries_follow_creation_order() {
    let (emu, receiver) = with_receiver(&[SECRET]).await;
    let api = Api::new(&emu);
    api.captured(500).await;
    receiver.wait_for(3).await;
    assert_eq!(
        receiver.types(),
        [
            "payment_intent.created",
            "payment_intent.amount_capturable_updated",
            "payment_intent.succeeded"
        ]
    );
}

#[tokio::test]
async fn duplicate_sends_every_event_twice() {
    let (emu, receiver) = with_receiver(&[SECRET]).await;
    emu.control()
        .set_faults(&Faults {
            duplicate: true,
            ..Faults::default()
        })
        .await
        .unwrap();
    Api::new(&emu)
        .post("/v1/payment_intents", "amount=100&currency=eur")
        .await;
    let got = receiver.wait_for(2).await;
    assert_eq!(got[0].json()["id"], got[1].json()["id"]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.received().len(), 2);
}

#[tokio::test]
async fn hold_keeps_deliveries_until_flush_and_reorder_reverses_them() {
    let (emu, receiver) = with_receiver(&[SECRET]).await;
    let control = emu.control();
    control
        .set_faults(&Faults {
            hold: true,
            reorder: true,
            ..Faults::default()
        })
        .await
        .unwrap();
    Api::new(&emu).captured(500).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.received().is_empty());
    assert_eq!(control.flush().await.unwrap(), 3);
    receiver.wait_for(3).await;
    assert_eq!(
        receiver.types(),
        [
            "payment_intent.succeeded",
            "payment_intent.amount_capturable_updated",
            "payment_intent.created"
        ]
    );
}

#[tokio::test]
async fn a_redelivery_is_signed_afresh() {
    let (emu, receiver) = with_receiver(&[SECRET]).await;
    Api::new(&emu)
        .post("/v1/payment_intents", "amount=100&currency=eur")
        .await;
    let first = receiver.wait_for(1).await.remove(0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let event_id = first.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(emu.control().redeliver(&event_id).await.unwrap(), 1);
    let again = receiver.wait_for(2).await.remove(1);
    assert_eq!(again.json()["id"], event_id.as_str());
    assert_ne!(again.signature, first.signature);
    Webhook::construct_event(&again.body, &again.signature, SECRET).unwrap();
    let deliveries = emu.control().deliveries().await.unwrap();
    assert!(deliveries[1].redelivery && deliveries.iter().all(|d| d.succeeded()));
}

#[tokio::test]
async fn endpoints_added_at_runtime_receive_later_events() {
    let emu = start().await;
    let api = Api::new(&emu);
    api.post("/v1/payment_intents", "amount=100&currency=eur")
        .await;
    let receiver = Receiver::start().await;
    emu.control()
        .set_webhooks(vec![receiver.endpoint(&[SECRET])])
        .await
        .unwrap();
    assert_eq!(emu.control().webhooks().await.unwrap()[0].url, receiver.url);
    api.post("/v1/payment_intents", "amount=200&currency=eur")
        .await;
    let got = receiver.wait_for(1).await;
    assert_eq!(got[0].json()["data"]["object"]["amount"], 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.received().len(), 1);
}
