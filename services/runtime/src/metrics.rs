//! Prometheus metrics: per-route request counts, errors and latency for HTTP
//! and gRPC, plus process metrics, served on `/metrics`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::MatchedPath;
use http::{Request, Response};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};
use tower::{Layer, Service};

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Lookups in a service's in-memory caches, by cache and `hit`/`miss`;
/// every service's `/metrics` shows it.
pub fn cache_lookups() -> &'static IntCounterVec {
    static LOOKUPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
        // Invariant: constant, valid options (a name, help and labels), so
        // construction cannot fail.
        #[allow(clippy::expect_used)]
        IntCounterVec::new(
            Opts::new("berth_cache_lookups_total", "In-memory cache lookups"),
            &["cache", "result"],
        )
        .expect("constant counter options")
    });
    &LOOKUPS
}

/// One cache's `hit` and `miss` counters in [`cache_lookups`], resolved
/// once, so counting a lookup on a hot path is an atomic add.
#[derive(Clone)]
pub struct CacheLookups {
    hit: IntCounter,
    miss: IntCounter,
}

impl CacheLookups {
    pub fn new(cache: &str) -> Self {
        let lookups = cache_lookups();
        Self {
            hit: lookups.with_label_values(&[cache, "hit"]),
            miss: lookups.with_label_values(&[cache, "miss"]),
        }
    }

    pub fn count(&self, hit: bool) {
        if hit { &self.hit } else { &self.miss }.inc();
    }
}

#[derive(Clone)]
struct RequestMetrics {
    requests: IntCounterVec,
    errors: IntCounterVec,
    latency: HistogramVec,
}

impl RequestMetrics {
    fn register(
        registry: &Registry,
        protocol: &str,
        status_label: &str,
    ) -> prometheus::Result<Self> {
        let labels = ["service", "method", "route", status_label];
        let requests = IntCounterVec::new(
            Opts::new(
                format!("berth_{protocol}_requests_total"),
                format!("{protocol} requests handled."),
            ),
            &labels,
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                format!("berth_{protocol}_request_errors_total"),
                format!("{protocol} requests that ended in a server-side error."),
            ),
            &labels,
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                format!("berth_{protocol}_request_duration_seconds"),
                format!("{protocol} request latency."),
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &labels,
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        Ok(Self {
            requests,
            errors,
            latency,
        })
    }

    fn observe(&self, labels: &[&str; 4], seconds: f64, error: bool) {
        self.requests.with_label_values(labels).inc();
        self.latency.with_label_values(labels).observe(seconds);
        if error {
            self.errors.with_label_values(labels).inc();
        }
    }
}

/// The process's metrics registry and the request instruments in it.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    http: RequestMetrics,
    grpc: RequestMetrics,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        registry.register(Box::new(crate::batch::size_histogram().clone()))?;
        registry.register(Box::new(crate::batch::duration_histogram().clone()))?;
        registry.register(Box::new(cache_lookups().clone()))?;
        Ok(Self {
            http: RequestMetrics::register(&registry, "http", "status")?,
            grpc: RequestMetrics::register(&registry, "grpc", "code")?,
            registry,
        })
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec only fails on invalid metric names, which
        // registration already rejected.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    pub fn http_layer(&self, service: &str) -> RequestMetricsLayer {
        RequestMetricsLayer {
            metrics: Arc::new(self.http.clone()),
            service: Arc::from(service),
            grpc: false,
        }
    }

    pub fn grpc_layer(&self, service: &str) -> RequestMetricsLayer {
        RequestMetricsLayer {
            metrics: Arc::new(self.grpc.clone()),
            service: Arc::from(service),
            grpc: true,
        }
    }
}

#[derive(Clone)]
pub struct RequestMetricsLayer {
    metrics: Arc<RequestMetrics>,
    service: Arc<str>,
    grpc: bool,
}

impl<S> Layer<S> for RequestMetricsLayer {
    type Service = RequestMetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestMetricsService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RequestMetricsService<S> {
    inner: S,
    layer: RequestMetricsLayer,
}

impl<S, B, RB> Service<Request<B>> for RequestMetricsService<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let start = Instant::now();
        let method = request.method().to_string();
        // Route templates, not raw paths, keep label cardinality bounded.
        let route = if self.layer.grpc {
            request.uri().path().to_owned()
        } else {
            request
                .extensions()
                .get::<MatchedPath>()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "unmatched".to_owned())
        };
        let layer = self.layer.clone();
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await;
            let seconds = start.elapsed().as_secs_f64();
            let (status, error) = match &result {
                Ok(response) if layer.grpc => grpc_code(response),
                Ok(response) => (
                    response.status().as_u16().to_string(),
                    response.status().is_server_error(),
                ),
                Err(_) => ("error".to_owned(), true),
            };
            layer
                .metrics
                .observe(&[&layer.service, &method, &route, &status], seconds, error);
            result
        })
    }
}

fn grpc_code<B>(response: &Response<B>) -> (String, bool) {
    let code = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(tonic::Code::from_i32)
        .unwrap_or(tonic::Code::Ok);
    let server_error = matches!(
        code,
        tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unimplemented
            | tonic::Code::Internal
            | tonic::Code::Unavailable
            | tonic::Code::DataLoss
    );
    (format!("{code:?}"), server_error)
}
