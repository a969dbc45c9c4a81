#![allow(clippy::unwrap_used, clippy::expect_used)]
//! End-to-end tests of the Berth operator on the real control plane
//! (`scripts/stack up`: etcd, kube-apiserver, controller-manager, scheduler,
//! kwok faking a Ready node).
//!
//! How the operator runs here: there is no Docker engine and kwok never runs
//! containers, so the chart cannot be "installed" as pods that actually run
//! the operator. The happy-path test therefore renders the chart with
//! `helm template` and applies it (CRDs, ServiceAccount, RBAC, Deployment —
//! the operator Deployment's pods become Ready under kwok), AND runs the
//! operator in-process from the `berth-operator` library against the
//! kubeconfig, impersonating the chart's ServiceAccount so the chart's RBAC
//! is exercised for real. The other tests run the operator with the admin
//! credentials. Each test uses its own namespace and an operator scoped to it.
//!
//! Migrations under kwok: kwok's `pod-complete` stage marks pods owned by a
//! Job Succeeded, so the Job controller completes migration Jobs by itself
//! (the stand-in for `berth migrate` exiting 0). To observe that Deployments
//! wait for the Job, the upgrade test creates the new version's Job itself
//! first, identical to the operator's but suspended, and only unsuspends it
//! after checking that nothing moved.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use berth_e2e::{Probe, create_namespace, delete_namespace, poll_until};
use berth_operator::build::{self, Kind, Observed};
use berth_operator::crd::{BookingPlatform, Component, ServiceSpec};
use berth_operator::metrics::Metrics;
use berth_operator::run::{LeaderElection, Settings};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(90);
const E2E_MANAGER: &str = "berth-e2e";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

async fn kube_config() -> Result<kube::Config> {
    let path = std::env::var_os("KUBECONFIG")
        .filter(|p| !p.is_empty())
        .context(
            "KUBECONFIG is not set; run `scripts/stack up` and `eval \"$(scripts/stack env)\"`",
        )?;
    berth_operator::run::install_crypto_provider();
    let kubeconfig = Kubeconfig::read_from(&path)?;
    Ok(Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
}
use kube::Config;

async fn admin() -> Result<Client> {
    berth_e2e::client().await
}

fn read_docs(rel: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo_root().join(rel)).unwrap();
    serde_saphyr::from_multiple(&text).unwrap()
}

/// Applies the CRDs from `crds/` (shared by all tests; idempotent) and waits
/// until they are established.
async fn install_crds(client: &Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for file in [
        "crds/berth.dev_bookingplatforms.yaml",
        "crds/berth.dev_servicespecs.yaml",
    ] {
        for doc in read_docs(file) {
            let crd: CustomResourceDefinition = serde_json::from_value(doc)?;
            let name = crd.name_any();
            api.patch(
                &name,
                &PatchParams::apply(E2E_MANAGER).force(),
                &Patch::Apply(&crd),
            )
            .await
            .with_context(|| format!("applying CRD {name}"))?;
            tokio::time::timeout(
                TIMEOUT,
                await_condition(api.clone(), &name, conditions::is_crd_established()),
            )
            .await
            .with_context(|| format!("CRD {name} not established"))??;
        }
    }
    Ok(())
}

/// Applies one example document into `ns` with server-side apply.
async fn apply_doc(client: &Client, ns: &str, mut doc: Value) -> Result<()> {
    doc["metadata"]["namespace"] = json!(ns);
    let name = doc["metadata"]["name"].as_str().unwrap().to_string();
    let pp = PatchParams::apply(E2E_MANAGER).force();
    match doc["kind"].as_str().unwrap() {
        "Secret" => {
            Api::<Secret>::namespaced(client.clone(), ns)
                .patch(&name, &pp, &Patch::Apply(&doc))
                .await?;
        }
        "BookingPlatform" => {
            Api::<BookingPlatform>::namespaced(client.clone(), ns)
                .patch(&name, &pp, &Patch::Apply(&doc))
                .await?;
        }
        "ServiceSpec" => {
            Api::<ServiceSpec>::namespaced(client.clone(), ns)
                .patch(&name, &pp, &Patch::Apply(&doc))
                .await?;
        }
        other => bail!("unexpected kind {other}"),
    }
    Ok(())
}

async fn apply_file(client: &Client, ns: &str, rel: &str) -> Result<()> {
    for doc in read_docs(rel) {
        apply_doc(client, ns, doc).await?;
    }
    Ok(())
}

struct Operator {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    metrics: Metrics,
}

impl Operator {
    /// Runs the operator in-process, watching `ns` only, with its leader Lease
    /// in `ns`, optionally impersonating a user (the chart's ServiceAccount).
    async fn start(ns: &str, impersonate: Option<String>) -> Result<Self> {
        let mut config = kube_config().await?;
        config.auth_info.impersonate = impersonate;
        let metrics = Metrics::new()?;
        let settings = Settings {
            namespace: Some(ns.to_string()),
            http_addr: None,
            concurrency: 4,
            resync: Duration::from_secs(600),
            leader_election: Some(LeaderElection {
                namespace: ns.to_string(),
                lease_name: "berth-operator".into(),
                identity: format!("e2e-{ns}"),
                duration: 15,
                grace: 5,
            }),
            instance: format!("e2e-{ns}"),
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(berth_operator::run::run_with(
            config,
            settings,
            metrics.clone(),
            async move {
                let _ = rx.await;
            },
            |_| {},
        ));
        Ok(Self {
            stop: Some(tx),
            task,
            metrics,
        })
    }

    async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .context("operator did not shut down within 20s")???;
        Ok(())
    }

    fn reconciles(&self) -> u64 {
        self.metrics
            .reconciles
            .with_label_values(&["bookingplatform"])
            .get()
    }
}

fn condition<'a>(p: &'a BookingPlatform, t: &str) -> Option<&'a berth_operator::crd::Condition> {
    p.status.as_ref()?.conditions.iter().find(|c| c.type_ == t)
}

fn describe(p: &BookingPlatform) -> String {
    p.status
        .as_ref()
        .map(|s| {
            s.conditions
                .iter()
                .map(|c| format!("{}={} ({}: {})", c.type_, c.status, c.reason, c.message))
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_else(|| "no status".into())
}

async fn wait_condition(
    api: &Api<BookingPlatform>,
    name: &str,
    t: &str,
    status: &str,
    timeout: Duration,
) -> Result<BookingPlatform> {
    poll_until(&format!("{name} {t}={status}"), timeout, || async {
        let p = api.get(name).await?;
        let ok = condition(&p, t).is_some_and(|c| c.status == status)
            && p.status.as_ref().and_then(|s| s.observed_generation) == p.metadata.generation;
        Ok(if ok {
            Probe::Done(p)
        } else {
            Probe::Pending(describe(&p))
        })
    })
    .await
}

fn dyn_api(client: &Client, ns: &str, kind: Kind) -> Api<DynamicObject> {
    let (g, v, k, plural) = kind.gvk();
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, k), plural),
    )
}

/// (kind, name) of every object the operator manages for `platform` in `ns`.
async fn existing_children(
    client: &Client,
    ns: &str,
    platform: &str,
) -> Result<BTreeSet<(Kind, String)>> {
    let lp = ListParams::default().labels(&format!("berth.dev/platform={platform}"));
    let mut out = BTreeSet::new();
    for kind in Kind::ALL {
        for o in dyn_api(client, ns, kind).list_metadata(&lp).await?.items {
            if o.metadata.deletion_timestamp.is_none() {
                out.insert((kind, o.name_any()));
            }
        }
    }
    Ok(out)
}

fn expected_children(
    platform: &BookingPlatform,
    specs: &[&ServiceSpec],
) -> BTreeSet<(Kind, String)> {
    let chosen: BTreeMap<Component, &ServiceSpec> =
        specs.iter().map(|s| (s.spec.component, *s)).collect();
    let observed = Observed {
        deployed: BTreeMap::new(),
        migration_job: Some(build::JobState::Succeeded),
    };
    build::plan(platform, &chosen, &observed)
        .objects
        .iter()
        .map(|c| (c.kind, c.name.clone()))
        .collect()
}

fn helm() -> Result<PathBuf> {
    let status = Command::new(repo_root().join("operator/scripts/install-tools"))
        .status()
        .context("running operator/scripts/install-tools")?;
    ensure!(status.success(), "operator/scripts/install-tools failed");
    let home = std::env::var("HOME")?;
    Ok(
        Path::new(
            &std::env::var("BERTH_TOOLS_DIR").unwrap_or(format!("{home}/.cache/berth/tools")),
        )
        .join("bin/helm"),
    )
}

/// `helm template` the chart for `ns` and apply it with kubectl (server-side).
fn install_chart(ns: &str) -> Result<String> {
    let release = "berth-operator";
    let out = Command::new(helm()?)
        .args(["template", release, "--kube-version", "1.35.0"])
        .arg(repo_root().join("charts/berth-operator"))
        .args(["--namespace", ns, "--set", &format!("watchNamespace={ns}")])
        .output()
        .context("helm template")?;
    ensure!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut child = Command::new("kubectl")
        .args([
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            E2E_MANAGER,
            "-n",
            ns,
            "-f",
            "-",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("kubectl apply")?;
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&out.stdout)?;
    }
    let res = child.wait_with_output()?;
    ensure!(
        res.status.success(),
        "kubectl apply of the chart failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    Ok(release.to_string())
}

async fn pod_uids(client: &Client, ns: &str, selector: &str) -> Result<BTreeSet<String>> {
    Ok(Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(selector))
        .await?
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.uid.clone())
        .collect())
}

fn image_of(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_happy_path_upgrade_breakers_and_gc() -> Result<()> {
    let client = admin().await?;
    install_crds(&client).await?;
    let ns = create_namespace(&client, "e2e-op").await?;
    let result = happy_path(&client, &ns).await;
    if result.is_ok() {
        delete_namespace(&client, &ns, TIMEOUT).await?;
    }
    result.with_context(|| format!("in namespace {ns} (left for inspection)"))
}

async fn happy_path(client: &Client, ns: &str) -> Result<()> {
    // 1. The chart: rendered and applied; its operator pods become Ready
    //    under kwok (they run nothing).
    let release = install_chart(ns)?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    poll_until("chart's operator Deployment ready", TIMEOUT, || async {
        let d = deployments.get(&release).await?;
        let ready = d
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        Ok(if ready == 2 {
            Probe::Done(())
        } else {
            Probe::Pending(format!("ready={ready}"))
        })
    })
    .await?;

    // 2. The operator itself, in-process, with the chart's RBAC.
    let operator =
        Operator::start(ns, Some(format!("system:serviceaccount:{ns}:{release}"))).await?;

    // 3. Apply the examples and time children and readiness (P4).
    let platforms: Api<BookingPlatform> = Api::namespaced(client.clone(), ns);
    let t0 = Instant::now();
    apply_file(client, ns, "examples/minimal/secrets.yaml").await?;
    apply_file(client, ns, "examples/minimal/bookingplatform.yaml").await?;
    apply_file(client, ns, "examples/booking-autoscaling.yaml").await?;
    let platform = platforms.get("shop").await?;
    let spec = Api::<ServiceSpec>::namespaced(client.clone(), ns)
        .get("shop-booking")
        .await?;
    let expected = expected_children(&platform, &[&spec]);
    // Deployments (and the HPA targeting one) wait for the migration Job;
    // everything else is created by the first reconcile.
    let ungated: BTreeSet<(Kind, String)> = expected
        .iter()
        .filter(|(k, _)| !matches!(k, Kind::Deployment | Kind::HorizontalPodAutoscaler))
        .cloned()
        .collect();
    let first_wave = poll_until("every non-gated child to exist", TIMEOUT, || async {
        let have = existing_children(client, ns, "shop").await?;
        Ok(if ungated.is_subset(&have) {
            Probe::Done(t0.elapsed())
        } else {
            Probe::Pending(format!("{have:?}"))
        })
    })
    .await?;
    let created = poll_until("every child to exist", TIMEOUT, || async {
        let have = existing_children(client, ns, "shop").await?;
        let missing: Vec<_> = expected.difference(&have).collect();
        Ok(if missing.is_empty() {
            Probe::Done(t0.elapsed())
        } else {
            Probe::Pending(format!("missing {missing:?}"))
        })
    })
    .await?;
    let ready_platform = wait_condition(&platforms, "shop", "Ready", "True", TIMEOUT).await?;
    let ready_after = t0.elapsed();
    eprintln!(
        "P4: apply → {} non-gated children created in {first_wave:?}; all {} children (Deployments after the migration Job) in {created:?}; → Ready=True (kwok) in {ready_after:?}",
        ungated.len(),
        expected.len()
    );
    let st = ready_platform.status.clone().unwrap();
    ensure!(
        st.version.as_deref() == Some("1.0.0"),
        "status.version {:?}",
        st.version
    );
    ensure!(
        st.services_ready.as_deref() == Some("5/5"),
        "servicesReady {:?}",
        st.services_ready
    );

    // 4. Children have the expected spec.
    let booking = deployments.get("shop-booking").await?;
    let operator_owns_replicas = booking
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() == Some("berth-operator"))
        .any(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.pointer("/f:spec/f:replicas").is_some())
        });
    ensure!(
        !operator_owns_replicas,
        "the operator must not own replicas of an autoscaled Deployment"
    );
    let hpa = dyn_api(client, ns, Kind::HorizontalPodAutoscaler)
        .get("shop-booking")
        .await?;
    ensure!(
        hpa.data["spec"]["minReplicas"] == 2 && hpa.data["spec"]["maxReplicas"] == 5,
        "hpa {:?}",
        hpa.data["spec"]
    );
    let user = deployments.get("shop-user").await?;
    let ds = user.spec.clone().unwrap();
    ensure!(ds.replicas == Some(1));
    let pod = ds.template.spec.unwrap();
    let ctr = &pod.containers[0];
    let sc = ctr.security_context.clone().unwrap();
    ensure!(
        sc.read_only_root_filesystem == Some(true) && sc.allow_privilege_escalation == Some(false)
    );
    ensure!(sc.capabilities.unwrap().drop == Some(vec!["ALL".to_string()]));
    ensure!(pod.security_context.unwrap().run_as_non_root == Some(true));
    ensure!(
        ctr.readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref()
            == Some("/readyz")
    );
    ensure!(
        pod.termination_grace_period_seconds == Some(30),
        "5s delay + 20s drain + 5s"
    );
    ensure!(
        ds.strategy.unwrap().rolling_update.unwrap().max_unavailable
            == Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(0))
    );
    let np = dyn_api(client, ns, Kind::NetworkPolicy)
        .get("shop-availability")
        .await?;
    ensure!(
        np.data["spec"]["ingress"].to_string().contains("9090"),
        "availability admits gRPC from booking"
    );
    let redis = dyn_api(client, ns, Kind::StatefulSet)
        .get("shop-redis")
        .await?;
    ensure!(redis.data["spec"]["replicas"] == 3);
    let lease = Api::<Lease>::namespaced(client.clone(), ns)
        .get("berth-operator")
        .await?;
    ensure!(
        lease.spec.and_then(|s| s.holder_identity).as_deref() == Some(&format!("e2e-{ns}")),
        "the in-process operator holds the leader Lease"
    );
    let spec_status = Api::<ServiceSpec>::namespaced(client.clone(), ns)
        .get("shop-booking")
        .await?;
    ensure!(
        spec_status
            .status
            .as_ref()
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready")),
        "ServiceSpec status is reported: {:?}",
        spec_status.status
    );

    // 5. A breaker change updates the ConfigMap and restarts nothing.
    let sel = "berth.dev/platform=shop,berth.dev/role=booking";
    let uids_before = pod_uids(client, ns, sel).await?;
    let gen_before = deployments.get("shop-booking").await?.metadata.generation;
    let writes_before = operator.metrics.writes_total(&["leases"]);
    Api::<ServiceSpec>::namespaced(client.clone(), ns)
        .patch(
            "shop-booking",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"dependencies": {"availability": {"circuitBreaker": {"failureRateThreshold": 0.3}}}}})),
        )
        .await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    poll_until("ConfigMap to carry the new breaker", TIMEOUT, || async {
        let cm = cms.get("shop-booking-config").await?;
        let toml = cm
            .data
            .unwrap_or_default()
            .get("config.toml")
            .cloned()
            .unwrap_or_default();
        Ok(if toml.contains("failure_rate_threshold = 0.3") {
            Probe::Done(())
        } else {
            Probe::Pending(toml)
        })
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(
        deployments.get("shop-booking").await?.metadata.generation == gen_before,
        "pod template changed"
    );
    ensure!(
        pod_uids(client, ns, sel).await? == uids_before,
        "booking pods restarted"
    );
    let writes = operator.metrics.writes_total(&["leases"]) - writes_before;
    eprintln!("breaker change: {writes} API writes (ConfigMap apply, statuses, events)");

    // 6. Version change: the migration Job runs first, then a new ReplicaSet
    //    rolls with zero unavailable. The test pre-creates the operator's own
    //    Job for 1.1.0, suspended, to hold the migration "running".
    let mut next = platforms.get("shop").await?;
    next.spec.image.version = "1.1.0".into();
    let hold = build::plan(
        &next,
        &BTreeMap::from([(Component::Booking, &spec)]),
        &Observed::default(),
    );
    let job_name = hold.migration_job.clone();
    let mut job = hold.find(Kind::Job, &job_name).unwrap().object.clone();
    job["spec"]["suspend"] = json!(true);
    // Not owned yet: creating an owned Job wakes the operator, and a
    // reconcile that still sees 1.0.0 prunes it as another version's Job
    // (the operator then creates its own, unsuspended). The operator's
    // apply adopts it once 1.1.0 is the target; `suspend` stays ours.
    job["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("ownerReferences");
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    jobs.create(&PostParams::default(), &serde_json::from_value(job)?)
        .await?;
    platforms
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"image": {"version": "1.1.0"}}})),
        )
        .await?;
    let p = poll_until("Progressing=MigrationRunning", TIMEOUT, || async {
        let p = platforms.get("shop").await?;
        let ok = condition(&p, "Progressing").is_some_and(|c| c.reason == "MigrationRunning");
        Ok(if ok {
            Probe::Done(p)
        } else {
            Probe::Pending(describe(&p))
        })
    })
    .await?;
    ensure!(condition(&p, "Ready").unwrap().status == "False");
    tokio::time::sleep(Duration::from_secs(2)).await;
    for c in Component::ALL {
        let d = deployments.get(&format!("shop-{c}")).await?;
        ensure!(
            image_of(&d).ends_with(":1.0.0"),
            "{c} moved before the migration finished: {}",
            image_of(&d)
        );
    }
    // Adopted as soon as 1.1.0 is the target (so deleting the platform
    // collects it), before anything edits the Job again.
    let held = jobs.get(&job_name).await?;
    ensure!(
        held.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| Some(&o.uid) == p.metadata.uid.as_ref()),
        "the operator adopted the Job it found"
    );
    // Release the migration (kwok completes the pod, the Job controller the Job).
    jobs.patch(
        &job_name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": false}})),
    )
    .await?;
    let t_rollout = Instant::now();
    // Zero unavailable: no Deployment may drop below the replicas it had when
    // the rollout began (booking's autoscaler may only raise that).
    let mut min_available: BTreeMap<String, i32> = BTreeMap::new();
    for c in Component::ALL {
        let d = deployments.get(&format!("shop-{c}")).await?;
        min_available.insert(d.name_any(), d.spec.and_then(|s| s.replicas).unwrap_or(1));
    }
    // Lowest (available − replicas at rollout start) seen across Deployments.
    let margin = std::sync::atomic::AtomicI32::new(i32::MAX);
    poll_until("rollout to 1.1.0 with zero unavailable", TIMEOUT, || {
        let deployments = deployments.clone();
        let platforms = platforms.clone();
        let min_available = min_available.clone();
        let margin = &margin;
        async move {
            for (name, min) in &min_available {
                let d = deployments.get(name).await?;
                let available = d
                    .status
                    .as_ref()
                    .and_then(|s| s.available_replicas)
                    .unwrap_or(0);
                ensure!(
                    available >= *min,
                    "{name} dropped to {available} available during the rollout"
                );
                margin.fetch_min(available - *min, std::sync::atomic::Ordering::Relaxed);
            }
            let p = platforms.get("shop").await?;
            let done = condition(&p, "Ready").is_some_and(|c| c.status == "True")
                && p.status.as_ref().and_then(|s| s.version.as_deref()) == Some("1.1.0");
            Ok(if done {
                Probe::Done(())
            } else {
                Probe::Pending(describe(&p))
            })
        }
    })
    .await?;
    eprintln!(
        "upgrade: migration released → Ready at 1.1.0 in {:?} (lowest available − desired seen: {})",
        t_rollout.elapsed(),
        margin.into_inner()
    );
    let job = jobs.get(&job_name).await?;
    let completed = job
        .status
        .as_ref()
        .and_then(|s| s.completion_time.clone())
        .context("job not complete")?;
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    let new_rs: Vec<ReplicaSet> = rss
        .list(
            &ListParams::default()
                .labels("berth.dev/platform=shop,app.kubernetes.io/version=1.1.0"),
        )
        .await?
        .items;
    ensure!(
        new_rs.len() == 5,
        "expected a new ReplicaSet per component, found {}",
        new_rs.len()
    );
    for rs in &new_rs {
        let created = rs.metadata.creation_timestamp.clone().unwrap();
        ensure!(
            created.0 >= completed.0,
            "ReplicaSet {} created before the migration completed",
            rs.name_any()
        );
    }

    // 7. Idle: nothing to do, nothing written (Lease renewals aside). The
    //    autoscaler first raises booking to its minimum of 2 (it acts every
    //    15s), which is a real change (status), so wait for it to settle.
    poll_until(
        "booking scaled to the autoscaler minimum",
        TIMEOUT,
        || async {
            let p = platforms.get("shop").await?;
            let b = p.status.as_ref().and_then(|s| {
                s.services
                    .iter()
                    .find(|x| x.component == Component::Booking)
                    .cloned()
            });
            Ok(match b {
                Some(b) if b.replicas == 2 && b.ready => Probe::Done(()),
                other => Probe::Pending(format!("{other:?}")),
            })
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_before = operator.metrics.writes_total(&["leases"]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_writes = operator.metrics.writes_total(&["leases"]) - idle_before;
    ensure!(
        idle_writes == 0,
        "{idle_writes} API writes while idle:\n{}",
        operator
            .metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("berth_operator_api_writes_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // 8. Delete → every child garbage-collected (owner references; no finalizer).
    let t_del = Instant::now();
    platforms
        .delete("shop", &DeleteParams::background())
        .await?;
    poll_until("children garbage-collected", TIMEOUT, || async {
        let left = existing_children(client, ns, "shop").await?;
        Ok(if left.is_empty() {
            Probe::Done(())
        } else {
            Probe::Pending(format!("{left:?}"))
        })
    })
    .await?;
    eprintln!(
        "delete: all children garbage-collected in {:?}",
        t_del.elapsed()
    );
    operator.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_missing_secret_degrades_then_recovers() -> Result<()> {
    let client = admin().await?;
    install_crds(&client).await?;
    let ns = create_namespace(&client, "e2e-op-secret").await?;
    let operator = Operator::start(&ns, None).await?;
    let result = missing_secret(&client, &ns, &operator).await;
    operator.stop().await?;
    if result.is_ok() {
        delete_namespace(&client, &ns, TIMEOUT).await?;
    }
    result.with_context(|| format!("in namespace {ns} (left for inspection)"))
}

async fn missing_secret(client: &Client, ns: &str, operator: &Operator) -> Result<()> {
    let platforms: Api<BookingPlatform> = Api::namespaced(client.clone(), ns);
    // A ServiceSpec whose platform does not exist yet.
    apply_file(client, ns, "examples/booking-autoscaling.yaml").await?;
    let specs: Api<ServiceSpec> = Api::namespaced(client.clone(), ns);
    poll_until("ServiceSpec Degraded=PlatformNotFound", TIMEOUT, || async {
        let s = specs.get("shop-booking").await?;
        let c = s.status.as_ref().and_then(|st| {
            st.conditions
                .iter()
                .find(|c| c.type_ == "Degraded")
                .cloned()
        });
        Ok(match c {
            Some(c)
                if c.reason == "PlatformNotFound"
                    && c.message.contains("BookingPlatform shop not found") =>
            {
                Probe::Done(())
            }
            other => Probe::Pending(format!("{other:?}")),
        })
    })
    .await?;

    // The platform without its Secrets.
    apply_file(client, ns, "examples/minimal/bookingplatform.yaml").await?;
    let p = wait_condition(&platforms, "shop", "Degraded", "True", TIMEOUT).await?;
    let d = condition(&p, "Degraded").unwrap();
    ensure!(d.reason == "SecretNotFound", "{}", describe(&p));
    ensure!(
        d.message
            .contains("secret berth-database (spec.database.secretRef) not found"),
        "{}",
        d.message
    );
    // kstatus readers (kubectl wait, Flux, cli-utils) see it as failed.
    let stalled = condition(&p, "Stalled").unwrap();
    ensure!(
        stalled.status == "True" && stalled.reason == "SecretNotFound",
        "{}",
        describe(&p)
    );
    ensure!(
        condition(&p, "Reconciling").unwrap().status == "False",
        "{}",
        describe(&p)
    );
    ensure!(
        existing_children(client, ns, "shop").await?.is_empty(),
        "nothing is created while a Secret is missing"
    );
    // No hot loop: a Degraded platform waits for a change.
    let before = operator.reconciles();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let extra = operator.reconciles() - before;
    ensure!(
        extra <= 1,
        "{extra} reconciles in 3s while waiting for the Secret"
    );
    // An event explains it.
    let events: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("events.k8s.io", "v1", "Event"),
            "events",
        ),
    );
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(|e| e.data["reason"].as_str().map(str::to_string))
        .collect();
    ensure!(
        reasons.iter().any(|r| r == "SecretNotFound"),
        "events: {reasons:?}"
    );

    // The Secrets appear → it recovers by itself.
    let t = Instant::now();
    apply_file(client, ns, "examples/minimal/secrets.yaml").await?;
    wait_condition(&platforms, "shop", "Ready", "True", TIMEOUT).await?;
    eprintln!(
        "recovered from missing Secrets to Ready=True in {:?}",
        t.elapsed()
    );
    let p = platforms.get("shop").await?;
    ensure!(
        condition(&p, "Degraded").unwrap().status == "False"
            && condition(&p, "Stalled").unwrap().status == "False"
            && condition(&p, "Reconciling").unwrap().status == "False",
        "{}",
        describe(&p)
    );
    poll_until("ServiceSpec Degraded=False", TIMEOUT, || async {
        let s = specs.get("shop-booking").await?;
        let c = s.status.as_ref().and_then(|st| {
            st.conditions
                .iter()
                .find(|c| c.type_ == "Degraded")
                .cloned()
        });
        Ok(match c {
            Some(c) if c.status == "False" => Probe::Done(()),
            other => Probe::Pending(format!("{other:?}")),
        })
    })
    .await?;
    Ok(())
}

/// Expects the API server to reject `doc` with a message containing `needle`.
async fn expect_rejected(client: &Client, ns: &str, doc: Value, needle: &str) -> Result<()> {
    match apply_doc(client, ns, doc.clone()).await {
        Ok(()) => bail!("accepted, expected rejection with {needle:?}: {doc}"),
        Err(e) => {
            let msg = format!("{e:#}");
            ensure!(
                msg.contains(needle),
                "rejected with {msg:?}, expected {needle:?}"
            );
            Ok(())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_invalid_resources_are_rejected_with_cel_messages() -> Result<()> {
    let client = admin().await?;
    install_crds(&client).await?;
    let ns = create_namespace(&client, "e2e-op-cel").await?;
    let base_platform = read_docs("examples/minimal/bookingplatform.yaml").remove(0);
    let base_spec = read_docs("examples/booking-autoscaling.yaml").remove(0);

    let mut p = base_platform.clone();
    p["spec"]["redis"]["external"] = json!({"secretRef": {"name": "r"}});
    expect_rejected(
        &client,
        &ns,
        p,
        "set exactly one of redis.managed or redis.external",
    )
    .await?;

    let mut p = base_platform.clone();
    p["spec"]["redis"]["managed"]["replicas"] = json!(2);
    expect_rejected(&client, &ns, p, "must be odd").await?;

    let mut p = base_platform.clone();
    p["spec"]["payments"] = json!({"provider": "stripe"});
    expect_rejected(
        &client,
        &ns,
        p,
        "payments.stripe is required when payments.provider is stripe",
    )
    .await?;

    let mut p = base_platform.clone();
    p["metadata"]["name"] = json!("a-platform-name-that-is-far-too-long-for-children");
    expect_rejected(
        &client,
        &ns,
        p,
        "metadata.name must be at most 30 characters",
    )
    .await?;

    let mut s = base_spec.clone();
    s["spec"]["autoscaling"]["minReplicas"] = json!(6);
    expect_rejected(
        &client,
        &ns,
        s,
        "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
    )
    .await?;

    let mut s = base_spec.clone();
    s["spec"]["dependencies"]["availability"]["circuitBreaker"]["failureRateThreshold"] =
        json!(1.5);
    expect_rejected(
        &client,
        &ns,
        s,
        "failureRateThreshold must be greater than 0 and at most 1",
    )
    .await?;

    let mut s = base_spec.clone();
    s["spec"]["dependencies"]["availability"]["circuitBreaker"]["window"] = json!("10 seconds");
    expect_rejected(&client, &ns, s, "must be a positive duration").await?;

    let mut s = base_spec.clone();
    s["spec"]["dependencies"]["availability"]["retry"]["baseBackoff"] = json!("2s");
    expect_rejected(
        &client,
        &ns,
        s,
        "retry.baseBackoff must not exceed retry.maxBackoff",
    )
    .await?;

    let mut s = base_spec.clone();
    s["spec"]["replicas"] = json!(3);
    expect_rejected(
        &client,
        &ns,
        s,
        "set either replicas or autoscaling, not both",
    )
    .await?;

    let mut s = base_spec.clone();
    s["spec"]["component"] = json!("billing");
    expect_rejected(&client, &ns, s, "Unsupported value: \"billing\"").await?;

    let mut s = base_spec.clone();
    s["spec"]["resources"]["requests"]["cpu"] = json!("lots");
    expect_rejected(&client, &ns, s, "must be a Kubernetes quantity").await?;

    // The examples themselves are valid.
    apply_doc(&client, &ns, base_platform).await?;
    apply_doc(&client, &ns, base_spec).await?;
    for file in [
        "examples/full/bookingplatform.yaml",
        "examples/payment-stripe.yaml",
    ] {
        for doc in read_docs(file) {
            apply_doc(&client, &ns, doc).await?;
        }
    }
    delete_namespace(&client, &ns, TIMEOUT).await?;
    Ok(())
}

/// The full example's objects, as the operator builds them, are accepted by
/// the API server with strict field validation (server-side dry run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_builder_output_passes_strict_server_validation() -> Result<()> {
    let client = admin().await?;
    install_crds(&client).await?;
    let ns = create_namespace(&client, "e2e-op-dry").await?;
    for (file, spec_file) in [
        (
            "examples/full/bookingplatform.yaml",
            Some("examples/payment-stripe.yaml"),
        ),
        (
            "examples/minimal/bookingplatform.yaml",
            Some("examples/booking-autoscaling.yaml"),
        ),
    ] {
        let mut doc = read_docs(file).remove(0);
        doc["metadata"]["namespace"] = json!(ns);
        doc["metadata"]["uid"] = json!("00000000-0000-4000-8000-000000000001");
        let p: BookingPlatform = serde_json::from_value(doc)?;
        let spec: Option<ServiceSpec> = spec_file.map(|f| {
            let mut d = read_docs(f).remove(0);
            d["metadata"]["namespace"] = json!(ns);
            serde_json::from_value(d).unwrap()
        });
        let specs: BTreeMap<Component, &ServiceSpec> =
            spec.iter().map(|s| (s.spec.component, s)).collect();
        let plan = build::plan(
            &p,
            &specs,
            &Observed {
                deployed: BTreeMap::new(),
                migration_job: Some(build::JobState::Succeeded),
            },
        );
        berth_operator::controller::apply_children(&client, &ns, &plan.objects, true)
            .await
            .with_context(|| format!("dry-run of {file}"))?;
    }
    delete_namespace(&client, &ns, TIMEOUT).await?;
    Ok(())
}
