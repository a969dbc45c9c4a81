//! gRPC plumbing: health service on every server, NOT_SERVING once shutdown
//! starts, and clients going through the resilient channel.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use berth_runtime::grpc::grpc_channel;
use berth_runtime::{Runtime, RuntimeConfig};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn health_reports_serving_then_not_serving_on_shutdown() {
    let mut config = RuntimeConfig::default();
    config.shutdown.delay = Duration::from_millis(600);
    let rt = Arc::new(Runtime::new("grpc-test", config).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn({
        let rt = rt.clone();
        async move {
            rt.serve_grpc(
                listener,
                "grpc-test",
                tonic::service::Routes::default(),
                &["berth.test.v1.Thing"],
                &[],
            )
            .await
        }
    });

    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let mut client = HealthClient::new(grpc_channel(channel, rt.dependencies.get("self")));
    let check = |service: &str| HealthCheckRequest {
        service: service.to_owned(),
    };
    let mut status = None;
    for _ in 0..50 {
        if let Ok(r) = client.check(check("berth.test.v1.Thing")).await {
            status = Some(r.into_inner().status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, Some(ServingStatus::Serving as i32));
    let unknown = client.check(check("no.such.Service")).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let shutdown = tokio::spawn({
        let rt = rt.clone();
        async move { rt.shutdown().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = client
        .check(check("berth.test.v1.Thing"))
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(during, ServingStatus::NotServing as i32);
    shutdown.await.unwrap();
    server.await.unwrap().unwrap();
}
