//! Reading the watch caches: observed children with their change markers,
//! and the state of workloads and the migration Job.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Resource;
use kube::api::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::Value;

use super::watch::deployment_marker;
use crate::build::{JobState, Kind};
use crate::crd::{BookingPlatform, ServiceSpec};
use crate::names::{self, ANNOTATION_HASH};
use crate::status::WorkloadObs;

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

/// Metadata the reconciler needs of an observed child.
#[derive(Clone, Debug)]
pub struct ChildMeta {
    pub name: String,
    pub hash: Option<String>,
    pub marker: String,
    pub owned: bool,
}

pub(super) fn marker_of(meta: &kube::api::ObjectMeta) -> String {
    match meta.generation {
        Some(g) => format!("g{g}"),
        None => format!("r{}", meta.resource_version.clone().unwrap_or_default()),
    }
}

pub(super) fn child_meta(
    meta: &kube::api::ObjectMeta,
    owner_uid: &str,
    marker: String,
) -> ChildMeta {
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
pub(super) fn hpa_marker(h: &HorizontalPodAutoscaler) -> String {
    let spec = serde_json::to_value(&h.spec).unwrap_or(Value::Null);
    format!("s{}", crate::hash::json_digest(&spec))
}

pub(super) fn in_ns<K: Resource>(items: Vec<Arc<K>>, ns: &str) -> impl Iterator<Item = Arc<K>> {
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

    pub(super) fn deployment(&self, ns: &str, name: &str) -> Option<Arc<Deployment>> {
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
