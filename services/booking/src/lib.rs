//! The `booking` service: holds, idempotent bookings, confirm / cancel /
//! reschedule, and the booking saga.
//!
//! Guarantees, and where they live:
//! - every POST is idempotent under its `Idempotency-Key` (module `idempotency`);
//! - every state change writes an outbox row in the same transaction, and a
//!   relay publishes it at least once (module `outbox`);
//! - a compensation (releasing the ledger claim) is persisted on the booking
//!   and retried until it succeeds, across restarts (module `saga`);
//! - every route needs an authenticated principal, and a booking is visible
//!   only to its customer, the staff owning its resource, and admins (module
//!   `access`);
//! - a deleted account's personal data is erased from its bookings (module
//!   `accounts`).

mod access;
mod accounts;
mod error;
mod grpc;
mod idempotency;
mod model;
mod outbox;
mod rest;
mod saga;
mod service;
mod settle;
mod store;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use berth_ledger::Ledger;
use berth_runtime::auth::Verifier;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

pub use accounts::{ACCOUNT_DELETED, GROUP as ACCOUNT_CONSUMER_GROUP};
pub use error::BookingError;
pub use grpc::{FILE_DESCRIPTOR_SET, GrpcSettlement, SETTLEMENT_SERVICE_NAME};
pub use model::{BookingRecord, BookingStatus, Customer, Event, event_type};
pub use rest::openapi;

use store::Store;

/// Name used in logs, metrics and `berth serve <name>`.
pub const NAME: &str = "booking";

/// Tunables; the defaults suit production.
#[derive(Debug, Clone)]
pub struct BookingConfig {
    /// How long a new booking holds its time before it lapses.
    pub hold_for: Duration,
    /// How long idempotency keys and their responses are kept (at least 24 h).
    pub idempotency_ttl: Duration,
    /// An in-flight key older than this belongs to a request that died; a
    /// retry may take it over instead of getting 409 until the TTL.
    pub idempotency_lock_timeout: Duration,
    /// Redis stream the relay appends events to.
    pub stream_key: String,
    /// Redis stream the user service appends account events to, which the
    /// account-deletion consumer reads (a stream of its own, so that
    /// consumer never wades through booking events).
    pub accounts_stream_key: String,
    /// How often the relay polls the outbox when nothing woke it.
    pub relay_interval: Duration,
    pub relay_batch: u32,
    /// How often the saga worker looks for due compensations.
    pub saga_interval: Duration,
    /// First retry delay of a failed compensation; doubles per attempt.
    pub saga_retry_base: Duration,
    pub saga_retry_max: Duration,
    /// Marks lapsed holds expired and purges old idempotency keys and
    /// published events; `None` disables the sweeper (reads still show
    /// lapsed holds as expired).
    pub sweep_interval: Option<Duration>,
    /// How long published outbox rows are kept after their event occurred
    /// (the stream has them; the rows help to look into what happened).
    pub outbox_retention: Duration,
    pub max_connections: u32,
    /// Largest request body the idempotency layer buffers.
    pub max_body_bytes: usize,
    /// Whether a priced booking waits for its payment (`pending_payment`,
    /// confirmed by the payment service). Off (the platform takes no
    /// payments): every booking is held and confirmed by its client.
    pub payments_enabled: bool,
}

impl Default for BookingConfig {
    fn default() -> Self {
        Self {
            hold_for: Duration::from_secs(10 * 60),
            idempotency_ttl: Duration::from_secs(24 * 60 * 60),
            idempotency_lock_timeout: Duration::from_secs(60),
            stream_key: "berth:events".to_owned(),
            accounts_stream_key: "berth:accounts".to_owned(),
            relay_interval: Duration::from_millis(500),
            relay_batch: 100,
            saga_interval: Duration::from_secs(1),
            saga_retry_base: Duration::from_secs(1),
            saga_retry_max: Duration::from_secs(5 * 60),
            sweep_interval: Some(Duration::from_secs(30)),
            outbox_retention: Duration::from_secs(7 * 24 * 60 * 60),
            max_connections: 10,
            max_body_bytes: 64 * 1024,
            payments_enabled: true,
        }
    }
}

impl BookingConfig {
    fn validate(&self) -> Result<(), BookingError> {
        let bad = |what: &str| {
            Err(BookingError::Config(format!(
                "{what} must be greater than 0"
            )))
        };
        if self.hold_for.is_zero() {
            return bad("hold_for");
        }
        if self.idempotency_ttl < Duration::from_secs(24 * 60 * 60) {
            return Err(BookingError::Config(
                "idempotency_ttl must be at least 24h".into(),
            ));
        }
        if self.idempotency_lock_timeout.is_zero() {
            return bad("idempotency_lock_timeout");
        }
        if self.relay_batch == 0 {
            return bad("relay_batch");
        }
        if self.max_connections == 0 {
            return bad("max_connections");
        }
        if self.saga_retry_base.is_zero() {
            return bad("saga_retry_base");
        }
        if self.stream_key.is_empty() {
            return Err(BookingError::Config("stream_key must not be empty".into()));
        }
        if self.accounts_stream_key.is_empty() {
            return Err(BookingError::Config(
                "accounts_stream_key must not be empty".into(),
            ));
        }
        Ok(())
    }
}

/// The booking service: cheap to clone, shared by handlers and workers.
#[derive(Clone)]
pub struct Booking {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    ledger: Arc<dyn Ledger>,
    config: BookingConfig,
    events: broadcast::Sender<Event>,
    redis: Option<redis::Client>,
    /// Poked after each committed event so the relay publishes promptly.
    relay_wake: Notify,
}

impl Booking {
    /// Opens the database (`postgres://…`, `sqlite:…`, `sqlite::memory:`)
    /// and runs its migrations. Redis is only reached by the relay, so the
    /// service starts (and keeps taking bookings) while Redis is down.
    pub async fn connect(
        database_url: &str,
        redis_url: Option<&str>,
        ledger: Arc<dyn Ledger>,
        config: BookingConfig,
    ) -> Result<Self, BookingError> {
        config.validate()?;
        let redis = redis_url.map(redis::Client::open).transpose()?;
        let store = store::connect(database_url, config.max_connections).await?;
        let (events, _) = broadcast::channel(1024);
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                ledger,
                config,
                events,
                redis,
                relay_wake: Notify::new(),
            }),
        })
    }

    /// `/v1/bookings…`, behind `verifier` (every route needs a principal);
    /// every POST goes through the idempotency layer, keyed per principal.
    pub fn rest_routes(&self, verifier: &Verifier) -> Router {
        rest::routes(self.clone(), verifier)
    }

    /// gRPC routes of the settlement service the payment service calls.
    pub fn grpc_routes(&self) -> tonic::service::Routes {
        grpc::routes(self.clone())
    }

    /// Readiness: the database answers. Redis is deliberately not checked:
    /// the outbox absorbs its outages.
    pub async fn check_ready(&self) -> Result<(), String> {
        self.inner.store.ping().await.map_err(|e| e.to_string())
    }

    /// Starts the outbox relay, the saga worker, the sweeper and (with
    /// Redis) the account-deletion consumer; they stop when `stop` is
    /// cancelled.
    pub fn spawn_workers(&self, stop: CancellationToken) {
        outbox::spawn_relay(self.clone(), stop.clone());
        saga::spawn_worker(self.clone(), stop.clone());
        self.spawn_account_consumer(stop.clone());
        if let Some(every) = self.inner.config.sweep_interval {
            saga::spawn_sweeper(self.clone(), every, stop);
        }
    }

    /// Events this process relays (the whole stream under `berth dev`, where
    /// there is no Redis). A slow receiver may miss events (`Lagged`); use
    /// the Redis stream where that matters.
    pub fn subscribe_events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    fn wake_relay(&self) {
        self.inner.relay_wake.notify_one();
    }
}
