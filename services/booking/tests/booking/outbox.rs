//! Outbox: one row per change in the same transaction, relayed to the Redis
//! stream (or the in-process channel), re-delivered after a crash, and
//! consumed once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_booking::{Booking, Event};
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::common::*;
use crate::on_both_backends;

on_both_backends!(
    failed_outbox_write_rolls_back_the_booking_and_releases_the_claim,
    relay_delivers_to_redis_and_redelivery_is_consumed_once,
);

async fn failed_outbox_write_rolls_back_the_booking_and_releases_the_claim(backend: Backend) {
    let env = setup(backend).await;
    env.db
        .execute("ALTER TABLE {t}outbox RENAME TO outbox_gone")
        .await;
    let resp = env
        .api
        .create(Uuid::now_v7(), Uuid::now_v7(), slot(0))
        .await;
    resp.assert_problem(500);
    assert_eq!(
        env.db.rows("bookings").await,
        0,
        "booking and event commit together"
    );
    assert_eq!(env.ledger.live_claims(), 0, "the claim was given back");
    assert_eq!(
        env.db.rows("idempotency_keys").await,
        0,
        "a 5xx frees its key"
    );
}

async fn stream_events(redis_url: &str, stream: &str) -> Vec<Event> {
    let client = redis::Client::open(redis_url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let reply: redis::streams::StreamRangeReply = conn.xrange_all(stream).await.unwrap();
    reply
        .ids
        .iter()
        .map(|entry| {
            let event: Event =
                serde_json::from_str(&entry.get::<String>("event").unwrap()).unwrap();
            assert_eq!(
                entry.get::<String>("event_id").unwrap(),
                event.id.to_string()
            );
            assert_eq!(entry.get::<String>("type").unwrap(), event.event_type);
            event
        })
        .collect()
}

async fn relay_delivers_to_redis_and_redelivery_is_consumed_once(backend: Backend) {
    let redis_url = required_env("REDIS_URL");
    let config = test_config();
    let stream = config.stream_key.clone();
    let env = setup_with(backend, config.clone(), Some(&redis_url)).await;
    let (resource, kind) = (Uuid::now_v7(), Uuid::now_v7());
    let a = env.api.create(resource, kind, slot(0)).await.id();
    let b = env.api.create(resource, kind, slot(1)).await.id();
    assert_eq!(env.api.act(a, "confirm").await.status, 200);
    assert_eq!(env.api.act(b, "cancel").await.status, 200);
    assert_eq!(env.db.rows("outbox").await, 4);

    let stop = CancellationToken::new();
    env.booking.spawn_workers(stop.clone());
    eventually(10, "4 events reach the stream", || async {
        stream_events(&redis_url, &stream).await.len() == 4
    })
    .await;
    let unpublished = "SELECT count(*) FROM {t}outbox WHERE published_at IS NULL";
    eventually(10, "rows are marked published", || async {
        env.db.count(unpublished).await == 0
    })
    .await;
    let events = stream_events(&redis_url, &stream).await;
    let types: Vec<(Uuid, &str)> = events
        .iter()
        .map(|e| (e.booking_id, e.event_type.as_str()))
        .collect();
    assert_eq!(
        types,
        [
            (a, "booking.created"),
            (b, "booking.created"),
            (a, "booking.confirmed"),
            (b, "booking.cancelled")
        ]
    );
    stop.cancel();

    // Crash between publish and mark: the last two rows were sent but their
    // mark never committed. A restarted relay sends them again.
    env.db
        .execute("UPDATE {t}outbox SET published_at = NULL WHERE event_type IN ('booking.confirmed', 'booking.cancelled')")
        .await;
    let restarted = Booking::connect(&env.db.url, Some(&redis_url), env.ledger.clone(), config)
        .await
        .unwrap();
    let stop = CancellationToken::new();
    restarted.spawn_workers(stop.clone());
    eventually(10, "re-delivery", || async {
        stream_events(&redis_url, &stream).await.len() == 6
    })
    .await;
    stop.cancel();

    let delivered = stream_events(&redis_url, &stream).await;
    let handled = Arc::new(Mutex::new(HashMap::<Uuid, usize>::new()));
    let mut ran = 0;
    for _pass in 0..2 {
        for event in &delivered {
            let handled = handled.clone();
            let id = event.id;
            let did = restarted
                .process_event_once("notifier", id, move || async move {
                    *handled.lock().unwrap().entry(id).or_default() += 1;
                    Ok::<(), String>(())
                })
                .await
                .unwrap();
            ran += usize::from(did);
        }
    }
    assert_eq!(ran, 4, "6 deliveries, twice over, handled 4 times");
    assert!(handled.lock().unwrap().values().all(|&n| n == 1));

    // A failing handler records nothing, so the redelivery retries it.
    let first = delivered[0].id;
    let failed = restarted
        .process_event_once("mailer", first, || async { Err::<(), _>("smtp down") })
        .await;
    assert!(failed.is_err());
    let retried = restarted
        .process_event_once("mailer", first, || async { Ok::<(), String>(()) })
        .await
        .unwrap();
    assert!(retried);

    let client = redis::Client::open(redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = conn.del(&stream).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_events_go_to_the_in_process_channel() {
    let env = setup(Backend::Sqlite).await;
    let mut events = env.booking.subscribe_events();
    let stop = CancellationToken::new();
    env.booking.spawn_workers(stop.clone());
    let id = env
        .api
        .create(Uuid::now_v7(), Uuid::now_v7(), slot(0))
        .await
        .id();
    assert_eq!(env.api.act(id, "confirm").await.status, 200);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), events.recv())
            .await
            .expect("an event in time")
            .unwrap();
        assert_eq!(event.booking_id, id);
        seen.push(event.event_type);
    }
    assert_eq!(seen, ["booking.created", "booking.confirmed"]);
    stop.cancel();
}
