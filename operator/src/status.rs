//! Status from what is observed: pure functions from (plan, observed
//! workloads, problems, previous status) to the new status. Only what the
//! cluster reports counts; nothing is assumed from what was applied.

use std::collections::BTreeMap;

use crate::build::{MigrationPhase, Plan};
use crate::crd::{BookingPlatformStatus, Component, Condition, MigrationStatus, ServiceSummary};

/// What a component's Deployment reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct WorkloadObs {
    pub generation: i64,
    pub observed_generation: i64,
    /// `spec.replicas` (set by us or by the autoscaler).
    pub desired: i32,
    /// `status.replicas`: pods of every revision.
    pub replicas: i32,
    pub ready: i32,
    pub updated: i32,
    pub available: i32,
    /// Version label of the pod template.
    pub version: Option<String>,
}

impl WorkloadObs {
    /// Fully rolled out: the controller saw the latest spec, every pod is of
    /// the latest revision, ready and available, and no old pod is left.
    pub fn rolled_out(&self) -> bool {
        self.observed_generation >= self.generation
            && self.updated >= self.desired
            && self.ready >= self.desired
            && self.available >= self.desired
            && self.replicas <= self.desired
    }
}

/// A reason the platform cannot be (fully) reconciled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: String,
    pub message: String,
}

pub struct Inputs<'a> {
    pub generation: Option<i64>,
    pub plan: &'a Plan,
    pub deployments: &'a BTreeMap<Component, WorkloadObs>,
    pub redis: Option<&'a WorkloadObs>,
    pub problems: &'a [Problem],
    pub paused: bool,
    pub previous: Option<&'a BookingPlatformStatus>,
    /// RFC 3339 timestamp for conditions that change now.
    pub now: &'a str,
}

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
/// kstatus: the controller is working towards the desired state (True while
/// a migration runs or a rollout is under way).
pub const RECONCILING: &str = "Reconciling";
/// kstatus: the controller cannot make progress until a person acts (an
/// invalid reference, a failed migration). `kubectl wait`, Flux and
/// cli-utils read `Stalled=True` as failed rather than in progress.
pub const STALLED: &str = "Stalled";

/// Problems that do not block a reconcile: only the ServiceSpec that lost is
/// ignored, the platform proceeds with the winner.
pub const NON_BLOCKING: &[&str] = &["ServiceSpecConflict"];

pub fn platform_status(i: &Inputs<'_>) -> BookingPlatformStatus {
    let plan = i.plan;
    let target = &plan.target_version;
    let mut services = Vec::new();
    let mut not_ready = Vec::new();
    for cp in &plan.components {
        let c = cp.component;
        let obs = i.deployments.get(&c);
        let desired = obs.map_or(cp.replicas.unwrap_or(0), |o| o.desired);
        let ready_n = obs.map_or(0, |o| o.ready);
        let version = obs.and_then(|o| o.version.clone());
        let ready = obs.is_some_and(|o| o.rolled_out() && o.version.as_ref() == Some(target));
        if !ready {
            let detail = match obs {
                None => format!("{c}: not deployed yet"),
                Some(o) if o.version.as_ref() != Some(target) => format!(
                    "{c}: runs {} (want {target}), {ready_n}/{desired} replicas ready",
                    o.version.as_deref().unwrap_or("?")
                ),
                Some(o) if o.updated < o.desired => format!(
                    "{c}: {}/{desired} replicas updated, {ready_n}/{desired} ready",
                    o.updated
                ),
                Some(_) => format!("{c}: {ready_n}/{desired} replicas ready"),
            };
            not_ready.push(detail);
        }
        services.push(ServiceSummary {
            component: c,
            source: cp.source.clone(),
            version,
            replicas: desired,
            ready_replicas: ready_n,
            updated_replicas: obs.map_or(0, |o| o.updated),
            ready,
        });
    }
    let ready_count = services.iter().filter(|s| s.ready).count();
    let redis_ready = match (plan.redis_replicas, i.redis) {
        (None, _) => true,
        (Some(_), Some(r)) => r.rolled_out(),
        (Some(_), None) => false,
    };
    if !redis_ready {
        let (r, n) = i.redis.map_or((0, plan.redis_replicas.unwrap_or(0)), |o| {
            (o.ready, o.desired)
        });
        not_ready.push(format!("redis: {r}/{n} nodes ready"));
    }

    let versions: Vec<&String> = services.iter().filter_map(|s| s.version.as_ref()).collect();
    let uniform = versions.len() == services.len() && versions.windows(2).all(|w| w[0] == w[1]);
    let version = if uniform {
        versions.first().map(|v| (*v).clone())
    } else {
        None
    };

    let migration_failed = plan.migration_phase == MigrationPhase::Failed;
    let migrating = matches!(
        plan.migration_phase,
        MigrationPhase::Pending | MigrationPhase::Running
    );
    let current = version
        .clone()
        .or_else(|| versions.first().map(|v| (*v).clone()));

    // Problems that hold every change back; a ServiceSpec conflict only
    // degrades (the winning ServiceSpec is applied).
    let blocking: Vec<&Problem> = i
        .problems
        .iter()
        .filter(|p| !NON_BLOCKING.contains(&p.reason.as_str()))
        .collect();

    // Degraded
    let mut degraded_msgs: Vec<String> = i.problems.iter().map(|p| p.message.clone()).collect();
    let mut degraded_reason = i.problems.first().map(|p| p.reason.clone());
    if migration_failed {
        degraded_msgs.push(format!(
            "migration job failed: {}: {}",
            plan.migration_job,
            plan.migration_failure
                .as_deref()
                .unwrap_or("unknown reason")
        ));
        degraded_reason.get_or_insert_with(|| "MigrationFailed".into());
    }
    let degraded = match degraded_reason {
        Some(reason) => ("True", reason, degraded_msgs.join("; ")),
        None => ("False", "AsExpected".into(), "no problems".into()),
    };

    // Progressing
    let progressing = if i.paused {
        (
            "False",
            "Paused".to_string(),
            "reconciliation is paused (spec.paused)".to_string(),
        )
    } else if !blocking.is_empty() {
        (
            "False",
            "Blocked".to_string(),
            "changes are on hold until the problems in Degraded are fixed".to_string(),
        )
    } else if migrating {
        (
            "True",
            "MigrationRunning".to_string(),
            format!(
                "waiting for migration job {} (version {target}); services stay on {}",
                plan.migration_job,
                current.as_deref().unwrap_or("nothing until it succeeds")
            ),
        )
    } else if migration_failed {
        (
            "False",
            "MigrationFailed".to_string(),
            format!(
                "services stay on {} until the migration to {target} succeeds",
                current.as_deref().unwrap_or("nothing")
            ),
        )
    } else if !not_ready.is_empty() {
        ("True", "RollingOut".to_string(), not_ready.join("; "))
    } else {
        (
            "False",
            "Complete".to_string(),
            format!("all services run {target}"),
        )
    };

    // Ready
    let all_ready = not_ready.is_empty() && !migrating && !migration_failed;
    let ready = if all_ready && blocking.is_empty() {
        (
            "True",
            "AllServicesReady".to_string(),
            format!("{} services ready at version {target}", services.len()),
        )
    } else if let Some(p) = blocking.first() {
        ("False", p.reason.clone(), degraded.2.clone())
    } else if migration_failed {
        ("False", "MigrationFailed".to_string(), degraded.2.clone())
    } else if migrating {
        (
            "False",
            "MigrationRunning".to_string(),
            progressing.2.clone(),
        )
    } else {
        (
            "False",
            "ServicesNotReady".to_string(),
            not_ready.join("; "),
        )
    };

    // kstatus. Stalled: what waits for a person (a blocking problem, a
    // failed migration); Reconciling: what the operator itself is driving.
    let stalled = if let Some(first) = blocking.first() {
        let mut msgs: Vec<String> = blocking.iter().map(|p| p.message.clone()).collect();
        if migration_failed {
            msgs.push(degraded_msgs.last().cloned().unwrap_or_default());
        }
        ("True", first.reason.clone(), msgs.join("; "))
    } else if migration_failed {
        (
            "True",
            "MigrationFailed".to_string(),
            degraded_msgs.last().cloned().unwrap_or_default(),
        )
    } else {
        (
            "False",
            "AsExpected".to_string(),
            "no intervention needed".to_string(),
        )
    };
    // Reconciling mirrors Progressing: kstatus knows only the former, and
    // without it a platform that is still rolling out would read as Current.
    let reconciling = &progressing;

    let conditions = vec![
        condition(i, READY, ready.0, &ready.1, &ready.2),
        condition(
            i,
            PROGRESSING,
            progressing.0,
            &progressing.1,
            &progressing.2,
        ),
        condition(i, DEGRADED, degraded.0, &degraded.1, &degraded.2),
        condition(
            i,
            RECONCILING,
            reconciling.0,
            &reconciling.1,
            &reconciling.2,
        ),
        condition(i, STALLED, stalled.0, &stalled.1, &stalled.2),
    ];

    BookingPlatformStatus {
        observed_generation: i.generation,
        conditions,
        version,
        services_ready: Some(format!("{ready_count}/{}", services.len())),
        services,
        migration: Some(MigrationStatus {
            version: target.clone(),
            job: plan
                .migration_job_desired
                .then(|| plan.migration_job.clone()),
            phase: plan.migration_phase.as_str().to_string(),
        }),
        redis_ready: plan.redis_replicas.map(|n| {
            let r = i.redis.map_or(0, |o| o.ready);
            format!("{r}/{n}")
        }),
    }
}

fn condition(i: &Inputs<'_>, type_: &str, status: &str, reason: &str, message: &str) -> Condition {
    let previous = i
        .previous
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_));
    let since = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => i.now.to_string(),
    };
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        last_transition_time: since,
        observed_generation: i.generation,
    }
}

/// Builds a condition keeping the previous transition time when the status
/// did not change (for the ServiceSpec controller).
pub fn keep_time(
    previous: &[Condition],
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &str,
) -> Condition {
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.to_string(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        last_transition_time: since,
        observed_generation: generation,
    }
}

pub fn find<'a>(conds: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conds.iter().find(|c| c.type_ == type_)
}

/// Current time, RFC 3339 with second precision (what Kubernetes uses).
pub fn now_rfc3339() -> String {
    let ts = k8s_openapi::jiff::Timestamp::now();
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{ComponentPlan, Plan};

    fn plan(phase: MigrationPhase) -> Plan {
        Plan {
            objects: vec![],
            components: Component::ALL
                .iter()
                .map(|c| ComponentPlan {
                    component: *c,
                    source: "defaults".into(),
                    version: Some("2".into()),
                    replicas: Some(3),
                    autoscaling: None,
                })
                .collect(),
            target_version: "2".into(),
            migration_job: "p-migrate-2".into(),
            migration_phase: phase,
            migration_failure: Some(
                "BackoffLimitExceeded: Job has reached the specified backoff limit".into(),
            ),
            migration_job_desired: true,
            redis_replicas: None,
        }
    }

    fn obs(ready: i32, version: &str) -> WorkloadObs {
        WorkloadObs {
            generation: 1,
            observed_generation: 1,
            desired: 3,
            replicas: 3,
            ready,
            updated: 3,
            available: ready,
            version: Some(version.into()),
        }
    }

    fn all(ready: i32, version: &str) -> BTreeMap<Component, WorkloadObs> {
        Component::ALL
            .iter()
            .map(|c| (*c, obs(ready, version)))
            .collect()
    }

    fn cond<'a>(s: &'a BookingPlatformStatus, t: &str) -> &'a Condition {
        find(&s.conditions, t).unwrap()
    }

    #[test]
    fn ready_when_everything_rolled_out() {
        let p = plan(MigrationPhase::Succeeded);
        let d = all(3, "2");
        let s = platform_status(&Inputs {
            generation: Some(4),
            plan: &p,
            deployments: &d,
            redis: None,
            problems: &[],
            paused: false,
            previous: None,
            now: "t0",
        });
        assert_eq!(cond(&s, READY).status, "True");
        assert_eq!(cond(&s, PROGRESSING).status, "False");
        assert_eq!(cond(&s, DEGRADED).status, "False");
        assert_eq!(cond(&s, RECONCILING).status, "False");
        assert_eq!(cond(&s, STALLED).status, "False");
        assert_eq!(s.version.as_deref(), Some("2"));
        assert_eq!(s.services_ready.as_deref(), Some("5/5"));
        assert_eq!(s.observed_generation, Some(4));
    }

    #[test]
    fn names_replicas_not_ready() {
        let p = plan(MigrationPhase::Succeeded);
        let mut d = all(3, "2");
        d.insert(Component::Booking, obs(2, "2"));
        let s = platform_status(&Inputs {
            generation: Some(1),
            plan: &p,
            deployments: &d,
            redis: None,
            problems: &[],
            paused: false,
            previous: None,
            now: "t0",
        });
        assert_eq!(cond(&s, READY).status, "False");
        assert_eq!(cond(&s, READY).message, "booking: 2/3 replicas ready");
        assert_eq!(cond(&s, PROGRESSING).reason, "RollingOut");
        let rec = cond(&s, RECONCILING);
        assert_eq!(
            (rec.status.as_str(), rec.reason.as_str()),
            ("True", "RollingOut")
        );
        assert_eq!(rec.message, "booking: 2/3 replicas ready");
        assert_eq!(cond(&s, STALLED).status, "False");
    }

    #[test]
    fn failed_migration_degrades() {
        let p = plan(MigrationPhase::Failed);
        let d = all(3, "1");
        let s = platform_status(&Inputs {
            generation: Some(1),
            plan: &p,
            deployments: &d,
            redis: None,
            problems: &[],
            paused: false,
            previous: None,
            now: "t0",
        });
        let deg = cond(&s, DEGRADED);
        assert_eq!(deg.status, "True");
        assert_eq!(deg.reason, "MigrationFailed");
        assert!(
            deg.message
                .starts_with("migration job failed: p-migrate-2: BackoffLimitExceeded")
        );
        assert_eq!(cond(&s, READY).status, "False");
        let stalled = cond(&s, STALLED);
        assert_eq!(stalled.status, "True", "a failed migration needs a person");
        assert_eq!(stalled.reason, "MigrationFailed");
        assert_eq!(stalled.message, deg.message);
        assert_eq!(cond(&s, RECONCILING).status, "False");
    }

    #[test]
    fn running_migration_is_reconciling_not_stalled() {
        let p = plan(MigrationPhase::Running);
        let d = all(3, "1");
        let s = platform_status(&Inputs {
            generation: Some(2),
            plan: &p,
            deployments: &d,
            redis: None,
            problems: &[],
            paused: false,
            previous: None,
            now: "t0",
        });
        let rec = cond(&s, RECONCILING);
        assert_eq!(
            (rec.status.as_str(), rec.reason.as_str()),
            ("True", "MigrationRunning")
        );
        assert_eq!(cond(&s, STALLED).status, "False");
    }

    #[test]
    fn conflict_alone_degrades_without_stalling() {
        let p = plan(MigrationPhase::Succeeded);
        let d = all(3, "2");
        let problems = [Problem {
            reason: "ServiceSpecConflict".into(),
            message: "ServiceSpec b ignored: a already configures booking".into(),
        }];
        let s = platform_status(&Inputs {
            generation: Some(1),
            plan: &p,
            deployments: &d,
            redis: None,
            problems: &problems,
            paused: false,
            previous: None,
            now: "t0",
        });
        assert_eq!(cond(&s, DEGRADED).status, "True");
        assert_eq!(
            cond(&s, STALLED).status,
            "False",
            "the platform proceeds with the winning ServiceSpec"
        );
        assert_eq!(cond(&s, READY).status, "True");
        assert_eq!(cond(&s, PROGRESSING).reason, "Complete");
    }

    #[test]
    fn paused_is_neither_reconciling_nor_stalled() {
        let p = plan(MigrationPhase::Succeeded);
        let mut d = all(3, "2");
        d.insert(Component::Booking, obs(1, "2"));
        let s = platform_status(&Inputs {
            generation: Some(3),
            plan: &p,
            deployments: &d,
            redis: None,
            problems: &[],
            paused: true,
            previous: None,
            now: "t0",
        });
        let rec = cond(&s, RECONCILING);
        assert_eq!(
            (rec.status.as_str(), rec.reason.as_str()),
            ("False", "Paused")
        );
        assert_eq!(cond(&s, STALLED).status, "False");
    }

    #[test]
    fn missing_secret_degrades_and_keeps_transition_time() {
        let p = plan(MigrationPhase::Pending);
        let d = BTreeMap::new();
        let problems = [Problem {
            reason: "SecretNotFound".into(),
            message: "secret db (spec.database.secretRef) not found".into(),
        }];
        let first = platform_status(&Inputs {
            generation: Some(1),
            plan: &p,
            deployments: &d,
            redis: None,
            problems: &problems,
            paused: false,
            previous: None,
            now: "t0",
        });
        assert_eq!(cond(&first, DEGRADED).reason, "SecretNotFound");
        let stalled = cond(&first, STALLED);
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", "SecretNotFound")
        );
        assert_eq!(
            stalled.message,
            "secret db (spec.database.secretRef) not found"
        );
        assert_eq!(cond(&first, RECONCILING).status, "False");
        let again = platform_status(&Inputs {
            generation: Some(1),
            plan: &p,
            deployments: &d,
            redis: None,
            problems: &problems,
            paused: false,
            previous: Some(&first),
            now: "t1",
        });
        assert_eq!(
            first, again,
            "an unchanged situation must produce an identical status"
        );
    }
}
