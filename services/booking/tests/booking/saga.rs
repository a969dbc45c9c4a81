//! A cancel whose ledger release fails is finished by the saga worker once
//! the ledger recovers, also after a restart.

use std::sync::atomic::Ordering;

use berth_booking::Booking;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::common::*;
use crate::on_both_backends;

on_both_backends!(failed_release_is_retried_until_it_succeeds_across_restarts);

async fn failed_release_is_retried_until_it_succeeds_across_restarts(backend: Backend) {
    let env = setup(backend).await;
    let created = env
        .api
        .create(Uuid::now_v7(), Uuid::now_v7(), slot(0))
        .await;
    let id = created.id();
    let claim: Uuid = created.json["claim_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(env.api.act(id, "confirm").await.status, 200);

    env.ledger.fail_release.store(true, Ordering::SeqCst);
    let cancelled = env.api.act(id, "cancel").await;
    assert_eq!(
        cancelled.status, 200,
        "the booking is cancelled even if the release failed"
    );
    assert_eq!(cancelled.json["status"], "cancelled");
    assert!(!env.ledger.claim(claim).released);
    let step = format!("SELECT saga_step FROM {{t}}bookings WHERE id = '{id}'");
    assert_eq!(env.db.text(&step).await.as_deref(), Some("release_claim"));

    // The worker keeps retrying while the ledger still fails.
    let stop = CancellationToken::new();
    env.booking.spawn_workers(stop.clone());
    let attempts =
        format!("SELECT count(*) FROM {{t}}bookings WHERE id = '{id}' AND saga_attempts >= 3");
    eventually(10, "the worker retried", || async {
        env.db.count(&attempts).await == 1
    })
    .await;

    // Crash: the process goes away with the compensation unfinished.
    stop.cancel();
    drop(env.booking);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    // The ledger recovers; a new process on the same database finishes it.
    env.ledger.fail_release.store(false, Ordering::SeqCst);
    let restarted = Booking::connect(&env.db.url, None, env.ledger.clone(), test_config())
        .await
        .unwrap();
    let stop = CancellationToken::new();
    restarted.spawn_workers(stop.clone());
    eventually(10, "the claim is released", || async {
        env.ledger.claim(claim).released
    })
    .await;
    eventually(10, "the saga step is cleared", || async {
        env.db.text(&step).await.is_none()
    })
    .await;
    stop.cancel();

    let cancelled_events = env
        .db
        .count("SELECT count(*) FROM {t}outbox WHERE event_type = 'booking.cancelled'")
        .await;
    assert_eq!(cancelled_events, 1, "retries emit no extra events");
    let read = env.api.get(&format!("/v1/bookings/{id}")).await;
    assert_eq!(read.json["status"], "cancelled");
}
