//! The schema migration Job for the requested version.

use serde_json::json;

use super::NONROOT_UID;
use super::ctx::Ctx;
use super::model::{Child, Kind};
use super::pod::{
    plain_env, resources_json, restricted_container_security, restricted_pod_security, secret_env,
};
use crate::names::*;

pub(super) fn migration_job(ctx: &Ctx<'_>, job_name: &str, version: &str) -> Child {
    let db = &ctx.p.spec.database.secret_ref;
    let mut pod_spec = json!({
        "restartPolicy": "Never",
        "serviceAccountName": migrate_account_name(&ctx.name),
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "securityContext": restricted_pod_security(NONROOT_UID),
        "containers": [{
            "name": "migrate",
            "image": ctx.image(version),
            "imagePullPolicy": ctx.pull_policy(),
            "args": ["migrate"],
            "env": [
                plain_env("BERTH_LOG_FORMAT", "json"),
                secret_env("BERTH_DATABASE_URL", &db.name, db.key_or("url")),
            ],
            "resources": resources_json(None, ("100m", "128Mi"), "256Mi"),
            "securityContext": restricted_container_security(),
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        }],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
    });
    if let (Some(secrets), Some(obj)) = (ctx.pull_secrets(), pod_spec.as_object_mut()) {
        obj.insert("imagePullSecrets".into(), secrets);
    }
    // No `suspend` and no TTL: the Job stays as the record that this version
    // was migrated until the next version's Job replaces it.
    ctx.child(
        Kind::Job,
        job_name,
        ROLE_MIGRATE,
        Some(version),
        json!({"spec": {
            "backoffLimit": 3,
            "activeDeadlineSeconds": 900,
            "template": {
                "metadata": {"labels": ctx.labels(ROLE_MIGRATE, Some(version))},
                "spec": pod_spec,
            },
        }}),
    )
}
