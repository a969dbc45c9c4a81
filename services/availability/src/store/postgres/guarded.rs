//! The group-commit write: claims decided on snapshots, committed only
//! where the snapshot still holds.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::super::{CLAIM_COLUMNS, ClaimRow, GuardedClaims};

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
pub(in crate::store) async fn claims_if_unchanged(
    conn: &mut PgConnection,
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
                 $25::timestamptz[], $29::bigint[], $30::bigint[]) AS x({CLAIM_COLUMNS}) \
               WHERE x.resource_id IN (SELECT id FROM bump)) \
             SELECT id FROM ok"
        )
    });
    let c = &write.claims;
    let column = |f: fn(&ClaimRow) -> i64| c.iter().map(f).collect::<Vec<i64>>();
    let optional = |f: fn(&ClaimRow) -> Option<i64>| c.iter().map(f).collect::<Vec<_>>();
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
        .bind(optional(|c| c.full_refund_notice_hours))
        .bind(optional(|c| c.late_refund_percent))
        .fetch_all(conn)
        .await
}
