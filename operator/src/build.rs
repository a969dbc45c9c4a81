//! Desired state as pure functions: (platform, its ServiceSpecs, a few
//! observed facts) → the exact objects to apply. No I/O, no clock, no
//! randomness, so golden-YAML tests pin the output (`tests/golden/`).
//!
//! The only observed facts that shape the output are the version each
//! component's Deployment runs now and the state of the migration Job for the
//! requested version: Deployments move to a new version only once its
//! migration Job has succeeded.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::crd::{
    Autoscaling, BookingPlatform, CircuitBreaker, Component, Dependency, EnvVar, IntOrPercent,
    ManagedRedis, PaymentProvider, Resources, Retry, Rollout, ServiceSpec,
};
use crate::names::*;

pub const HTTP_PORT: i32 = 8080;
pub const GRPC_PORT: i32 = 9090;
pub const REDIS_PORT: i32 = 6379;
pub const CONFIG_DIR: &str = "/etc/berth";
pub const CONFIG_FILE: &str = "config.toml";
const DEFAULT_REPLICAS: i32 = 2;
const DEFAULT_REDIS_REPLICAS: i32 = 3;
const DEFAULT_REDIS_IMAGE: &str = "redis:7.4-alpine";
const DEFAULT_SHUTDOWN_DELAY_MS: u64 = 5_000;
const DEFAULT_DRAIN_MS: u64 = 20_000;
/// Slack between the end of the drain and the kubelet's SIGKILL.
const GRACE_MARGIN_SECONDS: i64 = 5;
const NONROOT_UID: i64 = 65532;
const REDIS_UID: i64 = 999;

/// Kinds the operator creates. Every child is one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    ServiceAccount,
    ConfigMap,
    Service,
    Deployment,
    HorizontalPodAutoscaler,
    PodDisruptionBudget,
    NetworkPolicy,
    Ingress,
    Job,
    StatefulSet,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::ServiceAccount,
        Kind::ConfigMap,
        Kind::Service,
        Kind::Deployment,
        Kind::HorizontalPodAutoscaler,
        Kind::PodDisruptionBudget,
        Kind::NetworkPolicy,
        Kind::Ingress,
        Kind::Job,
        Kind::StatefulSet,
    ];

    /// (group, version, kind, plural)
    pub fn gvk(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Kind::ServiceAccount => ("", "v1", "ServiceAccount", "serviceaccounts"),
            Kind::ConfigMap => ("", "v1", "ConfigMap", "configmaps"),
            Kind::Service => ("", "v1", "Service", "services"),
            Kind::Deployment => ("apps", "v1", "Deployment", "deployments"),
            Kind::HorizontalPodAutoscaler => (
                "autoscaling",
                "v2",
                "HorizontalPodAutoscaler",
                "horizontalpodautoscalers",
            ),
            Kind::PodDisruptionBudget => (
                "policy",
                "v1",
                "PodDisruptionBudget",
                "poddisruptionbudgets",
            ),
            Kind::NetworkPolicy => (
                "networking.k8s.io",
                "v1",
                "NetworkPolicy",
                "networkpolicies",
            ),
            Kind::Ingress => ("networking.k8s.io", "v1", "Ingress", "ingresses"),
            Kind::Job => ("batch", "v1", "Job", "jobs"),
            Kind::StatefulSet => ("apps", "v1", "StatefulSet", "statefulsets"),
        }
    }

    pub fn api_version(self) -> String {
        let (g, v, _, _) = self.gvk();
        if g.is_empty() {
            v.to_string()
        } else {
            format!("{g}/{v}")
        }
    }

    pub fn name(self) -> &'static str {
        self.gvk().2
    }
}

/// One object to apply.
#[derive(Clone, Debug, PartialEq)]
pub struct Child {
    pub kind: Kind,
    pub name: String,
    /// Full object (apiVersion, kind, metadata with owner reference, spec),
    /// with the `berth.dev/applied-hash` annotation already set.
    pub object: Value,
    /// Digest of the object without the hash annotation.
    pub hash: String,
}

/// State of the migration Job for the requested version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    Absent,
    Running,
    Succeeded,
    Failed(String),
}

/// Facts read from the cluster that the desired state depends on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Version label of each component's existing Deployment pod template.
    pub deployed: BTreeMap<Component, String>,
    /// State of the migration Job named for the requested version.
    pub migration_job: Option<JobState>,
}

/// Where the migration for the requested version stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MigrationPhase {
    /// The Job is created or waiting to run.
    Pending,
    Running,
    /// Done (the Job succeeded, or every Deployment already runs the version).
    Succeeded,
    Failed,
}

impl MigrationPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationPhase::Pending => "Pending",
            MigrationPhase::Running => "Running",
            MigrationPhase::Succeeded => "Succeeded",
            MigrationPhase::Failed => "Failed",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ComponentPlan {
    pub component: Component,
    /// `ServiceSpec/<name>` or `defaults`.
    pub source: String,
    /// Version its Deployment gets; `None` = no Deployment yet (first
    /// migration not finished).
    pub version: Option<String>,
    /// Fixed replicas, or `None` when an autoscaler owns the count.
    pub replicas: Option<i32>,
    pub autoscaling: Option<Autoscaling>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub objects: Vec<Child>,
    pub components: Vec<ComponentPlan>,
    pub target_version: String,
    pub migration_job: String,
    pub migration_phase: MigrationPhase,
    /// Failure message of the migration Job, if it failed.
    pub migration_failure: Option<String>,
    /// Whether a Job for the target version is part of the desired state.
    pub migration_job_desired: bool,
    pub redis_replicas: Option<i32>,
}

impl Plan {
    pub fn find(&self, kind: Kind, name: &str) -> Option<&Child> {
        self.objects
            .iter()
            .find(|c| c.kind == kind && c.name == name)
    }

    /// All objects as one multi-document YAML string (golden files).
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        for (i, child) in self.objects.iter().enumerate() {
            if i > 0 {
                out.push_str("---\n");
            }
            let v = crate::hash::canonical(child.object.clone());
            out.push_str(&serde_saphyr::to_string(&v).unwrap_or_default());
        }
        out
    }
}

/// Context every builder needs.
struct Ctx<'a> {
    p: &'a BookingPlatform,
    name: String,
    ns: String,
    owner: Value,
}

impl Ctx<'_> {
    fn labels(&self, role_or_component: &str, version: Option<&str>) -> Value {
        let mut l = json!({
            LABEL_NAME: "berth",
            LABEL_INSTANCE: self.name,
            LABEL_COMPONENT: role_or_component,
            LABEL_PART_OF: "berth",
            LABEL_MANAGED_BY: MANAGER,
            LABEL_PLATFORM: self.name,
            LABEL_ROLE: role_or_component,
        });
        if let (Some(v), Some(map)) = (version, l.as_object_mut()) {
            map.insert(LABEL_VERSION.into(), json!(v));
        }
        l
    }

    fn selector(&self, role: &str) -> Value {
        json!({ LABEL_PLATFORM: self.name, LABEL_ROLE: role })
    }

    fn meta(&self, name: &str, role: &str, version: Option<&str>) -> Value {
        json!({
            "name": name,
            "namespace": self.ns,
            "labels": self.labels(role, version),
            "ownerReferences": [self.owner],
        })
    }

    fn child(
        &self,
        kind: Kind,
        name: &str,
        role: &str,
        version: Option<&str>,
        body: Value,
    ) -> Child {
        let mut object = json!({
            "apiVersion": kind.api_version(),
            "kind": kind.name(),
            "metadata": self.meta(name, role, version),
        });
        if let (Some(obj), Value::Object(fields)) = (object.as_object_mut(), body) {
            for (k, v) in fields {
                obj.insert(k, v);
            }
        }
        let hash = crate::hash::json_digest(&object);
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("annotations".into(), json!({ ANNOTATION_HASH: hash }));
        }
        Child {
            kind,
            name: name.to_string(),
            object,
            hash,
        }
    }

    fn image(&self, version: &str) -> String {
        format!("{}:{version}", self.p.spec.image.repository)
    }

    fn pull_policy(&self) -> &'static str {
        self.p
            .spec
            .image
            .pull_policy
            .map_or("IfNotPresent", |p| p.as_str())
    }

    fn pull_secrets(&self) -> Option<Value> {
        let s = &self.p.spec.image.pull_secrets;
        (!s.is_empty()).then(|| json!(s.iter().map(|n| json!({"name": n})).collect::<Vec<_>>()))
    }

    fn svc_host(&self, c: Component) -> String {
        format!("{}.{}.svc", component_name(&self.name, c), self.ns)
    }

    fn redis_nodes(&self) -> Vec<String> {
        let Some(m) = &self.p.spec.redis.managed else {
            return Vec::new();
        };
        let n = m.replicas.unwrap_or(DEFAULT_REDIS_REPLICAS);
        let sts = redis_name(&self.name);
        (0..n)
            .map(|i| format!("redis://{sts}-{i}.{sts}.{}.svc:{REDIS_PORT}", self.ns))
            .collect()
    }

    fn network_policy_enabled(&self) -> bool {
        self.p
            .spec
            .network_policy
            .as_ref()
            .and_then(|n| n.enabled)
            .unwrap_or(true)
    }
}

fn owner_reference(p: &BookingPlatform) -> Value {
    json!({
        "apiVersion": format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION),
        "kind": "BookingPlatform",
        "name": p.metadata.name.clone().unwrap_or_default(),
        "uid": p.metadata.uid.clone().unwrap_or_default(),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// Picks, per component, the ServiceSpec that configures it: the oldest one
/// (by creation time, then name) wins; the others are reported as conflicts.
pub fn select_service_specs<'a>(
    specs: impl IntoIterator<Item = &'a ServiceSpec>,
) -> (
    BTreeMap<Component, &'a ServiceSpec>,
    Vec<(&'a ServiceSpec, String)>,
) {
    let mut sorted: Vec<&ServiceSpec> = specs.into_iter().collect();
    sorted.sort_by(|a, b| {
        let ka = (
            a.metadata.creation_timestamp.as_ref().map(|t| t.0),
            a.metadata.name.clone(),
        );
        let kb = (
            b.metadata.creation_timestamp.as_ref().map(|t| t.0),
            b.metadata.name.clone(),
        );
        ka.cmp(&kb)
    });
    let mut chosen: BTreeMap<Component, &ServiceSpec> = BTreeMap::new();
    let mut conflicts = Vec::new();
    for s in sorted {
        match chosen.get(&s.spec.component) {
            Some(winner) => conflicts.push((
                s,
                format!(
                    "component {} of platform {} is already configured by ServiceSpec {}",
                    s.spec.component,
                    s.spec.platform_ref.name,
                    winner.metadata.name.as_deref().unwrap_or("?")
                ),
            )),
            None => {
                chosen.insert(s.spec.component, s);
            }
        }
    }
    (chosen, conflicts)
}

/// The whole desired state of one platform.
pub fn plan(
    platform: &BookingPlatform,
    specs: &BTreeMap<Component, &ServiceSpec>,
    observed: &Observed,
) -> Plan {
    let name = platform.metadata.name.clone().unwrap_or_default();
    let ns = platform.metadata.namespace.clone().unwrap_or_default();
    let ctx = Ctx {
        p: platform,
        name: name.clone(),
        ns,
        owner: owner_reference(platform),
    };
    let target = platform.spec.image.version.clone();
    let job_name = migration_job_name(&name, &target);

    // Migration gate.
    let all_at_target = Component::ALL
        .iter()
        .all(|c| observed.deployed.get(c) == Some(&target));
    let (phase, failure) = match (&observed.migration_job, all_at_target) {
        (Some(JobState::Succeeded), _) => (MigrationPhase::Succeeded, None),
        (Some(JobState::Failed(msg)), _) => (MigrationPhase::Failed, Some(msg.clone())),
        (_, true) => (MigrationPhase::Succeeded, None),
        (Some(JobState::Running), false) => (MigrationPhase::Running, None),
        (Some(JobState::Absent) | None, false) => (MigrationPhase::Pending, None),
    };
    let migrated = phase == MigrationPhase::Succeeded;
    // Keep a Job that exists (so it stays owned and visible); create one only
    // while the version still needs migrating.
    let job_exists = matches!(
        observed.migration_job,
        Some(JobState::Running | JobState::Succeeded | JobState::Failed(_))
    );
    let job_desired = job_exists || !all_at_target;

    let defaults = platform.spec.defaults.clone().unwrap_or_default();
    let mut objects = Vec::new();
    let mut components = Vec::new();

    for c in Component::ALL {
        let spec = specs.get(&c).copied();
        let version = if migrated {
            Some(target.clone())
        } else {
            observed.deployed.get(&c).cloned()
        };
        let autoscaling = match spec {
            Some(s) if s.spec.replicas.is_some() => None,
            Some(s) if s.spec.autoscaling.is_some() => s.spec.autoscaling.clone(),
            _ => defaults.autoscaling.clone(),
        };
        let replicas = if autoscaling.is_some() {
            None
        } else {
            Some(
                spec.and_then(|s| s.spec.replicas)
                    .or(defaults.replicas)
                    .unwrap_or(DEFAULT_REPLICAS),
            )
        };
        let cp = ComponentPlan {
            component: c,
            source: spec.map_or_else(
                || "defaults".to_string(),
                |s| format!("ServiceSpec/{}", s.metadata.name.as_deref().unwrap_or("?")),
            ),
            version,
            replicas,
            autoscaling,
        };
        objects.extend(component_objects(&ctx, &cp, spec, &defaults));
        components.push(cp);
    }

    if let Some(spec) = &platform.spec.ingress {
        objects.push(ingress(&ctx, spec));
    }
    objects.push(service_account(
        &ctx,
        &migrate_account_name(&name),
        ROLE_MIGRATE,
    ));
    if ctx.network_policy_enabled() {
        objects.push(migrate_network_policy(&ctx));
    }
    if job_desired {
        objects.push(migration_job(&ctx, &job_name, &target));
    }
    let redis_replicas = platform
        .spec
        .redis
        .managed
        .as_ref()
        .map(|m| m.replicas.unwrap_or(DEFAULT_REDIS_REPLICAS));
    if let Some(m) = &platform.spec.redis.managed {
        objects.extend(redis_objects(&ctx, m));
    }

    Plan {
        objects,
        components,
        target_version: target,
        migration_job: job_name,
        migration_phase: phase,
        migration_failure: failure,
        migration_job_desired: job_desired,
        redis_replicas,
    }
}

// ---------------------------------------------------------------------------
// Components
// ---------------------------------------------------------------------------

fn component_objects(
    ctx: &Ctx<'_>,
    cp: &ComponentPlan,
    spec: Option<&ServiceSpec>,
    defaults: &crate::crd::ServiceDefaults,
) -> Vec<Child> {
    let c = cp.component;
    let role = c.as_str();
    let name = component_name(&ctx.name, c);
    let mut out = vec![
        service_account(ctx, &name, role),
        config_map(ctx, c, spec, defaults),
        service(ctx, c),
    ];
    if let Some(version) = &cp.version {
        out.push(deployment(ctx, cp, version, spec, defaults));
    }
    if let Some(a) = &cp.autoscaling {
        out.push(hpa(ctx, c, a));
    }
    out.push(pdb(ctx, &name, role, json!({"maxUnavailable": 1})));
    if ctx.network_policy_enabled() {
        out.push(component_network_policy(ctx, c));
    }
    out
}

fn service_account(ctx: &Ctx<'_>, name: &str, role: &str) -> Child {
    // No workload talks to the Kubernetes API: no token is mounted.
    ctx.child(
        Kind::ServiceAccount,
        name,
        role,
        None,
        json!({"automountServiceAccountToken": false}),
    )
}

/// Merges a ServiceSpec's dependency settings over the platform defaults,
/// field by field.
pub fn merged_dependencies(
    spec: Option<&ServiceSpec>,
    defaults: &crate::crd::ServiceDefaults,
) -> BTreeMap<String, Dependency> {
    let mut out = defaults.dependencies.clone();
    if let Some(s) = spec {
        for (dep, over) in &s.spec.dependencies {
            let base = out.remove(dep).unwrap_or_default();
            out.insert(dep.clone(), merge_dependency(base, over));
        }
    }
    out
}

fn merge_dependency(base: Dependency, over: &Dependency) -> Dependency {
    let retry = match (base.retry, &over.retry) {
        (Some(b), Some(o)) => Some(Retry {
            max_attempts: o.max_attempts.or(b.max_attempts),
            base_backoff: o.base_backoff.clone().or(b.base_backoff),
            max_backoff: o.max_backoff.clone().or(b.max_backoff),
            budget_ratio: o.budget_ratio.or(b.budget_ratio),
            budget_min_per_second: o.budget_min_per_second.or(b.budget_min_per_second),
            budget_window: o.budget_window.clone().or(b.budget_window),
        }),
        (b, o) => o.clone().or(b),
    };
    let circuit_breaker = match (base.circuit_breaker, &over.circuit_breaker) {
        (Some(b), Some(o)) => Some(CircuitBreaker {
            failure_rate_threshold: o.failure_rate_threshold.or(b.failure_rate_threshold),
            window: o.window.clone().or(b.window),
            minimum_calls: o.minimum_calls.or(b.minimum_calls),
            open_duration: o.open_duration.clone().or(b.open_duration),
            half_open_probes: o.half_open_probes.or(b.half_open_probes),
        }),
        (b, o) => o.clone().or(b),
    };
    Dependency {
        timeout: over.timeout.clone().or(base.timeout),
        retry,
        circuit_breaker,
    }
}

/// The service's TOML config: only the `[dependencies.*]` section, which the
/// services hot-reload. Everything that needs a restart is in the pod
/// template (environment), so a config change never restarts pods and the
/// template carries no config hash.
pub fn config_toml(deps: &BTreeMap<String, Dependency>) -> String {
    let mut root = toml::Table::new();
    let mut table = toml::Table::new();
    for (name, d) in deps {
        let mut t = toml::Table::new();
        if let Some(v) = &d.timeout {
            t.insert("timeout".into(), v.as_str().into());
        }
        if let Some(r) = &d.retry {
            let mut rt = toml::Table::new();
            if let Some(v) = r.max_attempts {
                rt.insert("max_attempts".into(), i64::from(v).into());
            }
            if let Some(v) = &r.base_backoff {
                rt.insert("base_backoff".into(), v.as_str().into());
            }
            if let Some(v) = &r.max_backoff {
                rt.insert("max_backoff".into(), v.as_str().into());
            }
            if let Some(v) = r.budget_ratio {
                rt.insert("budget_ratio".into(), v.into());
            }
            if let Some(v) = r.budget_min_per_second {
                rt.insert("budget_min_per_second".into(), i64::from(v).into());
            }
            if let Some(v) = &r.budget_window {
                rt.insert("budget_window".into(), v.as_str().into());
            }
            t.insert("retry".into(), rt.into());
        }
        if let Some(b) = &d.circuit_breaker {
            let mut bt = toml::Table::new();
            if let Some(v) = b.failure_rate_threshold {
                bt.insert("failure_rate_threshold".into(), v.into());
            }
            if let Some(v) = &b.window {
                bt.insert("window".into(), v.as_str().into());
            }
            if let Some(v) = b.minimum_calls {
                bt.insert("minimum_calls".into(), i64::from(v).into());
            }
            if let Some(v) = &b.open_duration {
                bt.insert("open_duration".into(), v.as_str().into());
            }
            if let Some(v) = b.half_open_probes {
                bt.insert("half_open_probes".into(), i64::from(v).into());
            }
            t.insert("breaker".into(), bt.into());
        }
        table.insert(name.clone(), t.into());
    }
    root.insert("dependencies".into(), table.into());
    let body = toml::to_string(&root).unwrap_or_default();
    format!(
        "# Generated by berth-operator; edits are overwritten.\n\
         # [dependencies.*] is reloaded by the service at run time (no restart).\n{body}"
    )
}

fn config_map(
    ctx: &Ctx<'_>,
    c: Component,
    spec: Option<&ServiceSpec>,
    defaults: &crate::crd::ServiceDefaults,
) -> Child {
    let deps = merged_dependencies(spec, defaults);
    ctx.child(
        Kind::ConfigMap,
        &config_map_name(&ctx.name, c),
        c.as_str(),
        None,
        json!({"data": { CONFIG_FILE: config_toml(&deps) }}),
    )
}

fn service(ctx: &Ctx<'_>, c: Component) -> Child {
    ctx.child(
        Kind::Service,
        &component_name(&ctx.name, c),
        c.as_str(),
        None,
        json!({"spec": {
            "type": "ClusterIP",
            "selector": ctx.selector(c.as_str()),
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"},
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"},
            ],
        }}),
    )
}

fn int_or_percent(v: &IntOrPercent) -> Value {
    match v.0.parse::<i64>() {
        Ok(n) => json!(n),
        Err(_) => json!(v.0),
    }
}

fn resources_json(
    r: Option<&Resources>,
    default_req: (&str, &str),
    default_mem_limit: &str,
) -> Value {
    let mut requests = serde_json::Map::new();
    let mut limits = serde_json::Map::new();
    let req = r.and_then(|r| r.requests.as_ref());
    let lim = r.and_then(|r| r.limits.as_ref());
    let cpu_req = req
        .and_then(|q| q.cpu.as_ref())
        .map_or(default_req.0, |q| q.0.as_str());
    let mem_req = req
        .and_then(|q| q.memory.as_ref())
        .map_or(default_req.1, |q| q.0.as_str());
    requests.insert("cpu".into(), json!(cpu_req));
    requests.insert("memory".into(), json!(mem_req));
    if let Some(cpu) = lim.and_then(|q| q.cpu.as_ref()) {
        limits.insert("cpu".into(), json!(cpu.0));
    }
    let mem_lim = lim
        .and_then(|q| q.memory.as_ref())
        .map_or(default_mem_limit, |q| q.0.as_str());
    limits.insert("memory".into(), json!(mem_lim));
    json!({"requests": requests, "limits": limits})
}

fn secret_env(name: &str, secret: &str, key: &str) -> Value {
    json!({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
}

fn plain_env(name: &str, value: &str) -> Value {
    json!({"name": name, "value": value})
}

/// Milliseconds of (delay, drain) from the platform's shutdown settings.
fn shutdown_millis(p: &BookingPlatform) -> (u64, u64) {
    let s = p.spec.shutdown.clone().unwrap_or_default();
    let delay = s
        .delay
        .and_then(|d| d.millis())
        .unwrap_or(DEFAULT_SHUTDOWN_DELAY_MS);
    let drain = s
        .drain_timeout
        .and_then(|d| d.millis())
        .unwrap_or(DEFAULT_DRAIN_MS);
    (delay, drain)
}

fn component_env(ctx: &Ctx<'_>, c: Component, overrides: &[EnvVar]) -> Vec<Value> {
    let spec = &ctx.p.spec;
    let (_, drain) = shutdown_millis(ctx.p);
    let mut env = vec![
        plain_env("BERTH_CONFIG", &format!("{CONFIG_DIR}/{CONFIG_FILE}")),
        plain_env("BERTH_LOG_FORMAT", "json"),
        // The preStop sleep already covers the routing delay; the service
        // starts draining as soon as SIGTERM arrives.
        plain_env("BERTH_SHUTDOWN__DELAY", "0s"),
        plain_env("BERTH_SHUTDOWN__DRAIN_TIMEOUT", &format!("{drain}ms")),
        secret_env(
            "BERTH_DATABASE_URL",
            &spec.database.secret_ref.name,
            spec.database.secret_ref.key_or("url"),
        ),
    ];
    if let Some(ext) = &spec.redis.external {
        env.push(secret_env(
            "BERTH_REDIS_URL",
            &ext.secret_ref.name,
            ext.secret_ref.key_or("url"),
        ));
    } else {
        let nodes = ctx.redis_nodes();
        if let Some(first) = nodes.first() {
            env.push(plain_env("BERTH_REDIS_URL", first));
        }
        env.push(plain_env(
            "BERTH_SERVICE__REDIS_LOCK_NODES",
            &nodes.join(","),
        ));
    }
    env.push(plain_env("BERTH_SERVICE__AUTH__ISSUER", &spec.auth.issuer));
    env.push(secret_env(
        "BERTH_SERVICE__AUTH__JWT_SIGNING_KEY",
        &spec.auth.jwt_signing_key_secret_ref.name,
        spec.auth.jwt_signing_key_secret_ref.key_or("signing-key"),
    ));
    let provider = spec
        .payments
        .as_ref()
        .map_or(PaymentProvider::None, |p| p.provider);
    match c {
        Component::User => {
            for o in &spec.auth.oidc_providers {
                let prefix = format!("BERTH_SERVICE__AUTH__OIDC__{}", o.name.to_ascii_uppercase());
                env.push(plain_env(&format!("{prefix}__ISSUER_URL"), &o.issuer_url));
                env.push(secret_env(
                    &format!("{prefix}__CLIENT_ID"),
                    &o.secret_name,
                    "client-id",
                ));
                env.push(secret_env(
                    &format!("{prefix}__CLIENT_SECRET"),
                    &o.secret_name,
                    "client-secret",
                ));
            }
        }
        Component::Booking => {
            env.push(plain_env(
                "BERTH_SERVICE__AVAILABILITY_GRPC",
                &format!(
                    "http://{}:{GRPC_PORT}",
                    ctx.svc_host(Component::Availability)
                ),
            ));
            env.push(plain_env(
                "BERTH_SERVICE__PAYMENTS__PROVIDER",
                if provider == PaymentProvider::Stripe {
                    "stripe"
                } else {
                    "none"
                },
            ));
        }
        Component::Payment => {
            env.push(plain_env(
                "BERTH_SERVICE__PAYMENTS__PROVIDER",
                if provider == PaymentProvider::Stripe {
                    "stripe"
                } else {
                    "none"
                },
            ));
            if let Some(stripe) = spec.payments.as_ref().and_then(|p| p.stripe.as_ref()) {
                env.push(secret_env(
                    "BERTH_SERVICE__STRIPE__API_KEY",
                    &stripe.api_key_secret_ref.name,
                    stripe.api_key_secret_ref.key_or("api-key"),
                ));
                env.push(secret_env(
                    "BERTH_SERVICE__STRIPE__WEBHOOK_SECRET",
                    &stripe.webhook_secret_ref.name,
                    stripe.webhook_secret_ref.key_or("webhook-secret"),
                ));
            }
        }
        Component::Availability | Component::Notification => {}
    }
    // Overrides replace same-named variables in place (duplicates would be
    // rejected by server-side apply: `name` is the list's merge key).
    for o in overrides {
        let value = match (&o.value, &o.secret_key_ref) {
            (_, Some(s)) => secret_env(&o.name, &s.name, s.key_or(&o.name)),
            (v, None) => plain_env(&o.name, v.as_deref().unwrap_or("")),
        };
        match env
            .iter_mut()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(o.name.as_str()))
        {
            Some(slot) => *slot = value,
            None => env.push(value),
        }
    }
    env
}

fn restricted_container_security() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

fn restricted_pod_security(uid: i64) -> Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

fn deployment(
    ctx: &Ctx<'_>,
    cp: &ComponentPlan,
    version: &str,
    spec: Option<&ServiceSpec>,
    defaults: &crate::crd::ServiceDefaults,
) -> Child {
    let c = cp.component;
    let role = c.as_str();
    let name = component_name(&ctx.name, c);
    let (delay_ms, drain_ms) = shutdown_millis(ctx.p);
    let delay_s = crate::duration::ceil_seconds(delay_ms);
    let grace = delay_s + crate::duration::ceil_seconds(drain_ms) + GRACE_MARGIN_SECONDS;
    let rollout: Rollout = spec
        .and_then(|s| s.spec.rollout.clone())
        .or_else(|| defaults.rollout.clone())
        .unwrap_or_default();
    let max_surge = rollout.max_surge.as_ref().map_or(json!(1), int_or_percent);
    let max_unavailable = rollout
        .max_unavailable
        .as_ref()
        .map_or(json!(0), int_or_percent);
    let resources = spec
        .and_then(|s| s.spec.resources.as_ref())
        .or(defaults.resources.as_ref());
    let overrides = spec.map(|s| s.spec.env.as_slice()).unwrap_or(&[]);
    let mut pod_spec = json!({
        "serviceAccountName": name,
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "terminationGracePeriodSeconds": grace,
        "securityContext": restricted_pod_security(NONROOT_UID),
        "topologySpreadConstraints": [{
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": ctx.selector(role)},
        }],
        "containers": [{
            "name": "berth",
            "image": ctx.image(version),
            "imagePullPolicy": ctx.pull_policy(),
            "args": ["serve", role],
            "ports": [
                {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
                {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            ],
            "env": component_env(ctx, c, overrides),
            "resources": resources_json(resources, ("100m", "128Mi"), "512Mi"),
            "startupProbe": {
                "httpGet": {"path": "/livez", "port": "http"},
                "periodSeconds": 2, "failureThreshold": 30, "timeoutSeconds": 2,
            },
            "livenessProbe": {
                "httpGet": {"path": "/livez", "port": "http"},
                "periodSeconds": 10, "failureThreshold": 3, "timeoutSeconds": 2,
            },
            "readinessProbe": {
                "httpGet": {"path": "/readyz", "port": "http"},
                "periodSeconds": 5, "failureThreshold": 2, "timeoutSeconds": 2,
            },
            "lifecycle": {"preStop": {"sleep": {"seconds": delay_s}}},
            "securityContext": restricted_container_security(),
            "volumeMounts": [
                {"name": "config", "mountPath": CONFIG_DIR, "readOnly": true},
                {"name": "tmp", "mountPath": "/tmp"},
            ],
        }],
        "volumes": [
            {"name": "config", "configMap": {"name": config_map_name(&ctx.name, c)}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
        ],
    });
    if let (Some(secrets), Some(obj)) = (ctx.pull_secrets(), pod_spec.as_object_mut()) {
        obj.insert("imagePullSecrets".into(), secrets);
    }
    let mut dspec = json!({
        "revisionHistoryLimit": 5,
        "selector": {"matchLabels": ctx.selector(role)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {
            "maxSurge": max_surge, "maxUnavailable": max_unavailable,
        }},
        "template": {
            "metadata": {
                "labels": ctx.labels(role, Some(version)),
                "annotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": HTTP_PORT.to_string(),
                    "prometheus.io/path": "/metrics",
                },
            },
            "spec": pod_spec,
        },
    });
    // With an autoscaler, `replicas` is left out entirely so server-side
    // apply releases the field to the HPA instead of fighting it.
    if let (Some(r), Some(obj)) = (cp.replicas, dspec.as_object_mut()) {
        obj.insert("replicas".into(), json!(r));
    }
    ctx.child(
        Kind::Deployment,
        &name,
        role,
        Some(version),
        json!({"spec": dspec}),
    )
}

fn hpa(ctx: &Ctx<'_>, c: Component, a: &Autoscaling) -> Child {
    let name = component_name(&ctx.name, c);
    let mut metrics = Vec::new();
    let cpu = a
        .target_cpu_utilization_percentage
        .or(if a.custom_metric.is_none() {
            Some(70)
        } else {
            None
        });
    if let Some(cpu) = cpu {
        metrics.push(json!({"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu},
        }}));
    }
    if let Some(m) = &a.custom_metric {
        metrics.push(json!({"type": "Pods", "pods": {
            "metric": {"name": m.name},
            "target": {"type": "AverageValue", "averageValue": m.target_average_value.0},
        }}));
    }
    ctx.child(
        Kind::HorizontalPodAutoscaler,
        &name,
        c.as_str(),
        None,
        json!({"spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": a.min_replicas,
            "maxReplicas": a.max_replicas,
            "metrics": metrics,
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        }}),
    )
}

fn pdb(ctx: &Ctx<'_>, name: &str, role: &str, budget: Value) -> Child {
    let mut spec = json!({"selector": {"matchLabels": ctx.selector(role)}});
    if let (Some(obj), Value::Object(b)) = (spec.as_object_mut(), budget) {
        obj.extend(b);
    }
    ctx.child(
        Kind::PodDisruptionBudget,
        name,
        role,
        None,
        json!({"spec": spec}),
    )
}

fn namespace_peer(ns: &str) -> Value {
    json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}})
}

fn dns_egress() -> Value {
    json!({"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]})
}

fn np_settings(ctx: &Ctx<'_>) -> (String, String, i32) {
    let n = ctx.p.spec.network_policy.clone().unwrap_or_default();
    (
        n.ingress_controller_namespace
            .unwrap_or_else(|| "ingress-nginx".into()),
        n.prometheus_namespace
            .unwrap_or_else(|| "monitoring".into()),
        n.database_port.unwrap_or(5432),
    )
}

fn component_network_policy(ctx: &Ctx<'_>, c: Component) -> Child {
    let (ingress_ns, prom_ns, db_port) = np_settings(ctx);
    let mut ingress = vec![
        json!({"from": [namespace_peer(&ingress_ns)], "ports": [{"protocol": "TCP", "port": HTTP_PORT}]}),
        json!({"from": [namespace_peer(&prom_ns)], "ports": [{"protocol": "TCP", "port": HTTP_PORT}]}),
    ];
    if c == Component::Availability {
        ingress.push(json!({
            "from": [{"podSelector": {"matchLabels": ctx.selector(Component::Booking.as_str())}}],
            "ports": [{"protocol": "TCP", "port": GRPC_PORT}],
        }));
    }
    let mut egress = vec![
        dns_egress(),
        json!({"ports": [{"protocol": "TCP", "port": db_port}]}),
    ];
    if ctx.p.spec.redis.managed.is_some() {
        egress.push(json!({
            "to": [{"podSelector": {"matchLabels": ctx.selector(ROLE_REDIS)}}],
            "ports": [{"protocol": "TCP", "port": REDIS_PORT}],
        }));
    } else {
        egress.push(json!({"ports": [{"protocol": "TCP", "port": REDIS_PORT}]}));
    }
    if c == Component::Booking {
        egress.push(json!({
            "to": [{"podSelector": {"matchLabels": ctx.selector(Component::Availability.as_str())}}],
            "ports": [{"protocol": "TCP", "port": GRPC_PORT}],
        }));
    }
    if matches!(
        c,
        Component::Payment | Component::User | Component::Notification
    ) {
        // Stripe, OIDC providers and mail/SMS APIs are reached over HTTPS.
        egress.push(json!({"ports": [{"protocol": "TCP", "port": 443}]}));
    }
    ctx.child(
        Kind::NetworkPolicy,
        &component_name(&ctx.name, c),
        c.as_str(),
        None,
        json!({"spec": {
            "podSelector": {"matchLabels": ctx.selector(c.as_str())},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        }}),
    )
}

// ---------------------------------------------------------------------------
// Platform-level objects
// ---------------------------------------------------------------------------

/// Public path prefixes and the component serving each.
pub const ROUTES: [(&str, Component); 10] = [
    ("/v1/resources", Component::Availability),
    ("/v1/appointment-types", Component::Availability),
    ("/v1/calendars", Component::Availability),
    ("/v1/bookings", Component::Booking),
    ("/v1/auth", Component::User),
    ("/v1/me", Component::User),
    ("/.well-known", Component::User),
    ("/v1/payments", Component::Payment),
    ("/v1/webhooks/stripe", Component::Payment),
    ("/v1/notifications", Component::Notification),
];

fn ingress(ctx: &Ctx<'_>, spec: &crate::crd::IngressSpec) -> Child {
    let paths: Vec<Value> = ROUTES
        .iter()
        .map(|(path, c)| {
            json!({
                "path": path,
                "pathType": "Prefix",
                "backend": {"service": {
                    "name": component_name(&ctx.name, *c),
                    "port": {"name": "http"},
                }},
            })
        })
        .collect();
    let mut ispec = json!({"rules": [{"host": spec.host, "http": {"paths": paths}}]});
    if let Some(obj) = ispec.as_object_mut() {
        if let Some(class) = &spec.class_name {
            obj.insert("ingressClassName".into(), json!(class));
        }
        if let Some(tls) = &spec.tls_secret_name {
            obj.insert(
                "tls".into(),
                json!([{"hosts": [spec.host], "secretName": tls}]),
            );
        }
    }
    ctx.child(
        Kind::Ingress,
        &ctx.name,
        "ingress",
        None,
        json!({"spec": ispec}),
    )
}

fn migration_job(ctx: &Ctx<'_>, job_name: &str, version: &str) -> Child {
    let db = &ctx.p.spec.database.secret_ref;
    let mut pod_spec = json!({
        "restartPolicy": "Never",
        "serviceAccountName": migrate_account_name(&ctx.name),
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "securityContext": restricted_pod_security(NONROOT_UID),
        "containers": [{
            "name": "migrate",
            "image": ctx.image(version),
            "imagePullPolicy": ctx.pull_policy(),
            "args": ["migrate"],
            "env": [
                plain_env("BERTH_LOG_FORMAT", "json"),
                secret_env("BERTH_DATABASE_URL", &db.name, db.key_or("url")),
            ],
            "resources": resources_json(None, ("100m", "128Mi"), "256Mi"),
            "securityContext": restricted_container_security(),
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        }],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
    });
    if let (Some(secrets), Some(obj)) = (ctx.pull_secrets(), pod_spec.as_object_mut()) {
        obj.insert("imagePullSecrets".into(), secrets);
    }
    // No `suspend` and no TTL: the Job stays as the record that this version
    // was migrated until the next version's Job replaces it.
    ctx.child(
        Kind::Job,
        job_name,
        ROLE_MIGRATE,
        Some(version),
        json!({"spec": {
            "backoffLimit": 3,
            "activeDeadlineSeconds": 900,
            "template": {
                "metadata": {"labels": ctx.labels(ROLE_MIGRATE, Some(version))},
                "spec": pod_spec,
            },
        }}),
    )
}

fn migrate_network_policy(ctx: &Ctx<'_>) -> Child {
    let (_, _, db_port) = np_settings(ctx);
    ctx.child(
        Kind::NetworkPolicy,
        &migrate_account_name(&ctx.name),
        ROLE_MIGRATE,
        None,
        json!({"spec": {
            "podSelector": {"matchLabels": ctx.selector(ROLE_MIGRATE)},
            "policyTypes": ["Ingress", "Egress"],
            "egress": [dns_egress(), {"ports": [{"protocol": "TCP", "port": db_port}]}],
        }}),
    )
}

fn redis_objects(ctx: &Ctx<'_>, m: &ManagedRedis) -> Vec<Child> {
    let name = redis_name(&ctx.name);
    let replicas = m.replicas.unwrap_or(DEFAULT_REDIS_REPLICAS);
    let image = m
        .image
        .clone()
        .unwrap_or_else(|| DEFAULT_REDIS_IMAGE.into());
    let selector = ctx.selector(ROLE_REDIS);
    let mut out = vec![service_account(ctx, &name, ROLE_REDIS)];
    out.push(ctx.child(
        Kind::Service,
        &name,
        ROLE_REDIS,
        None,
        json!({"spec": {
            "clusterIP": "None",
            // Lock clients address every node by its stable DNS name.
            "publishNotReadyAddresses": true,
            "selector": selector,
            "ports": [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis", "protocol": "TCP"}],
        }}),
    ));
    let persistent = m.storage.is_some();
    let mut pod_spec = json!({
        "serviceAccountName": name,
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "terminationGracePeriodSeconds": 30,
        "securityContext": restricted_pod_security(REDIS_UID),
        // Independent lock nodes must not share a failure domain. Preferred
        // (not required) so a single-node cluster can still run them.
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
            "weight": 100,
            "podAffinityTerm": {
                "topologyKey": "kubernetes.io/hostname",
                "labelSelector": {"matchLabels": selector},
            },
        }]}},
        "containers": [{
            "name": "redis",
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "args": [
                "--port", REDIS_PORT.to_string(),
                "--dir", "/data",
                "--appendonly", if persistent { "yes" } else { "no" },
                "--save", "",
                "--protected-mode", "no",
            ],
            "ports": [{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
            "readinessProbe": {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 5, "timeoutSeconds": 2},
            "livenessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 10, "timeoutSeconds": 2},
            "resources": resources_json(m.resources.as_ref(), ("50m", "64Mi"), "256Mi"),
            "securityContext": restricted_container_security(),
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        }],
    });
    let mut sts_spec = json!({
        "replicas": replicas,
        "serviceName": name,
        "podManagementPolicy": "Parallel",
        "selector": {"matchLabels": selector},
        "updateStrategy": {"type": "RollingUpdate"},
        "template": {
            "metadata": {"labels": ctx.labels(ROLE_REDIS, None)},
            "spec": pod_spec.clone(),
        },
    });
    match &m.storage {
        Some(storage) => {
            let mut pvc_spec = json!({
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": storage.size.0}},
            });
            if let (Some(class), Some(obj)) =
                (&storage.storage_class_name, pvc_spec.as_object_mut())
            {
                obj.insert("storageClassName".into(), json!(class));
            }
            if let Some(obj) = sts_spec.as_object_mut() {
                obj.insert(
                    "volumeClaimTemplates".into(),
                    json!([{"metadata": {"name": "data"}, "spec": pvc_spec}]),
                );
                obj.insert(
                    "persistentVolumeClaimRetentionPolicy".into(),
                    json!({"whenDeleted": "Delete", "whenScaled": "Retain"}),
                );
            }
        }
        None => {
            if let Some(obj) = pod_spec.as_object_mut() {
                obj.insert("volumes".into(), json!([{"name": "data", "emptyDir": {}}]));
            }
            if let Some(t) = sts_spec.pointer_mut("/template/spec") {
                *t = pod_spec;
            }
        }
    }
    out.push(ctx.child(
        Kind::StatefulSet,
        &name,
        ROLE_REDIS,
        None,
        json!({"spec": sts_spec}),
    ));
    // A lock needs a majority of nodes: never voluntarily evict below it.
    out.push(pdb(
        ctx,
        &name,
        ROLE_REDIS,
        json!({"minAvailable": replicas / 2 + 1}),
    ));
    if ctx.network_policy_enabled() {
        let from: Vec<Value> = Component::ALL
            .iter()
            .map(|c| json!({"podSelector": {"matchLabels": ctx.selector(c.as_str())}}))
            .collect();
        out.push(ctx.child(
            Kind::NetworkPolicy,
            &name,
            ROLE_REDIS,
            None,
            json!({"spec": {
                "podSelector": {"matchLabels": selector},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": from, "ports": [{"protocol": "TCP", "port": REDIS_PORT}]}],
                "egress": [dns_egress()],
            }}),
        ));
    }
    out
}

/// Names the operator would give to a platform's objects of `kind` — used to
/// tell which owned objects are no longer desired.
pub fn desired_names(plan: &Plan, kind: Kind) -> Vec<&str> {
    plan.objects
        .iter()
        .filter(|c| c.kind == kind)
        .map(|c| c.name.as_str())
        .collect()
}
