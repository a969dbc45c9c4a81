//! The booking state machine through the REST API.

use berth_booking::{Booking, BookingStatus};
use serde_json::json;
use uuid::Uuid;

use crate::common::*;
use crate::on_both_backends;

on_both_backends!(
    create_confirm_cancel,
    reschedule_moves_or_keeps_the_old_time,
    lapsed_hold_reads_expired_and_cannot_be_confirmed,
    sweeper_persists_expiry,
    priced_booking_waits_for_payment,
);

async fn create_confirm_cancel(backend: Backend) {
    let env = setup(backend).await;
    let (resource, kind) = (Uuid::now_v7(), Uuid::now_v7());
    let created = env
        .api
        .post(
            "/v1/bookings",
            &new_key(),
            json!({
                "resource_id": resource, "appointment_type_id": kind, "start": rfc3339(slot(0)),
                "seats": 1, "customer": {"name": "Ada Lovelace", "email": "ada@example.org"},
            }),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.json);
    let id = created.id();
    assert_eq!(
        created.headers["location"].to_str().unwrap(),
        format!("/v1/bookings/{id}")
    );
    assert_eq!(created.json["status"], "held");
    assert_eq!(created.json["start"], "2030-06-03T08:00:00Z");
    assert_eq!(created.json["end"], "2030-06-03T08:30:00Z");
    assert_eq!(created.json["customer"]["email"], "ada@example.org");
    assert!(created.json["hold_expires_at"].is_string());
    let claim_id: Uuid = created.json["claim_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(env.ledger.claim(claim_id).owner, id.to_string());

    let read = env.api.get(&format!("/v1/bookings/{id}")).await;
    assert_eq!(read.status, 200);
    assert_eq!(
        read.json, created.json,
        "a read returns what the create returned"
    );

    let confirmed = env.api.act(id, "confirm").await;
    assert_eq!(confirmed.status, 200, "{:?}", confirmed.json);
    assert_eq!(confirmed.json["status"], "confirmed");
    assert!(confirmed.json["hold_expires_at"].is_null());
    assert!(
        env.ledger.claim(claim_id).expires_at.is_none(),
        "ledger claim made permanent"
    );

    let again = env.api.act(id, "confirm").await;
    assert_eq!(again.status, 200, "confirming twice is a no-op");
    assert_eq!(again.json["version"], confirmed.json["version"]);

    let cancelled = env.api.act(id, "cancel").await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.json);
    assert_eq!(cancelled.json["status"], "cancelled");
    assert!(env.ledger.claim(claim_id).released, "claim released");
    let pending = env
        .db
        .count(&format!(
            "SELECT count(*) FROM {{t}}bookings WHERE saga_step IS NOT NULL AND id = '{id}'"
        ))
        .await;
    assert_eq!(pending, 0, "no compensation left pending");

    let twice = env.api.act(id, "cancel").await;
    assert_eq!(twice.status, 200, "cancelling twice is a no-op");
    assert_eq!(twice.json["version"], cancelled.json["version"]);

    let late = env.api.act(id, "confirm").await;
    late.assert_problem(409);
    assert_eq!(late.problem_type(), "booking-state");

    // One outbox row per state change, none for no-ops.
    for (kind, n) in [
        ("booking.created", 1),
        ("booking.confirmed", 1),
        ("booking.cancelled", 1),
    ] {
        let rows = env
            .db
            .count(&format!(
                "SELECT count(*) FROM {{t}}outbox WHERE event_type = '{kind}'"
            ))
            .await;
        assert_eq!(rows, n, "{kind}");
    }
    assert_eq!(env.db.rows("outbox").await, 3);

    // The slot is free again.
    assert_eq!(env.api.create(resource, kind, slot(0)).await.status, 201);
    assert!(env.booking.check_ready().await.is_ok());
}

async fn reschedule_moves_or_keeps_the_old_time(backend: Backend) {
    let env = setup(backend).await;
    let (resource, kind) = (Uuid::now_v7(), Uuid::now_v7());
    let a = env.api.create(resource, kind, slot(0)).await.id();
    let b = env.api.create(resource, kind, slot(1)).await.id();
    assert_eq!(env.api.act(b, "confirm").await.status, 200);

    let path = format!("/v1/bookings/{a}/reschedule");
    let moved = env
        .api
        .post(&path, &new_key(), json!({"start": rfc3339(slot(2))}))
        .await;
    assert_eq!(moved.status, 200, "{:?}", moved.json);
    assert_eq!(moved.json["start"], rfc3339(slot(2)));
    assert_eq!(moved.json["status"], "held");

    let clash = env
        .api
        .post(&path, &new_key(), json!({"start": rfc3339(slot(1))}))
        .await;
    clash.assert_problem(409);
    assert_eq!(clash.problem_type(), "slot-unavailable");
    let after = env.api.get(&format!("/v1/bookings/{a}")).await;
    assert_eq!(after.json["start"], rfc3339(slot(2)), "kept its time");
    assert_eq!(after.json["version"], moved.json["version"]);
    let claim: Uuid = after.json["claim_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(env.ledger.claim(claim).start, slot(2), "ledger kept it too");

    // The old time was released: it can be booked again.
    assert_eq!(env.api.create(resource, kind, slot(0)).await.status, 201);
    let rescheduled = env
        .db
        .count("SELECT count(*) FROM {t}outbox WHERE event_type = 'booking.rescheduled'")
        .await;
    assert_eq!(rescheduled, 1, "the conflict wrote no event");
}

async fn lapsed_hold_reads_expired_and_cannot_be_confirmed(backend: Backend) {
    let config = berth_booking::BookingConfig {
        hold_for: std::time::Duration::from_millis(300),
        ..test_config()
    };
    let env = setup_with(backend, config, None).await;
    let (resource, kind) = (Uuid::now_v7(), Uuid::now_v7());
    let created = env.api.create(resource, kind, slot(0)).await;
    let id = created.id();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;

    let read = env.api.get(&format!("/v1/bookings/{id}")).await;
    assert_eq!(read.json["status"], "expired", "read-time expiry");
    let stored = env
        .db
        .text(&format!(
            "SELECT status FROM {{t}}bookings WHERE id = '{id}'"
        ))
        .await;
    assert_eq!(stored.as_deref(), Some("held"), "no sweeper ran yet");
    let expired = env.api.get("/v1/bookings?status=expired").await;
    assert_eq!(expired.json["items"].as_array().unwrap().len(), 1);
    let held = env.api.get("/v1/bookings?status=held").await;
    assert_eq!(held.json["items"].as_array().unwrap().len(), 0);

    let confirm = env.api.act(id, "confirm").await;
    confirm.assert_problem(409);
    assert_eq!(confirm.problem_type(), "hold-expired");
    let stored = env
        .db
        .text(&format!(
            "SELECT status FROM {{t}}bookings WHERE id = '{id}'"
        ))
        .await;
    assert_eq!(stored.as_deref(), Some("expired"));
    assert_eq!(
        env.db
            .count("SELECT count(*) FROM {t}outbox WHERE event_type = 'booking.expired'")
            .await,
        1
    );
    assert_eq!(env.ledger.live_claims(), 0);
}

async fn sweeper_persists_expiry(backend: Backend) {
    let config = berth_booking::BookingConfig {
        hold_for: std::time::Duration::from_millis(200),
        sweep_interval: Some(std::time::Duration::from_millis(50)),
        ..test_config()
    };
    let env = setup_with(backend, config, None).await;
    let id = env
        .api
        .create(Uuid::now_v7(), Uuid::now_v7(), slot(0))
        .await
        .id();
    let stop = tokio_util::sync::CancellationToken::new();
    env.booking.spawn_workers(stop.clone());
    let sql =
        format!("SELECT count(*) FROM {{t}}bookings WHERE status = 'expired' AND id = '{id}'");
    eventually(10, "the sweeper marks the hold expired", || async {
        env.db.count(&sql).await == 1
    })
    .await;
    stop.cancel();
}

async fn priced_booking_waits_for_payment(backend: Backend) {
    let env = setup(backend).await;
    let (resource, kind) = (Uuid::now_v7(), Uuid::now_v7());
    env.ledger.set_price(kind, 4500);
    let created = env.api.create(resource, kind, slot(0)).await;
    assert_eq!(created.status, 201);
    assert_eq!(created.json["status"], "pending_payment");
    assert_eq!(created.json["price_minor"], 4500);
    assert_eq!(created.json["currency"], "EUR");
    let id = created.id();

    let confirm = env.api.act(id, "confirm").await;
    confirm.assert_problem(409);
    assert_eq!(confirm.problem_type(), "payment-required");

    let failed = env
        .booking
        .fail_payment(id, berth_settlement::FailureReason::Declined)
        .await
        .unwrap();
    assert_eq!(failed.status, BookingStatus::PaymentFailed);
    assert!(
        env.ledger.claim(failed.claim_id).released,
        "compensation released the claim"
    );
    assert_eq!(
        env.db
            .count("SELECT count(*) FROM {t}outbox WHERE event_type = 'booking.payment_failed'")
            .await,
        1
    );
}

#[tokio::test]
async fn in_memory_sqlite_is_supported() {
    let ledger = MemLedger::new();
    let booking = Booking::connect("sqlite::memory:", None, ledger, test_config())
        .await
        .unwrap();
    let issuer = berth_runtime::auth::testing::TestIssuer::new();
    let api = Api::new(&booking, &issuer, ALICE, &["customer"]);
    let id = api
        .create(Uuid::now_v7(), Uuid::now_v7(), slot(0))
        .await
        .id();
    assert_eq!(
        api.get(&format!("/v1/bookings/{id}")).await.json["status"],
        "held"
    );
    assert_eq!(api.act(id, "confirm").await.json["status"], "confirmed");
    let page = api.get("/v1/bookings").await;
    assert_eq!(page.json["items"].as_array().unwrap().len(), 1);
}
