//! `Idempotency-Key` semantics (Stripe's).

use std::sync::atomic::Ordering;

use serde_json::json;
use uuid::Uuid;

use crate::common::*;
use crate::on_both_backends;

on_both_backends!(
    retry_replays_the_first_response,
    same_key_different_body_is_422,
    same_key_on_another_endpoint_is_422,
    concurrent_duplicate_is_409_while_in_flight,
    server_errors_free_the_key,
    decisions_are_replayed_too,
);

fn create_body(resource: Uuid, kind: Uuid, n: i64) -> serde_json::Value {
    json!({"resource_id": resource, "appointment_type_id": kind, "start": rfc3339(slot(n))})
}

async fn retry_replays_the_first_response(backend: Backend) {
    let env = setup(backend).await;
    let (resource, kind) = (Uuid::now_v7(), Uuid::now_v7());
    let key = new_key();
    let first = env
        .api
        .post("/v1/bookings", &key, create_body(resource, kind, 0))
        .await;
    assert_eq!(first.status, 201);
    // Same JSON value, different key order and spacing.
    let reordered = format!(
        "{{ \"start\": \"{}\", \"appointment_type_id\": \"{kind}\", \"resource_id\": \"{resource}\" }}",
        rfc3339(slot(0))
    );
    let retry = env
        .api
        .send(
            http::Method::POST,
            "/v1/bookings",
            Some(&key),
            Some("application/json"),
            reordered,
        )
        .await;
    assert_eq!(retry.status, 201);
    assert_eq!(retry.bytes, first.bytes, "byte-identical body");
    assert_eq!(retry.headers["location"], first.headers["location"]);
    assert_eq!(retry.headers["content-type"], first.headers["content-type"]);
    assert_eq!(retry.headers["idempotent-replayed"], "true");
    assert_eq!(env.db.rows("bookings").await, 1);
    assert_eq!(env.db.rows("outbox").await, 1);
    assert_eq!(env.ledger.claim_calls.load(Ordering::SeqCst), 1);

    // Also for an action.
    let id = first.id();
    let confirm_key = new_key();
    let path = format!("/v1/bookings/{id}/confirm");
    let send = || {
        env.api.send(
            http::Method::POST,
            &path,
            Some(&confirm_key),
            None,
            axum::body::Body::empty(),
        )
    };
    let a = send().await;
    let b = send().await;
    assert_eq!((a.status, &a.bytes), (b.status, &b.bytes));
    assert_eq!(env.db.rows("outbox").await, 2);
}

async fn same_key_different_body_is_422(backend: Backend) {
    let env = setup(backend).await;
    let (resource, kind) = (Uuid::now_v7(), Uuid::now_v7());
    let key = new_key();
    assert_eq!(
        env.api
            .post("/v1/bookings", &key, create_body(resource, kind, 0))
            .await
            .status,
        201
    );
    let other = env
        .api
        .post("/v1/bookings", &key, create_body(resource, kind, 1))
        .await;
    other.assert_problem(422);
    assert_eq!(other.problem_type(), "idempotency-key-reused");
    assert_eq!(env.db.rows("bookings").await, 1);
}

async fn same_key_on_another_endpoint_is_422(backend: Backend) {
    let env = setup(backend).await;
    let key = new_key();
    let created = env
        .api
        .post(
            "/v1/bookings",
            &key,
            create_body(Uuid::now_v7(), Uuid::now_v7(), 0),
        )
        .await;
    let id = created.id();
    let confirm = env
        .api
        .send(
            http::Method::POST,
            &format!("/v1/bookings/{id}/confirm"),
            Some(&key),
            None,
            axum::body::Body::empty(),
        )
        .await;
    confirm.assert_problem(422);
    assert_eq!(confirm.problem_type(), "idempotency-key-reused");
    assert_eq!(
        env.api.get(&format!("/v1/bookings/{id}")).await.json["status"],
        "held"
    );
}

async fn concurrent_duplicate_is_409_while_in_flight(backend: Backend) {
    let env = setup(backend).await;
    let body = create_body(Uuid::now_v7(), Uuid::now_v7(), 0);
    let key = new_key();
    let (entered, proceed) = env.ledger.gate_next_claim();

    let api = env.api.clone();
    let (k, b) = (key.clone(), body.clone());
    let first = tokio::spawn(async move { api.post("/v1/bookings", &k, b).await });
    entered.notified().await;

    let duplicate = env.api.post("/v1/bookings", &key, body.clone()).await;
    duplicate.assert_problem(409);
    assert_eq!(duplicate.problem_type(), "idempotency-in-flight");

    proceed.notify_one();
    let first = first.await.unwrap();
    assert_eq!(first.status, 201);
    let after = env.api.post("/v1/bookings", &key, body).await;
    assert_eq!((after.status, &after.bytes), (first.status, &first.bytes));
    assert_eq!(env.db.rows("bookings").await, 1);
    assert_eq!(env.ledger.claim_calls.load(Ordering::SeqCst), 1);
}

async fn server_errors_free_the_key(backend: Backend) {
    let env = setup(backend).await;
    let body = create_body(Uuid::now_v7(), Uuid::now_v7(), 0);
    let key = new_key();
    env.ledger.unavailable.store(true, Ordering::SeqCst);
    env.api
        .post("/v1/bookings", &key, body.clone())
        .await
        .assert_problem(503);
    assert_eq!(env.db.rows("idempotency_keys").await, 0);
    assert_eq!(env.db.rows("bookings").await, 0);

    env.ledger.unavailable.store(false, Ordering::SeqCst);
    let retry = env.api.post("/v1/bookings", &key, body).await;
    assert_eq!(
        retry.status, 201,
        "the same key works once the ledger is back"
    );
    assert!(retry.headers.get("idempotent-replayed").is_none());
}

async fn decisions_are_replayed_too(backend: Backend) {
    let env = setup(backend).await;
    let (resource, kind) = (Uuid::now_v7(), Uuid::now_v7());
    let holder = env.api.create(resource, kind, slot(0)).await.id();
    let key = new_key();
    let body = create_body(resource, kind, 0);
    let taken = env.api.post("/v1/bookings", &key, body.clone()).await;
    taken.assert_problem(409);
    assert_eq!(taken.problem_type(), "slot-unavailable");

    // Even after the slot frees up, the key keeps its answer.
    assert_eq!(env.api.act(holder, "cancel").await.status, 200);
    let replay = env.api.post("/v1/bookings", &key, body).await;
    assert_eq!((replay.status, &replay.bytes), (taken.status, &taken.bytes));
    assert_eq!(replay.headers["idempotent-replayed"], "true");
}

/// A key whose request died (here: hangs past the lock timeout) can be taken
/// over by a retry; the late original then cannot overwrite the stored answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_in_flight_key_is_taken_over() {
    let config = berth_booking::BookingConfig {
        idempotency_lock_timeout: std::time::Duration::from_millis(200),
        ..test_config()
    };
    let env = setup_with(Backend::Sqlite, config, None).await;
    let body = create_body(Uuid::now_v7(), Uuid::now_v7(), 0);
    let key = new_key();
    let (entered, proceed) = env.ledger.gate_next_claim();
    let api = env.api.clone();
    let (k, b) = (key.clone(), body.clone());
    let stuck = tokio::spawn(async move { api.post("/v1/bookings", &k, b).await });
    entered.notified().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let retry = env.api.post("/v1/bookings", &key, body.clone()).await;
    assert_eq!(retry.status, 201, "{:?}", retry.json);

    proceed.notify_one();
    let late = stuck.await.unwrap();
    late.assert_problem(409); // lost the slot to the retry
    let replay = env.api.post("/v1/bookings", &key, body).await;
    assert_eq!((replay.status, &replay.bytes), (retry.status, &retry.bytes));
    assert_eq!(env.db.rows("bookings").await, 1);
}
