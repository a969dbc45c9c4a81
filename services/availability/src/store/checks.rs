//! The ledger checker's pair queries, the same SQL on both dialects (times
//! compared as columns, so ranges and integer microseconds both work).
//!
//! A naive self-join compares every pair of rows on a resource, which took
//! seconds for 20,000 claims. Here one ordered pass per resource keeps the
//! running latest end; only rows starting before it are suspects, and only
//! suspects are paired, so a sound ledger costs a sort, not n².

use uuid::Uuid;

/// `(resource, claim, claim)`: live claims (`$1` = now) that overlap in
/// time without sharing a block. Each pair may come back in both orders.
pub(super) const OVERLAPPING_CLAIMS: &str = "\
WITH live AS (
    SELECT id, resource_id, block_id, starts_at, ends_at FROM claims
    WHERE released_at IS NULL AND (expires_at IS NULL OR expires_at > $1)
), slots AS (
    SELECT resource_id, block_id, MIN(starts_at) AS starts_at, MAX(ends_at) AS ends_at
    FROM live GROUP BY resource_id, block_id
), suspects AS (
    SELECT resource_id, block_id FROM (
        SELECT resource_id, block_id, starts_at, MAX(ends_at) OVER (
            PARTITION BY resource_id ORDER BY starts_at, block_id
            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS reach
        FROM slots) ordered
    WHERE starts_at < reach
)
SELECT a.resource_id, a.id, b.id
FROM suspects s
JOIN live a ON a.resource_id = s.resource_id AND a.block_id = s.block_id
JOIN live b ON b.resource_id = a.resource_id AND b.block_id <> a.block_id
    AND b.starts_at < a.ends_at AND a.starts_at < b.ends_at";

/// `(block, block)`: blocks on one resource that overlap in time. Each
/// pair may come back in both orders.
pub(super) const OVERLAPPING_BLOCKS: &str = "\
SELECT a.id, b.id
FROM (
    SELECT id, resource_id, starts_at, ends_at, MAX(ends_at) OVER (
        PARTITION BY resource_id ORDER BY starts_at, id
        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS reach
    FROM blocks) a
JOIN blocks b ON b.resource_id = a.resource_id AND b.id <> a.id
    AND b.starts_at < a.ends_at AND a.starts_at < b.ends_at
WHERE a.starts_at < a.reach";

/// Describes each overlapping claim pair once.
pub(super) fn describe_claim_pairs(rows: Vec<(Uuid, Uuid, Uuid)>) -> Vec<String> {
    let mut pairs: Vec<(Uuid, Uuid, Uuid)> = rows
        .into_iter()
        .map(|(r, a, b)| (r, a.min(b), a.max(b)))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    pairs
        .into_iter()
        .map(|(r, a, b)| {
            format!("resource {r}: live claims {a} and {b} overlap outside one shared slot")
        })
        .collect()
}

/// Describes each overlapping block pair once.
pub(super) fn describe_block_pairs(rows: Vec<(Uuid, Uuid)>) -> Vec<String> {
    let mut pairs: Vec<(Uuid, Uuid)> = rows
        .into_iter()
        .map(|(a, b)| (a.min(b), a.max(b)))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    pairs
        .into_iter()
        .map(|(a, b)| format!("blocks {a} and {b} overlap"))
        .collect()
}
