//! `customer.phone`: texts go only to the caller's own verified phone (the
//! `phone_number` claim of their access token), and the phone is erased
//! with the rest of the customer's data.

use serde_json::json;
use uuid::Uuid;

use crate::common::*;
use crate::on_both_backends;

on_both_backends!(
    only_the_callers_verified_phone_is_accepted,
    anonymising_erases_the_phone,
    the_locale_is_kept_normalised,
);

const PHONE: &str = "+441632960961";

async fn book_with_phone(api: &Api, n: i64, phone: &str) -> Resp {
    api.post(
        "/v1/bookings",
        &new_key(),
        json!({
            "resource_id": Uuid::now_v7(), "appointment_type_id": Uuid::now_v7(),
            "start": rfc3339(slot(n)), "customer": {"phone": phone},
        }),
    )
    .await
}

async fn only_the_callers_verified_phone_is_accepted(backend: Backend) {
    let env = setup(backend).await;
    let verified = env
        .api
        .with_token(&env.issuer.token_with_phone(ALICE, &["customer"], PHONE));

    // Written the way people type it, stored the way it is texted.
    let made = book_with_phone(&verified, 0, "+44 (1632) 960-961").await;
    assert_eq!(made.status, 201, "{:?}", made.json);
    assert_eq!(made.json["customer"]["phone"], PHONE);
    let id = made.id();
    let stored = format!("SELECT customer_phone FROM {{t}}bookings WHERE id = '{id}'");
    assert_eq!(env.db.text(&stored).await.as_deref(), Some(PHONE));
    let events = format!(
        "SELECT count(*) FROM {{t}}outbox WHERE booking_id = '{id}' AND {} LIKE '%{PHONE}%'",
        match env.db.backend {
            Backend::Postgres => "payload::text",
            Backend::Sqlite => "payload",
        }
    );
    assert_eq!(env.db.count(&events).await, 1, "the event carries it");

    let refused = [
        (&verified, "+441632960962", "verified phone"),
        (&env.api, PHONE, "verified phone"),
        (&verified, "01632 960961", "E.164"),
    ];
    for (n, (api, phone, says)) in refused.into_iter().enumerate() {
        let resp = book_with_phone(api, 10 + i64::try_from(n).unwrap(), phone).await;
        resp.assert_problem(422);
        assert!(
            resp.json["detail"].as_str().unwrap().contains(says),
            "{phone}: {:?}",
            resp.json
        );
    }
    assert_eq!(
        env.db.rows("bookings").await,
        1,
        "nothing written when refused"
    );
}

async fn anonymising_erases_the_phone(backend: Backend) {
    let env = setup(backend).await;
    let verified = env
        .api
        .with_token(&env.issuer.token_with_phone(ALICE, &["customer"], PHONE));
    let id = book_with_phone(&verified, 0, PHONE).await.id();

    assert_eq!(env.booking.anonymise_customer(ALICE).await.unwrap(), 1);

    let read = env.api.get(&format!("/v1/bookings/{id}")).await;
    assert!(read.json.get("customer").is_none(), "{:?}", read.json);
    let stored = format!("SELECT customer_phone FROM {{t}}bookings WHERE id = '{id}'");
    assert_eq!(env.db.text(&stored).await, None);
    let events = format!(
        "SELECT count(*) FROM {{t}}outbox WHERE {} LIKE '%{PHONE}%'",
        match env.db.backend {
            Backend::Postgres => "payload::text",
            Backend::Sqlite => "payload",
        }
    );
    assert_eq!(env.db.count(&events).await, 0, "no copy left in the outbox");
}

async fn the_locale_is_kept_normalised(backend: Backend) {
    let env = setup(backend).await;
    let made = env
        .api
        .post(
            "/v1/bookings",
            &new_key(),
            json!({
                "resource_id": Uuid::now_v7(), "appointment_type_id": Uuid::now_v7(),
                "start": rfc3339(slot(0)), "customer": {"email": "ada@example.org", "locale": "de_de"},
            }),
        )
        .await;
    assert_eq!(made.status, 201, "{:?}", made.json);
    assert_eq!(made.json["customer"]["locale"], "de-DE");
    let id = made.id();
    let read = env.api.get(&format!("/v1/bookings/{id}")).await;
    assert_eq!(read.json["customer"]["locale"], "de-DE");
    assert_eq!(env.booking.anonymise_customer(ALICE).await.unwrap(), 1);
    let read = env.api.get(&format!("/v1/bookings/{id}")).await;
    assert!(read.json.get("customer").is_none(), "{:?}", read.json);
}
