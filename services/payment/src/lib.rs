//! The `payment` service: Stripe PaymentIntents with manual capture, driven
//! by a persisted saga so that money and bookings always agree.
//!
//! Guarantees, and where they live:
//! - a priced booking is confirmed only after its money is captured, and
//!   money is captured only after the booking's time is secured (the rules
//!   in `saga::rules`, run by `saga::driver`; the database refuses a `paid`
//!   row without the full capture);
//! - every failure compensates: the authorisation is cancelled or the
//!   capture refunded, and the booking ends `payment_failed` (same rules);
//! - a crash between any two steps resumes where it stopped, on any
//!   replica: each step is idempotent (Stripe idempotency keys derived from
//!   the step, booking calls by booking id) and the saga's state is a row
//!   written by compare-and-set (`store`);
//! - Stripe's webhooks are verified (`webhook`), stored once by event id
//!   before they are answered, and only wake the saga, which fetches the
//!   intent from Stripe itself (`inbox`);
//! - what gets stuck is found and driven to an end, and disagreements with
//!   Stripe are reported (`reconcile`);
//! - every state change that matters is an event in an outbox, relayed at
//!   least once (`events`).

mod config;
mod error;
mod events;
mod inbox;
mod metrics;
mod model;
mod reconcile;
mod rest;
pub mod saga;
mod store;
mod stripe;
mod webhook;

pub mod check;

use std::sync::Arc;

use axum::Router;
use berth_runtime::auth::Verifier;
use berth_runtime::resilience::Dependency;
use berth_settlement::Settlement;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

pub use config::PaymentConfig;
pub use error::PaymentError;
pub use model::{PaymentEvent, PaymentView};
pub use rest::openapi;

use store::Store;
use stripe::Stripe;

/// Name used in logs, metrics and `berth serve <name>`.
pub const NAME: &str = "payment";
/// The resilience settings' name for calls to Stripe (`[dependencies.stripe]`).
pub const STRIPE_DEPENDENCY: &str = "stripe";

/// Applies the payment service's migrations to `database_url` (`berth migrate`).
pub async fn migrate(database_url: &str) -> Result<(), PaymentError> {
    Store::connect(database_url, 1).await.map(drop)
}

/// The payment service: cheap to clone, shared by handlers and workers.
#[derive(Clone)]
pub struct Payments {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    stripe: Stripe,
    settlement: Arc<dyn Settlement>,
    config: PaymentConfig,
    redis: Option<redis::Client>,
    events: broadcast::Sender<PaymentEvent>,
    /// Poked after each committed event so the relay publishes promptly.
    relay_wake: Notify,
}

impl Payments {
    /// Opens the database (`postgres://…` or `sqlite:…`) and runs its
    /// migrations. Stripe is reached through `stripe` (the runtime's
    /// resilience settings for it); bookings through `settlement`.
    pub async fn connect(
        database_url: &str,
        redis_url: Option<&str>,
        settlement: Arc<dyn Settlement>,
        stripe: Arc<Dependency>,
        config: PaymentConfig,
    ) -> Result<Self, PaymentError> {
        config.validate()?;
        let redis = redis_url.map(redis::Client::open).transpose()?;
        let store = Store::connect(database_url, config.max_connections).await?;
        let stripe = Stripe::new(&config.stripe_api_base, &config.stripe_api_key, stripe)
            .map_err(PaymentError::Config)?;
        let (events, _) = broadcast::channel(1024);
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                stripe,
                settlement,
                config,
                redis,
                events,
                relay_wake: Notify::new(),
            }),
        })
    }

    /// `/v1/payments…` (behind `verifier`) and `/v1/webhooks/stripe`
    /// (signed by Stripe instead).
    pub fn rest_routes(&self, verifier: &Verifier) -> Router {
        rest::routes(self.clone(), verifier)
    }

    /// Readiness: the database answers. Stripe is deliberately not checked:
    /// its outages are absorbed by the saga's retries.
    pub async fn check_ready(&self) -> Result<(), String> {
        self.inner.store.ping().await.map_err(|e| e.to_string())
    }

    /// Adds this service's metrics to `registry`.
    pub fn register_metrics(registry: &prometheus::Registry) -> prometheus::Result<()> {
        metrics::register(registry)
    }

    /// Starts the saga worker, the reconciler, the outbox relay and (with
    /// Redis) the booking-event consumer; they stop when `stop` is cancelled.
    pub fn spawn_workers(&self, stop: CancellationToken) {
        saga::spawn_worker(self.clone(), stop.clone());
        reconcile::spawn(self.clone(), stop.clone());
        events::spawn_relay(self.clone(), stop.clone());
        events::spawn_booking_consumer(self, stop);
    }

    /// Events this process relays (the whole stream under `berth dev`).
    pub fn subscribe_events(&self) -> broadcast::Receiver<PaymentEvent> {
        self.inner.events.subscribe()
    }

    fn wake_relay(&self) {
        self.inner.relay_wake.notify_one();
    }
}
