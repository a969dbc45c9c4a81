//! Retry budget: retries are allowed while they stay under a share of recent
//! first attempts plus a small fixed allowance per second. This caps the
//! extra load retries add during an outage (a storm of retries is what turns
//! a slow dependency into a dead one).
//!
//! tower ships a similar budget, but it reads the system clock directly; this
//! one takes a [`Clock`] so its behaviour can be tested exactly, and its
//! settings can be swapped at run time.

use std::sync::{Arc, Mutex};

use super::clock::Clock;
use super::settings::RetrySettings;
use super::window::SlidingWindow;

pub struct RetryBudget {
    clock: Arc<dyn Clock>,
    inner: Mutex<BudgetInner>,
}

struct BudgetInner {
    ratio: f64,
    min_per_second: u32,
    window_secs: f64,
    window_len: std::time::Duration,
    /// (first attempts, retries)
    window: SlidingWindow,
}

impl RetryBudget {
    pub fn new(settings: &RetrySettings, clock: Arc<dyn Clock>) -> Self {
        let now = clock.now();
        Self {
            inner: Mutex::new(BudgetInner {
                ratio: settings.budget_ratio,
                min_per_second: settings.budget_min_per_second,
                window_secs: settings.budget_window.as_secs_f64(),
                window_len: settings.budget_window,
                window: SlidingWindow::new(settings.budget_window, now),
            }),
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BudgetInner> {
        // Counters only; a poisoned lock holds nothing that could be torn.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn update_settings(&self, settings: &RetrySettings) {
        let mut inner = self.lock();
        inner.ratio = settings.budget_ratio;
        inner.min_per_second = settings.budget_min_per_second;
        inner.window_secs = settings.budget_window.as_secs_f64();
        if inner.window_len != settings.budget_window {
            inner.window_len = settings.budget_window;
            inner.window = SlidingWindow::new(settings.budget_window, self.clock.now());
        }
    }

    /// Records a first attempt, which earns `ratio` of a retry.
    pub fn deposit(&self) {
        let now = self.clock.now();
        self.lock().window.add(now, 1, 0);
    }

    /// Takes one retry from the budget if there is one left.
    pub fn try_withdraw(&self) -> bool {
        let now = self.clock.now();
        let mut inner = self.lock();
        let (firsts, retries) = inner.window.totals(now);
        let allowance =
            inner.min_per_second as f64 * inner.window_secs + inner.ratio * firsts as f64;
        if (retries as f64) + 1.0 <= allowance {
            inner.window.add(now, 0, 1);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::clock::ManualClock;
    use std::time::Duration;

    fn settings(ratio: f64, min_per_second: u32) -> RetrySettings {
        RetrySettings {
            budget_ratio: ratio,
            budget_min_per_second: min_per_second,
            budget_window: Duration::from_secs(10),
            ..RetrySettings::default()
        }
    }

    #[test]
    fn ratio_limits_retries_to_share_of_first_attempts() {
        let clock = Arc::new(ManualClock::default());
        let budget = RetryBudget::new(&settings(0.2, 0), clock);
        for _ in 0..100 {
            budget.deposit();
        }
        let granted = (0..100).filter(|_| budget.try_withdraw()).count();
        assert_eq!(granted, 20);
    }

    #[test]
    fn minimum_allowance_lets_low_traffic_retry() {
        let clock = Arc::new(ManualClock::default());
        let budget = RetryBudget::new(&settings(0.0, 1), clock);
        // 1 per second over a 10 s window.
        let granted = (0..50).filter(|_| budget.try_withdraw()).count();
        assert_eq!(granted, 10);
    }

    #[test]
    fn budget_refills_as_the_window_slides() {
        let clock = Arc::new(ManualClock::default());
        let budget = RetryBudget::new(&settings(0.5, 0), clock.clone());
        for _ in 0..10 {
            budget.deposit();
        }
        assert_eq!((0..10).filter(|_| budget.try_withdraw()).count(), 5);
        assert!(!budget.try_withdraw());
        clock.advance(Duration::from_secs(11));
        assert!(!budget.try_withdraw(), "no first attempts left in window");
        budget.deposit();
        budget.deposit();
        assert!(budget.try_withdraw());
        assert!(!budget.try_withdraw());
    }

    #[test]
    fn settings_update_changes_the_ratio() {
        let clock = Arc::new(ManualClock::default());
        let budget = RetryBudget::new(&settings(0.0, 0), clock);
        for _ in 0..10 {
            budget.deposit();
        }
        assert!(!budget.try_withdraw());
        budget.update_settings(&settings(1.0, 0));
        assert_eq!((0..20).filter(|_| budget.try_withdraw()).count(), 10);
    }
}
