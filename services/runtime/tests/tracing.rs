//! One trace id follows a request across services (HTTP in, HTTP out).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use berth_runtime::client::{HttpClient, http_client};
use berth_runtime::{Runtime, RuntimeConfig};
use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;

async fn start(rt: Arc<Runtime>, routes: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = rt.finish_app(routes);
    tokio::spawn(async move { rt.serve_http(listener, app).await });
    addr
}

#[tokio::test]
async fn traceparent_is_continued_across_services() {
    let rt = Arc::new(Runtime::new("trace-test", RuntimeConfig::default()).unwrap());
    // Downstream echoes the traceparent it received.
    let downstream = start(
        rt.clone(),
        Router::new().route(
            "/echo",
            get(|headers: HeaderMap| async move {
                headers
                    .get("traceparent")
                    .map(|v| v.to_str().unwrap_or_default().to_owned())
                    .unwrap_or_default()
            }),
        ),
    )
    .await;
    let client = http_client(rt.dependencies.get("downstream"));
    let upstream = start(
        rt.clone(),
        Router::new()
            .route(
                "/call",
                get(
                    |State((client, addr)): State<(HttpClient, std::net::SocketAddr)>| async move {
                        let request = Request::get(format!("http://{addr}/echo"))
                            .body(Full::new(Bytes::new()))
                            .unwrap();
                        let response = client.oneshot(request).await.unwrap();
                        let body = response.into_body().collect().await.unwrap().to_bytes();
                        String::from_utf8(body.to_vec()).unwrap()
                    },
                ),
            )
            .with_state((client, downstream)),
    )
    .await;

    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = reqwest::Client::new()
        .get(format!("http://{upstream}/call"))
        .header("traceparent", incoming)
        .send()
        .await
        .unwrap();
    let echoed_back = response.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    let seen_downstream = response.text().await.unwrap();
    assert!(
        seen_downstream.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "downstream saw {seen_downstream:?}"
    );
    assert!(
        !seen_downstream.contains("00f067aa0ba902b7"),
        "a new span id per hop"
    );
    assert!(echoed_back.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
}
