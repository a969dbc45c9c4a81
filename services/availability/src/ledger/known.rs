//! What this replica last knew of each resource's ledger near the slots it
//! claimed, so the group commit can decide a claim without reading again.
//!
//! An entry starts as a slot view read with a wider reach ([`MARGIN`] more
//! each side) and is kept current by this process's own guarded writes:
//! after a write that held (both counters unchanged under the row lock),
//! the ledger is exactly the entry plus the claims and blocks written, at
//! `ledger_seq + 1`. Anything else that changes the resource (another
//! replica, the locked path, a confirm or release, a catalog edit) moves a
//! counter, so the next guarded write on a stale entry writes nothing and
//! the batch reads again. An entry is never trusted without that guard, and
//! refusals decided on it are confirmed by the same guard. A resource whose
//! entry went stale is not learnt again for [`SETTLE`]: where replicas take
//! turns on one resource, a stale entry would cost a wasted write each time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_ledger::ClaimRequest;
use berth_runtime::metrics::CacheLookups;
use berth_slots::{BusyInterval, DateOverride};
use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::row_cache::{ENTRIES, RowCache, Rows, row_cache};
use crate::rules::{REACH, widen};
use crate::store::{Block, BlockPlan, ClaimRow, ResourceRow, SlotCounters, SlotView, TypeRow};

/// How much further than a claim needs a view is read, so that later claims
/// near it (the next slots of the day) are covered by the same entry.
pub(crate) const MARGIN: TimeDelta = TimeDelta::hours(12);

/// How long a resource whose entry went stale is read afresh every time.
const SETTLE: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub(crate) struct KnownLedgers {
    entries: Arc<RowCache<Uuid, Arc<Known>>>,
    /// Resources changed by someone else lately, until when.
    contested: Arc<quick_cache::sync::Cache<Uuid, Instant>>,
    lookups: CacheLookups,
}

/// One resource's ledger over `span`, as of `counters`.
#[derive(Clone)]
struct Known {
    counters: SlotCounters,
    /// Claims, blocks and busy times are complete within this span.
    span: (DateTime<Utc>, DateTime<Utc>),
    resource: ResourceRow,
    types: Vec<TypeRow>,
    /// Claims live when read, and those written since.
    claims: Vec<ClaimRow>,
    busy: Vec<BusyInterval>,
    /// Overrides for every local date of `span`.
    overrides: Vec<DateOverride>,
    /// Blocks whose capacity is known: (type, start, end, block).
    blocks: Vec<(Uuid, DateTime<Utc>, DateTime<Utc>, Block)>,
}

impl Rows for Arc<Known> {
    fn rows(&self) -> usize {
        self.claims.len() + self.busy.len()
    }
}

fn overlaps(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> bool {
    start < to && end > from
}

impl KnownLedgers {
    pub(crate) fn new() -> Self {
        Self {
            entries: Arc::new(row_cache()),
            contested: Arc::new(quick_cache::sync::Cache::new(ENTRIES)),
            lookups: CacheLookups::new("known_ledgers"),
        }
    }

    /// The view `req` would be decided on, if this replica knows enough:
    /// the type, everything within [`REACH`] of the slot, and the capacity
    /// of the slot's block if it has one.
    pub(crate) fn view(&self, req: &ClaimRequest, now: DateTime<Utc>) -> Option<SlotView> {
        let view = self.covering(req, now);
        self.lookups.count(view.is_some());
        view
    }

    fn covering(&self, req: &ClaimRequest, now: DateTime<Utc>) -> Option<SlotView> {
        let known = self.entries.get(&req.resource_id)?;
        let ty = known
            .types
            .iter()
            .find(|t| t.id == req.appointment_type_id)?;
        let end = req
            .start
            .checked_add_signed(TimeDelta::minutes(ty.duration_minutes))?;
        let (from, to) = widen(req.start, end);
        if from < known.span.0 || to > known.span.1 {
            return None;
        }
        let block = known
            .blocks
            .iter()
            .find(|(t, s, e, _)| *t == ty.id && *s == req.start && *e == end)
            .map(|(.., block)| *block);
        let near = known
            .claims
            .iter()
            .filter(|c| overlaps(from, to, c.starts_at, c.ends_at));
        let mut claims = Vec::new();
        let mut lapsed = false;
        for claim in near {
            if claim.lapsed(now) {
                lapsed = true;
            } else if block.is_none()
                && claim.appointment_type_id == ty.id
                && claim.starts_at == req.start
                && claim.ends_at == end
            {
                // The slot has a block whose capacity is not known here.
                return None;
            } else {
                claims.push(claim.clone());
            }
        }
        Some(SlotView {
            resource: known.resource.clone(),
            ty: ty.clone(),
            claims,
            busy: known
                .busy
                .iter()
                .filter(|b| overlaps(from, to, b.start, b.end))
                .copied()
                .collect(),
            overrides: known.overrides.clone(),
            lapsed,
            block,
            counters: known.counters,
        })
    }

    /// Keeps a view read for the slot at `start` with a reach of
    /// [`REACH`] + [`MARGIN`]. Views with lapsed holds are not kept (the
    /// locked path releases those, which moves the counter anyway).
    pub(crate) fn learn(&self, view: &SlotView, start: DateTime<Utc>) {
        let end = start + TimeDelta::minutes(view.ty.duration_minutes);
        let reach = REACH + MARGIN;
        let (Some(from), Some(to)) = (
            start.checked_sub_signed(reach),
            end.checked_add_signed(reach),
        ) else {
            return;
        };
        let contested = self
            .contested
            .get(&view.resource.id)
            .is_some_and(|until| Instant::now() < until);
        if view.lapsed || contested {
            self.entries.remove(&view.resource.id);
            return;
        }
        let counters = view.counters;
        let block = view.block.map(|b| (view.ty.id, start, end, b));
        if let Some(known) = self.entries.get(&view.resource.id)
            && known.counters == counters
            && known.span == (from, to)
        {
            // Same snapshot state and span: only the type or block is new.
            let mut merged = Known::clone(&known);
            if !merged.types.iter().any(|t| t.id == view.ty.id) {
                merged.types.push(view.ty.clone());
            }
            merged.blocks.extend(block);
            self.entries.insert(view.resource.id, Arc::new(merged));
            return;
        }
        self.entries.insert(
            view.resource.id,
            Arc::new(Known {
                counters,
                span: (from, to),
                resource: view.resource.clone(),
                types: vec![view.ty.clone()],
                claims: view.claims.clone(),
                busy: view.busy.clone(),
                overrides: view.overrides.clone(),
                blocks: block.into_iter().collect(),
            }),
        );
    }

    /// Records a guarded write that held on `resource` at `counters`: the
    /// ledger now has `written` too, and a counter one higher. An entry at
    /// other counters is dropped (it no longer says what the ledger holds).
    pub(crate) fn wrote(
        &self,
        resource: Uuid,
        counters: SlotCounters,
        written: &[(ClaimRow, BlockPlan)],
    ) {
        let Some(known) = self.entries.get(&resource) else {
            return;
        };
        if known.counters != counters {
            self.entries.remove(&resource);
            return;
        }
        let mut next = Known::clone(&known);
        next.counters.ledger += 1;
        for (claim, plan) in written {
            match *plan {
                BlockPlan::New { id, capacity } => next.blocks.push((
                    claim.appointment_type_id,
                    claim.starts_at,
                    claim.ends_at,
                    Block { id, capacity },
                )),
                BlockPlan::Existing { block, capacity } => {
                    for known_block in &mut next.blocks {
                        if known_block.3.id == block.id {
                            known_block.3.capacity = capacity;
                        }
                    }
                }
            }
            next.claims.push(claim.clone());
        }
        self.entries.insert(resource, Arc::new(next));
    }

    /// Drops what this replica knew of `resource` because this replica is
    /// changing it outside the group commit (the locked path).
    pub(crate) fn invalidate(&self, resource: Uuid) {
        self.entries.remove(&resource);
    }

    /// Drops what this replica knew of `resource`, which someone else
    /// changed: it is read afresh for a while.
    pub(crate) fn forget(&self, resource: Uuid) {
        self.entries.remove(&resource);
        self.contested.insert(resource, Instant::now() + SETTLE);
    }
}
