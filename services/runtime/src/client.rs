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
    let transport = Client::builder(TokioExecutor::new())
        .build::<_, Full<Bytes>>(tcp_connector(true))
        .map_err(|e: hyper_util::client::legacy::Error| -> BoxError { Box::new(e) });
    let stack = resilient(transport, dependency, HttpClassifier);
    BoxCloneSyncService::new(PropagateTraceLayer.layer(stack))
}

/// A client for one dependency outside the cluster (an API such as
/// Stripe's): HTTPS with the web's root certificates, and plain HTTP for a
/// local stand-in; the same resilience stack as [`http_client`].
pub fn https_client(dependency: Arc<Dependency>) -> HttpClient {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .enable_http2()
        // hyper-rustls decides the scheme; the TCP layer must let https by.
        .wrap_connector(tcp_connector(false));
    let transport = Client::builder(TokioExecutor::new())
        .build::<_, Full<Bytes>>(connector)
        .map_err(|e: hyper_util::client::legacy::Error| -> BoxError { Box::new(e) });
    let stack = resilient(transport, dependency, HttpClassifier);
    BoxCloneSyncService::new(PropagateTraceLayer.layer(stack))
}

fn tcp_connector(http_only: bool) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.enforce_http(http_only);
    connector
}
