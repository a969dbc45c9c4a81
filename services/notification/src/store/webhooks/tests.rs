//! The webhook store's rules on SQLite (`berth dev`); PostgreSQL runs
//! them in the integration tests.
#![allow(clippy::unwrap_used)]

use chrono::Duration;

use super::*;
use crate::model::now;
use crate::webhooks::{OWNER, new_secret};

async fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("n.db").display());
    (Store::connect(&url, 1).await.unwrap(), dir)
}

fn endpoint() -> Endpoint {
    let t = now();
    Endpoint {
        id: Uuid::now_v7(),
        owner_id: "staff-sam".into(),
        scope: OWNER.into(),
        url: "https://example.com/hook".into(),
        description: Some("d".into()),
        event_types: vec!["booking.confirmed".into()],
        status: ENABLED.into(),
        disabled_reason: None,
        secret: new_secret(),
        previous_secret: None,
        previous_secret_expires_at: None,
        created_at: t,
        updated_at: t,
    }
}

fn hook(endpoint: Uuid) -> NewWebhook {
    NewWebhook {
        id: Uuid::now_v7(),
        endpoint_id: endpoint,
        event_type: "booking.confirmed".into(),
        booking_id: None,
        payload: "{}".into(),
    }
}

#[tokio::test]
async fn one_delivery_per_event_and_endpoint_even_if_planned_twice() {
    let (store, _dir) = store().await;
    let e = endpoint();
    store.insert_endpoint(&e).await.unwrap();
    let event = Uuid::now_v7();
    let hooks = [hook(e.id), hook(e.id)];
    let first = store
        .record_with("c", event, None, false, now(), |_| Vec::new(), &hooks)
        .await
        .unwrap();
    assert_eq!(first, crate::store::Recorded::New(1));
    let again = store
        .record_with("c", event, None, false, now(), |_| Vec::new(), &hooks)
        .await
        .unwrap();
    assert_eq!(again, crate::store::Recorded::Duplicate);
    let all = store
        .webhook_deliveries(&WebhookFilter::default(), 10)
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
}

#[tokio::test]
async fn leases_outcomes_dead_letters_and_replay() {
    let (store, _dir) = store().await;
    let e = endpoint();
    store.insert_endpoint(&e).await.unwrap();
    store
        .record_with(
            "c",
            Uuid::now_v7(),
            None,
            false,
            now(),
            |_| Vec::new(),
            &[hook(e.id)],
        )
        .await
        .unwrap();
    let t0 = now();
    let taken = store
        .take_due_webhooks(t0, t0 + Duration::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert!(
        store
            .take_due_webhooks(t0, t0, 10)
            .await
            .unwrap()
            .is_empty(),
        "leased"
    );
    let dead = WebhookOutcome::Dead {
        status: Some(500),
        error: "gave up".into(),
    };
    assert!(store.finish_webhook(&taken[0], &dead, t0).await.unwrap());
    // A late outcome from a lapsed lease changes nothing.
    assert!(
        !store
            .finish_webhook(&taken[0], &WebhookOutcome::Sent { status: 200 }, t0)
            .await
            .unwrap()
    );
    let filter = WebhookFilter {
        owner_id: Some("staff-sam".into()),
        status: Some("dead".into()),
        ..WebhookFilter::default()
    };
    let listed = store.webhook_deliveries(&filter, 10).await.unwrap();
    assert_eq!((listed.len(), listed[0].last_status), (1, Some(500)));
    let other = WebhookFilter {
        owner_id: Some("someone-else".into()),
        ..WebhookFilter::default()
    };
    assert!(
        store
            .webhook_deliveries(&other, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let replayed = store
        .replay_webhook(taken[0].id, t0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (replayed.status.as_str(), replayed.round_attempts()),
        ("pending", 0)
    );
    assert!(
        store
            .replay_webhook(taken[0].id, t0)
            .await
            .unwrap()
            .is_none(),
        "not dead now"
    );
    let retaken = store
        .take_due_webhooks(t0, t0 + Duration::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!((retaken[0].attempts, retaken[0].round_attempts()), (2, 1));
}

#[tokio::test]
async fn edits_rotation_and_disabling_touch_only_their_columns() {
    let (store, _dir) = store().await;
    let e = endpoint();
    store.insert_endpoint(&e).await.unwrap();
    let t = now();
    let change = EndpointChange {
        description: Some(None),
        disabled: Some(Some("by staff".into())),
        ..EndpointChange::default()
    };
    assert!(store.change_endpoint(e.id, &change, t).await.unwrap());
    assert!(
        store
            .rotate_secret(e.id, "whsec_new", t + Duration::hours(1), t)
            .await
            .unwrap()
    );
    let got = store.endpoint(e.id).await.unwrap().unwrap();
    assert_eq!(got.url, e.url);
    assert_eq!(got.description, None);
    assert_eq!(got.event_types, e.event_types);
    assert_eq!(
        (got.status.as_str(), got.disabled_reason.as_deref()),
        (DISABLED, Some("by staff"))
    );
    assert_eq!(got.secret, "whsec_new");
    assert_eq!(got.previous_secret.as_deref(), Some(e.secret.as_str()));
    assert!(store.enabled_endpoints().await.unwrap().is_empty());
    // 410 disables only an enabled endpoint.
    assert!(!store.disable_endpoint(e.id, "gone", t).await.unwrap());
    let enable = EndpointChange {
        disabled: Some(None),
        ..EndpointChange::default()
    };
    assert!(store.change_endpoint(e.id, &enable, t).await.unwrap());
    assert!(store.disable_endpoint(e.id, "gone", t).await.unwrap());
    assert!(store.delete_endpoint(e.id).await.unwrap());
    assert!(store.endpoint(e.id).await.unwrap().is_none());
}
