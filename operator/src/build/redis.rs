//! The managed Redis lock cluster: ServiceAccount, headless Service,
//! StatefulSet, PodDisruptionBudget and NetworkPolicy.

use serde_json::{Value, json};

use super::ctx::Ctx;
use super::model::{Child, Kind};
use super::network_policy::dns_egress;
use super::pod::{resources_json, restricted_container_security, restricted_pod_security};
use super::scaling::pdb;
use super::service::service_account;
use super::{DEFAULT_REDIS_IMAGE, DEFAULT_REDIS_REPLICAS, REDIS_PORT, REDIS_UID};
use crate::crd::{Component, ManagedRedis};
use crate::names::*;

pub(super) fn redis_objects(ctx: &Ctx<'_>, m: &ManagedRedis) -> Vec<Child> {
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
