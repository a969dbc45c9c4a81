//! Liveness and readiness. Readiness reflects the service's dependencies and
//! turns false the moment shutdown begins, so traffic drains before exit.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{StatusCode, header};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type Check = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone, Default)]
pub struct Health {
    inner: Arc<HealthInner>,
}

#[derive(Default)]
struct HealthInner {
    /// Cancelled when shutdown begins; readiness and gRPC health follow it.
    shutting_down: CancellationToken,
    checks: RwLock<Vec<(String, Check)>>,
}

#[derive(Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub checks: BTreeMap<String, String>,
}

impl Health {
    /// Adds a dependency check (e.g. "postgres": `SELECT 1`).
    pub fn add_check<F, Fut>(&self, name: &str, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let check: Check = Arc::new(move || Box::pin(check()));
        self.inner
            .checks
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push((name.to_owned(), check));
    }

    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.cancel();
    }

    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.is_cancelled()
    }

    /// Completes as soon as shutdown begins.
    pub async fn shutdown_started(&self) {
        self.inner.shutting_down.cancelled().await;
    }

    pub async fn readiness(&self) -> Readiness {
        let mut checks = BTreeMap::new();
        if self.is_shutting_down() {
            checks.insert("shutdown".to_owned(), "shutting down".to_owned());
            return Readiness {
                ready: false,
                checks,
            };
        }
        let registered: Vec<(String, Check)> = self
            .inner
            .checks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let results =
            futures::future::join_all(registered.iter().map(|(name, check)| async move {
                let outcome = match tokio::time::timeout(CHECK_TIMEOUT, check()).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
                };
                (name.clone(), outcome)
            }))
            .await;
        let mut ready = true;
        for (name, outcome) in results {
            match outcome {
                Ok(()) => checks.insert(name, "ok".to_owned()),
                Err(e) => {
                    ready = false;
                    checks.insert(name, e)
                }
            };
        }
        Readiness { ready, checks }
    }
}

/// `/livez`, `/readyz` and `/metrics`.
pub fn ops_router(health: Health, metrics: Metrics) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz).with_state(health))
        .route("/metrics", get(render_metrics).with_state(metrics))
}

async fn readyz(State(health): State<Health>) -> Response {
    let readiness = health.readiness().await;
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(readiness)).into_response()
}

async fn render_metrics(State(metrics): State<Metrics>) -> Response {
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        metrics.render(),
    )
        .into_response()
}
