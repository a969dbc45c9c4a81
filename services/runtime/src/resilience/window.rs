//! A sliding time window of two counters, kept in a fixed ring of buckets so
//! recording and reading are O(buckets) with no allocation per call.

use std::time::{Duration, Instant};

const BUCKETS: usize = 10;

#[derive(Debug, Clone)]
pub(crate) struct SlidingWindow {
    bucket_width: Duration,
    origin: Instant,
    /// (bucket index since origin, first counter, second counter)
    buckets: [(u64, u64, u64); BUCKETS],
}

impl SlidingWindow {
    pub(crate) fn new(window: Duration, now: Instant) -> Self {
        let bucket_width = (window / BUCKETS as u32).max(Duration::from_millis(1));
        Self {
            bucket_width,
            origin: now,
            buckets: [(u64::MAX, 0, 0); BUCKETS],
        }
    }

    fn index(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin);
        (elapsed.as_nanos() / self.bucket_width.as_nanos().max(1)) as u64
    }

    pub(crate) fn add(&mut self, now: Instant, a: u64, b: u64) {
        let idx = self.index(now);
        let slot = &mut self.buckets[(idx % BUCKETS as u64) as usize];
        if slot.0 != idx {
            *slot = (idx, 0, 0);
        }
        slot.1 += a;
        slot.2 += b;
    }

    /// Sums of both counters over the buckets still inside the window.
    pub(crate) fn totals(&self, now: Instant) -> (u64, u64) {
        let idx = self.index(now);
        self.buckets
            .iter()
            .filter(|(i, _, _)| *i != u64::MAX && *i + (BUCKETS as u64) > idx && *i <= idx)
            .fold((0, 0), |(a, b), (_, x, y)| (a + x, b + y))
    }

    pub(crate) fn reset(&mut self) {
        self.buckets = [(u64::MAX, 0, 0); BUCKETS];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_buckets_fall_out_of_the_window() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(Duration::from_secs(10), t0);
        w.add(t0, 1, 0);
        w.add(t0 + Duration::from_secs(5), 0, 2);
        assert_eq!(w.totals(t0 + Duration::from_secs(9)), (1, 2));
        assert_eq!(w.totals(t0 + Duration::from_secs(10)), (0, 2));
        assert_eq!(w.totals(t0 + Duration::from_secs(16)), (0, 0));
    }
}
