//! Circuit breaker: closed → open → half-open → closed.
//!
//! Written here rather than taken from a crate because none of the maintained
//! ones offered all of: a failure *rate* over a sliding time window with a
//! minimum number of calls, a bounded number of half-open probes, settings
//! that can be swapped at run time without losing state, and an injectable
//! clock for deterministic tests.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::clock::Clock;
use super::settings::BreakerSettings;
use super::window::SlidingWindow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// Value exported by the `berth_circuit_breaker_state` gauge.
    pub fn as_metric(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// Reported to an observer on every state change (metrics, logs).
pub trait BreakerObserver: Send + Sync + 'static {
    fn on_transition(&self, from: BreakerState, to: BreakerState);
    fn on_rejected(&self);
}

impl BreakerObserver for () {
    fn on_transition(&self, _: BreakerState, _: BreakerState) {}
    fn on_rejected(&self) {}
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { issued: u32, succeeded: u32 },
}

#[derive(Debug)]
struct Inner {
    settings: BreakerSettings,
    phase: Phase,
    /// Bumped on every transition so outcomes of calls admitted in an
    /// earlier phase do not count in the current one.
    generation: u64,
    /// (failures, successes)
    window: SlidingWindow,
}

/// The call was refused because the breaker is open (or half-open and all
/// probe slots are taken).
#[derive(Debug, Clone, thiserror::Error)]
#[error("circuit breaker for `{dependency}` is open")]
pub struct CircuitOpen {
    pub dependency: String,
}

pub struct CircuitBreaker {
    name: String,
    clock: Arc<dyn Clock>,
    observer: Arc<dyn BreakerObserver>,
    inner: Mutex<Inner>,
}

/// Permission for one call. Report its outcome with [`Permit::record`];
/// dropping it unreported (a cancelled call) counts as neither.
#[must_use]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    generation: u64,
    reported: bool,
}

impl Permit<'_> {
    pub fn record(mut self, success: bool) {
        self.reported = true;
        self.breaker.on_outcome(self.generation, Some(success));
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.on_outcome(self.generation, None);
        }
    }
}

impl CircuitBreaker {
    pub fn new(
        name: impl Into<String>,
        settings: BreakerSettings,
        clock: Arc<dyn Clock>,
        observer: Arc<dyn BreakerObserver>,
    ) -> Self {
        let now = clock.now();
        Self {
            name: name.into(),
            inner: Mutex::new(Inner {
                window: SlidingWindow::new(settings.window, now),
                settings,
                phase: Phase::Closed,
                generation: 0,
            }),
            clock,
            observer,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the counters in a
        // state worse than stale, so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn state(&self) -> BreakerState {
        let mut inner = self.lock();
        self.advance(&mut inner);
        phase_state(&inner.phase)
    }

    /// Replaces the settings, keeping the current state. A changed window
    /// length restarts counting, since old buckets have a different width.
    pub fn update_settings(&self, settings: BreakerSettings) {
        let mut inner = self.lock();
        if settings.window != inner.settings.window {
            inner.window = SlidingWindow::new(settings.window, self.clock.now());
        }
        inner.settings = settings;
    }

    pub fn settings(&self) -> BreakerSettings {
        self.lock().settings.clone()
    }

    pub fn try_acquire(&self) -> Result<Permit<'_>, CircuitOpen> {
        let mut inner = self.lock();
        self.advance(&mut inner);
        let probes = inner.settings.half_open_probes;
        let admitted = match &mut inner.phase {
            Phase::Closed => true,
            Phase::Open { .. } => false,
            Phase::HalfOpen { issued, .. } if *issued < probes => {
                *issued += 1;
                true
            }
            Phase::HalfOpen { .. } => false,
        };
        if admitted {
            Ok(Permit {
                breaker: self,
                generation: inner.generation,
                reported: false,
            })
        } else {
            drop(inner);
            self.observer.on_rejected();
            Err(CircuitOpen {
                dependency: self.name.clone(),
            })
        }
    }

    /// Moves open → half-open once the open duration has passed.
    fn advance(&self, inner: &mut Inner) {
        if let Phase::Open { until } = inner.phase
            && self.clock.now() >= until
        {
            self.transition(
                inner,
                Phase::HalfOpen {
                    issued: 0,
                    succeeded: 0,
                },
            );
        }
    }

    fn transition(&self, inner: &mut Inner, to: Phase) {
        let from = phase_state(&inner.phase);
        inner.phase = to;
        inner.generation += 1;
        inner.window.reset();
        let to = phase_state(&inner.phase);
        if from != to {
            tracing::info!(dependency = %self.name, from = from.as_str(), to = to.as_str(), "circuit breaker state changed");
            self.observer.on_transition(from, to);
        }
    }

    fn on_outcome(&self, generation: u64, success: Option<bool>) {
        let mut inner = self.lock();
        if generation != inner.generation {
            return;
        }
        let now = self.clock.now();
        let probes = inner.settings.half_open_probes;
        let open_for = inner.settings.open_duration;
        match (&mut inner.phase, success) {
            (Phase::Closed, Some(ok)) => {
                inner.window.add(now, u64::from(!ok), u64::from(ok));
                let (failures, successes) = inner.window.totals(now);
                let total = failures + successes;
                let rate = failures as f64 / total.max(1) as f64;
                if total >= u64::from(inner.settings.minimum_calls)
                    && rate >= inner.settings.failure_rate_threshold
                {
                    self.transition(
                        &mut inner,
                        Phase::Open {
                            until: now + open_for,
                        },
                    );
                }
            }
            (Phase::HalfOpen { .. }, Some(false)) => {
                self.transition(
                    &mut inner,
                    Phase::Open {
                        until: now + open_for,
                    },
                );
            }
            (Phase::HalfOpen { succeeded, .. }, Some(true)) => {
                *succeeded += 1;
                if *succeeded >= probes {
                    self.transition(&mut inner, Phase::Closed);
                }
            }
            (Phase::HalfOpen { issued, .. }, None) => {
                // A cancelled probe gives its slot back.
                *issued = issued.saturating_sub(1);
            }
            _ => {}
        }
    }
}

fn phase_state(phase: &Phase) -> BreakerState {
    match phase {
        Phase::Closed => BreakerState::Closed,
        Phase::Open { .. } => BreakerState::Open,
        Phase::HalfOpen { .. } => BreakerState::HalfOpen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::clock::ManualClock;
    use std::time::Duration;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            failure_rate_threshold: 0.5,
            window: Duration::from_secs(10),
            minimum_calls: 4,
            open_duration: Duration::from_secs(5),
            half_open_probes: 2,
        }
    }

    fn breaker() -> (Arc<ManualClock>, CircuitBreaker) {
        let clock = Arc::new(ManualClock::default());
        let b = CircuitBreaker::new("dep", settings(), clock.clone(), Arc::new(()));
        (clock, b)
    }

    fn call(b: &CircuitBreaker, ok: bool) -> bool {
        match b.try_acquire() {
            Ok(p) => {
                p.record(ok);
                true
            }
            Err(_) => false,
        }
    }

    #[test]
    fn stays_closed_below_minimum_calls() {
        let (_, b) = breaker();
        for _ in 0..3 {
            assert!(call(&b, false));
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn opens_at_threshold_and_rejects() {
        let (_, b) = breaker();
        assert!(call(&b, true));
        assert!(call(&b, true));
        assert!(call(&b, false));
        assert_eq!(b.state(), BreakerState::Closed, "1/3 below minimum calls");
        assert!(call(&b, false));
        assert_eq!(b.state(), BreakerState::Open, "2/4 = 50% opens");
        assert!(!call(&b, true), "open breaker rejects");
    }

    #[test]
    fn failures_outside_the_window_are_forgotten() {
        let (clock, b) = breaker();
        for _ in 0..3 {
            call(&b, false);
        }
        clock.advance(Duration::from_secs(11));
        call(&b, false);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn half_open_after_open_duration_then_closes_after_probes() {
        let (clock, b) = breaker();
        for _ in 0..4 {
            call(&b, false);
        }
        assert_eq!(b.state(), BreakerState::Open);
        clock.advance(Duration::from_secs(4));
        assert_eq!(b.state(), BreakerState::Open);
        clock.advance(Duration::from_secs(1));
        assert_eq!(b.state(), BreakerState::HalfOpen);

        let p1 = b.try_acquire().unwrap();
        let p2 = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_err(), "only two probes in flight");
        p1.record(true);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        p2.record(true);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn failed_probe_reopens() {
        let (clock, b) = breaker();
        for _ in 0..4 {
            call(&b, false);
        }
        clock.advance(Duration::from_secs(5));
        assert!(call(&b, false));
        assert_eq!(b.state(), BreakerState::Open);
        clock.advance(Duration::from_secs(4));
        assert_eq!(b.state(), BreakerState::Open, "open duration restarts");
    }

    #[test]
    fn cancelled_probe_returns_its_slot() {
        let (clock, b) = breaker();
        for _ in 0..4 {
            call(&b, false);
        }
        clock.advance(Duration::from_secs(5));
        let p1 = b.try_acquire().unwrap();
        let _p2 = b.try_acquire().unwrap();
        drop(p1);
        assert!(b.try_acquire().is_ok());
    }

    #[test]
    fn stale_outcomes_from_before_opening_are_ignored() {
        let (clock, b) = breaker();
        let slow = b.try_acquire().unwrap();
        for _ in 0..4 {
            call(&b, false);
        }
        clock.advance(Duration::from_secs(5));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        slow.record(true);
        slow_probe_count_unchanged(&b);
    }

    fn slow_probe_count_unchanged(b: &CircuitBreaker) {
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let _a = b.try_acquire().unwrap();
        let _c = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_err());
    }

    #[test]
    fn settings_update_applies_without_losing_state() {
        let (_, b) = breaker();
        for _ in 0..4 {
            call(&b, false);
        }
        assert_eq!(b.state(), BreakerState::Open);
        b.update_settings(BreakerSettings {
            minimum_calls: 100,
            ..settings()
        });
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.settings().minimum_calls, 100);
    }

    #[test]
    fn higher_minimum_calls_keeps_breaker_closed() {
        let (_, b) = breaker();
        b.update_settings(BreakerSettings {
            minimum_calls: 10,
            ..settings()
        });
        for _ in 0..9 {
            call(&b, false);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        call(&b, false);
        assert_eq!(b.state(), BreakerState::Open);
    }
}
