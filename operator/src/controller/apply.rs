//! Writing to the cluster: server-side apply of changed children, pruning
//! of children no longer desired, and the status patch.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
    PropagationPolicy, ValidationDirective,
};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use super::observe::{ChildMeta, marker_of};
use super::watch::{deployment_marker, strip_deployment};
use super::{Context, Error, Outcome};
use crate::build::{self, Child, JobState, Kind, Observed, Plan};
use crate::crd::{BookingPlatform, BookingPlatformStatus, Component};
use crate::names::MANAGER;

pub(super) fn api_resource(kind: Kind) -> ApiResource {
    let (g, v, k, plural) = kind.gvk();
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, k), plural)
}

pub(super) fn dyn_api(client: &Client, ns: &str, kind: Kind) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &api_resource(kind))
}

pub(super) async fn apply_plan(
    ctx: &Context,
    ns: &str,
    uid: &str,
    plan: &Plan,
    observed: &Observed,
) -> Result<Outcome, Error> {
    let stores = &ctx.stores;
    let mut observed_by_kind: BTreeMap<Kind, Vec<ChildMeta>> = BTreeMap::new();
    for kind in Kind::ALL {
        observed_by_kind.insert(kind, stores.children(kind, ns, uid));
    }
    let to_apply: Vec<Child> = {
        let applied = ctx
            .applied
            .lock()
            .map_err(|_| Error::Invalid("state lock poisoned".into()))?;
        plan.objects
            .iter()
            .filter(|child| {
                let seen = observed_by_kind
                    .get(&child.kind)
                    .and_then(|v| v.iter().find(|m| m.name == child.name));
                let key = (child.kind, ns.to_string(), child.name.clone());
                let needs = needs_apply(child, seen, applied.get(&key));
                if !needs {
                    ctx.metrics
                        .skipped
                        .with_label_values(&[child.kind.name()])
                        .inc();
                }
                needs
            })
            .cloned()
            .collect()
    };

    // Record markers of skipped objects seen for the first time (e.g. after
    // a restart) so later foreign edits are noticed.
    {
        let mut applied = ctx
            .applied
            .lock()
            .map_err(|_| Error::Invalid("state lock poisoned".into()))?;
        for child in &plan.objects {
            let key = (child.kind, ns.to_string(), child.name.clone());
            if applied.contains_key(&key) {
                continue;
            }
            if let Some(m) = observed_by_kind
                .get(&child.kind)
                .and_then(|v| v.iter().find(|m| m.name == child.name))
                && m.hash.as_deref() == Some(child.hash.as_str())
            {
                applied.insert(key, (child.hash.clone(), m.marker.clone()));
            }
        }
    }

    let params = PatchParams {
        field_manager: Some(MANAGER.to_string()),
        force: true,
        field_validation: Some(ValidationDirective::Strict),
        ..PatchParams::default()
    };
    let client = ctx.client.clone();
    let metrics = ctx.metrics.clone();
    let ns_owned = ns.to_string();
    let results: Vec<Result<(Kind, String, String, String), Error>> =
        futures::stream::iter(to_apply)
            .map(move |child: Child| {
                let params = params.clone();
                let api = dyn_api(&client, &ns_owned, child.kind);
                let metrics = metrics.clone();
                async move {
                    let applied = api
                        .patch(&child.name, &params, &Patch::Apply(&child.object))
                        .await?;
                    metrics
                        .applies
                        .with_label_values(&[child.kind.name()])
                        .inc();
                    let marker = match child.kind {
                        Kind::HorizontalPodAutoscaler => {
                            let spec = applied.data.get("spec").cloned().unwrap_or(Value::Null);
                            format!("s{}", crate::hash::json_digest(&spec))
                        }
                        Kind::Deployment => {
                            let mut d: Deployment =
                                serde_json::from_value(serde_json::to_value(&applied)?)?;
                            strip_deployment(&mut d);
                            deployment_marker(&d)
                        }
                        _ => marker_of(&applied.metadata),
                    };
                    Ok((child.kind, child.name, child.hash, marker))
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
    let mut applied_names = Vec::new();
    let mut first_err = None;
    {
        let mut applied = ctx
            .applied
            .lock()
            .map_err(|_| Error::Invalid("state lock poisoned".into()))?;
        for r in results {
            match r {
                Ok((kind, name, hash, marker)) => {
                    applied.insert((kind, ns.to_string(), name.clone()), (hash, marker));
                    applied_names.push(format!("{}/{name}", kind.name()));
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }

    // Prune owned objects that are no longer desired (HPA after autoscaling
    // is removed, Ingress, managed Redis, migration Jobs of older versions).
    let mut pruned = Vec::new();
    for (kind, seen) in &observed_by_kind {
        let desired = build::desired_names(plan, *kind);
        for m in seen
            .iter()
            .filter(|m| m.owned && !desired.contains(&m.name.as_str()))
        {
            let api = dyn_api(&ctx.client, ns, *kind);
            let dp = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..DeleteParams::default()
            };
            match api.delete(&m.name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            if let Ok(mut applied) = ctx.applied.lock() {
                applied.remove(&(*kind, ns.to_string(), m.name.clone()));
            }
            pruned.push(format!("{}/{}", kind.name(), m.name));
        }
    }

    let job_created = plan.migration_job_desired
        && matches!(observed.migration_job, Some(JobState::Absent) | None)
        && applied_names
            .iter()
            .any(|n| n == &format!("Job/{}", plan.migration_job));
    let moved_version = plan.migration_phase == build::MigrationPhase::Succeeded
        && Component::ALL.iter().any(|c| {
            observed
                .deployed
                .get(c)
                .is_some_and(|v| v != &plan.target_version)
        });
    Ok(Outcome {
        applied: applied_names,
        pruned,
        job_created,
        moved_version,
    })
}

/// Skip objects whose applied hash matches and that nobody changed since we
/// applied them. One that is not owned (created by hand, or owned by a
/// platform since deleted) is applied anyway, which adopts it: otherwise it
/// would outlive the platform's garbage collection.
pub(super) fn needs_apply(
    child: &Child,
    seen: Option<&ChildMeta>,
    record: Option<&(String, String)>,
) -> bool {
    let Some(seen) = seen else {
        return true;
    };
    if !seen.owned || seen.hash.as_deref() != Some(child.hash.as_str()) {
        return true;
    }
    match record {
        Some((hash, marker)) if hash == &child.hash => !same_marker(child, marker, &seen.marker),
        // Unknown marker (first look after a restart): trust the hash.
        _ => false,
    }
}

pub(super) async fn write_status(
    ctx: &Context,
    p: &BookingPlatform,
    ns: &str,
    status: &BookingPlatformStatus,
) -> Result<(), Error> {
    let api: Api<BookingPlatform> = Api::namespaced(ctx.client.clone(), ns);
    let body = json!({
        "apiVersion": format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION),
        "kind": "BookingPlatform",
        "status": status,
    });
    api.patch_status(
        &p.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// Compares change markers; for a Deployment whose replicas belong to an
/// autoscaler, the replica count is ignored.
pub(super) fn same_marker(child: &Child, a: &str, b: &str) -> bool {
    if child.kind == Kind::Deployment && child.object["spec"].get("replicas").is_none() {
        a.split('|').next() == b.split('|').next()
    } else {
        a == b
    }
}

/// Convenience for tests and tools: apply a list of plan children to a
/// namespace (server dry-run when `dry_run`), returning the first error.
pub async fn apply_children(
    client: &Client,
    ns: &str,
    children: &[Child],
    dry_run: bool,
) -> Result<(), Error> {
    let params = PatchParams {
        field_manager: Some(MANAGER.to_string()),
        force: true,
        dry_run,
        field_validation: Some(ValidationDirective::Strict),
    };
    futures::stream::iter(children.to_vec())
        .map(move |c: Child| {
            let params = params.clone();
            let api = dyn_api(client, ns, c.kind);
            async move {
                api.patch(&c.name, &params, &Patch::Apply(&c.object))
                    .await
                    .map(|_| ())
                    .map_err(Error::from)
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child() -> Child {
        Child {
            kind: Kind::Job,
            name: "shop-migrate-1-1-0".into(),
            object: json!({}),
            hash: "h1".into(),
        }
    }

    fn seen(hash: &str, owned: bool) -> ChildMeta {
        ChildMeta {
            name: "shop-migrate-1-1-0".into(),
            hash: Some(hash.into()),
            marker: "g1".into(),
            owned,
        }
    }

    #[test]
    fn applies_what_is_missing_changed_or_not_ours() {
        let c = child();
        assert!(needs_apply(&c, None, None), "missing");
        assert!(needs_apply(&c, Some(&seen("h0", true)), None), "other hash");
        assert!(
            needs_apply(&c, Some(&seen("h1", false)), None),
            "same hash but unowned: adopt it"
        );
        let record = ("h1".to_string(), "g0".to_string());
        assert!(
            needs_apply(&c, Some(&seen("h1", true)), Some(&record)),
            "edited since we applied it"
        );
    }

    #[test]
    fn skips_what_we_applied_and_nobody_touched() {
        let c = child();
        assert!(!needs_apply(&c, Some(&seen("h1", true)), None));
        let record = ("h1".to_string(), "g1".to_string());
        assert!(!needs_apply(&c, Some(&seen("h1", true)), Some(&record)));
    }
}
