//! Per-component ServiceAccount and ClusterIP Service.

use serde_json::json;

use super::ctx::Ctx;
use super::model::{Child, Kind};
use super::{GRPC_PORT, HTTP_PORT};
use crate::crd::Component;
use crate::names::component_name;

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
