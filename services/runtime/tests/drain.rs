//! Graceful shutdown: requests in flight when shutdown starts complete,
//! readiness turns false at once, and new connections are refused after.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use berth_runtime::{Runtime, RuntimeConfig};

fn runtime(drain: Duration) -> Arc<Runtime> {
    let mut config = RuntimeConfig::default();
    config.shutdown.drain_timeout = drain;
    config.shutdown.delay = Duration::from_millis(200);
    Arc::new(Runtime::new("drain-test", config).unwrap())
}

fn slow_app(rt: &Runtime, delay: Duration) -> Router {
    let routes = Router::new().route(
        "/slow",
        get(move || async move {
            tokio::time::sleep(delay).await;
            "done"
        }),
    );
    rt.finish_app(routes)
}

#[tokio::test]
async fn in_flight_requests_complete_during_shutdown() {
    let rt = runtime(Duration::from_secs(5));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = slow_app(&rt, Duration::from_millis(800));
    let server = tokio::spawn({
        let rt = rt.clone();
        async move { rt.serve_http(listener, app).await }
    });

    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let in_flight: Vec<_> = (0..8)
        .map(|_| {
            let client = reqwest::Client::new();
            tokio::spawn(async move { client.get(format!("http://{addr}/slow")).send().await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let shutdown = tokio::spawn({
        let rt = rt.clone();
        async move { rt.shutdown().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // During the pre-stop delay the listener still answers, but unready.
    let ready = client
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);

    for request in in_flight {
        let response = request.await.unwrap().expect("in-flight request completed");
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "done");
    }
    shutdown.await.unwrap();
    server.await.unwrap().expect("server exits cleanly");

    let refused = reqwest::Client::new()
        .get(format!("http://{addr}/readyz"))
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(refused.is_err(), "listener closed after drain");
}

#[tokio::test]
async fn drain_deadline_bounds_shutdown() {
    let rt = runtime(Duration::from_millis(300));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = slow_app(&rt, Duration::from_secs(30));
    let server = tokio::spawn({
        let rt = rt.clone();
        async move { rt.serve_http(listener, app).await }
    });
    let stuck = tokio::spawn(async move { reqwest::get(format!("http://{addr}/slow")).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    rt.shutdown().await;
    server.await.unwrap().unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "shutdown took {took:?} despite a 300ms deadline"
    );
    // The process exits right after serve returns, which closes the socket.
    stuck.abort();
}
