//! Wiring: client, watches and caches, both controllers, leader election,
//! HTTP endpoints and graceful shutdown. `run` is what the binary's `run`
//! subcommand calls; tests call it in-process.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures::{FutureExt, Stream, StreamExt};
use http::Method;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Config as ControllerConfig, Controller, WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::controller::{self, Context, Stores};
use crate::crd::{BookingPlatform, ServiceSpec};
use crate::http::Health;
use crate::metrics::{Metrics, resource_of};
use crate::names;
use crate::servicespec::{self, SpecContext};

/// Leader election on a `coordination.k8s.io` Lease.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub namespace: String,
    pub lease_name: String,
    /// Unique per replica (the pod name).
    pub identity: String,
    /// Lease duration in seconds; the holder renews `grace` seconds before expiry.
    pub duration: u64,
    pub grace: u64,
}

#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch one namespace only; `None` watches all.
    pub namespace: Option<String>,
    /// Where `/metrics`, `/livez` and `/readyz` are served; `None` disables it.
    pub http_addr: Option<SocketAddr>,
    /// Reconciles running at once, per controller.
    pub concurrency: u16,
    /// Safety-net requeue interval.
    pub resync: Duration,
    pub leader_election: Option<LeaderElection>,
    /// `reportingInstance` of Events.
    pub instance: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespace: None,
            http_addr: None,
            concurrency: 4,
            resync: Duration::from_secs(600),
            leader_election: None,
            instance: "berth-operator".into(),
        }
    }
}

/// Builds a client whose write requests are counted in `metrics`.
pub fn client_with_metrics(config: kube::Config, metrics: &Metrics) -> anyhow::Result<Client> {
    let writes = metrics.api_writes.clone();
    let layer = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        let m = req.method();
        if *m == Method::POST || *m == Method::PUT || *m == Method::PATCH || *m == Method::DELETE {
            writes
                .with_label_values(&[m.as_str(), &resource_of(req.uri().path())])
                .inc();
        }
        req
    });
    let builder =
        kube::client::ClientBuilder::try_from(config).context("building the Kubernetes client")?;
    Ok(builder.with_layer(&layer).build())
}

/// Handle to a running operator (in-process use).
pub struct Running {
    pub metrics: Metrics,
    pub health: Arc<Health>,
    pub http_addr: Option<SocketAddr>,
}

fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn uid_key<K: Resource>(o: &K) -> String {
    o.meta().uid.clone().unwrap_or_else(|| {
        format!(
            "{:?}/{}",
            o.meta().namespace,
            o.meta().name.clone().unwrap_or_default()
        )
    })
}

fn hash_of<T: Hash>(t: &T) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    t.hash(&mut h);
    h.finish()
}

/// Turns a watcher event stream into a trigger stream that only passes
/// objects whose `relevance` changed, plus every deletion (which generation
/// predicates would swallow).
fn relevant<K, S, F>(
    events: S,
    relevance: F,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    F: Fn(&K) -> u64 + Send + 'static,
{
    let mut seen: HashMap<String, u64> = HashMap::new();
    events.filter_map(move |ev| {
        let out = match ev {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                let h = relevance(&o);
                let key = uid_key(&o);
                if seen.insert(key, h) == Some(h) {
                    None
                } else {
                    Some(Ok(o))
                }
            }
            Ok(watcher::Event::Delete(o)) => {
                seen.remove(&uid_key(&o));
                Some(Ok(o))
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
            Err(e) => Some(Err(e)),
        };
        futures::future::ready(out)
    })
}

/// A full-object watch with a cache (after `strip`) and a relevance filter.
fn cached_watch<K, F, R>(
    api: Api<K>,
    wc: watcher::Config,
    strip: F,
    relevance: R,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    F: FnMut(&mut K) + Send + 'static,
    R: Fn(&K) -> u64 + Send + 'static,
{
    let (reader, writer) = reflector::store();
    let events = watcher(api, wc)
        .default_backoff()
        .modify(strip)
        .reflect(writer);
    (reader, relevant(events, relevance))
}

/// A metadata-only watch with a cache; passes changes of the change marker,
/// owner references or applied hash.
fn meta_watch<K>(
    api: Api<kube::api::PartialObjectMeta<K>>,
    wc: watcher::Config,
) -> (
    Store<kube::api::PartialObjectMeta<K>>,
    impl Stream<Item = Result<kube::api::PartialObjectMeta<K>, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let events = watcher(api, wc)
        .default_backoff()
        .modify(|o: &mut kube::api::PartialObjectMeta<K>| o.metadata.managed_fields = None)
        .reflect(writer);
    let stream = relevant(events, |o: &kube::api::PartialObjectMeta<K>| {
        hash_of(&(
            o.metadata.generation,
            o.metadata
                .generation
                .is_none()
                .then(|| o.metadata.resource_version.clone()),
            o.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(names::ANNOTATION_HASH).cloned()),
            o.metadata
                .owner_references
                .as_ref()
                .map(|r| r.iter().map(|x| x.uid.clone()).collect::<Vec<_>>()),
        ))
    });
    (reader, stream)
}

/// Runs the operator until `shutdown` resolves (or leadership is lost).
pub async fn run(
    config: kube::Config,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = Metrics::new().context("registering metrics")?;
    run_with(config, settings, metrics, shutdown, |_| {}).await
}

/// Like [`run`], with the metrics registry supplied and a callback receiving
/// the running handle once the HTTP server is up.
pub async fn run_with(
    config: kube::Config,
    settings: Settings,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_start: impl FnOnce(Running),
) -> anyhow::Result<()> {
    let client = client_with_metrics(config, &metrics)?;
    client
        .apiserver_version()
        .await
        .context("the API server does not answer")?;
    let health = Arc::new(Health::default());
    health.live.store(true, Ordering::Relaxed);

    let (stop_tx, stop_rx) = watch::channel(false);
    let shutdown = shutdown.shared();
    {
        let shutdown = shutdown.clone();
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
    }
    let stopped = {
        let rx = stop_rx.clone();
        move || {
            let mut rx = rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        }
    };

    let http_addr = match settings.http_addr {
        Some(addr) => Some(
            crate::http::serve(addr, metrics.clone(), health.clone(), stopped())
                .await
                .with_context(|| format!("binding {addr}"))?,
        ),
        None => None,
    };
    health.ready.store(true, Ordering::Relaxed);
    on_start(Running {
        metrics: metrics.clone(),
        health: health.clone(),
        http_addr,
    });

    // Leader election: wait for the Lease, run while holding it.
    let mut lease_task = None;
    let mut leader_rx = None;
    if settings.leader_election.is_none() {
        // The only replica reconciles: it leads (alerts on "no leader" hold).
        metrics.leader.set(1);
    }
    if let Some(le) = &settings.leader_election {
        let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &le.lease_name)
            .with_namespace(&le.namespace)
            .with_identity(&le.identity)
            .with_duration(le.duration)
            .with_grace(le.grace)
            .with_field_manager(format!("{}-lease", names::MANAGER))
            .build()
            .await
            .context("setting up leader election")?;
        let (mut rx, task) = manager.watch().await;
        tracing::info!(lease = %le.lease_name, namespace = %le.namespace, identity = %le.identity, "waiting for leadership");
        let mut stop = stop_rx.clone();
        let acquired: anyhow::Result<bool> = tokio::select! {
            r = rx.wait_for(|l| *l) => r.map(|_| true).context("leader election ended"),
            _ = stop.wait_for(|s| *s) => Ok(false),
        };
        if !acquired? {
            drop(rx);
            let _ = task.await;
            health.live.store(false, Ordering::Relaxed);
            return Ok(());
        }
        tracing::info!("acquired leadership");
        metrics.leader.set(1);
        leader_rx = Some(rx);
        lease_task = Some(task);
    }

    // Losing the Lease stops the controllers (the binary then exits so a
    // fresh process re-joins the election).
    let lost_leadership = {
        let rx = leader_rx.clone();
        async move {
            match rx {
                Some(mut rx) => {
                    let _ = rx.wait_for(|l| !*l).await;
                    tracing::warn!("lost leadership; stopping controllers");
                }
                None => futures::future::pending::<()>().await,
            }
        }
    }
    .shared();

    run_controllers(client.clone(), &settings, metrics.clone(), {
        let stopped = stopped();
        let lost = lost_leadership.clone();
        async move {
            tokio::select! {
                _ = stopped => {},
                _ = lost => {},
            }
        }
    })
    .await;

    health.live.store(false, Ordering::Relaxed);
    metrics.leader.set(0);
    // Dropping the receiver makes the lease task release the Lease, so a
    // standby takes over at once instead of after the lease duration.
    drop(leader_rx);
    if let Some(task) = lease_task {
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(Ok(Ok(_))) => tracing::info!("released the leader Lease"),
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "releasing the Lease failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "lease task failed"),
            Err(_) => tracing::warn!("timed out releasing the Lease"),
        }
    }
    if lost_leadership.now_or_never().is_some() {
        anyhow::bail!("lost leadership");
    }
    Ok(())
}

async fn run_controllers(
    client: Client,
    settings: &Settings,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let ns = settings.namespace.as_deref();
    let managed = watcher::Config::default().labels(&names::managed_selector());
    let any = watcher::Config::default();

    // Primary: BookingPlatforms, passed on only when the generation changes
    // (status writes and metadata edits do not retrigger).
    let (platform_reader, platform_writer) = reflector::store::<BookingPlatform>();
    let platforms = watcher(api::<BookingPlatform>(&client, ns), any.clone())
        .default_backoff()
        .modify(|p: &mut BookingPlatform| p.metadata.managed_fields = None)
        .reflect(platform_writer);
    let platform_trigger = relevant(platforms, |p: &BookingPlatform| {
        hash_of(&p.metadata.generation)
    });

    let (spec_store, spec_stream) = cached_watch(
        api::<ServiceSpec>(&client, ns),
        any.clone(),
        |s: &mut ServiceSpec| s.metadata.managed_fields = None,
        |s: &ServiceSpec| hash_of(&s.metadata.generation),
    );
    let (secret_store, secret_stream) = cached_watch(
        api::<Secret>(&client, ns),
        any.clone(),
        controller::strip_secret,
        |s: &Secret| {
            let mut keys: Vec<&String> = s
                .data
                .as_ref()
                .map(|d| d.keys().collect())
                .unwrap_or_default();
            keys.sort();
            hash_of(&keys)
        },
    );
    let (deploy_store, deploy_stream) = cached_watch(
        api::<Deployment>(&client, ns),
        managed.clone(),
        controller::strip_deployment,
        |d: &Deployment| {
            let w = controller::workload_from_deployment(d);
            hash_of(&(
                &w,
                d.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(names::ANNOTATION_HASH).cloned()),
            ))
        },
    );
    let (job_store, job_stream) = cached_watch(
        api::<Job>(&client, ns),
        managed.clone(),
        controller::strip_job,
        |j: &Job| hash_of(&format!("{:?}", controller::job_state(Some(j)))),
    );
    let (sts_store, sts_stream) = cached_watch(
        api::<StatefulSet>(&client, ns),
        managed.clone(),
        controller::strip_statefulset,
        |s: &StatefulSet| {
            let w = controller::workload_from_statefulset(s);
            hash_of(&(
                &w,
                s.metadata.generation,
                s.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(names::ANNOTATION_HASH).cloned()),
            ))
        },
    );
    let (hpa_store, hpa_stream) = cached_watch(
        api::<HorizontalPodAutoscaler>(&client, ns),
        managed.clone(),
        |h: &mut HorizontalPodAutoscaler| {
            h.metadata.managed_fields = None;
            h.status = None;
        },
        |h: &HorizontalPodAutoscaler| hash_of(&serde_json::to_string(&h.spec).unwrap_or_default()),
    );
    let (svc_store, svc_stream) = meta_watch(
        api::<kube::api::PartialObjectMeta<Service>>(&client, ns),
        managed.clone(),
    );
    let (cm_store, cm_stream) = meta_watch(
        api::<kube::api::PartialObjectMeta<ConfigMap>>(&client, ns),
        managed.clone(),
    );
    let (sa_store, sa_stream) = meta_watch(
        api::<kube::api::PartialObjectMeta<ServiceAccount>>(&client, ns),
        managed.clone(),
    );
    let (pdb_store, pdb_stream) = meta_watch(
        api::<kube::api::PartialObjectMeta<PodDisruptionBudget>>(&client, ns),
        managed.clone(),
    );
    let (np_store, np_stream) = meta_watch(
        api::<kube::api::PartialObjectMeta<NetworkPolicy>>(&client, ns),
        managed.clone(),
    );
    let (ing_store, ing_stream) = meta_watch(
        api::<kube::api::PartialObjectMeta<Ingress>>(&client, ns),
        managed.clone(),
    );

    let stores = Stores {
        platforms: platform_reader.clone(),
        specs: spec_store.clone(),
        secrets: secret_store,
        deployments: deploy_store,
        jobs: job_store,
        statefulsets: sts_store,
        hpas: hpa_store,
        services: svc_store,
        config_maps: cm_store,
        service_accounts: sa_store,
        pdbs: pdb_store,
        network_policies: np_store,
        ingresses: ing_store,
    };

    let reporter = Reporter {
        controller: names::MANAGER.into(),
        instance: Some(settings.instance.clone()),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let ctx = Arc::new(Context::new(
        client.clone(),
        stores.clone(),
        metrics.clone(),
        recorder,
        settings.resync,
    ));

    // A ServiceSpec whose platformRef changed must reconcile its previous
    // platform too (that component falls back to the defaults).
    let last_platform: Arc<Mutex<HashMap<String, ObjectRef<BookingPlatform>>>> = Arc::default();
    let spec_mapper = move |s: ServiceSpec| {
        let mut out = Vec::new();
        let key = uid_key(&s);
        if let Some(now) = controller::spec_to_platform(&s) {
            if let Ok(mut last) = last_platform.lock()
                && let Some(prev) = last.insert(key, now.clone())
                && prev != now
            {
                out.push(prev);
            }
            out.push(now);
        }
        out
    };
    let secret_stores = stores.clone();

    let cfg = ControllerConfig::default()
        .concurrency(settings.concurrency)
        .debounce(Duration::from_millis(50));
    let shutdown = shutdown.shared();

    let platform_controller = Controller::for_stream(platform_trigger, platform_reader.clone())
        .with_config(cfg.clone())
        .watches_stream(spec_stream, spec_mapper)
        .watches_stream(secret_stream, move |s: Secret| {
            controller::secret_to_platforms(&secret_stores, &s)
        })
        .owns_stream(deploy_stream)
        .owns_stream(job_stream)
        .owns_stream(sts_stream)
        .owns_stream(hpa_stream)
        .owns_stream(svc_stream)
        .owns_stream(cm_stream)
        .owns_stream(sa_stream)
        .owns_stream(pdb_stream)
        .owns_stream(np_stream)
        .owns_stream(ing_stream)
        .graceful_shutdown_on(shutdown.clone())
        .run(controller::reconcile, controller::error_policy, ctx)
        .for_each(|r| {
            if let Err(e) = r {
                tracing::debug!(error = %e, "platform controller event");
            }
            futures::future::ready(())
        });

    // ServiceSpec status controller: its own caches of specs (generation
    // changes) and platforms (every change: their status feeds spec status).
    let (ss_reader, ss_writer) = reflector::store::<ServiceSpec>();
    let ss_events = watcher(api::<ServiceSpec>(&client, ns), any.clone())
        .default_backoff()
        .modify(|s: &mut ServiceSpec| s.metadata.managed_fields = None)
        .reflect(ss_writer);
    let ss_trigger = relevant(ss_events, |s: &ServiceSpec| hash_of(&s.metadata.generation));
    let (sp_reader, sp_stream) = cached_watch(
        api::<BookingPlatform>(&client, ns),
        any.clone(),
        |p: &mut BookingPlatform| p.metadata.managed_fields = None,
        |p: &BookingPlatform| {
            hash_of(&(
                p.metadata.generation,
                p.status
                    .as_ref()
                    .map(|s| serde_json::to_string(&s.services).unwrap_or_default()),
            ))
        },
    );
    let spec_ctx = Arc::new(SpecContext {
        client: client.clone(),
        platforms: sp_reader,
        specs: ss_reader.clone(),
        metrics: metrics.clone(),
    });
    let ss_for_mapper = ss_reader.clone();
    let spec_controller = Controller::for_stream(ss_trigger, ss_reader)
        .with_config(cfg)
        .watches_stream(sp_stream, move |p: BookingPlatform| {
            servicespec::platform_to_specs(&ss_for_mapper, &p)
        })
        .graceful_shutdown_on(shutdown)
        .run(servicespec::reconcile, servicespec::error_policy, spec_ctx)
        .for_each(|r| {
            if let Err(e) = r {
                tracing::debug!(error = %e, "servicespec controller event");
            }
            futures::future::ready(())
        });

    tracing::info!(namespace = ?settings.namespace, "controllers started");
    futures::future::join(platform_controller, spec_controller).await;
    tracing::info!("controllers stopped");
}

/// Loads a client config from `KUBECONFIG` / in-cluster, installing ring as
/// the process-wide rustls provider first.
pub async fn load_config() -> anyhow::Result<kube::Config> {
    install_crypto_provider();
    kube::Config::infer()
        .await
        .context("loading Kubernetes client config")
}

/// Only the first install wins; an error means a provider is already set.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
