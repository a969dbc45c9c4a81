//! Group commit of claims on PostgreSQL (see the module doc of `ledger`).
//!
//! Claims are spread over a few shards by resource; each shard runs one
//! batch at a time, so two batches in flight never share a resource and,
//! within one process, a batch's snapshot never goes stale because of
//! another batch. A batch:
//! 1. takes one [`SlotView`] per claim: from what this replica already
//!    knows of the resource (module `known`) if that covers all of the
//!    resource's claims in the batch, else read in one statement;
//! 2. decides the claims of each resource in arrival order on its views,
//!    counting the batch's earlier acceptances on that resource as claims;
//! 3. writes every resource's accepted claims in one statement, guarded by
//!    the resource's counters (`ledger_seq`, `catalog_seq`), which also
//!    confirms refusals decided on known views;
//! 4. decides again on a fresh read what a stale known view could not
//!    settle, and sends whatever is still open through the locked
//!    transaction.

use std::collections::{HashMap, HashSet};

use berth_ledger::{ClaimReceipt, ClaimRequest, LedgerError};
use berth_runtime::batch::Batcher;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::known::MARGIN;
use super::{Failure, Slot, now, receipt};
use crate::Availability;
use crate::rules::REACH;
use crate::store::{
    Block, BlockPlan, ClaimRow, Guard, GuardedClaims, NewBlock, SlotCounters, SlotKey, SlotView,
};

/// Batches in flight at once (each holds a connection for two statements).
/// Few shards make big batches, which is what saves database work; two
/// keep one batch's round trips from idling the database.
const SHARDS: u64 = 2;
/// Claims per batch at most.
const MAX_BATCH: usize = 64;

type Outcome = Result<ClaimReceipt, LedgerError>;

/// The claim batchers, one per shard of resources.
#[derive(Clone)]
pub(crate) struct ClaimShards {
    shards: Vec<Batcher<ClaimRequest, Outcome>>,
}

impl ClaimShards {
    /// Starts the shards' dispatchers; `ledger` must not hold shards itself
    /// (the batchers would keep each other alive).
    pub fn spawn(ledger: &Availability) -> Self {
        let shards = (0..SHARDS)
            .map(|_| {
                let ledger = ledger.clone();
                Batcher::spawn("availability_claims", MAX_BATCH, 1, move |requests| {
                    let ledger = ledger.clone();
                    async move { ledger.claim_batch(requests).await }
                })
            })
            .collect();
        Self { shards }
    }

    /// Claims through the resource's shard (the request is validated).
    pub async fn claim(&self, request: ClaimRequest) -> Outcome {
        let shard = request.resource_id.as_u64_pair().1 % SHARDS;
        let Some(batcher) = usize::try_from(shard).ok().and_then(|i| self.shards.get(i)) else {
            return Err(LedgerError::Internal("no claim shard".to_owned()));
        };
        batcher
            .submit(request)
            .await
            .unwrap_or_else(|lost| Err(LedgerError::Unavailable(lost.to_string())))
    }
}

/// What the snapshot says of one claim.
enum Verdict {
    /// Settled whatever the write does (a refusal on committed claims).
    Final(Outcome),
    /// Accepted: holds iff its resource's write commits.
    Accepted(ClaimReceipt),
    /// Refused on the batch's own acceptances or on a known view: holds
    /// iff the resource's guard holds.
    Refused(LedgerError),
    /// For the locked transaction.
    Locked,
}

/// One resource's share of a batch.
struct Group {
    counters: SlotCounters,
    /// Decided on what this replica knew rather than on a fresh read, so
    /// even refusals hold only if the guard does.
    known: bool,
    /// Claims accepted so far in this batch, with where they go.
    accepted: Vec<(ClaimRow, BlockPlan)>,
    /// Blocks those claims create: (type, start, end) → block.
    new_blocks: Vec<(Uuid, DateTime<Utc>, DateTime<Utc>, Block)>,
}

impl Group {
    fn new(counters: SlotCounters, known: bool) -> Self {
        Self {
            counters,
            known,
            accepted: Vec::new(),
            new_blocks: Vec::new(),
        }
    }

    /// Decides `req` on its view plus the group's earlier acceptances.
    fn decide(&mut self, req: &ClaimRequest, mut slot: Slot, now: DateTime<Utc>) -> Verdict {
        // Lapsed holds in reach, too many seats, or the owner's own claim:
        // the locked path answers these exactly as it always has.
        if slot.lapsed || req.seats > slot.ty.capacity || slot.held_by(req).is_some() {
            return Verdict::Locked;
        }
        let provisional = self.known || !self.accepted.is_empty();
        match slot.check(req.start, req.seats, now) {
            Ok(()) => {}
            Err(Failure::Ledger(refusal @ LedgerError::SlotUnavailable(_))) if self.known => {
                return Verdict::Refused(refusal);
            }
            Err(Failure::Ledger(refusal @ LedgerError::SlotUnavailable(_))) => {
                return Verdict::Final(Err(refusal));
            }
            Err(_) => return Verdict::Locked,
        }
        let end = slot.end(req.start);
        let block = self
            .new_blocks
            .iter()
            .find(|(ty, start, finish, _)| {
                *ty == slot.ty.id && *start == req.start && *finish == end
            })
            .map(|(.., block)| *block)
            .or(slot.block);
        if !self.accepted.is_empty() {
            slot.claims
                .extend(self.accepted.iter().map(|(claim, _)| claim.clone()));
            if slot.held_by(req).is_some() {
                return Verdict::Locked;
            }
            match slot.check(req.start, req.seats, now) {
                Ok(()) => {}
                Err(Failure::Ledger(refusal @ LedgerError::SlotUnavailable(_))) => {
                    return Verdict::Refused(refusal);
                }
                Err(_) => return Verdict::Locked,
            }
        }
        let (claim, plan) = match slot.new_claim(req, block, now) {
            Ok(decided) => decided,
            Err(Failure::Ledger(refusal @ LedgerError::SlotUnavailable(_))) if provisional => {
                return Verdict::Refused(refusal);
            }
            Err(Failure::Ledger(refusal @ LedgerError::SlotUnavailable(_))) => {
                return Verdict::Final(Err(refusal));
            }
            Err(_) => return Verdict::Locked,
        };
        let Ok(receipt) = receipt(&claim, &slot.resource.owner_id) else {
            return Verdict::Locked;
        };
        if let BlockPlan::New { id, capacity } = plan {
            self.new_blocks
                .push((slot.ty.id, req.start, end, Block { id, capacity }));
        }
        self.accepted.push((claim, plan));
        Verdict::Accepted(receipt)
    }
}

/// The statement's input: each resource with accepted claims, or decided
/// on a known view, guarded by the counters they were decided on.
fn guarded_write(groups: &HashMap<Uuid, Group>) -> GuardedClaims {
    let mut write = GuardedClaims::default();
    let mut resized = HashSet::new();
    for (&resource, group) in groups {
        let writes = !group.accepted.is_empty();
        if !writes && !group.known {
            continue;
        }
        write.resources.push(Guard {
            resource,
            counters: group.counters,
            writes,
        });
        for (claim, plan) in group.accepted.iter().cloned() {
            match plan {
                BlockPlan::New { id, capacity } => write.new_blocks.push(NewBlock {
                    id,
                    resource_id: resource,
                    appointment_type_id: claim.appointment_type_id,
                    starts_at: claim.starts_at,
                    ends_at: claim.ends_at,
                    capacity,
                }),
                BlockPlan::Existing { block, capacity }
                    if block.capacity != capacity && resized.insert(block.id) =>
                {
                    write.resized.push((block.id, resource, capacity));
                }
                BlockPlan::Existing { .. } => {}
            }
            write.claims.push(claim);
        }
    }
    write
}

impl Availability {
    /// Decides and commits a batch of validated claims; one outcome each.
    pub(crate) async fn claim_batch(&self, requests: Vec<ClaimRequest>) -> Vec<Outcome> {
        let now = now();
        let known = &self.inner.known_ledgers;
        // A resource is decided on what is known only if that covers all of
        // its claims here (one resource, one snapshot).
        let mut views: Vec<Option<SlotView>> =
            requests.iter().map(|r| known.view(r, now)).collect();
        let unknown: HashSet<Uuid> = requests
            .iter()
            .zip(&views)
            .filter(|(_, view)| view.is_none())
            .map(|(r, _)| r.resource_id)
            .collect();
        let to_read: Vec<usize> = (0..requests.len())
            .filter(|&i| unknown.contains(&requests[i].resource_id))
            .collect();
        let read = self.read_views(&requests, &to_read, now).await;
        let mut from_known = vec![true; requests.len()];
        for (i, view) in to_read.into_iter().zip(read) {
            from_known[i] = false;
            views[i] = view;
        }
        let (mut outcomes, stale) = self.settle(&requests, views, &from_known, now).await;
        if !stale.is_empty() {
            // What was known had gone stale: decide those again on a read.
            let now = super::now();
            let views = self.read_views(&requests, &stale, now).await;
            let again: Vec<ClaimRequest> = stale.iter().map(|&i| requests[i].clone()).collect();
            let fresh = vec![false; again.len()];
            let (settled, _) = self.settle(&again, views, &fresh, now).await;
            for (i, outcome) in stale.into_iter().zip(settled) {
                outcomes[i] = outcome;
            }
        }
        self.settle_locked(&requests, outcomes).await
    }

    /// Step 4's end: each claim still open goes through the locked path.
    async fn settle_locked(
        &self,
        requests: &[ClaimRequest],
        outcomes: Vec<Option<Outcome>>,
    ) -> Vec<Outcome> {
        let open = requests
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| outcome.is_none())
            .map(|(req, _)| self.claim_locked(req));
        let mut locked = futures::future::join_all(open).await.into_iter();
        outcomes
            .into_iter()
            .map(|outcome| {
                outcome
                    .or_else(|| locked.next())
                    .unwrap_or_else(|| Err(LedgerError::Internal("claim not decided".into())))
            })
            .collect()
    }

    /// Fresh views of `requests[i]` for each `i` in `which`, read in one
    /// statement with room for later claims nearby, and learnt.
    async fn read_views(
        &self,
        requests: &[ClaimRequest],
        which: &[usize],
        now: DateTime<Utc>,
    ) -> Vec<Option<SlotView>> {
        if which.is_empty() {
            return Vec::new();
        }
        let slots: Vec<SlotKey> = which
            .iter()
            .map(|&i| {
                let r = &requests[i];
                (r.resource_id, r.appointment_type_id, r.start)
            })
            .collect();
        let views = match self
            .inner
            .store
            .peek_slots(&slots, REACH + MARGIN, now)
            .await
        {
            Ok(Some(views)) => views,
            Ok(None) => return slots.iter().map(|_| None).collect(),
            Err(error) => {
                // Not the claims' fault: the locked path reads again.
                tracing::warn!(%error, "reading a batch of slot views failed");
                return slots.iter().map(|_| None).collect();
            }
        };
        for (view, slot) in views.iter().zip(&slots) {
            if let Some(view) = view {
                self.inner.known_ledgers.learn(view, slot.2);
            }
        }
        views
    }

    /// Steps 2–4 of a batch on views read at `now` (split out so tests can
    /// change the ledger between the read and the write).
    #[cfg(test)]
    pub(super) async fn claim_on_views(
        &self,
        requests: Vec<ClaimRequest>,
        views: Vec<Option<SlotView>>,
        now: DateTime<Utc>,
    ) -> Vec<Outcome> {
        let fresh = vec![false; requests.len()];
        let (outcomes, _) = self.settle(&requests, views, &fresh, now).await;
        self.settle_locked(&requests, outcomes).await
    }

    /// Steps 2 and 3: decides on `views` (each `from_known` or read) and
    /// writes. Returns each claim's outcome if settled, and the positions
    /// decided on known views that went stale (their resource's guard
    /// failed), to decide again on a read; any other open claim is for the
    /// locked path.
    async fn settle(
        &self,
        requests: &[ClaimRequest],
        views: Vec<Option<SlotView>>,
        from_known: &[bool],
        now: DateTime<Utc>,
    ) -> (Vec<Option<Outcome>>, Vec<usize>) {
        let mut groups: HashMap<Uuid, Group> = HashMap::new();
        let verdicts: Vec<Verdict> = requests
            .iter()
            .zip(views)
            .zip(from_known)
            .map(|((req, view), &known)| {
                let Some(slot) = view.and_then(|view| Slot::from_view(view).ok()) else {
                    return Verdict::Locked;
                };
                let counters = slot.counters;
                let group = groups
                    .entry(req.resource_id)
                    .or_insert_with(|| Group::new(counters, known));
                if group.counters != counters || group.known != known {
                    // One resource is read once or known once; never expected.
                    return Verdict::Locked;
                }
                group.decide(req, slot, now)
            })
            .collect();

        let write = guarded_write(&groups);
        let held: HashSet<Uuid> = match self.inner.store.claims_if_unchanged(&write, now).await {
            Ok(resources) => resources.into_iter().collect(),
            Err(error) => {
                // E.g. a constraint refused a row: nothing was written; the
                // locked path decides each claim again.
                tracing::warn!(%error, "group commit of claims failed; using the locked path");
                HashSet::new()
            }
        };
        let known = &self.inner.known_ledgers;
        for (resource, group) in &groups {
            if held.contains(resource) {
                if !group.accepted.is_empty() {
                    known.wrote(*resource, group.counters, &group.accepted);
                }
            } else if group.known || !group.accepted.is_empty() {
                known.forget(*resource);
            }
        }

        let mut outcomes = Vec::with_capacity(requests.len());
        let mut stale = Vec::new();
        for (i, (req, verdict)) in requests.iter().zip(verdicts).enumerate() {
            let settled = held.contains(&req.resource_id);
            let on_known = groups.get(&req.resource_id).is_some_and(|g| g.known);
            outcomes.push(match verdict {
                Verdict::Final(outcome) => Some(outcome),
                Verdict::Accepted(receipt) if settled => Some(Ok(receipt)),
                Verdict::Refused(refusal) if settled => Some(Err(refusal)),
                Verdict::Accepted(_) | Verdict::Refused(_) if on_known => {
                    stale.push(i);
                    None
                }
                Verdict::Accepted(_) | Verdict::Refused(_) | Verdict::Locked => None,
            });
        }
        (outcomes, stale)
    }
}
