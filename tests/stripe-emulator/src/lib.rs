//! A stateful test double of the Stripe API, for Berth's payment tests
//! and `berth dev`, where Stripe itself cannot be reached.
//!
//! It speaks Stripe's HTTP API (form-encoded bodies, `Authorization:
//! Bearer`, Stripe's JSON objects and error bodies, API version
//! [`API_VERSION`]) for PaymentIntents with manual or automatic capture,
//! refunds and events, keeps Stripe's idempotency semantics, and delivers
//! every event as a signed webhook (`Stripe-Signature`, several secrets
//! for rotation) with retries. A control API under `/_emulator/` (client:
//! [`Control`]) injects faults, expires authorisations, settles 3-D Secure
//! and shows the whole state.
//!
//! How it is kept honest: its tests parse every answer with async-stripe's
//! own types (strict: required fields must be present), drive it with
//! async-stripe's client, verify webhooks with async-stripe's verifier,
//! and send the same requests to stripe-mock (Stripe's OpenAPI-driven
//! mock) to check that the request shapes it accepts are Stripe's own.
//!
//! What it does not do: customers, charges and balance transactions as
//! objects (their ids appear, they cannot be retrieved), Connect, other
//! payment method types, `expand`, real 3-D Secure (the control API
//! decides), charge.* events, search beyond `metadata['k']:'v'` and
//! `status:'v'` joined by AND (and search here is immediately consistent,
//! Stripe's lags), rate limits, persistence (state lives in memory).

// serde_json's `json!` recurses once per field; a PaymentIntent has ~50.
#![recursion_limit = "256"]

mod api;
mod control;
mod faults;
mod model;
mod state;
mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use control::client::{Control, ControlError};
pub use control::types::{ActionOutcome, DeliveryRecord, IntentState, RefundState, StateSnapshot};
pub use faults::{FailNext, Faults};
pub use model::API_VERSION;
pub use webhooks::signature_header;

/// A webhook endpoint: every event is POSTed to `url`, signed with each secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub url: String,
    /// `whsec_...`; more than one while a secret is being rotated.
    pub secrets: Vec<String>,
}

/// Retry schedule of failed deliveries (emulator scale, not Stripe's 3 days).
#[derive(Debug, Clone)]
pub struct WebhookRetry {
    /// Attempts per event and endpoint, the first included.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubles after each failure.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for WebhookRetry {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen; port 0 picks a free one.
    pub addr: SocketAddr,
    /// The secret key accepted, e.g. `sk_test_berth`.
    pub api_key: String,
    /// The publishable key Stripe.js would use (confirm/retrieve with the client secret).
    pub publishable_key: String,
    pub endpoints: Vec<Endpoint>,
    /// Seeds ids and `api_error_rate`: the same calls give the same ids.
    pub seed: u64,
    pub webhook_retry: WebhookRetry,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_key: "sk_test_berth".into(),
            publishable_key: "pk_test_berth".into(),
            endpoints: Vec::new(),
            seed: 0,
            webhook_retry: WebhookRetry::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The emulator's entry point.
pub struct Emulator;

impl Emulator {
    /// Binds the listener and serves the Stripe API, the control API and
    /// webhook deliveries in the background until [`Running::stop`] (or drop).
    pub async fn start(config: Config) -> Result<Running, StartError> {
        let listener = TcpListener::bind(config.addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.addr,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.addr,
            source,
        })?;
        let shared = Arc::new(state::Shared::new(&config));
        let app = api::routes()
            .merge(control::routes())
            .fallback(api::unknown)
            .with_state(shared.clone());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let shutdown = async {
                let _ = stop_rx.await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(error = %e, "stripe emulator stopped serving");
            }
        });
        let worker = tokio::spawn(webhooks::worker(shared));
        tracing::info!(%addr, "stripe emulator listening");
        Ok(Running {
            base_url: format!("http://{addr}"),
            addr,
            stop: Some(stop_tx),
            server,
            worker,
        })
    }
}

/// A started emulator. Dropping it stops it too.
pub struct Running {
    /// `http://127.0.0.1:PORT`: the Stripe API base and the control API's.
    pub base_url: String,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    worker: JoinHandle<()>,
}

impl Running {
    /// A control client for this emulator.
    pub fn control(&self) -> Control {
        Control::new(&self.base_url)
    }

    /// Stops accepting, lets open requests finish, stops deliveries.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.worker.abort();
        let _ = (&mut self.server).await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.worker.abort();
        self.server.abort();
    }
}
