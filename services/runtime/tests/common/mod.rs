//! Helpers shared by the runtime's integration tests: real local servers.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

/// A local HTTP server whose health can be flipped, counting the requests it sees.
#[derive(Clone, Default)]
pub struct FlakyServer {
    pub healthy: Arc<AtomicBool>,
    pub hits: Arc<AtomicUsize>,
    /// Fail this many requests first, then succeed.
    pub fail_first: Arc<AtomicUsize>,
}

impl FlakyServer {
    pub async fn start(self) -> SocketAddr {
        let state = self.clone();
        let app = Router::new().route(
            "/",
            get(move || {
                let state = state.clone();
                async move {
                    state.hits.fetch_add(1, Ordering::SeqCst);
                    let forced = state
                        .fail_first
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    if forced || !state.healthy.load(Ordering::SeqCst) {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::OK
                    }
                }
            })
            .post({
                let state = self.clone();
                move || {
                    let state = state.clone();
                    async move {
                        state.hits.fetch_add(1, Ordering::SeqCst);
                        if state.healthy.load(Ordering::SeqCst) {
                            StatusCode::OK
                        } else {
                            StatusCode::SERVICE_UNAVAILABLE
                        }
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}
