//! Redis stops in the middle of a race: claims fall back to the database
//! row lock and the ledger stays sound. Redis is restarted at the end, also
//! when the test fails. Its own test binary, so no other test of this crate
//! sees Redis go away.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use berth_availability::Availability;
use berth_ledger::Ledger;
use common::scenarios;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race_survives_redis_stopping() {
    let (av, db) = common::pg(true).await;
    let fx = common::fixture(&av).await;
    let mut replicas = vec![av.clone()];
    for _ in 0..3 {
        replicas.push(
            Availability::connect(&db.url, Some(&common::redis_url()))
                .await
                .unwrap(),
        );
    }
    let ledgers: Vec<Arc<dyn Ledger>> = replicas
        .iter()
        .map(|r| Arc::new(r.clone()) as Arc<dyn Ledger>)
        .collect();

    let restart = common::RedisRestart::arm();
    let stopper = tokio::task::spawn_blocking(|| {
        std::thread::sleep(Duration::from_millis(150));
        assert!(
            common::stack("redis-stop"),
            "scripts/stack redis-stop failed"
        );
    });
    // Waves of four racers (one per replica) start 20 ms apart, so the run
    // spans the outage and the replicas' batches contend.
    let report = scenarios::race(&av, &ledgers, &fx, 2, Duration::from_millis(20)).await;
    stopper.await.unwrap();
    // A reschedule always queues on the resource's lock: with Redis down it
    // goes ahead on the row lock alone.
    let moving = av
        .claim(scenarios::request(
            fx.resource,
            fx.single,
            common::day_at(2, 18, 0),
            "mover",
        ))
        .await
        .unwrap();
    av.reschedule(moving.claim_id, common::day_at(2, 18, 30))
        .await
        .unwrap();
    let fallbacks: u64 = replicas.iter().map(Availability::redis_fallbacks).sum();
    eprintln!(
        "postgres + redis stopping mid-run, 4 replicas: 64 racers, {} won, {:?}, {fallbacks} ledger locks without redis",
        report.winners, report.elapsed
    );
    assert!(
        fallbacks > 0,
        "some locked operations should have run while redis was down"
    );

    // Redis comes back empty (no persistence): its fencing counter restarts
    // below the fence stored in the database. The lock must recover from
    // that instead of refusing every token.
    let before = fence(&db, fx.resource).await;
    drop(restart);
    for _ in 0..50 {
        if av.check_redis().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    av.check_redis().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // the fallback cool-down
    av.reschedule(moving.claim_id, common::day_at(2, 19, 0))
        .await
        .unwrap();
    let after = fence(&db, fx.resource).await;
    assert!(
        after > before,
        "a fresh token was recorded ({before} -> {after})"
    );
    assert!(av.find_overlaps().await.unwrap().is_empty());
}

async fn fence(db: &common::TestDb, resource: uuid::Uuid) -> i64 {
    let mut conn = db.conn().await;
    sqlx::query_scalar("SELECT fence FROM availability.resources WHERE id = $1")
        .bind(resource)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}
