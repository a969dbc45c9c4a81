//! Smoke test for the local control plane: the scheduler places pods on the
//! kwok node, kwok marks them Ready, the deployment and replicaset controllers
//! report it, and the garbage collector cascades a Deployment's deletion to its
//! ReplicaSet and pods.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use berth_e2e::{E2E_LABEL, Probe, client, create_namespace, delete_namespace, poll_until};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, ReplicaSet};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};

const REPLICAS: i32 = 2;
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const GC_TIMEOUT: Duration = Duration::from_secs(60);
const NAMESPACE_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn deployment_becomes_ready_and_is_garbage_collected() -> Result<()> {
    let client = client().await?;
    let ns = create_namespace(&client, "e2e-smoke").await?;

    // Keep the namespace on failure for inspection; it carries the e2e label.
    exercise_deployment(&client, &ns)
        .await
        .with_context(|| {
            format!(
                "in namespace {ns} (left for inspection; `kubectl delete ns -l {E2E_LABEL}=true` removes e2e leftovers)"
            )
        })?;

    let t = Instant::now();
    delete_namespace(&client, &ns, NAMESPACE_TIMEOUT).await?;
    eprintln!("namespace {ns} deleted in {:?}", t.elapsed());
    Ok(())
}

async fn exercise_deployment(client: &Client, ns: &str) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);

    let labels: BTreeMap<String, String> = [("app".to_string(), "smoke".to_string())].into();
    let selector = ListParams::default().labels("app=smoke");

    let created = deployments
        .create(&PostParams::default(), &deployment("smoke", &labels))
        .await
        .context("creating the deployment")?;
    let uid = created
        .metadata
        .uid
        .context("created deployment has no uid")?;

    // 1. The deployment controller reports all replicas ready.
    let t = Instant::now();
    poll_until(
        "deployment smoke to report 2 ready replicas",
        READY_TIMEOUT,
        || async {
            let d = deployments.get("smoke").await?;
            let generation = d.metadata.generation.unwrap_or_default();
            let status = d.status.unwrap_or_default();
            let observed = status.observed_generation.unwrap_or_default();
            let ready = status.ready_replicas.unwrap_or_default();
            let updated = status.updated_replicas.unwrap_or_default();
            Ok(
                if observed >= generation && ready == REPLICAS && updated == REPLICAS {
                    Probe::Done(())
                } else {
                    Probe::Pending(format!(
                        "observedGeneration={observed}/{generation} ready={ready} updated={updated}"
                    ))
                },
            )
        },
    )
    .await?;
    eprintln!("deployment ready in {:?}", t.elapsed());

    // 2. Both pods exist, are bound to a node and have condition Ready=True.
    let ready_pods = pods.list(&selector).await?.items;
    ensure!(
        ready_pods.len() == usize::try_from(REPLICAS)?,
        "expected {REPLICAS} pods, found {}: {:?}",
        ready_pods.len(),
        ready_pods.iter().map(pod_summary).collect::<Vec<_>>()
    );
    for pod in &ready_pods {
        ensure!(is_pod_ready(pod), "pod not Ready: {}", pod_summary(pod));
        ensure!(
            pod.spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some(),
            "pod not scheduled: {}",
            pod_summary(pod)
        );
    }

    // The Deployment owns exactly one ReplicaSet, which owns the pods.
    let all_rs = replicasets.list(&selector).await?.items;
    let owned_rs = owned_by(&all_rs, &uid).len();
    ensure!(
        owned_rs == 1,
        "expected one ReplicaSet owned by the deployment, found {owned_rs}"
    );

    // 3. Foreground deletion: the garbage collector must delete the ReplicaSet
    //    and its pods (kwok finalises the pods' graceful deletion) before it
    //    removes the Deployment itself.
    let t = Instant::now();
    deployments
        .delete("smoke", &DeleteParams::foreground())
        .await
        .context("deleting the deployment")?;

    poll_until(
        "garbage collection of the deployment, its ReplicaSet and pods",
        GC_TIMEOUT,
        || async {
            let deployment_left = deployments.get_opt("smoke").await?.is_some();
            let rs_left = owned_by(&replicasets.list(&selector).await?.items, &uid).len();
            let pods_left: Vec<String> =
                pods.list(&selector).await?.items.iter().map(pod_summary).collect();
            Ok(if !deployment_left && rs_left == 0 && pods_left.is_empty() {
                Probe::Done(())
            } else {
                Probe::Pending(format!(
                    "deployment present={deployment_left} replicasets={rs_left} pods={pods_left:?}"
                ))
            })
        },
    )
    .await?;
    eprintln!(
        "deployment, replicaset and pods garbage-collected in {:?}",
        t.elapsed()
    );
    Ok(())
}

fn deployment(name: &str, labels: &BTreeMap<String, String>) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(REPLICAS),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "pause".to_string(),
                        // kwok never pulls images; any reference works.
                        image: Some("registry.k8s.io/pause:3.10".to_string()),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

fn is_pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn owned_by<'a>(items: &'a [ReplicaSet], owner_uid: &str) -> Vec<&'a ReplicaSet> {
    items
        .iter()
        .filter(|rs| {
            rs.metadata
                .owner_references
                .as_ref()
                .is_some_and(|refs| refs.iter().any(|r| r.uid == owner_uid))
        })
        .collect()
}

fn pod_summary(pod: &Pod) -> String {
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("?");
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("<unscheduled>");
    let deleting = pod.metadata.deletion_timestamp.is_some();
    format!(
        "{name} phase={phase} node={node} ready={} deleting={deleting}",
        is_pod_ready(pod)
    )
}
