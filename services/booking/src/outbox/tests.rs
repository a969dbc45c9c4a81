//! Kills the relay in the middle of a batch (after some events reached Redis,
//! before the batch was marked published) and checks that a restarted relay
//! re-delivers them and the idempotent consumer handles each event once.
//! Needs the stack: `scripts/stack up && eval "$(scripts/stack env)"`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::TimeDelta;
use redis::AsyncCommands;
use sqlx::Connection;

use super::*;
use crate::model::{BookingRecord, BookingStatus, event_type};
use crate::store::{self, Store};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run `scripts/stack up` and `eval \"$(scripts/stack env)\"`")
    })
}

/// A scratch PostgreSQL database, dropped at the end (best effort).
async fn scratch_postgres() -> (String, String) {
    let admin = env("DATABASE_URL");
    let name = format!("booking_test_{}", Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let (base, query) = admin.split_once('?').unwrap_or((&admin, ""));
    let slash = base.rfind('/').unwrap();
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    (format!("{}{name}{query}", &base[..=slash]), name)
}

async fn drop_postgres(name: &str) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(&env("DATABASE_URL")).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
    }
}

fn booking(n: i64) -> BookingRecord {
    let now = now();
    let start = now + TimeDelta::days(1) + TimeDelta::minutes(30 * n);
    BookingRecord {
        id: Uuid::now_v7(),
        resource_id: Uuid::now_v7(),
        appointment_type_id: Uuid::now_v7(),
        claim_id: Uuid::now_v7(),
        start,
        end: start + TimeDelta::minutes(30),
        seats: 1,
        status: BookingStatus::Held,
        price_minor: 0,
        currency: "EUR".into(),
        customer_id: Some("customer-1".into()),
        customer: None,
        hold_expires_at: Some(now + TimeDelta::minutes(10)),
        created_at: now,
        updated_at: now,
        version: 1,
        resource_owner_id: None,
        saga: None,
        status_reason: None,
        cancellation_policy: None,
    }
}

/// Publishes the first `deliver` events for real, says so, then hangs: the
/// relay is then killed while the batch is still unmarked.
struct DiesMidBatch {
    real: RedisPublisher,
    deliver: usize,
    delivered: Arc<tokio::sync::Notify>,
}

#[async_trait]
impl Publisher for DiesMidBatch {
    async fn publish(&self, events: &[OutboxEvent]) -> Result<(), String> {
        self.real.xadd(&events[..self.deliver]).await?;
        self.delivered.notify_one();
        futures::future::pending().await
    }
}

async fn relay_killed_mid_batch_redelivers_and_consumer_dedupes(db: Arc<dyn Store>) {
    const EVENTS: usize = 5;
    const BEFORE_KILL: usize = 2;
    let client = redis::Client::open(env("REDIS_URL")).unwrap();
    let stream = format!("berth:test:{}", Uuid::new_v4().simple());
    let (events, _) = broadcast::channel(16);
    let publisher = || RedisPublisher::new(client.clone(), stream.clone(), events.clone());
    for n in 0..EVENTS {
        let b = booking(n as i64);
        db.insert_booking(&b, &Event::new(event_type::CREATED, &b))
            .await
            .unwrap();
    }

    let delivered = Arc::new(tokio::sync::Notify::new());
    let dying = DiesMidBatch {
        real: publisher(),
        deliver: BEFORE_KILL,
        delivered: delivered.clone(),
    };
    // Killed (dropped) once its first events are out, however long the
    // machine took to get there; a fixed time limit made this flaky.
    let relay = db.relay_batch(10, now(), &dying);
    let killed = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::select! {
            _ = relay => false,
            _ = delivered.notified() => true,
        }
    })
    .await;
    assert_eq!(
        killed,
        Ok(true),
        "the relay should have hung mid-batch after publishing"
    );

    // Restart: a fresh relay publishes whatever is still unmarked (the killed
    // relay's locks vanish with its rolled-back transaction).
    let restarted = publisher();
    let mut published = 0;
    for _ in 0..50 {
        published += db.relay_batch(10, now(), &restarted).await.unwrap();
        if published == EVENTS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(published, EVENTS);
    assert_eq!(db.relay_batch(10, now(), &restarted).await.unwrap(), 0);

    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let entries: redis::streams::StreamRangeReply = conn.xrange_all(&stream).await.unwrap();
    let _: () = conn.del(&stream).await.unwrap();
    assert_eq!(
        entries.ids.len(),
        EVENTS + BEFORE_KILL,
        "at-least-once: the first two twice"
    );

    let handled = Arc::new(Mutex::new(HashMap::<Uuid, usize>::new()));
    for entry in &entries.ids {
        let json: String = entry.get("event").unwrap();
        let event: Event = serde_json::from_str(&json).unwrap();
        let id: String = entry.get("event_id").unwrap();
        assert_eq!(id, event.id.to_string());
        let handled = handled.clone();
        let run = Box::pin(async move {
            *handled.lock().unwrap().entry(event.id).or_default() += 1;
            Ok(())
        });
        db.process_once("test-consumer", event.id, now(), run)
            .await
            .unwrap();
    }
    let handled = handled.lock().unwrap();
    assert_eq!(handled.len(), EVENTS);
    assert!(handled.values().all(|&n| n == 1), "{handled:?}");
}

/// Published rows go once past retention; unpublished ones never do.
async fn published_events_are_purged_after_retention(db: Arc<dyn Store>) {
    let (events, _) = broadcast::channel(16);
    let publisher = ChannelPublisher { events };
    for n in 0..3 {
        let b = booking(n);
        db.insert_booking(&b, &Event::new(event_type::CREATED, &b))
            .await
            .unwrap();
    }
    assert_eq!(db.relay_batch(10, now(), &publisher).await.unwrap(), 3);
    let pending = booking(3);
    db.insert_booking(&pending, &Event::new(event_type::CREATED, &pending))
        .await
        .unwrap();
    let long_ago = now() - TimeDelta::days(1);
    assert_eq!(db.purge_published(long_ago).await.unwrap(), 0, "too recent");
    let later = now() + TimeDelta::days(1);
    assert_eq!(db.purge_published(later).await.unwrap(), 3);
    assert_eq!(db.purge_published(later).await.unwrap(), 0);
    // The unpublished row survived and is still relayed.
    assert_eq!(db.relay_batch(10, now(), &publisher).await.unwrap(), 1);
}

#[tokio::test]
async fn postgres_purges_published_events() {
    let (url, name) = scratch_postgres().await;
    let db = store::connect(&url, 4).await.unwrap();
    published_events_are_purged_after_retention(db).await;
    drop_postgres(&name).await;
}

#[tokio::test]
async fn sqlite_purges_published_events() {
    let db = store::connect("sqlite::memory:", 1).await.unwrap();
    published_events_are_purged_after_retention(db).await;
}

#[tokio::test]
async fn postgres_relay_killed_mid_batch() {
    let (url, name) = scratch_postgres().await;
    let db = store::connect(&url, 4).await.unwrap();
    relay_killed_mid_batch_redelivers_and_consumer_dedupes(db).await;
    drop_postgres(&name).await;
}

#[tokio::test]
async fn sqlite_relay_killed_mid_batch() {
    let db = store::connect("sqlite::memory:", 1).await.unwrap();
    relay_killed_mid_batch_redelivers_and_consumer_dedupes(db).await;
}
