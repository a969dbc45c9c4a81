//! The BookingPlatform controller: read → validate → build (pure) → apply
//! (server-side apply, field manager `berth-operator`, force) → prune →
//! status from observation → events.
//!
//! Writes only what changed: each child carries the hash of its applied
//! configuration; an object whose hash matches and that nobody else changed
//! since our last apply (same generation, or resourceVersion for kinds without
//! one) is not sent again. A reconcile of an unchanged platform therefore
//! sends no request at all, and status is written only when it differs.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PartialObjectMeta, Patch,
    PatchParams, PropagationPolicy, ValidationDirective,
};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KEvent, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

use crate::build::{self, Child, JobState, Kind, Observed, Plan};
use crate::crd::{BookingPlatform, BookingPlatformStatus, Component, ServiceSpec};
use crate::metrics::Metrics;
use crate::names::{self, ANNOTATION_HASH, MANAGER};
use crate::status::{self, Problem, WorkloadObs};

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

/// Stores (watch caches) the controller reads instead of the API server.
#[derive(Clone)]
pub struct Stores {
    pub platforms: Store<BookingPlatform>,
    pub specs: Store<ServiceSpec>,
    /// Secrets with their values stripped (only key names are kept).
    pub secrets: Store<Secret>,
    /// Deployments with the pod spec stripped (labels and status kept).
    pub deployments: Store<Deployment>,
    pub jobs: Store<Job>,
    pub statefulsets: Store<StatefulSet>,
    pub hpas: Store<HorizontalPodAutoscaler>,
    pub services: Store<PartialObjectMeta<Service>>,
    pub config_maps: Store<PartialObjectMeta<ConfigMap>>,
    pub service_accounts: Store<PartialObjectMeta<ServiceAccount>>,
    pub pdbs: Store<PartialObjectMeta<PodDisruptionBudget>>,
    pub network_policies: Store<PartialObjectMeta<NetworkPolicy>>,
    pub ingresses: Store<PartialObjectMeta<Ingress>>,
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

/// Metadata the reconciler needs of an observed child.
#[derive(Clone, Debug)]
pub struct ChildMeta {
    pub name: String,
    pub hash: Option<String>,
    pub marker: String,
    pub owned: bool,
}

fn marker_of(meta: &kube::api::ObjectMeta) -> String {
    match meta.generation {
        Some(g) => format!("g{g}"),
        None => format!("r{}", meta.resource_version.clone().unwrap_or_default()),
    }
}

fn child_meta(meta: &kube::api::ObjectMeta, owner_uid: &str, marker: String) -> ChildMeta {
    ChildMeta {
        name: meta.name.clone().unwrap_or_default(),
        hash: meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_HASH).cloned()),
        marker,
        owned: meta
            .owner_references
            .as_ref()
            .is_some_and(|o| o.iter().any(|r| r.uid == owner_uid)),
    }
}

/// HPAs have no `metadata.generation` and their status changes often: their
/// marker is a hash of the spec instead of the resourceVersion.
fn hpa_marker(h: &HorizontalPodAutoscaler) -> String {
    let spec = serde_json::to_value(&h.spec).unwrap_or(Value::Null);
    format!("s{}", crate::hash::json_digest(&spec))
}

fn in_ns<K: Resource>(items: Vec<Arc<K>>, ns: &str) -> impl Iterator<Item = Arc<K>> {
    let ns = ns.to_string();
    items
        .into_iter()
        .filter(move |o| o.meta().namespace.as_deref() == Some(ns.as_str()))
}

impl Stores {
    /// Observed children of `kind` in `ns` (owned by `uid` or named like ours).
    pub fn children(&self, kind: Kind, ns: &str, uid: &str) -> Vec<ChildMeta> {
        fn meta_of<K: Resource<DynamicType = ()> + Clone>(
            s: &Store<K>,
            ns: &str,
            uid: &str,
        ) -> Vec<ChildMeta> {
            in_ns(s.state(), ns)
                .map(|o| child_meta(o.meta(), uid, marker_of(o.meta())))
                .collect()
        }
        match kind {
            Kind::ServiceAccount => meta_of(&self.service_accounts, ns, uid),
            Kind::ConfigMap => meta_of(&self.config_maps, ns, uid),
            Kind::Service => meta_of(&self.services, ns, uid),
            Kind::Deployment => in_ns(self.deployments.state(), ns)
                .map(|d| child_meta(&d.metadata, uid, deployment_marker(&d)))
                .collect(),
            Kind::HorizontalPodAutoscaler => in_ns(self.hpas.state(), ns)
                .map(|h| child_meta(&h.metadata, uid, hpa_marker(&h)))
                .collect(),
            Kind::PodDisruptionBudget => meta_of(&self.pdbs, ns, uid),
            Kind::NetworkPolicy => meta_of(&self.network_policies, ns, uid),
            Kind::Ingress => meta_of(&self.ingresses, ns, uid),
            Kind::Job => meta_of(&self.jobs, ns, uid),
            Kind::StatefulSet => meta_of(&self.statefulsets, ns, uid),
        }
    }

    fn deployment(&self, ns: &str, name: &str) -> Option<Arc<Deployment>> {
        self.deployments.get(&ObjectRef::new(name).within(ns))
    }

    /// Specs in `ns` that reference `platform`.
    pub fn specs_for(&self, ns: &str, platform: &str) -> Vec<Arc<ServiceSpec>> {
        in_ns(self.specs.state(), ns)
            .filter(|s| s.spec.platform_ref.name == platform)
            .collect()
    }
}

pub fn workload_from_deployment(d: &Deployment) -> WorkloadObs {
    let spec = d.spec.as_ref();
    let st = d.status.clone().unwrap_or_default();
    WorkloadObs {
        generation: d.metadata.generation.unwrap_or_default(),
        observed_generation: st.observed_generation.unwrap_or_default(),
        desired: spec.and_then(|s| s.replicas).unwrap_or(1),
        replicas: st.replicas.unwrap_or_default(),
        ready: st.ready_replicas.unwrap_or_default(),
        updated: st.updated_replicas.unwrap_or_default(),
        available: st.available_replicas.unwrap_or_default(),
        version: spec
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.as_ref())
            .and_then(|l| l.get(names::LABEL_VERSION).cloned()),
    }
}

pub fn workload_from_statefulset(s: &StatefulSet) -> WorkloadObs {
    let st = s.status.clone().unwrap_or_default();
    let desired = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let same_revision = st.current_revision == st.update_revision;
    WorkloadObs {
        generation: s.metadata.generation.unwrap_or_default(),
        observed_generation: st.observed_generation.unwrap_or_default(),
        desired,
        replicas: st.replicas,
        ready: st.ready_replicas.unwrap_or_default(),
        updated: if same_revision {
            st.replicas
        } else {
            st.updated_replicas.unwrap_or_default()
        },
        available: st.available_replicas.unwrap_or_default(),
        version: None,
    }
}

pub fn job_state(job: Option<&Job>) -> JobState {
    let Some(job) = job else {
        return JobState::Absent;
    };
    let conds = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let is = |t: &str| conds.iter().any(|c| c.type_ == t && c.status == "True");
    if is("Complete") || is("SuccessCriteriaMet") {
        JobState::Succeeded
    } else if let Some(c) = conds
        .iter()
        .find(|c| (c.type_ == "Failed" || c.type_ == "FailureTarget") && c.status == "True")
    {
        JobState::Failed(format!(
            "{}: {}",
            c.reason.as_deref().unwrap_or("Failed"),
            c.message.as_deref().unwrap_or("the job failed")
        ))
    } else {
        JobState::Running
    }
}

/// Every secret key the platform (and its accepted ServiceSpecs) hands to
/// pods, with the field that references it.
fn secret_refs(
    p: &BookingPlatform,
    specs: &BTreeMap<Component, &ServiceSpec>,
) -> Vec<(String, String, String)> {
    let s = &p.spec;
    let mut refs = vec![(
        s.database.secret_ref.name.clone(),
        s.database.secret_ref.key_or("url").to_string(),
        "spec.database.secretRef".to_string(),
    )];
    if let Some(ext) = &s.redis.external {
        refs.push((
            ext.secret_ref.name.clone(),
            ext.secret_ref.key_or("url").to_string(),
            "spec.redis.external.secretRef".into(),
        ));
    }
    refs.push((
        s.auth.jwt_signing_key_secret_ref.name.clone(),
        s.auth
            .jwt_signing_key_secret_ref
            .key_or("signing-key")
            .to_string(),
        "spec.auth.jwtSigningKeySecretRef".into(),
    ));
    for (i, o) in s.auth.oidc_providers.iter().enumerate() {
        for key in ["client-id", "client-secret"] {
            refs.push((
                o.secret_name.clone(),
                key.to_string(),
                format!("spec.auth.oidcProviders[{i}].secretName"),
            ));
        }
    }
    if let Some(stripe) = s.payments.as_ref().and_then(|p| p.stripe.as_ref())
        && s.payments.as_ref().map(|p| p.provider) == Some(crate::crd::PaymentProvider::Stripe)
    {
        refs.push((
            stripe.api_key_secret_ref.name.clone(),
            stripe.api_key_secret_ref.key_or("api-key").to_string(),
            "spec.payments.stripe.apiKeySecretRef".into(),
        ));
        refs.push((
            stripe.webhook_secret_ref.name.clone(),
            stripe
                .webhook_secret_ref
                .key_or("webhook-secret")
                .to_string(),
            "spec.payments.stripe.webhookSecretRef".into(),
        ));
    }
    for (c, spec) in specs {
        for (i, e) in spec.spec.env.iter().enumerate() {
            if let Some(r) = &e.secret_key_ref {
                refs.push((
                    r.name.clone(),
                    r.key_or(&e.name).to_string(),
                    format!(
                        "ServiceSpec {} ({c}) spec.env[{i}].secretKeyRef",
                        spec.name_any()
                    ),
                ));
            }
        }
    }
    refs
}

/// Names of every Secret a platform depends on (for the Secret → platform mapper).
pub fn referenced_secrets(p: &BookingPlatform, specs: &[Arc<ServiceSpec>]) -> Vec<String> {
    let chosen: BTreeMap<Component, &ServiceSpec> = specs
        .iter()
        .map(|s| (s.spec.component, s.as_ref()))
        .collect();
    secret_refs(p, &chosen)
        .into_iter()
        .map(|(n, _, _)| n)
        .collect()
}

fn validate(
    p: &BookingPlatform,
    specs: &BTreeMap<Component, &ServiceSpec>,
    secrets: &Store<Secret>,
) -> Vec<Problem> {
    let ns = p.namespace().unwrap_or_default();
    let mut problems = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (name, key, field) in secret_refs(p, specs) {
        if !seen.insert((name.clone(), key.clone())) {
            continue;
        }
        match secrets.get(&ObjectRef::new(&name).within(&ns)) {
            None => problems.push(Problem {
                reason: "SecretNotFound".into(),
                message: format!("secret {name} ({field}) not found in namespace {ns}"),
            }),
            Some(s) => {
                let has = s.data.as_ref().is_some_and(|d| d.contains_key(&key))
                    || s.string_data.as_ref().is_some_and(|d| d.contains_key(&key));
                if !has {
                    problems.push(Problem {
                        reason: "SecretKeyNotFound".into(),
                        message: format!("secret {name} ({field}) has no key \"{key}\""),
                    });
                }
            }
        }
    }
    problems
}

fn api_resource(kind: Kind) -> ApiResource {
    let (g, v, k, plural) = kind.gvk();
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, k), plural)
}

fn dyn_api(client: &Client, ns: &str, kind: Kind) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &api_resource(kind))
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
    let blocking = problems.iter().any(|p| p.reason != "ServiceSpecConflict");

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

async fn apply_plan(
    ctx: &Context,
    ns: &str,
    uid: &str,
    plan: &Plan,
    observed: &Observed,
) -> Result<Outcome, Error> {
    let stores = &ctx.stores;
    let mut observed_by_kind: BTreeMap<Kind, Vec<ChildMeta>> = BTreeMap::new();
    for kind in Kind::ALL {
        observed_by_kind.insert(kind, stores.children(kind, ns, uid));
    }
    let to_apply: Vec<Child> = {
        let applied = ctx
            .applied
            .lock()
            .map_err(|_| Error::Invalid("state lock poisoned".into()))?;
        plan.objects
            .iter()
            .filter(|child| {
                let seen = observed_by_kind
                    .get(&child.kind)
                    .and_then(|v| v.iter().find(|m| m.name == child.name));
                let key = (child.kind, ns.to_string(), child.name.clone());
                let needs = needs_apply(child, seen, applied.get(&key));
                if !needs {
                    ctx.metrics
                        .skipped
                        .with_label_values(&[child.kind.name()])
                        .inc();
                }
                needs
            })
            .cloned()
            .collect()
    };

    // Record markers of skipped objects seen for the first time (e.g. after
    // a restart) so later foreign edits are noticed.
    {
        let mut applied = ctx
            .applied
            .lock()
            .map_err(|_| Error::Invalid("state lock poisoned".into()))?;
        for child in &plan.objects {
            let key = (child.kind, ns.to_string(), child.name.clone());
            if applied.contains_key(&key) {
                continue;
            }
            if let Some(m) = observed_by_kind
                .get(&child.kind)
                .and_then(|v| v.iter().find(|m| m.name == child.name))
                && m.hash.as_deref() == Some(child.hash.as_str())
            {
                applied.insert(key, (child.hash.clone(), m.marker.clone()));
            }
        }
    }

    let params = PatchParams {
        field_manager: Some(MANAGER.to_string()),
        force: true,
        field_validation: Some(ValidationDirective::Strict),
        ..PatchParams::default()
    };
    let client = ctx.client.clone();
    let metrics = ctx.metrics.clone();
    let ns_owned = ns.to_string();
    let results: Vec<Result<(Kind, String, String, String), Error>> =
        futures::stream::iter(to_apply)
            .map(move |child: Child| {
                let params = params.clone();
                let api = dyn_api(&client, &ns_owned, child.kind);
                let metrics = metrics.clone();
                async move {
                    let applied = api
                        .patch(&child.name, &params, &Patch::Apply(&child.object))
                        .await?;
                    metrics
                        .applies
                        .with_label_values(&[child.kind.name()])
                        .inc();
                    let marker = match child.kind {
                        Kind::HorizontalPodAutoscaler => {
                            let spec = applied.data.get("spec").cloned().unwrap_or(Value::Null);
                            format!("s{}", crate::hash::json_digest(&spec))
                        }
                        Kind::Deployment => {
                            let mut d: Deployment =
                                serde_json::from_value(serde_json::to_value(&applied)?)?;
                            strip_deployment(&mut d);
                            deployment_marker(&d)
                        }
                        _ => marker_of(&applied.metadata),
                    };
                    Ok((child.kind, child.name, child.hash, marker))
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
    let mut applied_names = Vec::new();
    let mut first_err = None;
    {
        let mut applied = ctx
            .applied
            .lock()
            .map_err(|_| Error::Invalid("state lock poisoned".into()))?;
        for r in results {
            match r {
                Ok((kind, name, hash, marker)) => {
                    applied.insert((kind, ns.to_string(), name.clone()), (hash, marker));
                    applied_names.push(format!("{}/{name}", kind.name()));
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }

    // Prune owned objects that are no longer desired (HPA after autoscaling
    // is removed, Ingress, managed Redis, migration Jobs of older versions).
    let mut pruned = Vec::new();
    for (kind, seen) in &observed_by_kind {
        let desired = build::desired_names(plan, *kind);
        for m in seen
            .iter()
            .filter(|m| m.owned && !desired.contains(&m.name.as_str()))
        {
            let api = dyn_api(&ctx.client, ns, *kind);
            let dp = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..DeleteParams::default()
            };
            match api.delete(&m.name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            if let Ok(mut applied) = ctx.applied.lock() {
                applied.remove(&(*kind, ns.to_string(), m.name.clone()));
            }
            pruned.push(format!("{}/{}", kind.name(), m.name));
        }
    }

    let job_created = plan.migration_job_desired
        && matches!(observed.migration_job, Some(JobState::Absent) | None)
        && applied_names
            .iter()
            .any(|n| n == &format!("Job/{}", plan.migration_job));
    let moved_version = plan.migration_phase == build::MigrationPhase::Succeeded
        && Component::ALL.iter().any(|c| {
            observed
                .deployed
                .get(c)
                .is_some_and(|v| v != &plan.target_version)
        });
    Ok(Outcome {
        applied: applied_names,
        pruned,
        job_created,
        moved_version,
    })
}

/// Skip objects whose applied hash matches and that nobody changed since we
/// applied them.
fn needs_apply(child: &Child, seen: Option<&ChildMeta>, record: Option<&(String, String)>) -> bool {
    let Some(seen) = seen else {
        return true;
    };
    if seen.hash.as_deref() != Some(child.hash.as_str()) {
        return true;
    }
    match record {
        Some((hash, marker)) if hash == &child.hash => !same_marker(child, marker, &seen.marker),
        // Unknown marker (first look after a restart): trust the hash.
        _ => false,
    }
}

async fn write_status(
    ctx: &Context,
    p: &BookingPlatform,
    ns: &str,
    status: &BookingPlatformStatus,
) -> Result<(), Error> {
    let api: Api<BookingPlatform> = Api::namespaced(ctx.client.clone(), ns);
    let body = json!({
        "apiVersion": format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION),
        "kind": "BookingPlatform",
        "status": status,
    });
    api.patch_status(
        &p.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

async fn publish_events(
    ctx: &Context,
    p: &BookingPlatform,
    previous: Option<&BookingPlatformStatus>,
    new: &BookingPlatformStatus,
    plan: &Plan,
    outcome: &Outcome,
) {
    let mut events: Vec<(EventType, &str, &str, String)> = Vec::new();
    let prev = |t: &str| {
        previous
            .and_then(|s| status::find(&s.conditions, t))
            .cloned()
    };
    let cur = |t: &str| status::find(&new.conditions, t).cloned();
    if outcome.job_created {
        events.push((
            EventType::Normal,
            "MigrationStarted",
            "Migrate",
            format!(
                "created migration job {} for version {}; services stay on their current version until it succeeds",
                plan.migration_job, plan.target_version
            ),
        ));
    }
    if outcome.moved_version {
        events.push((
            EventType::Normal,
            "RolloutStarted",
            "Rollout",
            format!(
                "migration to {} succeeded; rolling the services to it",
                plan.target_version
            ),
        ));
    }
    if !outcome.applied.is_empty() {
        let mut list = outcome.applied.clone();
        list.sort();
        let shown: Vec<String> = list.iter().take(12).cloned().collect();
        let more = list.len().saturating_sub(shown.len());
        let suffix = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        events.push((
            EventType::Normal,
            "Applied",
            "Apply",
            format!(
                "applied {} object(s): {}{suffix}",
                list.len(),
                shown.join(", ")
            ),
        ));
    }
    if !outcome.pruned.is_empty() {
        events.push((
            EventType::Normal,
            "Pruned",
            "Delete",
            format!(
                "deleted objects no longer desired: {}",
                outcome.pruned.join(", ")
            ),
        ));
    }
    if let (Some(d), old) = (cur(status::DEGRADED), prev(status::DEGRADED))
        && d.status == "True"
        && old.as_ref().map(|o| (&o.status, &o.message)) != Some((&d.status, &d.message))
    {
        events.push((
            EventType::Warning,
            leak(&d.reason),
            "Validate",
            d.message.clone(),
        ));
    }
    if let (Some(r), old) = (cur(status::READY), prev(status::READY))
        && r.status == "True"
        && old.as_ref().map(|o| o.status.as_str()) != Some("True")
    {
        events.push((EventType::Normal, "Ready", "Observe", r.message.clone()));
    }
    if let (Some(pr), old) = (cur(status::PROGRESSING), prev(status::PROGRESSING))
        && pr.reason == "Paused"
        && old.as_ref().map(|o| o.reason.as_str()) != Some("Paused")
    {
        events.push((EventType::Normal, "Paused", "Pause", pr.message.clone()));
    }
    let reference = p.object_ref(&());
    for (type_, reason, action, note) in events {
        let ev = KEvent {
            type_,
            reason: reason.to_string(),
            note: Some(truncate(&note, 1000)),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&ev, &reference).await {
            tracing::warn!(error = %e, "publishing event failed");
        }
    }
}

/// Event reasons are short static words; Degraded reasons come from a fixed
/// set, mapped here without allocation games.
fn leak(reason: &str) -> &'static str {
    match reason {
        "SecretNotFound" => "SecretNotFound",
        "SecretKeyNotFound" => "SecretKeyNotFound",
        "ServiceSpecConflict" => "ServiceSpecConflict",
        "MigrationFailed" => "MigrationFailed",
        _ => "Degraded",
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Maps a changed ServiceSpec to the platform(s) it affects.
pub fn spec_to_platform(s: &ServiceSpec) -> Option<ObjectRef<BookingPlatform>> {
    let ns = s.namespace()?;
    Some(ObjectRef::new(&s.spec.platform_ref.name).within(&ns))
}

/// Maps a changed Secret to the platforms that reference it.
pub fn secret_to_platforms(stores: &Stores, secret: &Secret) -> Vec<ObjectRef<BookingPlatform>> {
    let Some(ns) = secret.namespace() else {
        return vec![];
    };
    let name = secret.name_any();
    in_ns(stores.platforms.state(), &ns)
        .filter(|p| {
            let specs = stores.specs_for(&ns, &p.name_any());
            referenced_secrets(p, &specs).contains(&name)
        })
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// Drops secret values: only key names stay in memory.
pub fn strip_secret(s: &mut Secret) {
    if let Some(data) = s.data.as_mut() {
        for v in data.values_mut() {
            v.0.clear();
        }
    }
    s.string_data = None;
    s.metadata.managed_fields = None;
    s.metadata.annotations = None;
}

/// Local-only annotation on cached Deployments: digest of the pod spec that
/// was stripped to save memory (never written to the cluster).
const TEMPLATE_DIGEST: &str = "berth.dev/cached-template-digest";

/// Drops the parts of a Deployment the controller never reads, keeping a
/// digest of the pod spec so foreign edits to it are still noticed.
pub fn strip_deployment(d: &mut Deployment) {
    d.metadata.managed_fields = None;
    if let Some(spec) = d.spec.as_mut()
        && let Some(pod) = spec.template.spec.take()
    {
        let digest = crate::hash::json_digest(&serde_json::to_value(&pod).unwrap_or(Value::Null));
        d.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(TEMPLATE_DIGEST.into(), digest);
    }
}

/// Change marker of a Deployment: a digest of everything in its spec but
/// `replicas`, then `|replicas`. An autoscaler changing replicas (which bumps
/// `generation`) is thus not mistaken for a foreign edit.
pub fn deployment_marker(d: &Deployment) -> String {
    let mut spec = d.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.take();
    let template = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TEMPLATE_DIGEST).cloned())
        .unwrap_or_default();
    let v = json!({"spec": spec, "template": template});
    format!(
        "d{}|{}",
        crate::hash::json_digest(&v),
        replicas.unwrap_or(-1)
    )
}

/// Compares change markers; for a Deployment whose replicas belong to an
/// autoscaler, the replica count is ignored.
fn same_marker(child: &Child, a: &str, b: &str) -> bool {
    if child.kind == Kind::Deployment && child.object["spec"].get("replicas").is_none() {
        a.split('|').next() == b.split('|').next()
    } else {
        a == b
    }
}

pub fn strip_job(j: &mut Job) {
    j.metadata.managed_fields = None;
    if let Some(spec) = j.spec.as_mut() {
        spec.template.spec = None;
    }
}

pub fn strip_statefulset(s: &mut StatefulSet) {
    s.metadata.managed_fields = None;
    if let Some(spec) = s.spec.as_mut() {
        spec.template.spec = None;
        spec.volume_claim_templates = None;
    }
}

/// Convenience for tests and tools: apply a list of plan children to a
/// namespace (server dry-run when `dry_run`), returning the first error.
pub async fn apply_children(
    client: &Client,
    ns: &str,
    children: &[Child],
    dry_run: bool,
) -> Result<(), Error> {
    let params = PatchParams {
        field_manager: Some(MANAGER.to_string()),
        force: true,
        dry_run,
        field_validation: Some(ValidationDirective::Strict),
    };
    futures::stream::iter(children.to_vec())
        .map(move |c: Child| {
            let params = params.clone();
            let api = dyn_api(client, ns, c.kind);
            async move {
                api.patch(&c.name, &params, &Patch::Apply(&c.object))
                    .await
                    .map(|_| ())
                    .map_err(Error::from)
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}
