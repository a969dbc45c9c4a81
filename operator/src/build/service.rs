//! Per-component ServiceAccount and ClusterIP Service, and the headless
//! ledger Service of the availability replicas.

use serde_json::json;

use super::ctx::Ctx;
use super::model::{Child, Kind};
use super::{GRPC_PORT, HTTP_PORT};
use crate::crd::Component;
use crate::names::{component_name, ledger_service_name};

pub(super) fn service_account(ctx: &Ctx<'_>, name: &str, role: &str) -> Child {
    // No workload talks to the Kubernetes API: no token is mounted.
    ctx.child(
        Kind::ServiceAccount,
        name,
        role,
        None,
        json!({"automountServiceAccountToken": false}),
    )
}

pub(super) fn service(ctx: &Ctx<'_>, c: Component) -> Child {
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

/// Headless: DNS answers with every ready pod's address, so a client keeps
/// a connection to each and picks per call. Behind the ClusterIP Service a
/// client's single HTTP/2 connection stays on one pod, and the replicas the
/// autoscaler adds would get none of its calls.
pub(super) fn ledger_service(ctx: &Ctx<'_>) -> Child {
    let role = Component::Availability.as_str();
    ctx.child(
        Kind::Service,
        &ledger_service_name(&ctx.name),
        role,
        None,
        json!({"spec": {
            "clusterIP": "None",
            "selector": ctx.selector(role),
            "ports": [
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"},
            ],
        }}),
    )
}
