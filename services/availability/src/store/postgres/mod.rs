//! PostgreSQL: schema `availability`, timestamptz, and the `blocks`
//! exclusion constraint (`btree_gist`, `tstzrange`) as the final guard
//! against overlapping bookings. Per-resource serialisation is a row lock
//! (`SELECT … FOR UPDATE` on the resource) taken first in every ledger
//! transaction.
//!
//! This module connects and runs the locked path's statements; the slot
//! views (snapshot reads) are in `views`, the group-commit write in
//! `guarded`.

use std::str::FromStr;
use std::time::Duration;

use berth_slots::BusyInterval;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnectOptions;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::{Block, BlockPlan, CLAIM_COLUMNS, ClaimRow, RowLock, checks};
use crate::error::AvailabilityError;

mod guarded;
mod views;

pub(super) use guarded::claims_if_unchanged;
pub(crate) use views::SlotKey;
pub(super) use views::{slot_versions, slot_view, slot_views, window_view};

type PgTx = Transaction<'static, Postgres>;

/// Our schema comes first; `public` for `btree_gist`'s operator classes.
const SEARCH_PATH: &str = "availability,public";

pub(super) async fn connect(url: &str) -> Result<PgPool, AvailabilityError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| AvailabilityError::Config(format!("database URL: {e}")))?
        .options([
            ("search_path", SEARCH_PATH),
            // Every statement here finds its rows by key, or by resource and
            // time, so one plan fits all parameters. Custom plans (the
            // default for a statement's first five runs per connection)
            // re-planned the claim snapshot read, which plans slower than it
            // runs: 59 plans and 416 ms of planning per P1 run, 8 and 49 ms
            // with generic plans (docs/benchmarks.md).
            ("plan_cache_mode", "force_generic_plan"),
        ]);
    // Most claims use a connection for two single statements (the snapshot
    // read and the conditional write), so a few connections serve many
    // concurrent claims; more only make the database switch between
    // backends.
    let pool = berth_runtime::postgres::pool_options(8)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?;
    // The migrations table lives in our schema, so services sharing one
    // database never see each other's migration history.
    if let Err(error) = sqlx::query("CREATE SCHEMA IF NOT EXISTS availability")
        .execute(&pool)
        .await
    {
        // Two replicas starting at once can race on IF NOT EXISTS; fine if it exists now.
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'availability')",
        )
        .fetch_one(&pool)
        .await?;
        if !exists {
            return Err(error.into());
        }
    }
    sqlx::migrate!("./migrations/postgres").run(&pool).await?;
    Ok(pool)
}

pub(super) async fn lock_resource(
    tx: &mut PgTx,
    id: Uuid,
    token: Option<i64>,
) -> Result<RowLock, sqlx::Error> {
    // Both statements raise `ledger_seq` (see `claims_if_unchanged`); a lock
    // that ends in a rollback takes its raise back with it.
    if let Some(token) = token {
        let fenced = sqlx::query(
            "UPDATE resources SET fence = $2, ledger_seq = ledger_seq + 1 \
             WHERE id = $1 AND fence < $2",
        )
        .bind(id)
        .bind(token)
        .execute(&mut **tx)
        .await?;
        if fenced.rows_affected() == 1 {
            return Ok(RowLock::Locked);
        }
    }
    let fence: Option<i64> = sqlx::query_scalar(
        "UPDATE resources SET ledger_seq = ledger_seq + 1 WHERE id = $1 RETURNING fence",
    )
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(match (fence, token) {
        (None, _) => RowLock::Missing,
        (Some(_), None) => RowLock::Locked,
        (Some(fence), Some(_)) => RowLock::Stale(fence),
    })
}

pub(super) async fn expire_lapsed(
    tx: &mut PgTx,
    resource: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let lapsed = sqlx::query(
        "UPDATE claims SET released_at = $4, block_id = NULL \
         WHERE resource_id = $1 AND released_at IS NULL AND expires_at <= $4 \
           AND period && tstzrange($2, $3, '[)')",
    )
    .bind(resource)
    .bind(from)
    .bind(to)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    sqlx::query(
        "DELETE FROM blocks b WHERE b.resource_id = $1 AND b.period && tstzrange($2, $3, '[)') \
           AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.block_id = b.id AND c.released_at IS NULL)",
    )
    .bind(resource)
    .bind(from)
    .bind(to)
    .execute(&mut **tx)
    .await?;
    Ok(lapsed)
}

pub(super) async fn live_claims(
    tx: &mut PgTx,
    resource: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<ClaimRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {CLAIM_COLUMNS} FROM claims WHERE resource_id = $1 AND released_at IS NULL \
           AND (expires_at IS NULL OR expires_at > $4) AND period && tstzrange($2, $3, '[)') \
         ORDER BY starts_at"
    );
    sqlx::query_as(&sql)
        .bind(resource)
        .bind(from)
        .bind(to)
        .bind(now)
        .fetch_all(&mut **tx)
        .await
}

pub(super) async fn has_live_claims(
    tx: &mut PgTx,
    resource: Uuid,
    appointment_type: Option<Uuid>,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM claims WHERE resource_id = $1 \
           AND ($2::uuid IS NULL OR appointment_type_id = $2) \
           AND released_at IS NULL AND (expires_at IS NULL OR expires_at > $3))",
    )
    .bind(resource)
    .bind(appointment_type)
    .bind(now)
    .fetch_one(&mut **tx)
    .await
}

pub(super) async fn get_claim(tx: &mut PgTx, id: Uuid) -> Result<Option<ClaimRow>, sqlx::Error> {
    let sql = format!("SELECT {CLAIM_COLUMNS} FROM claims WHERE id = $1");
    sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
}

pub(super) async fn find_block(
    tx: &mut PgTx,
    appointment_type: Uuid,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Option<Block>, sqlx::Error> {
    let row: Option<(Uuid, i64)> = sqlx::query_as(
        "SELECT id, capacity FROM blocks WHERE appointment_type_id = $1 AND starts_at = $2 AND ends_at = $3",
    )
    .bind(appointment_type)
    .bind(start)
    .bind(end)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(|(id, capacity)| Block { id, capacity }))
}

pub(super) async fn insert_block(
    tx: &mut PgTx,
    id: Uuid,
    resource: Uuid,
    appointment_type: Uuid,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    capacity: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO blocks (id, resource_id, appointment_type_id, starts_at, ends_at, capacity) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(resource)
    .bind(appointment_type)
    .bind(start)
    .bind(end)
    .bind(capacity)
    .execute(&mut **tx)
    .await
    .map(drop)
}

pub(super) async fn block_seats(
    tx: &mut PgTx,
    block: Uuid,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COALESCE(SUM(seats), 0)::bigint FROM claims WHERE block_id = $1 \
           AND released_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
    )
    .bind(block)
    .bind(now)
    .fetch_one(&mut **tx)
    .await
}

pub(super) async fn insert_claim(
    tx: &mut PgTx,
    c: &ClaimRow,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "INSERT INTO claims ({CLAIM_COLUMNS}, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
    );
    bind_claim(sqlx::query(&sql), c, c.block_id, now)
        .execute(&mut **tx)
        .await
        .map(drop)
}

pub(super) async fn release_claim(
    tx: &mut PgTx,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<Uuid>, sqlx::Error> {
    // The subquery reads the row as it was before the update.
    let block: Option<Option<Uuid>> = sqlx::query_scalar(
        "UPDATE claims c SET released_at = $2, block_id = NULL \
         FROM (SELECT id, block_id FROM claims WHERE id = $1) old \
         WHERE c.id = old.id AND c.released_at IS NULL RETURNING old.block_id",
    )
    .bind(id)
    .bind(now)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(block.flatten())
}

pub(super) async fn place_claim(tx: &mut PgTx, c: &ClaimRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE claims SET block_id = $2, starts_at = $3, ends_at = $4, buffer_before_minutes = $5, \
           buffer_after_minutes = $6, full_refund_notice_hours = $7, late_refund_percent = $8, \
           released_at = NULL WHERE id = $1",
    )
    .bind(c.id)
    .bind(c.block_id)
    .bind(c.starts_at)
    .bind(c.ends_at)
    .bind(c.buffer_before_minutes)
    .bind(c.buffer_after_minutes)
    .bind(c.full_refund_notice_hours)
    .bind(c.late_refund_percent)
    .execute(&mut **tx)
    .await
    .map(drop)
}

pub(super) async fn resources_with_lapsed(
    tx: &mut PgTx,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT resource_id FROM claims WHERE released_at IS NULL AND expires_at <= $1 LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
}

pub(super) async fn overlaps(
    tx: &mut PgTx,
    now: DateTime<Utc>,
) -> Result<Vec<String>, sqlx::Error> {
    let live = |t: &str| {
        format!("{t}.released_at IS NULL AND ({t}.expires_at IS NULL OR {t}.expires_at > $1)")
    };
    let mut found = Vec::new();
    let pairs: Vec<(Uuid, Uuid, Uuid)> = sqlx::query_as(checks::OVERLAPPING_CLAIMS)
        .bind(now)
        .fetch_all(&mut **tx)
        .await?;
    found.extend(checks::describe_claim_pairs(pairs));
    let over: Vec<(Uuid, i64, i64)> = sqlx::query_as(&format!(
        "SELECT bl.id, bl.capacity, SUM(c.seats)::bigint FROM blocks bl JOIN claims c ON c.block_id = bl.id \
         WHERE {} GROUP BY bl.id, bl.capacity HAVING SUM(c.seats) > bl.capacity",
        live("c")
    ))
    .bind(now)
    .fetch_all(&mut **tx)
    .await?;
    found.extend(
        over.into_iter().map(|(b, cap, seats)| {
            format!("block {b}: {seats} live seats exceed its capacity {cap}")
        }),
    );
    let misplaced: Vec<(Uuid,)> = sqlx::query_as(&format!(
        "SELECT c.id FROM claims c LEFT JOIN blocks bl ON bl.id = c.block_id \
         WHERE {} AND (bl.id IS NULL OR bl.resource_id <> c.resource_id \
           OR bl.appointment_type_id <> c.appointment_type_id \
           OR bl.starts_at <> c.starts_at OR bl.ends_at <> c.ends_at)",
        live("c")
    ))
    .bind(now)
    .fetch_all(&mut **tx)
    .await?;
    found.extend(
        misplaced
            .into_iter()
            .map(|(c,)| format!("live claim {c} does not match its block")),
    );
    let blocks: Vec<(Uuid, Uuid)> = sqlx::query_as(checks::OVERLAPPING_BLOCKS)
        .fetch_all(&mut **tx)
        .await?;
    found.extend(checks::describe_block_pairs(blocks));
    Ok(found)
}

pub(super) async fn busy_times(
    tx: &mut PgTx,
    resource: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<BusyInterval>, sqlx::Error> {
    let rows: Vec<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT starts_at, ends_at FROM busy_times WHERE resource_id = $1 AND starts_at < $3 AND ends_at > $2",
    )
    .bind(resource)
    .bind(from)
    .bind(to)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(start, end)| BusyInterval { start, end })
        .collect())
}

pub(super) async fn replace_busy(
    tx: &mut PgTx,
    calendar: Uuid,
    resource: Uuid,
    busy: &[BusyInterval],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM busy_times WHERE calendar_id = $1")
        .bind(calendar)
        .execute(&mut **tx)
        .await?;
    let starts: Vec<DateTime<Utc>> = busy.iter().map(|b| b.start).collect();
    let ends: Vec<DateTime<Utc>> = busy.iter().map(|b| b.end).collect();
    sqlx::query(
        "INSERT INTO busy_times (calendar_id, resource_id, starts_at, ends_at) \
         SELECT $1, $2, s, e FROM UNNEST($3::timestamptz[], $4::timestamptz[]) AS t(s, e)",
    )
    .bind(calendar)
    .bind(resource)
    .bind(&starts)
    .bind(&ends)
    .execute(&mut **tx)
    .await
    .map(drop)
}

/// The claim (and its new block, or the block's capacity change) in one
/// statement. Constraint checks run at its end, so the claim's foreign key
/// sees the block inserted beside it.
pub(super) async fn insert_claim_into(
    tx: &mut PgTx,
    c: &ClaimRow,
    plan: BlockPlan,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let insert = format!(
        "INSERT INTO claims ({CLAIM_COLUMNS}, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
    );
    let (sql, capacity) = match plan {
        BlockPlan::New { capacity, .. } => (
            format!(
                "WITH b AS (INSERT INTO blocks (id, resource_id, appointment_type_id, starts_at, \
                 ends_at, capacity) VALUES ($2, $3, $4, $5, $6, $18)) {insert}"
            ),
            Some(capacity),
        ),
        BlockPlan::Existing { block, capacity } if block.capacity != capacity => (
            format!(
                "WITH b AS (UPDATE blocks SET capacity = $18 WHERE id = $2 AND capacity <> $18) \
                 {insert}"
            ),
            Some(capacity),
        ),
        BlockPlan::Existing { .. } => (insert, None),
    };
    // The claim's block is the plan's (the caller builds it so).
    let query = bind_claim(sqlx::query(&sql), c, Some(plan.block_id()), now);
    match capacity {
        Some(capacity) => query.bind(capacity).execute(&mut **tx).await.map(drop),
        None => query.execute(&mut **tx).await.map(drop),
    }
}

/// Binds `$1`–`$17`: the claim's columns in [`CLAIM_COLUMNS`] order (with
/// `block` for its block), then `created_at`.
fn bind_claim<'q>(
    query: PgQuery<'q>,
    c: &'q ClaimRow,
    block: Option<Uuid>,
    now: DateTime<Utc>,
) -> PgQuery<'q> {
    query
        .bind(c.id)
        .bind(block)
        .bind(c.resource_id)
        .bind(c.appointment_type_id)
        .bind(c.starts_at)
        .bind(c.ends_at)
        .bind(c.seats)
        .bind(c.buffer_before_minutes)
        .bind(c.buffer_after_minutes)
        .bind(c.price_minor)
        .bind(&c.currency)
        .bind(&c.owner)
        .bind(c.expires_at)
        .bind(c.released_at)
        .bind(c.full_refund_notice_hours)
        .bind(c.late_refund_percent)
        .bind(now)
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;
