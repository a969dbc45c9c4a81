//! Ledger guarantees on PostgreSQL (needs `scripts/stack up`; each test
//! gets its own database).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use berth_availability::Availability;
use berth_ledger::Ledger;
use common::scenarios;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race_without_redis() {
    let (av, _db) = common::pg(false).await;
    let fx = common::fixture(&av).await;
    let ledger: Arc<dyn Ledger> = Arc::new(av.clone());
    let report = scenarios::race(&av, &[ledger], &fx, 2, Duration::ZERO).await;
    eprintln!(
        "postgres, no redis: 64 racers, {} won, {:?}",
        report.winners, report.elapsed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race_with_redis_across_four_replicas() {
    let (av, db) = common::pg(true).await;
    let fx = common::fixture(&av).await;
    // Four "replicas": own pools and in-process locks, shared database and Redis.
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
    let report = scenarios::race(&av, &ledgers, &fx, 2, Duration::ZERO).await;
    let fallbacks: u64 = replicas.iter().map(Availability::redis_fallbacks).sum();
    assert_eq!(
        fallbacks, 0,
        "redis was up; no claim should have bypassed it"
    );
    eprintln!(
        "postgres + redis, 4 replicas: 64 racers, {} won, {:?}",
        report.winners, report.elapsed
    );
}

#[tokio::test]
async fn holds_expire_without_a_sweeper() {
    let (av, _db) = common::pg(false).await;
    let fx = common::fixture(&av).await;
    scenarios::hold_expiry(&av, &av, &fx).await;
}

#[tokio::test]
async fn reschedule_is_atomic() {
    let (av, _db) = common::pg(true).await;
    let fx = common::fixture(&av).await;
    scenarios::reschedule(&av, &av, &fx).await;
}

#[tokio::test]
async fn release_is_idempotent() {
    let (av, _db) = common::pg(false).await;
    let fx = common::fixture(&av).await;
    scenarios::release(&av, &av, &fx).await;
}

#[tokio::test]
async fn claim_is_idempotent_by_owner() {
    let (av, _db) = common::pg(false).await;
    let fx = common::fixture(&av).await;
    scenarios::claim_idempotent(&av, &fx).await;
}

#[tokio::test]
async fn receipts_carry_the_cancellation_policy_of_claim_time() {
    let (av, _db) = common::pg(false).await;
    let fx = common::fixture(&av).await;
    scenarios::cancellation_policy(&av, &av, &fx).await;
}

#[tokio::test]
async fn invalid_claims_write_nothing() {
    let (av, _db) = common::pg(false).await;
    let fx = common::fixture(&av).await;
    scenarios::invalid_claims(&av, &av, &fx).await;
}

#[tokio::test]
async fn buffers_are_enforced() {
    let (av, _db) = common::pg(false).await;
    let fx = common::fixture(&av).await;
    scenarios::buffers(&av, &fx).await;
}

/// The exclusion constraint holds even if the application's checks are
/// bypassed: two overlapping blocks cannot be inserted.
#[tokio::test]
async fn exclusion_constraint_is_the_final_guard() {
    let (av, db) = common::pg(false).await;
    let fx = common::fixture(&av).await;
    let start = common::day_at(2, 10, 0);
    av.claim(scenarios::request(fx.resource, fx.single, start, "a"))
        .await
        .unwrap();
    let mut conn = db.conn().await;
    let err = sqlx::query(
        "INSERT INTO availability.blocks (id, resource_id, appointment_type_id, starts_at, ends_at, capacity) \
         VALUES ($1, $2, $3, $4, $5, 1)",
    )
    .bind(uuid::Uuid::new_v4())
    .bind(fx.resource)
    .bind(fx.group)
    .bind(start + chrono::TimeDelta::minutes(15))
    .bind(start + chrono::TimeDelta::minutes(45))
    .execute(&mut conn)
    .await
    .unwrap_err();
    assert_eq!(
        err.as_database_error().unwrap().code().as_deref(),
        Some("23P01")
    );
}

#[tokio::test]
async fn sweeper_releases_lapsed_holds() {
    let (av, db) = common::pg(false).await;
    let fx = common::fixture(&av).await;
    let held = av
        .claim(berth_ledger::ClaimRequest {
            hold_for: Some(Duration::from_millis(200)),
            ..scenarios::request(fx.resource, fx.single, common::day_at(2, 9, 0), "h")
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(av.sweep_now().await.unwrap(), 1);
    let mut conn = db.conn().await;
    let blocks: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM availability.blocks")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(blocks, 0, "the emptied block is gone");
    assert_eq!(
        av.confirm(held.claim_id).await,
        Err(berth_ledger::LedgerError::HoldExpired)
    );
}

#[tokio::test]
async fn checker_names_each_overlap_once() {
    let (av, db) = common::pg(false).await;
    let fx = common::fixture(&av).await;
    scenarios::checker_names_overlaps(&av, &fx, async |template, start, end| {
        let mut conn = db.conn().await;
        sqlx::query("ALTER TABLE availability.blocks DROP CONSTRAINT IF EXISTS blocks_no_overlap")
            .execute(&mut conn)
            .await
            .unwrap();
        let (block, claim) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let block_sql = scenarios::copy_into_block_sql("availability.");
        let claim_sql = scenarios::copy_claim_sql("availability.");
        let copy = |sql| {
            sqlx::query(sql)
                .bind(template)
                .bind(block)
                .bind(start)
                .bind(end)
        };
        copy(&block_sql).execute(&mut conn).await.unwrap();
        copy(&claim_sql)
            .bind(claim)
            .execute(&mut conn)
            .await
            .unwrap();
        claim
    })
    .await;
}
