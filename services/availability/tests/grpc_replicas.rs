//! `GrpcLedger` over several availability replicas (`Replicas`, here two
//! comma-separated addresses, as a headless Service would resolve): every
//! claim of one resource reaches the same replica, the resources are shared
//! between the replicas, and a batch mixing resources still answers each
//! claim in order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use berth_availability::{Availability, GrpcLedger};
use berth_ledger::{ClaimReceipt, ClaimRequest, Ledger, LedgerError};
use berth_runtime::replicas::Replicas;
use berth_runtime::{Runtime, RuntimeConfig};
use chrono::{DateTime, Utc};
use common::scenarios;
use uuid::Uuid;

/// The availability service, noting which resources its claims were for.
#[derive(Clone)]
struct Recording {
    inner: Availability,
    replica: usize,
    seen: Arc<Mutex<Vec<(usize, Uuid)>>>,
}

#[async_trait]
impl Ledger for Recording {
    async fn claim(&self, request: ClaimRequest) -> Result<ClaimReceipt, LedgerError> {
        self.seen
            .lock()
            .unwrap()
            .push((self.replica, request.resource_id));
        self.inner.claim(request).await
    }

    async fn claim_many(
        &self,
        requests: Vec<ClaimRequest>,
    ) -> Vec<Result<ClaimReceipt, LedgerError>> {
        self.seen
            .lock()
            .unwrap()
            .extend(requests.iter().map(|r| (self.replica, r.resource_id)));
        self.inner.claim_many(requests).await
    }

    async fn confirm(&self, claim_id: Uuid) -> Result<ClaimReceipt, LedgerError> {
        self.inner.confirm(claim_id).await
    }

    async fn release(&self, claim_id: Uuid) -> Result<(), LedgerError> {
        self.inner.release(claim_id).await
    }

    async fn reschedule(
        &self,
        claim_id: Uuid,
        new_start: DateTime<Utc>,
    ) -> Result<ClaimReceipt, LedgerError> {
        self.inner.reschedule(claim_id, new_start).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_of_a_resource_stay_on_one_replica() {
    let av = common::sqlite().await;
    let api = common::Api::new(&av);
    let types: BTreeMap<Uuid, Uuid> = common::rooms(&api, 16).await.into_iter().collect();
    let rt =
        Arc::new(Runtime::new("availability-replicas-test", RuntimeConfig::default()).unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut urls = Vec::new();
    for replica in 0..2 {
        let ledger = Recording {
            inner: av.clone(),
            replica,
            seen: seen.clone(),
        };
        urls.push(common::serve_ledger(&rt, berth_availability::grpc::routes(ledger)).await);
    }
    let replicas = Replicas::start(&urls.join(","), rt.dependencies.clone(), "availability")
        .await
        .unwrap();
    assert_eq!(replicas.addrs().len(), 2);
    let remote = GrpcLedger::over(replicas);

    // Concurrent claims (gathered into mixed batches), four slots each.
    let mut tasks = Vec::new();
    for (&resource, &ty) in &types {
        for hour in 9..13 {
            let remote = remote.clone();
            let start = common::day_at(2, hour, 0);
            tasks.push(tokio::spawn(async move {
                let request = scenarios::request(resource, ty, start, &format!("o-{hour}"));
                (request.clone(), remote.claim(request).await)
            }));
        }
    }
    for task in tasks {
        let (request, outcome) = task.await.unwrap();
        let receipt = outcome.unwrap();
        assert_eq!(
            (receipt.resource_id, receipt.start),
            (request.resource_id, request.start),
            "each claim gets its own answer"
        );
    }

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), types.len() * 4);
    let mut by_resource: BTreeMap<Uuid, BTreeSet<usize>> = BTreeMap::new();
    for (replica, resource) in &seen {
        by_resource.entry(*resource).or_default().insert(*replica);
    }
    assert!(
        by_resource.values().all(|r| r.len() == 1),
        "a resource's claims went to both replicas: {by_resource:?}"
    );
    let used: BTreeSet<usize> = by_resource.values().flatten().copied().collect();
    assert_eq!(used.len(), 2, "16 resources all routed to one replica");
    assert!(av.find_overlaps().await.unwrap().is_empty());
}

/// A replica that cannot be reached (nothing listens on port 9, as when a
/// pod is gone but still in DNS): its resources' claims, and confirms and
/// releases hashed to it, go to the next replica instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_replica_fails_over_to_the_next() {
    let av = common::sqlite().await;
    let api = common::Api::new(&av);
    let rt =
        Arc::new(Runtime::new("availability-failover-test", RuntimeConfig::default()).unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let live = Recording {
        inner: av.clone(),
        replica: 0,
        seen: seen.clone(),
    };
    let url = common::serve_ledger(&rt, berth_availability::grpc::routes(live)).await;
    let replicas = Replicas::start(
        &format!("{url},http://127.0.0.1:9"),
        rt.dependencies.clone(),
        "availability",
    )
    .await
    .unwrap();
    assert_eq!(replicas.addrs().len(), 2);
    let remote = GrpcLedger::over(replicas);

    let mut claimed = Vec::new();
    for (resource, ty) in common::rooms(&api, 12).await {
        let request = ClaimRequest {
            hold_for: Some(std::time::Duration::from_secs(600)),
            ..scenarios::request(resource, ty, common::day_at(2, 10, 0), "owner")
        };
        claimed.push(remote.claim(request).await.unwrap().claim_id);
    }
    assert_eq!(
        seen.lock().unwrap().len(),
        12,
        "every claim reached the live replica"
    );
    for (i, claim) in claimed.iter().enumerate() {
        if i % 2 == 0 {
            remote.confirm(*claim).await.unwrap();
        } else {
            remote.release(*claim).await.unwrap();
        }
    }
    assert!(av.find_overlaps().await.unwrap().is_empty());
}
