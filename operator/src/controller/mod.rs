//! The BookingPlatform controller: read → validate → build (pure) → apply
//! (server-side apply, field manager `berth-operator`, force) → prune →
//! status from observation → events.
//!
//! Writes only what changed: each child carries the hash of its applied
//! configuration; an object whose hash matches and that nobody else changed
//! since our last apply (same generation, or resourceVersion for kinds without
//! one) is not sent again. A reconcile of an unchanged platform therefore
//! sends no request at all, and status is written only when it differs.

mod apply;
mod events;
mod observe;
mod validate;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource, ResourceExt};

use crate::build::{self, Kind, Observed};
use crate::crd::{BookingPlatform, Component};
use crate::metrics::Metrics;
use crate::names;
use crate::status::{self, Problem};

pub use apply::apply_children;
pub use observe::{
    ChildMeta, Stores, job_state, workload_from_deployment, workload_from_statefulset,
};
pub use validate::referenced_secrets;
pub use watch::{
    deployment_marker, secret_to_platforms, spec_to_platform, strip_deployment, strip_job,
    strip_secret, strip_statefulset,
};

use apply::{apply_plan, write_status};
use events::publish_events;
use validate::validate;

pub const CONTROLLER: &str = "bookingplatform";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("serialising: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "client",
            Error::Json(_) => "json",
            Error::Invalid(_) => "invalid",
        }
    }
}

/// What the controller remembers about a child it applied: the hash it
/// applied and the change marker (generation, else resourceVersion) the
/// API server returned.
type Applied = HashMap<(Kind, String, String), (String, String)>;

pub struct Context {
    pub client: Client,
    pub stores: Stores,
    pub metrics: Metrics,
    pub recorder: Recorder,
    applied: Mutex<Applied>,
    /// Periodic safety-net requeue (also corrects drift missed by watches).
    pub resync: Duration,
}

impl Context {
    pub fn new(
        client: Client,
        stores: Stores,
        metrics: Metrics,
        recorder: Recorder,
        resync: Duration,
    ) -> Self {
        Self {
            client,
            stores,
            metrics,
            recorder,
            applied: Mutex::new(HashMap::new()),
            resync,
        }
    }
}

/// The reconcile entry point.
pub async fn reconcile(p: Arc<BookingPlatform>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = Instant::now();
    let result = reconcile_inner(&p, &ctx).await;
    ctx.metrics.observe(
        CONTROLLER,
        start.elapsed(),
        result.as_ref().err().map(Error::kind),
    );
    result
}

pub fn error_policy(p: Arc<BookingPlatform>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(platform = %p.name_any(), namespace = ?p.namespace(), error = %err, "reconcile failed; retrying in 5s");
    Action::requeue(Duration::from_secs(5))
}

struct Outcome {
    applied: Vec<String>,
    pruned: Vec<String>,
    job_created: bool,
    moved_version: bool,
}

async fn reconcile_inner(p: &BookingPlatform, ctx: &Context) -> Result<Action, Error> {
    let ns = p
        .namespace()
        .ok_or_else(|| Error::Invalid("BookingPlatform without namespace".into()))?;
    let name = p.name_any();
    let uid = p.uid().unwrap_or_default();
    let stores = &ctx.stores;

    // Read.
    let all_specs = stores.specs_for(&ns, &name);
    let (chosen, conflicts) = build::select_service_specs(all_specs.iter().map(|s| s.as_ref()));
    let mut observed = Observed::default();
    let mut deployments = BTreeMap::new();
    for c in Component::ALL {
        if let Some(d) = stores.deployment(&ns, &names::component_name(&name, c))
            && owned_by(d.meta(), &uid)
        {
            let w = workload_from_deployment(&d);
            if let Some(v) = &w.version {
                observed.deployed.insert(c, v.clone());
            }
            deployments.insert(c, w);
        }
    }
    let job_name = names::migration_job_name(&name, &p.spec.image.version);
    let job = stores.jobs.get(&ObjectRef::new(&job_name).within(&ns));
    observed.migration_job = Some(job_state(job.as_deref()));
    let redis = stores
        .statefulsets
        .get(&ObjectRef::new(&names::redis_name(&name)).within(&ns))
        .filter(|s| owned_by(s.meta(), &uid))
        .map(|s| workload_from_statefulset(&s));

    // Validate.
    let mut problems = validate(p, &chosen, &stores.secrets);
    for (s, msg) in &conflicts {
        problems.push(Problem {
            reason: "ServiceSpecConflict".into(),
            message: format!("ServiceSpec {} ignored: {msg}", s.name_any()),
        });
    }
    // Conflicts alone do not block: the winning ServiceSpec is applied.
    let blocking = problems
        .iter()
        .any(|p| !status::NON_BLOCKING.contains(&p.reason.as_str()));

    // Build (pure).
    let plan = build::plan(p, &chosen, &observed);

    // Apply and prune.
    let mut outcome = Outcome {
        applied: vec![],
        pruned: vec![],
        job_created: false,
        moved_version: false,
    };
    if !p.spec.paused && !blocking {
        outcome = apply_plan(ctx, &ns, &uid, &plan, &observed).await?;
    }

    // Status from what is observed (stores are updated by the watches; a
    // freshly applied change shows up in the next reconcile it triggers).
    let previous = p.status.as_ref();
    let now = status::now_rfc3339();
    let new_status = status::platform_status(&status::Inputs {
        generation: p.metadata.generation,
        plan: &plan,
        deployments: &deployments,
        redis: redis.as_ref(),
        problems: &problems,
        paused: p.spec.paused,
        previous,
        now: &now,
    });
    ctx.metrics
        .platform_conditions(&ns, &name, &new_status.conditions);
    ctx.metrics.retain_platforms(|ns, name| {
        stores
            .platforms
            .get(&ObjectRef::new(name).within(ns))
            .is_some()
    });
    publish_events(ctx, p, previous, &new_status, &plan, &outcome).await;
    if previous != Some(&new_status) {
        write_status(ctx, p, &ns, &new_status).await?;
    }
    Ok(Action::requeue(ctx.resync))
}

fn owned_by(meta: &kube::api::ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .as_ref()
        .is_some_and(|o| o.iter().any(|r| r.uid == uid))
}
