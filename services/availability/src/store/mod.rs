//! Storage behind one transaction type, [`Tx`], over two backends:
//! PostgreSQL (production) and SQLite (the embedded store of `berth dev`).
//!
//! The backends are a closed set, so `Tx` is an enum rather than a trait
//! object: portable SQL (the catalog, in `catalog.rs`) is written once and
//! run on either connection by [`both!`]; the ledger's SQL differs per
//! dialect (ranges and row locks vs. integer times and triggers) and lives in
//! `postgres.rs` and `sqlite.rs` behind the same method names.

mod catalog;
mod checks;
mod postgres;
mod sqlite;

use std::sync::Arc;

use berth_runtime::postgres::HeldConnections;
use berth_slots::{BusyInterval, DateOverride, WeeklyHours};
use chrono::{DateTime, TimeDelta, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use crate::error::AvailabilityError;

pub use catalog::resource_page_sql;
pub(crate) use catalog::{CLAIM_COLUMNS, TABLES};
pub(crate) use postgres::SlotKey;

/// Runs the same code on whichever connection the transaction holds.
macro_rules! both {
    ($tx:expr, |$c:ident| $body:expr) => {
        match $tx {
            $crate::store::Tx::Postgres(tx) => {
                let $c = &mut **tx;
                $body
            }
            $crate::store::Tx::Sqlite(tx) => {
                let $c = &mut **tx;
                $body
            }
        }
    };
}
pub(crate) use both;

/// Calls the dialect's own implementation of a ledger primitive.
macro_rules! dialect {
    ($tx:expr, $f:ident ( $($arg:expr),* )) => {
        match $tx {
            Tx::Postgres(tx) => postgres::$f(tx, $($arg),*).await,
            Tx::Sqlite(tx) => sqlite::$f(tx, $($arg),*).await,
        }
    };
}

#[derive(Clone)]
pub(crate) enum Store {
    Postgres(Pg),
    Sqlite(sqlite::SqlitePools),
}

/// The PostgreSQL pool, and the connections the hot single statements
/// (claim batches, slot reads) keep out of it between uses.
#[derive(Clone)]
pub(crate) struct Pg {
    pool: sqlx::PgPool,
    hot: Arc<HeldConnections>,
}

/// Connections kept for the hot statements: one per claim shard and one
/// for slot reads; more stay in the pool.
const HELD_CONNECTIONS: usize = 3;

/// Runs one statement (`$f(conn, args…)`) on a held connection of `$pg`.
macro_rules! on_held {
    ($pg:expr, $f:ident ( $($arg:expr),* )) => {{
        let mut conn = $pg.hot.take().await?;
        let outcome = postgres::$f(&mut *conn, $($arg),*).await;
        conn.give_back(outcome.as_ref().err());
        outcome
    }};
}

pub(crate) enum Tx {
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
}

impl Store {
    /// Connects by URL scheme (`postgres://…`, `sqlite:…`, `sqlite::memory:`)
    /// and runs the embedded migrations.
    pub async fn connect(url: &str) -> Result<Self, AvailabilityError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = postgres::connect(url).await?;
            let hot = Arc::new(HeldConnections::new(pool.clone(), HELD_CONNECTIONS));
            Ok(Store::Postgres(Pg { pool, hot }))
        } else if url.starts_with("sqlite:") {
            Ok(Store::Sqlite(sqlite::connect(url).await?))
        } else {
            Err(AvailabilityError::Config(
                "database URL must start with postgres:// or sqlite:".to_owned(),
            ))
        }
    }

    /// A transaction that may write. On SQLite it holds the database's write
    /// lock from the start (`BEGIN IMMEDIATE`), so writers are serialised.
    pub async fn write(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Store::Postgres(pg) => Tx::Postgres(pg.pool.begin().await?),
            Store::Sqlite(pools) => Tx::Sqlite(pools.writer.begin_with("BEGIN IMMEDIATE").await?),
        })
    }

    /// A transaction that only reads.
    pub async fn read(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Store::Postgres(pg) => Tx::Postgres(pg.pool.begin().await?),
            Store::Sqlite(pools) => Tx::Sqlite(pools.reader.begin().await?),
        })
    }

    /// [`Tx::slot_view`] for many slots in one statement, outside any
    /// transaction and lock: the snapshot claims are decided on. PostgreSQL
    /// only: `None` on SQLite, where there is no such statement and writers
    /// are serialised anyway.
    pub async fn peek_slots(
        &self,
        slots: &[SlotKey],
        reach: TimeDelta,
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<Option<SlotView>>>, sqlx::Error> {
        match self {
            Store::Postgres(pg) => on_held!(pg, slot_views(slots, reach, now)).map(Some),
            Store::Sqlite(_) => Ok(None),
        }
    }

    /// Commits claims decided on views read by [`Store::peek_slots`], in one
    /// statement, for each resource whose claims, blocks and catalog are
    /// still those of its views (both counters). Returns the resources whose
    /// counters held (written where the guard says so); the others' claims
    /// must be decided again. Nothing is written on SQLite.
    pub async fn claims_if_unchanged(
        &self,
        write: &GuardedClaims,
        now: DateTime<Utc>,
    ) -> Result<Vec<Uuid>, sqlx::Error> {
        match self {
            Store::Postgres(pg) if !write.resources.is_empty() => {
                on_held!(pg, claims_if_unchanged(write, now))
            }
            _ => Ok(Vec::new()),
        }
    }

    /// The counters that tell whether cached slot inputs of `resource` are
    /// current, and whether one of its calendars is due for a refresh.
    /// `None` if the resource does not exist (PostgreSQL; SQLite does not
    /// look, as [`Store::window_view`], read next, answers that anyway).
    pub async fn slot_versions(&self, resource: Uuid) -> Result<Option<SlotVersions>, sqlx::Error> {
        if let Store::Postgres(pg) = self {
            return on_held!(pg, slot_versions(resource));
        }
        let mut tx = self.read().await?;
        Ok(Some(SlotVersions {
            counters: None,
            feeds_due: !tx.stale_calendars(Some(resource)).await?.is_empty(),
        }))
    }

    /// What `GET …/slots` computes on for `window` (claims and busy times
    /// within `reach` of it), read consistently: one statement on
    /// PostgreSQL, one read transaction on SQLite. Claims include lapsed
    /// holds not yet released (the view may be reused later; filter with
    /// [`ClaimRow::lapsed`]). `None` if the resource does not exist.
    pub async fn window_view(
        &self,
        resource: Uuid,
        appointment_type: Uuid,
        window: (DateTime<Utc>, DateTime<Utc>),
        reach: TimeDelta,
    ) -> Result<Option<WindowView>, sqlx::Error> {
        if let Store::Postgres(pg) = self {
            return on_held!(pg, window_view(resource, appointment_type, window, reach));
        }
        let mut tx = self.read().await?;
        let Some(row) = tx.get_resource(resource).await? else {
            return Ok(None);
        };
        let ty = tx
            .get_type(appointment_type)
            .await?
            .filter(|t| t.resource_id == resource);
        let (from, to) = window;
        let (wide_from, wide_to) = (
            from.checked_sub_signed(reach).unwrap_or(from),
            to.checked_add_signed(reach).unwrap_or(to),
        );
        // Live at the epoch: every unreleased claim.
        let claims = tx
            .live_claims(resource, wide_from, wide_to, DateTime::UNIX_EPOCH)
            .await?;
        let busy = tx.busy_times(resource, wide_from, wide_to).await?;
        let overrides = tx.overrides_around(resource, from, to).await?;
        Ok(Some(WindowView {
            resource: row,
            ty,
            claims,
            busy,
            overrides,
            counters: None,
        }))
    }

    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        match self {
            Store::Postgres(pg) => sqlx::query("SELECT 1").execute(&pg.pool).await.map(drop),
            Store::Sqlite(pools) => sqlx::query("SELECT 1")
                .execute(&pools.reader)
                .await
                .map(drop),
        }
    }
}

/// What locking a resource's row found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowLock {
    Locked,
    Missing,
    /// The fencing token is not newer than the stored one: another holder
    /// got the Redis lock after ours lapsed. Carries the stored fence.
    Stale(i64),
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct ResourceRow {
    pub id: Uuid,
    pub name: String,
    pub time_zone: String,
    pub owner_id: String,
    pub weekly: Json<WeeklyHours>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct TypeRow {
    pub id: Uuid,
    pub resource_id: Uuid,
    pub name: String,
    pub duration_minutes: i64,
    pub interval_minutes: i64,
    pub buffer_before_minutes: i64,
    pub buffer_after_minutes: i64,
    pub min_notice_minutes: i64,
    pub horizon_minutes: i64,
    pub capacity: i64,
    pub price_minor: i64,
    pub currency: String,
    /// The cancellation policy: both set, or both `None` (no policy).
    pub full_refund_notice_hours: Option<i64>,
    pub late_refund_percent: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct CalendarRow {
    pub id: Uuid,
    pub resource_id: Uuid,
    pub name: Option<String>,
    pub url: Option<String>,
    pub refresh_interval_secs: i64,
    pub ics: Option<String>,
    pub fetched_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A ledger entry. Live iff not released and not lapsed at "now".
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub(crate) struct ClaimRow {
    pub id: Uuid,
    pub block_id: Option<Uuid>,
    pub resource_id: Uuid,
    pub appointment_type_id: Uuid,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub seats: i64,
    pub buffer_before_minutes: i64,
    pub buffer_after_minutes: i64,
    pub price_minor: i64,
    pub currency: String,
    pub owner: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub released_at: Option<DateTime<Utc>>,
    /// The type's cancellation policy when claimed (like the price): both
    /// set, or both `None`.
    pub full_refund_notice_hours: Option<i64>,
    pub late_refund_percent: Option<i64>,
}

impl ClaimRow {
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.released_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }

    /// Released because its hold ran out (rather than by `release`).
    pub fn lapsed(&self, now: DateTime<Utc>) -> bool {
        match (self.expires_at, self.released_at) {
            (Some(expires), Some(released)) => released >= expires,
            (Some(expires), None) => expires <= now,
            (None, _) => false,
        }
    }
}

/// A shared slot: its id and seat capacity.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Block {
    pub id: Uuid,
    pub capacity: i64,
}

/// Everything a claim for one slot is decided on: the resource, the
/// appointment type, and what lies within `reach` of the slot
/// `[start, start + duration)`. On PostgreSQL it is one statement.
#[derive(Debug, Clone)]
pub(crate) struct SlotView {
    pub resource: ResourceRow,
    pub ty: TypeRow,
    /// Live claims overlapping `[start - reach, end + reach)`, by start.
    pub claims: Vec<ClaimRow>,
    /// Calendar busy times overlapping the same span.
    pub busy: Vec<BusyInterval>,
    /// Date overrides for at least the local dates two days either side of
    /// the slot (a superset is harmless: the engine looks up dates).
    pub overrides: Vec<DateOverride>,
    /// Whether lapsed but unreleased holds overlap the span (always true on
    /// SQLite, which does not look: the caller then clears them anyway).
    pub lapsed: bool,
    /// The slot's block, if it exists (not read on SQLite: `None` with
    /// `lapsed` set, so the caller looks it up after clearing lapsed holds).
    pub block: Option<Block>,
    /// The resource's counters in the same snapshot (PostgreSQL; both 0 on
    /// SQLite, which has none).
    pub counters: SlotCounters,
}

/// Seconds between re-expansions of an uploaded calendar: its recurring
/// events are expanded a fixed time ahead, so it is refreshed daily.
pub(crate) const UPLOAD_REFRESH_SECS: i64 = 86_400;

/// Everything the slots of one resource and type over a window are
/// computed on (see [`Store::window_view`]).
#[derive(Debug, Clone)]
pub(crate) struct WindowView {
    pub resource: ResourceRow,
    /// `None`: no such appointment type on this resource.
    pub ty: Option<TypeRow>,
    /// Unreleased claims within reach of the window, lapsed holds included.
    pub claims: Vec<ClaimRow>,
    pub busy: Vec<BusyInterval>,
    /// Overrides for at least the local dates two days either side.
    pub overrides: Vec<DateOverride>,
    /// The resource's counters in the same snapshot (PostgreSQL).
    pub counters: Option<SlotCounters>,
}

/// A resource's `ledger_seq` (claims and blocks) and `catalog_seq` (hours,
/// zone, types, overrides, calendars, busy times): while both are unchanged,
/// so is everything its slots are computed on, except for holds lapsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotCounters {
    pub ledger: i64,
    pub catalog: i64,
}

/// See [`Store::slot_versions`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlotVersions {
    /// `None` where the backend keeps no counters (SQLite).
    pub counters: Option<SlotCounters>,
    pub feeds_due: bool,
}

/// Claims to write only where their resource's counters are unchanged
/// (see [`Store::claims_if_unchanged`]).
#[derive(Debug, Default)]
pub(crate) struct GuardedClaims {
    /// Each resource once, with the counters its claims were decided on.
    pub resources: Vec<Guard>,
    pub new_blocks: Vec<NewBlock>,
    /// Existing blocks whose capacity changes: (block, resource, capacity).
    pub resized: Vec<(Uuid, Uuid, i64)>,
    pub claims: Vec<ClaimRow>,
}

/// A resource's counters as a batch read them, and whether the batch writes
/// to it (or only needs them confirmed, for refusals decided on them).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Guard {
    pub resource: Uuid,
    pub counters: SlotCounters,
    pub writes: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct NewBlock {
    pub id: Uuid,
    pub resource_id: Uuid,
    pub appointment_type_id: Uuid,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub capacity: i64,
}

/// Where a new claim goes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BlockPlan {
    /// A new block with this id and capacity (the exclusion constraint or
    /// trigger refuses it if the period overlaps another block).
    New { id: Uuid, capacity: i64 },
    /// The existing block, first set to `capacity` if that differs.
    Existing { block: Block, capacity: i64 },
}

impl BlockPlan {
    pub fn block_id(&self) -> Uuid {
        match self {
            BlockPlan::New { id, .. } => *id,
            BlockPlan::Existing { block, .. } => block.id,
        }
    }
}

/// The ledger primitives. Each takes the row lock's protection for granted:
/// callers run them only after [`Tx::lock_resource`] succeeded.
impl Tx {
    /// Overrides for the UTC dates three days either side of `[from, to)`:
    /// a superset of the local dates two days either side in every zone.
    pub async fn overrides_around(
        &mut self,
        resource: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<DateOverride>, sqlx::Error> {
        let three = chrono::Days::new(3);
        let first = from.date_naive();
        let last = to.date_naive();
        let first = first.checked_sub_days(three).unwrap_or(first);
        let last = last.checked_add_days(three).unwrap_or(last);
        self.list_overrides(resource, first, last).await
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Postgres(tx) => tx.commit().await,
            Tx::Sqlite(tx) => tx.commit().await,
        }
    }

    /// Locks the resource's row for the rest of the transaction; with a
    /// fencing token, also refuses a holder older than the last one seen.
    /// On PostgreSQL it also raises the row's `ledger_seq`, which is what
    /// lets [`Store::claims_if_unchanged`] see that a snapshot went stale:
    /// every write to claims or blocks must follow this lock.
    pub async fn lock_resource(
        &mut self,
        id: Uuid,
        token: Option<i64>,
    ) -> Result<RowLock, sqlx::Error> {
        dialect!(self, lock_resource(id, token))
    }

    /// Releases lapsed holds overlapping `[from, to)` and deletes the blocks
    /// they leave empty, so expiry needs no background job.
    pub async fn expire_lapsed(
        &mut self,
        resource: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64, sqlx::Error> {
        dialect!(self, expire_lapsed(resource, from, to, now))
    }

    /// Live claims overlapping `[from, to)`.
    pub async fn live_claims(
        &mut self,
        resource: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<ClaimRow>, sqlx::Error> {
        dialect!(self, live_claims(resource, from, to, now))
    }

    pub async fn has_live_claims(
        &mut self,
        resource: Uuid,
        appointment_type: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> Result<bool, sqlx::Error> {
        dialect!(self, has_live_claims(resource, appointment_type, now))
    }

    pub async fn get_claim(&mut self, id: Uuid) -> Result<Option<ClaimRow>, sqlx::Error> {
        dialect!(self, get_claim(id))
    }

    pub async fn find_block(
        &mut self,
        appointment_type: Uuid,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Option<Block>, sqlx::Error> {
        dialect!(self, find_block(appointment_type, start, end))
    }

    /// Fails with the backend's overlap error if the period is taken.
    pub async fn insert_block(
        &mut self,
        id: Uuid,
        resource: Uuid,
        appointment_type: Uuid,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        capacity: i64,
    ) -> Result<(), sqlx::Error> {
        dialect!(
            self,
            insert_block(id, resource, appointment_type, start, end, capacity)
        )
    }

    pub async fn set_block_capacity(
        &mut self,
        block: Uuid,
        capacity: i64,
    ) -> Result<(), sqlx::Error> {
        both!(self, |c| {
            sqlx::query("UPDATE blocks SET capacity = $2 WHERE id = $1 AND capacity <> $2")
                .bind(block)
                .bind(capacity)
                .execute(c)
                .await
                .map(drop)
        })
    }

    /// Seats held by live claims in the block.
    pub async fn block_seats(
        &mut self,
        block: Uuid,
        now: DateTime<Utc>,
    ) -> Result<i64, sqlx::Error> {
        dialect!(self, block_seats(block, now))
    }

    pub async fn insert_claim(
        &mut self,
        claim: &ClaimRow,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        dialect!(self, insert_claim(claim, now))
    }

    /// Reads the [`SlotView`] for a claim of `appointment_type` at `start`;
    /// `None` if the type does not exist or belongs to another resource.
    pub async fn slot_view(
        &mut self,
        resource: Uuid,
        appointment_type: Uuid,
        start: DateTime<Utc>,
        reach: TimeDelta,
        now: DateTime<Utc>,
    ) -> Result<Option<SlotView>, sqlx::Error> {
        if let Tx::Postgres(tx) = self {
            return postgres::slot_view(&mut **tx, resource, appointment_type, start, reach, now)
                .await;
        }
        let Some(resource) = self.get_resource(resource).await? else {
            return Ok(None);
        };
        let Some(ty) = self
            .get_type(appointment_type)
            .await?
            .filter(|t| t.resource_id == resource.id)
        else {
            return Ok(None);
        };
        let end = start + TimeDelta::minutes(ty.duration_minutes);
        let (from, to) = (
            start.checked_sub_signed(reach).unwrap_or(start),
            end.checked_add_signed(reach).unwrap_or(end),
        );
        let claims = self.live_claims(resource.id, from, to, now).await?;
        let busy = self.busy_times(resource.id, from, to).await?;
        let overrides = self.overrides_around(resource.id, start, end).await?;
        Ok(Some(SlotView {
            resource,
            ty,
            claims,
            busy,
            overrides,
            lapsed: true,
            block: None,
            counters: SlotCounters {
                ledger: 0,
                catalog: 0,
            },
        }))
    }

    /// Inserts a live claim into its block as `plan` says.
    pub async fn insert_claim_into(
        &mut self,
        claim: &ClaimRow,
        plan: BlockPlan,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        if let Tx::Postgres(tx) = self {
            return postgres::insert_claim_into(tx, claim, plan, now).await;
        }
        match plan {
            BlockPlan::New { id, capacity } => {
                self.insert_block(
                    id,
                    claim.resource_id,
                    claim.appointment_type_id,
                    claim.starts_at,
                    claim.ends_at,
                    capacity,
                )
                .await?;
            }
            BlockPlan::Existing { block, capacity } if block.capacity != capacity => {
                self.set_block_capacity(block.id, capacity).await?;
            }
            BlockPlan::Existing { .. } => {}
        }
        self.insert_claim(claim, now).await
    }

    /// Takes a claim out of its block (marks it released) and returns the
    /// block it sat in; `None` if it was already released.
    pub async fn release_claim(
        &mut self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<Uuid>, sqlx::Error> {
        dialect!(self, release_claim(id, now))
    }

    /// Puts a claim (back) into a block at a new time, live again, with
    /// the buffers and cancellation policy it now has.
    pub async fn place_claim(&mut self, claim: &ClaimRow) -> Result<(), sqlx::Error> {
        dialect!(self, place_claim(claim))
    }

    pub async fn confirm_claim(&mut self, id: Uuid) -> Result<(), sqlx::Error> {
        both!(self, |c| {
            sqlx::query("UPDATE claims SET expires_at = NULL WHERE id = $1")
                .bind(id)
                .execute(c)
                .await
                .map(drop)
        })
    }

    pub async fn delete_block_if_empty(&mut self, block: Uuid) -> Result<(), sqlx::Error> {
        both!(self, |c| {
            sqlx::query(
                "DELETE FROM blocks WHERE id = $1 AND NOT EXISTS \
                 (SELECT 1 FROM claims WHERE block_id = $1 AND released_at IS NULL)",
            )
            .bind(block)
            .execute(c)
            .await
            .map(drop)
        })
    }

    /// Resources with holds that have lapsed but are not yet released.
    pub async fn resources_with_lapsed(
        &mut self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Uuid>, sqlx::Error> {
        dialect!(self, resources_with_lapsed(now, limit))
    }

    /// Ledger invariant violations, described; empty when sound.
    pub async fn overlaps(&mut self, now: DateTime<Utc>) -> Result<Vec<String>, sqlx::Error> {
        let mut found = dialect!(self, overlaps(now))?;
        found.extend(self.orphans().await?);
        Ok(found)
    }

    /// Ledger rows whose resource or appointment type is gone (the ledger
    /// tables keep no foreign keys on PostgreSQL; see migration 0004).
    async fn orphans(&mut self) -> Result<Vec<String>, sqlx::Error> {
        let rows: Vec<(String, Uuid)> = both!(self, |c| {
            sqlx::query_as(
                "SELECT 'claim', x.id FROM claims x \
                 WHERE NOT EXISTS (SELECT 1 FROM resources r WHERE r.id = x.resource_id) \
                   OR NOT EXISTS (SELECT 1 FROM appointment_types t WHERE t.id = x.appointment_type_id) \
                 UNION ALL SELECT 'block', x.id FROM blocks x \
                 WHERE NOT EXISTS (SELECT 1 FROM resources r WHERE r.id = x.resource_id) \
                   OR NOT EXISTS (SELECT 1 FROM appointment_types t WHERE t.id = x.appointment_type_id)",
            )
            .fetch_all(c)
            .await
        })?;
        Ok(rows
            .into_iter()
            .map(|(what, id)| {
                format!("{what} {id} belongs to a missing resource or appointment type")
            })
            .collect())
    }

    /// Calendar busy times overlapping `[from, to)`.
    pub async fn busy_times(
        &mut self,
        resource: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<BusyInterval>, sqlx::Error> {
        dialect!(self, busy_times(resource, from, to))
    }

    /// Replaces a calendar's busy times.
    pub async fn replace_busy(
        &mut self,
        calendar: Uuid,
        resource: Uuid,
        busy: &[BusyInterval],
    ) -> Result<(), sqlx::Error> {
        dialect!(self, replace_busy(calendar, resource, busy))
    }
}
