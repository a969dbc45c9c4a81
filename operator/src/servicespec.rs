//! The ServiceSpec status controller. A ServiceSpec has no children of its
//! own (its platform owns the component's objects); this controller only
//! reports whether the ServiceSpec is in effect and how its component is
//! doing, from the platform's status and the ServiceSpec cache.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::build;
use crate::controller::Error;
use crate::crd::{BookingPlatform, ServiceSpec, ServiceSpecStatus};
use crate::metrics::Metrics;
use crate::names::MANAGER;
use crate::status::{self, keep_time};

pub const CONTROLLER: &str = "servicespec";

pub struct SpecContext {
    pub client: Client,
    pub platforms: Store<BookingPlatform>,
    pub specs: Store<ServiceSpec>,
    pub metrics: Metrics,
}

/// Pure: the status a ServiceSpec should have.
pub fn spec_status(
    s: &ServiceSpec,
    platform: Option<&BookingPlatform>,
    siblings: &[Arc<ServiceSpec>],
    now: &str,
) -> ServiceSpecStatus {
    let generation = s.metadata.generation;
    let previous = s
        .status
        .as_ref()
        .map(|st| st.conditions.clone())
        .unwrap_or_default();
    let c = s.spec.component;
    let cond = |t: &str, st: &str, reason: &str, msg: &str| {
        keep_time(&previous, t, st, reason, msg, generation, now)
    };
    // kstatus: a reference or conflict only a person can fix is Stalled.
    let stalled = |reason: &str, msg: &str| ServiceSpecStatus {
        observed_generation: generation,
        conditions: vec![
            cond(status::READY, "False", reason, msg),
            cond(status::DEGRADED, "True", reason, msg),
            cond(status::RECONCILING, "False", reason, msg),
            cond(status::STALLED, "True", reason, msg),
        ],
        replicas: None,
    };
    let Some(platform) = platform else {
        let msg = format!(
            "BookingPlatform {} not found in namespace {}; these settings take effect once it exists",
            s.spec.platform_ref.name,
            s.namespace().unwrap_or_default()
        );
        return stalled("PlatformNotFound", &msg);
    };
    let (chosen, conflicts) = build::select_service_specs(siblings.iter().map(|s| s.as_ref()));
    if let Some((_, msg)) = conflicts.iter().find(|(x, _)| x.uid() == s.uid()) {
        return stalled("Conflict", msg);
    }
    debug_assert!(chosen.get(&c).is_none_or(|w| w.uid() == s.uid()));
    let pstatus = platform.status.as_ref();
    let summary = pstatus.and_then(|st| st.services.iter().find(|x| x.component == c));
    let replicas = summary.map(|x| format!("{}/{}", x.ready_replicas, x.replicas));
    let platform_stalled = pstatus.and_then(|st| {
        status::find(&st.conditions, status::STALLED).filter(|c| c.status == "True")
    });
    // (Ready, Reconciling) as (status, reason, message) each.
    let (ready, reconciling) = if platform.spec.paused {
        let msg = format!(
            "platform {} is paused (spec.paused); changes take effect once it is resumed",
            platform.name_any()
        );
        (
            ("False", "PlatformPaused", msg.clone()),
            ("False", "PlatformPaused", msg),
        )
    } else {
        match summary {
            Some(x) if x.ready => {
                let msg = format!("{c}: {}/{} replicas ready", x.ready_replicas, x.replicas);
                (("True", "Ready", msg.clone()), ("False", "Ready", msg))
            }
            _ => {
                let msg = match summary {
                    Some(x) => format!("{c}: {}/{} replicas ready", x.ready_replicas, x.replicas),
                    None => format!(
                        "{c}: waiting for platform {} to report status",
                        platform.name_any()
                    ),
                };
                let reason = if summary.is_some() {
                    "NotReady"
                } else {
                    "Pending"
                };
                // Waiting on a platform that waits for a person is not
                // progress: kstatus should not report it in progress forever.
                let rec = match platform_stalled {
                    Some(ps) => (
                        "False",
                        "PlatformStalled",
                        format!(
                            "platform {} is stalled: {}",
                            platform.name_any(),
                            ps.message
                        ),
                    ),
                    None => ("True", reason, msg.clone()),
                };
                (("False", reason, msg), rec)
            }
        }
    };
    ServiceSpecStatus {
        observed_generation: generation,
        conditions: vec![
            cond(status::READY, ready.0, ready.1, &ready.2),
            cond(status::DEGRADED, "False", "AsExpected", "in effect"),
            cond(
                status::RECONCILING,
                reconciling.0,
                reconciling.1,
                &reconciling.2,
            ),
            cond(
                status::STALLED,
                "False",
                "AsExpected",
                "no intervention needed",
            ),
        ],
        replicas,
    }
}

pub async fn reconcile(s: Arc<ServiceSpec>, ctx: Arc<SpecContext>) -> Result<Action, Error> {
    let start = Instant::now();
    let result = reconcile_inner(&s, &ctx).await;
    ctx.metrics.observe(
        CONTROLLER,
        start.elapsed(),
        result.as_ref().err().map(Error::kind),
    );
    result
}

async fn reconcile_inner(s: &ServiceSpec, ctx: &SpecContext) -> Result<Action, Error> {
    let ns = s
        .namespace()
        .ok_or_else(|| Error::Invalid("ServiceSpec without namespace".into()))?;
    let platform = ctx
        .platforms
        .get(&ObjectRef::new(&s.spec.platform_ref.name).within(&ns));
    let siblings: Vec<Arc<ServiceSpec>> = ctx
        .specs
        .state()
        .into_iter()
        .filter(|x| {
            x.namespace().as_deref() == Some(ns.as_str())
                && x.spec.platform_ref.name == s.spec.platform_ref.name
        })
        .collect();
    let new = spec_status(s, platform.as_deref(), &siblings, &status::now_rfc3339());
    if s.status.as_ref() != Some(&new) {
        let api: Api<ServiceSpec> = Api::namespaced(ctx.client.clone(), &ns);
        let body = json!({
            "apiVersion": format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION),
            "kind": "ServiceSpec",
            "status": new,
        });
        api.patch_status(
            &s.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    }
    // Conflicts resolve when another ServiceSpec goes away; the periodic
    // requeue catches that without watching every sibling.
    Ok(Action::requeue(Duration::from_secs(300)))
}

pub fn error_policy(_s: Arc<ServiceSpec>, err: &Error, _ctx: Arc<SpecContext>) -> Action {
    tracing::warn!(error = %err, "servicespec reconcile failed; retrying in 5s");
    Action::requeue(Duration::from_secs(5))
}

/// Maps a platform change to the ServiceSpecs that reference it.
pub fn platform_to_specs(
    specs: &Store<ServiceSpec>,
    p: &BookingPlatform,
) -> Vec<ObjectRef<ServiceSpec>> {
    let ns = p.namespace();
    let name = p.name_any();
    specs
        .state()
        .into_iter()
        .filter(|s| s.namespace() == ns && s.spec.platform_ref.name == name)
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::crd::Condition;

    fn spec() -> ServiceSpec {
        serde_json::from_value(json!({
            "apiVersion": "berth.dev/v1alpha1",
            "kind": "ServiceSpec",
            "metadata": {"name": "shop-booking", "namespace": "ns", "uid": "s1", "generation": 2},
            "spec": {"platformRef": {"name": "shop"}, "component": "booking", "replicas": 2}
        }))
        .unwrap()
    }

    fn platform(paused: bool, status: serde_json::Value) -> BookingPlatform {
        serde_json::from_value(json!({
            "apiVersion": "berth.dev/v1alpha1",
            "kind": "BookingPlatform",
            "metadata": {"name": "shop", "namespace": "ns", "uid": "p1", "generation": 1},
            "spec": {
                "image": {"repository": "r", "version": "1.0.0"},
                "database": {"secretRef": {"name": "db"}},
                "redis": {"managed": {"replicas": 3}},
                "auth": {"issuer": "https://x", "jwtSigningKeySecretRef": {"name": "jwt"}},
                "paused": paused
            },
            "status": status
        }))
        .unwrap()
    }

    fn summary(ready: bool) -> serde_json::Value {
        json!({"services": [{
            "component": "booking", "source": "ServiceSpec/shop-booking", "version": "1.0.0",
            "replicas": 2, "readyReplicas": if ready { 2 } else { 1 }, "updatedReplicas": 2,
            "ready": ready
        }]})
    }

    fn get<'a>(s: &'a ServiceSpecStatus, t: &str) -> (&'a str, &'a str, &'a str) {
        let c: &Condition = status::find(&s.conditions, t).unwrap();
        (&c.status, &c.reason, &c.message)
    }

    fn status_of(p: Option<&BookingPlatform>) -> ServiceSpecStatus {
        let s = spec();
        spec_status(&s, p, &[Arc::new(s.clone())], "t0")
    }

    #[test]
    fn missing_platform_is_stalled() {
        let st = status_of(None);
        assert_eq!(get(&st, status::STALLED).0, "True");
        assert_eq!(get(&st, status::STALLED).1, "PlatformNotFound");
        assert_eq!(get(&st, status::DEGRADED).0, "True");
        assert_eq!(get(&st, status::RECONCILING).0, "False");
        assert_eq!(st.observed_generation, Some(2));
    }

    #[test]
    fn rolling_component_is_reconciling() {
        let p = platform(false, summary(false));
        let st = status_of(Some(&p));
        assert_eq!(
            get(&st, status::READY),
            ("False", "NotReady", "booking: 1/2 replicas ready")
        );
        assert_eq!(get(&st, status::RECONCILING).0, "True");
        assert_eq!(get(&st, status::STALLED).0, "False");
        assert_eq!(st.replicas.as_deref(), Some("1/2"));
    }

    #[test]
    fn ready_component_is_current() {
        let p = platform(false, summary(true));
        let st = status_of(Some(&p));
        assert_eq!(get(&st, status::READY).0, "True");
        assert_eq!(get(&st, status::RECONCILING).0, "False");
        assert_eq!(get(&st, status::STALLED).0, "False");
    }

    #[test]
    fn paused_platform_holds_the_spec() {
        let p = platform(true, summary(true));
        let st = status_of(Some(&p));
        assert_eq!(get(&st, status::READY).1, "PlatformPaused");
        assert_eq!(get(&st, status::RECONCILING).0, "False");
        assert_eq!(get(&st, status::STALLED).0, "False");
        assert_eq!(
            st.replicas.as_deref(),
            Some("2/2"),
            "replicas still reported"
        );
    }

    #[test]
    fn stalled_platform_stops_reconciling() {
        let mut st = summary(false);
        st["conditions"] = json!([{
            "type": "Stalled", "status": "True", "reason": "SecretNotFound",
            "message": "secret db (spec.database.secretRef) not found in namespace ns",
            "lastTransitionTime": "t0"
        }]);
        let p = platform(false, st);
        let s = status_of(Some(&p));
        let rec = get(&s, status::RECONCILING);
        assert_eq!((rec.0, rec.1), ("False", "PlatformStalled"));
        assert!(rec.2.ends_with("not found in namespace ns"), "{}", rec.2);
    }
}
