//! Custom resources `BookingPlatform` and `ServiceSpec` (group `berth.dev`,
//! version `v1alpha1`, namespaced).
//!
//! The Rust types are the single source of truth: `berth-operator crd` prints
//! the CustomResourceDefinitions generated from them (schemars + kube's
//! `CustomResource`/`KubeSchema` derives), `crds/` holds that output, and a
//! test fails when `crds/` is stale. Doc comments become the schema
//! descriptions `kubectl explain` shows, so they are written for users.
//!
//! Validation the API server enforces (OpenAPI + CEL `x-kubernetes-validations`):
//! components are an enum, min ≤ max for autoscaling, rates in 0–1, durations
//! that parse with CEL `duration()` *and* with the services' own parser
//! (integer parts with units h, m, s, ms: `500ms`, `2s`, `1m30s`), quantities
//! that parse with CEL `isQuantity()`, and mutually exclusive choices.

// `printcolumn(type_ = …)` repeats per column inside `#[kube(...)]`, which
// clippy mistakes for a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use std::borrow::Cow;
use std::collections::BTreeMap;

use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// API group of every Berth custom resource.
pub const GROUP: &str = "berth.dev";
/// Served and stored version.
pub const VERSION: &str = "v1alpha1";

// ---------------------------------------------------------------------------
// Small validated scalar types
// ---------------------------------------------------------------------------

/// Regular expression for durations both CEL `duration()` and the services'
/// humantime parser accept: integer parts with units h, m, s or ms.
pub const DURATION_PATTERN: &str = "^([0-9]+(h|m|s|ms))+$";

/// A duration such as `500ms`, `2s` or `1m30s`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(transparent)]
pub struct GoDuration(pub String);

impl GoDuration {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Parses the duration into milliseconds; `None` when malformed.
    pub fn millis(&self) -> Option<u64> {
        crate::duration::parse_millis(&self.0)
    }
}

/// Implements `JsonSchema` for a string newtype as an inline string with a
/// length cap and one CEL rule, so the API server rejects bad values with a
/// message a user understands.
macro_rules! cel_string_schema {
    ($ty:ident, max_length: $max:expr, rule: $rule:expr, message: $message:expr) => {
        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                stringify!($ty).into()
            }
            fn inline_schema() -> bool {
                true
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": "string",
                    "maxLength": $max,
                    "x-kubernetes-validations": [{ "rule": $rule, "message": $message }]
                })
            }
        }
    };
}

cel_string_schema!(
    GoDuration,
    max_length: 32,
    rule: format!("self.matches('{DURATION_PATTERN}') && duration(self) > duration('0s')"),
    message: "must be a positive duration made of integers with units h, m, s or ms, such as 500ms, 2s or 1m30s"
);

/// A Kubernetes resource quantity such as `250m`, `1`, `512Mi` or `10Gi`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(transparent)]
pub struct Quantity(pub String);

cel_string_schema!(
    Quantity,
    max_length: 32,
    rule: "isQuantity(self)",
    message: "must be a Kubernetes quantity such as 250m, 1, 512Mi or 10Gi"
);

/// A rollout bound: an absolute number of pods (`1`) or a percentage (`25%`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(transparent)]
pub struct IntOrPercent(pub String);

cel_string_schema!(
    IntOrPercent,
    max_length: 8,
    rule: "self.matches('^[0-9]+%?$')",
    message: "must be a number of pods such as 1 or a percentage such as 25%"
);

// ---------------------------------------------------------------------------
// Shared pieces
// ---------------------------------------------------------------------------

/// The Berth services. Each runs as `berth serve <component>`.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    User,
    Availability,
    Booking,
    Payment,
    Notification,
}

impl Component {
    /// Every component, in a stable order (used for naming and status).
    pub const ALL: [Component; 5] = [
        Component::User,
        Component::Availability,
        Component::Booking,
        Component::Payment,
        Component::Notification,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Component::User => "user",
            Component::Availability => "availability",
            Component::Booking => "booking",
            Component::Payment => "payment",
            Component::Notification => "notification",
        }
    }
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key in a Secret in the same namespace. The operator never reads secret
/// values: pods receive them through `secretKeyRef` environment variables.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret (same namespace as the referencing resource).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret. Each field documents its default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,
}

impl SecretKeyRef {
    pub fn key_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.key.as_deref().unwrap_or(default)
    }
}

/// CPU and memory for one container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.requests) || !has(self.limits) || !has(self.requests.cpu) || !has(self.limits.cpu) || quantity(self.requests.cpu).compareTo(quantity(self.limits.cpu)) <= 0"
).message("requests.cpu must not exceed limits.cpu"))]
#[x_kube(validation = Rule::new(
    "!has(self.requests) || !has(self.limits) || !has(self.requests.memory) || !has(self.limits.memory) || quantity(self.requests.memory).compareTo(quantity(self.limits.memory)) <= 0"
).message("requests.memory must not exceed limits.memory"))]
pub struct Resources {
    /// What the scheduler reserves for the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<CpuMemory>,
    /// Hard caps; the container is throttled (cpu) or killed (memory) above them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<CpuMemory>,
}

/// A CPU and memory pair.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CpuMemory {
    /// CPU, e.g. `250m` (a quarter core) or `1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Memory, e.g. `256Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}

/// Horizontal autoscaling (HorizontalPodAutoscaler `autoscaling/v2`). When set,
/// the operator never writes the Deployment's `replicas`: the autoscaler owns it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas")
    .message("autoscaling.minReplicas must not exceed autoscaling.maxReplicas"))]
pub struct Autoscaling {
    /// Fewest replicas the autoscaler keeps (at least 1).
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    /// Most replicas the autoscaler may create.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Target average CPU utilisation in percent of the CPU request. Default:
    /// 70 when no custom metric is given.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "targetCPUUtilizationPercentage"
    )]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: Option<i32>,
    /// An additional per-pod custom metric (served by a custom metrics adapter,
    /// e.g. prometheus-adapter), scaled to an average value per pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_metric: Option<CustomMetric>,
}

/// A per-pod metric from the custom metrics API.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomMetric {
    /// Metric name as the custom metrics API serves it, e.g.
    /// `http_requests_per_second`.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Target average value per pod, as a quantity (e.g. `100` or `500m`).
    pub target_average_value: Quantity,
}

/// Circuit breaker for one downstream. Maps to
/// `[dependencies.<name>.breaker]` in the service config, which the services
/// reload at run time: changing it updates the ConfigMap without restarting pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreaker {
    /// Share of failed calls in the window (greater than 0, at most 1) that
    /// opens the breaker. Service default: 0.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0 && self <= 1.0")
        .message("failureRateThreshold must be greater than 0 and at most 1"))]
    pub failure_rate_threshold: Option<f64>,
    /// Sliding window the failure rate is computed over. Service default: 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<GoDuration>,
    /// Calls needed in the window before the rate is trusted. Service default: 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub minimum_calls: Option<u32>,
    /// How long the breaker stays open before letting probes through.
    /// Service default: 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_duration: Option<GoDuration>,
    /// Successful probes in half-open state needed to close again. Service default: 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub half_open_probes: Option<u32>,
}

/// Retries for one downstream, bounded by a retry budget.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.baseBackoff) || !has(self.maxBackoff) || !self.baseBackoff.matches('^([0-9]+(h|m|s|ms))+$') || !self.maxBackoff.matches('^([0-9]+(h|m|s|ms))+$') || duration(self.baseBackoff) <= duration(self.maxBackoff)"
).message("retry.baseBackoff must not exceed retry.maxBackoff"))]
pub struct Retry {
    /// Total attempts including the first; 1 disables retries. Service default: 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub max_attempts: Option<u32>,
    /// First backoff; doubles per attempt with jitter. Service default: 25ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_backoff: Option<GoDuration>,
    /// Longest backoff. Service default: 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backoff: Option<GoDuration>,
    /// Retries allowed as a share (0–1) of recent first attempts. Service default: 0.2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0.0 && self <= 1.0")
        .message("budgetRatio must be between 0 and 1"))]
    pub budget_ratio: Option<f64>,
    /// Retries per second always allowed, so low traffic can still retry.
    /// Service default: 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_min_per_second: Option<u32>,
    /// Window the budget is computed over. Service default: 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_window: Option<GoDuration>,
}

/// Resilience settings for calls to one downstream (another component such as
/// `availability`, or an external one such as `stripe`). Fields left out fall
/// back to the platform defaults, then to the service's built-in defaults.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    /// Deadline for one attempt. Service default: 2s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
    /// Retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Circuit breaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
}

/// Rolling update bounds for a component's Deployment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// Extra pods allowed above the desired count during a rollout. Default: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrPercent>,
    /// Pods allowed to be unavailable during a rollout. Default: 0, so capacity
    /// never drops while a new version rolls out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrPercent>,
}

/// A plain environment variable added to a component's container (after the
/// operator's own, so it can override `BERTH_*` settings such as `BERTH_LOG`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    /// Variable name, e.g. `BERTH_LOG`.
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")
    )]
    pub name: String,
    /// Literal value. For secrets, put them in a Secret and use `secretKeyRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Take the value from a key of a Secret in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

/// Settings every component gets unless its ServiceSpec overrides them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.replicas) && has(self.autoscaling))")
    .message("set either replicas or autoscaling, not both"))]
pub struct ServiceDefaults {
    /// Replicas per component when it does not autoscale. Default: 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,
    /// Container resources. Default: requests 100m CPU / 128Mi, limit 512Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Autoscale every component (a ServiceSpec can still pin `replicas`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    /// Per-downstream timeouts, retries and circuit breakers, keyed by
    /// downstream name (e.g. `availability`, `stripe`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    pub dependencies: BTreeMap<String, Dependency>,
    /// Rolling update bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

// ---------------------------------------------------------------------------
// BookingPlatform
// ---------------------------------------------------------------------------

/// A complete Berth installation: the five services, their database and Redis
/// connections, payments, authentication and public ingress.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "BookingPlatform",
    namespaced,
    status = "BookingPlatformStatus",
    shortname = "bp",
    category = "berth",
    annotation("helm.sh/resource-policy", "keep"),
    doc = "A complete Berth appointment-booking installation: five services (user, availability, booking, payment, notification), their database migrations, Redis, ingress and network policies.",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Whether every service runs the requested version and is available"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version", description = "Version every service currently runs"),
    printcolumn(name = "Services", type_ = "string", json_path = ".status.servicesReady", description = "Services ready / total"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 30").message("metadata.name must be at most 30 characters (child object names are derived from it)"),
)]
#[serde(rename_all = "camelCase")]
pub struct BookingPlatformSpec {
    /// Container image of the `berth` binary, shared by every service and the
    /// migration job.
    pub image: Image,
    /// PostgreSQL connection (by Secret reference only, never inline).
    pub database: Database,
    /// Redis used for distributed locks: a managed lock cluster or an external one.
    pub redis: Redis,
    /// Payment provider. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payments: Option<Payments>,
    /// Token signing and login providers.
    pub auth: Auth,
    /// Where the user service's account mail and login codes and the
    /// notification service's booking messages go. Without `smtp` no email
    /// is sent (webhooks and texts still are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messaging: Option<Messaging>,
    /// Public HTTP entry point. Without it no Ingress is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
    /// Settings for every component; ServiceSpecs override them per component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<ServiceDefaults>,
    /// Graceful shutdown timing shared by every component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown: Option<Shutdown>,
    /// Which peers the NetworkPolicies admit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,
    /// Stop reconciling: nothing is created, changed or deleted until unpaused.
    /// Status keeps being reported.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// The `berth` container image.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// Image repository without tag, e.g. `ghcr.io/example/berth`.
    #[schemars(length(min = 1, max = 200))]
    pub repository: String,
    /// Version to run; used as the image tag. Changing it first runs the
    /// migration job for the new version, then rolls the services.
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    )]
    pub version: String,
    /// Kubernetes image pull policy. Default: IfNotPresent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<PullPolicy>,
    /// Names of docker-registry Secrets used to pull the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub pull_secrets: Vec<String>,
}

/// Kubernetes image pull policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// PostgreSQL connection.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Database {
    /// Secret key holding the PostgreSQL URL
    /// (`postgres://user:password@host:5432/db`). Default key: `url`.
    pub secret_ref: SecretKeyRef,
}

/// Redis for distributed locks: exactly one of `managed` or `external`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.managed) != has(self.external)")
    .message("set exactly one of redis.managed or redis.external"))]
pub struct Redis {
    /// Run a lock cluster of independent Redis nodes (a StatefulSet, one node
    /// per pod, spread across nodes); their addresses are handed to the services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedRedis>,
    /// Use an existing Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalRedis>,
}

/// A managed Redis lock cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.replicas) || self.replicas % 2 == 1")
    .message("redis.managed.replicas must be odd so a majority of lock nodes is well defined"))]
pub struct ManagedRedis {
    /// Independent Redis nodes (odd, so a lock majority is defined). Default: 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 9))]
    pub replicas: Option<i32>,
    /// Redis image. Default: `redis:7.4-alpine`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub image: Option<String>,
    /// Container resources. Default: requests 50m CPU / 64Mi, limit 256Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Persistent storage per node; without it nodes use an emptyDir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Storage>,
}

/// A PersistentVolumeClaim template.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// Volume size, e.g. `1Gi`.
    pub size: Quantity,
    /// StorageClass; the cluster default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// An existing Redis.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRedis {
    /// Secret key holding the Redis URL (`redis://…` or `rediss://…`).
    /// Default key: `url`.
    pub secret_ref: SecretKeyRef,
}

/// Payment provider selection.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.provider != 'stripe' || has(self.stripe)")
    .message("payments.stripe is required when payments.provider is stripe"))]
pub struct Payments {
    /// `stripe` or `none` (payments disabled: bookings need no payment).
    pub provider: PaymentProvider,
    /// Stripe credentials, by Secret reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe: Option<Stripe>,
}

/// Payment provider.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PaymentProvider {
    Stripe,
    None,
}

/// Stripe credentials.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stripe {
    /// Secret key holding the Stripe API key. Default key: `api-key`.
    pub api_key_secret_ref: SecretKeyRef,
    /// Secret key holding the webhook signing secret. Default key: `webhook-secret`.
    pub webhook_secret_ref: SecretKeyRef,
}

/// Outbound messages.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Messaging {
    /// The SMTP server email goes through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<Smtp>,
    /// A Twilio-shaped Messages API texts go through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<Sms>,
    /// A ConfigMap (same namespace) whose keys are template files
    /// (`confirmation.txt`, `confirmation.html`, `reminder.sms`, …) that
    /// replace the built-in ones. Read when notification pods start:
    /// `kubectl rollout restart` after changing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub templates_config_map: Option<String>,
}

/// An SMTP server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Smtp {
    /// Host name, e.g. `smtp.example.com`.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// Port. Default: 587 for `starttls`, 465 for `tls`, 25 for `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// `starttls` (default), `tls` (implicit TLS) or `none` (plain, for a
    /// relay on a trusted network only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<SmtpSecurity>,
    /// The `From:` address, e.g. `Berth <no-reply@example.com>`.
    #[schemars(length(min = 3, max = 320))]
    pub from: String,
    /// Secret holding the keys `username` and `password`, when the server
    /// wants a login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret_name: Option<String>,
}

/// How the SMTP connection is secured.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    Starttls,
    Tls,
    None,
}

impl SmtpSecurity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starttls => "starttls",
            Self::Tls => "tls",
            Self::None => "none",
        }
    }
}

/// A Twilio-shaped SMS provider.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sms {
    /// The sending number (E.164) or sender id.
    #[schemars(length(min = 1, max = 32))]
    pub from: String,
    /// API base URL. Default: `https://api.twilio.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = "^https?://"))]
    pub base_url: Option<String>,
    /// Secret holding the keys `account-sid` and `auth-token`.
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret_name: String,
}

/// Authentication.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Auth {
    /// Secret key holding the JWT signing key. Default key: `signing-key`.
    pub jwt_signing_key_secret_ref: SecretKeyRef,
    /// Issuer (`iss`) of the tokens Berth signs, e.g. `https://book.example.com`.
    #[schemars(length(min = 1, max = 253))]
    pub issuer: String,
    /// External OpenID Connect login providers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub oidc_providers: Vec<OidcProvider>,
}

/// An OpenID Connect login provider.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OidcProvider {
    /// Short identifier used in login URLs, e.g. `google`.
    #[schemars(length(min = 1, max = 32), regex(pattern = "^[a-z][a-z0-9_]*$"))]
    pub name: String,
    /// Issuer URL; discovery is read from `<issuerUrl>/.well-known/openid-configuration`.
    #[schemars(length(min = 1, max = 253))]
    pub issuer_url: String,
    /// Secret holding the keys `client-id` and `client-secret`.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

/// Public ingress.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// Public host name, e.g. `book.example.com`.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// Secret of type kubernetes.io/tls for the host; plain HTTP when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
    /// IngressClass; the cluster default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
}

/// Graceful shutdown timing. On pod deletion the kubelet runs a preStop sleep
/// of `delay` (endpoints stop routing to the pod meanwhile), then sends SIGTERM:
/// the service turns unready and drains in-flight requests for at most
/// `drainTimeout`. `terminationGracePeriodSeconds` is set to delay + drainTimeout
/// + 5s so the kubelet never kills a draining pod.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Shutdown {
    /// Pause before SIGTERM so load balancers stop routing here. Default: 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<GoDuration>,
    /// Longest time in-flight requests get after SIGTERM. Default: 20s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Option<GoDuration>,
}

/// Peers the NetworkPolicies admit. Everything else is denied: ingress only
/// from the ingress controller (public HTTP), from Prometheus (metrics), from
/// the platform's pods to user (JWKS), from booking to availability (gRPC) and,
/// with Stripe payments, from payment to booking (gRPC); egress only to DNS,
/// PostgreSQL, Redis, user (JWKS), availability (from booking), booking (from
/// payment, with Stripe payments) and HTTPS (payment, user, notification).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create NetworkPolicies. Default: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Namespace of the ingress controller. Default: `ingress-nginx`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_controller_namespace: Option<String>,
    /// Namespace Prometheus scrapes from. Default: `monitoring`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_namespace: Option<String>,
    /// PostgreSQL port allowed for egress. Default: 5432.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub database_port: Option<i32>,
}

/// Observed state of a BookingPlatform.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BookingPlatformStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded`, and kstatus' `Reconciling` (True
    /// while a migration or rollout is under way) and `Stalled` (True when
    /// only a person can help: a missing Secret or key, a failed migration).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Version every service runs, when they all run the same one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Ready services / total, e.g. `5/5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services_ready: Option<String>,
    /// Per-service summary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceSummary>,
    /// Database migration for the requested version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationStatus>,
    /// Managed Redis nodes ready / total, e.g. `3/3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_ready: Option<String>,
}

/// A status condition (the usual Kubernetes shape).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Progressing`, `Degraded`, `Reconciling` or `Stalled`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// One-word machine-readable reason, e.g. `MigrationFailed`.
    pub reason: String,
    /// Human-readable details.
    pub message: String,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
    /// Generation the condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One service of a platform.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSummary {
    pub component: Component,
    /// `ServiceSpec/<name>` or `defaults`.
    pub source: String,
    /// Version the Deployment's pod template runs (absent before the first migration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Desired replicas (chosen by the autoscaler when autoscaling).
    pub replicas: i32,
    pub ready_replicas: i32,
    pub updated_replicas: i32,
    pub ready: bool,
}

/// Migration job state for the requested version.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationStatus {
    pub version: String,
    /// Job name (absent when the version was migrated earlier and the Job is gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// `Pending`, `Running`, `Succeeded` or `Failed`.
    pub phase: String,
}

// ---------------------------------------------------------------------------
// ServiceSpec
// ---------------------------------------------------------------------------

/// Per-component settings for one BookingPlatform. A component without a
/// ServiceSpec runs with the platform's defaults; deleting a ServiceSpec
/// returns its component to those defaults.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "ServiceSpec",
    root = "ServiceSpec",
    namespaced,
    status = "ServiceSpecStatus",
    shortname = "bsvc",
    category = "berth",
    annotation("helm.sh/resource-policy", "keep"),
    doc = "Per-component settings (replicas or autoscaling, resources, circuit breakers, retries, timeouts, rollout, env) for one service of a BookingPlatform.",
    printcolumn(
        name = "Platform",
        type_ = "string",
        json_path = ".spec.platformRef.name"
    ),
    printcolumn(name = "Component", type_ = "string", json_path = ".spec.component"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Replicas", type_ = "string", json_path = ".status.replicas"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.replicas) && has(self.autoscaling))")
    .message("set either replicas or autoscaling, not both"))]
pub struct ServiceSpecFields {
    /// The BookingPlatform (same namespace) this configures.
    pub platform_ref: PlatformRef,
    /// Which service: user, availability, booking, payment or notification.
    pub component: Component,
    /// Fixed replica count (0 stops the component).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,
    /// Autoscale instead of a fixed count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    /// Container resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Per-downstream timeouts, retries and circuit breakers, merged field by
    /// field over the platform defaults. Hot-reloaded: no restart.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    pub dependencies: BTreeMap<String, Dependency>,
    /// Rolling update bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// Extra environment variables (applied after the operator's own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub env: Vec<EnvVar>,
}

/// Reference to a BookingPlatform in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlatformRef {
    /// Name of the BookingPlatform.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
}

/// Observed state of a ServiceSpec.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpecStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Degraded`, and kstatus' `Reconciling` (True while its
    /// component rolls out) and `Stalled` (True when only a person can help:
    /// the platform does not exist, another ServiceSpec already configures
    /// the component). `Ready` is False with reason `PlatformPaused` while the
    /// platform is paused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Ready / desired replicas, e.g. `2/3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<String>,
}

/// Both CustomResourceDefinitions as one multi-document YAML string, the exact
/// content of `crds/` and of the chart's CRD templates.
pub fn crds_yaml() -> Result<String, serde_saphyr::ser_error::Error> {
    let mut out = String::new();
    for (i, crd) in [BookingPlatform::crd(), ServiceSpec::crd()]
        .iter()
        .enumerate()
    {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_saphyr::to_string(crd)?);
    }
    Ok(out)
}

/// File name (under `crds/`) and YAML for each CRD.
pub fn crd_files() -> Result<Vec<(String, String)>, serde_saphyr::ser_error::Error> {
    Ok(vec![
        (
            "berth.dev_bookingplatforms.yaml".to_string(),
            serde_saphyr::to_string(&BookingPlatform::crd())?,
        ),
        (
            "berth.dev_servicespecs.yaml".to_string(),
            serde_saphyr::to_string(&ServiceSpec::crd())?,
        ),
    ])
}

/// The chart's CRD template for one CRD: the exact `crds/` content, installed
/// unless `crds.install=false`. CRDs live in `templates/` (not Helm's `crds/`
/// folder, which Helm never upgrades); `helm.sh/resource-policy: keep` stops
/// `helm uninstall` from deleting them and, with them, every platform.
pub fn chart_crd_template(crd_yaml: &str) -> String {
    format!(
        "{{{{- if .Values.crds.install }}}}\n\
         # Generated by `berth-operator crd --write` from the operator's Rust types; do not edit.\n\
         {crd_yaml}{{{{- end }}}}\n"
    )
}
