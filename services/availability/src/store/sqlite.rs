//! SQLite, the embedded store of `berth dev`.
//!
//! Correctness comes from serialising writes: every ledger transaction runs
//! on the single connection of the writer pool and starts with
//! `BEGIN IMMEDIATE`, which takes the database's write lock up front (other
//! processes wait on `busy_timeout`), and the ledger additionally queues
//! callers per resource on an in-process mutex. Ledger times are integer
//! microseconds so they compare numerically. Triggers refuse overlapping
//! blocks, the same final guard as PostgreSQL's exclusion constraint.

use std::str::FromStr;
use std::time::Duration;

use berth_slots::BusyInterval;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};
use uuid::Uuid;

use super::{Block, CLAIM_COLUMNS, ClaimRow, RowLock, checks};
use crate::error::AvailabilityError;

type LiteTx = Transaction<'static, Sqlite>;

/// One writer connection; readers share a separate pool for file databases.
/// An in-memory database exists once per connection, so there both are the
/// same single-connection pool, kept open for the life of the process.
#[derive(Clone)]
pub(crate) struct SqlitePools {
    pub writer: SqlitePool,
    pub reader: SqlitePool,
}

pub(super) async fn connect(url: &str) -> Result<SqlitePools, AvailabilityError> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| AvailabilityError::Config(format!("database URL: {e}")))?
        .create_if_missing(true)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let single = |options: SqliteConnectOptions| {
        SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
    };
    let pools = if in_memory {
        let pool = single(options).await?;
        SqlitePools {
            writer: pool.clone(),
            reader: pool,
        }
    } else {
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal);
        let writer = single(options.clone()).await?;
        // Readers never write; WAL lets them run beside the writer.
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        SqlitePools { writer, reader }
    };
    sqlx::migrate!("./migrations/sqlite")
        .run(&pools.writer)
        .await?;
    Ok(pools)
}

fn us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_us(v: i64) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::from_timestamp_micros(v)
        .ok_or_else(|| sqlx::Error::Decode(format!("timestamp {v} out of range").into()))
}

/// A claim row as SQLite stores it (times as microseconds).
#[derive(sqlx::FromRow)]
struct StoredClaim {
    id: Uuid,
    block_id: Option<Uuid>,
    resource_id: Uuid,
    appointment_type_id: Uuid,
    starts_at: i64,
    ends_at: i64,
    seats: i64,
    buffer_before_minutes: i64,
    buffer_after_minutes: i64,
    price_minor: i64,
    currency: String,
    owner: String,
    expires_at: Option<i64>,
    released_at: Option<i64>,
    full_refund_notice_hours: Option<i64>,
    late_refund_percent: Option<i64>,
}

impl StoredClaim {
    fn into_row(self) -> Result<ClaimRow, sqlx::Error> {
        Ok(ClaimRow {
            id: self.id,
            block_id: self.block_id,
            resource_id: self.resource_id,
            appointment_type_id: self.appointment_type_id,
            starts_at: from_us(self.starts_at)?,
            ends_at: from_us(self.ends_at)?,
            seats: self.seats,
            buffer_before_minutes: self.buffer_before_minutes,
            buffer_after_minutes: self.buffer_after_minutes,
            price_minor: self.price_minor,
            currency: self.currency,
            owner: self.owner,
            expires_at: self.expires_at.map(from_us).transpose()?,
            released_at: self.released_at.map(from_us).transpose()?,
            full_refund_notice_hours: self.full_refund_notice_hours,
            late_refund_percent: self.late_refund_percent,
        })
    }
}

fn rows(stored: Vec<StoredClaim>) -> Result<Vec<ClaimRow>, sqlx::Error> {
    stored.into_iter().map(StoredClaim::into_row).collect()
}

pub(super) async fn lock_resource(
    tx: &mut LiteTx,
    id: Uuid,
    token: Option<i64>,
) -> Result<RowLock, sqlx::Error> {
    // BEGIN IMMEDIATE already holds the write lock; only the fence is checked.
    if let Some(token) = token {
        let fenced = sqlx::query("UPDATE resources SET fence = $2 WHERE id = $1 AND fence < $2")
            .bind(id)
            .bind(token)
            .execute(&mut **tx)
            .await?;
        if fenced.rows_affected() == 1 {
            return Ok(RowLock::Locked);
        }
    }
    let fence: Option<i64> = sqlx::query_scalar("SELECT fence FROM resources WHERE id = $1")
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
    tx: &mut LiteTx,
    resource: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let lapsed = sqlx::query(
        "UPDATE claims SET released_at = $4, block_id = NULL \
         WHERE resource_id = $1 AND released_at IS NULL AND expires_at <= $4 \
           AND starts_at < $3 AND ends_at > $2",
    )
    .bind(resource)
    .bind(us(from))
    .bind(us(to))
    .bind(us(now))
    .execute(&mut **tx)
    .await?
    .rows_affected();
    sqlx::query(
        "DELETE FROM blocks WHERE resource_id = $1 AND starts_at < $3 AND ends_at > $2 \
           AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.block_id = blocks.id AND c.released_at IS NULL)",
    )
    .bind(resource)
    .bind(us(from))
    .bind(us(to))
    .execute(&mut **tx)
    .await?;
    Ok(lapsed)
}

pub(super) async fn live_claims(
    tx: &mut LiteTx,
    resource: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<ClaimRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {CLAIM_COLUMNS} FROM claims WHERE resource_id = $1 AND released_at IS NULL \
           AND (expires_at IS NULL OR expires_at > $4) AND starts_at < $3 AND ends_at > $2 \
         ORDER BY starts_at"
    );
    rows(
        sqlx::query_as(&sql)
            .bind(resource)
            .bind(us(from))
            .bind(us(to))
            .bind(us(now))
            .fetch_all(&mut **tx)
            .await?,
    )
}

pub(super) async fn has_live_claims(
    tx: &mut LiteTx,
    resource: Uuid,
    appointment_type: Option<Uuid>,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM claims WHERE resource_id = $1 \
           AND ($2 IS NULL OR appointment_type_id = $2) \
           AND released_at IS NULL AND (expires_at IS NULL OR expires_at > $3))",
    )
    .bind(resource)
    .bind(appointment_type)
    .bind(us(now))
    .fetch_one(&mut **tx)
    .await
}

pub(super) async fn get_claim(tx: &mut LiteTx, id: Uuid) -> Result<Option<ClaimRow>, sqlx::Error> {
    let sql = format!("SELECT {CLAIM_COLUMNS} FROM claims WHERE id = $1");
    let found: Option<StoredClaim> = sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    found.map(StoredClaim::into_row).transpose()
}

pub(super) async fn find_block(
    tx: &mut LiteTx,
    appointment_type: Uuid,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Option<Block>, sqlx::Error> {
    let row: Option<(Uuid, i64)> = sqlx::query_as(
        "SELECT id, capacity FROM blocks WHERE appointment_type_id = $1 AND starts_at = $2 AND ends_at = $3",
    )
    .bind(appointment_type)
    .bind(us(start))
    .bind(us(end))
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(|(id, capacity)| Block { id, capacity }))
}

pub(super) async fn insert_block(
    tx: &mut LiteTx,
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
    .bind(us(start))
    .bind(us(end))
    .bind(capacity)
    .execute(&mut **tx)
    .await
    .map(drop)
}

pub(super) async fn block_seats(
    tx: &mut LiteTx,
    block: Uuid,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COALESCE(SUM(seats), 0) FROM claims WHERE block_id = $1 \
           AND released_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
    )
    .bind(block)
    .bind(us(now))
    .fetch_one(&mut **tx)
    .await
}

pub(super) async fn insert_claim(
    tx: &mut LiteTx,
    c: &ClaimRow,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO claims ({CLAIM_COLUMNS}, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
    ))
    .bind(c.id)
    .bind(c.block_id)
    .bind(c.resource_id)
    .bind(c.appointment_type_id)
    .bind(us(c.starts_at))
    .bind(us(c.ends_at))
    .bind(c.seats)
    .bind(c.buffer_before_minutes)
    .bind(c.buffer_after_minutes)
    .bind(c.price_minor)
    .bind(&c.currency)
    .bind(&c.owner)
    .bind(c.expires_at.map(us))
    .bind(c.released_at.map(us))
    .bind(c.full_refund_notice_hours)
    .bind(c.late_refund_percent)
    .bind(us(now))
    .execute(&mut **tx)
    .await
    .map(drop)
}

pub(super) async fn release_claim(
    tx: &mut LiteTx,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<Uuid>, sqlx::Error> {
    let block: Option<Option<Uuid>> =
        sqlx::query_scalar("SELECT block_id FROM claims WHERE id = $1 AND released_at IS NULL")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
    if block.is_some() {
        sqlx::query("UPDATE claims SET released_at = $2, block_id = NULL WHERE id = $1")
            .bind(id)
            .bind(us(now))
            .execute(&mut **tx)
            .await?;
    }
    Ok(block.flatten())
}

pub(super) async fn place_claim(tx: &mut LiteTx, c: &ClaimRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE claims SET block_id = $2, starts_at = $3, ends_at = $4, buffer_before_minutes = $5, \
           buffer_after_minutes = $6, full_refund_notice_hours = $7, late_refund_percent = $8, \
           released_at = NULL WHERE id = $1",
    )
    .bind(c.id)
    .bind(c.block_id)
    .bind(us(c.starts_at))
    .bind(us(c.ends_at))
    .bind(c.buffer_before_minutes)
    .bind(c.buffer_after_minutes)
    .bind(c.full_refund_notice_hours)
    .bind(c.late_refund_percent)
    .execute(&mut **tx)
    .await
    .map(drop)
}

pub(super) async fn resources_with_lapsed(
    tx: &mut LiteTx,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT resource_id FROM claims WHERE released_at IS NULL AND expires_at <= $1 LIMIT $2",
    )
    .bind(us(now))
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
}

pub(super) async fn overlaps(
    tx: &mut LiteTx,
    now: DateTime<Utc>,
) -> Result<Vec<String>, sqlx::Error> {
    let live = |t: &str| {
        format!("{t}.released_at IS NULL AND ({t}.expires_at IS NULL OR {t}.expires_at > $1)")
    };
    let now = us(now);
    let mut found = Vec::new();
    let pairs: Vec<(Uuid, Uuid, Uuid)> = sqlx::query_as(checks::OVERLAPPING_CLAIMS)
        .bind(now)
        .fetch_all(&mut **tx)
        .await?;
    found.extend(checks::describe_claim_pairs(pairs));
    let over: Vec<(Uuid, i64, i64)> = sqlx::query_as(&format!(
        "SELECT bl.id, bl.capacity, SUM(c.seats) FROM blocks bl JOIN claims c ON c.block_id = bl.id \
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
    tx: &mut LiteTx,
    resource: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<BusyInterval>, sqlx::Error> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT starts_at, ends_at FROM busy_times WHERE resource_id = $1 AND starts_at < $3 AND ends_at > $2",
    )
    .bind(resource)
    .bind(us(from))
    .bind(us(to))
    .fetch_all(&mut **tx)
    .await?;
    rows.into_iter()
        .map(|(start, end)| {
            Ok(BusyInterval {
                start: from_us(start)?,
                end: from_us(end)?,
            })
        })
        .collect()
}

pub(super) async fn replace_busy(
    tx: &mut LiteTx,
    calendar: Uuid,
    resource: Uuid,
    busy: &[BusyInterval],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM busy_times WHERE calendar_id = $1")
        .bind(calendar)
        .execute(&mut **tx)
        .await?;
    for b in busy {
        sqlx::query("INSERT INTO busy_times (calendar_id, resource_id, starts_at, ends_at) VALUES ($1, $2, $3, $4)")
            .bind(calendar)
            .bind(resource)
            .bind(us(b.start))
            .bind(us(b.end))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}
