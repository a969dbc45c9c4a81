//! Account deletion: `anonymise_customer`, the in-process handler, and the
//! Redis stream consumer (real Redis, including an outage).

use std::time::Duration;

use berth_booking::{ACCOUNT_CONSUMER_GROUP, ACCOUNT_DELETED};
use redis::AsyncCommands;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::common::*;
use crate::on_both_backends;

on_both_backends!(
    anonymise_customer_erases_name_and_email_once,
    anonymise_customer_scrubs_other_callers_stored_responses,
    account_deleted_is_handled_once_in_process,
    redis_consumer_anonymises_and_handles_a_redelivery_once,
);

const EMAIL: &str = "ada@example.org";

async fn book_with_pii(api: &Api, n: i64, email: &str) -> Uuid {
    book_on(api, Uuid::now_v7(), n, email).await
}

async fn book_on(api: &Api, resource: Uuid, n: i64, email: &str) -> Uuid {
    let resp = api
        .post(
            "/v1/bookings",
            &new_key(),
            json!({
                "resource_id": resource, "appointment_type_id": Uuid::now_v7(),
                "start": rfc3339(slot(n)), "customer": {"name": "Ada Lovelace", "email": email},
            }),
        )
        .await;
    assert_eq!(resp.status, 201, "{:?}", resp.json);
    resp.id()
}

async fn stored_name(env: &Env, id: Uuid) -> Option<String> {
    env.db
        .text(&format!(
            "SELECT customer_name FROM {{t}}bookings WHERE id = '{id}'"
        ))
        .await
}

/// Outbox rows whose payload still contains `needle`.
async fn outbox_containing(env: &Env, needle: &str) -> i64 {
    let payload = match env.db.backend {
        Backend::Postgres => "payload::text",
        Backend::Sqlite => "payload",
    };
    env.db
        .count(&format!(
            "SELECT count(*) FROM {{t}}outbox WHERE {payload} LIKE '%{needle}%'"
        ))
        .await
}

async fn anonymised_events(env: &Env) -> i64 {
    env.db
        .count("SELECT count(*) FROM {t}outbox WHERE event_type = 'booking.customer_anonymised'")
        .await
}

async fn anonymise_customer_erases_name_and_email_once(backend: Backend) {
    let env = setup(backend).await;
    let bob = env.api_as("bob", &["customer"]);
    let a1 = book_with_pii(&env.api, 0, EMAIL).await;
    let a2 = book_with_pii(&env.api, 1, EMAIL).await;
    let plain = env
        .api
        .create(Uuid::now_v7(), Uuid::now_v7(), slot(2))
        .await
        .id();
    assert_eq!(env.api.act(a2, "confirm").await.status, 200);
    let b1 = book_with_pii(&bob, 0, "bob@example.org").await;
    let before = env.api.get(&format!("/v1/bookings/{a1}")).await.json;
    assert_eq!(outbox_containing(&env, EMAIL).await, 3);

    assert_eq!(env.booking.anonymise_customer(ALICE).await.unwrap(), 2);

    for id in [a1, a2] {
        let read = env.api.get(&format!("/v1/bookings/{id}")).await;
        assert_eq!(read.status, 200, "still the customer's booking");
        assert!(read.json.get("customer").is_none(), "{:?}", read.json);
        assert_eq!(read.json["customer_id"], ALICE);
        let email = format!("SELECT customer_email FROM {{t}}bookings WHERE id = '{id}'");
        assert_eq!(env.db.text(&email).await, None);
        assert_eq!(stored_name(&env, id).await, None);
    }
    let after = env.api.get(&format!("/v1/bookings/{a1}")).await.json;
    assert_eq!(after["version"], before["version"].as_i64().unwrap() + 1);
    assert_eq!(after["status"], before["status"]);
    assert_eq!(
        anonymised_events(&env).await,
        2,
        "one event per changed booking"
    );
    assert_eq!(
        outbox_containing(&env, EMAIL).await,
        0,
        "no copy left in the outbox"
    );
    let alice_keys = "SELECT count(*) FROM {t}idempotency_keys WHERE subject = 'alice'";
    assert_eq!(
        env.db.count(alice_keys).await,
        0,
        "stored responses with the data dropped"
    );
    // Others untouched.
    assert_eq!(stored_name(&env, b1).await.as_deref(), Some("Ada Lovelace"));
    assert_eq!(outbox_containing(&env, "bob@example.org").await, 1);
    assert_eq!(
        env.db
            .count("SELECT count(*) FROM {t}idempotency_keys WHERE subject = 'bob'")
            .await,
        1
    );
    let plain_read = env.api.get(&format!("/v1/bookings/{plain}")).await;
    assert_eq!(plain_read.json["version"], 1, "no personal data, no change");

    // Idempotent: nothing left to erase, no further events.
    let outbox = env.db.rows("outbox").await;
    assert_eq!(env.booking.anonymise_customer(ALICE).await.unwrap(), 0);
    assert_eq!(env.db.rows("outbox").await, outbox);
    assert_eq!(
        env.api.get(&format!("/v1/bookings/{a1}")).await.json["version"],
        after["version"]
    );
    assert!(env.booking.anonymise_customer("").await.is_err());
}

/// The stored body of `subject`'s key `key`, as text.
async fn stored_body(env: &Env, subject: &str, key: &str) -> Option<String> {
    let body = match env.db.backend {
        Backend::Postgres => "convert_from(body, 'UTF8')",
        Backend::Sqlite => "CAST(body AS TEXT)",
    };
    env.db
        .text(&format!(
            "SELECT {body} FROM {{t}}idempotency_keys WHERE subject = '{subject}' AND key = '{key}'"
        ))
        .await
}

async fn stored_booking_id(env: &Env, subject: &str, key: &str) -> Option<String> {
    let column = match env.db.backend {
        Backend::Postgres => "booking_id::text",
        Backend::Sqlite => "booking_id",
    };
    env.db
        .text(&format!(
            "SELECT {column} FROM {{t}}idempotency_keys WHERE subject = '{subject}' AND key = '{key}'"
        ))
        .await
}

/// Stored idempotent responses whose body still contains `needle`.
async fn keys_containing(env: &Env, needle: &str) -> i64 {
    let body = match env.db.backend {
        Backend::Postgres => "convert_from(body, 'UTF8')",
        Backend::Sqlite => "CAST(body AS TEXT)",
    };
    env.db
        .count(&format!(
            "SELECT count(*) FROM {{t}}idempotency_keys WHERE {body} LIKE '%{needle}%'"
        ))
        .await
}

/// Staff and an admin act on alice's bookings under their own keys; after
/// alice is erased their replays no longer show her, and still replay.
async fn anonymise_customer_scrubs_other_callers_stored_responses(backend: Backend) {
    let env = setup(backend).await;
    let resource = Uuid::now_v7();
    env.ledger.set_owner(resource, "stella");
    let stella = env.api_as("stella", &["staff"]);
    let root = env.api_as("root", &["admin"]);
    let bob = env.api_as("bob", &["customer"]);
    let bob_email = "bob@example.org";
    let confirmed = book_on(&env.api, resource, 0, EMAIL).await;
    let moved = book_on(&env.api, resource, 1, EMAIL).await;
    let bobs = book_on(&bob, resource, 2, bob_email).await;

    let confirm_key = new_key();
    let confirm_path = format!("/v1/bookings/{confirmed}/confirm");
    let confirm = || {
        stella.send(
            http::Method::POST,
            &confirm_path,
            Some(&confirm_key),
            None,
            axum::body::Body::empty(),
        )
    };
    let first = confirm().await;
    assert_eq!(first.status, 200, "{:?}", first.json);
    assert_eq!(first.json["customer"]["email"], EMAIL);
    let reschedule_key = new_key();
    let reschedule_path = format!("/v1/bookings/{moved}/reschedule");
    let reschedule_body = json!({"start": rfc3339(slot(5))});
    let rescheduled = root
        .post(&reschedule_path, &reschedule_key, reschedule_body.clone())
        .await;
    assert_eq!(rescheduled.status, 200, "{:?}", rescheduled.json);
    let bob_key = new_key();
    let cancelled = stella
        .send(
            http::Method::POST,
            &format!("/v1/bookings/{bobs}/cancel"),
            Some(&bob_key),
            None,
            axum::body::Body::empty(),
        )
        .await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.json);
    let bobs_before = stored_body(&env, "stella", &bob_key).await;
    assert!(bobs_before.as_deref().unwrap().contains(bob_email));
    assert_eq!(
        stored_booking_id(&env, "stella", &confirm_key).await,
        Some(confirmed.to_string())
    );
    assert_eq!(
        stored_booking_id(&env, "root", &reschedule_key).await,
        Some(moved.to_string())
    );
    let created_by_bob = "SELECT count(*) FROM {t}idempotency_keys \
         WHERE subject = 'bob' AND booking_id IS NOT NULL";
    assert_eq!(env.db.count(created_by_bob).await, 1, "create records it");
    assert_eq!(keys_containing(&env, EMAIL).await, 4);
    // Stored 2xx bodies that are not JSON objects cannot fail the erasure.
    let odd = [
        ("odd-array", "application/json", "[1]"),
        ("odd-scalar", "application/json", "\"customer\""),
        ("odd-text", "text/plain", "not json"),
    ];
    for (key, content_type, body) in odd {
        let body = match backend {
            Backend::Postgres => format!("convert_to('{body}', 'UTF8')"),
            Backend::Sqlite => format!("CAST('{body}' AS BLOB)"),
        };
        env.db
            .execute(&format!(
                "INSERT INTO {{t}}idempotency_keys (subject, key, fingerprint, state, status, \
                 headers, body, created_at, locked_at, booking_id) VALUES ('root', '{key}', '', \
                 'done', 200, '[[\"content-type\",\"{content_type}\"]]', {body}, \
                 '2030-01-01T00:00:00.000000Z', '2030-01-01T00:00:00.000000Z', '{confirmed}')"
            ))
            .await;
    }

    assert_eq!(env.booking.anonymise_customer(ALICE).await.unwrap(), 2);

    // (a) The staff's and the admin's retries replay, without alice.
    let outbox = env.db.rows("outbox").await;
    let replays = [
        (first, confirm().await),
        (
            rescheduled,
            root.post(&reschedule_path, &reschedule_key, reschedule_body)
                .await,
        ),
    ];
    for (original, replay) in replays {
        assert_eq!(replay.status, original.status, "{:?}", replay.json);
        assert_eq!(replay.headers["idempotent-replayed"], "true");
        assert!(replay.json.get("customer").is_none(), "{:?}", replay.json);
        assert!(
            !String::from_utf8_lossy(&replay.bytes).contains(EMAIL),
            "{:?}",
            replay.bytes
        );
        let mut expected = original.json.clone();
        expected.as_object_mut().unwrap().remove("customer");
        assert_eq!(replay.json, expected, "otherwise the same response");
    }
    assert_eq!(env.db.rows("outbox").await, outbox, "nothing ran again");
    // (b) No stored copy of alice's email is left; the keys stay.
    assert_eq!(keys_containing(&env, EMAIL).await, 0);
    assert_eq!(
        env.db
            .count("SELECT count(*) FROM {t}idempotency_keys WHERE subject IN ('stella', 'root')")
            .await,
        3 + 3,
        "three answered over HTTP, three inserted"
    );
    // (c) Bob's booking's stored response is untouched, and so are bodies
    // that are not booking JSON.
    assert_eq!(stored_body(&env, "stella", &bob_key).await, bobs_before);
    assert_eq!(keys_containing(&env, bob_email).await, 2);
    for (key, _, body) in odd {
        assert_eq!(stored_body(&env, "root", key).await.as_deref(), Some(body));
    }
}

async fn account_deleted_is_handled_once_in_process(backend: Backend) {
    let env = setup(backend).await;
    let first = book_with_pii(&env.api, 0, EMAIL).await;
    let event = Uuid::now_v7();
    assert!(
        env.booking
            .handle_account_deleted(event, ALICE)
            .await
            .unwrap()
    );
    assert_eq!(stored_name(&env, first).await, None);

    // Data that appears later is not touched by a redelivery of the old event.
    let later = book_with_pii(&env.api, 1, EMAIL).await;
    assert!(
        !env.booking
            .handle_account_deleted(event, ALICE)
            .await
            .unwrap()
    );
    assert_eq!(
        stored_name(&env, later).await.as_deref(),
        Some("Ada Lovelace")
    );
    assert_eq!(anonymised_events(&env).await, 1);
}

async fn xadd(redis_url: &str, stream: &str, fields: &[(&str, &str)]) {
    let mut conn = redis_connection(redis_url).await;
    let _: String = conn.xadd(stream, "*", fields).await.unwrap();
}

async fn account_deleted(redis_url: &str, stream: &str, event: Uuid, account: &str) {
    let event = event.to_string();
    xadd(
        redis_url,
        stream,
        &[
            ("event_id", &event),
            ("type", ACCOUNT_DELETED),
            ("account_id", account),
        ],
    )
    .await;
}

async fn pending(redis_url: &str, stream: &str) -> usize {
    let mut conn = redis_connection(redis_url).await;
    let reply: redis::streams::StreamPendingReply =
        conn.xpending(stream, ACCOUNT_CONSUMER_GROUP).await.unwrap();
    reply.count()
}

async fn drop_stream(redis_url: &str, stream: &str) {
    let mut conn = redis_connection(redis_url).await;
    let _: () = conn.del(stream).await.unwrap();
}

async fn redis_consumer_anonymises_and_handles_a_redelivery_once(backend: Backend) {
    let redis_url = required_env("REDIS_URL");
    let config = test_config();
    let stream = config.accounts_stream_key.clone();
    let booking_events = config.stream_key.clone();
    let env = setup_with(backend, config, Some(&redis_url)).await;
    let carol = env.api_as("carol", &["customer"]);
    let dave = env.api_as("dave", &["customer"]);
    let alices = book_with_pii(&env.api, 0, EMAIL).await;
    let carols = book_with_pii(&carol, 0, "carol@example.org").await;
    let daves = book_with_pii(&dave, 0, "dave@example.org").await;
    let stop = CancellationToken::new();
    env.booking.spawn_workers(stop.clone());

    // Skipped: another event type, and a malformed deletion.
    let other = Uuid::now_v7().to_string();
    xadd(
        &redis_url,
        &stream,
        &[
            ("event_id", &other),
            ("type", "account.updated"),
            ("account_id", "dave"),
        ],
    )
    .await;
    xadd(
        &redis_url,
        &stream,
        &[
            ("event_id", "not-a-uuid"),
            ("type", ACCOUNT_DELETED),
            ("account_id", "dave"),
        ],
    )
    .await;
    let event = Uuid::now_v7();
    account_deleted(&redis_url, &stream, event, ALICE).await;
    eventually(15, "the consumer anonymises alice", || async {
        stored_name(&env, alices).await.is_none()
    })
    .await;

    // Redelivery of the same event after alice has new data: not handled
    // again. Carol's deletion, published after it, proves it was read.
    let later = book_with_pii(&env.api, 1, EMAIL).await;
    account_deleted(&redis_url, &stream, event, ALICE).await;
    account_deleted(&redis_url, &stream, Uuid::now_v7(), "carol").await;
    eventually(15, "the consumer anonymises carol", || async {
        stored_name(&env, carols).await.is_none()
    })
    .await;
    assert_eq!(
        stored_name(&env, later).await.as_deref(),
        Some("Ada Lovelace")
    );
    assert_eq!(
        stored_name(&env, daves).await.as_deref(),
        Some("Ada Lovelace")
    );
    assert_eq!(
        anonymised_events(&env).await,
        2,
        "alice's first booking and carol's"
    );
    eventually(10, "every entry is acknowledged", || async {
        pending(&redis_url, &stream).await == 0
    })
    .await;
    // Booking's own events have a stream of their own, which the consumer
    // never joins (it used to read and skip every one of them).
    eventually(10, "booking events are published", || async {
        stream_length(&redis_url, &booking_events).await > 0
    })
    .await;
    let groups: redis::streams::StreamInfoGroupsReply = redis_connection(&redis_url)
        .await
        .xinfo_groups(&booking_events)
        .await
        .unwrap();
    assert!(
        groups
            .groups
            .iter()
            .all(|g| g.name != ACCOUNT_CONSUMER_GROUP),
        "the account consumer reads the booking events stream"
    );
    stop.cancel();
    drop_stream(&redis_url, &stream).await;
    drop_stream(&redis_url, &booking_events).await;
}

async fn redis_connection(redis_url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(redis_url).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// The name of the one consumer in the account consumer group.
async fn only_consumer(redis_url: &str, stream: &str) -> String {
    let consumers: redis::streams::StreamInfoConsumersReply = redis_connection(redis_url)
        .await
        .xinfo_consumers(stream, ACCOUNT_CONSUMER_GROUP)
        .await
        .unwrap();
    assert_eq!(consumers.consumers.len(), 1, "one consumer in the group");
    consumers.consumers[0].name.clone()
}

async fn stream_length(redis_url: &str, stream: &str) -> usize {
    redis_connection(redis_url)
        .await
        .xlen(stream)
        .await
        .unwrap()
}

/// A TCP proxy to Redis that can be cut (closing its connections and
/// refusing new ones) and restored.
struct Proxy {
    url: String,
    up: watch::Sender<bool>,
}

impl Proxy {
    async fn start(redis_url: &str) -> Self {
        let info = redis::Client::open(redis_url)
            .unwrap()
            .get_connection_info()
            .clone();
        let redis::ConnectionAddr::Tcp(host, port) = info.addr else {
            panic!("REDIS_URL must be a TCP address");
        };
        let upstream = format!("{host}:{port}");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let (up, watching) = watch::channel(true);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut watching = watching.clone();
                if !*watching.borrow() {
                    continue; // dropped: connection refused in effect
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watching.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self { url, up }
    }

    fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_consumer_survives_an_outage() {
    let redis_url = required_env("REDIS_URL");
    let proxy = Proxy::start(&redis_url).await;
    let config = test_config();
    let stream = config.accounts_stream_key.clone();
    let env = setup_with(Backend::Postgres, config, Some(&proxy.url)).await;
    let carol = env.api_as("carol", &["customer"]);
    let alices = book_with_pii(&env.api, 0, EMAIL).await;
    let carols = book_with_pii(&carol, 0, "carol@example.org").await;
    let stop = CancellationToken::new();
    env.booking.spawn_workers(stop.clone());
    account_deleted(&redis_url, &stream, Uuid::now_v7(), "carol").await;
    eventually(15, "the consumer runs", || async {
        stored_name(&env, carols).await.is_none()
    })
    .await;

    proxy.set_up(false);
    account_deleted(&redis_url, &stream, Uuid::now_v7(), ALICE).await;
    // Redis can hand an entry to a read whose connection is being cut, so
    // the reply never arrives: the entry is pending on the consumer's name
    // and `>` never returns it again. Make that happen (if the cut did not
    // already), so the consumer has to read its own pending entries after
    // reconnecting.
    let consumer = only_consumer(&redis_url, &stream).await;
    let _: Option<redis::streams::StreamReadReply> = redis_connection(&redis_url)
        .await
        .xread_options(
            &[&stream],
            &[">"],
            &redis::streams::StreamReadOptions::default()
                .group(ACCOUNT_CONSUMER_GROUP, &consumer)
                .count(10),
        )
        .await
        .unwrap();
    assert_eq!(
        pending(&redis_url, &stream).await,
        1,
        "alice's deletion is pending on the consumer"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        stored_name(&env, alices).await.as_deref(),
        Some("Ada Lovelace"),
        "unreachable while Redis is cut off"
    );
    proxy.set_up(true);
    eventually(
        20,
        "the consumer reconnects and anonymises alice",
        || async { stored_name(&env, alices).await.is_none() },
    )
    .await;
    stop.cancel();
    drop_stream(&redis_url, &stream).await;
}
