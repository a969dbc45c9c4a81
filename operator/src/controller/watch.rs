//! Watch-side helpers: mappers from changed objects to the platforms they
//! affect, and the strippers that keep cached objects small.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use serde_json::{Value, json};

use super::Stores;
use super::observe::in_ns;
use super::validate::referenced_secrets;
use crate::crd::{BookingPlatform, ServiceSpec};

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
