//! Pod-level helpers shared by every workload: resources, security contexts
//! and environment variable entries.

use serde_json::{Value, json};

use crate::crd::Resources;

pub(super) fn resources_json(
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

pub(super) fn secret_env(name: &str, secret: &str, key: &str) -> Value {
    json!({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
}

pub(super) fn plain_env(name: &str, value: &str) -> Value {
    json!({"name": name, "value": value})
}

pub(super) fn restricted_container_security() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

pub(super) fn restricted_pod_security(uid: i64) -> Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}
