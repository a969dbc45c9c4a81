//! Bad input gets 4xx problem+json, never 5xx, and writes nothing.

use axum::body::Body;
use http::Method;
use serde_json::json;
use uuid::Uuid;

use crate::common::*;
use crate::on_both_backends;

on_both_backends!(
    bad_bodies_write_nothing,
    unknown_ids_and_bad_paths,
    bad_list_parameters
);

async fn assert_nothing_written(db: &TestDb) {
    for table in ["bookings", "outbox", "idempotency_keys"] {
        assert_eq!(db.rows(table).await, 0, "{table} must stay empty");
    }
}

async fn bad_bodies_write_nothing(backend: Backend) {
    let env = setup(backend).await;
    let (r, k) = (Uuid::now_v7(), Uuid::now_v7());
    let start = rfc3339(slot(0));
    let json_ct = Some("application/json");
    // (what, idempotency key, content type, body, expected status)
    type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, String, u16);
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            Some("k1"),
            json_ct,
            "{\"resource_id\": ".into(),
            400,
        ),
        ("not JSON at all", Some("k2"), json_ct, "hello".into(), 400),
        (
            "wrong content type",
            Some("k3"),
            Some("text/plain"),
            json!({"resource_id": r, "appointment_type_id": k, "start": start}).to_string(),
            415,
        ),
        (
            "no content type",
            Some("k4"),
            None,
            json!({"resource_id": r, "appointment_type_id": k, "start": start}).to_string(),
            415,
        ),
        ("missing fields", Some("k5"), json_ct, "{}".into(), 422),
        (
            "missing start",
            Some("k6"),
            json_ct,
            json!({"resource_id": r, "appointment_type_id": k}).to_string(),
            422,
        ),
        (
            "bad uuid",
            Some("k7"),
            json_ct,
            json!({"resource_id": "nope", "appointment_type_id": k, "start": start}).to_string(),
            422,
        ),
        (
            "bad start",
            Some("k8"),
            json_ct,
            json!({"resource_id": r, "appointment_type_id": k, "start": "tomorrow"}).to_string(),
            422,
        ),
        (
            "zero seats",
            Some("k9"),
            json_ct,
            json!({"resource_id": r, "appointment_type_id": k, "start": start, "seats": 0})
                .to_string(),
            422,
        ),
        (
            "negative seats",
            Some("k10"),
            json_ct,
            json!({"resource_id": r, "appointment_type_id": k, "start": start, "seats": -1})
                .to_string(),
            422,
        ),
        (
            "too many seats",
            Some("k11"),
            json_ct,
            json!({"resource_id": r, "appointment_type_id": k, "start": start, "seats": 100000})
                .to_string(),
            422,
        ),
        (
            "unknown field",
            Some("k12"),
            json_ct,
            json!({"resource_id": r, "appointment_type_id": k, "start": start, "seat": 2})
                .to_string(),
            422,
        ),
        (
            "bad email",
            Some("k13"),
            json_ct,
            json!({"resource_id": r, "appointment_type_id": k, "start": start,
                   "customer": {"email": "not-an-email"}})
            .to_string(),
            422,
        ),
        (
            "bad locale",
            Some("k14b"),
            json_ct,
            json!({"resource_id": r, "appointment_type_id": k, "start": start,
                   "customer": {"locale": "german please"}})
            .to_string(),
            422,
        ),
        (
            "empty name",
            Some("k14"),
            json_ct,
            json!({"resource_id": r, "appointment_type_id": k, "start": start,
                   "customer": {"name": "  "}})
            .to_string(),
            422,
        ),
        (
            "missing idempotency key",
            None,
            json_ct,
            json!({"resource_id": r, "appointment_type_id": k, "start": start}).to_string(),
            400,
        ),
        (
            "blank idempotency key",
            Some("  "),
            json_ct,
            json!({"resource_id": r, "appointment_type_id": k, "start": start}).to_string(),
            400,
        ),
    ];
    for (what, key, content_type, body, status) in cases {
        let resp = env
            .api
            .send(Method::POST, "/v1/bookings", key, content_type, body)
            .await;
        assert_eq!(resp.status.as_u16(), status, "{what}: {:?}", resp.json);
        resp.assert_problem(status);
    }
    let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(100 * 1024));
    let resp = env
        .api
        .send(Method::POST, "/v1/bookings", Some("k15"), json_ct, huge)
        .await;
    resp.assert_problem(413);
    assert_nothing_written(&env.db).await;
    assert_eq!(env.ledger.live_claims(), 0);
}

async fn unknown_ids_and_bad_paths(backend: Backend) {
    let env = setup(backend).await;
    let unknown = Uuid::now_v7();
    env.api
        .get(&format!("/v1/bookings/{unknown}"))
        .await
        .assert_problem(404);
    env.api
        .get("/v1/bookings/not-a-uuid")
        .await
        .assert_problem(400);
    for action in ["confirm", "cancel"] {
        env.api.act(unknown, action).await.assert_problem(404);
        let bad = env
            .api
            .send(
                Method::POST,
                &format!("/v1/bookings/not-a-uuid/{action}"),
                Some(&new_key()),
                None,
                Body::empty(),
            )
            .await;
        bad.assert_problem(400);
    }
    env.api
        .post(
            &format!("/v1/bookings/{unknown}/reschedule"),
            &new_key(),
            json!({"start": rfc3339(slot(1))}),
        )
        .await
        .assert_problem(404);
    env.api
        .post(
            &format!("/v1/bookings/{unknown}/reschedule"),
            &new_key(),
            json!({"start": 12}),
        )
        .await
        .assert_problem(422);
    for table in ["bookings", "outbox"] {
        assert_eq!(env.db.rows(table).await, 0, "{table}");
    }
}

async fn bad_list_parameters(backend: Backend) {
    let env = setup(backend).await;
    for query in [
        "limit=0",
        "limit=101",
        "limit=-1",
        "limit=abc",
        "status=bogus",
        "resource_id=nope",
        "from=yesterday",
        "from=2030-01-02T00:00:00Z&to=2030-01-01T00:00:00Z",
        "cursor=garbage!",
        "cursor=bm9wZQ",
        "colour=blue",
    ] {
        let resp = env.api.get(&format!("/v1/bookings?{query}")).await;
        assert_eq!(resp.status, 400, "{query}: {:?}", resp.json);
        resp.assert_problem(400);
    }
    assert_nothing_written(&env.db).await;
}
