//! The platform's public Ingress.

use serde_json::{Value, json};

use super::ctx::Ctx;
use super::model::{Child, Kind};
use crate::crd::Component;
use crate::names::component_name;

/// Public path prefixes and the component serving each.
pub const ROUTES: [(&str, Component); 10] = [
    ("/v1/resources", Component::Availability),
    ("/v1/appointment-types", Component::Availability),
    ("/v1/calendars", Component::Availability),
    ("/v1/bookings", Component::Booking),
    ("/v1/auth", Component::User),
    ("/v1/me", Component::User),
    ("/.well-known", Component::User),
    ("/v1/payments", Component::Payment),
    ("/v1/webhooks/stripe", Component::Payment),
    ("/v1/notifications", Component::Notification),
];

pub(super) fn ingress(ctx: &Ctx<'_>, spec: &crate::crd::IngressSpec) -> Child {
    let paths: Vec<Value> = ROUTES
        .iter()
        .map(|(path, c)| {
            json!({
                "path": path,
                "pathType": "Prefix",
                "backend": {"service": {
                    "name": component_name(&ctx.name, *c),
                    "port": {"name": "http"},
                }},
            })
        })
        .collect();
    let mut ispec = json!({"rules": [{"host": spec.host, "http": {"paths": paths}}]});
    if let Some(obj) = ispec.as_object_mut() {
        if let Some(class) = &spec.class_name {
            obj.insert("ingressClassName".into(), json!(class));
        }
        if let Some(tls) = &spec.tls_secret_name {
            obj.insert(
                "tls".into(),
                json!([{"hosts": [spec.host], "secretName": tls}]),
            );
        }
    }
    ctx.child(
        Kind::Ingress,
        &ctx.name,
        "ingress",
        None,
        json!({"spec": ispec}),
    )
}
