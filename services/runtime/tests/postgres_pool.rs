//! The shared PostgreSQL pool against the stack's real server
//! (`eval "$(scripts/stack env)"`; without `DATABASE_URL` this fails).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;

use berth_runtime::postgres::{HeldConnections, PING_IF_IDLE_FOR, pool_options};
use sqlx::postgres::PgConnectOptions;

fn options(application: &str) -> PgConnectOptions {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL: eval \"$(scripts/stack env)\"");
    PgConnectOptions::from_str(&url)
        .unwrap()
        .application_name(application)
}

/// A pool of `size` shared-settings connections named `application` (so
/// the test can find and kill its backends).
async fn pool(application: &str, size: u32) -> sqlx::PgPool {
    pool_options(size)
        .connect_with(options(application))
        .await
        .unwrap()
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
    let pool = pool(&application, 3).await;
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
    let pool = pool(&application, 1).await;
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

async fn backend_pid(conn: &mut sqlx::PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn held_connections_are_reused_without_going_back_to_the_pool() {
    let application = format!("held-test-reuse-{}", std::process::id());
    let pool = pool(&application, 2).await;
    let held = HeldConnections::new(pool.clone(), 1);

    let mut conn = held.take().await.unwrap();
    let first = backend_pid(&mut conn).await;
    conn.give_back(None);
    assert_eq!(held.held(), 1);
    assert_eq!(pool.num_idle(), 1, "the held one is not in the pool");
    for _ in 0..3 {
        let mut conn = held.take().await.unwrap();
        assert_eq!(backend_pid(&mut conn).await, first, "the same session");
        conn.give_back(None);
    }

    // A row the client cannot decode leaves the session intact: kept.
    let mut conn = held.take().await.unwrap();
    let error = sqlx::query_scalar::<_, i32>("SELECT 'x'::text")
        .fetch_one(&mut *conn)
        .await
        .unwrap_err();
    assert!(
        matches!(error, sqlx::Error::ColumnDecode { .. }),
        "{error:?}"
    );
    conn.give_back(Some(&error));
    assert_eq!(held.held(), 1);

    // A statement error (not a connection fault) keeps it; at most `keep`
    // are held, the rest go back to the pool.
    let mut a = held.take().await.unwrap();
    let error = sqlx::query("SELECT 1/0")
        .execute(&mut *a)
        .await
        .unwrap_err();
    let mut b = held.take().await.unwrap();
    assert_ne!(backend_pid(&mut b).await, backend_pid(&mut a).await);
    a.give_back(Some(&error));
    b.give_back(None);
    assert_eq!(held.held(), 1);
    // The pool takes the other back (checking it first) in the background.
    for _ in 0..100 {
        if pool.num_idle() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(pool.num_idle(), 1);
    let mut again = held.take().await.unwrap();
    assert_eq!(backend_pid(&mut again).await, first);
}

#[tokio::test]
async fn held_connections_broken_while_idle_are_replaced_and_faults_are_not_kept() {
    let application = format!("held-test-broken-{}", std::process::id());
    let pool = pool(&application, 1).await;
    let held = HeldConnections::new(pool.clone(), 1);
    let mut conn = held.take().await.unwrap();
    let before = backend_pid(&mut conn).await;
    conn.give_back(None);
    assert_eq!(kill_backends(&application).await, 1);

    // Idle past the ping threshold: pinged, found dead, replaced.
    tokio::time::sleep(PING_IF_IDLE_FOR + std::time::Duration::from_millis(200)).await;
    let mut conn = held.take().await.unwrap();
    let after = backend_pid(&mut conn).await;
    assert_ne!(after, before);

    // Broken while in use: the statement fails as unavailable, and the
    // connection given back with that error is not kept.
    assert_eq!(kill_backends(&application).await, 1);
    let error = sqlx::query("SELECT 1")
        .execute(&mut *conn)
        .await
        .unwrap_err();
    assert!(berth_runtime::postgres::is_unavailable(&error), "{error:?}");
    conn.give_back(Some(&error));
    assert_eq!(held.held(), 0);
    let mut fresh = held.take().await.unwrap();
    assert_eq!(
        sqlx::query_scalar::<_, i32>("SELECT 1")
            .fetch_one(&mut *fresh)
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn a_held_connection_dropped_without_give_back_returns_to_the_pool() {
    let application = format!("held-test-drop-{}", std::process::id());
    let pool = pool(&application, 1).await;
    let held = HeldConnections::new(pool.clone(), 1);
    let conn = held.take().await.unwrap();
    assert_eq!(pool.num_idle(), 0);
    // E.g. a cancelled statement: sqlx checks it on the way back.
    drop(conn);
    assert_eq!(held.held(), 0);
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(one, 1);
}
