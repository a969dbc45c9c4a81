//! HorizontalPodAutoscaler and PodDisruptionBudget.

use serde_json::{Value, json};

use super::ctx::Ctx;
use super::model::{Child, Kind};
use crate::crd::{Autoscaling, Component};
use crate::names::component_name;

pub(super) fn hpa(ctx: &Ctx<'_>, c: Component, a: &Autoscaling) -> Child {
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

pub(super) fn pdb(ctx: &Ctx<'_>, name: &str, role: &str, budget: Value) -> Child {
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
