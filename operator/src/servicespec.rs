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
    let Some(platform) = platform else {
        let msg = format!(
            "BookingPlatform {} not found in namespace {}; these settings take effect once it exists",
            s.spec.platform_ref.name,
            s.namespace().unwrap_or_default()
        );
        return ServiceSpecStatus {
            observed_generation: generation,
            conditions: vec![
                cond(status::READY, "False", "PlatformNotFound", &msg),
                cond(status::DEGRADED, "True", "PlatformNotFound", &msg),
            ],
            replicas: None,
        };
    };
    let (chosen, conflicts) = build::select_service_specs(siblings.iter().map(|s| s.as_ref()));
    if let Some((_, msg)) = conflicts.iter().find(|(x, _)| x.uid() == s.uid()) {
        return ServiceSpecStatus {
            observed_generation: generation,
            conditions: vec![
                cond(status::READY, "False", "Conflict", msg),
                cond(status::DEGRADED, "True", "Conflict", msg),
            ],
            replicas: None,
        };
    }
    debug_assert!(chosen.get(&c).is_none_or(|w| w.uid() == s.uid()));
    let summary = platform
        .status
        .as_ref()
        .and_then(|st| st.services.iter().find(|x| x.component == c));
    let (ready, reason, msg, replicas) = match summary {
        None => (
            "False",
            "Pending",
            format!(
                "{c}: waiting for platform {} to report status",
                platform.name_any()
            ),
            None,
        ),
        Some(x) => (
            if x.ready { "True" } else { "False" },
            if x.ready { "Ready" } else { "NotReady" },
            format!("{c}: {}/{} replicas ready", x.ready_replicas, x.replicas),
            Some(format!("{}/{}", x.ready_replicas, x.replicas)),
        ),
    };
    ServiceSpecStatus {
        observed_generation: generation,
        conditions: vec![
            cond(status::READY, ready, reason, &msg),
            cond(status::DEGRADED, "False", "AsExpected", "in effect"),
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
