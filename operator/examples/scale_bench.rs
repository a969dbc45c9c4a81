//! Scale benchmark (P5, P6): N BookingPlatforms, then a period of idleness.
//!
//! ```text
//! scripts/stack up && eval "$(scripts/stack env)"
//! cargo run -p berth-operator --example scale_bench -- [PLATFORMS] [IDLE_SECONDS]
//! ```
//! (defaults: 100 platforms, 60 s). It creates a namespace, the CRDs, the
//! Secrets and N platforms; runs the operator as a child process (this same
//! binary in operator mode, so its RSS is the operator's alone) scoped to the
//! namespace with leader election on; waits until every platform is Ready;
//! then counts the API writes during the idle period and reads the
//! operator's RSS. Writes are counted twice: by the operator's own client
//! (authoritative: method + resource of every request it sent) and from the
//! API server's `apiserver_request_total` (cluster-wide, so other clients'
//! activity on a shared cluster shows up there too).
//!
//! The platforms run 0 replicas per component and an external Redis: the
//! single kwok node takes 250 pods, fewer than 100 platforms × 5 services;
//! every object (38 per platform) is still created, watched and reconciled.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use berth_operator::crd::BookingPlatform;
use berth_operator::run::{LeaderElection, Settings};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WRITE_VERBS: [&str; 4] = ["POST", "PUT", "PATCH", "DELETE"];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if args.get(1).map(String::as_str) == Some("--operator") {
        let ns = args.get(2).context("namespace")?.clone();
        let addr = args.get(3).context("http addr")?.parse()?;
        return rt.block_on(operator_mode(ns, addr));
    }
    let n: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(100);
    let idle: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(60);
    rt.block_on(bench(n, idle))
}

async fn operator_mode(ns: String, addr: std::net::SocketAddr) -> Result<()> {
    let config = berth_operator::run::load_config().await?;
    let settings = Settings {
        namespace: Some(ns.clone()),
        http_addr: Some(addr),
        concurrency: 4,
        resync: Duration::from_secs(600),
        leader_election: Some(LeaderElection {
            namespace: ns,
            lease_name: "berth-operator".into(),
            identity: format!("bench-{}", std::process::id()),
            duration: 15,
            grace: 5,
        }),
        instance: "bench".into(),
    };
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        term.recv().await;
    };
    berth_operator::run::run(config, settings, shutdown).await
}

async fn http_get(addr: &str, path: &str) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await?;
    Ok(buf)
}

/// Sum of `metric{labels}` samples whose labels satisfy `keep`.
fn sum_metric(text: &str, metric: &str, keep: impl Fn(&BTreeMap<String, String>) -> bool) -> f64 {
    let mut total = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        let Some(rest) = rest.strip_prefix('{') else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let map: BTreeMap<String, String> = labels
            .split("\",")
            .filter_map(|kv| kv.split_once("=\""))
            .map(|(k, v)| (k.to_string(), v.trim_end_matches('"').to_string()))
            .collect();
        if keep(&map) {
            total += value.trim().parse::<f64>().unwrap_or(0.0);
        }
    }
    total
}

fn rss_kib(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

const OUR_RESOURCES: [&str; 13] = [
    "deployments",
    "statefulsets",
    "jobs",
    "services",
    "configmaps",
    "serviceaccounts",
    "poddisruptionbudgets",
    "networkpolicies",
    "ingresses",
    "horizontalpodautoscalers",
    "bookingplatforms",
    "servicespecs",
    "events",
];

async fn apiserver_writes(client: &Client) -> Result<(f64, f64)> {
    let text = client
        .request_text(http::Request::get("/metrics").body(Vec::new())?)
        .await?;
    let ours = sum_metric(&text, "apiserver_request_total", |l| {
        WRITE_VERBS.contains(&l.get("verb").map(String::as_str).unwrap_or(""))
            && OUR_RESOURCES.contains(&l.get("resource").map(String::as_str).unwrap_or(""))
    });
    let leases = sum_metric(&text, "apiserver_request_total", |l| {
        WRITE_VERBS.contains(&l.get("verb").map(String::as_str).unwrap_or(""))
            && l.get("resource").map(String::as_str) == Some("leases")
    });
    Ok((ours, leases))
}

async fn bench(n: usize, idle: u64) -> Result<()> {
    berth_operator::run::install_crypto_provider();
    let client = Client::try_default().await?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for f in [
        "berth.dev_bookingplatforms.yaml",
        "berth.dev_servicespecs.yaml",
    ] {
        let text = std::fs::read_to_string(root.join("crds").join(f))?;
        let crd: CustomResourceDefinition = serde_saphyr::from_str(&text)?;
        crds.patch(
            &crd.name_any(),
            &PatchParams::apply("berth-bench").force(),
            &Patch::Apply(&crd),
        )
        .await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let ns = format!("bench-op-{}", std::process::id());
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": ns, "labels": {"berth.dev/e2e": "true"}}}),
        )?,
    )
    .await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for (name, key) in [("db", "url"), ("jwt", "signing-key"), ("redis", "url")] {
        let s: Secret = serde_json::from_value(
            json!({"metadata": {"name": name}, "stringData": {key: "placeholder"}}),
        )?;
        secrets.create(&PostParams::default(), &s).await?;
    }

    // The operator, as a child process.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let addr = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["--operator", &ns, &addr])
        .env("RUST_LOG", "warn")
        .spawn()
        .context("starting the operator")?;
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http_get(&addr, "/readyz")
        .await
        .is_ok_and(|r| r.contains("200 OK"))
    {
        if Instant::now() > deadline {
            bail!("operator not ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let platforms: Api<BookingPlatform> = Api::namespaced(client.clone(), &ns);
    let t0 = Instant::now();
    for i in 0..n {
        let p = json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "BookingPlatform",
            "metadata": {"name": format!("p{i:03}")},
            "spec": {
                "image": {"repository": "ghcr.io/example/berth", "version": "1.0.0"},
                "database": {"secretRef": {"name": "db"}},
                "redis": {"external": {"secretRef": {"name": "redis"}}},
                "auth": {"issuer": "https://book.example.com", "jwtSigningKeySecretRef": {"name": "jwt"}},
                "defaults": {"replicas": 0},
            }
        });
        platforms
            .patch(
                &format!("p{i:03}"),
                &PatchParams::apply("berth-bench"),
                &Patch::Apply(&p),
            )
            .await?;
    }
    let created = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    let ready_after = loop {
        let list = platforms.list(&ListParams::default()).await?;
        let ready = list
            .items
            .iter()
            .filter(|p| {
                p.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .count();
        if ready == n {
            break t0.elapsed();
        }
        if Instant::now() > deadline {
            bail!("only {ready}/{n} platforms Ready after 600s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (rss_ready, _) = rss_kib(pid)?;
    // Let trailing events (HPA-free here; Job/ReplicaSet status) settle.
    tokio::time::sleep(Duration::from_secs(10)).await;

    let op_metrics = |text: &str, leases: bool| {
        sum_metric(text, "berth_operator_api_writes_total", |l| {
            let is_lease = l.get("resource").is_some_and(|r| r.starts_with("leases"));
            is_lease == leases
        })
    };
    let m0 = http_get(&addr, "/metrics").await?;
    let (a0, l0) = apiserver_writes(&client).await?;
    let reconciles0 = sum_metric(&m0, "berth_operator_reconciles_total", |_| true);
    tokio::time::sleep(Duration::from_secs(idle)).await;
    let m1 = http_get(&addr, "/metrics").await?;
    let (a1, l1) = apiserver_writes(&client).await?;
    let reconciles1 = sum_metric(&m1, "berth_operator_reconciles_total", |_| true);
    let (rss, hwm) = rss_kib(pid)?;
    let total_writes = op_metrics(&m1, false);

    println!("scale_bench: {n} BookingPlatforms in namespace {ns}");
    println!("  applied {n} platforms in {created:?}; all Ready=True after {ready_after:?}");
    println!("  operator API writes to reach Ready (all kinds, excl. Lease): {total_writes}");
    println!("P5 idle {idle}s:");
    println!(
        "  operator-counted writes (POST/PUT/PATCH/DELETE, excl. Lease): {}",
        op_metrics(&m1, false) - op_metrics(&m0, false)
    );
    println!(
        "  operator-counted Lease writes (leader election renewals): {}",
        op_metrics(&m1, true) - op_metrics(&m0, true)
    );
    println!(
        "  apiserver_request_total writes on the operator's resources (cluster-wide): {}",
        a1 - a0
    );
    println!(
        "  apiserver_request_total Lease writes (cluster-wide, incl. kwok/controllers): {}",
        l1 - l0
    );
    println!("  reconciles during idle: {}", reconciles1 - reconciles0);
    println!("P6 operator RSS:");
    println!(
        "  at Ready: {:.1} MiB; after idle: {:.1} MiB; peak (VmHWM): {:.1} MiB",
        rss_ready as f64 / 1024.0,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );

    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    nss.delete(&ns, &DeleteParams::background()).await?;
    Ok(())
}
