//! What every builder shares: the platform, its name and namespace, the
//! owner reference, and the labels/metadata every child gets.

use serde_json::{Value, json};

use super::model::{Child, Kind};
use super::{DEFAULT_REDIS_REPLICAS, REDIS_PORT};
use crate::crd::{BookingPlatform, Component, PaymentProvider};
use crate::names::*;

/// Context every builder needs.
pub(super) struct Ctx<'a> {
    pub(super) p: &'a BookingPlatform,
    pub(super) name: String,
    pub(super) ns: String,
    pub(super) owner: Value,
}

impl Ctx<'_> {
    pub(super) fn labels(&self, role_or_component: &str, version: Option<&str>) -> Value {
        let mut l = json!({
            LABEL_NAME: "berth",
            LABEL_INSTANCE: self.name,
            LABEL_COMPONENT: role_or_component,
            LABEL_PART_OF: "berth",
            LABEL_MANAGED_BY: MANAGER,
            LABEL_PLATFORM: self.name,
            LABEL_ROLE: role_or_component,
        });
        if let (Some(v), Some(map)) = (version, l.as_object_mut()) {
            map.insert(LABEL_VERSION.into(), json!(v));
        }
        l
    }

    pub(super) fn selector(&self, role: &str) -> Value {
        json!({ LABEL_PLATFORM: self.name, LABEL_ROLE: role })
    }

    /// Every pod of this platform.
    pub(super) fn platform_selector(&self) -> Value {
        json!({ LABEL_PLATFORM: self.name })
    }

    pub(super) fn meta(&self, name: &str, role: &str, version: Option<&str>) -> Value {
        json!({
            "name": name,
            "namespace": self.ns,
            "labels": self.labels(role, version),
            "ownerReferences": [self.owner],
        })
    }

    pub(super) fn child(
        &self,
        kind: Kind,
        name: &str,
        role: &str,
        version: Option<&str>,
        body: Value,
    ) -> Child {
        let mut object = json!({
            "apiVersion": kind.api_version(),
            "kind": kind.name(),
            "metadata": self.meta(name, role, version),
        });
        if let (Some(obj), Value::Object(fields)) = (object.as_object_mut(), body) {
            for (k, v) in fields {
                obj.insert(k, v);
            }
        }
        let hash = crate::hash::json_digest(&object);
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("annotations".into(), json!({ ANNOTATION_HASH: hash }));
        }
        Child {
            kind,
            name: name.to_string(),
            object,
            hash,
        }
    }

    pub(super) fn image(&self, version: &str) -> String {
        format!("{}:{version}", self.p.spec.image.repository)
    }

    pub(super) fn pull_policy(&self) -> &'static str {
        self.p
            .spec
            .image
            .pull_policy
            .map_or("IfNotPresent", |p| p.as_str())
    }

    /// `messaging.templatesConfigMap`, the notification pods' templates.
    pub(super) fn templates_config_map(&self) -> Option<&str> {
        self.p
            .spec
            .messaging
            .as_ref()
            .and_then(|m| m.templates_config_map.as_deref())
    }

    pub(super) fn pull_secrets(&self) -> Option<Value> {
        let s = &self.p.spec.image.pull_secrets;
        (!s.is_empty()).then(|| json!(s.iter().map(|n| json!({"name": n})).collect::<Vec<_>>()))
    }

    pub(super) fn svc_host(&self, c: Component) -> String {
        format!("{}.{}.svc", component_name(&self.name, c), self.ns)
    }

    /// Host of the headless [`ledger_service_name`]: every ready
    /// availability pod.
    pub(super) fn ledger_host(&self) -> String {
        format!("{}.{}.svc", ledger_service_name(&self.name), self.ns)
    }

    pub(super) fn redis_nodes(&self) -> Vec<String> {
        let Some(m) = &self.p.spec.redis.managed else {
            return Vec::new();
        };
        let n = m.replicas.unwrap_or(DEFAULT_REDIS_REPLICAS);
        let sts = redis_name(&self.name);
        (0..n)
            .map(|i| format!("redis://{sts}-{i}.{sts}.{}.svc:{REDIS_PORT}", self.ns))
            .collect()
    }

    /// `none` when `payments` is left out.
    pub(super) fn payment_provider(&self) -> PaymentProvider {
        self.p
            .spec
            .payments
            .as_ref()
            .map_or(PaymentProvider::None, |p| p.provider)
    }

    pub(super) fn network_policy_enabled(&self) -> bool {
        self.p
            .spec
            .network_policy
            .as_ref()
            .and_then(|n| n.enabled)
            .unwrap_or(true)
    }
}

pub(super) fn owner_reference(p: &BookingPlatform) -> Value {
    json!({
        "apiVersion": format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION),
        "kind": "BookingPlatform",
        "name": p.metadata.name.clone().unwrap_or_default(),
        "uid": p.metadata.uid.clone().unwrap_or_default(),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}
