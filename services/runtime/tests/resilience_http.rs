//! Breaker, retry and budget behaviour against a real local HTTP server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use berth_runtime::client::{HttpClient, http_client};
use berth_runtime::resilience::clock::SystemClock;
use berth_runtime::resilience::{
    BreakerSettings, BreakerState, CircuitOpen, Dependencies, DependencySettings, RetrySettings,
};
use bytes::Bytes;
use common::FlakyServer;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use tower::ServiceExt;

fn settings(max_attempts: u32) -> DependencySettings {
    DependencySettings {
        timeout: Duration::from_secs(1),
        retry: RetrySettings {
            max_attempts,
            base_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            budget_ratio: 0.5,
            budget_min_per_second: 10,
            budget_window: Duration::from_secs(10),
        },
        breaker: BreakerSettings {
            failure_rate_threshold: 0.5,
            window: Duration::from_secs(10),
            minimum_calls: 4,
            open_duration: Duration::from_millis(400),
            half_open_probes: 2,
        },
    }
}

fn deps(s: DependencySettings) -> Dependencies {
    Dependencies::unobserved(
        BTreeMap::from([("upstream".to_owned(), s)]),
        Arc::new(SystemClock),
    )
}

async fn call(
    client: &HttpClient,
    addr: std::net::SocketAddr,
    method: Method,
) -> Result<StatusCode, tower::BoxError> {
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}/"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    client.clone().oneshot(request).await.map(|r| r.status())
}

#[tokio::test]
async fn breaker_opens_fails_fast_half_opens_and_closes() {
    let server = FlakyServer::default();
    let addr = server.clone().start().await;
    server.healthy.store(true, Ordering::SeqCst);
    let deps = deps(settings(1));
    let dep = deps.get("upstream");
    let client = http_client(dep.clone());

    // Healthy traffic keeps it closed.
    for _ in 0..3 {
        assert_eq!(
            call(&client, addr, Method::GET).await.unwrap(),
            StatusCode::OK
        );
    }
    server.healthy.store(false, Ordering::SeqCst);
    // Failures: 3 ok + 3 failed = 50% over 6 calls ≥ minimum 4 → open.
    for _ in 0..3 {
        assert_eq!(
            call(&client, addr, Method::GET).await.unwrap(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    assert_eq!(dep.breaker.state(), BreakerState::Open);

    // Open: fails fast without touching the server.
    let hits_before = server.hits();
    let started = std::time::Instant::now();
    for _ in 0..20 {
        let err = call(&client, addr, Method::GET).await.unwrap_err();
        assert!(err.is::<CircuitOpen>(), "{err}");
    }
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "fail-fast took {:?}",
        started.elapsed()
    );
    assert_eq!(
        server.hits(),
        hits_before,
        "no request reached the server while open"
    );

    // The server recovers; after the open duration the breaker half-opens
    // and two successful probes close it.
    server.healthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(dep.breaker.state(), BreakerState::HalfOpen);
    assert_eq!(
        call(&client, addr, Method::GET).await.unwrap(),
        StatusCode::OK
    );
    assert_eq!(dep.breaker.state(), BreakerState::HalfOpen);
    assert_eq!(
        call(&client, addr, Method::GET).await.unwrap(),
        StatusCode::OK
    );
    assert_eq!(dep.breaker.state(), BreakerState::Closed);
    assert_eq!(server.hits(), hits_before + 2);
}

#[tokio::test]
async fn failed_probe_reopens_the_breaker() {
    let server = FlakyServer::default();
    let addr = server.clone().start().await;
    let deps = deps(settings(1));
    let dep = deps.get("upstream");
    let client = http_client(dep.clone());
    for _ in 0..4 {
        let _ = call(&client, addr, Method::GET).await;
    }
    assert_eq!(dep.breaker.state(), BreakerState::Open);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        call(&client, addr, Method::GET).await.unwrap(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(dep.breaker.state(), BreakerState::Open);
}

#[tokio::test]
async fn idempotent_calls_are_retried_until_success() {
    let server = FlakyServer::default();
    server.healthy.store(true, Ordering::SeqCst);
    server.fail_first.store(2, Ordering::SeqCst);
    let addr = server.clone().start().await;
    let mut s = settings(3);
    s.breaker.minimum_calls = 100;
    let deps = deps(s);
    let client = http_client(deps.get("upstream"));
    assert_eq!(
        call(&client, addr, Method::GET).await.unwrap(),
        StatusCode::OK
    );
    assert_eq!(server.hits(), 3, "two failures then a success");
}

#[tokio::test]
async fn non_idempotent_calls_are_not_retried() {
    let server = FlakyServer::default();
    let addr = server.clone().start().await;
    let mut s = settings(3);
    s.breaker.minimum_calls = 100;
    let deps = deps(s);
    let client = http_client(deps.get("upstream"));
    assert_eq!(
        call(&client, addr, Method::POST).await.unwrap(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(server.hits(), 1);

    // The same POST with an Idempotency-Key may be retried.
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{addr}/"))
        .header("idempotency-key", "k1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let status = client.clone().oneshot(request).await.unwrap().status();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(server.hits(), 1 + 3);
}

#[tokio::test]
async fn retry_budget_caps_retries_during_an_outage() {
    let server = FlakyServer::default();
    let addr = server.clone().start().await;
    let mut s = settings(5);
    s.breaker.minimum_calls = 10_000;
    s.retry.budget_ratio = 0.2;
    s.retry.budget_min_per_second = 0;
    let deps = deps(s);
    let client = http_client(deps.get("upstream"));
    for _ in 0..50 {
        let _ = call(&client, addr, Method::GET).await;
    }
    // 50 first attempts earn 10 retries; without a budget it would be 200.
    let retries = server.hits() - 50;
    assert!(retries <= 10, "retries {retries} exceed the 20% budget");
    assert!(
        retries >= 9,
        "budget should allow about 10 retries, saw {retries}"
    );
}

#[tokio::test]
async fn timeouts_count_as_failures() {
    // A listener that accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (sock, _) = listener.accept().await.unwrap();
            held.push(sock);
        }
    });
    let mut s = settings(1);
    s.timeout = Duration::from_millis(50);
    s.breaker.minimum_calls = 2;
    let deps = deps(s);
    let dep = deps.get("upstream");
    let client = http_client(dep.clone());
    for _ in 0..2 {
        let err = call(&client, addr, Method::GET).await.unwrap_err();
        assert!(err.to_string().contains("timed out"), "{err}");
    }
    assert_eq!(dep.breaker.state(), BreakerState::Open);
}
