//! Outbound HTTP client with trace propagation and the resilience stack.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Layer, ServiceExt};

use crate::resilience::{Dependency, HttpClassifier, resilient};
use crate::trace::PropagateTraceLayer;

pub type HttpClient = BoxCloneSyncService<Request<Full<Bytes>>, Response<Incoming>, BoxError>;

/// A plain-HTTP client for one dependency (in-cluster traffic; TLS is the
/// mesh's or the ingress's job).
pub fn http_client(dependency: Arc<Dependency>) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let transport = Client::builder(TokioExecutor::new())
        .build::<_, Full<Bytes>>(connector)
        .map_err(|e: hyper_util::client::legacy::Error| -> BoxError { Box::new(e) });
    let stack = resilient(transport, dependency, HttpClassifier);
    BoxCloneSyncService::new(PropagateTraceLayer.layer(stack))
}
