//! The plan's vocabulary: child kinds, the observed facts the plan depends
//! on, and the plan itself.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::crd::{Autoscaling, Component};

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
