//! Resilience for outbound calls: per-dependency timeout, retry (backoff with
//! full jitter and a retry budget, idempotent calls only) and circuit breaker,
//! as tower layers. Settings live in the config file and are hot-reloaded.

mod backoff;
mod breaker;
mod budget;
pub mod clock;
mod layers;
mod reload;
mod settings;
mod window;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

pub use backoff::{exponential_cap, full_jitter};
pub use breaker::{BreakerObserver, BreakerState, CircuitBreaker, CircuitOpen, Permit};
pub use budget::RetryBudget;
pub use layers::{
    BreakerLayer, BreakerService, Classify, GrpcClassifier, HttpClassifier, Outcome, RetryLayer,
    RetryService, TimedOut, TimeoutLayer, TimeoutService, is_idempotent, resilient,
};
pub use reload::{ReloadHandle, parse_dependency_settings, watch_dependency_settings};
pub use settings::{BreakerSettings, DependencySettings, InvalidSetting, RetrySettings};

use clock::{Clock, SystemClock};

/// One downstream dependency: its current settings, breaker and retry budget.
pub struct Dependency {
    /// `name`, or `name@instance` for one replica of it (metrics label).
    name: String,
    /// Whose configured settings apply.
    configured_as: String,
    settings: ArcSwap<DependencySettings>,
    pub breaker: CircuitBreaker,
    pub budget: RetryBudget,
    metrics: Option<ResilienceMetrics>,
}

impl Dependency {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn settings(&self) -> Arc<DependencySettings> {
        self.settings.load_full()
    }

    fn apply(&self, settings: DependencySettings) {
        self.breaker.update_settings(settings.breaker.clone());
        self.budget.update_settings(&settings.retry);
        self.settings.store(Arc::new(settings));
    }

    pub(crate) fn count_retry(&self) {
        if let Some(m) = &self.metrics {
            m.retries.with_label_values(&[&self.name]).inc();
        }
    }

    pub(crate) fn count_budget_exhausted(&self) {
        if let Some(m) = &self.metrics {
            m.budget_exhausted.with_label_values(&[&self.name]).inc();
        }
    }
}

#[derive(Clone)]
struct ResilienceMetrics {
    state: IntGaugeVec,
    transitions: IntCounterVec,
    rejections: IntCounterVec,
    retries: IntCounterVec,
    budget_exhausted: IntCounterVec,
}

impl ResilienceMetrics {
    fn register(registry: &Registry) -> prometheus::Result<Self> {
        let state = IntGaugeVec::new(
            Opts::new(
                "berth_circuit_breaker_state",
                "Circuit breaker state per dependency: 0 closed, 1 open, 2 half-open.",
            ),
            &["dependency"],
        )?;
        let transitions = IntCounterVec::new(
            Opts::new(
                "berth_circuit_breaker_transitions_total",
                "Circuit breaker state changes.",
            ),
            &["dependency", "to"],
        )?;
        let rejections = IntCounterVec::new(
            Opts::new(
                "berth_circuit_breaker_rejections_total",
                "Calls refused without being attempted because the breaker was open.",
            ),
            &["dependency"],
        )?;
        let retries = IntCounterVec::new(
            Opts::new("berth_outbound_retries_total", "Retried outbound calls."),
            &["dependency"],
        )?;
        let budget_exhausted = IntCounterVec::new(
            Opts::new(
                "berth_retry_budget_exhausted_total",
                "Retries skipped because the retry budget was spent.",
            ),
            &["dependency"],
        )?;
        registry.register(Box::new(state.clone()))?;
        registry.register(Box::new(transitions.clone()))?;
        registry.register(Box::new(rejections.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(budget_exhausted.clone()))?;
        Ok(Self {
            state,
            transitions,
            rejections,
            retries,
            budget_exhausted,
        })
    }
}

struct MetricsObserver {
    dependency: String,
    metrics: ResilienceMetrics,
}

impl BreakerObserver for MetricsObserver {
    fn on_transition(&self, _from: BreakerState, to: BreakerState) {
        self.metrics
            .state
            .with_label_values(&[&self.dependency])
            .set(to.as_metric());
        self.metrics
            .transitions
            .with_label_values(&[&self.dependency, to.as_str()])
            .inc();
    }

    fn on_rejected(&self) {
        self.metrics
            .rejections
            .with_label_values(&[&self.dependency])
            .inc();
    }
}

/// All dependencies of a process, created on first use with the configured
/// (or default) settings.
pub struct Dependencies {
    clock: Arc<dyn Clock>,
    metrics: Option<ResilienceMetrics>,
    configured: RwLock<BTreeMap<String, DependencySettings>>,
    live: RwLock<BTreeMap<String, Arc<Dependency>>>,
}

impl Dependencies {
    pub fn new(
        registry: &Registry,
        configured: BTreeMap<String, DependencySettings>,
    ) -> prometheus::Result<Self> {
        Ok(Self::with_clock(
            Some(ResilienceMetrics::register(registry)?),
            configured,
            Arc::new(SystemClock),
        ))
    }

    /// Without metrics, with an explicit clock (tests).
    pub fn unobserved(
        configured: BTreeMap<String, DependencySettings>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self::with_clock(None, configured, clock)
    }

    fn with_clock(
        metrics: Option<ResilienceMetrics>,
        configured: BTreeMap<String, DependencySettings>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            clock,
            metrics,
            configured: RwLock::new(configured),
            live: RwLock::new(BTreeMap::new()),
        }
    }

    pub fn get(&self, name: &str) -> Arc<Dependency> {
        self.entry(name, name)
    }

    /// One replica of `name` (e.g. a pod address): its own breaker and
    /// retry budget, so one unreachable pod does not open the breaker for
    /// the others; the settings configured for `name`. Metrics are labelled
    /// `name@instance`.
    pub fn replica(&self, name: &str, instance: &str) -> Arc<Dependency> {
        self.entry(&format!("{name}@{instance}"), name)
    }

    /// Drops a replica that is gone, and its metric series.
    pub fn forget_replica(&self, name: &str, instance: &str) {
        let key = format!("{name}@{instance}");
        write(&self.live).remove(&key);
        if let Some(m) = &self.metrics {
            for vec in [&m.rejections, &m.retries, &m.budget_exhausted] {
                let _ = vec.remove_label_values(&[&key]);
            }
            let _ = m.state.remove_label_values(&[&key]);
            for to in [
                BreakerState::Closed,
                BreakerState::Open,
                BreakerState::HalfOpen,
            ] {
                let _ = m.transitions.remove_label_values(&[&key, to.as_str()]);
            }
        }
    }

    fn entry(&self, key: &str, configured_as: &str) -> Arc<Dependency> {
        if let Some(dep) = read(&self.live).get(key) {
            return dep.clone();
        }
        let settings = read(&self.configured)
            .get(configured_as)
            .cloned()
            .unwrap_or_default();
        let mut live = write(&self.live);
        live.entry(key.to_owned())
            .or_insert_with(|| {
                let observer: Arc<dyn BreakerObserver> = match &self.metrics {
                    Some(metrics) => {
                        metrics.state.with_label_values(&[key]).set(0);
                        Arc::new(MetricsObserver {
                            dependency: key.to_owned(),
                            metrics: metrics.clone(),
                        })
                    }
                    None => Arc::new(()),
                };
                Arc::new(Dependency {
                    name: key.to_owned(),
                    configured_as: configured_as.to_owned(),
                    breaker: CircuitBreaker::new(
                        key,
                        settings.breaker.clone(),
                        self.clock.clone(),
                        observer,
                    ),
                    budget: RetryBudget::new(&settings.retry, self.clock.clone()),
                    settings: ArcSwap::from_pointee(settings),
                    metrics: self.metrics.clone(),
                })
            })
            .clone()
    }

    /// Applies a complete new set of settings; dependencies no longer listed
    /// go back to defaults. Callers validate first.
    pub fn apply(&self, configured: BTreeMap<String, DependencySettings>) {
        for dep in read(&self.live).values() {
            dep.apply(
                configured
                    .get(&dep.configured_as)
                    .cloned()
                    .unwrap_or_default(),
            );
        }
        *write(&self.configured) = configured;
    }
}

// The maps hold only Arcs and plain settings; a poisoned lock cannot hide a
// half-applied update, so poisoning is ignored.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}
