//! The per-replica caches of slot inputs and known ledgers: bounded by
//! entries and by the rows they hold, so memory stays within a few tens of
//! MB however busy the resources are.

use std::hash::Hash;

pub(crate) const ENTRIES: usize = 4_096;
/// One per entry plus one per claim and busy time held.
const WEIGHT: u64 = 250_000;

/// Rows (claims, busy times) a cached value holds.
pub(crate) trait Rows {
    fn rows(&self) -> usize;
}

#[derive(Clone)]
pub(crate) struct ByRows;

impl<K, V: Rows> quick_cache::Weighter<K, V> for ByRows {
    fn weight(&self, _: &K, value: &V) -> u64 {
        u64::try_from(value.rows()).map_or(u64::MAX, |rows| rows.saturating_add(1))
    }
}

pub(crate) type RowCache<K, V> = quick_cache::sync::Cache<K, V, ByRows>;

pub(crate) fn row_cache<K: Eq + Hash + Clone, V: Rows + Clone>() -> RowCache<K, V> {
    quick_cache::sync::Cache::with_weighter(ENTRIES, WEIGHT, ByRows)
}
