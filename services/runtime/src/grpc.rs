//! tonic plumbing shared by every gRPC server and client: health service,
//! reflection, request metrics, trace propagation, resilient channels.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceExt};

use crate::resilience::{CircuitOpen, Dependency, GrpcClassifier, TimedOut, resilient};
use crate::server::{Runtime, RuntimeError, drain};
use crate::trace::{InboundTraceLayer, PropagateTraceLayer};

/// What generated gRPC clients are built on: a channel with trace
/// propagation, retries, breaker and timeout for one dependency.
pub type GrpcChannel =
    BoxCloneSyncService<Request<tonic::body::Body>, Response<tonic::body::Body>, BoxError>;

impl Runtime {
    /// Serves `routes` with health (per service name in `services`) and
    /// reflection (for `descriptor_sets`), until shutdown; drains like HTTP.
    pub async fn serve_grpc(
        &self,
        listener: TcpListener,
        metrics_name: &str,
        routes: Routes,
        services: &[&str],
        descriptor_sets: &[&[u8]],
    ) -> Result<(), RuntimeError> {
        let (reporter, health_service) = tonic_health::server::health_reporter();
        for service in services {
            reporter
                .set_service_status(service, ServingStatus::Serving)
                .await;
        }
        let mut reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        for set in descriptor_sets {
            reflection = reflection.register_encoded_file_descriptor_set(set);
        }
        let reflection = reflection
            .build_v1()
            .map_err(|e| RuntimeError::Serve(format!("grpc reflection: {e}")))?;

        let stop = self.stop_token();
        // Health turns NOT_SERVING as soon as shutdown begins.
        let health = self.health.clone();
        let names: Vec<String> = services.iter().map(|s| (*s).to_owned()).collect();
        let watch_stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = health.shutdown_started() => {}
                _ = watch_stop.cancelled() => {}
            }
            reporter
                .set_service_status("", ServingStatus::NotServing)
                .await;
            for name in names {
                reporter
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
        });

        let server = tonic::transport::Server::builder()
            .layer(InboundTraceLayer)
            .layer(self.metrics.grpc_layer(metrics_name))
            .add_routes(routes)
            .add_service(health_service)
            .add_service(reflection)
            .serve_with_incoming_shutdown(
                // Without TCP_NODELAY a response's trailing frames wait for
                // the peer's delayed ACK: tens of milliseconds per call.
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                stop.clone().cancelled_owned(),
            );
        drain(
            tokio::spawn(server),
            stop,
            self.config.shutdown.drain_timeout,
            "grpc",
        )
        .await
    }
}

/// Wraps a tonic channel for one dependency. Request bodies are buffered
/// (unary calls are small) so a retry can resend them.
pub fn grpc_channel(
    channel: tonic::transport::Channel,
    dependency: Arc<Dependency>,
) -> GrpcChannel {
    let transport = channel
        .map_request(|request: Request<Full<Bytes>>| request.map(tonic::body::Body::new))
        .map_err(|e: tonic::transport::Error| -> BoxError { Box::new(e) });
    let stack: BoxCloneSyncService<Request<Full<Bytes>>, Response<tonic::body::Body>, BoxError> =
        BoxCloneSyncService::new(resilient(transport, dependency, GrpcClassifier));
    let buffered = tower::service_fn(move |request: Request<tonic::body::Body>| {
        let stack = stack.clone();
        async move {
            let (parts, body) = request.into_parts();
            let bytes = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(status) => return Err(Box::new(status) as BoxError),
            };
            stack
                .oneshot(Request::from_parts(parts, Full::new(bytes)))
                .await
                .map_err(as_status)
        }
    });
    BoxCloneSyncService::new(tower::Layer::layer(&PropagateTraceLayer, buffered))
}

/// The resilience layers' own refusals as the gRPC status a caller expects
/// (tonic passes a boxed `Status` through; anything else becomes Unknown):
/// an open breaker is Unavailable, like an unreachable server, so callers
/// treat it the same (e.g. try another replica).
fn as_status(error: BoxError) -> BoxError {
    if error.is::<CircuitOpen>() {
        Box::new(tonic::Status::unavailable(error.to_string()))
    } else if error.is::<TimedOut>() {
        Box::new(tonic::Status::deadline_exceeded(error.to_string()))
    } else {
        error
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SendChannelError(#[source] BoxError);

/// [`GrpcChannel`] with a concrete error and future type, for generated
/// clients. With the boxed `dyn Error` inside, the clients' futures trip a
/// compiler limitation (higher-ranked lifetimes in `Send` checks) in
/// `#[async_trait]` methods, so they could not be awaited in a `Send` future.
#[derive(Clone)]
pub struct SendChannel(pub GrpcChannel);

type SendChannelFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<Response<tonic::body::Body>, SendChannelError>>
            + Send,
    >,
>;

impl tower::Service<Request<tonic::body::Body>> for SendChannel {
    type Response = Response<tonic::body::Body>;
    type Error = SendChannelError;
    type Future = SendChannelFuture;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), SendChannelError>> {
        tower::Service::poll_ready(&mut self.0, cx).map_err(SendChannelError)
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> SendChannelFuture {
        let call = tower::Service::call(&mut self.0, request);
        Box::pin(async move { call.await.map_err(SendChannelError) })
    }
}

/// A protobuf timestamp as a UTC time; `None` if it is out of range.
pub fn from_timestamp(t: &prost_types::Timestamp) -> Option<chrono::DateTime<chrono::Utc>> {
    u32::try_from(t.nanos)
        .ok()
        .and_then(|nanos| chrono::DateTime::from_timestamp(t.seconds, nanos))
}

pub fn to_timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        // Always below 2e9 for a `DateTime` (leap seconds included).
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(i32::MAX),
    }
}
