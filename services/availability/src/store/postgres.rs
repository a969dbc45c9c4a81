//! PostgreSQL: schema `availability`, timestamptz, and the `blocks`
//! exclusion constraint (`btree_gist`, `tstzrange`) as the final guard
//! against overlapping bookings. Per-resource serialisation is a row lock
//! (`SELECT … FOR UPDATE` on the resource) taken first in every ledger
//! transaction.

use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use berth_slots::{BusyInterval, DateOverride, MAX_DURATION_MINUTES};
use chrono::{DateTime, TimeDelta, Utc};
use sqlx::postgres::{PgConnectOptions, PgRow};
use sqlx::types::Json;
use sqlx::{PgExecutor, PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use super::{
    Block, BlockPlan, CLAIM_COLUMNS, ClaimRow, GuardedClaims, ResourceRow, RowLock, SlotCounters,
    SlotVersions, SlotView, TypeRow, WindowView, checks,
};
use crate::error::AvailabilityError;

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
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
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
           buffer_after_minutes = $6, released_at = NULL WHERE id = $1",
    )
    .bind(c.id)
    .bind(c.block_id)
    .bind(c.starts_at)
    .bind(c.ends_at)
    .bind(c.buffer_before_minutes)
    .bind(c.buffer_after_minutes)
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

/// A `CROSS JOIN LATERAL … lc` with the live claims of resource `$rid`
/// overlapping `$span` as parallel arrays (`lc.c_id`, `lc.c_block`, …) and
/// whether lapsed holds overlap it (`lc.lapsed`); `$now` is the time that
/// decides, `$longest` the longest claim in minutes, so the scan is a range
/// of the `(resource_id, starts_at)` index. Decoded by [`live_claims_from_row`].
macro_rules! claim_arrays {
    ($rid:literal, $span:literal, $now:literal, $longest:literal) => {
        concat!(
            "CROSS JOIN LATERAL (SELECT array_agg(c.id) FILTER (WHERE live) AS c_id, \
               array_agg(c.block_id) FILTER (WHERE live) AS c_block, \
               array_agg(c.appointment_type_id) FILTER (WHERE live) AS c_type, \
               array_agg(c.starts_at) FILTER (WHERE live) AS c_start, \
               array_agg(c.ends_at) FILTER (WHERE live) AS c_end, \
               array_agg(c.seats) FILTER (WHERE live) AS c_seats, \
               array_agg(c.buffer_before_minutes) FILTER (WHERE live) AS c_before, \
               array_agg(c.buffer_after_minutes) FILTER (WHERE live) AS c_after, \
               array_agg(c.price_minor) FILTER (WHERE live) AS c_price, \
               array_agg(c.currency) FILTER (WHERE live) AS c_currency, \
               array_agg(c.owner) FILTER (WHERE live) AS c_owner, \
               array_agg(c.expires_at) FILTER (WHERE live) AS c_expires, \
               COALESCE(bool_or(NOT live), false) AS lapsed \
             FROM claims c \
             CROSS JOIN LATERAL (SELECT c.expires_at IS NULL OR c.expires_at > ",
            $now,
            " AS live) l \
             WHERE c.resource_id = ",
            $rid,
            " AND c.released_at IS NULL AND c.starts_at < upper(",
            $span,
            ") AND c.starts_at > lower(",
            $span,
            ") - make_interval(mins => ",
            $longest,
            ") AND c.period && ",
            $span,
            ") lc"
        )
    };
}

/// [`SlotView`]s for many slots in one statement: `$1`, `$2`, `$3` the
/// requests' resources, types and starts (parallel arrays), `$4` now, `$5`
/// reach in minutes, `$6` the longest claim in minutes (so the claims scan
/// is a range of the `(resource_id, starts_at)` index); each row carries its
/// request's 1-based position `i`. Live claims come back as parallel arrays
/// (binary, no text encoding).
/// The span and the slot's end come from the type's duration in the same
/// statement; overrides are read for the UTC dates of the span and one day
/// either side, which covers the span's local dates in every zone (with a
/// reach of two days: the local dates two days either side of the slot).
/// One statement is one snapshot, so views of the same resource agree (the
/// same counters and claims).
const SLOT_VIEWS: &str = concat!(
    "SELECT q.i, t.id, t.resource_id, t.name, t.duration_minutes, t.interval_minutes, \
           t.buffer_before_minutes, t.buffer_after_minutes, t.min_notice_minutes, \
           t.horizon_minutes, t.capacity, t.price_minor, t.currency, t.created_at, t.updated_at, \
           r.name AS r_name, r.time_zone AS r_time_zone, r.owner_id AS r_owner_id, \
           r.weekly AS r_weekly, r.created_at AS r_created_at, r.updated_at AS r_updated_at, \
           r.ledger_seq AS r_ledger_seq, r.catalog_seq AS r_catalog_seq, \
           lc.c_id, lc.c_block, lc.c_type, lc.c_start, lc.c_end, lc.c_seats, lc.c_before, \
           lc.c_after, lc.c_price, lc.c_currency, lc.c_owner, lc.c_expires, lc.lapsed, \
           (SELECT COALESCE(json_agg(json_build_object('start', starts_at, 'end', ends_at)), '[]'::json) \
              FROM busy_times WHERE resource_id = q.resource_id AND starts_at < upper(w.span) \
              AND ends_at > lower(w.span)) AS busy, \
           (SELECT COALESCE(json_agg(json_build_object('date', date, 'hours', hours) ORDER BY date), '[]'::json) \
              FROM date_overrides WHERE resource_id = q.resource_id \
              AND date >= (lower(w.span) AT TIME ZONE 'UTC')::date - 1 \
              AND date <= (upper(w.span) AT TIME ZONE 'UTC')::date + 1) AS overrides, \
           bl.id AS block_id, bl.capacity AS block_capacity \
         FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[]) WITH ORDINALITY \
           AS q(resource_id, type_id, start, i) \
         JOIN appointment_types t ON t.id = q.type_id AND t.resource_id = q.resource_id \
         JOIN resources r ON r.id = t.resource_id \
         CROSS JOIN LATERAL (SELECT q.start + make_interval(mins => t.duration_minutes::int) AS slot_end) e \
         CROSS JOIN LATERAL (SELECT e.slot_end, tstzrange(q.start - make_interval(mins => $5), \
           e.slot_end + make_interval(mins => $5), '[)') AS span) w ",
    claim_arrays!("q.resource_id", "w.span", "$4", "$6"),
    " LEFT JOIN blocks bl ON bl.resource_id = q.resource_id \
           AND bl.period && tstzrange(q.start, w.slot_end, '[)') \
           AND bl.appointment_type_id = t.id AND bl.starts_at = q.start AND bl.ends_at = w.slot_end"
);

/// Whether a resource exists, its slot counters and whether one of its
/// calendars is due: `$1` resource, `$2` now, `$3` how often uploads are
/// re-expanded ([`super::UPLOAD_REFRESH_SECS`]).
const SLOT_VERSIONS: &str = "SELECT r.ledger_seq, r.catalog_seq, \
       EXISTS (SELECT 1 FROM calendars cal WHERE cal.resource_id = r.id \
          AND (cal.fetched_at IS NULL OR cal.fetched_at + make_interval(secs => \
            CASE WHEN cal.url IS NULL THEN $3 ELSE cal.refresh_interval_secs END) <= $2)) \
          AS feeds_due \
     FROM resources r WHERE r.id = $1";

/// See [`SLOT_VERSIONS`].
pub(super) async fn slot_versions(
    pool: &PgPool,
    resource: Uuid,
) -> Result<Option<SlotVersions>, sqlx::Error> {
    let row = sqlx::query(SLOT_VERSIONS)
        .bind(resource)
        .bind(Utc::now())
        .bind(super::UPLOAD_REFRESH_SECS)
        .fetch_optional(pool)
        .await?;
    row.map(|row| {
        Ok(SlotVersions {
            counters: Some(SlotCounters {
                ledger: row.try_get("ledger_seq")?,
                catalog: row.try_get("catalog_seq")?,
            }),
            feeds_due: row.try_get("feeds_due")?,
        })
    })
    .transpose()
}

/// Everything `GET …/slots` computes on, in one statement: `$1` resource,
/// `$2` appointment type, `$3` from, `$4` to, `$5` the longest claim in
/// minutes, `$6` reach in minutes. No row: no such resource; a NULL type
/// id: no such type on this resource. Claims are those live at
/// `-infinity`, i.e. all unreleased ones. Overrides are read for the UTC
/// dates three days either side of the window (a superset of the local
/// dates two days either side in every zone).
const WINDOW_VIEW: &str = concat!(
    "SELECT r.name AS r_name, r.time_zone AS r_time_zone, r.owner_id AS r_owner_id, \
       r.weekly AS r_weekly, r.created_at AS r_created_at, r.updated_at AS r_updated_at, \
       r.ledger_seq AS r_ledger_seq, r.catalog_seq AS r_catalog_seq, \
       t.id, t.resource_id, t.name, t.duration_minutes, t.interval_minutes, \
       t.buffer_before_minutes, t.buffer_after_minutes, t.min_notice_minutes, \
       t.horizon_minutes, t.capacity, t.price_minor, t.currency, t.created_at, t.updated_at, \
       lc.c_id, lc.c_block, lc.c_type, lc.c_start, lc.c_end, lc.c_seats, lc.c_before, \
       lc.c_after, lc.c_price, lc.c_currency, lc.c_owner, lc.c_expires, \
       (SELECT COALESCE(json_agg(json_build_object('start', starts_at, 'end', ends_at)), '[]'::json) \
          FROM busy_times WHERE resource_id = r.id AND starts_at < upper(w.span) \
          AND ends_at > lower(w.span)) AS busy, \
       (SELECT COALESCE(json_agg(json_build_object('date', date, 'hours', hours) ORDER BY date), '[]'::json) \
          FROM date_overrides WHERE resource_id = r.id \
          AND date >= ($3 AT TIME ZONE 'UTC')::date - 3 \
          AND date <= ($4 AT TIME ZONE 'UTC')::date + 3) AS overrides \
     FROM resources r \
     LEFT JOIN appointment_types t ON t.id = $2 AND t.resource_id = r.id \
     CROSS JOIN LATERAL (SELECT tstzrange($3 - make_interval(mins => $6), \
       $4 + make_interval(mins => $6), '[)') AS span) w ",
    claim_arrays!("r.id", "w.span", "'-infinity'::timestamptz", "$5"),
    " WHERE r.id = $1"
);

/// See [`WINDOW_VIEW`].
pub(super) async fn window_view(
    pool: &PgPool,
    resource: Uuid,
    appointment_type: Uuid,
    window: (DateTime<Utc>, DateTime<Utc>),
    reach: TimeDelta,
) -> Result<Option<WindowView>, sqlx::Error> {
    let reach = i32::try_from(reach.num_minutes()).unwrap_or(i32::MAX);
    let Some(row) = sqlx::query(WINDOW_VIEW)
        .bind(resource)
        .bind(appointment_type)
        .bind(window.0)
        .bind(window.1)
        .bind(i32::try_from(MAX_DURATION_MINUTES).unwrap_or(i32::MAX))
        .bind(reach)
        .fetch_optional(pool)
        .await?
    else {
        return Ok(None);
    };
    let type_id: Option<Uuid> = row.try_get("id")?;
    let ty = match type_id {
        Some(_) => Some(<TypeRow as sqlx::FromRow<_>>::from_row(&row)?),
        None => None,
    };
    Ok(Some(WindowView {
        resource: resource_from_row(&row, resource)?,
        ty,
        claims: live_claims_from_row(&row, resource)?,
        busy: row.try_get::<Json<Vec<BusyInterval>>, _>("busy")?.0,
        overrides: row.try_get::<Json<Vec<DateOverride>>, _>("overrides")?.0,
        counters: Some(counters_from_row(&row)?),
    }))
}

/// `r_ledger_seq` and `r_catalog_seq` of a view row.
fn counters_from_row(row: &PgRow) -> Result<SlotCounters, sqlx::Error> {
    Ok(SlotCounters {
        ledger: row.try_get("r_ledger_seq")?,
        catalog: row.try_get("r_catalog_seq")?,
    })
}

/// The `r_*` columns of a view row.
fn resource_from_row(row: &PgRow, id: Uuid) -> Result<ResourceRow, sqlx::Error> {
    Ok(ResourceRow {
        id,
        name: row.try_get("r_name")?,
        time_zone: row.try_get("r_time_zone")?,
        owner_id: row.try_get("r_owner_id")?,
        weekly: row.try_get("r_weekly")?,
        created_at: row.try_get("r_created_at")?,
        updated_at: row.try_get("r_updated_at")?,
    })
}

/// The slot a claim names: resource, appointment type, start.
pub(crate) type SlotKey = (Uuid, Uuid, DateTime<Utc>);

/// One [`SlotView`] per slot in `slots`, in order; `None` where the type
/// does not exist or belongs to another resource.
pub(super) async fn slot_views<'e>(
    executor: impl PgExecutor<'e>,
    slots: &[SlotKey],
    reach: TimeDelta,
    now: DateTime<Utc>,
) -> Result<Vec<Option<SlotView>>, sqlx::Error> {
    let reach = i32::try_from(reach.num_minutes()).unwrap_or(i32::MAX);
    let resources: Vec<Uuid> = slots.iter().map(|s| s.0).collect();
    let types: Vec<Uuid> = slots.iter().map(|s| s.1).collect();
    let starts: Vec<DateTime<Utc>> = slots.iter().map(|s| s.2).collect();
    let rows = sqlx::query(SLOT_VIEWS)
        .bind(resources)
        .bind(types)
        .bind(starts)
        .bind(now)
        .bind(reach)
        .bind(i32::try_from(MAX_DURATION_MINUTES).unwrap_or(i32::MAX))
        .fetch_all(executor)
        .await?;
    let mut views: Vec<Option<SlotView>> = slots.iter().map(|_| None).collect();
    for row in &rows {
        let i: i64 = row.try_get("i")?;
        let slot = usize::try_from(i - 1)
            .ok()
            .and_then(|i| views.get_mut(i))
            .ok_or_else(|| sqlx::Error::Protocol(format!("slot view for position {i}")))?;
        *slot = Some(slot_view_from_row(row)?);
    }
    Ok(views)
}

/// The [`SlotView`] of one slot (a batch of one).
pub(super) async fn slot_view<'e>(
    executor: impl PgExecutor<'e>,
    resource: Uuid,
    appointment_type: Uuid,
    start: DateTime<Utc>,
    reach: TimeDelta,
    now: DateTime<Utc>,
) -> Result<Option<SlotView>, sqlx::Error> {
    let mut views =
        slot_views(executor, &[(resource, appointment_type, start)], reach, now).await?;
    Ok(views.pop().flatten())
}

/// The live claims of a slot view row, from its parallel arrays.
fn live_claims_from_row(row: &PgRow, resource: Uuid) -> Result<Vec<ClaimRow>, sqlx::Error> {
    fn column<T>(row: &PgRow, name: &str) -> Result<Vec<T>, sqlx::Error>
    where
        Vec<T>: for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
    {
        Ok(row.try_get::<Option<Vec<T>>, _>(name)?.unwrap_or_default())
    }
    let ids: Vec<Uuid> = column(row, "c_id")?;
    let blocks: Vec<Option<Uuid>> = column(row, "c_block")?;
    let types: Vec<Uuid> = column(row, "c_type")?;
    let starts: Vec<DateTime<Utc>> = column(row, "c_start")?;
    let ends: Vec<DateTime<Utc>> = column(row, "c_end")?;
    let seats: Vec<i64> = column(row, "c_seats")?;
    let before: Vec<i64> = column(row, "c_before")?;
    let after: Vec<i64> = column(row, "c_after")?;
    let prices: Vec<i64> = column(row, "c_price")?;
    let currencies: Vec<String> = column(row, "c_currency")?;
    let owners: Vec<String> = column(row, "c_owner")?;
    let expires: Vec<Option<DateTime<Utc>>> = column(row, "c_expires")?;
    let n = ids.len();
    let lengths = [
        blocks.len(),
        types.len(),
        starts.len(),
        ends.len(),
        seats.len(),
        before.len(),
        after.len(),
        prices.len(),
        currencies.len(),
        owners.len(),
        expires.len(),
    ];
    if lengths.iter().any(|&len| len != n) {
        return Err(sqlx::Error::Protocol(
            "slot view claim arrays differ in length".into(),
        ));
    }
    let mut claims: Vec<ClaimRow> = (0..n)
        .map(|i| ClaimRow {
            id: ids[i],
            block_id: blocks[i],
            resource_id: resource,
            appointment_type_id: types[i],
            starts_at: starts[i],
            ends_at: ends[i],
            seats: seats[i],
            buffer_before_minutes: before[i],
            buffer_after_minutes: after[i],
            price_minor: prices[i],
            currency: currencies[i].clone(),
            owner: owners[i].clone(),
            expires_at: expires[i],
            released_at: None,
        })
        .collect();
    claims.sort_by_key(|c| (c.starts_at, c.id));
    Ok(claims)
}

fn slot_view_from_row(row: &PgRow) -> Result<SlotView, sqlx::Error> {
    let ty = <TypeRow as sqlx::FromRow<_>>::from_row(row)?;
    let block_id: Option<Uuid> = row.try_get("block_id")?;
    let block_capacity: Option<i64> = row.try_get("block_capacity")?;
    Ok(SlotView {
        resource: resource_from_row(row, ty.resource_id)?,
        claims: live_claims_from_row(row, ty.resource_id)?,
        lapsed: row.try_get("lapsed")?,
        counters: counters_from_row(row)?,
        busy: row.try_get::<Json<Vec<BusyInterval>>, _>("busy")?.0,
        overrides: row.try_get::<Json<Vec<DateOverride>>, _>("overrides")?.0,
        block: block_id
            .zip(block_capacity)
            .map(|(id, capacity)| Block { id, capacity }),
        ty,
    })
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
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
    );
    let (sql, capacity) = match plan {
        BlockPlan::New { capacity, .. } => (
            format!(
                "WITH b AS (INSERT INTO blocks (id, resource_id, appointment_type_id, starts_at, \
                 ends_at, capacity) VALUES ($2, $3, $4, $5, $6, $16)) {insert}"
            ),
            Some(capacity),
        ),
        BlockPlan::Existing { block, capacity } if block.capacity != capacity => (
            format!(
                "WITH b AS (UPDATE blocks SET capacity = $16 WHERE id = $2 AND capacity <> $16) \
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

/// Claims decided on snapshots, committed in one autocommitted statement
/// for every resource whose counters still have their snapshot's values.
///
/// The statement locks the resources' rows in id order (so two such
/// statements never deadlock), keeps those whose counters are unchanged,
/// raises `ledger_seq` of those it writes to, and writes their new blocks,
/// block capacity changes and claims; rows of the other resources are left
/// alone. Every transaction
/// that changes a resource's claims or blocks raises `ledger_seq` under the
/// same row lock before it commits, so an unchanged counter, read here under
/// the lock, means the claims and blocks are exactly those of the snapshot;
/// an unchanged `catalog_seq` means the same for hours, types, overrides and
/// busy times. Returns the resources whose counters held (written where the
/// guard says it writes); a constraint violation fails the whole statement
/// (nothing is written).
pub(super) async fn claims_if_unchanged(
    pool: &PgPool,
    write: &GuardedClaims,
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH want AS (SELECT * FROM unnest($1::uuid[], $2::bigint[], $27::bigint[], \
               $28::bool[]) AS w(id, seq, catalog, writes)), \
             locked AS (SELECT r.id, r.ledger_seq, r.catalog_seq FROM resources r \
               WHERE r.id = ANY($1) ORDER BY r.id FOR UPDATE), \
             ok AS (SELECT l.id, w.writes FROM locked l JOIN want w ON w.id = l.id \
               AND w.seq = l.ledger_seq AND w.catalog = l.catalog_seq), \
             bump AS (UPDATE resources r SET ledger_seq = r.ledger_seq + 1 FROM ok \
               WHERE r.id = ok.id AND ok.writes RETURNING r.id), \
             new_blocks AS (INSERT INTO blocks (id, resource_id, appointment_type_id, starts_at, \
               ends_at, capacity) \
               SELECT x.* FROM unnest($3::uuid[], $4::uuid[], $5::uuid[], $6::timestamptz[], \
                 $7::timestamptz[], $8::bigint[]) AS x(id, resource_id, appointment_type_id, \
                 starts_at, ends_at, capacity) \
               WHERE x.resource_id IN (SELECT id FROM bump)), \
             resized AS (UPDATE blocks b SET capacity = x.capacity \
               FROM unnest($9::uuid[], $10::uuid[], $11::bigint[]) AS x(id, resource_id, capacity) \
               WHERE b.id = x.id AND b.capacity <> x.capacity \
                 AND x.resource_id IN (SELECT id FROM bump)), \
             new_claims AS (INSERT INTO claims ({CLAIM_COLUMNS}, created_at) \
               SELECT x.*, $26 FROM unnest($12::uuid[], $13::uuid[], $14::uuid[], $15::uuid[], \
                 $16::timestamptz[], $17::timestamptz[], $18::bigint[], $19::bigint[], \
                 $20::bigint[], $21::bigint[], $22::text[], $23::text[], $24::timestamptz[], \
                 $25::timestamptz[]) AS x({CLAIM_COLUMNS}) \
               WHERE x.resource_id IN (SELECT id FROM bump)) \
             SELECT id FROM ok"
        )
    });
    let c = &write.claims;
    let column = |f: fn(&ClaimRow) -> i64| c.iter().map(f).collect::<Vec<i64>>();
    let guards = &write.resources;
    sqlx::query_scalar(&SQL)
        .bind(guards.iter().map(|g| g.resource).collect::<Vec<Uuid>>())
        .bind(
            guards
                .iter()
                .map(|g| g.counters.ledger)
                .collect::<Vec<i64>>(),
        )
        .bind(write.new_blocks.iter().map(|b| b.id).collect::<Vec<Uuid>>())
        .bind(
            write
                .new_blocks
                .iter()
                .map(|b| b.resource_id)
                .collect::<Vec<Uuid>>(),
        )
        .bind(
            write
                .new_blocks
                .iter()
                .map(|b| b.appointment_type_id)
                .collect::<Vec<Uuid>>(),
        )
        .bind(
            write
                .new_blocks
                .iter()
                .map(|b| b.starts_at)
                .collect::<Vec<DateTime<Utc>>>(),
        )
        .bind(
            write
                .new_blocks
                .iter()
                .map(|b| b.ends_at)
                .collect::<Vec<DateTime<Utc>>>(),
        )
        .bind(
            write
                .new_blocks
                .iter()
                .map(|b| b.capacity)
                .collect::<Vec<i64>>(),
        )
        .bind(write.resized.iter().map(|b| b.0).collect::<Vec<Uuid>>())
        .bind(write.resized.iter().map(|b| b.1).collect::<Vec<Uuid>>())
        .bind(write.resized.iter().map(|b| b.2).collect::<Vec<i64>>())
        .bind(c.iter().map(|c| c.id).collect::<Vec<Uuid>>())
        .bind(c.iter().map(|c| c.block_id).collect::<Vec<Option<Uuid>>>())
        .bind(c.iter().map(|c| c.resource_id).collect::<Vec<Uuid>>())
        .bind(
            c.iter()
                .map(|c| c.appointment_type_id)
                .collect::<Vec<Uuid>>(),
        )
        .bind(
            c.iter()
                .map(|c| c.starts_at)
                .collect::<Vec<DateTime<Utc>>>(),
        )
        .bind(c.iter().map(|c| c.ends_at).collect::<Vec<DateTime<Utc>>>())
        .bind(column(|c| c.seats))
        .bind(column(|c| c.buffer_before_minutes))
        .bind(column(|c| c.buffer_after_minutes))
        .bind(column(|c| c.price_minor))
        .bind(
            c.iter()
                .map(|c| c.currency.clone())
                .collect::<Vec<String>>(),
        )
        .bind(c.iter().map(|c| c.owner.clone()).collect::<Vec<String>>())
        .bind(
            c.iter()
                .map(|c| c.expires_at)
                .collect::<Vec<Option<DateTime<Utc>>>>(),
        )
        .bind(
            c.iter()
                .map(|c| c.released_at)
                .collect::<Vec<Option<DateTime<Utc>>>>(),
        )
        .bind(now)
        .bind(
            guards
                .iter()
                .map(|g| g.counters.catalog)
                .collect::<Vec<i64>>(),
        )
        .bind(guards.iter().map(|g| g.writes).collect::<Vec<bool>>())
        .fetch_all(pool)
        .await
}

/// Binds `$1`–`$15`: the claim's columns in [`CLAIM_COLUMNS`] order (with
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
        .bind(now)
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;
