//! The process runtime: builds the shared pieces once, serves HTTP and gRPC,
//! and runs graceful shutdown (SIGTERM → unready → stop accepting → drain →
//! exit 0), which is what makes rolling upgrades lossless.

use std::future::IntoFuture;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{CONFIG_FILE_ENV, RuntimeConfig};
use crate::health::{Health, ops_router};
use crate::metrics::Metrics;
use crate::problem::{method_not_allowed_fallback, not_found_fallback};
use crate::resilience::{Dependencies, ReloadHandle, watch_dependency_settings};
use crate::trace::InboundTraceLayer;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(String),
}

/// Everything a service process shares: config, metrics, health, outbound
/// dependencies and the shutdown signal.
pub struct Runtime {
    name: String,
    pub config: RuntimeConfig,
    pub metrics: Metrics,
    pub health: Health,
    pub dependencies: Arc<Dependencies>,
    stop: CancellationToken,
    _reload: Option<ReloadHandle>,
}

impl Runtime {
    /// Sets up logging and shared state. `config_file` enables hot reload of
    /// `[dependencies]` (defaults to `$BERTH_CONFIG`).
    pub fn new(name: &str, config: RuntimeConfig) -> Result<Self, RuntimeError> {
        crate::telemetry::init(name, config.log_format, &config.log);
        let metrics = Metrics::new()?;
        let dependencies = Arc::new(Dependencies::new(
            metrics.registry(),
            config.dependencies.clone(),
        )?);
        let stop = CancellationToken::new();
        let reload = std::env::var_os(CONFIG_FILE_ENV)
            .map(PathBuf::from)
            .map(|path| {
                watch_dependency_settings(
                    path,
                    dependencies.clone(),
                    Duration::from_secs(5),
                    stop.clone(),
                )
            });
        Ok(Self {
            name: name.to_owned(),
            config,
            metrics,
            health: Health::default(),
            dependencies,
            stop,
            _reload: reload,
        })
    }

    /// Cancelled once the listeners should stop accepting.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Turns unready now, waits the configured delay, then stops listeners.
    pub async fn shutdown(&self) {
        self.health.begin_shutdown();
        tracing::info!(delay = ?self.config.shutdown.delay, "shutdown started; readiness is now false");
        tokio::time::sleep(self.config.shutdown.delay).await;
        self.stop.cancel();
    }

    /// Waits for SIGTERM or Ctrl-C, then runs [`Runtime::shutdown`].
    pub async fn shutdown_on_signal(&self) {
        wait_for_signal().await;
        self.shutdown().await;
    }

    /// Turns one or several merged service routers into the process's app:
    /// adds `/livez`, `/readyz`, `/metrics`, problem+json fallbacks, the body
    /// limit, request metrics (labelled by route template) and tracing.
    pub fn finish_app(&self, app: Router) -> Router {
        app.merge(ops_router(self.health.clone(), self.metrics.clone()))
            .fallback(not_found_fallback)
            .method_not_allowed_fallback(method_not_allowed_fallback)
            .layer(DefaultBodyLimit::max(self.config.max_body_bytes))
            .layer(self.metrics.http_layer(&self.name))
            .layer(InboundTraceLayer)
    }

    pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, RuntimeError> {
        TcpListener::bind(addr)
            .await
            .map_err(|source| RuntimeError::Bind { addr, source })
    }

    /// Serves until the stop token fires, then drains in-flight requests for
    /// at most the configured deadline.
    pub async fn serve_http(&self, listener: TcpListener, app: Router) -> Result<(), RuntimeError> {
        let stop = self.stop.clone();
        // A response written in more than one piece must not wait for the
        // client's delayed ACK (Nagle).
        let listener = listener.tap_io(|tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
        });
        let server = axum::serve(listener, app.into_make_service())
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future();
        drain(
            tokio::spawn(server),
            stop,
            self.config.shutdown.drain_timeout,
            "http",
        )
        .await
    }
}

/// Waits for a server task to finish after `stop`, within `deadline`.
pub(crate) async fn drain<E: std::fmt::Display>(
    mut task: tokio::task::JoinHandle<Result<(), E>>,
    stop: CancellationToken,
    deadline: Duration,
    what: &str,
) -> Result<(), RuntimeError> {
    let finished = tokio::select! {
        result = &mut task => Some(result),
        _ = stop.cancelled() => None,
    };
    let result = match finished {
        Some(result) => result,
        None => match tokio::time::timeout(deadline, &mut task).await {
            Ok(result) => result,
            Err(_) => {
                task.abort();
                tracing::warn!(
                    server = what,
                    ?deadline,
                    "drain deadline passed; remaining connections closed"
                );
                return Ok(());
            }
        },
    };
    match result {
        Ok(Ok(())) => {
            tracing::info!(server = what, "drained and stopped");
            Ok(())
        }
        Ok(Err(e)) => Err(RuntimeError::Serve(format!("{what}: {e}"))),
        Err(e) => Err(RuntimeError::Serve(format!("{what}: {e}"))),
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops this process");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
