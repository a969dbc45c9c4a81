//! What slots are computed on, cached per (resource, appointment type) on
//! PostgreSQL and checked on every request.
//!
//! A slots request reads the resource's two counters (`ledger_seq`, raised
//! by every ledger transaction, and `catalog_seq`, raised by triggers on
//! every change to hours, zone, types, overrides, calendars and busy times)
//! in one small statement. If they equal the counters read together with a
//! cached view that covers the window, the view is exactly what the database
//! holds, so it is used; otherwise the view is read again and replaces the
//! entry. Holds that lapse change nothing in the database, so the view keeps
//! them and the caller drops those lapsed at its own `now`. Each replica
//! keeps its own cache; none is ever trusted without the counters.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use berth_runtime::metrics::CacheLookups;

use crate::row_cache::{RowCache, Rows, row_cache};
use crate::store::{SlotCounters, WindowView};

/// How far past the requested window a view is read, so that the default
/// window (from now) stays covered while `now` moves on.
pub(crate) const MARGIN: TimeDelta = TimeDelta::days(1);

#[derive(Clone)]
pub(crate) struct SlotInputCache {
    views: Arc<RowCache<(Uuid, Uuid), Cached>>,
    lookups: CacheLookups,
}

#[derive(Clone)]
struct Cached {
    counters: SlotCounters,
    /// The window the view was read for (claims and busy times reach
    /// further, as [`crate::store::Store::window_view`] says).
    covers: (DateTime<Utc>, DateTime<Utc>),
    view: Arc<WindowView>,
}

impl Rows for Cached {
    fn rows(&self) -> usize {
        self.view.claims.len() + self.view.busy.len()
    }
}

impl SlotInputCache {
    pub(crate) fn new() -> Self {
        Self {
            views: Arc::new(row_cache()),
            lookups: CacheLookups::new("slot_inputs"),
        }
    }

    /// The cached view of `key` if it was read at `counters` and covers
    /// `window`.
    pub(crate) fn get(
        &self,
        key: (Uuid, Uuid),
        counters: SlotCounters,
        window: (DateTime<Utc>, DateTime<Utc>),
    ) -> Option<Arc<WindowView>> {
        let hit = self
            .views
            .get(&key)
            .filter(|c| c.counters == counters && c.covers.0 <= window.0 && window.1 <= c.covers.1);
        self.lookups.count(hit.is_some());
        hit.map(|c| c.view)
    }

    /// Keeps `view`, read for `covers`, if it carries its counters.
    pub(crate) fn put(
        &self,
        key: (Uuid, Uuid),
        covers: (DateTime<Utc>, DateTime<Utc>),
        view: Arc<WindowView>,
    ) {
        if let Some(counters) = view.counters {
            self.views.insert(
                key,
                Cached {
                    counters,
                    covers,
                    view,
                },
            );
        }
    }
}

/// `window` widened by [`MARGIN`] on both sides, within what can be stored.
pub(crate) fn widened(window: (DateTime<Utc>, DateTime<Utc>)) -> (DateTime<Utc>, DateTime<Utc>) {
    let (from, to) = window;
    let from = from.checked_sub_signed(MARGIN).unwrap_or(from);
    let to = to.checked_add_signed(MARGIN).unwrap_or(to);
    (
        if crate::model::in_supported_range(from) {
            from
        } else {
            window.0
        },
        if crate::model::in_supported_range(to) {
            to
        } else {
            window.1
        },
    )
}
