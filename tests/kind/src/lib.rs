//! End-to-end tests against a real Kubernetes API server (any kubeconfig).
//!
//! The tests need a running cluster: `scripts/stack up` starts one on loopback
//! (etcd, kube-apiserver, controller-manager, scheduler and kwok fake nodes),
//! and `tests/kind/run` brings it up and runs the suite. The helpers here are
//! shared by every test file so each test gets the same clear failure when the
//! cluster is missing and the same namespace hygiene.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, Config};

/// Label put on every namespace a test creates, so leftovers from a failed run
/// can be removed with `kubectl delete ns -l berth.dev/e2e=true`.
pub const E2E_LABEL: &str = "berth.dev/e2e";

/// How often the polling helpers look again.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Builds a client from the file named by `KUBECONFIG`.
///
/// Deliberately does not fall back to `~/.kube/config` or in-cluster config:
/// an e2e run must never touch whatever cluster happens to be the default, and
/// a missing cluster is a failure, not a reason to skip.
pub async fn client() -> Result<Client> {
    let path = match std::env::var_os("KUBECONFIG") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => bail!(
            "KUBECONFIG is not set. Start the local cluster with `scripts/stack up` and \
             load its environment with `eval \"$(scripts/stack env)\"`, or run the whole \
             suite with `tests/kind/run`."
        ),
    };
    // Only the first install wins; an error means a provider is already set.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::read_from(&path)
        .with_context(|| format!("reading KUBECONFIG={}", path.display()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading KUBECONFIG={}", path.display()))?;
    let client = Client::try_from(config).context("building the Kubernetes client")?;
    // Fail fast with a readable error when the file points at a dead server.
    client.apiserver_version().await.with_context(|| {
        format!(
            "the API server in KUBECONFIG={} does not answer; is `scripts/stack up` running?",
            path.display()
        )
    })?;
    Ok(client)
}

/// A name that is unique across runs and parallel tests, valid as a DNS label.
pub fn unique_name(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    // Base 36 keeps it short; pid separates concurrent test binaries.
    let mut n = nanos;
    let mut suffix = String::new();
    while n > 0 {
        let digit = u32::try_from(n % 36).unwrap_or_default();
        suffix.push(char::from_digit(digit, 36).unwrap_or('0'));
        n /= 36;
    }
    let mut name = format!("{prefix}-{}-{suffix}", std::process::id());
    name.truncate(63);
    name.trim_end_matches('-').to_string()
}

/// Creates a fresh, labelled namespace and returns its name.
pub async fn create_namespace(client: &Client, prefix: &str) -> Result<String> {
    let name = unique_name(prefix);
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some([(E2E_LABEL.to_string(), "true".to_string())].into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(name)
}

/// Deletes a namespace and waits until the namespace controller has emptied
/// and removed it.
pub async fn delete_namespace(client: &Client, name: &str, timeout: Duration) -> Result<()> {
    let api = Api::<Namespace>::all(client.clone());
    let Some(ns) = api.get_opt(name).await? else {
        return Ok(());
    };
    let uid = ns.metadata.uid.unwrap_or_default();
    api.delete(name, &DeleteParams::background())
        .await
        .with_context(|| format!("deleting namespace {name}"))?;
    tokio::time::timeout(
        timeout,
        await_condition(api, name, conditions::is_deleted(&uid)),
    )
    .await
    .with_context(|| format!("namespace {name} still exists after {timeout:?}"))??;
    Ok(())
}

/// Calls `probe` until it returns `Ok(Some(_))` or `timeout` passes.
///
/// `probe` returns `Ok(None)` for "not yet"; its `Err` aborts at once. On
/// timeout the error names `what` and the last state `describe` reported, so
/// a failing test says what it was waiting for and what it saw instead.
pub async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Probe<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe().await? {
            Probe::Done(v) => return Ok(v),
            Probe::Pending(seen) => seen,
        };
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Outcome of one [`poll_until`] probe.
pub enum Probe<T> {
    /// The condition holds; stop polling.
    Done(T),
    /// Not yet; the string describes what was observed.
    Pending(String),
}
