//! The time ledger: [`berth_ledger::Ledger`] on the availability store.
//!
//! A claim is accepted only by one of two writers, each atomic:
//!
//! **The locked transaction** (every operation on SQLite; on PostgreSQL the
//! fallback for claims, and every confirm / release / reschedule) first
//! locks the resource's row, so everything below runs one at a time per
//! resource:
//! 1. release lapsed holds near the slot and drop the blocks they emptied
//!    (expiry needs no background job);
//! 2. run the slot engine on the live claims and busy times under that lock,
//!    so buffers, working hours, notice, horizon and seats are checked
//!    against exactly what is committed;
//! 3. find or insert the slot's block (the exclusion constraint / trigger
//!    refuses any overlap even if steps 1–2 were wrong), count its live seats,
//!    and insert the claim.
//!
//! Claims queue for it on per-resource locks (in-process, plus Redis with a
//! fencing token across replicas), so contention waits its turn.
//!
//! **The group commit** (PostgreSQL, module `batch`): concurrent claims are
//! gathered into batches (by resource shard, one batch in flight per shard)
//! and decided together on one snapshot statement; the accepted ones are
//! committed by one statement that locks the resources' rows and writes only
//! for resources whose `ledger_seq` still has the snapshot's value. Every
//! transaction that changes a resource's claims or blocks raises
//! `ledger_seq` under the row lock, so an unchanged value, checked under the
//! lock, means steps 1–3 would see exactly the snapshot (lapsed holds in
//! reach send the claim to the locked path instead). A claim the snapshot
//! cannot settle, or whose resource changed meanwhile, takes the locked
//! transaction, which stays the authority. A refusal on the snapshot (the
//! slot was already taken or full when read) is final.
//!
//! A claim for a time that is not an offered slot of its type at all
//! (outside hours, off the slot grid, too soon, too far ahead) is
//! [`LedgerError::Invalid`]; a real slot that is taken or full is
//! [`LedgerError::SlotUnavailable`].

mod batch;
mod known;

pub(crate) use batch::ClaimShards;
pub(crate) use known::KnownLedgers;

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use berth_ledger::{CancellationPolicy, ClaimReceipt, ClaimRequest, Ledger, LedgerError};
use berth_slots::{BusyInterval, Claim, Schedule, Window, compute_slots};
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use uuid::Uuid;

use crate::Availability;
use crate::error::{AvailabilityError, is_connection_error};
use crate::model::{AppointmentType, in_supported_range};
use crate::rules::{REACH, engine_claim, resource_and_type, schedule, widen, zone};
use crate::store::{Block, BlockPlan, ClaimRow, ResourceRow, RowLock, SlotCounters, SlotView, Tx};

/// Attempts per operation when the database asks for a retry (deadlock,
/// serialisation failure, SQLite busy) or the Redis lock turned out stale.
const MAX_ATTEMPTS: u32 = 6;
const MAX_HOLD: Duration = Duration::from_secs(24 * 3600);
const MAX_OWNER_CHARS: usize = 200;

/// Why one attempt did not finish.
pub(crate) enum Failure {
    Ledger(LedgerError),
    /// Our Redis fencing token is older than the stored fence.
    Stale(i64),
    /// Transient database conflict; run the attempt again.
    Retry(String),
}

impl From<LedgerError> for Failure {
    fn from(e: LedgerError) -> Self {
        Failure::Ledger(e)
    }
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        if let Some(db) = error.as_database_error() {
            let code = db.code().unwrap_or_default();
            // 23P01: exclusion violation; the SQLite trigger says it by name.
            if code == "23P01" || db.message().contains("blocks_no_overlap") {
                return Failure::Ledger(LedgerError::SlotUnavailable(
                    "the time overlaps another booking".to_owned(),
                ));
            }
            // Serialisation failure, deadlock; SQLite busy / locked / busy snapshot.
            if matches!(code.as_ref(), "40001" | "40P01" | "5" | "6" | "517" | "261") {
                return Failure::Retry(error.to_string());
            }
        }
        if is_connection_error(&error) {
            return Failure::Ledger(LedgerError::Unavailable(format!("database: {error}")));
        }
        tracing::error!(%error, "ledger database error");
        Failure::Ledger(LedgerError::Internal(error.to_string()))
    }
}

impl From<AvailabilityError> for Failure {
    fn from(error: AvailabilityError) -> Self {
        match error {
            AvailabilityError::Database(e) => e.into(),
            AvailabilityError::NotFound(what) => Failure::Ledger(LedgerError::NotFound(what)),
            AvailabilityError::Invalid { field, message } => {
                Failure::Ledger(LedgerError::Invalid(format!("{field}: {message}")))
            }
            AvailabilityError::Ledger(e) => Failure::Ledger(e),
            other => Failure::Ledger(LedgerError::Internal(other.to_string())),
        }
    }
}

/// Whether an operation queues on the per-resource locks before its
/// transaction (claims do; quick single-row updates rely on the row lock).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queue {
    Locks,
    RowOnly,
}

/// The ledger's clock, at the database's precision (microseconds).
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

impl Availability {
    /// Runs `attempt` with the resource serialised, retrying transient
    /// failures. `attempt` gets the fencing token to pass to [`lock`].
    pub(crate) async fn serialised<T, F, Fut>(
        &self,
        resource: Uuid,
        queue: Queue,
        mut attempt: F,
    ) -> Result<T, LedgerError>
    where
        F: FnMut(Option<i64>) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut fence_floor = 0;
        let mut last = String::new();
        for n in 0..MAX_ATTEMPTS {
            let guard = match queue {
                Queue::Locks => Some(self.inner.locks.acquire(resource, fence_floor).await),
                Queue::RowOnly => None,
            };
            let token = guard.as_ref().and_then(|g| g.token());
            let outcome = attempt(token).await;
            // Whatever the attempt changed, the group commit reads afresh.
            self.inner.known_ledgers.invalidate(resource);
            if let Some(guard) = guard {
                guard.release().await;
            }
            match outcome {
                Ok(value) => return Ok(value),
                Err(Failure::Ledger(error)) => return Err(error),
                Err(Failure::Stale(fence)) => {
                    tracing::info!(%resource, fence, "redis lock lost before commit; retrying");
                    fence_floor = fence;
                }
                Err(Failure::Retry(why)) => {
                    tracing::debug!(%resource, attempt = n, %why, "transient database conflict; retrying");
                    last = why;
                    let pause = 5u64 << n.min(6);
                    tokio::time::sleep(Duration::from_millis(rand::random_range(0..=pause))).await;
                }
            }
        }
        Err(LedgerError::Unavailable(format!(
            "the ledger is busy; try again ({last})"
        )))
    }

    /// A claim through the locked transaction, queued on the resource's locks.
    pub(crate) async fn claim_locked(
        &self,
        req: &ClaimRequest,
    ) -> Result<ClaimReceipt, LedgerError> {
        self.serialised(req.resource_id, Queue::Locks, |token| {
            self.claim_once(req, token)
        })
        .await
    }

    /// One attempt at a claim in the locked transaction.
    pub(crate) async fn claim_once(
        &self,
        req: &ClaimRequest,
        token: Option<i64>,
    ) -> Result<ClaimReceipt, Failure> {
        let mut tx = self.inner.store.write().await?;
        lock(&mut tx, req.resource_id, token).await?;
        let now = now();
        // Read after the lock, so it sees every claim committed before it.
        let Some(view) = tx
            .slot_view(
                req.resource_id,
                req.appointment_type_id,
                req.start,
                REACH,
                now,
            )
            .await?
        else {
            return Err(LedgerError::NotFound(format!(
                "appointment type {}",
                req.appointment_type_id
            ))
            .into());
        };
        let slot = Slot::from_view(view)?;
        if req.seats > slot.ty.capacity {
            return Err(invalid(format!(
                "seats: {} exceeds the slot's capacity of {}",
                req.seats, slot.ty.capacity
            )));
        }
        if let Some(existing) = slot.held_by(req) {
            if existing.seats != i64::from(req.seats) {
                return Err(invalid(format!(
                    "owner {:?} already holds {} seats of this slot",
                    req.owner, existing.seats
                )));
            }
            return receipt(existing, &slot.resource.owner_id);
        }
        let end = slot.end(req.start);
        let mut block = slot.block;
        if slot.lapsed {
            // Releasing lapsed holds may empty (and so delete) the slot's block.
            let (from, to) = widen(req.start, end);
            tx.expire_lapsed(slot.resource.id, from, to, now).await?;
            block = tx.find_block(slot.ty.id, req.start, end).await?;
        }
        slot.check(req.start, req.seats, now)?;
        let (claim, plan) = slot.new_claim(req, block, now)?;
        tx.insert_claim_into(&claim, plan, now).await?;
        tx.commit().await?;
        receipt(&claim, &slot.resource.owner_id)
    }

    async fn confirm_once(&self, id: Uuid, token: Option<i64>) -> Result<ClaimReceipt, Failure> {
        let mut tx = self.inner.store.write().await?;
        let claim = locked_claim(&mut tx, id, token).await?;
        let now = now();
        if !claim.is_live(now) {
            return Err(gone(&claim, now).into());
        }
        let owner = resource_owner(&mut tx, claim.resource_id).await?;
        if claim.expires_at.is_some() {
            tx.confirm_claim(id).await?;
            tx.commit().await?;
        }
        receipt(
            &ClaimRow {
                expires_at: None,
                ..claim
            },
            &owner,
        )
    }

    async fn release_once(&self, id: Uuid, token: Option<i64>) -> Result<(), Failure> {
        let mut tx = self.inner.store.write().await?;
        let claim = locked_claim(&mut tx, id, token).await?;
        if let Some(block) = tx.release_claim(claim.id, now()).await? {
            tx.delete_block_if_empty(block).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Claims the new slot and gives up the old one in one transaction. The
    /// claim keeps its id, owner, seats, hold and price, and takes the type's
    /// current buffers and cancellation policy; the old slot does not count
    /// against the new one (moving by half an hour is fine).
    async fn reschedule_once(
        &self,
        id: Uuid,
        new_start: DateTime<Utc>,
        token: Option<i64>,
    ) -> Result<ClaimReceipt, Failure> {
        let mut tx = self.inner.store.write().await?;
        let claim = locked_claim(&mut tx, id, token).await?;
        let now = now();
        if !claim.is_live(now) {
            return Err(gone(&claim, now).into());
        }
        if claim.starts_at == new_start {
            let owner = resource_owner(&mut tx, claim.resource_id).await?;
            return receipt(&claim, &owner);
        }
        let (resource, ty) =
            resource_and_type(&mut tx, claim.resource_id, claim.appointment_type_id).await?;
        let seats = u32::try_from(claim.seats).map_err(|_| internal("seats out of range"))?;
        if seats > ty.capacity {
            return Err(invalid(format!(
                "the claim's {seats} seats exceed the slot's capacity of {}",
                ty.capacity
            )));
        }
        let end = new_start + TimeDelta::minutes(ty.duration_minutes.into());
        let (from, to) = widen(new_start, end);
        tx.expire_lapsed(resource.id, from, to, now).await?;
        let others: Vec<Claim> = tx
            .live_claims(resource.id, from, to, now)
            .await?
            .iter()
            .filter(|c| c.id != claim.id)
            .map(engine_claim)
            .collect();
        let busy = tx.busy_times(resource.id, from, to).await?;
        let schedule = schedule(&mut tx, &resource, new_start, end).await?;
        check_offered(&schedule, &ty, &others, &busy, new_start, seats, now)?;
        if let Some(old_block) = tx.release_claim(claim.id, now).await? {
            tx.delete_block_if_empty(old_block).await?;
        }
        let block = take_seats(&mut tx, &ty, new_start, end, claim.seats, now).await?;
        let moved = ClaimRow {
            block_id: Some(block),
            starts_at: new_start,
            ends_at: end,
            buffer_before_minutes: ty.buffer_before_minutes.into(),
            buffer_after_minutes: ty.buffer_after_minutes.into(),
            // The moved claim is made under the type's current policy.
            full_refund_notice_hours: ty.cancellation_policy.map(|p| p.full_refund_notice_hours),
            late_refund_percent: ty.cancellation_policy.map(|p| p.late_refund_percent),
            ..claim
        };
        tx.place_claim(&moved).await?;
        tx.commit().await?;
        receipt(&moved, &resource.owner_id)
    }

    /// The resource a claim belongs to (read without locks; claims never
    /// change resource).
    async fn claim_resource(&self, id: Uuid) -> Result<Option<Uuid>, LedgerError> {
        let mut tx = self.inner.store.read().await.map_err(ledger_error)?;
        let claim = tx.get_claim(id).await.map_err(ledger_error)?;
        Ok(claim.map(|c| c.resource_id))
    }

    /// Releases every lapsed hold (what a claim does near its slot anyway).
    pub(crate) async fn sweep_lapsed(&self) -> Result<u64, LedgerError> {
        let resources = {
            let mut tx = self.inner.store.read().await.map_err(ledger_error)?;
            tx.resources_with_lapsed(now(), 500)
                .await
                .map_err(ledger_error)?
        };
        let mut released = 0;
        for resource in resources {
            released += self
                .serialised(resource, Queue::RowOnly, |token| async move {
                    let mut tx = self.inner.store.write().await?;
                    lock(&mut tx, resource, token).await?;
                    let n = tx.expire_lapsed(resource, EARLIEST, LATEST, now()).await?;
                    tx.commit().await?;
                    Ok(n)
                })
                .await?;
        }
        Ok(released)
    }
}

/// The span every backend stores: 0001-01-01 to 10000-01-01 (both always
/// representable, so the fallbacks never apply).
const EARLIEST: DateTime<Utc> = match DateTime::from_timestamp(-62_135_596_800, 0) {
    Some(t) => t,
    None => DateTime::UNIX_EPOCH,
};
const LATEST: DateTime<Utc> = match DateTime::from_timestamp(253_402_300_800, 0) {
    Some(t) => t,
    None => DateTime::UNIX_EPOCH,
};

fn ledger_error(error: sqlx::Error) -> LedgerError {
    match Failure::from(error) {
        Failure::Ledger(e) => e,
        Failure::Retry(why) => LedgerError::Unavailable(why),
        Failure::Stale(_) => LedgerError::Unavailable("lock lost".to_owned()),
    }
}

fn invalid(detail: String) -> Failure {
    Failure::Ledger(LedgerError::Invalid(detail))
}

fn internal(detail: &str) -> Failure {
    Failure::Ledger(LedgerError::Internal(detail.to_owned()))
}

/// Locks the resource row (with the fencing token, if any).
pub(crate) async fn lock(tx: &mut Tx, resource: Uuid, token: Option<i64>) -> Result<(), Failure> {
    match tx.lock_resource(resource, token).await? {
        RowLock::Locked => Ok(()),
        RowLock::Missing => Err(LedgerError::NotFound(format!("resource {resource}")).into()),
        RowLock::Stale(fence) => Err(Failure::Stale(fence)),
    }
}

/// Loads a claim, locks its resource, and reloads it under the lock.
async fn locked_claim(tx: &mut Tx, id: Uuid, token: Option<i64>) -> Result<ClaimRow, Failure> {
    let missing = || Failure::Ledger(LedgerError::NotFound(format!("claim {id}")));
    let claim = tx.get_claim(id).await?.ok_or_else(missing)?;
    lock(tx, claim.resource_id, token).await?;
    tx.get_claim(id).await?.ok_or_else(missing)
}

/// Why a claim that is not live cannot be used.
fn gone(claim: &ClaimRow, now: DateTime<Utc>) -> LedgerError {
    if claim.lapsed(now) {
        LedgerError::HoldExpired
    } else {
        LedgerError::NotFound(format!("claim {} (released)", claim.id))
    }
}

/// A [`SlotView`] turned into the engine's terms.
struct Slot {
    resource: ResourceRow,
    ty: AppointmentType,
    claims: Vec<ClaimRow>,
    busy: Vec<BusyInterval>,
    schedule: Schedule,
    lapsed: bool,
    block: Option<Block>,
    counters: SlotCounters,
}

impl Slot {
    fn from_view(view: SlotView) -> Result<Self, Failure> {
        let ty = AppointmentType::try_from(view.ty)?;
        let schedule = Schedule {
            time_zone: zone(&view.resource)?,
            weekly: view.resource.weekly.0.clone(),
            overrides: view.overrides,
        };
        Ok(Slot {
            resource: view.resource,
            ty,
            claims: view.claims,
            busy: view.busy,
            schedule,
            lapsed: view.lapsed,
            block: view.block,
            counters: view.counters,
        })
    }

    /// The claim `req` makes and where it goes, with the seats of `block`
    /// (if the slot has one) counted from the live claims of this slot view.
    fn new_claim(
        &self,
        req: &ClaimRequest,
        block: Option<Block>,
        now: DateTime<Utc>,
    ) -> Result<(ClaimRow, BlockPlan), Failure> {
        let ty = &self.ty;
        let capacity = i64::from(ty.capacity);
        let seats = i64::from(req.seats);
        let plan = match block {
            Some(block) => {
                let taken: i64 = self
                    .claims
                    .iter()
                    .filter(|c| c.block_id == Some(block.id))
                    .map(|c| c.seats)
                    .sum();
                if taken + seats > capacity {
                    return Err(Failure::Ledger(LedgerError::SlotUnavailable(format!(
                        "only {} of {capacity} seats left",
                        (capacity - taken).max(0)
                    ))));
                }
                BlockPlan::Existing { block, capacity }
            }
            None => BlockPlan::New {
                id: Uuid::now_v7(),
                capacity,
            },
        };
        let claim = ClaimRow {
            id: Uuid::now_v7(),
            block_id: Some(plan.block_id()),
            resource_id: self.resource.id,
            appointment_type_id: ty.id,
            starts_at: req.start,
            ends_at: self.end(req.start),
            seats,
            buffer_before_minutes: ty.buffer_before_minutes.into(),
            buffer_after_minutes: ty.buffer_after_minutes.into(),
            price_minor: ty.price_minor * seats,
            currency: ty.currency.clone(),
            owner: req.owner.clone(),
            expires_at: req.hold_for.map(|d| now + d).map(|t| t.trunc_subsecs(6)),
            released_at: None,
            full_refund_notice_hours: ty.cancellation_policy.map(|p| p.full_refund_notice_hours),
            late_refund_percent: ty.cancellation_policy.map(|p| p.late_refund_percent),
        };
        Ok((claim, plan))
    }

    fn end(&self, start: DateTime<Utc>) -> DateTime<Utc> {
        start + TimeDelta::minutes(self.ty.duration_minutes.into())
    }

    /// The live claim the request's owner already holds on this slot.
    fn held_by(&self, req: &ClaimRequest) -> Option<&ClaimRow> {
        self.claims.iter().find(|c| {
            c.owner == req.owner && c.appointment_type_id == self.ty.id && c.starts_at == req.start
        })
    }

    fn check(&self, start: DateTime<Utc>, seats: u32, now: DateTime<Utc>) -> Result<(), Failure> {
        let claims: Vec<Claim> = self.claims.iter().map(engine_claim).collect();
        check_offered(
            &self.schedule,
            &self.ty,
            &claims,
            &self.busy,
            start,
            seats,
            now,
        )
    }
}

/// Accepts `start` iff the engine offers it with `seats` free, given the
/// claims and busy times read under the row lock.
fn check_offered(
    schedule: &Schedule,
    ty: &AppointmentType,
    claims: &[Claim],
    busy: &[BusyInterval],
    start: DateTime<Utc>,
    seats: u32,
    now: DateTime<Utc>,
) -> Result<(), Failure> {
    let rules = ty.rules();
    let window = Window {
        from: start,
        to: start + TimeDelta::microseconds(1),
    };
    let offered = |claims: &[Claim], busy: &[BusyInterval]| {
        compute_slots(schedule, &rules, claims, busy, window, now)
            .map(|slots| slots.into_iter().find(|s| s.start == start))
            .map_err(|e| internal(&format!("stored rules rejected: {e}")))
    };
    match offered(claims, busy)? {
        Some(slot) if slot.remaining >= seats => Ok(()),
        Some(slot) => Err(Failure::Ledger(LedgerError::SlotUnavailable(format!(
            "only {} of {} seats left",
            slot.remaining, ty.capacity
        )))),
        None if offered(&[], &[])?.is_some() => Err(Failure::Ledger(LedgerError::SlotUnavailable(
            "the slot is taken".to_owned(),
        ))),
        None => Err(invalid(format!(
            "start: {start} is not a bookable slot of this type (outside working hours, \
             off the slot grid, or outside the notice/horizon)"
        ))),
    }
}

/// Finds or creates the slot's block and takes `seats` of it.
async fn take_seats(
    tx: &mut Tx,
    ty: &AppointmentType,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    seats: i64,
    now: DateTime<Utc>,
) -> Result<Uuid, Failure> {
    let capacity = i64::from(ty.capacity);
    let block = match tx.find_block(ty.id, start, end).await? {
        Some(block) => block,
        None => {
            let id = Uuid::now_v7();
            tx.insert_block(id, ty.resource_id, ty.id, start, end, capacity)
                .await?;
            Block { id, capacity }
        }
    };
    if block.capacity != capacity {
        tx.set_block_capacity(block.id, capacity).await?;
    }
    let taken = tx.block_seats(block.id, now).await?;
    if taken + seats > capacity {
        return Err(Failure::Ledger(LedgerError::SlotUnavailable(format!(
            "only {} of {capacity} seats left",
            (capacity - taken).max(0)
        ))));
    }
    Ok(block.id)
}

/// Who manages the resource, for receipts (read under the row lock).
async fn resource_owner(tx: &mut Tx, resource: Uuid) -> Result<String, Failure> {
    match tx.get_resource(resource).await? {
        Some(r) => Ok(r.owner_id),
        None => Err(LedgerError::NotFound(format!("resource {resource}")).into()),
    }
}

fn receipt(c: &ClaimRow, resource_owner: &str) -> Result<ClaimReceipt, Failure> {
    Ok(ClaimReceipt {
        claim_id: c.id,
        resource_id: c.resource_id,
        appointment_type_id: c.appointment_type_id,
        start: c.starts_at,
        end: c.ends_at,
        seats: u32::try_from(c.seats).map_err(|_| internal("seats out of range"))?,
        expires_at: c.expires_at,
        price_minor: c.price_minor,
        currency: c.currency.clone(),
        resource_owner: resource_owner.to_owned(),
        cancellation_policy: cancellation_policy(c)?,
    })
}

/// The policy snapshotted on the claim row.
fn cancellation_policy(c: &ClaimRow) -> Result<Option<CancellationPolicy>, Failure> {
    let (hours, percent) = match (c.full_refund_notice_hours, c.late_refund_percent) {
        (None, None) => return Ok(None),
        (Some(hours), Some(percent)) => (hours, percent),
        _ => return Err(internal("claim has half a cancellation policy")),
    };
    let bad = || internal("cancellation policy out of range");
    let hours = u64::try_from(hours).map_err(|_| bad())?;
    Ok(Some(CancellationPolicy {
        full_refund_notice: Duration::from_secs(hours.checked_mul(3600).ok_or_else(bad)?),
        late_refund_percent: u8::try_from(percent)
            .ok()
            .filter(|p| *p <= 100)
            .ok_or_else(bad)?,
    }))
}

fn validate(req: &ClaimRequest) -> Result<(), LedgerError> {
    let invalid = |m: &str| Err(LedgerError::Invalid(m.to_owned()));
    if req.seats == 0 {
        return invalid("seats: must be at least 1");
    }
    let owner = &req.owner;
    if owner.trim().is_empty() || owner.chars().count() > MAX_OWNER_CHARS || owner.contains('\0') {
        return invalid("owner: must be 1 to 200 characters, without NUL");
    }
    if let Some(hold) = req.hold_for
        && (hold.is_zero() || hold > MAX_HOLD)
    {
        return invalid("hold_for: must be between 1 second and 24 hours");
    }
    if !in_supported_range(req.start) {
        return invalid("start: year must be between 1 and 9999");
    }
    Ok(())
}

#[async_trait]
impl Ledger for Availability {
    async fn claim(&self, request: ClaimRequest) -> Result<ClaimReceipt, LedgerError> {
        validate(&request)?;
        let request = ClaimRequest {
            start: request.start.trunc_subsecs(6),
            ..request
        };
        match &self.inner.claims {
            Some(shards) => shards.claim(request).await,
            None => self.claim_locked(&request).await,
        }
    }

    async fn claim_many(
        &self,
        requests: Vec<ClaimRequest>,
    ) -> Vec<Result<ClaimReceipt, LedgerError>> {
        futures::future::join_all(requests.into_iter().map(|r| self.claim(r))).await
    }

    async fn confirm(&self, claim_id: Uuid) -> Result<ClaimReceipt, LedgerError> {
        let resource = self
            .claim_resource(claim_id)
            .await?
            .ok_or_else(|| LedgerError::NotFound(format!("claim {claim_id}")))?;
        self.serialised(resource, Queue::RowOnly, |token| {
            self.confirm_once(claim_id, token)
        })
        .await
    }

    async fn release(&self, claim_id: Uuid) -> Result<(), LedgerError> {
        let Some(resource) = self.claim_resource(claim_id).await? else {
            return Ok(());
        };
        self.serialised(resource, Queue::RowOnly, |token| {
            self.release_once(claim_id, token)
        })
        .await
    }

    async fn reschedule(
        &self,
        claim_id: Uuid,
        new_start: DateTime<Utc>,
    ) -> Result<ClaimReceipt, LedgerError> {
        if !in_supported_range(new_start) {
            return Err(LedgerError::Invalid(
                "new_start: year must be between 1 and 9999".to_owned(),
            ));
        }
        let new_start = new_start.trunc_subsecs(6);
        let resource = self
            .claim_resource(claim_id)
            .await?
            .ok_or_else(|| LedgerError::NotFound(format!("claim {claim_id}")))?;
        self.serialised(resource, Queue::Locks, |token| {
            self.reschedule_once(claim_id, new_start, token)
        })
        .await
    }
}

#[cfg(test)]
mod tests;
