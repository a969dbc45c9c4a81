//! The store's rules on SQLite (`berth dev`); PostgreSQL runs them in the
//! integration tests.
#![allow(clippy::unwrap_used)]

use chrono::Duration;

use super::*;
use crate::model::{CustomerFacts, now};

async fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("n.db").display());
    (Store::connect(&url, 1).await.unwrap(), dir)
}

fn booking(version: i64) -> BookingSnapshot {
    let start = now() + Duration::days(1);
    BookingSnapshot {
        id: Uuid::nil(),
        resource_id: Uuid::nil(),
        appointment_type_id: Uuid::nil(),
        start,
        end: start + Duration::minutes(30),
        status: "confirmed".into(),
        price_minor: 0,
        currency: "EUR".into(),
        customer: Some(CustomerFacts {
            name: None,
            email: Some("ada@example.test".into()),
        }),
        version,
    }
}

fn mail(version: i64) -> NewDelivery {
    NewDelivery {
        id: Uuid::now_v7(),
        booking_id: Uuid::nil(),
        kind: "confirmation",
        channel: "email",
        recipient: "ada@example.test".into(),
        booking_version: Some(version),
        subject: "s".into(),
        body: "b".into(),
        html: None,
        invite: Some(("REQUEST".into(), "BEGIN:VCALENDAR".into())),
    }
}

#[tokio::test]
async fn an_event_is_recorded_once_and_a_late_one_sends_nothing() {
    let (store, _dir) = store().await;
    let event = Uuid::now_v7();
    let first = store
        .record("c", event, Some(&booking(3)), false, now(), |_| {
            vec![mail(3)]
        })
        .await
        .unwrap();
    assert_eq!(first, Recorded::New(1));
    let again = store
        .record("c", event, Some(&booking(3)), false, now(), |_| {
            vec![mail(3)]
        })
        .await
        .unwrap();
    assert_eq!(again, Recorded::Duplicate);
    let late = store
        .record("c", Uuid::now_v7(), Some(&booking(2)), false, now(), |_| {
            vec![mail(2)]
        })
        .await
        .unwrap();
    assert_eq!(late, Recorded::Stale);
    assert_eq!(store.list(None, None, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_newer_invite_supersedes_an_unsent_older_one() {
    let (store, _dir) = store().await;
    store
        .record("c", Uuid::now_v7(), Some(&booking(2)), false, now(), |_| {
            vec![mail(2)]
        })
        .await
        .unwrap();
    store
        .record(
            "c",
            Uuid::now_v7(),
            Some(&booking(3)),
            false,
            now(),
            |held| {
                assert_eq!(held, Some(2), "the first invite is held");
                vec![mail(3)]
            },
        )
        .await
        .unwrap();
    let statuses: Vec<(Option<i64>, String)> = store
        .list(None, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.booking_version, d.status))
        .collect();
    assert_eq!(
        statuses,
        [
            (Some(3), "pending".to_owned()),
            (Some(2), "superseded".to_owned())
        ]
    );
}

#[tokio::test]
async fn only_the_lease_holder_writes_the_outcome() {
    let (store, _dir) = store().await;
    store
        .record("c", Uuid::now_v7(), Some(&booking(1)), false, now(), |_| {
            vec![mail(1)]
        })
        .await
        .unwrap();
    let t0 = now();
    let taken = store
        .take_due(t0, t0 + Duration::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    // Leased: nobody else takes it meanwhile.
    assert!(store.take_due(t0, t0, 10).await.unwrap().is_empty());
    // The lease lapsed and another sender took it: the first one's late
    // outcome is not written over the second one's lease.
    let later = t0 + Duration::seconds(31);
    let retaken = store
        .take_due(later, later + Duration::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!(retaken.len(), 1);
    assert!(
        !store
            .finish(&taken[0], &Outcome::Sent, later)
            .await
            .unwrap()
    );
    assert!(
        store
            .finish(&retaken[0], &Outcome::Sent, later)
            .await
            .unwrap()
    );
    let sent = store.list(None, None, 10).await.unwrap();
    assert_eq!((sent[0].status.as_str(), sent[0].attempts), ("sent", 2));
    assert!(
        store
            .take_due(later + Duration::days(1), later, 10)
            .await
            .unwrap()
            .is_empty()
    );
}
