//! The ledger over gRPC: `Runtime::serve_grpc` with `grpc_routes()`, called
//! through `GrpcLedger` on the runtime's resilient channel. Every ledger
//! error must come back as the same `LedgerError`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use berth_availability::GrpcLedger;
use berth_ledger::{ClaimRequest, Ledger, LedgerError};
use berth_runtime::grpc::grpc_channel;
use berth_runtime::{Runtime, RuntimeConfig};
use common::scenarios;
use uuid::Uuid;

async fn serve(av: &berth_availability::Availability) -> (Arc<Runtime>, GrpcLedger) {
    let rt = Arc::new(Runtime::new("availability-grpc-test", RuntimeConfig::default()).unwrap());
    let url = common::serve_ledger(&rt, av.grpc_routes()).await;
    let channel = tonic::transport::Channel::from_shared(url)
        .unwrap()
        .connect_lazy();
    let client = GrpcLedger::new(grpc_channel(channel, rt.dependencies.get("availability")));
    (rt, client)
}

#[tokio::test]
async fn ledger_round_trip_over_grpc() {
    let av = common::sqlite().await;
    let fx = common::fixture(&av).await;
    let (rt, remote) = serve(&av).await;
    let start = common::day_at(2, 10, 0);

    // Claim, conflict, confirm, release.
    let held = remote
        .claim(ClaimRequest {
            hold_for: Some(Duration::from_secs(60)),
            ..scenarios::request(fx.resource, fx.single, start, "booking-1")
        })
        .await
        .unwrap();
    assert_eq!((held.start, held.seats, held.price_minor), (start, 1, 2500));
    assert!(held.expires_at.is_some());
    assert_eq!(held.resource_owner, common::OWNER, "owner crosses the wire");
    let again = remote
        .claim(ClaimRequest {
            hold_for: Some(Duration::from_secs(60)),
            ..scenarios::request(fx.resource, fx.single, start, "booking-1")
        })
        .await
        .unwrap();
    assert_eq!(again, held, "idempotent by owner over the wire");
    let conflict = remote
        .claim(scenarios::request(
            fx.resource,
            fx.single,
            start,
            "booking-2",
        ))
        .await;
    assert!(
        matches!(conflict, Err(LedgerError::SlotUnavailable(_))),
        "{conflict:?}"
    );
    let confirmed = remote.confirm(held.claim_id).await.unwrap();
    assert_eq!(confirmed.expires_at, None);
    assert_eq!(confirmed.resource_owner, common::OWNER);
    assert_eq!(
        av.confirm(held.claim_id).await.unwrap(),
        confirmed,
        "same answer in-process"
    );
    let moved = remote
        .reschedule(held.claim_id, common::day_at(2, 11, 0))
        .await
        .unwrap();
    assert_eq!(moved.start, common::day_at(2, 11, 0));
    assert_eq!(moved.resource_owner, common::OWNER);
    remote.release(held.claim_id).await.unwrap();
    remote.release(held.claim_id).await.unwrap();
    remote
        .claim(scenarios::request(
            fx.resource,
            fx.single,
            start,
            "booking-2",
        ))
        .await
        .unwrap();

    // Error mapping: each error arrives as itself.
    let missing = remote.confirm(Uuid::new_v4()).await;
    assert!(
        matches!(missing, Err(LedgerError::NotFound(_))),
        "{missing:?}"
    );
    let invalid = remote
        .claim(ClaimRequest {
            seats: 0,
            ..scenarios::request(fx.resource, fx.single, start, "x")
        })
        .await;
    assert!(
        matches!(invalid, Err(LedgerError::Invalid(_))),
        "{invalid:?}"
    );
    let unknown = remote
        .claim(scenarios::request(Uuid::new_v4(), fx.single, start, "x"))
        .await;
    assert!(
        matches!(unknown, Err(LedgerError::NotFound(_))),
        "{unknown:?}"
    );
    let short = remote
        .claim(ClaimRequest {
            hold_for: Some(Duration::from_millis(300)),
            ..scenarios::request(fx.resource, fx.single, common::day_at(2, 15, 0), "late")
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        remote.confirm(short.claim_id).await,
        Err(LedgerError::HoldExpired)
    );
    assert!(av.find_overlaps().await.unwrap().is_empty());

    // The shared scenarios hold over the wire too.
    scenarios::claim_idempotent(&remote, &fx).await;
    scenarios::reschedule(&av, &remote, &fx).await;
    scenarios::cancellation_policy(&av, &remote, &fx).await;
    rt.shutdown().await;
}

#[tokio::test]
async fn unreachable_ledger_is_unavailable() {
    // Nothing listens on port 9 (discard) of loopback.
    let rt = Runtime::new("availability-grpc-test", RuntimeConfig::default()).unwrap();
    let channel = tonic::transport::Channel::from_static("http://127.0.0.1:9").connect_lazy();
    let remote = GrpcLedger::new(grpc_channel(channel, rt.dependencies.get("availability")));
    let result = remote.release(Uuid::new_v4()).await;
    assert!(
        matches!(result, Err(LedgerError::Unavailable(_))),
        "{result:?}"
    );
}
