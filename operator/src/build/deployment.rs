//! The per-component Deployment.

use serde_json::{Value, json};

use super::ctx::Ctx;
use super::env::{component_env, shutdown_millis};
use super::model::{Child, ComponentPlan, Kind};
use super::pod::{resources_json, restricted_container_security, restricted_pod_security};
use super::{CONFIG_DIR, GRACE_MARGIN_SECONDS, GRPC_PORT, HTTP_PORT, NONROOT_UID, TEMPLATES_DIR};
use crate::crd::{Component, IntOrPercent, Rollout, ServiceSpec};
use crate::names::{component_name, config_map_name};

pub(super) fn int_or_percent(v: &IntOrPercent) -> Value {
    match v.0.parse::<i64>() {
        Ok(n) => json!(n),
        Err(_) => json!(v.0),
    }
}

pub(super) fn deployment(
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
    if c == Component::Notification
        && let Some(templates) = ctx.templates_config_map()
    {
        pod_spec["volumes"]
            .as_array_mut()
            .into_iter()
            .for_each(|v| v.push(json!({"name": "templates", "configMap": {"name": templates}})));
        pod_spec["containers"][0]["volumeMounts"]
            .as_array_mut()
            .into_iter()
            .for_each(|m| {
                m.push(json!({"name": "templates", "mountPath": TEMPLATES_DIR, "readOnly": true}))
            });
    }
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
