//! NetworkPolicies for the components and the migration Job.

use serde_json::{Value, json};

use super::ctx::Ctx;
use super::model::{Child, Kind};
use super::{GRPC_PORT, HTTP_PORT, REDIS_PORT};
use crate::crd::{Component, PaymentProvider};
use crate::names::*;

pub(super) fn namespace_peer(ns: &str) -> Value {
    json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}})
}

pub(super) fn dns_egress() -> Value {
    json!({"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]})
}

pub(super) fn np_settings(ctx: &Ctx<'_>) -> (String, String, i32) {
    let n = ctx.p.spec.network_policy.clone().unwrap_or_default();
    (
        n.ingress_controller_namespace
            .unwrap_or_else(|| "ingress-nginx".into()),
        n.prometheus_namespace
            .unwrap_or_else(|| "monitoring".into()),
        n.database_port.unwrap_or(5432),
    )
}

pub(super) fn component_network_policy(ctx: &Ctx<'_>, c: Component) -> Child {
    let (ingress_ns, prom_ns, db_port) = np_settings(ctx);
    let mut ingress = vec![
        json!({"from": [namespace_peer(&ingress_ns)], "ports": [{"protocol": "TCP", "port": HTTP_PORT}]}),
        json!({"from": [namespace_peer(&prom_ns)], "ports": [{"protocol": "TCP", "port": HTTP_PORT}]}),
    ];
    if c == Component::User {
        // The other components fetch the JWKS to verify access tokens.
        ingress.push(json!({
            "from": [{"podSelector": {"matchLabels": ctx.platform_selector()}}],
            "ports": [{"protocol": "TCP", "port": HTTP_PORT}],
        }));
    }
    if c == Component::Availability {
        ingress.push(json!({
            "from": [{"podSelector": {"matchLabels": ctx.selector(Component::Booking.as_str())}}],
            "ports": [{"protocol": "TCP", "port": GRPC_PORT}],
        }));
    }
    if c == Component::Availability {
        // Notifications read resource names and zones from the public API.
        ingress.push(json!({
            "from": [{"podSelector": {"matchLabels": ctx.selector(Component::Notification.as_str())}}],
            "ports": [{"protocol": "TCP", "port": HTTP_PORT}],
        }));
    }
    // Payment settles bookings over gRPC, and only when it takes payments.
    let settles = ctx.payment_provider() == PaymentProvider::Stripe;
    if c == Component::Booking && settles {
        ingress.push(json!({
            "from": [{"podSelector": {"matchLabels": ctx.selector(Component::Payment.as_str())}}],
            "ports": [{"protocol": "TCP", "port": GRPC_PORT}],
        }));
    }
    let mut egress = vec![
        dns_egress(),
        json!({"ports": [{"protocol": "TCP", "port": db_port}]}),
    ];
    if ctx.p.spec.redis.managed.is_some() {
        egress.push(json!({
            "to": [{"podSelector": {"matchLabels": ctx.selector(ROLE_REDIS)}}],
            "ports": [{"protocol": "TCP", "port": REDIS_PORT}],
        }));
    } else {
        egress.push(json!({"ports": [{"protocol": "TCP", "port": REDIS_PORT}]}));
    }
    if c != Component::User {
        egress.push(json!({
            "to": [{"podSelector": {"matchLabels": ctx.selector(Component::User.as_str())}}],
            "ports": [{"protocol": "TCP", "port": HTTP_PORT}],
        }));
    }
    if c == Component::Booking {
        egress.push(json!({
            "to": [{"podSelector": {"matchLabels": ctx.selector(Component::Availability.as_str())}}],
            "ports": [{"protocol": "TCP", "port": GRPC_PORT}],
        }));
    }
    if c == Component::Notification {
        egress.push(json!({
            "to": [{"podSelector": {"matchLabels": ctx.selector(Component::Availability.as_str())}}],
            "ports": [{"protocol": "TCP", "port": HTTP_PORT}],
        }));
    }
    if c == Component::Payment && settles {
        egress.push(json!({
            "to": [{"podSelector": {"matchLabels": ctx.selector(Component::Booking.as_str())}}],
            "ports": [{"protocol": "TCP", "port": GRPC_PORT}],
        }));
    }
    if matches!(
        c,
        Component::Payment | Component::User | Component::Notification
    ) {
        // Stripe, OIDC providers and mail/SMS APIs are reached over HTTPS.
        egress.push(json!({"ports": [{"protocol": "TCP", "port": 443}]}));
    }
    if matches!(c, Component::User | Component::Notification) {
        // SMTP submission: STARTTLS (587), implicit TLS (465), relay (25).
        egress.push(json!({"ports": [
            {"protocol": "TCP", "port": 587},
            {"protocol": "TCP", "port": 465},
            {"protocol": "TCP", "port": 25},
        ]}));
    }
    ctx.child(
        Kind::NetworkPolicy,
        &component_name(&ctx.name, c),
        c.as_str(),
        None,
        json!({"spec": {
            "podSelector": {"matchLabels": ctx.selector(c.as_str())},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        }}),
    )
}

pub(super) fn migrate_network_policy(ctx: &Ctx<'_>) -> Child {
    let (_, _, db_port) = np_settings(ctx);
    ctx.child(
        Kind::NetworkPolicy,
        &migrate_account_name(&ctx.name),
        ROLE_MIGRATE,
        None,
        json!({"spec": {
            "podSelector": {"matchLabels": ctx.selector(ROLE_MIGRATE)},
            "policyTypes": ["Ingress", "Egress"],
            "egress": [dns_egress(), {"ports": [{"protocol": "TCP", "port": db_port}]}],
        }}),
    )
}
