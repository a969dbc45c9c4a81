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
            phone: None,
            locale: None,
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

fn reminder_mail(version: i64) -> NewDelivery {
    NewDelivery {
        kind: "reminder",
        invite: None,
        ..mail(version)
    }
}

#[tokio::test]
async fn reminders_are_planned_moved_ended_and_checked_again_when_due() {
    let (store, _dir) = store().await;
    let store = store.with_reminder_offsets(&[
        std::time::Duration::from_secs(3600),
        std::time::Duration::from_secs(60),
    ]);
    let statuses = |v: Vec<(i64, i64, String, Option<i64>)>| -> Vec<(i64, i64, String)> {
        v.into_iter().map(|(o, v, s, _)| (o, v, s)).collect()
    };
    // Confirmed: one per offset, at its version.
    store
        .record("c", Uuid::now_v7(), Some(&booking(1)), false, now(), |_| {
            Vec::new()
        })
        .await
        .unwrap();
    let planned = store.reminders_of(Uuid::nil()).await.unwrap();
    assert_eq!(
        statuses(planned.clone()),
        [(3600, 1, "pending".into()), (60, 1, "pending".into())]
    );
    // Rescheduled an hour later: moved, due recomputed.
    let mut moved = booking(2);
    moved.start += Duration::hours(1);
    moved.end += Duration::hours(1);
    store
        .record("c", Uuid::now_v7(), Some(&moved), false, now(), |_| {
            Vec::new()
        })
        .await
        .unwrap();
    let replanned = store.reminders_of(Uuid::nil()).await.unwrap();
    assert_eq!(
        statuses(replanned.clone()),
        [(3600, 2, "pending".into()), (60, 2, "pending".into())]
    );
    assert_eq!(
        replanned[0].3.unwrap(),
        micros(moved.start - Duration::hours(1)),
        "due an hour before the new start"
    );

    // Due (the 1 h one): taken once, under a lease.
    let due = DateTime::from_timestamp_micros(replanned[0].3.unwrap()).unwrap();
    let taken = store
        .take_due_reminders(due, due + Duration::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert!(
        store
            .take_due_reminders(due, due, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The booking changed behind the plan (no replanning event): the
    // check when due still finds it stale, and sends nothing.
    sqlx::query("UPDATE bookings SET version = 9")
        .execute(&store.pool)
        .await
        .unwrap();
    let end = store
        .end_reminder(&taken[0], Some(reminder_mail(2)), due)
        .await
        .unwrap();
    assert_eq!(end, ReminderEnd::Stale);
    sqlx::query("UPDATE bookings SET version = 2")
        .execute(&store.pool)
        .await
        .unwrap();

    // The 1 min one, taken after the start (the service was down): skipped.
    let after_start = moved.start + Duration::minutes(5);
    let taken = store
        .take_due_reminders(after_start, after_start + Duration::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    let end = store
        .end_reminder(&taken[0], Some(reminder_mail(2)), after_start)
        .await
        .unwrap();
    assert_eq!(end, ReminderEnd::SkippedLate);
    assert_eq!(
        statuses(store.reminders_of(Uuid::nil()).await.unwrap()),
        [(3600, 2, "stale".into()), (60, 2, "skipped_late".into())]
    );
    assert!(store.list(None, None, 10).await.unwrap().is_empty());

    // Rescheduled again (version 3): both planned anew; one taken and
    // handed over once, even when its lease is retaken.
    let mut again = booking(3);
    again.start += Duration::hours(2);
    again.end += Duration::hours(2);
    store
        .record("c", Uuid::now_v7(), Some(&again), false, now(), |_| {
            Vec::new()
        })
        .await
        .unwrap();
    let t = again.start - Duration::minutes(30);
    let taken = store
        .take_due_reminders(t, t + Duration::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    let later = t + Duration::seconds(31);
    let retaken = store
        .take_due_reminders(later, later + Duration::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!(retaken.len(), 1);
    let old_lease = store
        .end_reminder(&taken[0], Some(reminder_mail(3)), later)
        .await
        .unwrap();
    assert_eq!(old_lease, ReminderEnd::Lost);
    let sent = store
        .end_reminder(&retaken[0], Some(reminder_mail(3)), later)
        .await
        .unwrap();
    assert_eq!(sent, ReminderEnd::Sent);
    let log = store.list(None, None, 10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].kind.as_str(), log[0].status.as_str()),
        ("reminder", "pending")
    );

    // Cancelled (version 4): what is still planned ends, and the handed
    // over mail not yet sent is stopped too.
    let mut cancelled = booking(4);
    cancelled.status = "cancelled".into();
    store
        .record("c", Uuid::now_v7(), Some(&cancelled), false, now(), |_| {
            Vec::new()
        })
        .await
        .unwrap();
    assert_eq!(
        statuses(store.reminders_of(Uuid::nil()).await.unwrap()),
        [(3600, 3, "sent".into()), (60, 3, "superseded".into())]
    );
    assert_eq!(
        store.list(None, None, 10).await.unwrap()[0].status,
        "superseded"
    );
    let far = now() + Duration::days(30);
    assert!(
        store
            .take_due_reminders(far, far, 10)
            .await
            .unwrap()
            .is_empty()
    );
}
