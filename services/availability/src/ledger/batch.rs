//! Group commit of claims on PostgreSQL (see the module doc of `ledger`).
//!
//! Claims are spread over a few shards by resource; each shard runs one
//! batch at a time, so two batches in flight never share a resource and,
//! within one process, a batch's snapshot never goes stale because of
//! another batch. A batch:
//! 1. reads one [`SlotView`] per claim in one statement;
//! 2. decides the claims of each resource in arrival order on its views,
//!    counting the batch's earlier acceptances on that resource as claims;
//! 3. writes every resource's accepted claims in one statement, guarded by
//!    the resource's `ledger_seq`;
//! 4. sends whatever that could not settle through the locked transaction.

use std::collections::{HashMap, HashSet};

use berth_ledger::{ClaimReceipt, ClaimRequest, LedgerError};
use berth_runtime::batch::Batcher;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Failure, Slot, now, receipt};
use crate::Availability;
use crate::rules::REACH;
use crate::store::{Block, BlockPlan, ClaimRow, GuardedClaims, NewBlock, SlotKey, SlotView};

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
    /// Refused only because of the batch's own acceptances: holds iff
    /// those commit.
    Refused(LedgerError),
    /// For the locked transaction.
    Locked,
}

/// One resource's share of a batch.
struct Group {
    seq: i64,
    /// Claims accepted so far in this batch, with where they go.
    accepted: Vec<(ClaimRow, BlockPlan)>,
    /// Blocks those claims create: (type, start, end) → block.
    new_blocks: Vec<(Uuid, DateTime<Utc>, DateTime<Utc>, Block)>,
}

impl Group {
    fn new(seq: i64) -> Self {
        Self {
            seq,
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
        match slot.check(req.start, req.seats, now) {
            Ok(()) => {}
            Err(Failure::Ledger(refusal @ LedgerError::SlotUnavailable(_))) => {
                return Verdict::Final(Err(refusal));
            }
            Err(_) => return Verdict::Locked,
        }
        let provisional = !self.accepted.is_empty();
        let end = slot.end(req.start);
        let block = self
            .new_blocks
            .iter()
            .find(|(ty, start, finish, _)| {
                *ty == slot.ty.id && *start == req.start && *finish == end
            })
            .map(|(.., block)| *block)
            .or(slot.block);
        if provisional {
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

/// The statement's input: each resource with accepted claims, guarded by
/// the `seq` they were decided on.
fn guarded_write(groups: HashMap<Uuid, Group>) -> GuardedClaims {
    let mut write = GuardedClaims::default();
    let mut resized = HashSet::new();
    for (resource, group) in groups {
        if group.accepted.is_empty() {
            continue;
        }
        write.resources.push((resource, group.seq));
        for (claim, plan) in group.accepted {
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
        let slots: Vec<SlotKey> = requests
            .iter()
            .map(|r| (r.resource_id, r.appointment_type_id, r.start))
            .collect();
        let views = match self.inner.store.peek_slots(&slots, REACH, now).await {
            Ok(Some(views)) => views,
            Ok(None) => slots.iter().map(|_| None).collect(),
            Err(error) => {
                // Not the claims' fault: the locked path reads again.
                tracing::warn!(%error, "reading a batch of slot views failed");
                slots.iter().map(|_| None).collect()
            }
        };
        self.claim_on_views(requests, views, now).await
    }

    /// Steps 2–4 of a batch, on views read at `now` (split out so tests can
    /// change the ledger between the read and the write).
    pub(super) async fn claim_on_views(
        &self,
        requests: Vec<ClaimRequest>,
        views: Vec<Option<SlotView>>,
        now: DateTime<Utc>,
    ) -> Vec<Outcome> {
        let mut groups: HashMap<Uuid, Group> = HashMap::new();
        let verdicts: Vec<Verdict> = requests
            .iter()
            .zip(views)
            .map(|(req, view)| {
                let Some(slot) = view.and_then(|view| Slot::from_view(view).ok()) else {
                    return Verdict::Locked;
                };
                let group = groups
                    .entry(req.resource_id)
                    .or_insert_with(|| Group::new(slot.seq));
                if group.seq != slot.seq {
                    // One statement reads one snapshot; never expected.
                    return Verdict::Locked;
                }
                group.decide(req, slot, now)
            })
            .collect();

        let write = guarded_write(groups);
        let written: HashSet<Uuid> = match self.inner.store.claims_if_unchanged(&write, now).await {
            Ok(resources) => resources.into_iter().collect(),
            Err(error) => {
                // E.g. a constraint refused a row: nothing was written; the
                // locked path decides each claim again.
                tracing::warn!(%error, "group commit of claims failed; using the locked path");
                HashSet::new()
            }
        };

        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(requests.len());
        let mut locked = Vec::new();
        for (i, (req, verdict)) in requests.iter().zip(verdicts).enumerate() {
            let settled = written.contains(&req.resource_id);
            outcomes.push(match verdict {
                Verdict::Final(outcome) => Some(outcome),
                Verdict::Accepted(receipt) if settled => Some(Ok(receipt)),
                Verdict::Refused(refusal) if settled => Some(Err(refusal)),
                Verdict::Accepted(_) | Verdict::Refused(_) | Verdict::Locked => {
                    locked.push(i);
                    None
                }
            });
        }
        let fallbacks =
            futures::future::join_all(locked.iter().map(|&i| self.claim_locked(&requests[i])))
                .await;
        for (i, outcome) in locked.into_iter().zip(fallbacks) {
            outcomes[i] = Some(outcome);
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(LedgerError::Internal("claim not decided".into()))))
            .collect()
    }
}
