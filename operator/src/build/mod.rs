//! Desired state as pure functions: (platform, its ServiceSpecs, a few
//! observed facts) → the exact objects to apply. No I/O, no clock, no
//! randomness, so golden-YAML tests pin the output (`tests/golden/`).
//!
//! The only observed facts that shape the output are the version each
//! component's Deployment runs now and the state of the migration Job for the
//! requested version: Deployments move to a new version only once its
//! migration Job has succeeded.

mod config;
mod ctx;
mod deployment;
mod env;
mod ingress;
mod migration;
mod model;
mod network_policy;
mod pod;
mod redis;
mod scaling;
mod service;

use std::collections::BTreeMap;

use serde_json::json;

use crate::crd::{BookingPlatform, Component, ServiceSpec};
use crate::names::*;

pub use config::{config_toml, merged_dependencies};
pub use ingress::ROUTES;
pub use model::{Child, ComponentPlan, JobState, Kind, MigrationPhase, Observed, Plan};

use config::config_map;
use ctx::{Ctx, owner_reference};
use deployment::deployment;
use ingress::ingress;
use migration::migration_job;
use network_policy::{component_network_policy, migrate_network_policy};
use redis::redis_objects;
use scaling::{hpa, pdb};
use service::{ledger_service, service, service_account};

pub const HTTP_PORT: i32 = 8080;
pub const GRPC_PORT: i32 = 9090;
pub const REDIS_PORT: i32 = 6379;
pub const CONFIG_DIR: &str = "/etc/berth";
/// Where notification pods find `messaging.templatesConfigMap`.
pub const TEMPLATES_DIR: &str = "/etc/berth-templates";
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
    if c == Component::Availability {
        out.push(ledger_service(ctx));
    }
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

/// Names the operator would give to a platform's objects of `kind` — used to
/// tell which owned objects are no longer desired.
pub fn desired_names(plan: &Plan, kind: Kind) -> Vec<&str> {
    plan.objects
        .iter()
        .filter(|c| c.kind == kind)
        .map(|c| c.name.as_str())
        .collect()
}
