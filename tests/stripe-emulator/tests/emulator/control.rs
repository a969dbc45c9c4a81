//! The control API: faults, determinism, the state snapshot.

use std::time::{Duration, Instant};

use berth_stripe_emulator::{Config, FailNext, Faults};

use crate::common::{Api, start, start_with};

#[tokio::test]
async fn fail_next_fails_exactly_the_matching_calls() {
    let emu = start().await;
    let api = Api::new(&emu);
    let control = emu.control();
    control
        .set_faults(&Faults {
            fail_next: vec![FailNext {
                status: 503,
                ..FailNext::new("post", "/v1/refunds").times(2)
            }],
            ..Faults::default()
        })
        .await
        .unwrap();
    // Other paths and methods pass.
    assert_eq!(api.get("/v1/refunds").await.status, 200);
    let pi = api.captured(100).await;
    let form = format!("payment_intent={pi}&amount=10");
    assert_eq!(api.post("/v1/refunds", &form).await.status, 503);
    assert_eq!(control.faults().await.unwrap().fail_next[0].count, 1);
    assert_eq!(api.post("/v1/refunds", &form).await.status, 503);
    assert_eq!(api.post("/v1/refunds", &form).await.status, 200);
    assert!(control.faults().await.unwrap().fail_next.is_empty());
    assert_eq!(control.state().await.unwrap().refunds.len(), 1);
}

#[tokio::test]
async fn latency_slows_every_call() {
    let emu = start().await;
    emu.control()
        .set_faults(&Faults {
            api_latency_ms: 150,
            ..Faults::default()
        })
        .await
        .unwrap();
    let t = Instant::now();
    Api::new(&emu).get("/v1/payment_intents").await;
    assert!(t.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn the_same_seed_gives_the_same_ids_and_errors() {
    let mut runs = Vec::new();
    for _ in 0..2 {
        let emu = start_with(Config {
            seed: 7,
            ..Config::default()
        })
        .await;
        let api = Api::new(&emu);
        emu.control()
            .set_faults(&Faults {
                api_error_rate: 0.5,
                ..Faults::default()
            })
            .await
            .unwrap();
        let mut seen = Vec::new();
        for i in 0..8 {
            let res = api
                .post(
                    "/v1/payment_intents",
                    &format!("amount={}&currency=eur", 100 + i),
                )
                .await;
            seen.push(if res.status == 200 {
                res.id()
            } else {
                res.status.to_string()
            });
        }
        runs.push(seen);
    }
    assert_eq!(runs[0], runs[1]);
    assert!(runs[0].iter().any(|s| s == "500") && runs[0].iter().any(|s| s.starts_with("pi_")));
}

#[tokio::test]
async fn state_shows_every_intent_and_refund() {
    let emu = start().await;
    let api = Api::new(&emu);
    let pi = api.captured(900).await;
    api.post("/v1/refunds", &format!("payment_intent={pi}&amount=300"))
        .await;
    api.post(
        "/v1/payment_intents",
        "amount=50&currency=usd&metadata[booking_id]=b-2",
    )
    .await;
    let state = emu.control().state().await.unwrap();
    assert_eq!(state.payment_intents.len(), 2);
    let first = &state.payment_intents[0];
    assert_eq!(
        (first.id.as_str(), first.status.as_str()),
        (pi.as_str(), "succeeded")
    );
    assert_eq!((first.amount_received, first.amount_refunded), (900, 300));
    assert_eq!(state.payment_intents[1].metadata["booking_id"], "b-2");
    assert_eq!(state.refunds[0].payment_intent, pi);
}
