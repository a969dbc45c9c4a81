//! Authorisation: who may see and change which booking, 401 without a token,
//! and idempotency keys scoped per principal. Each test fails if its check
//! is removed.

use axum::body::Body;
use http::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::*;
use crate::on_both_backends;

on_both_backends!(
    another_customer_gets_404_and_changes_nothing,
    staff_see_and_cancel_bookings_on_their_resources_only,
    admin_sees_everything_and_lists_filter_per_principal,
    without_a_token_every_route_is_401_and_no_key_is_reserved,
    principal_without_a_booking_role_cannot_create,
    idempotency_keys_are_scoped_per_principal,
);

const BOB: &str = "bob";

/// The 404 body with the booking id blanked: identical for an unknown id
/// and for a booking the caller may not see.
fn not_found_shape(resp: &Resp, id: Uuid) -> Value {
    resp.assert_problem(404);
    let text = String::from_utf8(resp.bytes.to_vec()).unwrap();
    serde_json::from_str(&text.replace(&id.to_string(), "<id>")).unwrap()
}

fn ids(page: &Resp) -> Vec<Uuid> {
    assert_eq!(page.status, 200, "{:?}", page.json);
    page.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

async fn create_with_customer(api: &Api, resource: Uuid, kind: Uuid, n: i64) -> Resp {
    let resp = api
        .post(
            "/v1/bookings",
            &new_key(),
            json!({
                "resource_id": resource, "appointment_type_id": kind, "start": rfc3339(slot(n)),
                "customer": {"name": "Ada Lovelace", "email": "ada@example.org"},
            }),
        )
        .await;
    assert_eq!(resp.status, 201, "{:?}", resp.json);
    resp
}

async fn another_customer_gets_404_and_changes_nothing(backend: Backend) {
    let env = setup(backend).await;
    let (resource, kind) = (Uuid::now_v7(), Uuid::now_v7());
    let created = create_with_customer(&env.api, resource, kind, 0).await;
    let id = created.id();
    assert_eq!(created.json["customer_id"], ALICE);
    let claim: Uuid = created.json["claim_id"].as_str().unwrap().parse().unwrap();
    let outbox_before = env.db.rows("outbox").await;

    let bob = env.api_as(BOB, &["customer"]);
    let unknown = Uuid::now_v7();
    let reschedule = |target: Uuid| {
        let bob = bob.clone();
        async move {
            bob.post(
                &format!("/v1/bookings/{target}/reschedule"),
                &new_key(),
                json!({"start": rfc3339(slot(3))}),
            )
            .await
        }
    };
    let pairs = [
        (
            bob.get(&format!("/v1/bookings/{id}")).await,
            bob.get(&format!("/v1/bookings/{unknown}")).await,
        ),
        (
            bob.act(id, "confirm").await,
            bob.act(unknown, "confirm").await,
        ),
        (
            bob.act(id, "cancel").await,
            bob.act(unknown, "cancel").await,
        ),
        (reschedule(id).await, reschedule(unknown).await),
    ];
    for (hidden, missing) in &pairs {
        assert_eq!(
            not_found_shape(hidden, id),
            not_found_shape(missing, unknown),
            "a hidden booking answers exactly like an unknown one"
        );
        assert_eq!(
            hidden.headers.get("content-type"),
            missing.headers.get("content-type")
        );
    }

    let after = env.api.get(&format!("/v1/bookings/{id}")).await;
    assert_eq!(after.json, created.json, "the booking is unchanged");
    assert_eq!(
        env.db.rows("outbox").await,
        outbox_before,
        "no event written"
    );
    let claim = env.ledger.claim(claim);
    assert!(!claim.released && claim.start == slot(0) && claim.expires_at.is_some());

    assert!(ids(&bob.get("/v1/bookings").await).is_empty());
    let filtered = bob
        .get(&format!("/v1/bookings?resource_id={resource}"))
        .await;
    assert!(ids(&filtered).is_empty());
    assert_eq!(ids(&env.api.get("/v1/bookings").await), [id]);
}

async fn staff_see_and_cancel_bookings_on_their_resources_only(backend: Backend) {
    let env = setup(backend).await;
    let kind = Uuid::now_v7();
    let (hers, his) = (Uuid::now_v7(), Uuid::now_v7());
    env.ledger.set_owner(hers, "stella");
    env.ledger.set_owner(his, "sam");
    let id = create_with_customer(&env.api, hers, kind, 0).await.id();
    let other = create_with_customer(&env.api, his, kind, 0).await.id();

    let stella = env.api_as("stella", &["staff"]);
    let sam = env.api_as("sam", &["staff"]);
    // Owning the resource is not enough without the staff role.
    let stella_as_customer = env.api_as("stella", &["customer"]);

    let seen = stella.get(&format!("/v1/bookings/{id}")).await;
    assert_eq!(seen.status, 200, "{:?}", seen.json);
    assert_eq!(seen.json["customer"]["email"], "ada@example.org");
    assert_eq!(ids(&stella.get("/v1/bookings").await), [id]);
    assert_eq!(ids(&sam.get("/v1/bookings").await), [other]);
    assert!(ids(&stella_as_customer.get("/v1/bookings").await).is_empty());
    stella_as_customer
        .get(&format!("/v1/bookings/{id}"))
        .await
        .assert_problem(404);

    sam.get(&format!("/v1/bookings/{id}"))
        .await
        .assert_problem(404);
    sam.act(id, "cancel").await.assert_problem(404);
    assert_eq!(
        env.api.get(&format!("/v1/bookings/{id}")).await.json["status"],
        "held"
    );

    // The resource changes hands; a reschedule picks up the new owner.
    let moved = create_with_customer(&env.api, hers, kind, 5).await.id();
    env.ledger.set_owner(hers, "sam");
    let rescheduled = env
        .api
        .post(
            &format!("/v1/bookings/{moved}/reschedule"),
            &new_key(),
            json!({"start": rfc3339(slot(6))}),
        )
        .await;
    assert_eq!(rescheduled.status, 200, "{:?}", rescheduled.json);
    assert_eq!(sam.get(&format!("/v1/bookings/{moved}")).await.status, 200);
    stella
        .get(&format!("/v1/bookings/{moved}"))
        .await
        .assert_problem(404);
    assert_eq!(ids(&stella.get("/v1/bookings").await), [id]);

    let cancelled = stella.act(id, "cancel").await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.json);
    assert_eq!(cancelled.json["status"], "cancelled");
    assert_eq!(
        env.api.get(&format!("/v1/bookings/{id}")).await.json["status"],
        "cancelled",
        "the customer sees the staff's change"
    );
}

async fn admin_sees_everything_and_lists_filter_per_principal(backend: Backend) {
    let env = setup(backend).await;
    let kind = Uuid::now_v7();
    let bob = env.api_as(BOB, &["customer"]);
    let admin = env.api_as("root", &["admin"]);
    let (mut alice_ids, mut bob_ids) = (Vec::new(), Vec::new());
    // Interleaved, so a filter applied after the LIMIT would leave pages short.
    for n in 0..7 {
        let resource = Uuid::now_v7();
        alice_ids.push(env.api.create(resource, kind, slot(n)).await.id());
        bob_ids.push(bob.create(resource, kind, slot(n + 1)).await.id());
    }

    for id in alice_ids.iter().chain(&bob_ids) {
        assert_eq!(admin.get(&format!("/v1/bookings/{id}")).await.status, 200);
    }
    assert_eq!(admin.act(bob_ids[0], "confirm").await.status, 200);

    async fn walk(api: &Api, limit: u32) -> Vec<Uuid> {
        let (mut all, mut cursor) = (Vec::new(), None::<String>);
        loop {
            let mut path = format!("/v1/bookings?limit={limit}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = api.get(&path).await;
            let batch = ids(&page);
            match page.json["next_cursor"].as_str() {
                Some(next) => {
                    assert_eq!(
                        batch.len(),
                        limit as usize,
                        "pages before the last are full"
                    );
                    cursor = Some(next.to_owned());
                    all.extend(batch);
                }
                None => {
                    all.extend(batch);
                    return all;
                }
            }
        }
    }
    let sorted = |mut v: Vec<Uuid>| {
        v.sort();
        v
    };
    assert_eq!(
        sorted(walk(&admin, 3).await),
        sorted([alice_ids.clone(), bob_ids.clone()].concat())
    );
    assert_eq!(sorted(walk(&bob, 3).await), sorted(bob_ids.clone()));
    assert_eq!(sorted(walk(&env.api, 2).await), sorted(alice_ids.clone()));
}

async fn without_a_token_every_route_is_401_and_no_key_is_reserved(backend: Backend) {
    let env = setup(backend).await;
    let id = env
        .api
        .create(Uuid::now_v7(), Uuid::now_v7(), slot(0))
        .await
        .id();
    // A key stored before keys were scoped belongs to no principal (''); an
    // unauthenticated request must not reach it (a 422 or replay would).
    let legacy = "legacy-key";
    let created_at = match env.db.backend {
        Backend::Postgres => "now()",
        Backend::Sqlite => "'2999-01-01T00:00:00.000000Z'",
    };
    env.db
        .execute(&format!(
            "INSERT INTO {{t}}idempotency_keys \
             (subject, key, fingerprint, state, status, headers, body, created_at, locked_at) \
             VALUES ('', '{legacy}', 'x', 'done', 201, '[]', NULL, {created_at}, {created_at})"
        ))
        .await;
    let keys_before = env.db.rows("idempotency_keys").await;
    let anonymous = env.api.anonymous();
    let forged = env.api.with_token("not-a-token");
    for api in [&anonymous, &forged] {
        let body = json!({"resource_id": Uuid::now_v7(), "appointment_type_id": Uuid::now_v7(),
                          "start": rfc3339(slot(1))});
        let responses = [
            api.post("/v1/bookings", &new_key(), body).await,
            api.get("/v1/bookings").await,
            api.get(&format!("/v1/bookings/{id}")).await,
            api.act(id, "confirm").await,
            api.act(id, "cancel").await,
            api.post(
                &format!("/v1/bookings/{id}/reschedule"),
                &new_key(),
                json!({"start": rfc3339(slot(2))}),
            )
            .await,
            // Even a request that is otherwise bad is refused as unauthenticated.
            api.send(Method::POST, "/v1/bookings", None, None, Body::empty())
                .await,
            api.send(
                Method::POST,
                "/v1/bookings",
                Some(legacy),
                None,
                Body::empty(),
            )
            .await,
        ];
        for resp in &responses {
            resp.assert_problem(401);
            assert!(resp.headers.contains_key("www-authenticate"));
        }
    }
    assert_eq!(
        env.db.rows("idempotency_keys").await,
        keys_before,
        "no key reserved for unauthenticated requests"
    );
    assert_eq!(env.db.rows("bookings").await, 1);
    assert_eq!(
        env.api.get(&format!("/v1/bookings/{id}")).await.json["status"],
        "held"
    );
}

async fn principal_without_a_booking_role_cannot_create(backend: Backend) {
    let env = setup(backend).await;
    let key = new_key();
    let body = json!({"resource_id": Uuid::now_v7(), "appointment_type_id": Uuid::now_v7(),
                      "start": rfc3339(slot(0))});
    let nobody = env.api_as("nobody", &[]);
    let refused = nobody.post("/v1/bookings", &key, body.clone()).await;
    refused.assert_problem(403);
    assert_eq!(refused.problem_type(), "forbidden");
    let auditor = env.api_as("nobody", &["auditor"]);
    auditor
        .post("/v1/bookings", &new_key(), body.clone())
        .await
        .assert_problem(403);
    assert_eq!(env.db.rows("bookings").await, 0);
    assert_eq!(
        env.db.rows("idempotency_keys").await,
        0,
        "a 403 frees its key"
    );
    assert_eq!(env.ledger.live_claims(), 0);
    for role in ["customer", "staff", "admin"] {
        let api = env.api_as(&format!("someone-{role}"), &[role]);
        let created = api.create(Uuid::now_v7(), Uuid::now_v7(), slot(0)).await;
        assert_eq!(created.status, 201, "{role}: {:?}", created.json);
        assert_eq!(created.json["customer_id"], format!("someone-{role}"));
    }
}

async fn idempotency_keys_are_scoped_per_principal(backend: Backend) {
    let env = setup(backend).await;
    let bob = env.api_as(BOB, &["customer"]);
    let (resource, kind) = (Uuid::now_v7(), Uuid::now_v7());
    let key = new_key();
    let body =
        json!({"resource_id": resource, "appointment_type_id": kind, "start": rfc3339(slot(0))});
    let alices = env.api.post("/v1/bookings", &key, body.clone()).await;
    assert_eq!(alices.status, 201);
    // Free the slot so Bob's own request can succeed.
    assert_eq!(env.api.act(alices.id(), "cancel").await.status, 200);

    let bobs = bob.post("/v1/bookings", &key, body.clone()).await;
    assert_eq!(bobs.status, 201, "{:?}", bobs.json);
    assert!(
        bobs.headers.get("idempotent-replayed").is_none(),
        "not A's replay"
    );
    assert_ne!(bobs.id(), alices.id());
    assert_eq!(bobs.json["customer_id"], BOB);
    assert_eq!(bobs.json["status"], "held");

    // Each principal's retry replays its own response.
    let bob_retry = bob.post("/v1/bookings", &key, body.clone()).await;
    assert_eq!(bob_retry.bytes, bobs.bytes);
    assert_eq!(bob_retry.headers["idempotent-replayed"], "true");
    let alice_retry = env.api.post("/v1/bookings", &key, body).await;
    assert_eq!(alice_retry.bytes, alices.bytes);

    // A different body under a key someone else used is no 422 either.
    let carol = env.api_as("carol", &["customer"]);
    let other =
        json!({"resource_id": resource, "appointment_type_id": kind, "start": rfc3339(slot(1))});
    let carols = carol.post("/v1/bookings", &key, other).await;
    assert_eq!(carols.status, 201, "{:?}", carols.json);
    assert_eq!(env.db.rows("bookings").await, 3);
    assert_eq!(
        env.db.rows("idempotency_keys").await,
        4,
        "3 creates + 1 cancel"
    );
}
