//! The same ledger guarantees on SQLite (`sqlite::memory:`, nothing external).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use berth_ledger::Ledger;
use common::scenarios;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race() {
    let av = common::sqlite().await;
    let fx = common::fixture(&av).await;
    let ledger: Arc<dyn Ledger> = Arc::new(av.clone());
    let report = scenarios::race(&av, &[ledger], &fx, 2, Duration::ZERO).await;
    eprintln!(
        "sqlite: 64 racers, {} won, {:?}",
        report.winners, report.elapsed
    );
}

/// Two handles on one SQLite file: separate pools and in-process locks, so
/// only `BEGIN IMMEDIATE` and the triggers serialise them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race_two_handles_on_one_file() {
    let dir = std::env::temp_dir().join(format!("berth-avail-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite:{}", dir.join("avail.db").display());
    let a = berth_availability::Availability::connect(&url, None)
        .await
        .unwrap();
    let b = berth_availability::Availability::connect(&url, None)
        .await
        .unwrap();
    let fx = common::fixture(&a).await;
    let ledgers: Vec<Arc<dyn Ledger>> = vec![Arc::new(a.clone()), Arc::new(b)];
    let report = scenarios::race(&a, &ledgers, &fx, 2, Duration::ZERO).await;
    eprintln!(
        "sqlite file, 2 handles: 64 racers, {} won, {:?}",
        report.winners, report.elapsed
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn holds_expire_without_a_sweeper() {
    let av = common::sqlite().await;
    let fx = common::fixture(&av).await;
    scenarios::hold_expiry(&av, &av, &fx).await;
}

#[tokio::test]
async fn reschedule_is_atomic() {
    let av = common::sqlite().await;
    let fx = common::fixture(&av).await;
    scenarios::reschedule(&av, &av, &fx).await;
}

#[tokio::test]
async fn release_is_idempotent() {
    let av = common::sqlite().await;
    let fx = common::fixture(&av).await;
    scenarios::release(&av, &av, &fx).await;
}

#[tokio::test]
async fn claim_is_idempotent_by_owner() {
    let av = common::sqlite().await;
    let fx = common::fixture(&av).await;
    scenarios::claim_idempotent(&av, &fx).await;
}

#[tokio::test]
async fn receipts_carry_the_cancellation_policy_of_claim_time() {
    let av = common::sqlite().await;
    let fx = common::fixture(&av).await;
    scenarios::cancellation_policy(&av, &av, &fx).await;
}

#[tokio::test]
async fn invalid_claims_write_nothing() {
    let av = common::sqlite().await;
    let fx = common::fixture(&av).await;
    scenarios::invalid_claims(&av, &av, &fx).await;
}

#[tokio::test]
async fn buffers_are_enforced() {
    let av = common::sqlite().await;
    let fx = common::fixture(&av).await;
    scenarios::buffers(&av, &fx).await;
}

#[tokio::test]
async fn sweeper_releases_lapsed_holds() {
    let av = common::sqlite().await;
    let fx = common::fixture(&av).await;
    av.claim(berth_ledger::ClaimRequest {
        hold_for: Some(Duration::from_millis(200)),
        ..scenarios::request(fx.resource, fx.single, common::day_at(2, 9, 0), "h")
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(av.sweep_now().await.unwrap(), 1);
    assert_eq!(av.table_counts().await.unwrap()["blocks"], 0);
}

#[tokio::test]
async fn checker_names_each_overlap_once() {
    use sqlx::Connection;
    let dir = std::env::temp_dir().join(format!("berth-avail-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite:{}", dir.join("avail.db").display());
    let av = berth_availability::Availability::connect(&url, None)
        .await
        .unwrap();
    let fx = common::fixture(&av).await;
    scenarios::checker_names_overlaps(&av, &fx, async |template, start, end| {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("DROP TRIGGER IF EXISTS blocks_no_overlap_insert")
            .execute(&mut conn)
            .await
            .unwrap();
        let (block, claim) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let (start, end) = (start.timestamp_micros(), end.timestamp_micros());
        let block_sql = scenarios::copy_into_block_sql("");
        let claim_sql = scenarios::copy_claim_sql("");
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
    let _ = std::fs::remove_dir_all(dir);
}
