#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The account outbox on PostgreSQL + Redis (needs `scripts/stack up` and
//! `DATABASE_URL`, `REDIS_URL`) and on SQLite without Redis.

#[path = "../../../../tests/support/db.rs"]
mod db;

use std::time::Duration;

use tokio::sync::broadcast::error::TryRecvError;

use super::*;
use crate::{PasswordParams, UserConfig};
use db::TestDb;

/// A port nothing listens on: every Redis call fails, as in an outage.
const DEAD_REDIS: &str = "redis://127.0.0.1:1";

fn redis_url() -> String {
    db::redis_url().expect("REDIS_URL is not set: run `eval \"$(scripts/stack env)\"`")
}

fn config(stream: &str, poll: Duration) -> UserConfig {
    UserConfig {
        event_stream_key: stream.to_owned(),
        event_poll_interval: poll,
        password: PasswordParams {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        },
        ..UserConfig::default()
    }
}

fn test_stream() -> String {
    format!("berth:user-test-events:{}", Uuid::new_v4().simple())
}

async fn sqlite(poll: Duration) -> Users {
    Users::connect("sqlite::memory:", None, config("unused", poll))
        .await
        .unwrap()
}

async fn new_account(users: &Users) -> String {
    let email = format!("{}@example.test", Uuid::new_v4().simple());
    let roles = ["customer".to_owned()];
    let store = &users.inner.store;
    let account = store
        .insert_account(Some(&email), true, None, false, None, &roles)
        .await
        .unwrap();
    account.id
}

/// (published_at) of every event row of `account_id`.
async fn event_rows(users: &Users, account_id: &str) -> Vec<Option<i64>> {
    sqlx::query_scalar("SELECT published_at FROM account_events WHERE account_id = $1")
        .bind(account_id)
        .fetch_all(&users.inner.store.pool)
        .await
        .unwrap()
}

async fn xrange(redis: &mut redis::aio::MultiplexedConnection, stream: &str) -> Vec<Vec<String>> {
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(redis)
        .await
        .unwrap();
    entries.into_iter().map(|(_, fields)| fields).collect()
}

/// Waits (up to 10 s) until the stream holds `n` entries.
async fn wait_for_entries(
    redis: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    n: usize,
) -> Vec<Vec<String>> {
    for _ in 0..100 {
        let entries = xrange(redis, stream).await;
        if entries.len() >= n {
            return entries;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("stream {stream} did not get {n} entries");
}

async fn redis_connection() -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(redis_url()).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

fn assert_fields(fields: &[String], account_id: &str) -> Uuid {
    assert_eq!(fields.len(), 6, "{fields:?}");
    assert_eq!(fields[0], "event_id");
    assert_eq!(
        &fields[2..],
        ["type", "account.deleted", "account_id", account_id]
    );
    let id = Uuid::parse_str(&fields[1]).unwrap();
    assert_eq!(id.get_version_num(), 7);
    id
}

#[tokio::test]
async fn postgres_deletion_xadds_one_event_with_exact_fields() {
    let db = TestDb::create("user_events").await;
    let stream = test_stream();
    let users = Users::connect(
        &db.url,
        Some(&redis_url()),
        config(&stream, Duration::from_millis(100)),
    )
    .await
    .unwrap();
    let mut mirror = users.subscribe_account_events();
    let stop = CancellationToken::new();
    users.spawn_event_relay(stop.clone());
    let id = new_account(&users).await;

    assert!(users.delete_account(&id).await.unwrap());
    assert!(!users.delete_account(&id).await.unwrap(), "already gone");
    assert!(
        users
            .inner
            .store
            .account_by_id(&id)
            .await
            .unwrap()
            .is_none()
    );

    let mut redis = redis_connection().await;
    let entries = wait_for_entries(&mut redis, &stream, 1).await;
    let event_id = assert_fields(&entries[0], &id);
    let mirrored = tokio::time::timeout(Duration::from_secs(5), mirror.recv()).await;
    assert_eq!(mirrored.unwrap().unwrap().id, event_id);
    // Marked published, so later passes do not send it again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(xrange(&mut redis, &stream).await.len(), 1);
    let rows = event_rows(&users, &id).await;
    assert_eq!(rows.len(), 1, "exactly one event row");
    assert!(rows[0].is_some(), "published_at set after XADD");

    stop.cancel();
    let _: () = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut redis)
        .await
        .unwrap();
    db.drop_now().await;
}

#[tokio::test]
async fn postgres_redis_outage_keeps_event_until_redis_is_back() {
    let db = TestDb::create("user_events").await;
    let stream = test_stream();
    let users = Users::connect(
        &db.url,
        Some(&redis_url()),
        config(&stream, Duration::from_millis(100)),
    )
    .await
    .unwrap();
    let mut mirror = users.subscribe_account_events();
    let down = CancellationToken::new();
    let dead = users.publisher(Some(redis::Client::open(DEAD_REDIS).unwrap()));
    let relay = spawn_relay(users.clone(), dead, down.clone());
    let id = new_account(&users).await;

    assert!(
        users.delete_account(&id).await.unwrap(),
        "deletion succeeds"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!relay.is_finished(), "the relay survives the outage");
    assert_eq!(event_rows(&users, &id).await, [None], "still unpublished");
    assert!(matches!(mirror.try_recv(), Err(TryRecvError::Empty)));
    let mut redis = redis_connection().await;
    assert!(xrange(&mut redis, &stream).await.is_empty());

    down.cancel();
    tokio::time::timeout(Duration::from_secs(10), relay)
        .await
        .unwrap()
        .unwrap();
    let up = CancellationToken::new();
    users.spawn_event_relay(up.clone());
    let entries = wait_for_entries(&mut redis, &stream, 1).await;
    assert_fields(&entries[0], &id);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(event_rows(&users, &id).await[0].is_some());

    up.cancel();
    let _: () = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut redis)
        .await
        .unwrap();
    db.drop_now().await;
}

#[tokio::test]
async fn sqlite_subscribers_receive_event_without_redis() {
    let users = sqlite(Duration::from_millis(100)).await;
    let mut events = users.subscribe_account_events();
    let stop = CancellationToken::new();
    users.spawn_event_relay(stop.clone());
    let id = new_account(&users).await;

    assert!(users.delete_account(&id).await.unwrap());
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.event_type, ACCOUNT_DELETED);
    assert_eq!(event.account_id, id);
    assert_eq!(event.id.get_version_num(), 7);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(event_rows(&users, &id).await[0].is_some());
    assert!(matches!(events.try_recv(), Err(TryRecvError::Empty)));
    stop.cancel();
}

#[tokio::test]
async fn relay_is_woken_by_a_deletion() {
    // Polling alone would take an hour.
    let users = sqlite(Duration::from_secs(3600)).await;
    let mut events = users.subscribe_account_events();
    let stop = CancellationToken::new();
    users.spawn_event_relay(stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await; // first pass done
    let id = new_account(&users).await;

    assert!(users.delete_account(&id).await.unwrap());
    let event = tokio::time::timeout(Duration::from_secs(3), events.recv()).await;
    assert_eq!(event.unwrap().unwrap().account_id, id);
    stop.cancel();
}

#[tokio::test]
async fn deletion_and_event_share_one_transaction() {
    let users = sqlite(Duration::from_secs(3600)).await;
    let id = new_account(&users).await;
    let pool = &users.inner.store.pool;
    sqlx::query("DROP TABLE account_events")
        .execute(pool)
        .await
        .unwrap();

    assert!(users.delete_account(&id).await.is_err());
    let account = users.inner.store.account_by_id(&id).await.unwrap();
    assert!(account.is_some(), "no event, no deletion");
}

async fn insert_event(users: &Users, created_at: i64, published_at: Option<i64>) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO account_events (id, type, account_id, created_at, published_at) \
         VALUES ($1, 'account.deleted', $2, $3, $4)",
    )
    .bind(id.to_string())
    .bind(id.to_string())
    .bind(created_at)
    .bind(published_at)
    .execute(&users.inner.store.pool)
    .await
    .unwrap();
    id
}

#[tokio::test]
async fn postgres_relay_publishes_in_order_and_purges_old_published_rows() {
    // PostgreSQL: SQLite would return index order even without ORDER BY.
    let db = TestDb::create("user_events").await;
    let users = Users::connect(&db.url, None, config("unused", Duration::from_millis(100)))
        .await
        .unwrap();
    let now = now();
    let day = 24 * 3600;
    let old_published = insert_event(&users, now - 9 * day, Some(now - 8 * day)).await;
    let recent_published = insert_event(&users, now - 2 * day, Some(now - day)).await;
    // Inserted first but written later: must go out second.
    let second = insert_event(&users, now - 5, None).await;
    let first = insert_event(&users, now - 8 * day, None).await;
    let mut events = users.subscribe_account_events();
    let stop = CancellationToken::new();
    users.spawn_event_relay(stop.clone());

    for expected in [first, second] {
        let event = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
        assert_eq!(event.unwrap().unwrap().id, expected);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    let left: Vec<String> = sqlx::query_scalar("SELECT id FROM account_events ORDER BY id")
        .fetch_all(&users.inner.store.pool)
        .await
        .unwrap();
    let mut expected: Vec<String> = [recent_published, second, first]
        .iter()
        .map(Uuid::to_string)
        .collect();
    expected.sort();
    assert_eq!(left, expected, "only {old_published} is purged");
    users.inner.store.pool.close().await;
    db.drop_now().await;
}
