//! Prometheus metrics of the operator, served on `/metrics`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::crd::Condition;

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Reconciles run, per controller.
    pub reconciles: IntCounterVec,
    /// Failed reconciles, per controller and error kind.
    pub errors: IntCounterVec,
    /// Reconcile duration, per controller.
    pub duration: HistogramVec,
    /// Write requests (POST/PUT/PATCH/DELETE) the operator's client sent, per
    /// verb and resource, counted on the wire (includes Events and the Lease).
    pub api_writes: IntCounterVec,
    /// Objects applied / skipped because unchanged, per kind.
    pub applies: IntCounterVec,
    pub skipped: IntCounterVec,
    /// 1 while this replica holds the leader Lease (always 1 without
    /// leader election).
    pub leader: IntGauge,
    /// Each platform's conditions: 1 while True, 0 otherwise, per
    /// `platform_namespace`, `platform` and `condition` (so alerts can say
    /// "not Ready for 15 minutes"; `namespace` is left to the scrape target).
    pub platform_condition: IntGaugeVec,
    /// Platforms with series in `platform_condition`, to drop deleted ones.
    platforms: Arc<Mutex<BTreeSet<(String, String)>>>,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new("berth_operator_reconciles_total", "Reconciles run"),
            &["controller"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new("berth_operator_reconcile_errors_total", "Failed reconciles"),
            &["controller", "error"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "berth_operator_reconcile_duration_seconds",
                "Reconcile duration",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["controller"],
        )?;
        let api_writes = IntCounterVec::new(
            Opts::new(
                "berth_operator_api_writes_total",
                "Write requests sent to the API server",
            ),
            &["verb", "resource"],
        )?;
        let applies = IntCounterVec::new(
            Opts::new("berth_operator_applies_total", "Server-side applies sent"),
            &["kind"],
        )?;
        let skipped = IntCounterVec::new(
            Opts::new(
                "berth_operator_applies_skipped_total",
                "Applies skipped because the object already matches",
            ),
            &["kind"],
        )?;
        let leader = IntGauge::new("berth_operator_leader", "1 while holding the leader Lease")?;
        let platform_condition = IntGaugeVec::new(
            Opts::new(
                "berth_operator_platform_condition",
                "BookingPlatform conditions as last written: 1 True, 0 False or Unknown",
            ),
            &["platform_namespace", "platform", "condition"],
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(api_writes.clone()))?;
        registry.register(Box::new(applies.clone()))?;
        registry.register(Box::new(skipped.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(platform_condition.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            registry,
            reconciles,
            errors,
            duration,
            api_writes,
            applies,
            skipped,
            leader,
            platform_condition,
            platforms: Arc::default(),
        })
    }

    /// Records a platform's conditions.
    pub fn platform_conditions(&self, namespace: &str, name: &str, conditions: &[Condition]) {
        for c in conditions {
            self.platform_condition
                .with_label_values(&[namespace, name, &c.type_])
                .set(i64::from(c.status == "True"));
        }
        if let Ok(mut known) = self.platforms.lock() {
            known.insert((namespace.to_string(), name.to_string()));
        }
    }

    /// Drops the series of every platform `exists` says is gone (no
    /// finalizer means no reconcile on deletion: the next reconcile of any
    /// platform cleans up).
    pub fn retain_platforms(&self, exists: impl Fn(&str, &str) -> bool) {
        let Ok(mut known) = self.platforms.lock() else {
            return;
        };
        let gone: Vec<(String, String)> = known
            .iter()
            .filter(|(ns, name)| !exists(ns, name))
            .cloned()
            .collect();
        for (ns, name) in gone {
            for mf in self.platform_condition.collect() {
                for m in mf.get_metric() {
                    let label = |k: &str| {
                        m.get_label()
                            .iter()
                            .find(|l| l.name() == k)
                            .map(|l| l.value().to_string())
                    };
                    if label("platform_namespace").as_deref() == Some(ns.as_str())
                        && label("platform").as_deref() == Some(name.as_str())
                        && let Some(cond) = label("condition")
                    {
                        let _ = self
                            .platform_condition
                            .remove_label_values(&[&ns, &name, &cond]);
                    }
                }
            }
            known.remove(&(ns, name));
        }
    }

    pub fn observe(&self, controller: &str, took: Duration, error: Option<&str>) {
        self.reconciles.with_label_values(&[controller]).inc();
        self.duration
            .with_label_values(&[controller])
            .observe(took.as_secs_f64());
        if let Some(e) = error {
            self.errors.with_label_values(&[controller, e]).inc();
        }
    }

    /// Sum of write requests, optionally excluding some resources.
    pub fn writes_total(&self, exclude: &[&str]) -> u64 {
        self.api_writes
            .collect()
            .iter()
            .flat_map(|mf| mf.get_metric())
            .filter(|m| {
                !m.get_label()
                    .iter()
                    .any(|l| l.name() == "resource" && exclude.contains(&l.value()))
            })
            .map(|m| m.get_counter().value() as u64)
            .sum()
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if encoder.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The resource a request path addresses, e.g.
/// `/apis/apps/v1/namespaces/x/deployments/y` → `deployments`,
/// `/apis/berth.dev/v1alpha1/namespaces/x/bookingplatforms/y/status` →
/// `bookingplatforms/status`.
pub fn resource_of(path: &str) -> String {
    let segs: Vec<&str> = path
        .split('?')
        .next()
        .unwrap_or("")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    // Skip "api/v1" or "apis/<group>/<version>".
    let rest: &[&str] = match segs.first() {
        Some(&"api") => segs.get(2..).unwrap_or(&[]),
        Some(&"apis") => segs.get(3..).unwrap_or(&[]),
        _ => &segs,
    };
    let rest = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    match rest {
        [res, _name, sub, ..] => format!("{res}/{sub}"),
        [res, ..] => (*res).to_string(),
        [] => "unknown".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_from_paths() {
        assert_eq!(
            resource_of("/apis/apps/v1/namespaces/x/deployments/y"),
            "deployments"
        );
        assert_eq!(
            resource_of("/api/v1/namespaces/x/configmaps?fieldManager=a"),
            "configmaps"
        );
        assert_eq!(
            resource_of("/apis/berth.dev/v1alpha1/namespaces/x/bookingplatforms/y/status"),
            "bookingplatforms/status"
        );
        assert_eq!(resource_of("/api/v1/namespaces/x"), "namespaces");
        assert_eq!(
            resource_of("/apis/events.k8s.io/v1/namespaces/x/events"),
            "events"
        );
    }

    #[test]
    fn platform_conditions_and_their_removal() {
        let m = Metrics::new().unwrap();
        let cond = |t: &str, s: &str| Condition {
            type_: t.into(),
            status: s.into(),
            reason: "r".into(),
            message: "m".into(),
            last_transition_time: "t".into(),
            observed_generation: None,
        };
        m.platform_conditions(
            "a",
            "shop",
            &[cond("Ready", "True"), cond("Stalled", "False")],
        );
        m.platform_conditions("b", "shop", &[cond("Ready", "False")]);
        let text = m.render();
        assert!(text.contains(
            r#"berth_operator_platform_condition{condition="Ready",platform="shop",platform_namespace="a"} 1"#
        ), "{text}");
        assert!(text.contains(
            r#"berth_operator_platform_condition{condition="Stalled",platform="shop",platform_namespace="a"} 0"#
        ));
        m.retain_platforms(|ns, _| ns == "b");
        let text = m.render();
        assert!(!text.contains(r#"platform_namespace="a""#), "{text}");
        assert!(text.contains(r#"platform_namespace="b""#));
    }

    #[test]
    fn counts_writes() {
        let m = Metrics::new().unwrap();
        m.api_writes.with_label_values(&["PATCH", "leases"]).inc();
        m.api_writes
            .with_label_values(&["PATCH", "deployments"])
            .inc_by(2);
        assert_eq!(m.writes_total(&[]), 3);
        assert_eq!(m.writes_total(&["leases"]), 2);
    }
}
