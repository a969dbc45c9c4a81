//! The three outbound tower layers. Composed by [`resilient`] as
//! retry → breaker → timeout → transport, so every attempt is seen by the
//! breaker and an open breaker ends the retry loop at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Method, Request, Response};
use tower::{BoxError, Layer, Service, ServiceExt};

use super::Dependency;
use super::backoff::full_jitter;
use super::breaker::CircuitOpen;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// How a completed call counts for the breaker and for retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure { retryable: bool },
}

impl Outcome {
    fn is_success(self) -> bool {
        matches!(self, Self::Success)
    }
}

pub trait Classify<R>: Clone + Send + Sync + 'static {
    fn classify(&self, response: &R) -> Outcome;
}

/// 5xx counts against the dependency; 502/503/504 are worth retrying.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpClassifier;

impl<B> Classify<Response<B>> for HttpClassifier {
    fn classify(&self, response: &Response<B>) -> Outcome {
        let status = response.status();
        if !status.is_server_error() {
            return Outcome::Success;
        }
        Outcome::Failure {
            retryable: matches!(status.as_u16(), 502..=504),
        }
    }
}

/// gRPC errors that mean the server is unwell count as failures; only
/// `UNAVAILABLE` is safe to retry. Status is read from response headers
/// (trailers-only responses), which is how unary errors arrive.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcClassifier;

impl<B> Classify<Response<B>> for GrpcClassifier {
    fn classify(&self, response: &Response<B>) -> Outcome {
        if response.status().is_server_error() {
            return Outcome::Failure { retryable: true };
        }
        let code = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .map(tonic::Code::from_i32);
        match code {
            Some(tonic::Code::Unavailable) => Outcome::Failure { retryable: true },
            Some(
                tonic::Code::Unknown
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Internal
                | tonic::Code::DataLoss,
            ) => Outcome::Failure { retryable: false },
            _ => Outcome::Success,
        }
    }
}

/// A request may be retried when repeating it cannot do harm: a safe or
/// idempotent HTTP method, or an explicit `Idempotency-Key`, or (for gRPC,
/// where every call is a POST) the `x-berth-idempotent` marker.
pub fn is_idempotent<B>(request: &Request<B>) -> bool {
    matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    ) || request.headers().contains_key("idempotency-key")
        || request.headers().contains_key("x-berth-idempotent")
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("call to `{dependency}` timed out after {after:?}")]
pub struct TimedOut {
    pub dependency: String,
    pub after: Duration,
}

// ---- timeout ---------------------------------------------------------------

#[derive(Clone)]
pub struct TimeoutLayer(pub Arc<Dependency>);

impl<S> Layer<S> for TimeoutLayer {
    type Service = TimeoutService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TimeoutService {
            inner,
            dep: self.0.clone(),
        }
    }
}

/// Per-attempt deadline, read from the live settings on every call.
#[derive(Clone)]
pub struct TimeoutService<S> {
    inner: S,
    dep: Arc<Dependency>,
}

impl<S, R> Service<R> for TimeoutService<S>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let after = self.dep.settings().timeout;
        let dependency = self.dep.name().to_owned();
        let call = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout(after, call).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(TimedOut { dependency, after }.into()),
            }
        })
    }
}

// ---- circuit breaker ---------------------------------------------------------

#[derive(Clone)]
pub struct BreakerLayer<C> {
    dep: Arc<Dependency>,
    classify: C,
}

impl<C> BreakerLayer<C> {
    pub fn new(dep: Arc<Dependency>, classify: C) -> Self {
        Self { dep, classify }
    }
}

impl<S, C: Clone> Layer<S> for BreakerLayer<C> {
    type Service = BreakerService<S, C>;
    fn layer(&self, inner: S) -> Self::Service {
        BreakerService {
            inner,
            dep: self.dep.clone(),
            classify: self.classify.clone(),
        }
    }
}

#[derive(Clone)]
pub struct BreakerService<S, C> {
    inner: S,
    dep: Arc<Dependency>,
    classify: C,
}

impl<S, C, R> Service<R> for BreakerService<S, C>
where
    S: Service<R> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    C: Classify<S::Response>,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is awaited on a clone per call, after the breaker admits it.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: R) -> Self::Future {
        let dep = self.dep.clone();
        let classify = self.classify.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            let permit = dep.breaker.try_acquire()?;
            match inner.oneshot(request).await {
                Ok(response) => {
                    permit.record(classify.classify(&response).is_success());
                    Ok(response)
                }
                Err(error) => {
                    permit.record(false);
                    Err(error.into())
                }
            }
        })
    }
}

// ---- retry -------------------------------------------------------------------

#[derive(Clone)]
pub struct RetryLayer<C> {
    dep: Arc<Dependency>,
    classify: C,
}

impl<C> RetryLayer<C> {
    pub fn new(dep: Arc<Dependency>, classify: C) -> Self {
        Self { dep, classify }
    }
}

impl<S, C: Clone> Layer<S> for RetryLayer<C> {
    type Service = RetryService<S, C>;
    fn layer(&self, inner: S) -> Self::Service {
        RetryService {
            inner,
            dep: self.dep.clone(),
            classify: self.classify.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RetryService<S, C> {
    inner: S,
    dep: Arc<Dependency>,
    classify: C,
}

impl<S, C, B, RB> Service<Request<B>> for RetryService<S, C>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    C: Classify<Response<RB>>,
    B: Clone + Send + 'static,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Response<RB>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let dep = self.dep.clone();
        let classify = self.classify.clone();
        let inner = self.inner.clone();
        let retry_allowed = is_idempotent(&request);
        Box::pin(async move {
            let settings = dep.settings();
            dep.budget.deposit();
            let (parts, body) = request.into_parts();
            let mut retry = 0u32;
            loop {
                let attempt = rebuild(&parts, body.clone());
                let result = inner.clone().oneshot(attempt).await.map_err(Into::into);
                let retryable = match &result {
                    Ok(response) => {
                        matches!(
                            classify.classify(response),
                            Outcome::Failure { retryable: true }
                        )
                    }
                    Err(error) => !error.is::<CircuitOpen>(),
                };
                let attempts_left = retry + 1 < settings.retry.max_attempts;
                if !(retry_allowed && retryable && attempts_left) {
                    return result;
                }
                if !dep.budget.try_withdraw() {
                    dep.count_budget_exhausted();
                    return result;
                }
                dep.count_retry();
                let delay = full_jitter(
                    settings.retry.base_backoff,
                    settings.retry.max_backoff,
                    retry,
                    &mut rand::rng(),
                );
                tracing::debug!(
                    dependency = dep.name(),
                    retry = retry + 1,
                    ?delay,
                    "retrying outbound call"
                );
                tokio::time::sleep(delay).await;
                retry += 1;
            }
        })
    }
}

fn rebuild<B>(parts: &http::request::Parts, body: B) -> Request<B> {
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    *request.extensions_mut() = parts.extensions.clone();
    request
}

/// Wraps a transport in the full stack: retry → breaker → timeout.
pub fn resilient<S, C>(
    inner: S,
    dep: Arc<Dependency>,
    classify: C,
) -> RetryService<BreakerService<TimeoutService<S>, C>, C>
where
    C: Clone,
{
    let timeout = TimeoutLayer(dep.clone()).layer(inner);
    let breaker = BreakerLayer::new(dep.clone(), classify.clone()).layer(timeout);
    RetryLayer::new(dep, classify).layer(breaker)
}
