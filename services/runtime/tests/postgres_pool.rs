//! The shared PostgreSQL pool against the stack's real server
//! (`eval "$(scripts/stack env)"`; without `DATABASE_URL` this fails).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;

use berth_runtime::postgres::{PING_IF_IDLE_FOR, pool_options};
use sqlx::postgres::PgConnectOptions;

fn options(application: &str) -> PgConnectOptions {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL: eval \"$(scripts/stack env)\"");
    PgConnectOptions::from_str(&url)
        .unwrap()
        .application_name(application)
}

/// Kills every server backend of `application`, as a database restart
/// would, and returns how many there were.
async fn kill_backends(application: &str) -> i64 {
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect_with(&options("admin"))
        .await
        .unwrap();
    let killed = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = $1) t",
    )
    .bind(application)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    // Termination is a signal; wait until the sessions are really gone.
    for _ in 0..100 {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
                .bind(application)
                .fetch_one(&mut admin)
                .await
                .unwrap();
        if left == 0 {
            return killed;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("backends of {application} survived pg_terminate_backend");
}

#[tokio::test]
async fn connections_broken_while_idle_are_replaced_before_use() {
    let application = format!("pool-test-{}", std::process::id());
    let pool = pool_options(3)
        .connect_with(options(&application))
        .await
        .unwrap();
    // Opened up front.
    assert_eq!(pool.size(), 3);
    assert_eq!(kill_backends(&application).await, 3);

    tokio::time::sleep(PING_IF_IDLE_FOR + std::time::Duration::from_millis(200)).await;
    for _ in 0..6 {
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&pool)
            .await
            .expect("a connection broken while idle must be replaced, not handed out");
        assert_eq!(one, 1);
    }
}

#[tokio::test]
async fn a_connection_broken_while_busy_fails_one_statement_as_unavailable() {
    let application = format!("pool-test-busy-{}", std::process::id());
    let pool = pool_options(1)
        .connect_with(options(&application))
        .await
        .unwrap();
    sqlx::query("SELECT 1").execute(&pool).await.unwrap();
    assert_eq!(kill_backends(&application).await, 1);

    // Used a moment ago, so not pinged: the statement meets the dead
    // session, and the error says "unavailable" (503), not a fault (500).
    let error = sqlx::query("SELECT 1").execute(&pool).await.unwrap_err();
    assert!(berth_runtime::postgres::is_unavailable(&error), "{error:?}");
    // The broken connection was dropped; the next statement gets a new one.
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(one, 1);
}
